"""Centred box filter within each video: row i becomes the mean (or median) of rows max(i-k, start) ..
min(i+k, end-1) of its own video, the window shrinking at the video's edges (the reference's
preds[max(i-k, 0):i+k+1], applied per video) and never crossing into a neighbouring video.

The mean costs O(N) per k whatever k is, with no Python loop over frames or videos. Rows are laid out with P
zero rows before, between and after the videos (P >= every k asked for); one float64 cumulative sum of that
layout (float64 so that window sums over a million rows do not drift) and one cumulative count of real rows
then give every window as a difference of two shifted slices: sum = cs[p+k+1] - cs[p-k], count = the same
difference of the row count. The zero gaps make the window shrink at video edges by themselves, so no row needs
special handling. `BoxSmoother` keeps the cumulative sums so that a sweep over many k reuses them, and hands out
cache-sized column-major chunks of the padded layout (the metric statistics skip the gap rows).
The median uses pandas' rolling median (centred, min_periods=1), which shrinks at the edges the same way.
"""
from __future__ import annotations

from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd

from features.errors import InputError

from .segments import Segments, as_2d, check_finite, video_segments

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
    """Box filter of one score matrix for any number of window half-widths k (see the module docstring)."""

    def __init__(self, scores: np.ndarray, video: np.ndarray, stat: Stat = "mean", max_k: int | None = None,
                 chunk: int = 16384):
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
        # k >= the longest video is the same as k = its length: the window always covers the whole video
        self.max_len = int(self.seg.lengths.max()) if self.n else 0
        self._build(min(check_k(max_k) if max_k is not None else 200, self.max_len))

    def _build(self, P: int) -> None:
        """Lay rows out with P zero rows before, between and after the videos; cumulative sums of that."""
        s = self.raw
        self.pad = P
        self.pos = np.arange(self.n, dtype=np.int64) + P * (self.seg.row_ids() + 1)   # row -> padded row
        self.n_pad = self.n + P * (len(self.seg) + 1)
        self.real = np.zeros(self.n_pad, bool)
        self.real[self.pos] = True
        self.raw_pad = np.zeros((self.c, self.n_pad), s.dtype)
        self.raw_pad[:, self.pos] = s.T
        self.cs = self.count = None
        if self.stat == "mean":
            self.cs = np.zeros((self.c, self.n_pad + 1), np.float64)
            np.cumsum(self.raw_pad, axis=1, dtype=np.float64, out=self.cs[:, 1:])
            self.count = np.r_[0, np.cumsum(self.real, dtype=np.int64)]

    def to_layout(self, arr: np.ndarray, fill) -> np.ndarray:
        """A per-row array in the padded row layout of `chunks`, gap rows set to `fill`."""
        arr = np.asarray(arr)
        dtype = np.result_type(arr.dtype, np.min_scalar_type(fill))
        out = np.full((self.n_pad,) + arr.shape[1:], fill, dtype=dtype)
        out[self.pos] = arr
        return out

    def _k(self, k: int) -> int:
        k = min(check_k(k), self.max_len)
        if k > self.pad:   # wider gaps needed; the padded layout (and `to_layout` arrays) change
            self._build(k)
        return k

    def chunks(self, k: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(a, b, smoothed padded rows a..b-1 as a (C, b-a) float64 array; gap rows hold junk). The array may
        be reused between chunks."""
        k = self._k(k)
        n, B = self.n_pad, self.chunk
        if k == 0:  # exact: the raw scores, not a difference of cumulative sums
            for a in range(0, n, B):
                b = min(a + B, n)
                yield a, b, self.raw_pad[:, a:b].astype(np.float64)
            return
        if self.stat == "median":
            full = np.zeros((self.c, n))
            full[:, self.pos] = _median(self.raw, self.seg, k).T
            for a in range(0, n, B):
                b = min(a + B, n)
                yield a, b, full[:, a:b]
            return
        buf = np.empty((self.c, B), np.float64)
        for a in range(0, n, B):
            b = min(a + B, n)
            yield a, b, self._window(a, b, k, buf)

    def _inner(self, a: int, b: int, k: int) -> tuple[int, int]:
        """Rows ia..ib-1 of a..b-1 whose window of half-width k >= 1 lies inside the cumulative sums; the rows
        before and after are outer gap rows (their values are junk anyway)."""
        lo, hi = max(a - k, 0), min(b + k + 1, self.n_pad + 1)
        ia = min(lo + k, b)
        return ia, max(hi - k - 1, ia)

    def _window(self, a: int, b: int, k: int, buf: np.ndarray) -> np.ndarray:
        """Mean over the window of half-width k >= 1 of padded rows a..b-1, written into buf."""
        cs, cnt = self.cs, self.count
        o = buf[:, :b - a]
        ia, ib = self._inner(a, b, k)
        o[:, :ia - a] = 0.0
        o[:, ib - a:] = 0.0
        oi = o[:, ia - a:ib - a]
        np.subtract(cs[:, ia + k + 1:ib + k + 1], cs[:, ia - k:ib - k], out=oi)
        w = cnt[ia + k + 1:ib + k + 1] - cnt[ia - k:ib - k]
        oi *= 1.0 / np.maximum(w, 1)
        return o

    def sweep(self, ks: Sequence[int]) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(index into ks, a, b, smoothed padded rows a..b-1) for every k and chunk, in the order that is
        fastest: for the mean, all k of one chunk before the next chunk, so the chunk's stretch of cumulative
        sums is read from memory once and then reused from cache by every k (k by k, each k would stream the
        whole float64 cumulative sum from memory again, which bounds the speed)."""
        ks = [self._k(k) for k in ks]           # may widen the gaps first
        if self.stat == "median":
            for i, k in enumerate(ks):
                for a, b, o in self.chunks(k):
                    yield i, a, b, o
            return
        n, B = self.n_pad, self.chunk
        buf = np.empty((self.c, B), np.float64)
        for a in range(0, n, B):
            b = min(a + B, n)
            for i, k in enumerate(ks):
                if k == 0:
                    buf[:, :b - a] = self.raw_pad[:, a:b]
                    yield i, a, b, buf[:, :b - a]
                else:
                    yield i, a, b, self._window(a, b, k, buf)

    def above(self, ks: Sequence[int], thresholds: np.ndarray) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(index into ks, a, b, boolean (C, b-a): smoothed padded rows a..b-1 >= their column's threshold),
        chunk by chunk with every k, as `sweep`; gap rows hold junk.

        For the mean this never forms the mean: with E = cumsum(s - t * real_row), a window's sum minus t times
        its row count is E[p+k+1] - E[p-k], so "mean >= t" is the single comparison E[p+k+1] >= E[p-k] of two
        shifted slices (no subtraction, division or count; about 4x faster per k than forming the mean)."""
        thr = np.broadcast_to(np.asarray(thresholds, np.float64).reshape(-1, 1), (self.c, 1))
        ks = [self._k(k) for k in ks]           # may widen the gaps first
        if self.stat != "mean":
            for i, a, b, o in self.sweep(ks):
                yield i, a, b, o >= thr
            return
        n, B = self.n_pad, self.chunk
        key = thr.tobytes()
        if getattr(self, "_excess_key", None) != key:
            self._excess = np.zeros((self.c, n + 1), np.float64)
            np.cumsum(self.raw_pad - thr * self.real, axis=1, dtype=np.float64, out=self._excess[:, 1:])
            self._excess_key = key
        E = self._excess
        buf = np.empty((self.c, B), bool)
        for a in range(0, n, B):
            b = min(a + B, n)
            for i, k in enumerate(ks):
                o = buf[:, :b - a]
                if k == 0:   # exact: the raw scores
                    np.greater_equal(self.raw_pad[:, a:b], thr, out=o)
                else:
                    ia, ib = self._inner(a, b, k)
                    o[:, :ia - a] = False
                    o[:, ib - a:] = False
                    np.greater_equal(E[:, ia + k + 1:ib + k + 1], E[:, ia - k:ib - k], out=o[:, ia - a:ib - a])
                yield i, a, b, o

    def smooth(self, k: int) -> np.ndarray:
        """The whole smoothed matrix (N, C) (or (N,) for 1-D input) in the input's float dtype."""
        k = self._k(k)          # may widen the gaps first
        out = np.empty((self.c, self.n_pad), self.dtype)
        for a, b, o in self.chunks(k):
            out[:, a:b] = o
        res = out[:, self.pos].T
        return res[:, 0] if self.one_d else np.ascontiguousarray(res)


def box_filter(scores: np.ndarray, video: np.ndarray, k: int | Sequence[int], stat: Stat = "mean") -> np.ndarray:
    """Centred box filter per video (see the module docstring). k: one int, or one per column."""
    kmax = check_k(k) if np.ndim(k) == 0 else max([check_k(x) for x in np.asarray(k).ravel()], default=0)
    sm = BoxSmoother(scores, video, stat, max_k=kmax)
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
