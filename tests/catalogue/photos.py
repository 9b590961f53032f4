"""Bad input and edge cases of photo folders and face detection in `python -m extract run`
(`--layout images`, `--detect`, `--detector`, `--faces`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from extract.cli import main
from features.store import FeatureStore

from . import Case, Result, cli

CMD = "extract run (photos)"


def _photos(shared: Path) -> Path:
    """A flat folder: a 64x64 grey gradient photo and a flat colour photo (small, fast to extract)."""
    d = shared / "photos"
    if not d.exists():
        d.mkdir()
        Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(d / "gradient.png")
        Image.new("RGB", (40, 30), (120, 130, 140)).save(d / "flat.jpg")
    return d


def _run(tmp: Path, data: Path, *extra) -> Result:
    return cli(main, ["run", "--data", data, "--out", tmp / "c.h5", "--quiet", "--workers", "0", "--extractors",
                      "fer", *extra])


def _faces_all_on_folders(tmp: Path, shared: Path) -> Result:
    (tmp / "v" / "clip").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp / "v" / "clip" / "a.png")
    return _run(tmp, tmp / "v", "--faces", "all")


def _nothing_written(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "c.h5").exists()


def _folders_on_flat(tmp: Path, shared: Path) -> Result:
    return _run(tmp, _photos(shared), "--layout", "folders")


def _same_stem(tmp: Path, shared: Path) -> Result:
    (tmp / "p").mkdir()
    Image.new("RGB", (32, 32)).save(tmp / "p" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp / "p" / "a.jpg")
    return _run(tmp, tmp / "p")


def _mtcnn_without_weights(tmp: Path, shared: Path) -> Result:
    import os
    old = os.environ.get("AFFECT_FEATURES_HOME")
    os.environ["AFFECT_FEATURES_HOME"] = str(tmp / "empty")
    try:
        return _run(tmp, _photos(shared), "--detector", "mtcnn")
    finally:
        if old is None:
            os.environ.pop("AFFECT_FEATURES_HOME")
        else:
            os.environ["AFFECT_FEATURES_HOME"] = old


def _faces_all_detect_off(tmp: Path, shared: Path) -> Result:
    return _run(tmp, _photos(shared), "--faces", "all", "--detect", "off")


def _empty_photo_folder(tmp: Path, shared: Path) -> Result:
    (tmp / "p").mkdir()
    (tmp / "p" / "notes.txt").write_text("no images here")
    return _run(tmp, tmp / "p", "--layout", "images")


def _flat_auto(tmp: Path, shared: Path) -> Result:
    return _run(tmp, _photos(shared), "--detector", "haar")


def _one_row_per_photo(tmp: Path, shared: Path, res: Result) -> None:
    idx = FeatureStore(tmp / "c.h5").read().index
    assert sorted(idx["video"].astype(str)) == ["flat", "gradient"], idx
    assert not idx["face"].any()          # neither photo holds a face: rows kept, marked face=False
    assert FeatureStore(tmp / "c.h5").info("fer").extra["source"]["layout"] == "images"


def _unreadable_photo(tmp: Path, shared: Path) -> Result:
    (tmp / "p").mkdir()
    Image.new("RGB", (32, 32)).save(tmp / "p" / "ok.png")
    (tmp / "p" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return _run(tmp, tmp / "p", "--detector", "haar")


def _broken_is_face_false(tmp: Path, shared: Path, res: Result) -> None:
    idx = FeatureStore(tmp / "c.h5").read().index
    rows = dict(zip(idx["video"].astype(str), zip(idx["frame"], idx["face"])))
    assert rows["broken"] == (1, False) and "ok" in rows, rows


CASES = [
    Case(CMD, "--faces all on a folder of frames", _faces_all_on_folders, "--faces all needs --layout images",
         check=_nothing_written),
    Case(CMD, "--faces all with --detect off", _faces_all_detect_off, "--faces all needs face detection",
         check=_nothing_written),
    Case(CMD, "--layout folders on a flat photo folder", _folders_on_flat, "use --layout images",
         defect="misleading"),
    Case(CMD, "two photos with one file stem", _same_stem, "two photos share the name 'a'",
         check=_nothing_written),
    Case(CMD, "--detector mtcnn without its weights", _mtcnn_without_weights, "MTCNN weights not found",
         check=_nothing_written),
    Case(CMD, "--layout images on a folder without images", _empty_photo_folder, "no images found"),
    # before: auto took a flat folder for --layout folders and answered "no videos found"
    Case(CMD, "flat photo folder, auto layout, no face in any photo", _flat_auto, None, check=_one_row_per_photo,
         defect="misleading"),
    Case(CMD, "photo folder with an unreadable photo", _unreadable_photo, None, check=_broken_is_face_false),
]
