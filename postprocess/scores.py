"""The scores file: per-frame scores of one run, written by `classify`, read by `postprocess`.

HDF5 layout (one file, e.g. runs/<task>/<name>/scores.h5; several splits side by side):

    /<split>                      group, split = "val" | "test" | ...
        attrs: task ("va" | "expr" | "au"), created (ISO-8601 UTC), plus free-form attrs (scalars as is,
               anything else as JSON text)
        video_names   (V,)   utf-8 strings, each video once, in row order
        video_id      (N,)   int32, row -> index into video_names (rows of a video contiguous)
        frame         (N,)   int32, frame number (1-based, strictly increasing within a video)
        face          (N,)   bool, whether the frame had a face crop (scores of face-less rows are to be
                             filled from neighbours; they may be NaN)
        y             (N,) or (N, C), optional labels (EXPR int, VA float, AU int; the task's invalid marker)
        scores        (N, C) float32, the final (blended) scores: VA in [-1, 1], EXPR / AU probabilities
        heads/<name>  (N, C) float32, optional per-head scores
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import h5py
import numpy as np

from features.errors import InputError
from features.tasks import TASKS, get_task

from .segments import check_frames, video_segments


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


def save_scores(path: str | os.PathLike, split: str, video: np.ndarray, frame: np.ndarray, scores: np.ndarray,
                y: np.ndarray | None = None, face: np.ndarray | None = None,
                heads: dict[str, np.ndarray] | None = None, attrs: dict | None = None,
                overwrite: bool = False) -> None:
    """Write one split (layout in the module docstring). An existing split is replaced only with overwrite=True;
    other splits in the file are kept."""
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
    vid_id = np.repeat(np.arange(len(seg), dtype=np.int32), seg.lengths)
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


def load_scores(path: str | os.PathLike, split: str) -> ScoreSet:
    """Read one split; InputError naming the file if it or the split is missing or malformed."""
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
        return ScoreSet(names[vid], g["frame"][()].astype(np.int64), g["face"][()].astype(bool),
                        g["y"][()] if "y" in g else None, g["scores"][()], heads, attrs)
