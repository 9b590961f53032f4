"""Bad input and faults of the HDF5 feature cache (`FeatureStore`, the API) and of `python -m extract merge`.

Data-loss cases check the files afterwards: every committed video is still there."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from features.store import durability
from features.store import ExtractorInfo, FeatureStore

from . import Case, Result, api, cli

REPO = Path(__file__).resolve().parents[2]
INFO = dict(checkpoint_sha256="c" * 64, input_size=224, normalization={}, outputs={"embedding": 8, "logits": 3})


def _info(name: str = "m") -> ExtractorInfo:
    return ExtractorInfo(name, **INFO)


def _data(n: int, seed: int) -> dict:
    r = np.random.default_rng(seed)
    return dict(frame=np.arange(1, n + 1), face=np.ones(n, bool), embedding=r.normal(size=(n, 8)),
                logits=r.normal(size=(n, 3)).astype(np.float32))


def _write(path: Path, videos, name: str = "m") -> None:
    with FeatureStore(path, "a") as s:
        w = s.writer(_info(name))
        for i, (v, n) in enumerate(videos):
            w.write_video(v, **_data(n, i))


def _good(tmp: Path, shared: Path, name: str = "c.h5") -> Path:
    """A copy of a valid two-video cache (a: 5 frames, b: 7)."""
    src = shared / "store_good.h5"
    if not src.exists():
        _write(src, [("a", 5), ("b", 7)])
    dst = tmp / name
    shutil.copy(src, dst)
    return dst


def _videos(path) -> dict[str, list[str]]:
    s = FeatureStore(path)
    return {e: s.videos(e) for e in s.extractors}


def _debris(tmp: Path) -> list[str]:
    return [p.name for p in tmp.rglob("*") if p.name.endswith((".tmp", ".lock"))]


# ----------------------------------------------------------------------------------------------------------
# another process writing the cache

HOLDER = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from features.store import ExtractorInfo, FeatureStore
path, name, go, die = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "die"
s = FeatureStore(path, "a")
w = s.writer(ExtractorInfo(name, **{info!r}))
for i in range(2):
    r = np.random.default_rng(i)
    w.write_video(f"h{{i}}", frame=np.arange(1, 4), face=np.ones(3, bool), embedding=r.normal(size=(3, 8)),
                  logits=r.normal(size=(3, 3)).astype(np.float32))
print("holding", flush=True)
if die:
    os.kill(os.getpid(), signal.SIGKILL)     # a crash: the lock file stays, the kernel drops the lock
t0 = time.monotonic()
while not os.path.exists(go) and time.monotonic() - t0 < 60:
    time.sleep(0.02)
s.close()
"""

_PROCS: dict[Path, subprocess.Popen] = {}


def _hold(tmp: Path, path: Path, name: str, die: bool = False) -> subprocess.Popen:
    """Start another writer process on `path`; returns once it holds the cache (or has died holding it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO), info=INFO), str(path), name,
                          str(tmp / "go"), "die" if die else "live"], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "holding"
    _PROCS[tmp] = p
    return p


def _release(tmp: Path) -> int:
    (tmp / "go").touch()
    p = _PROCS.pop(tmp)
    return p.wait(60)


def _two_writers(tmp, shared):
    p = _good(tmp, shared)
    _hold(tmp, p, "other")
    return api(lambda: FeatureStore(p, "a"))


def _two_writers_check(tmp, shared, res):
    assert _release(tmp) == 0
    assert _videos(tmp / "c.h5") == {"m": ["a", "b"], "other": ["h0", "h1"]}
    assert _debris(tmp) == []


def _stale_lock(tmp, shared):
    p = _good(tmp, shared)
    _hold(tmp, p, "crashed", die=True)
    _PROCS.pop(tmp).wait(60)
    assert (tmp / "c.h5.lock").exists()

    def resume():
        with FeatureStore(p, "a") as s:
            s.writer(_info()).write_video("c", **_data(2, 9))
    return api(resume)


def _stale_lock_check(tmp, shared, res):
    assert _videos(tmp / "c.h5") == {"m": ["a", "b", "c"], "crashed": ["h0", "h1"]}
    assert _debris(tmp) == [] and not (tmp / "c.h5.parts").exists()


def _merge_while_written(tmp, shared):
    from extract.cli import main
    p = _good(tmp, shared, "c.shard-1-of-2.h5")
    _write(tmp / "c.shard-2-of-2.h5", [("z", 2)])
    _hold(tmp, p, "other")
    return cli(main, ["merge", tmp / "c.h5", "--out", tmp / "c.h5", "--remove-inputs"])


def _merge_while_written_check(tmp, shared, res):
    assert _release(tmp) == 0
    assert not (tmp / "c.h5").exists()
    assert _videos(tmp / "c.shard-1-of-2.h5") == {"m": ["a", "b"], "other": ["h0", "h1"]}


# ----------------------------------------------------------------------------------------------------------
# interrupts and a full disk while writing

def _interrupt_run(tmp, shared):
    """`extract run` (a tiny numpy extractor, no workers) with Ctrl-C landing right after the 3rd commit's
    rename, before it is indexed; the CLI then closes the cache as on any interrupt."""
    import extract.cli as ecli
    from helpers import TinyExtractor, make_set
    data = shared / "store_interrupt_data"
    if not data.exists():
        make_set(data, n_train=3, n_val=1, n_frames=10, size=32)
    renamed: list[str] = []
    orig_rename, orig_create = durability._rename, ecli.create_extractor

    def rename(tmp_file, final):
        orig_rename(tmp_file, final)
        if not final.name.startswith("seg-"):
            return                                  # the compaction on the way out
        renamed.append(final.name)
        if len(renamed) == 3:
            raise KeyboardInterrupt
    durability._rename, ecli.create_extractor = rename, (lambda spec, *a, **k: TinyExtractor())
    try:
        res = cli(ecli.main, ["run", "--data", data, "--out", tmp / "c.h5", "--workers", "0", "--batch", "4",
                              "--quiet"])
    finally:
        durability._rename, ecli.create_extractor = orig_rename, orig_create
    (tmp / "renamed.txt").write_text(str(len(renamed)))
    return res


def _interrupt_run_check(tmp, shared, res):
    assert res.code == 130
    n = int((tmp / "renamed.txt").read_text())
    assert n == 3 and len(_videos(tmp / "c.h5")["tiny"]) == 3      # every renamed video kept
    assert _debris(tmp) == [] and not (tmp / "c.h5.parts").exists()


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "Can't close file (file write failed)")


def _disk_full_commit(tmp, shared):
    p = _good(tmp, shared)

    def go():
        with FeatureStore(p, "a") as s:
            w = s.writer(_info())
            orig = durability._fsync
            durability._fsync = _enospc
            try:
                w.write_video("c", **_data(4, 3))
            finally:
                durability._fsync = orig
    return api(go)


def _disk_full_commit_check(tmp, shared, res):
    assert _debris(tmp) == [] and _videos(tmp / "c.h5") == {"m": ["a", "b"]}


def _disk_full_compact(tmp, shared):
    p = _good(tmp, shared)
    s = FeatureStore(p, "a")
    s.writer(_info()).write_video("c", **_data(4, 3))
    orig = durability._fsync
    durability._fsync = _enospc
    try:
        return api(s.close)
    finally:
        durability._fsync = orig


def _disk_full_compact_check(tmp, shared, res):
    assert _debris(tmp) == []
    assert _videos(tmp / "c.h5") == {"m": ["a", "b", "c"]}          # main + the kept segment
    assert len(list((tmp / "c.h5.parts").glob("seg-*.h5"))) == 1


# ----------------------------------------------------------------------------------------------------------
# damaged files

def _damaged(edit, read: bool = False):
    def run(tmp, shared):
        p = _good(tmp, shared)
        with h5py.File(p, "r+") as f:
            edit(f, f["extractors/m"])
        return api(lambda: FeatureStore(p).read() if read else FeatureStore(p))
    return run


def _shorter(f, g):
    e = g["embedding"][:4]
    del g["embedding"]
    g.create_dataset("embedding", data=e)


def _set(key, value, attr=True, root=False):
    def edit(f, g):
        obj = f if root else g
        if attr:
            obj.attrs[key] = value
        else:
            obj[key][...] = value
    return edit


def _del(key, attr=True, root=False):
    def edit(f, g):
        obj = f if root else g
        del (obj.attrs if attr else obj)[key]
    return edit


def _frames(f, g):
    g["frame"][6] = 1                    # video b: 1, 1, 3, ...


# ----------------------------------------------------------------------------------------------------------
# extract merge

def _merge(make_inputs, out="m.h5"):
    def run(tmp, shared):
        from extract.cli import main
        inputs = make_inputs(tmp, shared)
        return cli(main, ["merge", *inputs, "--out", tmp / out, "--remove-inputs"])
    return run


def _shards_ok(tmp, shared):
    _good(tmp, shared, "c.shard-1-of-2.h5")
    _write(tmp / "c.shard-2-of-2.h5", [("z", 2)])
    return [tmp / "c.h5"]


def _shards_ok_check(tmp, shared, res):
    assert _videos(tmp / "m.h5") == {"m": ["a", "b", "z"]}
    assert sorted(p.name for p in tmp.iterdir()) == ["m.h5"]              # --remove-inputs


def _unchanged(names):
    def check(tmp, shared, res):
        assert sorted(p.name for p in tmp.iterdir()) == sorted(names)
    return check


def _dup_inputs(tmp, shared):
    _good(tmp, shared, "a.h5")
    _good(tmp, shared, "b.h5")
    return [tmp / "a.h5", tmp / "b.h5"]


def _incomplete(tmp, shared):
    _good(tmp, shared, "c.shard-1-of-3.h5")
    _write(tmp / "c.shard-3-of-3.h5", [("z", 2)])
    return [tmp / "c.h5"]


def _not_cache(tmp, shared):
    _good(tmp, shared, "a.h5")
    (tmp / "b.h5").write_text("not hdf5")
    return [tmp / "a.h5", tmp / "b.h5"]


def _other_weights(tmp, shared):
    _good(tmp, shared, "a.h5")
    with FeatureStore(tmp / "b.h5", "a") as s:
        s.writer(ExtractorInfo("m", **{**INFO, "checkpoint_sha256": "d" * 64})).write_video("z", **_data(2, 1))
    return [tmp / "a.h5", tmp / "b.h5"]


def _out_exists(tmp, shared):
    _good(tmp, shared, "a.h5")
    _good(tmp, shared, "m.h5")
    return [tmp / "a.h5"]


def _out_exists_check(tmp, shared, res):
    assert (tmp / "m.h5").read_bytes() == (shared / "store_good.h5").read_bytes() and (tmp / "a.h5").exists()


def _merge_disk_full(tmp, shared):
    from extract.cli import main
    inputs = _shards_ok(tmp, shared)
    orig = durability._fsync
    durability._fsync = _enospc
    try:
        return cli(main, ["merge", *inputs, "--out", tmp / "m.h5", "--remove-inputs"])
    finally:
        durability._fsync = orig


def _shards_read(tmp, shared):
    _shards_ok(tmp, shared)
    return api(lambda: FeatureStore(tmp / "c.h5").read())


CASES = [
    Case("FeatureStore", "second writer process on one cache", _two_writers,
         expect="another writer holds this cache (pid", check=_two_writers_check, defect="data-loss"),
    Case("FeatureStore", "stale lock of a killed writer is taken over", _stale_lock, expect=None,
         check=_stale_lock_check, defect=""),
    Case("FeatureStore", "interrupt between a commit's rename and its indexing (extract run)", _interrupt_run,
         expect="interrupted; committed videos are kept", check=_interrupt_run_check, defect="data-loss"),
    Case("FeatureStore", "disk full while committing a video", _disk_full_commit,
         expect="cannot commit video 'c' of extractor 'm' (No space left on device, writing",
         check=_disk_full_commit_check, defect="misleading"),
    Case("FeatureStore", "disk full while compacting", _disk_full_compact,
         expect="cannot compact the cache (No space left on device, writing", check=_disk_full_compact_check,
         defect="misleading"),
    Case("FeatureStore", "frame numbers repeated within a video", _damaged(_frames, read=True),
         expect="extractor 'm', video 'b': frame 1 follows frame 1", defect="silent"),
    Case("FeatureStore", "embedding shorter than frame", _damaged(_shorter),
         expect="dataset 'embedding' has shape (4, 8), expected (12, 8)", defect="traceback"),
    Case("FeatureStore", "video_count beyond the data", _damaged(_set("video_count", [5, 70], attr=False)),
         expect="video 'b': video_start=5, video_count=70 lie beyond the 12 rows", defect="traceback"),
    Case("FeatureStore", "video_start negative", _damaged(_set("video_start", [-3, 5], attr=False)),
         expect="video 'a': video_start=-3", defect="traceback"),
    Case("FeatureStore", "provenance attribute not JSON", _damaged(_set("normalization", "{mean: [0.5")),
         expect="attribute 'normalization' is not valid JSON", defect="traceback"),
    Case("FeatureStore", "provenance attribute missing", _damaged(_del("input_size")),
         expect="provenance attribute(s) missing: input_size", defect="traceback"),
    Case("FeatureStore", "dataset missing", _damaged(_del("logits", attr=False)),
         expect="dataset(s) logits missing", defect="traceback"),
    Case("FeatureStore", "wrong format attribute", _damaged(_set("format", "something-else", root=True)),
         expect="not a feature cache (format attribute 'something-else'", defect=""),
    Case("FeatureStore", "schema_version attribute missing", _damaged(_del("schema_version", root=True)),
         expect="schema_version attribute None is not a number", defect="traceback"),
    Case("FeatureStore", "absent cache read through its shard files", _shards_read, expect=None, defect=""),
    Case("extract merge", "shard files into one (inputs removed)", _merge(_shards_ok), expect=None,
         check=_shards_ok_check, defect=""),
    Case("extract merge", "video in two inputs", _merge(_dup_inputs),
         expect="video 'a' of extractor 'm' is stored twice", check=_unchanged(["a.h5", "b.h5"]), defect=""),
    Case("extract merge", "incomplete shard set", _merge(_incomplete), expect="shard(s) 2 of 3 are missing",
         check=_unchanged(["c.shard-1-of-3.h5", "c.shard-3-of-3.h5"]), defect=""),
    Case("extract merge", "input not a cache", _merge(_not_cache), expect="b.h5: cannot open feature cache",
         check=_unchanged(["a.h5", "b.h5"]), defect=""),
    Case("extract merge", "inputs of other weights", _merge(_other_weights),
         expect="here was made with other weights", check=_unchanged(["a.h5", "b.h5"]), defect=""),
    Case("extract merge", "--out is an existing cache that is not an input", _merge(_out_exists),
         expect="m.h5: exists and is not one of the inputs", check=_out_exists_check, defect=""),
    Case("extract merge", "an input still being written", _merge_while_written,
         expect="another writer holds this cache", check=_merge_while_written_check, defect=""),
    Case("extract merge", "disk full while writing the merged file", _merge_disk_full,
         expect="cannot write the merged cache (No space left on device, writing",
         check=_unchanged(["c.shard-1-of-2.h5", "c.shard-2-of-2.h5"]), defect=""),
]
