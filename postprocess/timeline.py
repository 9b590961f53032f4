"""Every split on the full frame timeline of each video, and the one path from stored scores to decisions.

The box filter's k counts frames, so the rows it runs over must be frames: every frame 1..last of each video,
whether it had a face, a crop, a label or none of these. A split holding only some frames (say the labelled
frames with a face: 3, 7, 13) would make frames 3 and 7 neighbours, so a k chosen there would mean a different
window on the test split, which holds every frame. `full_timeline` lays rows out on that timeline;
`scores.save_scores` writes every split that way and `scores.load_scores` expands older sparse files.

The frames a split covers: validation runs to each video's last frame with a crop or a label; for a submission
`submit` extends the test timeline to the last frame the organisers' sample list names (`extend_timeline`), so
frames listed beyond the last crop are filled and smoothed exactly like labelled frames beyond the last crop on
validation.

The path itself, the same for validation and test, for `classify`, `postprocess sweep` and `submit`:
`filled_scores` (frames without a face or crop take their neighbours' scores, `gaps.fill_gaps`) ->
`smoothed_scores` (box filter over the timeline) -> the task's decision, with the metric computed afterwards on
the labelled frames only (rows whose label is the task's invalid marker are smoothed but not scored).
`decided` is that path for scores without labels (`classify predict`), where a video with no face at all is left
empty rather than filled with other videos' scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.errors import InputError
from features.tasks import get_task

from .gaps import fill_gaps
from .segments import check_frames, video_segments
from .smoothing import Stat, box_filter

#: How many frames past the larger of a video's last known frame (last crop, cached row or label) and the number
#: of sample rows naming it a sample list may go (`beyond_timeline`): 100 s at 30 fps, for faces lost before the
#: video ends.
FRAME_MARGIN = 3000

if TYPE_CHECKING:
    from .scores import ScoreSet

# Refuse to expand a video to more than this many frames beyond 100x its rows: a frame number that far out is
# a corrupt value, not a long video (Aff-Wild2's longest video has ~50 k frames).
_SLACK = 1_000_000


def full_timeline(video: np.ndarray, frame: np.ndarray, what: str = "scores"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video, frame, pos): frames 1..last of every video, videos in their row order, and pos[i] = the timeline
    row of input row i. Rows must be ordered by (video, frame), frames 1-based and strictly increasing."""
    seg = video_segments(np.asarray(video), what=what)
    f = check_frames(frame, seg, f"{what}: frame")
    if len(f) and f.min() < 1:
        row = int(np.flatnonzero(f < 1)[0])
        raise InputError(f"{what}: frame numbers are 1-based, got {f[row]} at row {row} "
                         f"(video {str(np.asarray(video)[row])!r})")
    last = f[seg.ends - 1] if len(seg) else np.zeros(0, np.int64)
    too_long = last > 100 * seg.lengths + _SLACK
    if too_long.any():
        i = int(np.flatnonzero(too_long)[0])
        raise InputError(f"{what}: video {str(seg.names[i])!r} has {seg.lengths[i]} rows but frame numbers up to "
                         f"{last[i]}; a frame number is corrupt")
    start = np.r_[0, np.cumsum(last)[:-1]].astype(np.int64)
    total = int(last.sum())
    tl_video = np.repeat(seg.names, last)
    tl_frame = np.arange(total, dtype=np.int64) - np.repeat(start, last) + 1
    pos = start[seg.row_ids()] + f - 1
    return tl_video, tl_frame, pos


def is_full_timeline(video: np.ndarray, frame: np.ndarray) -> bool:
    """Whether rows are exactly frames 1..last of each video (given strictly increasing frames per video)."""
    seg = video_segments(np.asarray(video))
    f = np.asarray(frame)
    return bool(len(seg) == 0 or ((f[seg.starts] == 1).all() and (f[seg.ends - 1] == seg.lengths).all()))


def spread(pos: np.ndarray, n: int, values: np.ndarray | None, fill) -> np.ndarray | None:
    """values placed at rows `pos` of an n-row array whose other rows hold `fill` (None stays None)."""
    if values is None:
        return None
    v = np.asarray(values)
    dtype = np.result_type(v.dtype, np.min_scalar_type(fill)) if np.issubdtype(v.dtype, np.number) else v.dtype
    out = np.full((n,) + v.shape[1:], fill, dtype=dtype)
    out[pos] = v
    return out


def beyond_timeline(ss: "ScoreSet", video: np.ndarray, frame: np.ndarray, margin: int = FRAME_MARGIN) -> np.ndarray:
    """Positions of the (video, frame) pairs that lie too far past their video to extend its timeline to: beyond
    the larger of the video's last frame in `ss` and the number of pairs naming that video, plus `margin`
    frames. Each frame up to the largest becomes a row, so this bounds what one bad frame number allocates by
    the input's own size. Videos `ss` does not hold are not counted."""
    seg = video_segments(ss.video)
    names = np.asarray(video).astype(str)
    last = pd.Series(ss.frame[seg.ends - 1] if len(seg) else np.zeros(0, np.int64), index=seg.names.astype(str))
    have = last.reindex(names).to_numpy(np.float64)                       # NaN: a video `ss` lacks
    listed = pd.Series(names).value_counts().reindex(names).to_numpy(np.float64)
    limit = np.where(np.isnan(have), np.inf, np.fmax(have, listed) + margin)
    return np.flatnonzero(np.asarray(frame, np.float64) > limit)


def extend_timeline(ss: "ScoreSet", video: np.ndarray, frame: np.ndarray) -> "ScoreSet":
    """`ss` (on its full timeline) with each of its videos running at least to the largest of `frame` that
    `video` names for it; the added frames have no face. Videos `ss` does not hold are ignored here. A frame
    far past its video (`beyond_timeline`) is refused."""
    from .scores import ScoreSet      # scores imports this module
    bad = beyond_timeline(ss, video, frame)
    if len(bad):
        i = int(bad[0])
        raise InputError(f"frame {int(np.asarray(frame)[i])} of video {str(np.asarray(video)[i])!r} is more than "
                         f"{FRAME_MARGIN} frames past the video (its last known frame, or the number of frames "
                         f"named for it if more; {len(bad)} such frame(s))")
    want = pd.Series(np.asarray(frame, np.int64)).groupby(np.asarray(video).astype(str)).max()
    seg = video_segments(ss.video)
    last = ss.frame[seg.ends - 1] if len(seg) else np.zeros(0, np.int64)
    upto = want.reindex(seg.names.astype(str)).fillna(0).to_numpy(np.int64)
    extra = np.maximum(upto - last, 0)
    if not extra.any():
        return ss
    n_new = len(ss) + int(extra.sum())
    new_start = seg.starts + np.r_[0, np.cumsum(extra)[:-1]]
    pos = np.arange(len(ss)) + (new_start - seg.starts)[seg.row_ids()]      # old row -> new row
    lengths = seg.lengths + extra
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    video_new = np.repeat(seg.names, lengths)
    frame_new = np.arange(n_new, dtype=np.int64) - np.repeat(starts, lengths) + 1
    return ScoreSet(video_new, frame_new, spread(pos, n_new, ss.face, False),
                    spread(pos, n_new, ss.y, np.nan if ss.y is None else _invalid(ss)),
                    spread(pos, n_new, ss.scores, np.nan),
                    {k: spread(pos, n_new, h, np.nan) for k, h in ss.heads.items()}, dict(ss.attrs))


def _invalid(ss: "ScoreSet"):
    return get_task(ss.task).invalid


def filled_scores(ss: "ScoreSet", default=None) -> np.ndarray:
    """The split's scores with every frame without a face (or crop) filled from its neighbours, float64
    (`default`: the scores of a video without any face, see gaps.fill_gaps)."""
    return fill_gaps(ss.scores, ss.face, ss.video, ss.frame, default=default)


def smoothed_scores(ss: "ScoreSet", k, stat: Stat = "mean", filled: np.ndarray | None = None) -> np.ndarray:
    """Filled, then box-filtered over the frame timeline with half-width k (one int, or one per column)."""
    return box_filter(filled_scores(ss) if filled is None else filled, ss.video, k, stat)


@dataclass
class Decided:
    """A split through the whole path: gap-filled scores, smoothed scores and the task's decision, with the
    videos that have no frame with a face (their rows NaN in filled and smoothed)."""
    filled: np.ndarray
    smoothed: np.ndarray
    decision: np.ndarray
    faceless: np.ndarray


def decided(ss: "ScoreSet", k, stat: Stat = "mean", thresholds=None) -> Decided:
    """`filled_scores` -> `smoothed_scores` -> the task's decision (AU at `thresholds`). A video with no face at
    all has nothing to fill from: its rows stay NaN rather than borrowing other videos' mean."""
    seg = video_segments(ss.video)
    has = np.add.reduceat(ss.face.astype(np.int64), seg.starts) > 0 if len(seg) else np.zeros(0, bool)
    filled = filled_scores(ss, default=None if ss.face.any() else 0.0)
    smoothed = smoothed_scores(ss, k, stat, filled=filled)
    empty = np.repeat(~has, seg.lengths)
    filled[empty] = np.nan
    smoothed[empty] = np.nan
    return Decided(filled, smoothed, get_task(ss.task).decide(smoothed, thresholds), seg.names[~has])
