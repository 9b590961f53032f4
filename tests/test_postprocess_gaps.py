"""Gap filling by hand-computed cases (the nearer face frame weighs more, edges repeat) and sample extension."""
import numpy as np
import pytest

from features.errors import InputError
from postprocess.gaps import extend_to_samples, fill_gaps


def test_nearer_frame_weighs_more():
    # faces at frames 1 (score 0) and 11 (score 10); frame 2 is 1 away from frame 1 and 9 from frame 11
    out = fill_gaps(np.array([0.0, np.nan, 10.0]), np.array([1, 0, 1], bool), np.array(["a"] * 3),
                    frame=np.array([1, 2, 11]))
    assert out[1] == pytest.approx(0.9 * 0.0 + 0.1 * 10.0)   # the reversed reference weights would give 9


def test_hand_computed_two_columns_edges_and_videos():
    s = np.array([[np.nan, np.nan], [2.0, 20.0], [np.nan, np.nan], [np.nan, np.nan], [8.0, 80.0],
                  [np.nan, np.nan],
                  [5.0, 50.0], [np.nan, np.nan]])
    face = ~np.isnan(s[:, 0])
    video = np.array(["a"] * 6 + ["b"] * 2)
    out = fill_gaps(s, face, video)                 # frame = position in the video
    np.testing.assert_allclose(out[:6, 0], [2, 2, 4, 6, 8, 8])   # edges repeat, linear in between
    np.testing.assert_allclose(out[:6, 1], [20, 20, 40, 60, 80, 80])
    np.testing.assert_allclose(out[6:], [[5, 50], [5, 50]])     # video b only from its own face frame
    np.testing.assert_array_equal(out[face], s[face])


def test_video_without_face_gets_default():
    s = np.array([[1.0], [3.0], [np.nan], [np.nan]])
    face = np.array([1, 1, 0, 0], bool)
    video = np.array(["a", "a", "b", "b"])
    np.testing.assert_allclose(fill_gaps(s, face, video)[2:, 0], [2.0, 2.0])      # mean of face rows
    np.testing.assert_allclose(fill_gaps(s, face, video, default=0.5)[2:, 0], [0.5, 0.5])
    with pytest.raises(InputError, match="no frame has a face"):
        fill_gaps(s, np.zeros(4, bool), video)


def test_vectorised_equals_np_interp_per_video():
    rng = np.random.default_rng(0)
    lengths = [1, 5, 30, 200, 2]
    video = np.repeat([f"v{i}" for i in range(5)], lengths)
    frame = np.concatenate([np.sort(rng.choice(np.arange(1, 3 * n + 2), n, replace=False)) for n in lengths])
    s = rng.random((len(video), 3))
    face = rng.random(len(video)) < 0.6
    face[0] = True
    out = fill_gaps(np.where(face[:, None], s, np.nan), face, video, frame)
    for v in np.unique(video):
        rows = video == v
        f, m = frame[rows], face[rows]
        for j in range(3):
            ref = np.interp(f, f[m], s[rows][m, j]) if m.any() else s[face].mean(0)[j]
            np.testing.assert_allclose(out[rows, j], ref)


def test_nan_on_face_rows_and_bad_frames():
    with pytest.raises(InputError, match="NaN.*row 1"):
        fill_gaps(np.array([0.0, np.nan]), np.array([1, 1], bool), np.array(["a", "a"]))
    with pytest.raises(InputError, match="not strictly increasing"):
        fill_gaps(np.array([0.0, 1.0]), np.array([1, 1], bool), np.array(["a", "a"]), frame=np.array([3, 2]))


def test_extend_to_samples():
    video = np.array(["a", "a", "a", "b"])
    frame = np.array([1, 5, 11, 7])
    s = np.array([0.0, 4.0, 10.0, 3.0])
    face = np.array([1, 0, 1, 1], bool)             # frame 5 of a has no face: its score is ignored
    sv = np.array(["b", "a", "a", "a", "a", "b"])
    sf = np.array([1, 1, 2, 5, 20, 9])
    out = extend_to_samples(video, frame, s, sv, sf, face)
    np.testing.assert_allclose(out, [3.0, 0.0, 1.0, 4.0, 10.0, 3.0])
    out2 = extend_to_samples(video, frame, s, sv, sf)   # without face flags every scored row counts
    assert out2[3] == 4.0


def test_sample_naming_unscored_video():
    with pytest.raises(InputError, match="video 'zzz' with no scores"):
        extend_to_samples(np.array(["a"]), np.array([1]), np.array([0.5]), np.array(["a", "zzz"]),
                          np.array([1, 1]))
