"""The scores file: per-frame scores of one run, written by `classify`, read by `postprocess`.

Every split holds the full frame timeline of each of its videos: one row per frame 1..last (the last frame
with a crop, a cached feature row or a label), whatever the frame had. `save_scores` adds the frames it is not
given (no face, no scores, label = the task's invalid marker), and `load_scores` does the same for files
written before this layout, whose validation split held only the labelled frames with a face. So the box filter
runs over frames on every split and a half-width k means the same window on validation and on test
(see `postprocess.timeline`).

HDF5 layout (one file, e.g. runs/<task>/<name>/scores.h5; several splits side by side):

    /<split>                      group, split = "val" | "test" | ...
        attrs: task ("va" | "expr" | "au"), created (ISO-8601 UTC), plus free-form attrs (scalars as is,
               anything else as JSON text)
        video_names   (V,)   utf-8 strings, each video once, in row order
        video_id      (N,)   int32, row -> index into video_names (rows of a video contiguous)
        frame         (N,)   int32, frame number: 1, 2, ..., last within each video (every frame)
        face          (N,)   bool, whether the frame had a face crop with features (the scores of the other
                             frames are filled from neighbours before smoothing; they are NaN)
        y             (N,) or (N, C), optional labels (EXPR int, VA float, AU int; the task's invalid marker on
                             unlabelled frames, which are smoothed but left out of the metric)
        scores        (N, C) float32, the final (blended) scores: VA in [-1, 1], EXPR / AU probabilities
        heads/<name>  (N, C) float32, optional per-head scores (NaN where face is False)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import h5py
import numpy as np

from features.errors import InputError
from features.outputs import OutputError
from features.tasks import TASKS, Task, get_task

from .segments import check_frames, video_segments
from .timeline import full_timeline, is_full_timeline, spread


@dataclass
class ScoreSet:
    video: np.ndarray            # (N,) str
    frame: np.ndarray            # (N,) int
    face: np.ndarray             # (N,) bool
    y: np.ndarray | None
    scores: np.ndarray           # (N, C) float32
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.attrs["task"]

    def __len__(self) -> int:
        return len(self.video)


def _infer_task(n_cols: int) -> str:
    for t in TASKS.values():
        if t.n_outputs == n_cols:
            return t.name
    raise InputError(f"cannot tell the task of scores with {n_cols} columns; pass attrs={{'task': ...}}")


def timeline_scores(task: str, video: np.ndarray, frame: np.ndarray, scores: np.ndarray,
                    face: np.ndarray | None = None, y: np.ndarray | None = None,
                    heads: dict[str, np.ndarray] | None = None, attrs: dict | None = None) -> ScoreSet:
    """A ScoreSet on the full frame timeline from rows given for some frames (ordered by video, frame): the
    frames not given get face False, NaN scores and the task's invalid label, as `save_scores` stores them."""
    t = get_task(task)
    video, frame_tl, pos = full_timeline(video, frame)
    n = len(video)
    k = len(np.asarray(frame))
    face = np.ones(k, bool) if face is None else np.asarray(face, bool)
    return ScoreSet(video, frame_tl, spread(pos, n, face, False), spread(pos, n, y, t.invalid),
                    spread(pos, n, np.asarray(scores), np.nan),
                    {name: spread(pos, n, np.asarray(h), np.nan) for name, h in (heads or {}).items()},
                    {**(attrs or {}), "task": t.name})


def _check_scores(path, split: str, video, frame, scores, face) -> tuple[np.ndarray, ...]:
    """Check the rows' videos, frames, scores and face flags agree, before anything is written.
    Returns video, frame, the scores as given, the scores as columns, and the face flags."""
    video = np.asarray(video).astype(str)
    n = len(video)
    seg = video_segments(video, what=f"{os.fspath(path)}:{split}")
    frame = check_frames(frame, seg, f"{os.fspath(path)}:{split}: frame")
    s = np.asarray(scores, np.float32)
    s2 = s[:, None] if s.ndim == 1 else s
    if len(s2) != n:
        raise InputError(f"{len(s2)} score rows but {n} video rows", path)
    face = np.ones(n, bool) if face is None else np.asarray(face, bool)
    if face.shape != (n,):
        raise InputError(f"{face.shape[0] if face.ndim else 0} face flags for {n} rows", path)
    if not np.isfinite(s2[face]).all():
        raise InputError(f"split {split}: NaN or infinite scores on rows with a face", path)
    return video, frame, s, s2, face


def _check_extras(path, s2: np.ndarray, y, heads, attrs) -> tuple[Task, dict, np.ndarray | None, dict]:
    """Check the task (named or inferred from the columns), labels and extra heads against the score rows."""
    n = len(s2)
    attrs = dict(attrs or {})
    task = get_task(attrs.get("task") or _infer_task(s2.shape[1]))
    if s2.shape[1] != task.n_outputs:
        raise InputError(f"{task.name} scores need {task.n_outputs} columns, got {s2.shape[1]}", path)
    attrs["task"] = task.name
    if y is not None:
        y = np.asarray(y)
        if len(y) != n:
            raise InputError(f"{len(y)} label rows but {n} score rows", path)
    heads = dict(heads or {})
    for name, h in heads.items():
        if np.shape(h)[:1] != (n,) or "/" in name:
            raise InputError(f"head {name!r}: needs {n} rows and a name without '/'", path)
    return task, attrs, y, heads


def _write_split(path, split: str, overwrite: bool, seg, vid_id: np.ndarray, frame: np.ndarray,
                 face: np.ndarray, y: np.ndarray | None, s: np.ndarray, heads: dict, attrs: dict) -> None:
    """Write the split's group into the file (never through a link; an existing split only with overwrite)."""
    if os.path.islink(path):
        raise InputError("is a symbolic link; outputs are never written through links", path)
    try:
        with h5py.File(path, "a") as f:
            if split in f:
                if not overwrite:
                    raise InputError(f"split {split!r} already exists (pass overwrite=True to replace it)", path)
                del f[split]
            g = f.create_group(split)
            g.create_dataset("video_names", data=seg.names.astype(object), dtype=h5py.string_dtype("utf-8"))
            g.create_dataset("video_id", data=vid_id)
            g.create_dataset("frame", data=frame.astype(np.int32))
            g.create_dataset("face", data=face)
            if y is not None:
                g.create_dataset("y", data=y)
            g.create_dataset("scores", data=s)
            if heads:
                hg = g.create_group("heads")
                for name, h in heads.items():
                    hg.create_dataset(name, data=np.asarray(h, np.float32))
            g.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for key, val in attrs.items():
                g.attrs[key] = val if isinstance(val, (str, int, float, bool, np.number)) else json.dumps(val)
    except OSError as e:                     # a full disk or a read-only folder: name the file, keep the reason
        raise OutputError(path, e) from e


def save_scores(path: str | os.PathLike, split: str, video: np.ndarray, frame: np.ndarray, scores: np.ndarray,
                y: np.ndarray | None = None, face: np.ndarray | None = None,
                heads: dict[str, np.ndarray] | None = None, attrs: dict | None = None,
                overwrite: bool = False) -> None:
    """Write one split on the full frame timeline (layout in the module docstring): rows may be any frames of
    each video, ordered by (video, frame); the frames not given are added with face False, NaN scores and
    invalid labels. An existing split is replaced only with overwrite=True; other splits in the file are kept."""
    video, frame, s, s2, face = _check_scores(path, split, video, frame, scores, face)
    task, attrs, y, heads = _check_extras(path, s2, y, heads, attrs)
    video, frame, pos = full_timeline(video, frame, f"{os.fspath(path)}:{split}")
    n = len(video)
    s = spread(pos, n, s, np.nan)
    face = spread(pos, n, face, False)
    y = spread(pos, n, y, task.invalid)
    heads = {name: spread(pos, n, np.asarray(h, np.float32), np.nan) for name, h in heads.items()}
    seg = video_segments(video)
    vid_id = np.repeat(np.arange(len(seg), dtype=np.int32), seg.lengths)
    _write_split(path, split, overwrite, seg, vid_id, frame, face, y, s, heads, attrs)


def load_scores(path: str | os.PathLike, split: str) -> ScoreSet:
    """Read one split on the full frame timeline (a split stored with only some frames, as files written before
    that layout hold, is expanded here the same way `save_scores` does); InputError naming the file if it or the
    split is missing or malformed."""
    if not os.path.exists(path):
        raise InputError("scores file not found", path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"not an HDF5 file ({e})", path) from None
    with f:
        if split not in f:
            raise InputError(f"no split {split!r} (has: {', '.join(f.keys()) or 'none'})", path)
        g = f[split]
        missing = [d for d in ("video_names", "video_id", "frame", "face", "scores") if d not in g]
        if missing:
            raise InputError(f"split {split!r} lacks {', '.join(missing)}", path)
        names = np.array([x.decode() if isinstance(x, bytes) else x for x in g["video_names"][()]], dtype=str)
        vid = g["video_id"][()]
        if len(vid) and (vid.min() < 0 or vid.max() >= len(names)):
            raise InputError(f"split {split!r}: video_id out of range", path)
        attrs = {}
        for key, val in g.attrs.items():
            val = val.item() if isinstance(val, np.generic) else val
            if isinstance(val, str) and val[:1] in "[{":
                try:
                    val = json.loads(val)
                except ValueError:
                    pass
            attrs[key] = val
        if "task" not in attrs:
            raise InputError(f"split {split!r} has no task attribute", path)
        heads = {k: v[()] for k, v in g["heads"].items()} if "heads" in g else {}
        ss = ScoreSet(names[vid], g["frame"][()].astype(np.int64), g["face"][()].astype(bool),
                      g["y"][()] if "y" in g else None, g["scores"][()], heads, attrs)
    n = len(ss.video)
    for what, arr in (("face", ss.face), ("scores", ss.scores), ("y", ss.y), *ss.heads.items()):
        if arr is not None and len(arr) != n:
            raise InputError(f"split {split!r}: {what} has {len(arr)} rows, video_id {n}", path)
    if not is_full_timeline(ss.video, check_frames(ss.frame, video_segments(ss.video, f"{path}:{split}"),
                                                   f"{path}:{split}: frame")):
        video, frame, pos = full_timeline(ss.video, ss.frame, f"{os.fspath(path)}:{split}")
        m = len(video)
        invalid = get_task(ss.task).invalid
        ss = ScoreSet(video, frame, spread(pos, m, ss.face, False), spread(pos, m, ss.y, invalid),
                      spread(pos, m, ss.scores, np.nan), {k: spread(pos, m, h, np.nan) for k, h in ss.heads.items()},
                      attrs)
    return ss
