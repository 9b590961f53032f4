"""Per-video row segments: every postprocess step works on rows ordered by (video, frame), each video's rows
contiguous. These helpers turn a per-row video array into boundaries and check that layout once, clearly."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.errors import InputError


@dataclass(frozen=True)
class Segments:
    """Row ranges [starts[i], ends[i]) of video names[i], in row order."""
    names: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def __len__(self) -> int:
        return len(self.names)

    def row_ids(self) -> np.ndarray:
        """Segment index of every row (0 .. len-1)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)


def video_segments(video: np.ndarray, what: str = "video") -> Segments:
    """Boundaries of the runs of equal values in `video`; InputError if a video's rows are not contiguous."""
    v = np.asarray(video)
    if v.ndim != 1:
        raise InputError(f"{what}: expected one video id per row (1-D), got shape {v.shape}")
    n = len(v)
    if n == 0:
        return Segments(v[:0], np.zeros(0, np.int64), np.zeros(0, np.int64))
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]).astype(np.int64)
    ends = np.r_[starts[1:], n].astype(np.int64)
    names = v[starts]
    uniq, first, counts = np.unique(names, return_index=True, return_counts=True)
    if len(uniq) != len(names):
        bad = uniq[counts > 1][0]
        rows = starts[names == bad][:2]
        raise InputError(f"{what}: rows of video {str(bad)!r} are not contiguous (runs start at rows {rows[0]} and "
                         f"{rows[1]}); order rows by (video, frame)")
    return Segments(names, starts, ends)


def check_frames(frame: np.ndarray, seg: Segments, what: str = "frame") -> np.ndarray:
    """Frame numbers as int64, strictly increasing within each video (InputError naming the video otherwise)."""
    f = np.asarray(frame)
    if f.shape != (seg.n_rows,):
        raise InputError(f"{what}: {f.shape[0] if f.ndim else 0} frame numbers for {seg.n_rows} rows")
    if not np.issubdtype(f.dtype, np.integer):
        if not np.all(np.isfinite(f)) or np.any(f != np.round(f)):
            raise InputError(f"{what}: frame numbers must be integers")
    f = f.astype(np.int64)
    step = np.diff(f)
    bad = np.flatnonzero(step <= 0)
    if len(bad):
        inner = ~np.isin(bad + 1, seg.starts)
        if inner.any():
            row = int(bad[inner][0]) + 1
            vid = seg.names[np.searchsorted(seg.starts, row, side="right") - 1]
            raise InputError(f"{what}: frames of video {str(vid)!r} not strictly increasing at row {row} "
                             f"({f[row - 1]} then {f[row]})")
    return f


def as_2d(scores: np.ndarray, n: int | None = None, what: str = "scores") -> tuple[np.ndarray, bool]:
    """Scores as (n, C) and whether the input was 1-D; InputError on a length mismatch."""
    s = np.asarray(scores)
    one = s.ndim == 1
    if one:
        s = s[:, None]
    if s.ndim != 2:
        raise InputError(f"{what}: expected (n,) or (n, C) scores, got shape {s.shape}")
    if n is not None and len(s) != n:
        raise InputError(f"{what}: {len(s)} score rows but {n} video rows")
    return s, one


def check_finite(scores: np.ndarray, video: np.ndarray | None = None, what: str = "scores") -> None:
    """InputError naming the first non-finite row (and its video)."""
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(scores), -1).any(axis=1))[0])
        where = f" (video {str(np.asarray(video)[row])!r})" if video is not None else ""
        raise InputError(f"{what}: NaN or infinite value at row {row}{where}; fill gaps first")
