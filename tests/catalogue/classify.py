"""Bad input to `python -m classify`: options that would train nothing, missing or wrong inputs, run folders.

Every case runs on one small shared world (helpers.build_small_world: a cache with one extractor and per-task
labels, built once); the valid cases fit only the logits rule (scikit-learn, about a second), the refused ones
stop before any fit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classify.__main__ import main
from features.tasks import EXPR
from helpers import build_small_world, write_labels

from . import Case, Result, cli


def classify(tmp: Path, shared: Path, *args, labels: str = "labels", heads: str = "logits") -> Result:
    w = build_small_world(shared)
    argv = ["--cache", w / "features.h5", "--labels", w / labels, "--heads", heads, "--runs-dir", tmp / "runs",
            "--k", "0:4:2", *args]
    if "--task" not in args and "--no-task" not in args:
        argv = ["--task", "expr", *argv]
    return cli(main, [a for a in argv if a != "--no-task"])


def no_run_folder(task: str = "expr"):
    """Nothing written: no run folder, no `latest`."""
    def check(tmp: Path, shared: Path, res: Result) -> None:
        d = tmp / "runs" / task
        assert not d.exists() or not any(d.iterdir()), sorted(p.name for p in d.iterdir())
    return check


def bad_option(flag: str, value: str, expect: str, defect: str, task: str = "expr", heads: str = "mlp") -> Case:
    return Case("classify", f"{flag} {value}",
                lambda tmp, shared: classify(tmp, shared, "--task", task, flag, value, heads=heads),
                expect=expect, check=no_run_folder(task), defect=defect)


def reports_uncached_video(tmp: Path, shared: Path, res: Result) -> None:
    run = tmp / "runs" / "expr" / "latest"
    m = json.loads((run / "metrics.json").read_text())
    assert m["frames"]["train_missing_reasons"] == {"video not cached": 30}, m["frames"]
    assert "video not cached" in res.log


def existing_run_kept(tmp: Path, shared: Path, res: Result) -> None:
    d = tmp / "runs" / "expr" / "mine"
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt"] and (d / "keep.txt").read_text() == "mine"


def existing_run(tmp: Path, shared: Path) -> Result:
    d = tmp / "runs" / "expr" / "mine"
    d.mkdir(parents=True)
    (d / "keep.txt").write_text("mine")
    return classify(tmp, shared, "--name", "mine")


def not_utf8_labels(tmp: Path, shared: Path) -> Result:
    w = build_small_world(shared)
    lab = tmp / "labels"
    for split, video in (("train", "vid0000"), ("val", "vid0004")):
        write_labels(lab, EXPR, split, video, np.arange(20) % 8)
    p = lab / EXPR.folders[0] / "Train_Set" / "vid0000.txt"
    p.write_bytes(p.read_bytes().replace(b"\n3\n", b"\n3\xe9\n"))
    return cli(main, ["--task", "expr", "--cache", w / "features.h5", "--labels", lab, "--heads", "logits",
                      "--runs-dir", tmp / "runs"])


def nothing_outside(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "runs" / "elsewhere").exists(), "a run was written outside the task folder"


def runs_dir_is_a_file(tmp: Path, shared: Path) -> Result:
    (tmp / "runs").write_text("not a folder")
    return classify(tmp, shared)


CASES = [
    bad_option("--epochs", "0", "--epochs must be an integer >= 1", "silent"),
    bad_option("--epochs", "-3", "--epochs must be an integer >= 1", "silent"),
    bad_option("--hidden", "0", "--hidden must be an integer >= 1", "silent"),
    bad_option("--batch", "0", "--batch must be an integer >= 1", "traceback"),
    bad_option("--lr", "nan", "--lr must be a positive finite learning rate", "misleading"),
    bad_option("--lr", "-0.01", "--lr must be a positive finite learning rate", "silent"),
    bad_option("--lama-timeout", "0", "--lama-timeout must be an integer >= 1", "silent", heads="lama"),
    bad_option("--lama-timeout", "-1", "--lama-timeout must be an integer >= 1", "silent", heads="lama"),
    bad_option("--lama-max-rows", "-1", "--lama-max-rows must be an integer >= 0", "traceback", heads="lama"),
    bad_option("--cpus", "0", "--cpus must be an integer >= 1", "silent", heads="lama"),
    Case("classify", "unknown head name", lambda tmp, shared: classify(tmp, shared, heads="svm"),
         expect="unknown head 'svm'", check=no_run_folder()),
    Case("classify", "unknown feature set",
         lambda tmp, shared: classify(tmp, shared, "--features", "logits=enet/nothing"),
         expect="unknown feature set 'enet/nothing'", check=no_run_folder()),
    Case("classify", "--task missing", lambda tmp, shared: classify(tmp, shared, "--no-task"),
         expect="the following arguments are required: --task"),
    Case("classify", "labels folder missing", lambda tmp, shared: classify(tmp, shared, labels="nowhere"),
         expect="annotation root does not exist", check=no_run_folder()),
    Case("classify", "labels folder without the task's annotations",
         lambda tmp, shared: classify(tmp, shared, labels="labels/EXPR_Classification_Challenge"),
         expect="no EXPR annotations", check=no_run_folder()),
    Case("classify", "a labelled video that is not in the cache (trained on the rest, reported)",
         lambda tmp, shared: classify(tmp, shared, labels="labels_extra"), expect=None,
         check=reports_uncached_video),
    Case("classify", "--name of an existing run", existing_run, expect="run folder exists",
         check=existing_run_kept),
    Case("classify", "--name latest", lambda tmp, shared: classify(tmp, shared, "--name", "latest"),
         expect="give a plain folder name", check=no_run_folder(), defect="misleading"),
    Case("classify", "--name with a path", lambda tmp, shared: classify(tmp, shared, "--name", "../elsewhere"),
         expect="give a plain folder name", check=nothing_outside, defect="silent"),
    Case("classify", "--runs-dir is a file", runs_dir_is_a_file, expect="this is a file, not a folder",
         defect="traceback"),
    Case("classify", "--test file missing",
         lambda tmp, shared: classify(tmp, shared, "--test", tmp / "absent.txt"),
         expect="test list not found", check=no_run_folder()),
    Case("classify", "annotation file not UTF-8", not_utf8_labels, expect="vid0000.txt:5: annotation file is not UTF-8",
         check=no_run_folder(), defect="traceback"),
]
