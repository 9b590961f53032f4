"""Import OpenFace 2.x FeatureExtraction CSVs as an extractor group ``openface`` (35 action-unit values).

Every 2.x header is read: 2.0.x writes ``frame, timestamp, confidence, success, gaze_0_x, ...`` (a space after
each comma, no ``face_id``); later versions add ``face_id`` after ``frame`` and 2.2.0 drops the spaces
(``frame,face_id,timestamp,...``). Columns are found by name, in any order, with or without spaces; columns
that are not used (gaze vectors, landmarks, shape parameters, ...) are ignored. What is required: ``frame``
(1-based), ``success`` or ``confidence`` (the face mask), the 17 ``AUxx_r`` intensities and the 18
``AUxx_c`` presences. A frame has a face when ``success == 1`` and ``confidence >= threshold`` (without
``success``: ``confidence >= threshold``, so give a threshold; without ``confidence``: ``success`` alone).

Several rows of one frame (FaceLandmarkVidMulti writes one per tracked face): the successful row with the
highest confidence is kept (ties: the first in the file), or only the rows of the given ``face_id``. The
per-image CSVs of FaceLandmarkImg (``face, confidence, ...``: no ``frame``) are refused.

In the store, group ``openface``: embedding = the 17 intensities followed by the 18 presences (float32), one
row per frame, video name = the CSV file's stem. With ``pose_gaze`` (``--pose-gaze``) a second group
``openface_pose_gaze`` holds head pose and gaze angles, embedding columns in this order:
``pose_Rx, pose_Ry, pose_Rz`` (radians), ``pose_Tx, pose_Ty, pose_Tz`` (mm), ``gaze_angle_x, gaze_angle_y``
(radians; the store's outputs are embedding / logits / va, so these are an embedding of their own group, with
the same frames and face mask as ``openface``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from features.errors import InputError
from features.store import ExtractorInfo, FeatureStore

AU_R = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
        "AU23", "AU25", "AU26", "AU45")
AU_C = AU_R[:-1] + ("AU28",) + AU_R[-1:]      # presence adds AU28, before AU45 as in OpenFace
R_COLS = tuple(a + "_r" for a in AU_R)
C_COLS = tuple(a + "_c" for a in AU_C)
POSE_GAZE_COLS = ("pose_Rx", "pose_Ry", "pose_Rz", "pose_Tx", "pose_Ty", "pose_Tz", "gaze_angle_x", "gaze_angle_y")
OPTIONAL_COLS = ("face_id", "timestamp", "confidence", "success")
NAME = "openface"
POSE_GAZE_SUFFIX = "_pose_gaze"


@dataclass
class OpenFaceVideo:
    frame: np.ndarray        # (n,) int64, 1-based
    face: np.ndarray         # (n,) bool
    au_r: np.ndarray         # (n, 17) float32 intensities 0..5
    au_c: np.ndarray         # (n, 18) float32 presences 0/1
    confidence: np.ndarray   # (n,) float32 (1 where the CSV has no confidence column)
    timestamp: np.ndarray    # (n,) float64 seconds (NaN where the CSV has no timestamp column)
    pose_gaze: np.ndarray | None = None   # (n, 8) float32 in POSE_GAZE_COLS order, when asked for

    @property
    def embedding(self) -> np.ndarray:
        return np.hstack([self.au_r, self.au_c]).astype(np.float32)


def _numeric(df: pd.DataFrame, cols: Iterable[str], path: Path, lines: np.ndarray) -> pd.DataFrame:
    """Columns as float; the first non-numeric or empty cell is reported as file:line."""
    out = {}
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy())
        if len(bad):
            i = int(bad[0])
            raise InputError(f"column {c!r}: non-numeric value {df[c].iloc[i]!r}", path, line=int(lines[i]))
        out[c] = v.to_numpy(np.float64)
    return pd.DataFrame(out)


def _data_lines(path: Path, n: int) -> np.ndarray:
    """File line number of each of the `n` data rows pandas read (it skips blank lines)."""
    with open(path, "rb") as f:
        nums = [i for i, ln in enumerate(f, start=1) if ln.strip()][1:]
    return np.asarray(nums[:n] + [0] * (n - len(nums)), np.int64)


def read_openface_csv(path: str | os.PathLike, threshold: float = 0.0, face_id: int | None = None,
                      pose_gaze: bool = False) -> OpenFaceVideo:
    """Per-frame AU arrays of one video (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("OpenFace CSV not found", p)
    try:
        header = [str(c).strip() for c in pd.read_csv(p, nrows=0, skipinitialspace=True).columns]
    except (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise InputError(f"not an OpenFace CSV ({type(e).__name__}: the file is empty or not text)", p,
                         line=1) from None
    if "frame" not in header and "face" in header:
        raise InputError("a per-image CSV (FaceLandmarkImg: 'face' column, no 'frame'); run OpenFace's "
                         "FeatureExtraction on the video to get one row per frame", p, line=1)
    need = ["frame", *R_COLS, *C_COLS] + (list(POSE_GAZE_COLS) if pose_gaze else [])
    missing = [c for c in need if c not in header]
    if not ("success" in header or "confidence" in header):
        missing.insert(1, "success or confidence")
    if face_id is not None and "face_id" not in header:
        missing.insert(1, "face_id (asked for one face)")
    if missing:
        hint = " (run FeatureExtraction with -aus, or with no output flags)" if set(missing) & set(R_COLS + C_COLS) \
            else " (run FeatureExtraction with -pose -gaze)" if set(missing) & set(POSE_GAZE_COLS) else ""
        raise InputError(f"missing OpenFace column(s): {', '.join(missing)}{hint}", p, line=1)
    use = need + [c for c in OPTIONAL_COLS if c in header]
    try:
        raw = pd.read_csv(p, skipinitialspace=True, usecols=lambda c: str(c).strip() in use, dtype=str,
                          keep_default_na=False)
    except pd.errors.ParserError as e:
        raise InputError(f"malformed CSV: {e}", p) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.loc[:, ~raw.columns.duplicated()]
    if len(raw) == 0:
        raise InputError("no data rows (header only): OpenFace found no frames in this video", p, line=2)
    df = _numeric(raw, [c for c in use if c in raw.columns], p, _data_lines(p, len(raw)))
    frame = df["frame"].to_numpy()
    if np.any(frame < 1) or np.any(frame != np.round(frame)):
        i = int(np.flatnonzero((frame < 1) | (frame != np.round(frame)))[0])
        raise InputError(f"frame must be a 1-based integer, got {frame[i]}", p, line=int(_data_lines(p, i + 1)[i]))
    conf = df["confidence"] if "confidence" in df else pd.Series(1.0, index=df.index)
    if face_id is not None:
        df, conf = df[df["face_id"] == face_id], conf[df["face_id"] == face_id]
    ok = df["success"] >= 0.5 if "success" in df else pd.Series(True, index=df.index)
    present = ok & (conf >= threshold)
    # one row per frame: the present, most confident face first (stable: ties keep the file's order)
    df = (df.assign(_present=present, _conf=conf)
          .sort_values(["frame", "_present", "_conf"], ascending=[True, False, False], kind="stable")
          .drop_duplicates("frame"))
    ts = df["timestamp"].to_numpy(np.float64) if "timestamp" in df else np.full(len(df), np.nan)
    return OpenFaceVideo(frame=df["frame"].to_numpy(np.int64), face=df["_present"].to_numpy(bool),
                         au_r=df[list(R_COLS)].to_numpy(np.float32), au_c=df[list(C_COLS)].to_numpy(np.float32),
                         confidence=df["_conf"].to_numpy(np.float32), timestamp=ts,
                         pose_gaze=df[list(POSE_GAZE_COLS)].to_numpy(np.float32) if pose_gaze else None)


def openface_info(threshold: float = 0.0, name: str = NAME, pose_gaze: bool = False) -> ExtractorInfo:
    """Provenance of the imported group (or, with `pose_gaze`, of its pose/gaze companion group); the face
    threshold is part of it (it changes the face mask)."""
    cols = POSE_GAZE_COLS if pose_gaze else R_COLS + C_COLS
    return ExtractorInfo(name=name + POSE_GAZE_SUFFIX if pose_gaze else name, checkpoint_sha256="", input_size=0,
                         normalization={"source": "OpenFace 2.x FeatureExtraction CSV",
                                        "face": f"success == 1 and confidence >= {threshold:g}"},
                         outputs={"embedding": len(cols)}, embedding_dtype="float32",
                         extra={"columns": list(cols)})


def write_openface(writer, video: str, data: OpenFaceVideo, pose_gaze_writer=None) -> None:
    """Commit one video's AUs (and pose/gaze) through store writers (`FeatureStore.writer(openface_info(...))`)."""
    if writer is not None:
        writer.write_video(video, frame=data.frame, face=data.face, embedding=data.embedding)
    if pose_gaze_writer is not None:
        pose_gaze_writer.write_video(video, frame=data.frame, face=data.face, embedding=data.pose_gaze)


def import_openface(csvs: Iterable[str | os.PathLike], store_path: str | os.PathLike, threshold: float = 0.0,
                    name: str = NAME, pose_gaze: bool = False, face_id: int | None = None) -> int:
    """Import CSVs into the store (video = file stem); videos already there are skipped. Returns #written.

    Every CSV is read (and checked) before the store is opened, so a bad file leaves the cache untouched."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold is a confidence in [0, 1], got {threshold:g}")
    csvs = [Path(c) for c in csvs]
    stems = [c.stem for c in csvs]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(f"two CSVs give the same video name {dup[0]!r} (video = file stem)",
                         next(c for c in csvs if c.stem == dup[0]))
    data = [read_openface_csv(c, threshold, face_id=face_id, pose_gaze=pose_gaze) for c in csvs]
    with FeatureStore(store_path, mode="a") as store:
        w = store.writer(openface_info(threshold, name))
        wp = store.writer(openface_info(threshold, name, pose_gaze=True)) if pose_gaze else None
        todo = [(c, d) for c, d in zip(csvs, data)
                if not w.has_video(c.stem) or (wp is not None and not wp.has_video(c.stem))]
        for c, d in todo:
            write_openface(None if w.has_video(c.stem) else w, c.stem, d,
                           None if wp is None or wp.has_video(c.stem) else wp)
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from features.cli import add_verbose, error_line, setup_console
    from features.cliargs import integer, number
    ap = argparse.ArgumentParser(prog="python -m extract openface",
                                 description="Import OpenFace 2.x FeatureExtraction CSVs into the feature store")
    ap.add_argument("csv", nargs="+", help="CSV files, or folders of them")
    ap.add_argument("--out", required=True, help="the .h5 feature cache")
    ap.add_argument("--threshold", type=number(0.0, 1.0), default=0.0,
                    help="minimum confidence of a present face, in [0, 1]")
    ap.add_argument("--face-id", type=integer(0), default=None,
                    help="FaceLandmarkVidMulti CSVs: keep this face_id (default: the most confident face per frame)")
    ap.add_argument("--pose-gaze", action="store_true",
                    help=f"also import head pose and gaze angles into group <name>{POSE_GAZE_SUFFIX} "
                         f"({', '.join(POSE_GAZE_COLS)})")
    add_verbose(ap)
    a = ap.parse_args(argv)
    setup_console(a.verbose)
    try:
        missing = [c for c in a.csv if not Path(c).exists()]
        if missing:
            raise InputError("no such file or folder", missing[0])
        csvs = [c for p in map(Path, a.csv) for c in (sorted(p.glob("*.csv")) if p.is_dir() else [p])]
        if not csvs:
            raise InputError("no *.csv files found", a.csv[0])
        n = import_openface(csvs, a.out, a.threshold, pose_gaze=a.pose_gaze, face_id=a.face_id)
    except (InputError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    print(f"imported {n} video(s) into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
