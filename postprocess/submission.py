"""ABAW-5/6 challenge files: read the organisers' sample list, write one task's submission, validate one.

Sample list: optionally a header line starting with `image_location` (possibly followed by label names), then
one row per frame `video/00001.jpg` (anything after the first comma is ignored). Submission: header
`image_location,` + the task's label header, then one line per sample row in the same order: EXPR the argmax
class (int 0-7), VA two floats in [-1, 1], AU twelve 0/1 values. Frames that have no score (no face crop, or
never scored) are filled from their video's neighbours (`extend_to_samples`).
"""
from __future__ import annotations

import heapq
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.cliargs import INT32_MAX
from features.errors import InputError
from features.outputs import check_output, write_output
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
    line: np.ndarray | None = None   # (M,) int64, file line number of each row (1-based)

    def __len__(self) -> int:
        return len(self.image_location)


def read_sample_list(path: str | os.PathLike) -> SampleList:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("sample list not found", path)
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    first = 1 if lines and lines[0].strip().lower().startswith("image_location") else 0
    locs, vids, frames, line_no = [], [], [], []
    seen: dict[str, int] = {}
    for i in range(first, len(lines)):
        loc = lines[i].split(",", 1)[0].strip()
        if not loc:
            if lines[i].strip():
                raise InputError("empty image location", path, i + 1)
            continue
        m = _ROW.match(loc)
        if m is None:
            raise InputError(f"expected video/<frame>.jpg, got {loc!r}", path, i + 1)
        if loc in seen:     # a submission has one row per sample: a repeated row could never be matched
            raise InputError(f"{loc!r} again (first at line {seen[loc]}); each sample once", path, i + 1)
        seen[loc] = i + 1
        frame = int(m["frame"])
        if frame > INT32_MAX:
            raise InputError(f"frame number {frame} is above {INT32_MAX}, the largest a video has", path, i + 1)
        locs.append(loc)
        vids.append(m["video"])
        frames.append(frame)
        line_no.append(i + 1)
    if not locs:
        raise InputError("sample list has no rows", path)
    return SampleList(path, np.array(locs), np.array(vids), np.array(frames, np.int64), first + 1,
                      np.array(line_no, np.int64))


def check_sample_frames(samples: SampleList, ss) -> None:
    """Refuse, before a timeline is extended to it, a sample row whose frame lies far past its video in the
    scores `ss` (`postprocess.timeline.beyond_timeline`: past the larger of the video's last known frame and
    the rows the list gives it, plus FRAME_MARGIN frames). One line naming the sample list's line."""
    from .timeline import FRAME_MARGIN, beyond_timeline
    bad = beyond_timeline(ss, samples.video, samples.frame)
    if len(bad):
        i = int(bad[0])
        v = str(samples.video[i])
        last = int(ss.frame[np.flatnonzero(ss.video == v)[-1]])
        listed = int((samples.video == v).sum())
        line = int(samples.line[i]) if samples.line is not None else None
        raise InputError(f"frame {int(samples.frame[i])} of video {v!r} is far past the video: its last known "
                         f"frame is {last} and the list names {listed} of its frames; at most {FRAME_MARGIN} "
                         f"frames past the larger are taken ({len(bad)} such row(s))", samples.path, line)


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
    check_output(path, overwrite)
    s = extend_to_samples(video, frame, scores, samples.video, samples.frame, face)
    if s.ndim == 1 or s.shape[1] != task.n_outputs:
        raise InputError(f"{task.name}: scores need {task.n_outputs} columns")
    pred = task.decide(s, thresholds)
    pred = pred.astype(np.int64) if task.kind != "regression" else pred
    df = pd.DataFrame(pred.reshape(len(s), -1))
    df.insert(0, "image_location", samples.image_location)

    def write(f) -> None:
        f.write(header(task) + "\n")       # EXPR: the whole class header, one value per row (ABAW format)
        df.to_csv(f, index=False, header=False, float_format="%.6f", lineterminator="\n")
    write_output(path, write, force=overwrite, text=True)
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


class _Problems:
    """The earliest `keep` problems by line (a max-heap) and a count of all, so a file broken on every row costs
    no memory per row."""

    def __init__(self, keep: int):
        self.keep = max(keep, 1)
        self.heap: list[tuple[int, int, str]] = []
        self.count = 0

    def __call__(self, line: int, msg: str) -> None:
        self.count += 1
        item = (-line, -self.count, msg)
        if len(self.heap) < self.keep:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def found(self) -> list[tuple[int, str]]:
        """(line, message) in line order, ties in the order they were found."""
        return [(-ln, msg) for ln, _, msg in sorted(self.heap, reverse=True)]


def _submission_lines(path: str) -> list[str]:
    """The file's lines without a BOM or trailing blank lines (a final newline is no problem)."""
    if not os.path.exists(path):
        raise InputError("submission not found", path)
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _check_header(lines: list[str], want: str, where: dict[str, int], problem: _Problems) -> int:
    """Check the header line; returns the index of the first data line (0 when the header is missing and the
    first line is already a sample's row, so that row is still checked)."""
    if not lines:
        problem(1, "empty file")
    elif lines[0].replace(" ", "") != want:
        if lines[0].split(",")[0].strip() in where:
            problem(1, f"no header line: the file should start with {want!r}")
            return 0
        problem(1, f"header should be {want!r}, got {lines[0][:80]!r}")
    return 1


def _check_rows(task: Task, lines: list[str], first_data: int, where: dict[str, int],
                problem: _Problems) -> tuple[dict[str, int], list[tuple[int, int, str]]]:
    """Check each row's location (known, once) and values; returns the line of each location seen and
    (sample index, line, location) of the rows in the list, for the missing and order checks."""
    seen: dict[str, int] = {}
    order: list[tuple[int, int, str]] = []
    for i in range(first_data, len(lines)):
        line = i + 1
        fields = lines[i].split(",")
        loc = fields[0].strip()
        if loc in seen:
            problem(line, f"{loc!r} again (first at line {seen[loc]}); each sample once")
            continue
        seen[loc] = line
        if loc not in where:
            problem(line, f"{loc!r} is not in the sample list")
        else:
            order.append((where[loc], line, loc))
        msg = _check_values(task, fields[1:])
        if msg:
            problem(line, msg)
    return seen, order


def _check_missing(expected: list[str], seen: dict[str, int], first_data: int, problem: _Problems) -> None:
    """One problem per run of consecutive samples with no row, so a cut-off file is one line, not thousands."""
    missing = np.flatnonzero([loc not in seen for loc in expected])
    if len(missing):
        runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
        for r in runs:
            a, b = int(r[0]), int(r[-1])
            what = (f"missing row for {expected[a]!r} (sample list row {a + 1})" if a == b else
                    f"missing rows for {expected[a]!r} .. {expected[b]!r} ({b - a + 1} rows, sample list rows "
                    f"{a + 1}-{b + 1})")
            problem(a + first_data + 1, what)


def _check_order(order: list[tuple[int, int, str]], problem: _Problems) -> None:
    """One problem for rows out of the list's order (the challenge wants the list's order), at the first place."""
    idx = np.array([o[0] for o in order], np.int64)
    back = np.flatnonzero(np.diff(idx) < 0) if len(idx) > 1 else np.zeros(0, np.int64)
    if len(back):
        _, line, loc = order[int(back[0]) + 1]
        prev = order[int(back[0])][2]
        problem(line, f"rows are not in the sample list's order: {loc!r} comes after {prev!r} here, before it "
                      f"in the list ({len(back)} such place(s)); write rows in the list's order")


def validate_submission(path: str | os.PathLike, sample_list: SampleList | str, task: Task | str,
                        raise_first: bool = False, max_listed: int = 20) -> SubmissionReport:
    """Check header, rows against the sample list and value ranges. Rows are matched to the list by image
    location, so a missing, extra or duplicated row is one problem, not a shifted comparison of every row after
    it; a file whose rows are all there but in another order is one problem too (the challenge wants the list's
    order). Returns a report of all problems (the first `max_listed` spelled out, in line order); with
    raise_first, raise InputError at the first one."""
    task = get_task(task)
    samples = _as_samples(sample_list)
    path = os.fspath(path)
    lines = _submission_lines(path)
    problem = _Problems(max_listed)
    expected = [str(x) for x in samples.image_location]
    where = {loc: i for i, loc in enumerate(expected)}
    first_data = _check_header(lines, header(task), where, problem)
    seen, order = _check_rows(task, lines, first_data, where, problem)
    _check_missing(expected, seen, first_data, problem)
    _check_order(order, problem)
    found = problem.found()
    if raise_first and found:
        raise InputError(found[0][1], path, found[0][0])
    n_rows = len(lines) - first_data
    return SubmissionReport(path, task.name, max(n_rows, 0), len(samples), found[:max_listed], problem.count)
