"""The cache's optional face datasets (box, score, landmarks) and item sources: written, read, compacted and
merged beside caches without them, and refused when damaged."""
import h5py
import numpy as np
import pytest

from features.errors import InputError
from features.store import FeatureStore, merge_caches

from helpers import info, video_data


def faces(n, seed=0):
    r = np.random.default_rng(seed)
    box = r.uniform(0, 200, (n, 4)).astype(np.float32)
    box[::3] = np.nan                                       # frames without a face
    return {"face_box": box, "face_score": r.uniform(0, 1, (n, 1)).astype(np.float32),
            "face_landmarks": r.uniform(0, 200, (n, 10)).astype(np.float32)}


def test_faces_roundtrip_beside_a_video_without_them(tmp_path):
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        w = s.writer(info())
        w.write_video("old", **video_data(4, seed=0))                     # no detector ran
        w.write_video("clip_p1", **video_data(6, seed=1), faces=faces(6), source_video="clip")
    with FeatureStore(p) as s:                                            # compacted into one file
        assert s.has_faces("m")
        assert s.video_sources("m") == {"old": "old", "clip_p1": "clip"}
        blk = s.read(["old", "clip_p1"], "m", ("embedding", "face_box", "face_score", "face_landmarks"))
    ref = faces(6)
    assert blk.arrays["m/face_box"].shape == (10, 4) and blk.arrays["m/face_score"].shape == (10, 1)
    assert np.isnan(blk.arrays["m/face_box"][:4]).all() and np.isnan(blk.arrays["m/face_landmarks"][:4]).all()
    np.testing.assert_array_equal(blk.arrays["m/face_box"][4:], ref["face_box"])
    np.testing.assert_array_equal(blk.arrays["m/face_landmarks"][4:], ref["face_landmarks"])


def test_an_old_cache_reads_and_merges_with_a_new_one(tmp_path):
    old, new = tmp_path / "old.h5", tmp_path / "new.h5"
    with FeatureStore(old, "a") as s:
        s.writer(info()).write_video("a", **video_data(5))
    with h5py.File(old) as f:                                # exactly the datasets the format had before
        assert "face_box" not in f["extractors/m"] and "video_source" not in f["extractors/m"]
    with FeatureStore(old) as s:
        assert not s.has_faces("m")
        assert np.isnan(s.read(None, "m", ("face_score",)).arrays["m/face_score"]).all()
    with FeatureStore(new, "a") as s:
        s.writer(info()).write_video("b_p1", **video_data(3, seed=2), faces=faces(3, 1), source_video="b")
    merge_caches([old, new], tmp_path / "m.h5")
    with FeatureStore(tmp_path / "m.h5") as s:
        assert s.video_sources("m") == {"a": "a", "b_p1": "b"}
        box = s.read(["a", "b_p1"], "m", ("face_box",)).arrays["m/face_box"]
    assert np.isnan(box[:5]).all()
    np.testing.assert_array_equal(box[5:], faces(3, 1)["face_box"])


def test_bad_face_arrays_and_damaged_face_datasets_are_refused(tmp_path):
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        w = s.writer(info())
        bad = faces(4)
        bad["face_landmarks"] = bad["face_landmarks"][:, :6]
        with pytest.raises(InputError, match="face_landmarks"):
            w.write_video("a", **video_data(4), faces=bad)
        w.write_video("a", **video_data(4), faces=faces(4))
    with h5py.File(p, "a") as f:
        del f["extractors/m/face_score"]
        f["extractors/m"].create_dataset("face_score", data=np.zeros((3, 1), np.float32))
    with pytest.raises(InputError, match="face_score"):
        FeatureStore(p)
    with h5py.File(p, "a") as f:
        del f["extractors/m/face_score"]
    with pytest.raises(InputError, match="face_score.*missing"):
        FeatureStore(p)


def test_several_videos_in_one_commit_all_or_none(tmp_path):
    p = tmp_path / "c.h5"
    with FeatureStore(p, "a") as s:
        w = s.writer(info())
        w.write_video("x_p2", **video_data(2, seed=5))
        items = [dict(video=f"x_p{q}", source_video="x", faces=faces(4, q), **video_data(4, seed=q)) for q in (1, 2)]
        with pytest.raises(InputError, match="x_p2.*already"):
            w.write_videos(items)                               # one item is refused: nothing of the commit
        assert not w.has_video("x_p1")
        items[1]["video"] = "x_p3"
        items[1].pop("faces")                                   # a person without faces in one commit: NaN rows
        w.write_videos(items)
    with FeatureStore(p) as s:
        assert s.videos("m") == ["x_p2", "x_p1", "x_p3"]       # commit order, the commit's items in order
        score = s.read(["x_p1", "x_p3"], "m", ("face_score",)).arrays["m/face_score"]
    np.testing.assert_array_equal(score[:4], faces(4, 1)["face_score"])
    assert np.isnan(score[4:]).all()
