"""Scores for frames without a face: linear interpolation by frame number between the nearest frames with a
face in the same video (the nearer one weighs more), edge values repeated before the first / after the last
face, and a default for a video with no face at all.

The reference notebook had the two weights swapped (the nearer neighbour got the smaller weight); here the
weight of the next face frame is (f - f_prev) / (f_next - f_prev), so it grows as f approaches f_next.
Everything is vectorised over all videos at once (running max / min of face row indices, reset per video).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.errors import InputError

from .segments import as_2d, check_finite, check_frames, video_segments


def _default_row(values: np.ndarray, known: np.ndarray, default, n_cols: int) -> np.ndarray:
    if default is None:
        if not known.any():
            raise InputError("no frame has a face, so there is nothing to fill from; pass default=")
        return values[known].mean(axis=0)
    d = np.broadcast_to(np.asarray(default, np.float64), (n_cols,))
    if not np.all(np.isfinite(d)):
        raise InputError("gap-filling default must be finite")
    return d


def _interpolate(seg_of_row: np.ndarray, seg_start: np.ndarray, seg_end: np.ndarray, frame: np.ndarray,
                 known: np.ndarray, values: np.ndarray, default) -> np.ndarray:
    """Rows ordered by (segment, frame); rows not `known` get interpolated values. Frames may repeat (a known
    row and a query row of the same frame: the query takes the known value)."""
    n, c = values.shape
    out = values.astype(np.float64, copy=True)
    miss = ~known
    if not miss.any():
        return out
    idx = np.arange(n)
    start, end = seg_start[seg_of_row], seg_end[seg_of_row]
    prev = np.maximum.accumulate(np.where(known, idx, -1))
    nxt = np.minimum.accumulate(np.where(known, idx, n)[::-1])[::-1]
    has_prev = prev >= start
    has_next = nxt < end
    rows = np.flatnonzero(miss)
    p, q = prev[rows], nxt[rows]
    hp, hn = has_prev[rows], has_next[rows]
    both = hp & hn
    r = rows[both]
    fp, fq, f = frame[p[both]], frame[q[both]], frame[r]
    span = (fq - fp).astype(np.float64)
    w_next = np.divide(f - fp, span, out=np.zeros(len(r)), where=span > 0)
    out[r] = (1.0 - w_next)[:, None] * out[p[both]] + w_next[:, None] * out[q[both]]
    only_p = hp & ~hn
    out[rows[only_p]] = out[p[only_p]]
    only_n = hn & ~hp
    out[rows[only_n]] = out[q[only_n]]
    none = ~hp & ~hn
    if none.any():
        out[rows[none]] = _default_row(values, known, default, c)
    return out


def fill_gaps(scores: np.ndarray, face: np.ndarray, video: np.ndarray, frame: np.ndarray | None = None,
              default: np.ndarray | float | None = None) -> np.ndarray:
    """Replace the scores of rows where `face` is False (their values are ignored, NaN is fine).

    frame: frame numbers (default: row position within the video). default: scores for a video with no face
    (default: the mean scores of all face rows). Returns float64 with the input's shape.
    """
    s, one = as_2d(scores, len(np.asarray(video)))
    seg = video_segments(video)
    face = np.asarray(face, dtype=bool)
    if face.shape != (len(s),):
        raise InputError(f"face: {face.shape[0] if face.ndim else 0} flags for {len(s)} score rows")
    check_finite(s[face], np.asarray(video)[face], "scores of face rows")
    row_seg = seg.row_ids()
    f = (np.arange(len(s)) - seg.starts[row_seg]) if frame is None else check_frames(frame, seg)
    out = _interpolate(row_seg, seg.starts, seg.ends, f, face, s, default)
    return out[:, 0] if one else out


def extend_to_samples(video: np.ndarray, frame: np.ndarray, scores: np.ndarray,
                      sample_video: np.ndarray, sample_frame: np.ndarray, face: np.ndarray | None = None,
                      default: np.ndarray | float | None = None) -> np.ndarray:
    """Scores for every (sample_video, sample_frame), in the sample order.

    A frame present in the scores (with a face, when `face` is given) takes its score; any other frame is filled
    from the nearest scored frames of its video exactly as `fill_gaps` does. A sampled video with no scored rows
    at all is an error; one whose rows all lack a face gets `default`.
    """
    vid = np.asarray(video)
    s, one = as_2d(scores, len(vid))
    seg = video_segments(vid)
    f = check_frames(frame, seg)
    known = np.ones(len(s), bool) if face is None else np.asarray(face, bool)
    if known.shape != (len(s),):
        raise InputError(f"face: {known.shape[0] if known.ndim else 0} flags for {len(s)} score rows")
    check_finite(s[known], vid[known], "scores")
    sv = np.asarray(sample_video)
    sf = np.asarray(sample_frame, dtype=np.int64)
    if sv.shape != sf.shape or sv.ndim != 1:
        raise InputError("sample videos and frames must be 1-D arrays of the same length")
    names = pd.Index(seg.names.astype(str))
    sid = names.get_indexer(sv.astype(str))
    if (sid < 0).any():
        bad = sv[np.flatnonzero(sid < 0)[0]]
        raise InputError(f"sample list names video {str(bad)!r} with no scores ({int((sid < 0).sum())} sample rows "
                         f"in {len(set(sv[sid < 0].tolist()))} such videos)")
    row_seg = seg.row_ids()
    kept = np.flatnonzero(known)
    # Known rows first at equal (video, frame), so a sampled frame that has a score takes it unchanged.
    all_seg = np.r_[row_seg[kept], sid]
    all_frame = np.r_[f[kept], sf]
    is_query = np.r_[np.zeros(len(kept), bool), np.ones(len(sf), bool)]
    order = np.lexsort((is_query, all_frame, all_seg))
    seg_sorted = all_seg[order]
    n_all = len(order)
    bounds = np.searchsorted(seg_sorted, np.arange(len(seg) + 1))
    vals = np.zeros((n_all, s.shape[1]))
    vals[~is_query[order]] = s[kept[order[~is_query[order]]]]
    default_row = _default_row(s, known, default, s.shape[1])
    filled = _interpolate(seg_sorted, bounds[:-1], bounds[1:], all_frame[order], ~is_query[order], vals,
                          default_row)
    out = np.empty((len(sf), s.shape[1]))
    q = is_query[order]
    out[order[q] - len(kept)] = filled[q]
    return out[:, 0] if one else out
