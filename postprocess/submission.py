"""ABAW-5/6 challenge files: read the organisers' sample list, write one task's submission, validate one.

Sample list: optionally a header line starting with `image_location` (possibly followed by label names), then
one row per frame `video/00001.jpg` (anything after the first comma is ignored). Submission: header
`image_location,` + the task's label header, then one line per sample row in the same order: EXPR the argmax
class (int 0-7), VA two floats in [-1, 1], AU twelve 0/1 values. Frames that have no score (no face crop, or
never scored) are filled from their video's neighbours (`extend_to_samples`).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import InputError
from features.tasks import Task, get_task

from .gaps import extend_to_samples

_ROW = re.compile(r"^(?P<video>.+)/(?P<frame>\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


@dataclass
class SampleList:
    path: str
    image_location: np.ndarray   # (M,) str, as written in the list
    video: np.ndarray            # (M,) str
    frame: np.ndarray            # (M,) int64
    first_line: int              # file line number of the first row (1-based)

    def __len__(self) -> int:
        return len(self.image_location)


def read_sample_list(path: str | os.PathLike) -> SampleList:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("sample list not found", path)
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    first = 1 if lines and lines[0].strip().lower().startswith("image_location") else 0
    locs, vids, frames = [], [], []
    for i in range(first, len(lines)):
        loc = lines[i].split(",", 1)[0].strip()
        if not loc:
            if lines[i].strip():
                raise InputError("empty image location", path, i + 1)
            continue
        m = _ROW.match(loc)
        if m is None:
            raise InputError(f"expected video/<frame>.jpg, got {loc!r}", path, i + 1)
        locs.append(loc)
        vids.append(m["video"])
        frames.append(int(m["frame"]))
    if not locs:
        raise InputError("sample list has no rows", path)
    return SampleList(path, np.array(locs), np.array(vids), np.array(frames, np.int64), first + 1)


def _as_samples(samples) -> SampleList:
    return samples if isinstance(samples, SampleList) else read_sample_list(samples)


def header(task: Task) -> str:
    return "image_location," + task.header


def write_submission(path: str | os.PathLike, task: Task | str, samples: SampleList | str, video: np.ndarray,
                     frame: np.ndarray, scores: np.ndarray, face: np.ndarray | None = None,
                     thresholds: np.ndarray | float | None = None, overwrite: bool = False) -> int:
    """Write the challenge file for `samples` from per-frame scores (already smoothed); returns rows written."""
    task = get_task(task)
    samples = _as_samples(samples)
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise InputError("output exists; choose another name or allow overwriting", path)
    s = extend_to_samples(video, frame, scores, samples.video, samples.frame, face)
    if s.ndim == 1 or s.shape[1] != task.n_outputs:
        raise InputError(f"{task.name}: scores need {task.n_outputs} columns")
    pred = task.decide(s, thresholds)
    pred = pred.astype(np.int64) if task.kind != "regression" else pred
    df = pd.DataFrame(pred.reshape(len(s), -1))
    df.insert(0, "image_location", samples.image_location)
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(header(task) + "\n")       # EXPR: the whole class header, one value per row (ABAW format)
        df.to_csv(f, index=False, header=False, float_format="%.6f", lineterminator="\n")
    os.replace(tmp, path)
    return len(df)


@dataclass
class SubmissionReport:
    path: str
    task: str
    n_rows: int
    n_expected: int
    problems: list[tuple[int, str]] = field(default_factory=list)   # (line, message)
    n_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def __str__(self) -> str:
        head = (f"{self.path}: {self.task} submission, {self.n_rows} rows for {self.n_expected} samples: "
                + ("OK" if self.ok else f"{self.n_problems} problem(s)"))
        lines = [f"  {self.path}:{ln}: {msg}" for ln, msg in self.problems]
        if self.n_problems > len(self.problems):
            lines.append(f"  ... and {self.n_problems - len(self.problems)} more")
        return "\n".join([head, *lines])


def _check_values(task: Task, vals: list[str]) -> str | None:
    if len(vals) != task.n_outputs and not (task.kind == "multiclass" and len(vals) == 1):
        want = 1 if task.kind == "multiclass" else task.n_outputs
        return f"expected {want} value(s), got {len(vals)}"
    if task.kind == "regression":
        try:
            x = [float(v) for v in vals]
        except ValueError:
            return f"not a number: {','.join(vals)!r}"
        if not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in x):
            return f"values outside [-1, 1]: {','.join(vals)}"
        return None
    ok = {str(i) for i in range(task.n_outputs)} if task.kind == "multiclass" else {"0", "1"}
    bad = [v for v in vals if v.strip() not in ok]
    if bad:
        what = "a class 0-7" if task.kind == "multiclass" else "0 or 1"
        return f"expected {what}, got {bad[0]!r}"
    return None


def validate_submission(path: str | os.PathLike, sample_list: SampleList | str, task: Task | str,
                        raise_first: bool = False, max_listed: int = 20) -> SubmissionReport:
    """Check header, row count, row order against the sample list and value ranges. Returns a report of all
    problems (the first `max_listed` spelled out); with raise_first, raise InputError at the first one."""
    task = get_task(task)
    samples = _as_samples(sample_list)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("submission not found", path)
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rep = SubmissionReport(path, task.name, max(len(lines) - 1, 0), len(samples))

    def problem(line: int, msg: str) -> None:
        if raise_first:
            raise InputError(msg, path, line)
        rep.n_problems += 1
        if len(rep.problems) < max_listed:
            rep.problems.append((line, msg))

    want = header(task)
    if not lines:
        problem(1, "empty file")
        return rep
    if lines[0].replace(" ", "") != want:
        problem(1, f"header should be {want!r}, got {lines[0][:80]!r}")
    for i, text in enumerate(lines[1:]):
        fields = text.split(",")
        line = i + 2
        if i < len(samples) and fields[0].strip() != samples.image_location[i]:
            problem(line, f"row {i + 1} is {fields[0]!r}, the sample list has "
                          f"{samples.image_location[i]!r} there (rows must follow the list's order)")
            continue
        msg = _check_values(task, fields[1:])
        if msg:
            problem(line, msg)
    if rep.n_rows != len(samples):
        problem(len(lines) + 1 if rep.n_rows < len(samples) else len(samples) + 2,
                f"{rep.n_rows} rows but the sample list has {len(samples)}")
    return rep
