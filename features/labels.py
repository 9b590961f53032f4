"""Aff-Wild2 / ABAW annotations: parse the challenge folders and join labels with cached features.

Layout (docs/affwild2.md)::

    <root>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt         valence,arousal      (-5 invalid)
    <root>/EXPR_Classification_Challenge | EXPR_Recognition_Challenge/...         one int 0..7         (-1 invalid)
    <root>/AU_Detection_Challenge/...                                             12 ints 0/1          (-1 invalid)

Line 1 is the header; data line i (1-based) is frame i, whose crop is ``cropped[_aligned]/<video>/{i:05d}.jpg``.
Files are UTF-8 (a byte-order mark is accepted). Because a line's position is its frame, an empty or
whitespace-only line before the last data line is an error (skipping it would shift every later frame);
trailing blank lines are ignored.

The MTL challenge uses one file per split with rows ``video/00001.jpg,valence,arousal,expr,au1..au12`` (-5 / -1
invalid). `load_labels` reads it when the root has no folder for the task but holds MTL split files, directly
or in ``MTL_Challenge/`` (see `labels_source`); blank lines there are skipped (each row names its frame).
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
from .finite import read_for_heads
from .paths import check_file_or_folder
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
                     f"{' or '.join(f'{n}/{sub}' for n in task.folders)} (or MTL files, in {MTL_FOLDER}/)", root)


def read_text(path: str | os.PathLike, what: str = "annotation file") -> str:
    """A UTF-8 text file (a leading byte-order mark dropped); anything else is one error naming the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{what} is not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8", path,
                         line) from None


def _check_values(task: Task, vals: np.ndarray, path: Path, first_line: int,
                  line_numbers: np.ndarray | None = None) -> None:
    """Raise on the first out-of-range value, naming its line (row i is line first_line + i, or
    line_numbers[i] when given)."""
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
                         path, first_line + i if line_numbers is None else int(line_numbers[i]))


def read_annotation(path: str | os.PathLike, task: str | Task) -> np.ndarray:
    """One annotation file as an array (n_frames,) for EXPR or (n_frames, k) for VA/AU, invalid markers kept.

    Strict: UTF-8 (a byte-order mark is accepted), the header must be the task's, every line must have the
    right number of numeric values in range. An empty or whitespace-only line before the last data line is an
    error (line i is frame i: skipping it would shift every later frame); trailing blank lines are ignored.
    """
    task = get_task(task)
    path = Path(path)
    lines = read_text(path).splitlines()
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
        # loadtxt skips empty lines: fewer rows than lines means one was (and the frames would shift)
        if vals.shape[1] != k or len(vals) != len(body):
            raise ValueError
    except ValueError:
        # find the offending line for a precise message (slow path, only on bad files)
        for i, ln in enumerate(body, start=2):
            if not ln.strip():
                raise InputError("blank line inside the annotations: line i is frame i, so it would shift every "
                                 f"later frame; write the frame's invalid marker ({_marker(task)}) instead",
                                 path, i) from None
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


def _marker(task: Task) -> str:
    k = 1 if task.kind == "multiclass" else task.n_outputs
    return ",".join([f"{task.invalid:g}"] * k)


def valid_mask(task: Task, y: np.ndarray) -> np.ndarray:
    """Frames with a label: AU drops a frame if any of its 12 values is invalid."""
    inv = np.asarray(y) == task.invalid
    return ~inv if inv.ndim == 1 else ~inv.any(axis=1)


def list_videos(root: str | os.PathLike, task: str | Task, split: str) -> list[str]:
    kind, where = labels_source(root, task, split)
    if kind == "mtl":
        return sorted(read_mtl(where)["video"].unique().tolist())
    return sorted(p.stem for p in where.glob("*.txt"))


MTL_FOLDER = "MTL_Challenge"
_MTL_SPLIT_WORDS = {"train": ("train",), "val": ("val",)}


def mtl_file(folder: str | os.PathLike, split: str) -> Path | None:
    """The MTL annotation file of `split` in `folder`: the one `.txt` whose name holds "train" (train) or
    "val" (validation), e.g. train_set.txt, MTL_Training_Set.txt, validation_set_annotations.txt; None when
    there is none, an error when several match."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    key = {v: k for k, v in SPLITS.items()}[split_folder(split)]
    found = sorted(p for p in folder.glob("*.txt") if any(w in p.name.lower() for w in _MTL_SPLIT_WORDS[key]))
    if len(found) > 1:
        raise InputError(f"several MTL {key} files ({', '.join(p.name for p in found)}); keep one", folder)
    return found[0] if found else None


def labels_source(root: str | os.PathLike, task: str | Task, split: str) -> tuple[str, Path]:
    """Where a task's labels of a split come from: ("folder", <task folder>/<Split_Set>) when the root has it,
    else ("mtl", <file>) when the root (or <root>/MTL_Challenge) holds the split's MTL file."""
    task = get_task(task)
    root = check_file_or_folder(root, "--labels", "annotation root does not exist")
    if root.is_file():
        raise InputError("--labels must be a folder: the annotation root, or the folder holding the MTL "
                         "train and validation files", root)
    sub = split_folder(split)
    if not any((root / name / sub).is_dir() for name in task.folders):
        for folder in (root, root / MTL_FOLDER):
            f = mtl_file(folder, split)
            if f is not None:
                return "mtl", f
    return "folder", task_dir(root, task, split)


def load_labels(root: str | os.PathLike, task: str | Task, split: str,
                videos: Sequence[str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Labelled frames of a split: columns video, frame (1-based), then the task's label columns.

    `root` holds the per-task challenge folders, or the MTL split files (see `labels_source`). Invalid rows
    are dropped; ``df.attrs`` records n_frames (all rows), n_invalid and source (the folder or MTL file).
    """
    task = get_task(task)
    kind, where = labels_source(root, task, split)
    if kind == "mtl":
        return _mtl_labels(where, task, split, videos)
    d = where
    if videos is None:
        videos = sorted(p.stem for p in d.glob("*.txt"))
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
    df.attrs.update(task=task.name, split=split_folder(split), n_frames=n_total, n_invalid=n_total - len(df),
                    source=str(d))
    return df


def _mtl_labels(path: Path, task: Task, split: str, videos: Sequence[str] | None) -> pd.DataFrame:
    """`load_labels` from an MTL file: the task's columns, rows with the task's invalid marker dropped."""
    mtl = read_mtl(path)
    if videos is not None:
        mtl = mtl[mtl["video"].isin(list(videos))]
    cols = {"va": ["valence", "arousal"], "expr": ["expr"], "au": list(AU.labels)}[task.name]
    y = mtl[cols].to_numpy(task.label_dtype)
    y = y[:, 0] if task.kind == "multiclass" else y
    keep = valid_mask(task, y)
    df = mtl.loc[keep, ["video", "frame"]].reset_index(drop=True)
    if task.kind == "multiclass":
        df["label"] = y[keep]
    else:
        for j, name in enumerate(task.labels):
            df[name] = y[keep][:, j]
    df = df.sort_values(["video", "frame"], kind="stable", ignore_index=True)
    df.attrs.update(task=task.name, split=split_folder(split), n_frames=len(mtl), n_invalid=int((~keep).sum()),
                    source=str(path))
    return df


def label_array(task: str | Task, df: pd.DataFrame) -> np.ndarray:
    """The label columns of a `load_labels` frame as the task's label array."""
    task = get_task(task)
    if task.kind == "multiclass":
        return df["label"].to_numpy(np.int64)
    return df[list(task.labels)].to_numpy(task.label_dtype)


_MTL_ROW = re.compile(r"^(?P<video>[^/]+)/(?P<frame>\d+)\.jpg$")


def read_mtl(path: str | os.PathLike) -> pd.DataFrame:
    """The MTL challenge's file of one split: columns video, frame, valence, arousal, expr, AU1..AU26 (invalid
    markers kept). UTF-8 (a byte-order mark is accepted); blank lines are skipped (every row names its frame);
    a frame listed twice is an error."""
    path = Path(path)
    lines = read_text(path, "MTL file").splitlines()
    if not lines or not lines[0].strip():
        raise InputError("empty MTL file (expected a header line)", path, 1)
    n = 1 + 2 + 1 + AU.n_outputs
    if len(lines[0].split(",")) != n:
        raise InputError(f"MTL header must have {n} columns (image, valence, arousal, expression, 12 AUs)", path, 1)
    line_no = np.array([i for i, ln in enumerate(lines[1:], start=2) if ln.strip()], np.int64)
    parts = [lines[i - 1].strip().split(",") for i in line_no]
    lens = np.array([len(p) for p in parts], np.int64)
    if (lens != n).any():
        j = int(np.argmax(lens != n))
        raise InputError(f"expected {n} comma-separated values, got {lens[j]}", path, int(line_no[j]))
    images = pd.Series([p[0] for p in parts], dtype=object)
    m = images.str.extract(_MTL_ROW)
    if m["video"].isna().any():
        i = int(np.argmax(m["video"].isna().to_numpy()))
        raise InputError(f"image location must look like video/00001.jpg, got {images[i]!r}", path, line_no[i])
    try:
        vals = np.array([p[1:] for p in parts], dtype=np.float64).reshape(len(parts), n - 1)
    except ValueError:
        for i, p in zip(line_no, parts):
            try:
                [float(x) for x in p[1:]]
            except ValueError:
                raise InputError(f"not a number in {lines[i - 1].strip()!r}", path, int(i)) from None
        raise
    if not np.isfinite(vals).all():
        raise InputError("not a finite number", path, int(line_no[np.argmax(~np.isfinite(vals).all(axis=1))]))
    for task, sl in ((VA, slice(0, 2)), (EXPR, slice(2, 3)), (AU, slice(3, n - 1))):
        _check_values(task, vals[:, sl], path, 2, line_no)
    df = pd.DataFrame(vals, columns=["valence", "arousal", "expr", *AU.labels])
    df.insert(0, "frame", m["frame"].astype(np.int64).to_numpy())
    df.insert(0, "video", m["video"].to_numpy())
    dup = df.duplicated(["video", "frame"]).to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise InputError(f"frame {images[i]!r} is listed twice", path, int(line_no[i]))
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
    blk = read_for_heads(store, cached, extractors, outputs=outputs) if cached else None

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
