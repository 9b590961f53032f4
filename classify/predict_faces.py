"""`classify predict`'s face columns, head pose and the frames too far from any face to be given a value.

Face columns (in the table when the cache records faces, i.e. a face detector ran at extraction; float32, NaN
where the item has no face in that frame): ``face_x``, ``face_y``, ``face_width``, ``face_height`` (the
detector's box in the original frame's pixels), ``face_score`` (MTCNN: its face probability; Haar: the number
of raw detections merged into the box, not a probability), and the five landmarks ``eye_left_x``,
``eye_left_y``, ``eye_right_x``, ``eye_right_y``, ``nose_x``, ``nose_y``, ``mouth_left_x``, ``mouth_left_y``,
``mouth_right_x``, ``mouth_right_y`` ("left" is the image's left; NaN with the Haar detector, which gives none).

Head pose (approximate): ``yaw``, ``pitch``, ``roll`` in degrees, from the five landmarks fitted to a generic
3-D face (:data:`MODEL_3D`, millimetres) with ``cv2.solvePnP`` (SQPnP). The cache does not record the frame
size, so the camera is centred on the face (focal length 4 face sides): the angles are relative to the line
from the camera to the face, and one generic face stands for everyone, so expect errors of several degrees,
most in pitch. Signs (camera axes: x right, y down, z away from the camera): yaw > 0 the face turns towards
the image's left, pitch > 0 it tilts down, roll > 0 it leans clockwise on screen. NaN without landmarks.

Frames far from a face (``--max-gap``): frames without a face take their values from the nearest face frames
of their item (postprocess.gaps); a frame farther than --max-gap seconds from every face frame of its item
(counted in frames where the frame rate is unknown) is left empty instead, and ``far_from_face`` says so.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from features.store import FeatureStore
from postprocess.scores import ScoreSet
from postprocess.segments import video_segments

BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height", "face_score")
LANDMARK_COLUMNS = tuple(f"{p}_{c}" for p in ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
                         for c in ("x", "y"))
POSE_COLUMNS = ("yaw", "pitch", "roll")
FACE_COLUMNS = BOX_COLUMNS + LANDMARK_COLUMNS + POSE_COLUMNS
#: a generic face (mm; x right, y down, z away from the camera; nose tip at the origin), in the landmarks' order
MODEL_3D = np.array([[-31, -38, 30], [31, -38, 30], [0, 0, 0], [-25, 30, 22], [25, 30, 22]], np.float64)
FOCAL_SIDES = 4.0           # focal length in face sides: a face about 60 cm from a typical webcam
DEFAULT_MAX_GAP = 1.0       # seconds
FALLBACK_GAP_FRAMES = 24    # the default in frames where the frame rate is unknown (1 s at 24 frames/s)
MAX_GAP = 1e6               # --max-gap's bound (seconds or frames): any larger gap is filled anyway


def face_columns(store: FeatureStore, extractors: Sequence[str], sc: ScoreSet) -> dict[str, np.ndarray] | None:
    """The face columns for the rows of `sc` (frames 1..last of each video), from the first of `extractors`
    that holds recorded faces; None when none does."""
    ext = next((e for e in extractors if store.has_faces(e)), None)
    if ext is None:
        return None
    seg = video_segments(sc.video)
    names = [str(v) for v in seg.names]
    blk = store.read(names, ext, ("face_box", "face_score", "face_landmarks"), dtype=np.float32)
    rec = np.full((len(sc), 15), np.nan, np.float32)
    start = dict(zip(names, seg.starts))
    last = dict(zip(names, seg.lengths))
    v = blk.index["video"].astype(str).to_numpy()
    f = blk.index["frame"].to_numpy(np.int64)
    ok = f <= pd.Series(last).reindex(v).to_numpy()             # rows past the scored timeline: none here
    row = pd.Series(start).reindex(v).to_numpy(np.int64) + f - 1
    a = blk.arrays
    rec[row[ok]] = np.c_[a[f"{ext}/face_box"], a[f"{ext}/face_score"], a[f"{ext}/face_landmarks"]][ok]
    cols = {c: rec[:, j] for j, c in enumerate(BOX_COLUMNS + LANDMARK_COLUMNS)}
    pose = head_pose(rec[:, 5:], rec[:, :4])
    cols.update({c: pose[:, j] for j, c in enumerate(POSE_COLUMNS)})
    return cols


def head_pose(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 3) yaw, pitch, roll in degrees (float32) from (n, 10) landmarks and (n, 4) boxes x, y, w, h; NaN
    where a row lacks either (see the module docstring for the model and its limits)."""
    import cv2
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 10)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.full((len(landmarks), 3), np.nan, np.float32)
    ok = np.flatnonzero(np.isfinite(landmarks).all(1) & np.isfinite(boxes).all(1) & (boxes[:, 2:] > 0).all(1))
    for i in ok:
        x, y, w, h = boxes[i]
        f = FOCAL_SIDES * max(w, h)
        cam = np.array([[f, 0, x + w / 2], [0, f, y + h / 2], [0, 0, 1]])
        found, rvec, _ = cv2.solvePnP(MODEL_3D, landmarks[i].reshape(5, 2), cam, None, flags=cv2.SOLVEPNP_SQPNP)
        if found:
            pitch, yaw, roll = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]
            out[i] = yaw, pitch, roll
    return out


def gap_limits(max_gap: float | None, rates: dict[str, float], names: Sequence[str]) -> np.ndarray:
    """Per video, the largest distance in frames from a face frame at which a frame still gets a value:
    `max_gap` seconds at the video's frame rate, or `max_gap` frames where the rate is unknown (default
    :data:`DEFAULT_MAX_GAP` s, :data:`FALLBACK_GAP_FRAMES` frames)."""
    out = np.empty(len(names))
    for i, v in enumerate(names):
        r = rates.get(str(v))
        if r:
            out[i] = (DEFAULT_MAX_GAP if max_gap is None else max_gap) * r
        else:
            out[i] = FALLBACK_GAP_FRAMES if max_gap is None else max_gap
    return out


def far_from_face(face: np.ndarray, video: np.ndarray, frame: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Rows (ordered by video, then frame) farther than their video's limit (frames, `gap_limits`) from every
    face row of their video; all rows of a video without a face."""
    seg = video_segments(video)
    face = np.asarray(face, bool)
    frame = np.asarray(frame, np.int64)
    n = len(face)
    if n == 0:
        return np.zeros(0, bool)
    idx = np.arange(n)
    ids = seg.row_ids()
    start, end = seg.starts[ids], seg.ends[ids]
    prev = np.maximum.accumulate(np.where(face, idx, -1))
    nxt = np.minimum.accumulate(np.where(face, idx, n)[::-1])[::-1]
    d_prev = np.where(prev >= start, frame - frame[np.clip(prev, 0, n - 1)], np.inf)
    d_next = np.where(nxt < end, frame[np.clip(nxt, 0, n - 1)] - frame, np.inf)
    return np.minimum(d_prev, d_next) > limits[ids]
