"""Bad input to `python -m postprocess sweep|submit|validate`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from postprocess.cli import main

from . import Case, cli


def _shared(shared: Path) -> Path:
    """Once per session: an EXPR run (scores.h5 with val + test, postprocess.json), its sample list and a valid
    submission; cases copy what they break."""
    d = shared / "postprocess"
    if (d / "ok.txt").exists():
        return d
    from features.tasks import EXPR
    from postprocess.scores import save_scores
    rng = np.random.default_rng(0)
    video = np.repeat(["v0", "v1"], [30, 20])
    frame = np.r_[np.arange(1, 31), np.arange(1, 21)]
    s = rng.dirichlet(np.ones(8), len(video)).astype(np.float32)
    y = s.argmax(1)
    run = d / "run"
    run.mkdir(parents=True)
    save_scores(run / "scores.h5", "val", video, frame, s, y=y, attrs={"task": "expr"})
    save_scores(run / "scores.h5", "test", video, frame, s, attrs={"task": "expr"})
    (d / "samples.txt").write_text("image_location\n" + "".join(f"{v}/{f:05d}.jpg\n" for v, f in zip(video, frame)))
    assert main(["sweep", "--run", str(run), "--k", "0:3", "--cv", "0", "--timelines", "0"]) == 0
    assert main(["submit", "--run", str(run), "--samples", str(d / "samples.txt"), "--out", str(d / "ok.txt")]) == 0
    return d


def _broken(tmp: Path, shared: Path, edit) -> Path:
    """The valid submission with its lines edited by `edit(lines) -> lines`."""
    lines = (_shared(shared) / "ok.txt").read_text().splitlines()
    out = tmp / "sub.txt"
    out.write_text("\n".join(edit(lines)) + "\n")
    return out


def _validate(edit):
    return lambda tmp, shared: cli(main, ["validate", _broken(tmp, shared, edit), "--samples",
                                          _shared(shared) / "samples.txt", "--task", "expr"])


def _one_problem(tmp, shared, res):
    """The report lists exactly one problem, with plain strings."""
    assert "1 problem(s)" in res.out, res.out
    assert "np.str_" not in res.out + res.err


def _run_copy(tmp: Path, shared: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(_shared(shared) / "run", run)
    return run


def _submit_with_config(cfg):
    def go(tmp, shared):
        run = _run_copy(tmp, shared)
        (run / "postprocess.json").write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
        return cli(main, ["submit", "--run", run, "--samples", _shared(shared) / "samples.txt", "--out",
                          tmp / "out.txt"])
    return go


def _no_output(tmp, shared, res):
    assert not (tmp / "out.txt").exists()


def _sweep(args):
    return lambda tmp, shared: cli(main, ["sweep", "--run", _run_copy(tmp, shared), *args])


def _json_kept(tmp, shared, res):
    """A refused sweep leaves the run's postprocess.json as it was."""
    assert (tmp / "run" / "postprocess.json").read_text() == \
        (_shared(shared) / "run" / "postprocess.json").read_text()


CASES = [
    Case("postprocess sweep", "run directory without scores.h5",
         lambda tmp, shared: cli(main, ["sweep", "--run", tmp]), expect="no scores.h5"),
    # validate: rows are matched to the sample list by location, one problem per fault
    Case("postprocess validate", "one row missing in the middle",
         _validate(lambda ls: ls[:5] + ls[6:]), expect="missing row for 'v0/00005.jpg'", check=_one_problem,
         defect="misleading"),
    Case("postprocess validate", "one extra row in the middle",
         _validate(lambda ls: ls[:5] + ["v0/00099.jpg,3"] + ls[5:]),
         expect="'v0/00099.jpg' is not in the sample list", check=_one_problem, defect="misleading"),
    Case("postprocess validate", "two rows swapped",
         _validate(lambda ls: ls[:3] + [ls[4], ls[3]] + ls[5:]),
         expect="rows are not in the sample list's order: 'v0/00003.jpg' comes after 'v0/00004.jpg'",
         check=_one_problem, defect="misleading"),
    Case("postprocess validate", "wrong header",
         _validate(lambda ls: ["image_location,Neutral,Anger"] + ls[1:]), expect="header should be",
         check=_one_problem),
    Case("postprocess validate", "header line missing",
         _validate(lambda ls: ls[1:]), expect="no header line", check=_one_problem, defect="misleading"),
    Case("postprocess validate", "a row with two values for EXPR",
         _validate(lambda ls: ls[:2] + [ls[2] + ",1"] + ls[3:]), expect="expected 1 value(s), got 2",
         check=_one_problem),
    Case("postprocess validate", "a non-numeric class",
         _validate(lambda ls: ls[:2] + [ls[2].split(",")[0] + ",happy"] + ls[3:]),
         expect="expected a class 0-7, got 'happy'", check=_one_problem),
    Case("postprocess validate", "EXPR class out of range",
         _validate(lambda ls: ls[:2] + [ls[2].split(",")[0] + ",8"] + ls[3:]),
         expect="expected a class 0-7, got '8'", check=_one_problem),
    Case("postprocess validate", "VA value not a number",
         lambda tmp, shared: cli(main, ["validate", _broken(tmp, shared, lambda ls: ["image_location,valence,arousal"]
                                                           + [ln.split(",")[0] + ",0.1,x" for ln in ls[1:2]]
                                                           + [ln.split(",")[0] + ",0.1,0.2" for ln in ls[2:]]),
                                        "--samples", _shared(shared) / "samples.txt", "--task", "va"]),
         expect="not a number: '0.1,x'", check=_one_problem),
    # submit
    Case("postprocess submit", "run without postprocess.json",
         lambda tmp, shared: cli(main, ["submit", "--run", (lambda r: (r / "postprocess.json").unlink() or r)(
             _run_copy(tmp, shared)), "--samples", _shared(shared) / "samples.txt", "--out", tmp / "out.txt"]),
         expect="no postprocess.json: run `python -m postprocess sweep", check=_no_output),
    Case("postprocess submit", "postprocess.json without k",
         _submit_with_config({"task": "expr", "stat": "mean"}), expect="no smoothing k in it", check=_no_output,
         defect="traceback"),
    Case("postprocess submit", "postprocess.json with a negative k",
         _submit_with_config({"task": "expr", "k": -3}), expect="k must be a non-negative integer",
         check=_no_output),
    Case("postprocess submit", "postprocess.json that is a JSON list",
         _submit_with_config("[1, 2]"), expect="expected a JSON object", check=_no_output, defect="traceback"),
    Case("postprocess submit", "postprocess.json for another task",
         _submit_with_config({"task": "au", "k": 2}), expect="is for task 'au'", check=_no_output),
    # sweep
    Case("postprocess sweep", "--k with a negative end", _sweep(["--k", "0:-3"]), expect="--k",
         check=_json_kept),
    Case("postprocess sweep", "--k not a number", _sweep(["--k", "0:ten"]), expect="'ten' is not an integer",
         check=_json_kept),
    Case("postprocess sweep", "--timelines neither a number nor all", _sweep(["--timelines", "some"]),
         expect="--timelines: 'some' is not an integer", check=_json_kept),
    Case("postprocess sweep", "split without labels", _sweep(["--split", "test"]),
         expect="split 'test' has no labels to sweep against", check=_json_kept),
    Case("postprocess sweep", "split not in scores.h5", _sweep(["--split", "train"]),
         expect="no split 'train' (has: test, val)", check=_json_kept),
]
