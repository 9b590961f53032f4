"""The run folder: a failed run never moves `latest` and is marked failed; options are checked before any
folder exists; the MTL annotation files give the same training rows as the per-task folders."""
import json
import logging

import numpy as np
import pytest

from classify.__main__ import main
from classify.rules import LogitsRule
from classify.run import check_options, load_split, run
from features.errors import InputError
from features.labels import load_labels
from features.store import ExtractorInfo, FeatureStore
from features.synthetic import make_affwild
from features.tasks import AU, EXPR, VA

def expr_run(small_world, runs, name, **kw):
    return run("expr", small_world / "features.h5", small_world / "labels", ["logits"], name=name, runs_dir=runs, ks=[0, 2], **kw)


@pytest.mark.parametrize("where", ["fit", "save", "interrupt"])
def test_failure_mid_run_leaves_latest_and_marks_the_folder(small_world, tmp_path, monkeypatch, where):
    runs = tmp_path / "runs"
    first = expr_run(small_world, runs, "first")
    latest = runs / "expr" / "latest"
    assert latest.resolve() == first.resolve()

    err = KeyboardInterrupt if where == "interrupt" else RuntimeError

    def boom(self, *a, **k):
        raise err("boom")
    monkeypatch.setattr(LogitsRule, "save" if where == "save" else "fit", boom)
    with pytest.raises(err, match="boom"):
        expr_run(small_world, runs, "second")
    assert latest.resolve() == first.resolve()                      # latest not moved
    assert not (runs / "expr" / "second").exists()
    failed = runs / "expr" / "second.failed"
    assert "boom" in (failed / "FAILED.txt").read_text()
    assert sorted(p.name for p in (runs / "expr").iterdir()) == ["first", "latest", "second.failed"]
    # the same name again: the run goes through, the old failed folder is replaced when it fails again
    monkeypatch.undo()
    assert expr_run(small_world, runs, "second") == runs / "expr" / "second" and latest.resolve().name == "second"


@pytest.mark.parametrize("opt, value", [("epochs", 0), ("epochs", -1), ("hidden", 0), ("batch", 0),
                                        ("lama_timeout", 0), ("lama_timeout", -1), ("lama_max_rows", -1),
                                        ("cpus", 0), ("seed", -1), ("epochs", 2.5), ("batch", True)])
def test_bad_integer_options_refused_before_any_folder(small_world, tmp_path, opt, value):
    with pytest.raises(InputError, match=f"--{opt.replace('_', '-')} must be an integer >= "):
        expr_run(small_world, tmp_path / "runs", None, opts={opt: value})
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -1e-3, "0.1"])
def test_bad_learning_rate(lr):
    with pytest.raises(InputError, match="--lr must be a positive finite learning rate"):
        check_options({"lr": lr})


def test_good_options_pass():
    check_options({"epochs": 1, "hidden": 4, "batch": 1, "lr": 1e-4, "lama_timeout": 1, "lama_max_rows": 0,
                   "cpus": 1, "seed": 0, "epochs_none": None})
    check_options({"epochs": None, "lr": None})


def test_cli_batch_zero_is_one_line_and_writes_nothing(small_world, tmp_path, capsys):
    rc = main(["--task", "expr", "--cache", str(small_world / "features.h5"), "--labels", str(small_world / "labels"),
               "--heads", "mlp", "--runs-dir", str(tmp_path / "runs"), "--batch", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --batch must be an integer >= 1")
    assert not (tmp_path / "runs").exists()


# -- the MTL annotation files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def affwild(tmp_path_factory):
    """A synthetic Aff-Wild2 folder (per-task folders and MTL files) and a cache with a row for every crop."""
    root = tmp_path_factory.mktemp("affwild")
    info = make_affwild(root / "data", n_train=3, n_val=2, n_frames=30, size=32, seed=0)
    rng = np.random.default_rng(1)
    ext = ExtractorInfo("m", "0" * 64, 224, {}, {"embedding": 6, "logits": 8, "va": 2})
    with FeatureStore(root / "c.h5", "a") as s:
        wr = s.writer(ext)
        for v in info.splits["train"] + info.splits["val"]:
            n = len(info.controls[v])
            frames = np.setdiff1d(np.arange(1, n + 1), info.missing_crops[v])
            wr.write_video(v, frame=frames, face=rng.random(len(frames)) > 0.1,
                           embedding=rng.normal(size=(len(frames), 6)).astype(np.float32),
                           logits=rng.normal(size=(len(frames), 8)).astype(np.float32),
                           va=rng.uniform(-1, 1, (len(frames), 2)).astype(np.float32))
    return info, root / "c.h5"


@pytest.mark.parametrize("task", [VA, EXPR, AU])
def test_mtl_files_give_the_same_rows_as_the_task_folders(affwild, task):
    info, cache = affwild
    store = FeatureStore(cache)
    sets = ["m/embedding", "m/logits+va"]
    for split in ("train", "val"):
        per_task = load_split(store, info.root, task, split, sets)
        from_mtl = load_split(store, info.root / "MTL_Challenge", task, split, sets)
        assert from_mtl.source.endswith(("train_set.txt", "validation_set.txt"))
        assert per_task.source.endswith(("Train_Set", "Validation_Set"))
        assert len(per_task.y) > 0
        np.testing.assert_array_equal(from_mtl.video, per_task.video)
        np.testing.assert_array_equal(from_mtl.frame, per_task.frame)
        np.testing.assert_array_equal(from_mtl.y, per_task.y)
        for s in sets:
            np.testing.assert_array_equal(from_mtl.X[s], per_task.X[s])
        # the MTL file has no row for a frame without a crop; the per-task file does (counted as not cached)
        assert per_task.n_labelled - from_mtl.n_labelled == per_task.missing_reasons.get("frame not cached", 0)


def test_mtl_labels_match_the_annotations(affwild):
    info, _ = affwild
    for task in (VA, EXPR, AU):
        a = load_labels(info.root, task, "train", progress=False)
        b = load_labels(info.root / "MTL_Challenge", task, "train", progress=False)
        # identical once the per-task frames without a crop (absent from MTL) are left out
        crops = a.apply(lambda r: r["frame"] not in set(info.missing_crops[r["video"]].tolist()), axis=1)
        a = a[crops].reset_index(drop=True)
        assert a.equals(b.reset_index(drop=True)), (task.name, a.head(), b.head())
    # a video not annotated for AU has only invalid AU rows in the MTL file: absent in both
    no_au = info.splits["train"][0]
    assert no_au not in set(load_labels(info.root / "MTL_Challenge", AU, "train", progress=False)["video"])


def test_classify_cli_on_the_mtl_folder(affwild, tmp_path, caplog):
    info, cache = affwild
    caplog.set_level(logging.INFO)
    rc = main(["--task", "expr", "--cache", str(cache), "--labels", str(info.root / "MTL_Challenge"),
               "--heads", "logits", "--runs-dir", str(tmp_path / "runs"), "--name", "mtl", "--k", "0"])
    out = caplog.text                                   # the log lines (stderr)
    assert rc == 0 and "(labels: " in out and "train_set.txt" in out
    m = json.loads((tmp_path / "runs" / "expr" / "mtl" / "metrics.json").read_text())
    per_task = load_split(FeatureStore(cache), info.root, EXPR, "train", ["m/logits"])
    assert m["frames"]["train"] == len(per_task.y)


def test_task_folder_wins_over_mtl_and_mtl_is_found_under_the_root(affwild, tmp_path):
    info, _ = affwild
    assert load_labels(info.root, EXPR, "val", progress=False).attrs["source"].endswith("Validation_Set")
    # a root with only MTL_Challenge/: the MTL file is used
    import shutil
    shutil.copytree(info.root / "MTL_Challenge", tmp_path / "MTL_Challenge")
    df = load_labels(tmp_path, EXPR, "val", progress=False)
    assert df.attrs["source"].endswith("validation_set.txt") and len(df) > 0
    # two candidate files for one split: refused, naming both
    (tmp_path / "MTL_Challenge" / "train_set_old.txt").write_text("x")
    with pytest.raises(InputError, match="several MTL train files"):
        load_labels(tmp_path, EXPR, "train", progress=False)


def test_lama_stopped_at_its_limit_is_left_out_of_the_run(small_world, tmp_path, monkeypatch, caplog):
    from classify.lama import LamaHead, LamaTimeout

    def too_slow(self, *a, **k):
        raise LamaTimeout("LightAutoML did not finish within its 5 s limit; stopped after 15 s")
    monkeypatch.setattr(LamaHead, "fit", too_slow)
    caplog.set_level(logging.INFO)
    d = run("expr", small_world / "features.h5", small_world / "labels", ["logits", "lama", "blend"], name="r", runs_dir=tmp_path,
            ks=[0])
    logged = caplog.messages
    m = json.loads((d / "metrics.json").read_text())
    assert m["final"] == "logits" and "did not finish" in m["training"]["lama"]["left_out"]
    assert [r["method"] for r in m["heads"]] == ["logits"]
    assert any("lama left out: LightAutoML did not finish" in ln for ln in logged)
    with pytest.raises(InputError, match="no head was fitted: LightAutoML did not finish"):
        run("expr", small_world / "features.h5", small_world / "labels", ["lama"], name="only", runs_dir=tmp_path, ks=[0])
    assert (tmp_path / "expr" / "only.failed").is_dir() and (tmp_path / "expr" / "latest").resolve() == d
