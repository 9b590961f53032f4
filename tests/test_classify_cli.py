"""`python -m classify` end to end on a tiny HDF5 cache and Aff-Wild2-style labels written here."""
import json
import logging

import numpy as np
import pandas as pd
import pytest

from classify.__main__ import main, parse_k
from classify.base import load_head
from classify.featuresets import available, resolve
from classify.run import run
from features.errors import InputError
from features.store import ExtractorInfo, FeatureStore
from features.tasks import AU, EXPR
from postprocess.scores import load_scores
from postprocess.timeline import filled_scores

from helpers import write_labels


def test_cli_end_to_end_expr(enet_world, capsys, caplog):
    root, cache, labels = enet_world
    caplog.set_level(logging.INFO)
    rc = main(["--task", "expr", "--cache", str(cache), "--labels", str(labels), "--heads", "mlp,logits,blend",
               "--runs-dir", str(root / "runs"), "--name", "e2e", "--epochs", "5", "--k", "0:20:2",
               "--test", str(root / "test.txt")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    run_dir = root / "runs" / "expr" / "e2e"
    # progress lines per head with their time, and the frames without features reported (the log, on stderr)
    logged = caplog.text
    assert "8 of" in logged and "labelled frames have no features" in logged
    assert logged.count(" s]") >= 3 and "blend" in logged
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["frames"]["train_labelled_without_features"] == 8          # 5 not cached + 3 without a face
    assert m["frames"]["train_missing_reasons"] == {"frame not cached": 5, "no face": 3}
    assert m["final"] == "blend" and set(m["blend"]["weights"]) == {"mlp", "logits"}
    assert abs(sum(m["blend"]["weights"].values()) - 1) < 1e-6
    rows = {r["method"].split(" ")[0]: r for r in m["heads"]}
    assert rows["blend"]["metric_raw"] >= max(rows["mlp"]["metric_raw"], rows["logits"]["metric_raw"]) - 1e-4
    assert rows["mlp"]["metric_raw"] > 0.2                               # chance is about 0.12
    assert 0 <= m["summary"]["k"] <= 20
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["ensemble"]) == ["no", "no", "yes"]
    md = (run_dir / "results.md").read_text()
    assert "| Method | Features | Ensemble | P_EXPR (frames) | k | P_EXPR (smoothed) |" in md
    # scores file: validation with labels, each head, and the test split with face flags
    val = load_scores(run_dir / "scores.h5", "val")
    assert val.task == "expr" and set(val.heads) == {"mlp", "logits", "blend"} and val.y is not None
    np.testing.assert_allclose(val.scores, val.heads["blend"])
    valid = val.y != EXPR.invalid
    assert EXPR.score(val.y[valid], filled_scores(val)[valid]) == pytest.approx(rows["blend"]["metric_raw"], abs=1e-4)
    test = load_scores(run_dir / "scores.h5", "test")
    assert test.y is None and len(np.unique(test.video)) == 4 and test.face.all()
    # saved heads reload with identical predictions and refuse another task
    mlp = load_head(run_dir / "heads" / "mlp", task="expr")
    assert mlp.feature_set == "enet/embedding"
    X = FeatureStore(cache).read([str(test.video[0])], "enet").arrays["enet/embedding"]
    np.testing.assert_allclose(mlp.predict_proba(X.astype(np.float32)), test.heads["mlp"][:len(X)], rtol=1e-5)
    with pytest.raises(InputError, match="trained for task 'expr'"):
        load_head(run_dir / "heads" / "mlp", task="au")
    assert (root / "runs" / "expr" / "latest").resolve() == run_dir.resolve()
    # never overwrite a run
    rc = main(["--task", "expr", "--cache", str(cache), "--labels", str(labels), "--heads", "logits",
               "--runs-dir", str(root / "runs"), "--name", "e2e"])
    assert rc == 2 and "run folder exists" in capsys.readouterr().err


def test_va_rule_and_mlp_on_logits_plus_va_with_train_val(enet_world):
    root, cache, labels = enet_world
    d = run("va", cache, labels, ["mlp", "va_only", "blend"], ["mlp=enet/logits+va"], name="tv",
            runs_dir=root / "runs", train_val=True, ks=4, opts={"epochs": 2, "batch": 256})
    m = json.loads((d / "metrics.json").read_text())
    assert m["frames"]["train"] + m["frames"]["val"] < 3000               # each row once
    assert m["validation_in_training"] and m["summary"]["k"] == 4
    assert {r["method"].split(" ")[0] for r in m["heads"]} == {"mlp", "va_only", "blend"}
    assert "in-sample" in (d / "results.md").read_text()


def test_au_thresholds_reported(enet_world):
    root, cache, labels = enet_world
    d = run("au", cache, labels, ["mlp"], ["enet/embedding"], name="au", runs_dir=root / "runs", ks=[0, 2],
            opts={"epochs": 2})
    m = json.loads((d / "metrics.json").read_text())
    assert len(m["summary"]["thresholds"]) == 12
    assert m["summary"]["smoothed_thresholds"] >= m["summary"]["smoothed"] - 1e-9
    md = (d / "results.md").read_text()
    assert "tuned thresholds" in md and "Per-AU thresholds of mlp" in md and "AU26 " in md


def test_feature_sets(enet_world):
    _, cache, _ = enet_world
    store = FeatureStore(cache)
    assert resolve(store, "enet/logits+va") == ["enet/logits", "enet/va"]
    assert resolve(store, "enet/embedding+enet/logits") == ["enet/embedding", "enet/logits"]
    assert "enet/logits+va" in available(store)
    with pytest.raises(InputError, match=r"unknown feature set 'resnet/embedding'.*offers enet/embedding"):
        resolve(store, "resnet/embedding")
    with pytest.raises(InputError, match="has no output 'pooled'"):
        resolve(store, "enet/pooled")


@pytest.mark.parametrize("args, msg", [
    (["--task", "au", "--heads", "mlp", "--labels", "{root}/nolabels"], "AU_Detection_Challenge"),  # EXPR-only labels
    (["--task", "expr", "--features", "nope/embedding"], "unknown feature set 'nope/embedding'"),
    (["--task", "expr", "--heads", "va_only"], "va_only rule is for --task va"),
    (["--task", "expr", "--cache", "{root}/absent.h5"], "feature cache not found"),
    (["--task", "expr", "--k", "x"], "not an integer"),
])
def test_cli_bad_input(enet_world, capsys, args, msg):
    root, cache, labels = enet_world
    (root / "nolabels" / EXPR.folders[0] / "Train_Set").mkdir(parents=True, exist_ok=True)
    base = {"--cache": str(cache), "--labels": str(labels), "--heads": "logits", "--runs-dir": str(root / "bad")}
    argv = [a.format(root=root) for a in args]
    for k, v in base.items():
        if k not in argv:
            argv += [k, v]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    import re
    assert re.search(msg, err), err
    assert not (root / "bad" / "au").exists()


def test_task_labels_mismatch_and_empty_split(enet_world, tmp_path):
    root, cache, labels = enet_world
    # AU folder holding EXPR-style files: the annotation reader refuses them
    write_labels(tmp_path, AU, "train", "vid0001", np.zeros(3, int))
    with pytest.raises(InputError):
        run("au", cache, tmp_path, ["mlp"], runs_dir=tmp_path / "runs")
    # an empty validation split (only invalid rows)
    lab = tmp_path / "lab2"
    write_labels(lab, EXPR, "train", "vid0001", np.arange(20) % 8)
    write_labels(lab, EXPR, "val", "vid0009", np.full(5, -1))
    with pytest.raises(InputError, match="val split has no valid labelled frames|no labelled frames"):
        run("expr", cache, lab, ["logits"], runs_dir=tmp_path / "runs")
    # labelled frames none of which has features
    lab3 = tmp_path / "lab3"
    write_labels(lab3, EXPR, "train", "unknown_video", np.arange(20) % 8)
    write_labels(lab3, EXPR, "val", "vid0009", np.arange(20) % 8)
    with pytest.raises(InputError, match="none of the 20 labelled train frames has features"):
        run("expr", cache, lab3, ["logits"], runs_dir=tmp_path / "runs")


def test_nan_features_in_cache(tmp_path):
    info = ExtractorInfo("m", "0" * 64, 224, {}, {"embedding": 4, "logits": 8})
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        w = s.writer(info)
        for v in ("a", "b"):
            emb = np.ones((10, 4), np.float32)
            if v == "a":
                emb[2, 1] = np.nan
            w.write_video(v, frame=np.arange(1, 11), face=np.ones(10, bool), embedding=emb,
                          logits=np.zeros((10, 8), np.float32))
    write_labels(tmp_path / "lab", EXPR, "train", "a", np.arange(10) % 8)
    write_labels(tmp_path / "lab", EXPR, "val", "b", np.arange(10) % 8)
    with pytest.raises(InputError, match=r"c.h5: extractor 'm', output 'embedding': 1 frame with a face in 1 video "
                                         r"holds NaN or infinite values \(first: video 'a', frame 3\)"):
        run("expr", tmp_path / "c.h5", tmp_path / "lab", ["mlp"], runs_dir=tmp_path / "runs")


def test_parse_k():
    assert parse_k("auto") is None and parse_k("7") == 7 and list(parse_k("0:4:2")) == [0, 2, 4]
    assert parse_k("0,5") == [0, 5]


@pytest.mark.slow
def test_cli_au_mlp_lama_blend(enet_world, capsys):
    """The reference AU ensemble (MLP + LightAutoML on logits + VA) through the command, in one process."""
    root, cache, labels = enet_world
    rc = main(["--task", "au", "--cache", str(cache), "--labels", str(labels), "--heads", "mlp,lama,blend",
               "--runs-dir", str(root / "runs"), "--name", "au_lama", "--epochs", "2", "--lama-timeout", "30",
               "--k", "0:10"])
    assert rc == 0, capsys.readouterr().err
    run_dir = root / "runs" / "au" / "au_lama"
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["members"]["lama"]["feature_set"] == "enet/logits+va" and m["final"] == "blend"
    assert (run_dir / "lama.log").stat().st_size > 0
    assert load_head(run_dir / "heads" / "lama", task="au", allow_pickle=True).predict_proba(np.zeros((3, 10), np.float32)).shape == (3, 12)
