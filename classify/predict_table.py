"""`classify predict`'s per-frame table: frame rates for its time column, its columns, and the file itself (CSV
or Parquet by the extension of --out, through the one writer), read back with the same dtypes.

Columns and types: video (categorical), frame (int64), time (float64 seconds, NaN where the frame rate is
unknown), face (bool: a face was found in this frame), far_from_face (bool: no face within --max-gap, so the
outputs are empty), source_video (categorical; only when the cache holds tracked persons), the task's outputs
(float32 probabilities or values, `label` categorical, `<AU>_on` Int8; empty where no value), then the face
columns of classify.predict_faces (float32; only when a face detector ran at extraction)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from features.errors import InputError
from features.outputs import Outputs, check_output
from features.paths import check_file_or_folder
from features.tasks import EXPR, get_task
from postprocess.scores import ScoreSet

OUT_FORMATS = (".csv", ".parquet")


def frame_rates(source: str | os.PathLike | None, videos: Sequence[str]) -> dict[str, float]:
    """Frame rates of the videos from the video files in `source` (a file or folder; matched by file stem,
    as extract names them), read from the container with PyAV. Videos without a file get none."""
    if source is None:
        return {}
    src = check_file_or_folder(source, "--source", "--source: no such video file or folder")
    files = [src] if src.is_file() else [p for p in sorted(src.iterdir()) if p.is_file()]
    want = set(videos)
    out = {}
    for p in files:
        if p.stem not in want:
            continue
        import av
        try:
            with av.open(str(p)) as c:
                s = c.streams.video[0] if c.streams.video else None
                rate = s.average_rate or s.guessed_rate if s is not None else None
        except (av.error.FFmpegError, OSError, IndexError):
            rate = None
        if rate:
            out[p.stem] = float(rate)
    return out


def build_table(sc: ScoreSet, smoothed: np.ndarray, decision: np.ndarray, fps: dict[str, float],
                far: np.ndarray | None = None, faces: dict[str, np.ndarray] | None = None,
                sources: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per frame: video, frame, time (NaN where the video's frame rate is unknown), face, far_from_face
    (`far`, default all False), source_video (when `sources` maps items to the videos they were cut from),
    then the task's post-processed outputs (empty where `smoothed` is NaN: a video without any face, a frame far
    from one), then the `faces` columns."""
    task = get_task(sc.task)
    codes, names = pd.factorize(sc.video)
    rate = pd.Series(fps, dtype=np.float64).reindex(names).to_numpy(np.float64)
    cols: dict[str, object] = {"video": pd.Categorical.from_codes(codes, names) if len(names) else sc.video,
                               "frame": sc.frame.astype(np.int64),
                               "time": (sc.frame - 1) / rate[codes] if len(rate) else np.zeros(0),
                               "face": sc.face.astype(bool),
                               "far_from_face": np.zeros(len(sc), bool) if far is None else np.asarray(far, bool)}
    if sources is not None:
        src = [str(sources.get(str(n), n)) for n in names]
        cols["source_video"] = pd.Categorical(np.asarray(src, dtype=object)[codes] if len(codes) else [],
                                              categories=list(dict.fromkeys(src)))
    empty = ~np.isfinite(smoothed).all(axis=1)
    if task.kind == "regression":
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
    elif task.kind == "multiclass":
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
        lab = np.asarray(task.labels, dtype=object)[decision]
        lab[empty] = None
        cols["label"] = pd.Categorical(lab, categories=list(task.labels))
    else:
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
        for j, n in enumerate(task.labels):
            cols[f"{n}_on"] = pd.array(np.where(empty, pd.NA, decision[:, j]), dtype="Int8")
    for c, a in (faces or {}).items():
        cols[c] = np.asarray(a, np.float32)
    return pd.DataFrame(cols)


def check_out(out: str | os.PathLike, force: bool = False) -> Path:
    out = Path(out)
    if out.suffix.lower() not in OUT_FORMATS:
        raise InputError(f"--out must end in {' or '.join(OUT_FORMATS)} (the table's format), got "
                         f"{out.suffix or 'no extension'!r}", out)
    if out.is_dir() and not out.is_symlink():
        raise InputError("--out is a folder; give a file name ending in .csv or .parquet", out)
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError("the folder of --out is a file", out.parent)
    return check_output(out, force)


def write_table(df: pd.DataFrame, out: Path, outs: Outputs | None = None, force: bool = False) -> None:
    """Through the one writer (features.outputs): a temporary file renamed at the end, never half a table; with
    `outs`, renamed when that command's other outputs are."""
    def write(f) -> None:
        if out.suffix.lower() == ".parquet":
            df.to_parquet(f, index=False)
        else:
            df.to_csv(f, index=False, float_format="%.6g")
    if outs is None:
        with Outputs([out], force=force) as one:
            one.write(out, write, text=out.suffix.lower() != ".parquet")
    else:
        outs.write(out, write, text=out.suffix.lower() != ".parquet")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table `predict` wrote, with the same dtypes from CSV and Parquet."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    df = pd.read_csv(path, dtype={"video": str, "source_video": str})
    df["video"] = pd.Categorical(df["video"], categories=pd.unique(df["video"]))
    if "source_video" in df:
        df["source_video"] = df["source_video"].astype(str)
        df["source_video"] = pd.Categorical(df["source_video"], categories=pd.unique(df["source_video"]))
    if "label" in df:
        df["label"] = pd.Categorical(df["label"], categories=list(EXPR.labels))
    for c in [c for c in df.columns if c.endswith("_on")]:
        df[c] = df[c].astype("Int8")
    for c in df.columns[4:]:
        if df[c].dtype == np.float64:
            df[c] = df[c].astype(np.float32)
    return df
