"""Ctrl-C at every step of a commit: afterwards the cache holds every video whose segment was renamed into
place, and nothing half-written. Also disk full while committing or compacting."""
from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

from features.store import catalogue, compaction, durability, writer
from features.errors import InputError
from features.store import FeatureStore

from helpers import info, video_data

# the commit path, in order; the rename is where a video becomes committed
STEPS = [("_write_segment", writer), ("_fsync", durability), ("_rename", durability),
         ("open_read", catalogue), ("_index_file", FeatureStore)]


def _inject_once(monkeypatch, name, owner, when, exc_factory=KeyboardInterrupt):
    orig = getattr(owner, name)
    fired = []

    def step(*a, **k):
        if not fired and when == "before":
            fired.append(1)
            raise exc_factory()
        r = orig(*a, **k)
        if not fired:
            fired.append(1)
            raise exc_factory()
        return r
    monkeypatch.setattr(owner, name, step)
    return fired


def _debris(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith((".tmp", ".lock")))


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", [s for s, _ in STEPS])
def test_interrupt_at_each_commit_step(tmp_path, monkeypatch, step, when):
    """Before: an interrupt after the rename and before the indexing lost the video at close()."""
    p = tmp_path / "c.h5"
    owner = dict(STEPS)[step]
    s = FeatureStore(p, "a")
    w = s.writer(info())
    w.write_video("a", **video_data(5))
    fired = _inject_once(monkeypatch, step, owner, when)
    try:
        with pytest.raises(KeyboardInterrupt):
            w.write_video("b", **video_data(4, seed=1))
    finally:
        monkeypatch.undo()
        s.close()                       # what the runner does on the way out
    assert fired
    renamed = [n for n, _ in STEPS].index(step) > 2 or (step == "_rename" and when == "after")
    r = FeatureStore(p)
    assert r.videos("m") == (["a", "b"] if renamed else ["a"])
    if renamed:
        np.testing.assert_array_equal(r.read(["b"], "m", ("logits",)).arrays["m/logits"],
                                      video_data(4, seed=1)["logits"])
    assert _debris(tmp_path) == []
    assert not (tmp_path / "c.h5.parts").exists()      # everything folded into the main file
    with FeatureStore(p, "a") as s:     # resume: the missing video can be written again
        w = s.writer(info())
        if not renamed:
            w.write_video("b", **video_data(4, seed=1))
    assert FeatureStore(p).videos("m") == ["a", "b"]


def test_real_sigint_during_commit_is_held_until_committed(tmp_path, monkeypatch):
    p = tmp_path / "c.h5"
    orig = durability._fsync
    sent = []

    def fsync_then_sigint(path):
        orig(path)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)     # Ctrl-C lands between fsync and rename
    s = FeatureStore(p, "a")
    w = s.writer(info())
    monkeypatch.setattr(durability, "_fsync", fsync_then_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            w.write_video("b", **video_data(4, seed=1))
        assert sent and s.has_video("m", "b")      # raised only after the commit was indexed
    finally:
        monkeypatch.undo()
        s.close()
    assert FeatureStore(p).videos("m") == ["b"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _enospc():
    return OSError(errno.ENOSPC, "Can't close file (file write failed)")


def test_disk_full_while_committing(tmp_path, monkeypatch):
    """Before: '[Errno 28] Can't close file (...)' without a file name, and a .tmp left on the full disk."""
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        w = s.writer(info())
        w.write_video("a", **video_data(3))
        orig = writer.create_group

        def half_written(f, *a, **k):       # the file exists and is half-written when the disk fills up
            orig(f, *a, **k)
            f.flush()
            raise _enospc()
        monkeypatch.setattr(writer, "create_group", half_written)
        with pytest.raises(InputError) as e:
            w.write_video("b", **video_data(4, seed=1))
        monkeypatch.undo()
        msg = str(e.value)
        assert msg.startswith(f"{p}: cannot commit video 'b'") and "No space left on device" in msg
        assert ".parts/seg-" in msg and ".h5.tmp" in msg and "\n" not in msg
        assert list((tmp_path / "c.h5.parts").glob("*.tmp")) == []
    assert FeatureStore(p).videos("m") == ["a"]


@pytest.mark.parametrize("where, owner", [("create_group", compaction), ("_fsync", durability),
                                          ("_rename", durability)])
def test_disk_full_while_compacting(tmp_path, monkeypatch, where, owner):
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        s.writer(info()).write_video("a", **video_data(3))
    before = p.read_bytes()
    s = FeatureStore(p, "a")
    s.writer(info()).write_video("b", **video_data(4, seed=1))
    _inject_once(monkeypatch, where, owner, "before", _enospc)
    with pytest.raises(InputError) as e:
        s.close()
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot compact the cache (No space left on device, writing {p}.tmp)"), msg
    assert not (tmp_path / "c.h5.tmp").exists() and not (tmp_path / "c.h5.lock").exists()
    assert p.read_bytes() == before                                  # main file untouched
    assert len(list((tmp_path / "c.h5.parts").glob("seg-*.h5"))) == 1  # the committed video kept
    assert FeatureStore(p).videos("m") == ["a", "b"]
    with FeatureStore(p, "a"):                                       # space freed: the next close folds it
        pass
    assert not (tmp_path / "c.h5.parts").exists() and FeatureStore(p).videos("m") == ["a", "b"]
