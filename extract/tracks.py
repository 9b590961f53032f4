"""Every person in a video: faces linked across frames into tracks (``--faces all`` on video files).

Online, one frame at a time (:class:`Tracker`): the faces of a frame are matched to the live tracks by a linear
assignment (``scipy.optimize.linear_sum_assignment``) on the cost ``(1 - IoU) + centre distance / face side``
between a track's last box and the new box; a pair is allowed only when the centre moved at most
``track_move`` face sides. A face left unmatched starts a new track (several in one frame: left to right). A
track stays live while it has been missed at most ``track_gap`` frames in a row, so a person who leaves the
view (or is not detected) for a while and comes back near where they were keeps their track. At the end of the
video, tracks found in fewer than ``track_min`` frames (spurious detections) are dropped and the rest are
numbered 1, 2, ... by first appearance: person k becomes the item ``<video>_p<k>``, one row per frame of the
video, ``face=False`` where that person was not found (extract.committer).

Tracking needs no second pass over the video: the models run on each face as it is found, and only the
numbering waits for the end (:meth:`Tracker.persons`).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

from .faces import BoxSmoother, DetectorConfig, FaceCrop, crops_of, make_detector

_FORBIDDEN = 1e6        # cost of a pair the gate forbids (finite: linear_sum_assignment needs a feasible matrix)


def pair_cost(a: np.ndarray, b: np.ndarray, max_move: float) -> np.ndarray:
    """(len(a), len(b)) costs between boxes (x, y, w, h): (1 - IoU) + centre distance / mean face side;
    ``inf`` where the centre moved more than `max_move` face sides."""
    a, b = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    ix = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    side = (np.sqrt(a[..., 2] * a[..., 3]) + np.sqrt(b[..., 2] * b[..., 3])) / 2
    move = np.hypot(a[..., 0] + a[..., 2] / 2 - b[..., 0] - b[..., 2] / 2,
                    a[..., 1] + a[..., 3] / 2 - b[..., 1] - b[..., 3] / 2) / np.maximum(side, 1e-6)
    return np.where(move <= max_move, (1 - iou) + move, np.inf)


class Tracker:
    """Links the faces of consecutive frames into tracks (see the module docstring)."""

    def __init__(self, gap: int = 30, min_frames: int = 10, max_move: float = 1.0):
        self.gap, self.min_frames, self.max_move = int(gap), int(min_frames), float(max_move)
        self.last_box = np.zeros((0, 4))
        self.last_frame = np.zeros(0, np.int64)
        self.hits = np.zeros(0, np.int64)

    def update(self, frame: int, boxes: np.ndarray) -> np.ndarray:
        """Track ids (0-based, in order of creation) of the (k, 4) `boxes` found in `frame` (1-based, increasing)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        live = np.flatnonzero(frame - self.last_frame <= self.gap + 1)
        if len(live) and len(boxes):
            cost = pair_cost(self.last_box[live], boxes, self.max_move)
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, _FORBIDDEN))
            ok = np.isfinite(cost[rows, cols])
            ids[cols[ok]] = live[rows[ok]]
        new = np.flatnonzero(ids < 0)
        new = new[np.argsort(boxes[new, 0] + boxes[new, 2] / 2, kind="stable")]     # left to right
        ids[new] = len(self.hits) + np.arange(len(new))
        self.last_box = np.vstack([self.last_box, np.zeros((len(new), 4))])
        self.last_frame = np.r_[self.last_frame, np.zeros(len(new), np.int64)]
        self.hits = np.r_[self.hits, np.zeros(len(new), np.int64)]
        self.last_box[ids] = boxes
        self.last_frame[ids] = frame
        self.hits[ids] += 1
        return ids

    def persons(self) -> np.ndarray:
        """Per track id, its person number (1, 2, ... by first appearance), 0 for a track dropped as too short."""
        kept = self.hits >= self.min_frames
        return np.where(kept, np.cumsum(kept), 0).astype(np.int64)


def tracker_for(cfg: DetectorConfig) -> Tracker:
    return Tracker(cfg.track_gap, cfg.track_min, cfg.track_move)


def tracked_crops(frames: Iterable[np.ndarray | None], sizes: list[int], cfg: DetectorConfig,
                  tracker: Tracker) -> Iterator[list[tuple[int, FaceCrop]]]:
    """Per frame: (track id, face) for every face found, linked by `tracker`; a None frame (unreadable) gives
    []. Each track's crop box is smoothed on its own when ``cfg.smooth`` > 0."""
    det = make_detector(cfg)
    smooth: dict[int, tuple[BoxSmoother, int]] = {}
    for f, rgb in enumerate(frames, 1):
        if rgb is None:
            yield []
            continue
        found = det.detect_faces(rgb)
        out = []
        for t, rec in zip(tracker.update(f, found[:, :4]), found):
            sm, last = smooth.get(int(t), (BoxSmoother(cfg.smooth, cfg.max_gap), f - 1))
            for _ in range(min(f - last - 1, cfg.max_gap + 1)):
                sm(None)                # the frames this person was missed: smoothing restarts after max_gap
            smooth[int(t)] = (sm, f)
            out.append((int(t), FaceCrop(crops_of(rgb, sm(rec[:4].astype(np.float64)), sizes, cfg.margin), rec)))
        yield out
