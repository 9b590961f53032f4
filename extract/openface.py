"""Import OpenFace 2.x FeatureExtraction CSVs as an extractor group ``openface`` (35 action-unit values).

A CSV has columns ``frame, face_id, timestamp, confidence, success, ..., AU01_r ... AU45_r, AU01_c ... AU45_c``
(headers with or without a space after each comma); ``frame`` is 1-based. A frame has a face when
``success == 1`` and ``confidence >= threshold``. With several faces per frame (FaceLandmarkVidMulti) the most
confident successful one is kept, or the one with the given ``face_id``. In the store, embedding = the 17
intensities followed by the 18 presences (float32), one row per frame, video name = the CSV file's stem.
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
META_COLS = ("frame", "face_id", "timestamp", "confidence", "success")
NAME = "openface"


@dataclass
class OpenFaceVideo:
    frame: np.ndarray        # (n,) int64, 1-based
    face: np.ndarray         # (n,) bool
    au_r: np.ndarray         # (n, 17) float32 intensities 0..5
    au_c: np.ndarray         # (n, 18) float32 presences 0/1
    confidence: np.ndarray   # (n,) float32
    timestamp: np.ndarray    # (n,) float64 seconds

    @property
    def embedding(self) -> np.ndarray:
        return np.hstack([self.au_r, self.au_c]).astype(np.float32)


def _numeric(df: pd.DataFrame, cols: Iterable[str], path: Path) -> pd.DataFrame:
    """Columns as float; the first non-numeric or empty cell is reported as file:line."""
    out = {}
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy())
        if len(bad):
            i = int(bad[0])
            raise InputError(f"column {c!r}: non-numeric value {df[c].iloc[i]!r}", path, line=i + 2)
        out[c] = v.to_numpy(np.float64)
    return pd.DataFrame(out)


def read_openface_csv(path: str | os.PathLike, threshold: float = 0.0, face_id: int | None = None) -> OpenFaceVideo:
    """Per-frame AU arrays of one video (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("OpenFace CSV not found", p)
    try:
        header = [c.strip() for c in pd.read_csv(p, nrows=0, skipinitialspace=True).columns]
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"not an OpenFace CSV ({type(e).__name__})", p, line=1) from None
    need = META_COLS + R_COLS + C_COLS
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(f"missing OpenFace column(s): {', '.join(missing)}", p, line=1)
    try:
        raw = pd.read_csv(p, skipinitialspace=True, usecols=lambda c: c.strip() in need, dtype=str,
                          keep_default_na=False)
    except pd.errors.ParserError as e:
        raise InputError(f"malformed CSV: {e}", p) from None
    raw.columns = [c.strip() for c in raw.columns]
    df = _numeric(raw, need, p)
    frame = df["frame"].to_numpy()
    if np.any(frame < 1) or np.any(frame != np.round(frame)):
        i = int(np.flatnonzero((frame < 1) | (frame != np.round(frame)))[0])
        raise InputError(f"frame must be a 1-based integer, got {frame[i]}", p, line=i + 2)
    if face_id is not None:
        df = df[df["face_id"] == face_id]
    present = (df["success"] >= 0.5) & (df["confidence"] >= threshold)
    # one row per frame: the present, most confident face first
    df = (df.assign(_present=present).sort_values(["frame", "_present", "confidence"], ascending=[True, False, False],
                                                  kind="stable").drop_duplicates("frame"))
    return OpenFaceVideo(frame=df["frame"].to_numpy(np.int64), face=df["_present"].to_numpy(bool),
                         au_r=df[list(R_COLS)].to_numpy(np.float32), au_c=df[list(C_COLS)].to_numpy(np.float32),
                         confidence=df["confidence"].to_numpy(np.float32),
                         timestamp=df["timestamp"].to_numpy(np.float64))


def openface_info(threshold: float = 0.0, name: str = NAME) -> ExtractorInfo:
    """Provenance of the imported group; the face threshold is part of it (it changes the face mask)."""
    return ExtractorInfo(name=name, checkpoint_sha256="", input_size=0,
                         normalization={"source": "OpenFace 2.x FeatureExtraction CSV",
                                        "face": f"success == 1 and confidence >= {threshold:g}"},
                         outputs={"embedding": len(R_COLS) + len(C_COLS)}, embedding_dtype="float32",
                         extra={"columns": list(R_COLS + C_COLS)})


def write_openface(writer, video: str, data: OpenFaceVideo) -> None:
    """Commit one video's AUs through a store writer (`FeatureStore.writer(openface_info(...))`)."""
    writer.write_video(video, frame=data.frame, face=data.face, embedding=data.embedding)


def import_openface(csvs: Iterable[str | os.PathLike], store_path: str | os.PathLike, threshold: float = 0.0,
                    name: str = NAME) -> int:
    """Import CSVs into the store (video = file stem); videos already there are skipped. Returns #written."""
    written = 0
    with FeatureStore(store_path, mode="a") as store:
        w = store.writer(openface_info(threshold, name))
        for c in csvs:
            video = Path(c).stem
            if not w.has_video(video):
                write_openface(w, video, read_openface_csv(c, threshold))
                written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m extract openface",
                                 description="Import OpenFace 2.x CSVs into the feature store")
    ap.add_argument("csv", nargs="+", help="CSV files, or folders of them")
    ap.add_argument("--out", required=True, help="the .h5 feature cache")
    ap.add_argument("--threshold", type=float, default=0.0, help="minimum confidence of a present face")
    a = ap.parse_args(argv)
    csvs = [c for p in map(Path, a.csv) for c in (sorted(p.glob("*.csv")) if p.is_dir() else [p])]
    try:
        if not csvs:
            raise InputError("no *.csv files found", a.csv[0])
        n = import_openface(csvs, a.out, a.threshold)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {n} video(s) into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
