"""Shard files read as one cache (FeatureStore, classify --cache) and `extract merge` folds them into one file."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from features.store import durability
from extract.cli import main as extract_main
from extract.sources import shard_path
from features.errors import InputError
from features.store import FeatureStore, cache_files, merge_caches, shard_files

from helpers import info, video_data, write

ALL = [("v1", 5), ("v2", 4), ("v3", 6), ("v4", 3)]


def _shards(tmp_path, n=2, stem="c"):
    out = tmp_path / f"{stem}.h5"
    for i in range(1, n + 1):
        part = [(v, k) for j, (v, k) in enumerate(ALL) if j % n == i - 1]
        with FeatureStore(shard_path(out, i, n), "a") as s:
            w = s.writer(info())
            for v, k in part:
                w.write_video(v, **video_data(k, seed=int(v[1:])))
    return out


def _content(paths):
    s = FeatureStore(paths)
    vids = sorted(s.videos("m"))
    blk = s.read(vids, "m", ("embedding", "logits", "va"))
    return vids, blk.index["frame"].tolist(), {k: a.copy() for k, a in blk.arrays.items()}


def _same(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


def test_shard_naming_matches_the_runner(tmp_path):
    out = _shards(tmp_path, 3)
    assert shard_files(out) == [shard_path(out, i, 3) for i in (1, 2, 3)]
    assert shard_files(tmp_path / "other.h5") == []


def test_absent_cache_reads_its_shards(tmp_path):
    out = _shards(tmp_path)
    s = FeatureStore(out)
    assert sorted(s.videos("m")) == ["v1", "v2", "v3", "v4"] and len(s.paths) == 2
    assert cache_files(str(out)) == shard_files(out)
    assert cache_files(f"{shard_path(out, 1, 2)},{shard_path(out, 2, 2)}") == shard_files(out)
    assert cache_files(str(tmp_path / "c.shard-*.h5")) == shard_files(out)


def test_incomplete_or_mixed_shards_refused(tmp_path):
    out = _shards(tmp_path, 3)
    shard_path(out, 2, 3).unlink()
    with pytest.raises(InputError, match=r"c\.h5: the cache is absent and shard\(s\) 2 of 3 are missing"):
        FeatureStore(out)
    write(shard_path(out, 1, 2), [("x", 2)])
    with pytest.raises(InputError, match=r"shard files of 2 different splits \(of 2, of 3\)"):
        cache_files(str(out))
    with pytest.raises(InputError, match=r"nope\.h5: feature cache not found, nor its shard files "
                                         r"nope\.shard-i-of-n\.h5"):
        cache_files(str(tmp_path / "nope.h5"))
    with pytest.raises(InputError, match="no file matches"):
        cache_files(str(tmp_path / "zz*.h5"))


def test_merge_shards(tmp_path, capsys):
    out = _shards(tmp_path)
    ref = _content(shard_files(out))
    rc = extract_main(["merge", str(out), "--out", str(out)])    # the absent cache stands for its shards
    assert rc == 0, capsys.readouterr().err
    assert "merge: 2 files -> " in capsys.readouterr().out        # the summary line goes to stdout
    assert all(p.exists() for p in shard_files(out))             # kept by default
    _same(_content(out), ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.shard-1-of-2.h5", "c.shard-2-of-2.h5"]


def test_merge_remove_inputs_and_killed_shard_segments(tmp_path):
    out = _shards(tmp_path)
    s = FeatureStore(shard_path(out, 2, 2), "a")                 # a shard run killed after one more commit
    s.writer(info()).write_video("v5", **video_data(2, seed=5))
    s._close_files()
    s._lock.release()
    ref = _content(shard_files(out))
    assert "v5" in ref[0]
    merged = tmp_path / "all.h5"
    assert merge_caches(shard_files(out), merged, remove_inputs=True) == {"m": 5}
    _same(_content(merged), ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.h5"]


def test_merge_into_one_of_the_inputs(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write(a, [("v1", 3)])
    s = FeatureStore(a, "a")                                     # a has an unfolded segment too
    s.writer(info()).write_video("v2", **video_data(4, seed=2))
    s._close_files()
    s._lock.release()
    with FeatureStore(b, "a") as s:
        s.writer(info()).write_video("v3", **video_data(2, seed=3))
    ref = _content([a, b])
    merge_caches([a, b], a)
    _same(_content(a), ref)
    assert not (tmp_path / "a.h5.parts").exists() and b.exists()


def _dup(tmp_path):
    write(tmp_path / "a.h5", [("v1", 3)])
    write(tmp_path / "b.h5", [("v1", 3)])
    return [tmp_path / "a.h5", tmp_path / "b.h5"]


def _other_weights(tmp_path):
    write(tmp_path / "a.h5", [("v1", 3)])
    write(tmp_path / "b.h5", [("v2", 3)], sha="other")
    return [tmp_path / "a.h5", tmp_path / "b.h5"]


def _not_a_cache(tmp_path):
    write(tmp_path / "a.h5", [("v1", 3)])
    (tmp_path / "b.h5").write_text("hello")
    return [tmp_path / "a.h5", tmp_path / "b.h5"]


@pytest.mark.parametrize("make, match", [
    (_dup, r"b\.h5: video 'v1' of extractor 'm' is stored twice"),
    (_other_weights, r"b\.h5: extractor 'm' here was made with other weights"),
    (_not_a_cache, r"b\.h5: cannot open feature cache"),
])
def test_merge_bad_inputs_write_nothing(tmp_path, make, match):
    inputs = make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=match):
        merge_caches(inputs, tmp_path / "m.h5", remove_inputs=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_merge_refuses_existing_out_and_locked_input(tmp_path, capsys):
    out = _shards(tmp_path)
    write(tmp_path / "other.h5", [("z", 2)])
    before = (tmp_path / "other.h5").read_bytes()
    rc = extract_main(["merge", str(out), "--out", str(tmp_path / "other.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {tmp_path / 'other.h5'}: exists and is not one of the inputs; choose "
                               f"another --out, or name it among the inputs to fold the others into it"]
    assert (tmp_path / "other.h5").read_bytes() == before
    with FeatureStore(shard_path(out, 1, 2), "a"):              # still being written
        with pytest.raises(InputError, match=r"shard-1-of-2\.h5: this process already writes"):
            merge_caches(shard_files(out), tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    rc = extract_main(["merge", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "m.h5")])
    assert rc == 2 and "nope.h5: feature cache not found" in capsys.readouterr().err


def test_merge_disk_full_leaves_no_tmp(tmp_path, monkeypatch):
    out = _shards(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "Can't close file")
    monkeypatch.setattr(durability, "_fsync", full)
    with pytest.raises(InputError, match=r"m\.h5: cannot write the merged cache \(No space left on device, "
                                         r"writing .*m\.h5\.tmp\)"):
        merge_caches(shard_files(out), tmp_path / "m.h5", remove_inputs=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.shard-1-of-2.h5", "c.shard-2-of-2.h5"]


def test_classify_reads_shards_as_one_cache(enet_world, tmp_path):
    from classify.__main__ import main
    root, cache, labels = enet_world
    src = FeatureStore(cache)
    vids = src.videos("enet")
    inf = src.info("enet")
    sharded = tmp_path / "features.h5"
    for i in (1, 2):
        with FeatureStore(shard_path(sharded, i, 2), "a") as s:
            w = s.writer(inf)
            for v in vids[i - 1::2]:
                b = src.read([v], "enet", ("embedding", "logits", "va"))
                w.write_video(v, frame=b.index["frame"].to_numpy(), face=b.index["face"].to_numpy(),
                              **{k.split("/")[1]: a for k, a in b.arrays.items()})
    metrics = {}
    for name, c in (("one", cache), ("shards", sharded)):
        rc = main(["--task", "expr", "--cache", str(c), "--labels", str(labels), "--heads", "logits",
                   "--runs-dir", str(tmp_path / "runs"), "--name", name, "--k", "0"])
        assert rc == 0
        metrics[name] = json.loads((tmp_path / "runs" / "expr" / name / "metrics.json").read_text())
    assert metrics["one"]["frames"] == metrics["shards"]["frames"]
    assert metrics["one"]["summary"] == metrics["shards"]["summary"]
