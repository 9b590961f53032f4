"""Bad input to `python -m classify`: options that would train nothing, missing or wrong inputs, run folders.

Every case runs on one small shared world (a cache with one extractor and per-task labels, built once); the
valid cases fit only the logits rule (scikit-learn, about a second), the refused ones stop before any fit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classify.__main__ import main
from classify.rules import AFFECTNET8
from features.store import ExtractorInfo, FeatureStore
from features.synthetic import make_feature_data
from features.tasks import AU, EXPR, VA

from . import Case, Result, cli

N_VIDEOS, N_TRAIN = 6, 4


def write_labels(root: Path, task, split: str, video: str, rows) -> Path:
    d = root / task.folders[0] / {"train": "Train_Set", "val": "Validation_Set"}[split]
    d.mkdir(parents=True, exist_ok=True)
    lines = [task.header] + [",".join(str(v) for v in np.atleast_1d(r)) for r in rows]
    p = d / f"{video}.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def world(shared: Path) -> Path:
    """`shared/classify`: features.h5 (extractor enet: embedding 8, logits 8, va 2) and labels/ for the three
    tasks on 6 videos (4 train, 2 val), plus labels_extra/ whose train split also names a video with no
    features."""
    root = shared / "classify"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    d = make_feature_data(600, 8, N_VIDEOS, seed=1, noise=1.0)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (len(d.X), 8)).astype(np.float32)
    logits[np.arange(len(d.X)), np.array([5, 0, 2, 3, 4, 6, 7, 1])[d.y_expr]] += 2.5
    info = ExtractorInfo("enet", "0" * 64, 224, {}, {"embedding": 8, "logits": 8, "va": 2},
                         extra={"class_names": list(AFFECTNET8)})
    with FeatureStore(root / "features.h5", "a") as s:
        w = s.writer(info)
        for i, name in enumerate(d.video_names):
            r = d.video == i
            split = "train" if i < N_TRAIN else "val"
            for labels in ("labels", "labels_extra"):
                for task, y in ((EXPR, d.y_expr), (VA, d.y_va), (AU, d.y_au)):
                    write_labels(root / labels, task, split, name, y[r])
            w.write_video(name, frame=d.frame[r].astype(np.int64), face=np.ones(r.sum(), bool),
                          embedding=d.X[r], logits=logits[r], va=d.y_va[r])
    write_labels(root / "labels_extra", EXPR, "train", "not_in_cache", np.arange(30) % 8)
    (root / "done").touch()
    return root


def classify(tmp: Path, shared: Path, *args, labels: str = "labels", heads: str = "logits") -> Result:
    w = world(shared)
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
    w = world(shared)
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
