"""`python -m classify` with the fusion MLP and temporal heads on a two-extractor cache (feature sets joined
with '+'), their options, and bad input."""
import json

import numpy as np
import pytest

import classify  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)
pytest.importorskip("torch")

from classify.__main__ import main  # noqa: E402
from classify.base import load_head  # noqa: E402
from classify.fusion import blocks_for, check_same_frames  # noqa: E402
from features.errors import InputError  # noqa: E402
from features.store import FeatureStore  # noqa: E402
from postprocess.scores import load_scores  # noqa: E402

from helpers import build_fusion_world  # noqa: E402


@pytest.fixture(scope="module")
def fusion_world(tmp_path_factory):
    """(root, cache, labels) of helpers.build_fusion_world: extractors a, b on the same frames, c on others."""
    root = tmp_path_factory.mktemp("heads_cli")
    return (root, *build_fusion_world(root))


def test_blocks_and_frame_sets(fusion_world):
    root, cache, _ = fusion_world
    s = FeatureStore(cache)
    assert blocks_for(s, "a/embedding+b/embedding+logits") == [16, 16]
    assert blocks_for(s, "b/logits+a/embedding") == [8, 16]
    check_same_frames(s, "a/embedding+b/embedding")
    with pytest.raises(InputError, match=r"extractors 'a' and 'c' hold different frames of video .* \(\d+ vs "
                                         r"\d+ frames\); extract them on the same frames before fusing"):
        check_same_frames(s, "a/embedding+c/embedding")


def test_cli_fusion_and_temporal_heads(fusion_world, capsys):
    root, cache, labels = fusion_world
    rc = main([str(a) for a in [
        "--task", "expr", "--cache", cache, "--labels", labels, "--heads", "fusion_mlp,temporal,blend",
               "--features", "a/embedding+b/embedding", "--runs-dir", root / "runs", "--name", "t",
               "--epochs", "2", "--window", "16", "--stride", "8", "--layers", "1", "--width", "16",
               "--heads-n", "2", "--loss", "ce_dice", "--k", "0:10:2", "--test", root / "test.txt"]])
    out = capsys.readouterr()
    assert rc == 0, out.err
    run_dir = root / "runs" / "expr" / "t"
    m = json.loads((run_dir / "metrics.json").read_text())
    names = [r["method"].split(" ")[0] for r in m["heads"]]
    assert names[:2] == ["fusion_mlp", "temporal"] and "blend" in names
    assert m["training"]["temporal"]["best_epoch"] in (1, 2)
    h = load_head(run_dir / "heads" / "temporal", task="expr")
    assert h.window == 16 and h.loss == "ce_dice" and h.blocks_ == [16, 8]
    test = load_scores(run_dir / "scores.h5", "test")
    assert np.isfinite(test.scores).all() and set(test.heads) >= {"fusion_mlp", "temporal"}


@pytest.mark.parametrize("argv, expect", [
    (["--heads", "temporal", "--loss", "focal"], "loss 'focal' is for multilabel tasks, not expr"),
    (["--heads", "mlp", "--loss", "ce"], "--loss ce applies to the fusion_mlp and temporal heads"),
    (["--heads", "temporal", "--loss", "nope"], "unknown loss 'nope'; for expr choose from ce, ce_dice"),
    (["--heads", "temporal", "--window", "5000"], "--window 5000 is longer than every training video"),
    (["--heads", "fusion_mlp", "--features", "a/embedding+c/embedding"], "hold different frames of video"),
])
def test_cli_bad_options_one_line(fusion_world, capsys, argv, expect):
    root, cache, labels = fusion_world
    rc = main([str(a) for a in ["--task", "expr", "--cache", cache, "--labels", labels, "--runs-dir", root / "bad",
               "--epochs", "1", *argv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err


def test_cli_kfold_rows_per_fold_and_ensemble(fusion_world, capsys):
    root, cache, labels = fusion_world
    rc = main([str(a) for a in [
        "--task", "va", "--cache", cache, "--labels", labels, "--heads", "fusion_mlp", "--features", "a/embedding",
        "--runs-dir", root / "runs", "--name", "kf", "--epochs", "2", "--kfold", "3", "--k", "0:4:2"]])
    assert rc == 0, capsys.readouterr().err
    run_dir = root / "runs" / "va" / "kf"
    m = json.loads((run_dir / "metrics.json").read_text())
    folds = [r for r in m["heads"] if " fold " in r["method"]]
    assert len(folds) == 3 and all(-1 <= r["metric_raw"] <= 1 for r in folds)
    assert sum(int(r["method"].split("(")[1].split()[0]) for r in folds) == 10     # every video held out once
    assert m["heads"][0]["ensemble"] == "3 fold models averaged" and m["final"] == "fusion_mlp"
    assert "out-of-fold" in m["heads"][0]["scored_on"]
    mean = next(r for r in m["heads"] if "mean ± std of 3 folds" in r["method"])
    assert mean["metric_raw"] == pytest.approx(np.mean([r["metric_raw"] for r in folds]), abs=1e-4)
    h = load_head(run_dir / "heads" / "fusion_mlp", task="va")
    assert len(h.estimators_) == 3
    assert np.allclose(h.fold_scores_, [r["metric_raw"] for r in folds], atol=1e-4)
    assert "fold 1/3" in (run_dir / "results.md").read_text()
    rc = main([str(a) for a in ["--task", "va", "--cache", cache, "--labels", labels, "--heads", "fusion_mlp",
                                "--runs-dir", root / "runs", "--kfold", "11"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: k-fold: 10 videos for 11 folds (folds are split by video); use --kfold 10 "
                               "or fewer"]


def test_cli_bagging_polarity_and_sampling(fusion_world, capsys):
    root, cache, labels = fusion_world
    common = ["--cache", cache, "--labels", labels, "--runs-dir", root / "runs", "--epochs", "1", "--k", "0"]
    rc = main([str(a) for a in ["--task", "expr", "--heads", "bagging", "--bags", "2", "--vote",
                                "priority:Other,Fear", "--name", "bag", *common]])
    assert rc == 0, capsys.readouterr().err
    h = load_head(root / "runs" / "expr" / "bag" / "heads" / "bagging", task="expr")
    assert len(h.estimators_) == 2 and h.rule == "priority" and h.priority_ == [7, 3]
    rc = main([str(a) for a in ["--task", "va", "--heads", "polarity,fusion_mlp,blend", "--name", "pol", *common]])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((root / "runs" / "va" / "pol" / "metrics.json").read_text())
    assert {r["method"].split(" ")[0] for r in m["heads"]} == {"polarity", "fusion_mlp", "blend"}
    rc = main([str(a) for a in ["--task", "au", "--heads", "fusion_mlp", "--sampling", "mlros", "--loss", "asl",
                                "--name", "au", *common]])
    assert rc == 0, capsys.readouterr().err
    for argv, expect in ((["--task", "va", "--heads", "bagging"], "the bagging head (meta-vote) is for --task expr"),
                         (["--task", "expr", "--heads", "bagging", "--vote", "priority:Joy"],
                          "priority class 'Joy' is not one of"),
                         (["--task", "expr", "--heads", "polarity"], "the polarity gate is for --task va")):
        rc = main([str(a) for a in [*argv, *common]])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and expect in err[0], err
