"""A feature-level synthetic set whose label depends on motion, not on the frame: one action unit's intensity
rises (onset) and falls (offset) symmetrically, and the EXPR label is 1 while it rises, 2 while it falls, 0
otherwise. A frame of a rising and a frame of a falling episode at the same intensity have the same feature
distribution, so no per-frame head can tell onset from offset; a head that sees neighbouring frames can.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ONSET, OFFSET = 1, 2


@dataclass
class MotionData:
    X: np.ndarray          # (n, d) float32
    y: np.ndarray          # (n,) int64: 0 rest / hold, 1 onset, 2 offset
    video: np.ndarray      # (n,) int32
    frame: np.ndarray      # (n,) int32, 1-based; rows of a video contiguous, in frame order


def make_motion_data(n_videos: int = 24, length: int = 300, n_features: int = 8, seed: int = 0,
                     noise: float = 0.3, ramp: tuple[int, int] = (8, 20), drop: float = 0.0) -> MotionData:
    """Episodes: rest, rise over r frames, hold, fall over r frames (r drawn per episode). `drop` removes that
    fraction of frames at random (frames without a face)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=n_features)
    direction /= np.linalg.norm(direction)
    Xs, ys, vs, fs = [], [], [], []
    for v in range(n_videos):
        a = np.zeros(length)
        lab = np.zeros(length, np.int64)
        t = int(rng.integers(0, 20))
        while t < length:
            r = int(rng.integers(*ramp))
            hold = int(rng.integers(0, 10))
            up = np.linspace(0, 1, r, endpoint=False)[1:]
            seg = np.concatenate([up, np.ones(hold), up[::-1]])
            seg_lab = np.concatenate([np.full(len(up), ONSET), np.zeros(hold, np.int64), np.full(len(up), OFFSET)])
            e = min(length, t + len(seg))
            a[t:e], lab[t:e] = seg[:e - t], seg_lab[:e - t]
            t = e + int(rng.integers(5, 30))
        offset = rng.normal(0, 0.2, n_features)                      # per-video identity
        X = a[:, None] * 2.0 * direction + offset + rng.normal(0, noise, (length, n_features))
        keep = rng.random(length) >= drop
        Xs.append(X[keep])
        ys.append(lab[keep])
        vs.append(np.full(keep.sum(), v, np.int32))
        fs.append(np.arange(1, length + 1, dtype=np.int32)[keep])
    return MotionData(np.concatenate(Xs).astype(np.float32), np.concatenate(ys), np.concatenate(vs),
                      np.concatenate(fs))
