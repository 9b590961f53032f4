"""NaN / infinite cached features: refused, naming cache, extractor, output, video and frame, wherever heads read."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from features.finite import check_block, nonfinite_rows, read_for_heads
from features.labels import join
from features.store import ExtractorInfo, FeatureBlock, FeatureStore
from features.tasks import VA


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nonfinite_rows_matches_isfinite(dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (300, 7)).astype(dtype)
    big = np.finfo(dtype).max
    a[3, 0], a[10, 6], a[11, 2], a[12, 3] = np.nan, np.inf, -np.inf, -np.nan
    a[20] = big                                   # the largest finite values are finite
    a[21] = np.finfo(dtype).smallest_subnormal    # so are subnormals
    a[22, 1] = -big
    want = ~np.isfinite(a).all(axis=1)
    assert want.sum() == 4
    np.testing.assert_array_equal(nonfinite_rows(a, step=64), want)
    np.testing.assert_array_equal(nonfinite_rows(a[:, ::2]), ~np.isfinite(a[:, ::2]).all(axis=1))   # a view
    np.testing.assert_array_equal(nonfinite_rows(a[::3]), want[::3])


def test_nonfinite_rows_edge_cases():
    assert nonfinite_rows(np.zeros((0, 4), np.float16)).shape == (0,)
    assert not nonfinite_rows(np.ones((5, 3), np.int64)).any()
    assert nonfinite_rows(np.array([[1.0, np.nan]], np.float32)).tolist() == [True]


def _block(face, emb, logits=None):
    n = len(face)
    idx = pd.DataFrame({"video": pd.Categorical(["a"] * (n - 2) + ["b"] * 2), "frame": np.r_[1:n - 1, 1:3],
                        "face": np.asarray(face, bool)})
    arrays = {"m/embedding": emb, **({"m/logits": logits} if logits is not None else {})}
    return FeatureBlock(idx, arrays)


class _Store:
    paths = ["c.h5"]


def test_check_block_ignores_frames_without_a_face_and_names_the_first_bad_frame():
    emb = np.ones((6, 3), np.float16)
    emb[1, 0] = np.nan                 # no face here: never read by a head
    check_block(_Store(), _block([1, 0, 1, 1, 1, 1], emb))
    logits = np.zeros((6, 2), np.float32)
    logits[[2, 5], 1] = np.inf
    with pytest.raises(InputError, match=r"^c.h5: extractor 'm', output 'logits': 2 frames with a face in 2 videos "
                                         r"hold NaN or infinite values \(first: video 'a', frame 3\)"):
        check_block(_Store(), _block([1, 0, 1, 1, 1, 1], emb, logits))


@pytest.fixture
def cache(tmp_path):
    info = ExtractorInfo("m", "0" * 64, 224, {}, {"embedding": 4, "va": 2})
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        w = s.writer(info)
        for v in ("a", "b"):
            va = np.zeros((10, 2), np.float32)
            emb = np.ones((10, 4), np.float32)
            if v == "b":
                va[4, 1] = np.inf      # frame 5 of b
                emb[7, 0] = np.nan     # frame 8 of b, without a face
            face = np.ones(10, bool)
            face[7] = False
            w.write_video(v, frame=np.arange(1, 11), face=face, embedding=emb, va=va)
    return tmp_path / "c.h5"


def test_read_for_heads_checks_only_what_is_read(cache):
    with FeatureStore(cache) as s:
        assert len(read_for_heads(s, ["a", "b"], "m", ("embedding",))) == 20      # NaN only where no face
        assert len(read_for_heads(s, ["a"], "m", ("va",))) == 10
        with pytest.raises(InputError, match=r"output 'va': 1 frame with a face in 1 video holds NaN or infinite "
                                             r"values \(first: video 'b', frame 5\)"):
            read_for_heads(s, ["a", "b"], "m", ("embedding", "va"))
        assert np.isinf(s.read(["b"], "m", ("va",)).arrays["m/va"]).any()        # the raw reader returns it


def test_join_refuses_nonfinite_features(cache):
    labels = pd.DataFrame({"video": ["b"] * 3, "frame": [1, 2, 3], "valence": [0.1] * 3, "arousal": [0.2] * 3})
    with FeatureStore(cache) as s:
        with pytest.raises(InputError, match=r"c.h5: extractor 'm', output 'va'.*video 'b', frame 5"):
            join(s, labels, VA, ["m/va"])
        assert join(s, labels, VA, ["m/embedding"]).X.shape == (3, 4)
