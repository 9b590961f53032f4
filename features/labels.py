"""Aff-Wild2 / ABAW annotations: parse the challenge folders and join labels with cached features.

Layout (DESIGN §2)::

    <root>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt         valence,arousal      (-5 invalid)
    <root>/EXPR_Classification_Challenge | EXPR_Recognition_Challenge/...         one int 0..7         (-1 invalid)
    <root>/AU_Detection_Challenge/...                                             12 ints 0/1          (-1 invalid)

Line 1 is the header; data line i (1-based) is frame i, whose crop is ``cropped[_aligned]/<video>/{i:05d}.jpg``.
The MTL challenge uses one file with rows ``video/00001.jpg,valence,arousal,expr,au1..au12``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import InputError
from .store import FeatureStore
from .tasks import AU, EXPR, VA, Task, get_task

SPLITS = {"train": "Train_Set", "val": "Validation_Set"}


def split_folder(split: str) -> str:
    if split in SPLITS.values():
        return split
    try:
        return SPLITS[split.lower()]
    except KeyError:
        raise InputError(f"unknown split {split!r}; choose train or val") from None


def task_dir(root: str | os.PathLike, task: str | Task, split: str) -> Path:
    """The annotation folder of a task and split; EXPR accepts both folder names used by the challenges."""
    task = get_task(task)
    root = Path(root)
    if not root.is_dir():
        raise InputError("annotation root does not exist", root)
    sub = split_folder(split)
    for name in task.folders:
        d = root / name / sub
        if d.is_dir():
            return d
    raise InputError(f"no {task.name.upper()} annotations: expected folder "
                     f"{' or '.join(f'{n}/{sub}' for n in task.folders)}", root)


def _check_values(task: Task, vals: np.ndarray, path: Path, first_line: int) -> None:
    """Raise on the first out-of-range value, naming its line."""
    if task.kind == "regression":
        ok = ((vals >= -1) & (vals <= 1)) | (vals == task.invalid)
        what = f"values must lie in [-1, 1] or be {task.invalid:g} (invalid)"
    else:
        lo, hi = task.value_range
        ok = (vals == np.round(vals)) & (((vals >= lo) & (vals <= hi)) | (vals == task.invalid))
        what = f"values must be integers {lo}..{hi} or {task.invalid} (invalid)"
    bad = ~ok.reshape(len(vals), -1).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what}, got {','.join(f'{v:g}' for v in vals.reshape(len(vals), -1)[i])}",
                         path, first_line + i)


def read_annotation(path: str | os.PathLike, task: str | Task) -> np.ndarray:
    """One annotation file as an array (n_frames,) for EXPR or (n_frames, k) for VA/AU, invalid markers kept.

    Strict: the header must be the task's, every line must have the right number of numeric values in range.
    """
    task = get_task(task)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"cannot read annotation file: {e.strerror}", path) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError("empty annotation file (expected a header line)", path, 1)
    header = [h.strip() for h in lines[0].split(",")]
    if [h.lower() for h in header] != [h.lower() for h in task.labels]:
        raise InputError(f"header {lines[0].strip()!r} is not the {task.name.upper()} header {task.header!r}",
                         path, 1)
    body = lines[1:]
    while body and not body[-1].strip():      # tolerate trailing blank lines only
        body.pop()
    k = 1 if task.kind == "multiclass" else task.n_outputs   # EXPR: one class index per line
    if not body:
        return np.empty(task.label_shape(0), dtype=task.label_dtype)
    try:
        vals = np.loadtxt(body, delimiter=",", ndmin=2, dtype=np.float64)
        if vals.shape[1] != k:
            raise ValueError
    except ValueError:
        # find the offending line for a precise message (slow path, only on bad files)
        for i, ln in enumerate(body, start=2):
            parts = ln.split(",")
            if len(parts) != k:
                raise InputError(f"expected {k} comma-separated values, got {len(parts)}: {ln.strip()!r}",
                                 path, i) from None
            for x in parts:
                try:
                    float(x)
                except ValueError:
                    raise InputError(f"not a number: {x.strip()!r}", path, i) from None
        raise InputError("cannot parse annotation file", path) from None
    if not np.isfinite(vals).all():
        i = int(np.argmax(~np.isfinite(vals).all(axis=1)))
        raise InputError("not a finite number", path, i + 2)
    _check_values(task, vals, path, 2)
    vals = vals.astype(task.label_dtype)
    return vals[:, 0] if task.kind == "multiclass" else vals


def valid_mask(task: Task, y: np.ndarray) -> np.ndarray:
    """Frames with a label: AU drops a frame if any AU is invalid (DESIGN §2)."""
    inv = np.asarray(y) == task.invalid
    return ~inv if inv.ndim == 1 else ~inv.any(axis=1)


def list_videos(root: str | os.PathLike, task: str | Task, split: str) -> list[str]:
    return sorted(p.stem for p in task_dir(root, task, split).glob("*.txt"))


def load_labels(root: str | os.PathLike, task: str | Task, split: str,
                videos: Sequence[str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Labelled frames of a split: columns video, frame (1-based), then the task's label columns.

    Invalid rows are dropped; ``df.attrs`` records n_frames (all rows) and n_invalid.
    """
    task = get_task(task)
    d = task_dir(root, task, split)
    if videos is None:
        videos = list_videos(root, task, split)
    frames, n_total = [], 0
    for v in tqdm(videos, desc=f"labels {task.name}/{split}", unit="video", disable=not progress or len(videos) < 50):
        y = read_annotation(d / f"{v}.txt", task)
        n_total += len(y)
        keep = valid_mask(task, y)
        cols = {"video": v, "frame": np.flatnonzero(keep) + 1}
        yk = y[keep]
        if task.kind == "multiclass":
            cols["label"] = yk
        else:
            for j, name in enumerate(task.labels):
                cols[name] = yk[:, j]
        frames.append(pd.DataFrame(cols))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["video", "frame"])
    df.attrs.update(task=task.name, split=split_folder(split), n_frames=n_total, n_invalid=n_total - len(df))
    return df


def label_array(task: str | Task, df: pd.DataFrame) -> np.ndarray:
    """The label columns of a `load_labels` frame as the task's label array."""
    task = get_task(task)
    if task.kind == "multiclass":
        return df["label"].to_numpy(np.int64)
    return df[list(task.labels)].to_numpy(task.label_dtype)


_MTL_ROW = re.compile(r"^(?P<video>[^/]+)/(?P<frame>\d+)\.jpg$")


def read_mtl(path: str | os.PathLike) -> pd.DataFrame:
    """The MTL challenge's single file: columns video, frame, valence, arousal, expr, AU1..AU26 (invalid kept)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read MTL file: {e.strerror}", path) from None
    if not lines:
        raise InputError("empty MTL file (expected a header line)", path, 1)
    n = 1 + 2 + 1 + AU.n_outputs
    if len(lines[0].split(",")) != n:
        raise InputError(f"MTL header must have {n} columns (image, valence, arousal, expression, 12 AUs)", path, 1)
    rows = []
    for i, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            continue
        parts = ln.strip().split(",")
        if len(parts) != n:
            raise InputError(f"expected {n} comma-separated values, got {len(parts)}", path, i)
        m = _MTL_ROW.match(parts[0])
        if not m:
            raise InputError(f"image location must look like video/00001.jpg, got {parts[0]!r}", path, i)
        try:
            vals = [float(x) for x in parts[1:]]
        except ValueError:
            raise InputError(f"not a number in {ln.strip()!r}", path, i) from None
        for task, sl in ((VA, slice(0, 2)), (EXPR, slice(2, 3)), (AU, slice(3, n - 1))):
            _check_values(task, np.array([vals[sl]]), path, i)
        rows.append((m["video"], int(m["frame"]), *vals))
    cols = ["video", "frame", "valence", "arousal", "expr", *AU.labels]
    df = pd.DataFrame(rows, columns=cols)
    df["expr"] = df["expr"].astype(np.int64)
    df[list(AU.labels)] = df[list(AU.labels)].astype(np.int64)
    return df


# ----------------------------------------------------------------------------------------------------------
# labels x features

@dataclass
class Joined:
    """A task's design matrix: rows are labelled frames that have features with a face."""
    X: np.ndarray              # (n, d) float32
    y: np.ndarray              # task.label_shape(n)
    groups: np.ndarray         # (n,) video name per row (for GroupKFold and per-video smoothing)
    index: pd.DataFrame        # columns video, frame
    n_labelled: int            # valid labelled frames asked for
    n_missing: int             # of those, frames without features or without a face
    missing: pd.DataFrame      # their (video, frame, reason)

    def summary(self) -> str:
        return (f"{len(self.y)} of {self.n_labelled} labelled frames have features; "
                f"{self.n_missing} without ({self.missing['reason'].value_counts().to_dict()})"
                if self.n_missing else f"all {self.n_labelled} labelled frames have features")


def join(store: FeatureStore, labels: pd.DataFrame, task: str | Task, keys: Sequence[str]) -> Joined:
    """Join labelled frames with cached features by (video, frame).

    `keys` are "extractor/output" names (e.g. "enet_b0_8_va_mtl/embedding"); their arrays are placed side by
    side as float32. Labelled frames whose video is not cached, whose frame is not cached, or whose face is
    missing are counted in `n_missing` and listed in `missing`, never silently dropped.
    """
    task = get_task(task)
    if len(labels) == 0:
        raise InputError(f"no labelled frames for {task.name} ({labels.attrs.get('split', 'split')} is empty)")
    if not keys:
        raise InputError("no features requested")
    outputs: dict[str, list[str]] = {}
    for k in keys:
        if k.count("/") != 1:
            raise InputError(f"feature key {k!r} must look like extractor/output")
        e, o = k.split("/")
        outputs.setdefault(e, []).append(o)
    extractors = list(outputs)
    for e in extractors:
        store.info(e)
    vids_all = labels["video"].unique().tolist()
    cached = [v for v in vids_all if all(store.has_video(e, v) for e in extractors)]
    blk = store.read(cached, extractors, outputs=outputs) if cached else None

    lab = labels.reset_index(drop=True)
    if blk is not None:
        idx = blk.index.assign(video=blk.index["video"].astype(str), row=np.arange(len(blk)))
        m = lab.merge(idx, on=["video", "frame"], how="left", sort=False)
    else:
        m = lab.assign(row=np.nan, face=np.nan)
    has_row = m["row"].notna().to_numpy()
    face = m["face"].eq(True).to_numpy()      # NaN (no row) counts as no face
    keep = has_row & face
    reason = np.where(~np.isin(m["video"], cached), "video not cached",
                      np.where(~has_row, "frame not cached", "no face"))
    missing = m.loc[~keep, ["video", "frame"]].assign(reason=reason[~keep]).reset_index(drop=True)
    rows = m.loc[keep, "row"].to_numpy(np.int64)

    width = sum(blk.arrays[k].shape[1] for k in keys) if blk is not None else 0
    X = np.empty((len(rows), width), np.float32)
    c = 0
    for k in keys:
        if blk is None:
            break
        a = blk.arrays[k]
        X[:, c:c + a.shape[1]] = a[rows]
        c += a.shape[1]
    kept = lab.loc[keep].reset_index(drop=True)
    return Joined(X=X, y=label_array(task, kept), groups=kept["video"].to_numpy(),
                  index=kept[["video", "frame"]], n_labelled=len(lab), n_missing=int((~keep).sum()),
                  missing=missing)
