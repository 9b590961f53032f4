"""One writer per cache: a second process is refused while the first writes; a dead writer's lock is taken over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.errors import InputError
from features.store import FeatureStore

from helpers import info, video_data

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# A writer process: commits `n` videos of extractor `name`, printing a line after each; after the first it
# waits (up to 60 s) until the file `go` exists, when one is named.
WRITER = """
import os, sys, time
from features.store import FeatureStore
from helpers import info, video_data
path, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from features.errors import InputError
try:
    with FeatureStore(path, "a") as s:
        w = s.writer(info(name, sha=name))
        for i in range(n):
            w.write_video(f"v{i}", **video_data(5 + i, seed=i))
            print("committed", i, flush=True)
            t0 = time.monotonic()
            while go and not os.path.exists(go) and time.monotonic() - t0 < 60:
                time.sleep(0.02)
except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def _start(path, name, n, go=""):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(n), str(go)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _videos(path):
    s = FeatureStore(path)
    return {e: s.videos(e) for e in s.extractors}


def test_two_processes_second_refused_first_complete(tmp_path):
    """Before: both exited 0 and one extractor group was gone (the last compaction's rename won)."""
    p = tmp_path / "c.h5"
    go = tmp_path / "go"
    a = _start(p, "a", 4, go)
    assert a.stdout.readline().startswith("committed")       # a holds the cache now, and waits
    b = _start(p, "b", 4)
    _, err_b = b.communicate(timeout=60)
    go.touch()
    out_a, err_a = a.communicate(timeout=60)
    assert a.returncode == 0, err_a
    assert b.returncode == 2
    lines = err_b.strip().splitlines()
    assert len(lines) == 1 and "another writer holds this cache" in lines[0] and f"pid {a.pid}" in lines[0], err_b
    assert str(p) in lines[0]
    assert _videos(p) == {"a": ["v0", "v1", "v2", "v3"]}
    # once a is done, b may write: both groups are there
    b = _start(p, "b", 2)
    assert b.wait(60) == 0, b.stderr.read()
    assert _videos(p) == {"a": ["v0", "v1", "v2", "v3"], "b": ["v0", "v1"]}
    np.testing.assert_array_equal(FeatureStore(p).read(["v3"], "a", ("logits",)).arrays["a/logits"],
                                  video_data(8, seed=3)["logits"])
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "go"]     # lock file and segments gone


def test_stale_lock_of_killed_writer_is_taken_over(tmp_path):
    p = tmp_path / "c.h5"
    a = _start(p, "a", 50, tmp_path / "never")
    assert a.stdout.readline().startswith("committed")
    a.send_signal(signal.SIGKILL)
    a.wait()
    lock = tmp_path / "c.h5.lock"
    assert lock.exists() and f"pid={a.pid}" in lock.read_text()      # stale: its process is gone
    with FeatureStore(p, "a") as s:                                   # taken over, no waiting
        assert s.videos("a")[:1] == ["v0"]
        s.writer(info("a", sha="a")).write_video("extra", **video_data(3))
    v = _videos(p)["a"]
    assert v[0] == "v0" and v[-1] == "extra" and not lock.exists()


def test_same_process_second_writer_refused_and_reader_allowed(tmp_path):
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        s.writer(info()).write_video("a", **video_data(3))
        with pytest.raises(InputError, match="already writes to this cache"):
            FeatureStore(p, "a")
        assert FeatureStore(p).videos("m") == ["a"]                   # readers need no lock
    with FeatureStore(p, "a") as s:                                   # released on close
        assert s.videos("m") == ["a"]
    with pytest.raises(InputError, match="cache closed"):
        s.writer(info())


def test_compaction_deletes_only_the_segments_it_folded(tmp_path):
    """A segment on disk that the writer did not index (here: dropped in by hand) is indexed and folded in,
    never deleted unread; one that cannot be indexed is left alone."""
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        s.writer(info()).write_video("a", **video_data(3))
    other = tmp_path / "other.h5"
    with FeatureStore(other, "a") as s:
        w = s.writer(info())
        w.write_video("b", **video_data(4, seed=1))
        seg = next((tmp_path / "other.h5.parts").iterdir())
        foreign = seg.read_bytes()
        w.write_video("c", **video_data(2, seed=2))
    s = FeatureStore(p, "a")
    s.writer(info()).write_video("d", **video_data(2, seed=3))
    (tmp_path / "c.h5.parts" / "seg-000000500-0123abcd.h5").write_bytes(foreign)     # unindexed, valid
    (tmp_path / "c.h5.parts" / "seg-000000501-0123abcd.h5").write_bytes(b"not hdf5")  # unindexed, broken
    s.close()
    assert not (tmp_path / "c.h5.parts" / "seg-000000500-0123abcd.h5").exists()
    assert (tmp_path / "c.h5.parts" / "seg-000000501-0123abcd.h5").exists()
    (tmp_path / "c.h5.parts" / "seg-000000501-0123abcd.h5").unlink()
    assert FeatureStore(p).videos("m") == ["a", "d", "b"]


def test_dropped_writer_releases_its_lock(tmp_path):
    import gc
    p = tmp_path / "c.h5"
    s = FeatureStore(p, "a")
    s.writer(info()).write_video("a", **video_data(3))
    del s                                   # e.g. a notebook cell failed before close()
    gc.collect()
    with FeatureStore(p, "a") as s:         # not refused; the dropped writer's commit is folded in
        assert s.videos("m") == ["a"]
    assert FeatureStore(p).videos("m") == ["a"] and not (tmp_path / "c.h5.parts").exists()
