"""Bad annotation files for `features.labels.load_labels` (per-task challenge folders and the MTL files), called
as a notebook would. Each case writes its few lines into a fresh folder."""
from __future__ import annotations

from pathlib import Path

from features.labels import load_labels
from features.tasks import AU, EXPR, VA

from . import Case, Result, api

MTL_HEADER = "image,valence,arousal,expression," + AU.header
MTL_ROW = "vid/{:05d}.jpg,0.5,-0.2,4,0,0,0,1,0,0,1,0,0,0,0,0"


def write(tmp: Path, task, text: str | bytes, split: str = "train", video: str = "vid") -> Path:
    d = tmp / task.folders[0] / {"train": "Train_Set", "val": "Validation_Set"}[split]
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{video}.txt"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def load(task, text: str | bytes, split: str = "train"):
    """A case that writes one annotation file and loads the task's split."""
    def run(tmp: Path, shared: Path) -> Result:
        write(tmp, task, text, split)
        return api(lambda: load_labels(tmp, task, split, progress=False))
    return run


def mtl(lines: list[str] | bytes, split: str = "train", folder: str = "MTL_Challenge"):
    def run(tmp: Path, shared: Path) -> Result:
        d = tmp / folder
        d.mkdir(parents=True, exist_ok=True)
        name = {"train": "train_set.txt", "val": "validation_set.txt"}[split]
        (d / name).write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
        return api(lambda: load_labels(tmp, "expr", split, progress=False))
    return run


def frames_are(expected: list[int]):
    """The frames loaded are the lines' positions (nothing shifted)."""
    def check(tmp: Path, shared: Path, res: Result) -> None:
        df = load_labels(tmp, "expr", "train", progress=False)
        assert df["frame"].tolist() == expected, df
    return check


def missing_split(tmp: Path, shared: Path) -> Result:
    write(tmp, VA, "valence,arousal\n0.1,0.2\n", split="train")
    return api(lambda: load_labels(tmp, "va", "val", progress=False))


def mtl_given_as_a_file(tmp: Path, shared: Path) -> Result:
    p = tmp / "train_set.txt"
    p.write_text(MTL_HEADER + "\n" + MTL_ROW.format(1) + "\n")
    return api(lambda: load_labels(p, "expr", "train", progress=False))


CASES = [
    Case("load_labels", "wrong header", load(VA, "arousal,valence\n0.1,0.2\n"),
         expect="vid.txt:1: header 'arousal,valence' is not the VA header"),
    Case("load_labels", "wrong column count", load(VA, "valence,arousal\n0.1,0.2\n0.3\n"),
         expect="vid.txt:3: expected 2 comma-separated values, got 1"),
    Case("load_labels", "value out of range", load(VA, "valence,arousal\n0.1,0.2\n1.5,0\n"),
         expect="vid.txt:3: values must lie in [-1, 1]"),
    Case("load_labels", "EXPR class out of range", load(EXPR, EXPR.header + "\n3\n8\n"),
         expect="vid.txt:3: values must be integers 0..7"),
    Case("load_labels", "non-numeric value", load(AU, AU.header + "\n" + ",".join(["0"] * 11) + ",x\n"),
         expect="vid.txt:2: not a number: 'x'"),
    Case("load_labels", "not UTF-8", load(EXPR, (EXPR.header + "\n1\n2\n").encode() + b"\xff\xfe3\n"),
         expect="vid.txt:4: annotation file is not UTF-8 text (byte 0xff)", defect="traceback"),
    Case("load_labels", "UTF-8 byte-order mark before the header (accepted)",
         load(EXPR, "\ufeff" + EXPR.header + "\n1\n2\n"), expect=None, check=frames_are([1, 2]),
         defect="misleading"),
    Case("load_labels", "empty line inside the file", load(EXPR, EXPR.header + "\n1\n\n2\n"),
         expect="vid.txt:3: blank line inside the annotations", defect="silent"),
    Case("load_labels", "whitespace-only line inside the file", load(EXPR, EXPR.header + "\n1\n  \n2\n"),
         expect="vid.txt:3: blank line inside the annotations", defect="misleading"),
    Case("load_labels", "trailing blank lines (accepted)", load(EXPR, EXPR.header + "\n1\n2\n\n \n"),
         expect=None, check=frames_are([1, 2])),
    Case("load_labels", "empty file", load(EXPR, ""), expect="vid.txt:1: empty annotation file"),
    Case("load_labels", "missing split folder", missing_split,
         expect="no VA annotations: expected folder VA_Estimation_Challenge/Validation_Set"),
    Case("load_labels", "MTL: wrong column count",
         mtl([MTL_HEADER, MTL_ROW.format(1), MTL_ROW.format(2) + ",1"]),
         expect="train_set.txt:3: expected 16 comma-separated values, got 17"),
    Case("load_labels", "MTL: image location not video/00001.jpg",
         mtl([MTL_HEADER, MTL_ROW.format(1).replace("vid/00001.jpg", "00001.jpg")]),
         expect="train_set.txt:2: image location must look like video/00001.jpg"),
    Case("load_labels", "MTL: expression out of range",
         mtl([MTL_HEADER, MTL_ROW.format(1), MTL_ROW.format(2).replace(",4,", ",9,")]),
         expect="train_set.txt:3: values must be integers 0..7"),
    Case("load_labels", "MTL: a frame listed twice", mtl([MTL_HEADER, MTL_ROW.format(1), MTL_ROW.format(1)]),
         expect="train_set.txt:3: frame 'vid/00001.jpg' is listed twice", defect="silent"),
    Case("load_labels", "MTL: not UTF-8",
         mtl((MTL_HEADER + "\n" + MTL_ROW.format(1) + "\n").encode().replace(b"vid/", b"v\xe9d/")),
         expect="train_set.txt:2: MTL file is not UTF-8 text", defect="traceback"),
    Case("load_labels", "MTL: byte-order mark and a blank line (accepted)",
         mtl(["\ufeff" + MTL_HEADER, MTL_ROW.format(1), "", MTL_ROW.format(3)]), expect=None,
         check=frames_are([1, 3])),
    Case("load_labels", "MTL: header with missing columns", mtl(["image,valence,arousal", MTL_ROW.format(1)]),
         expect="train_set.txt:1: MTL header must have 16 columns"),
    Case("load_labels", "MTL file given instead of its folder", mtl_given_as_a_file,
         expect="must be a folder"),
]
