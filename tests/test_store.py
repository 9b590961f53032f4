import os

import h5py
import numpy as np
import pandas as pd
import pytest

from features import cachelock
from features.errors import InputError
from features.store import FeatureStore

from helpers import info, video_data, write

RNG = np.random.default_rng(0)


def die(store):
    """What a killed writer leaves: open segments unfolded, its lock file (the kernel drops the lock itself)."""
    store._close_files()
    os.close(store._lock._fd)
    cachelock._HELD.discard(os.path.abspath(store._lock.path))
    store._lock._fd = None


def test_roundtrip_and_provenance(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 5), ("b", 7)])
    s = FeatureStore(p)
    assert s.extractors == ["m"] and s.videos("m") == ["a", "b"]
    i = s.info("m")
    assert i.checkpoint_sha256 == "abc" and i.outputs["embedding"] == 16 and "numpy" in i.package_versions
    blk = s.read(["b", "a"], "m", ("embedding", "logits", "va"))
    ref_b, ref_a = video_data(7, seed=1), video_data(5, seed=0)
    assert blk.index["video"].astype(str).tolist() == ["b"] * 7 + ["a"] * 5
    assert blk.index["frame"].tolist() == list(range(1, 8)) + list(range(1, 6))
    assert blk.arrays["m/embedding"].dtype == np.float16
    np.testing.assert_allclose(blk.arrays["m/embedding"][:7], ref_b["embedding"], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(blk.arrays["m/logits"][7:], ref_a["logits"])
    np.testing.assert_array_equal(blk.index["face"].to_numpy(), np.r_[ref_b["face"], ref_a["face"]])
    assert blk.matrix().shape == (12, 26) and blk.matrix().dtype == np.float32
    df = s.to_dataframe(["a"], "m", ("logits",))
    assert list(df.columns[:3]) == ["video", "frame", "face"] and df.shape == (5, 3 + 8)


def test_float32_on_request(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 3)], dtype="float32")
    blk = FeatureStore(p).read(["a"])
    np.testing.assert_array_equal(blk.arrays["m/embedding"], video_data(3)["embedding"].astype(np.float32))


def test_float16_rounding_is_numpys(tmp_path):
    """Embeddings are cast by numpy (round to nearest even, subnormals kept), not by HDF5's converter, which
    stored -0.24998 as -0.125 and truncated subnormals."""
    emb = np.array([[-0.24998184, 0.49994558, 0.24993984, 1.0490012e-07, 9.4708099e-07, -2.1879167e-07,
                     -10.144531, 81.15625, 3.3333333, -1e-3, 0.0, 1.0, 5.9604645e-08, 1234.5678, -0.99997, 0.7]],
                   np.float32)
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        s.writer(info()).write_video("a", frame=[1], face=[True], embedding=emb,
                                     logits=np.zeros((1, 8), np.float32), va=np.zeros((1, 2), np.float32))
    got = FeatureStore(tmp_path / "c.h5").read(["a"]).arrays["m/embedding"]
    np.testing.assert_array_equal(got.view(np.uint16), emb.astype(np.float16).view(np.uint16))
    assert got[0, 0] == np.float16(-0.25)


def test_append_resumes_and_keeps_committed(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 5)])
    with FeatureStore(p, "a") as s:
        w = s.writer(info())
        assert w.has_video("a") and not w.has_video("b")
        w.write_video("b", **video_data(4, seed=1))
        # visible before compaction, main file untouched so far
        assert s.videos("m") == ["a", "b"]
        with pytest.raises(InputError, match="already in the cache"):
            w.write_video("a", **video_data(5))
    assert not (tmp_path / "c.h5.parts").exists()
    s = FeatureStore(p)
    assert s.videos("m") == ["a", "b"] and s.n_frames("m") == 9


def test_killed_writer_leaves_committed_videos(tmp_path):
    """Simulate a writer that died: committed segments but no compaction, plus half-written debris."""
    p = tmp_path / "c.h5"
    write(p, [("a", 5)])
    s = FeatureStore(p, "a")
    w = s.writer(info())
    w.write_video("b", **video_data(4, seed=1))
    die(s)                    # no compaction
    assert (tmp_path / "c.h5.lock").exists()
    (tmp_path / "c.h5.parts" / "seg-000000099-deadbeef.h5.tmp").write_bytes(b"\x89HDF partial")
    (tmp_path / "c.h5.tmp").write_bytes(b"partial compaction")
    r = FeatureStore(p)       # readable as is, sees both videos
    assert r.videos("m") == ["a", "b"]
    with FeatureStore(p, "a") as s2:    # resume: debris removed, continue
        assert s2.writer(info()).has_video("b")
        s2.writer(info()).write_video("c", **video_data(2, seed=2))
    assert FeatureStore(p).videos("m") == ["a", "b", "c"]
    assert sorted(os.listdir(tmp_path)) == ["c.h5"]


def test_compaction_killed_before_cleanup(tmp_path):
    """Main file already holds the segments (rename happened) but they were not deleted."""
    p = tmp_path / "c.h5"
    s = FeatureStore(p, "a")
    s.writer(info()).write_video("a", **video_data(3))
    seg = next((tmp_path / "c.h5.parts").iterdir())
    keep = seg.read_bytes()
    s.close()
    (tmp_path / "c.h5.parts").mkdir()
    seg.write_bytes(keep)
    assert FeatureStore(p).videos("m") == ["a"]        # not counted twice
    with FeatureStore(p, "a"):
        pass
    assert not seg.exists()


def test_refuses_other_checkpoint_and_schema(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 3)])
    with FeatureStore(p, "a") as s:
        with pytest.raises(InputError, match="other weights or preprocessing.*checkpoint_sha256"):
            s.writer(info(sha="other"))
    before = FeatureStore(p).read(["a"]).arrays["m/embedding"].copy()
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(InputError, match=r"c\.h5: cache schema version 99"):
        FeatureStore(p)
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = 1
    np.testing.assert_array_equal(FeatureStore(p).read(["a"]).arrays["m/embedding"], before)


def test_missing_video_and_output(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 3)], va=False)
    s = FeatureStore(p)
    with pytest.raises(InputError, match=r"c\.h5: video 'zz' is not in the cache"):
        s.read(["zz"])
    with pytest.raises(InputError, match="has no output 'va'"):
        s.read(["a"], outputs=("va",))
    with pytest.raises(InputError, match="does not exist"):
        FeatureStore(tmp_path / "nope.h5")


def test_shards_and_several_extractors(tmp_path):
    a, b = tmp_path / "c.shard-0-of-2.h5", tmp_path / "c.shard-1-of-2.h5"
    write(a, [("v1", 5)])
    write(b, [("v2", 4)])
    with FeatureStore(a, "a") as s:       # a second extractor with fewer frames of v1
        w = s.writer(info("n", sha="x", dim=4, logits=3, va=False))
        d = video_data(3, dim=4, logits=3, va=False, seed=5)
        d["frame"] = np.array([1, 3, 5])
        w.write_video("v1", **d)
    s = FeatureStore([a, b])
    assert s.videos("m") == ["v1", "v2"]
    blk = s.read(["v1"], ["m", "n"], {"m": ["embedding"], "n": ["logits"]})
    assert blk.index["frame"].tolist() == [1, 3, 5]
    np.testing.assert_array_equal(blk.arrays["n/logits"], d["logits"])
    full = s.read(["v1"], "m").arrays["m/embedding"]
    np.testing.assert_array_equal(blk.arrays["m/embedding"], full[[0, 2, 4]])
    assert blk.index["face"].tolist() == list(video_data(5, seed=0)["face"][[0, 2, 4]] & d["face"])


def test_bad_writes(tmp_path):
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        w = s.writer(info())
        d = video_data(4)
        d["logits"] = d["logits"][:, :3]
        with pytest.raises(InputError, match=r"'logits' must have shape \(4, 8\)"):
            w.write_video("a", **d)
        d = video_data(4)
        d["frame"] = np.array([1, 3, 2, 4])
        with pytest.raises(InputError, match="must increase"):
            w.write_video("a", **d)
    assert not (tmp_path / "c.h5").exists()     # nothing committed, nothing written
    write(tmp_path / "c.h5", [("a", 2)])
    with pytest.raises(InputError, match="read-only"):
        FeatureStore(tmp_path / "c.h5").writer(info())


def test_many_segments_stay_under_the_open_file_limit(tmp_path):
    """Before: every committed segment stayed open (one descriptor each), so a run of ~1000 commits (videos x
    extractors) hit the usual 1024 open-file limit and failed with 'Too many open files'."""
    import subprocess
    import sys
    from pathlib import Path
    here = Path(__file__).resolve().parent
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))\n"
        "from features.store import FeatureStore\n"
        "from helpers import info, video_data\n"
        "s = FeatureStore(sys.argv[1], 'a')\n"
        "w = s.writer(info())\n"
        "for i in range(220):\n"
        "    w.write_video(f'v{i}', **video_data(2, seed=i))\n"
        "r = FeatureStore(sys.argv[1])\n"            # a reader of the 120 segments, beside the writer
        "assert len(r.read(r.videos('m')).index) == 440\n"
        "r.close()\n"
        "s.close()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.h5")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    s = FeatureStore(tmp_path / "c.h5")
    assert len(s.videos("m")) == 220
    np.testing.assert_array_equal(s.read(["v77"], outputs=("logits",)).arrays["m/logits"],
                                  video_data(2, seed=77)["logits"])


def test_segments_reopened_on_demand(tmp_path, monkeypatch):
    from features.store import catalogue
    monkeypatch.setattr(catalogue, "_OPEN_SEGMENTS", 3)
    p = tmp_path / "c.h5"
    s = FeatureStore(p, "a")
    w = s.writer(info())
    for i in range(8):
        w.write_video(f"v{i}", **video_data(3 + i, seed=i))
    assert sum(f is not None for f in s._files) == 3
    blk = s.read([f"v{i}" for i in (7, 0, 3)], outputs=("logits",))
    np.testing.assert_array_equal(blk.arrays["m/logits"],
                                  np.concatenate([video_data(3 + i, seed=i)["logits"] for i in (7, 0, 3)]))
    r = FeatureStore(p)              # a reader opened before the compaction
    r_closed = [i for i, f in enumerate(r._files) if f is None]
    s.close()
    assert FeatureStore(p).videos("m") == [f"v{i}" for i in range(8)]
    with pytest.raises(InputError, match="compacted while it was open here; open it again"):
        r.read([r._catalog["m"] and list(r._catalog["m"])[r_closed[0]]])
