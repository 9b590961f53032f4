"""Centred box filter within each video: row i becomes the mean (or median) of rows max(i-k, start) ..
min(i+k, end-1) of its own video, the window shrinking at the video's edges (the reference's
preds[max(i-k, 0):i+k+1], applied per video) and never crossing into a neighbouring video.

The mean costs O(N) per k whatever k is: one float64 cumulative sum over all rows (float64 so that window sums
of a million rows do not drift), then interior rows are a difference of two shifted slices and only the rows
within k of a video edge (at most 2k per video) need gathered window bounds. `BoxSmoother` keeps the cumulative
sum so that a sweep over many k reuses it, and hands out cache-sized column-major chunks.
The median uses pandas' rolling median (centred, min_periods=1), which shrinks at the edges the same way.
"""
from __future__ import annotations

from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd

from features.errors import InputError

from .segments import Segments, as_2d, check_finite, concat_ranges, video_segments

Stat = Literal["mean", "median"]


def check_k(k, what: str = "k") -> int:
    """k as a non-negative int; InputError otherwise."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        if isinstance(k, (float, np.floating)) and float(k).is_integer():
            k = int(k)
        else:
            raise InputError(f"{what} must be a non-negative integer, got {k!r}")
    if k < 0:
        raise InputError(f"{what} must be a non-negative integer, got {k}")
    return int(k)


def _median(s: np.ndarray, seg: Segments, k: int) -> np.ndarray:
    out = np.empty(s.shape, np.float64)
    for a, b in zip(seg.starts, seg.ends):
        out[a:b] = pd.DataFrame(s[a:b]).rolling(2 * k + 1, center=True, min_periods=1).median().to_numpy()
    return out


class BoxSmoother:
    """Box filter of one score matrix for any number of window half-widths k."""

    def __init__(self, scores: np.ndarray, video: np.ndarray, stat: Stat = "mean", chunk: int = 16384):
        s, self.one_d = as_2d(scores, len(np.asarray(video)))
        check_finite(s, video)
        if stat not in ("mean", "median"):
            raise InputError(f"unknown smoothing statistic {stat!r}; choose mean or median")
        self.stat = stat
        self.seg = video_segments(video)
        self.n, self.c = s.shape
        self.dtype = np.result_type(s.dtype, np.float32)
        self.chunk = chunk
        self.raw = s
        self.cs = None
        if stat == "mean":
            # (C, N+1) column-major so that chunks of rows are contiguous per column.
            self.cs = np.zeros((self.c, self.n + 1), np.float64)
            np.cumsum(s.T, axis=1, dtype=np.float64, out=self.cs[:, 1:])

    def _edges(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows within k of their video's edge (sorted) and their windows' means, (C, E)."""
        st, en = self.seg.starts, self.seg.ends
        left = np.minimum(k, en - st)
        rstart = np.maximum(en - k, st + left)
        starts = np.stack([st, rstart], axis=1).ravel()
        lengths = np.stack([left, en - rstart], axis=1).ravel()
        rows = concat_ranges(starts, lengths)
        seg_of = np.repeat(np.arange(len(st)), lengths.reshape(-1, 2).sum(axis=1))
        lo = np.maximum(rows - k, st[seg_of])
        hi = np.minimum(rows + k + 1, en[seg_of])
        vals = (self.cs[:, hi] - self.cs[:, lo]) / (hi - lo)
        return rows, vals

    def chunks(self, k: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(a, b, smoothed rows a..b-1 as a (C, b-a) float64 array); the array is reused between chunks."""
        k = check_k(k)
        n, B = self.n, self.chunk
        if k == 0:  # exact: the raw scores, not a difference of cumulative sums
            for a in range(0, n, B):
                b = min(a + B, n)
                yield a, b, self.raw[a:b].T.astype(np.float64)
            return
        if self.stat == "median":
            full = _median(self.raw, self.seg, k)
            for a in range(0, n, B):
                b = min(a + B, n)
                yield a, b, full[a:b].T
            return
        rows, vals = self._edges(k)
        buf = np.empty((self.c, B), np.float64)
        w = 2 * k + 1
        cs = self.cs
        for a in range(0, n, B):
            b = min(a + B, n)
            o = buf[:, :b - a]
            ia, ib = max(a, k), min(b, n - k)  # rows whose full window lies inside [0, n)
            if ib > ia:
                oi = o[:, ia - a:ib - a]
                np.subtract(cs[:, ia + k + 1:ib + k + 1], cs[:, ia - k:ib - k], out=oi)
                oi *= 1.0 / w
            e0, e1 = np.searchsorted(rows, [a, b])
            if e1 > e0:
                o[:, rows[e0:e1] - a] = vals[:, e0:e1]
            yield a, b, o

    def smooth(self, k: int) -> np.ndarray:
        """The whole smoothed matrix (N, C) (or (N,) for 1-D input) in the input's float dtype."""
        out = np.empty((self.n, self.c), self.dtype)
        for a, b, o in self.chunks(k):
            out[a:b] = o.T
        return out[:, 0] if self.one_d else out


def box_filter(scores: np.ndarray, video: np.ndarray, k: int | Sequence[int], stat: Stat = "mean") -> np.ndarray:
    """Centred box filter per video (see the module docstring). k: one int, or one per column."""
    sm = BoxSmoother(scores, video, stat)
    if np.ndim(k) == 0:
        return sm.smooth(check_k(k))
    ks = [check_k(x) for x in np.asarray(k).ravel()]
    if len(ks) != sm.c:
        raise InputError(f"{len(ks)} values of k for {sm.c} score columns")
    out = np.empty((sm.n, sm.c), sm.dtype)
    for kk in sorted(set(ks)):
        cols = [j for j, x in enumerate(ks) if x == kk]
        out[:, cols] = sm.smooth(kk).reshape(sm.n, sm.c)[:, cols]
    return out[:, 0] if sm.one_d else out
