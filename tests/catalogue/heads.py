"""Bad input to the heads beyond the reference (`python -m classify --heads fusion_mlp,temporal ...`, the
losses, k-fold) and to the heads' Python API."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from classify.__main__ import main
from helpers import build_fusion_world

from . import Case, api, cli


def _world(shared: Path) -> tuple[Path, Path]:
    """The two-extractor cache of helpers.build_fusion_world (extractor c lacks frames of one video), built once."""
    root = shared / "heads_world"
    if not (root / "test.txt").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_fusion_world(root)
    return root / "features.h5", root / "labels"


def _classify(tmp: Path, shared: Path, *argv):
    cache, labels = _world(shared)
    return cli(main, ["--task", "expr", "--cache", cache, "--labels", labels, "--runs-dir", tmp / "runs",
                      "--epochs", "1", *argv])


def _no_run_folder(tmp, shared, res):
    assert not (tmp / "runs").exists() or not any(p.is_dir() for p in (tmp / "runs").glob("*/*")), \
        "a run folder was left behind"


def _temporal_without_rows():
    from classify.temporal import TemporalHead
    X = np.zeros((50, 4), np.float32)
    TemporalHead("expr", window=8).fit(X, np.arange(50) % 8)


C = "classify heads"
CASES = [
    Case(C, "temporal window longer than every video",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "temporal", "--window", "5000"),
         expect="--window 5000 is longer than every training video", check=_no_run_folder),
    Case(C, "fused extractors with different frame sets",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "temporal", "--features", "a/embedding+c/embedding"),
         expect="hold different frames of video", defect="silent"),
    Case(C, "unknown loss name",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "fusion_mlp", "--loss", "dice"),
         expect="unknown loss 'dice'; for expr choose from ce, ce_dice"),
    Case(C, "loss of another task",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "fusion_mlp", "--loss", "mse_ccc"),
         expect="loss 'mse_ccc' is for regression tasks, not expr"),
    Case(C, "loss given to a head that does not read it",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "mlp", "--loss", "ce"),
         expect="--loss ce applies to the fusion_mlp and temporal heads"),
    Case(C, "k-fold with fewer videos than folds",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "fusion_mlp", "--kfold", "50"),
         expect="k-fold: 10 videos for 50 folds", check=_no_run_folder),
    Case(C, "AU sampling for another task",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "fusion_mlp", "--sampling", "mlros"),
         expect="--sampling mlros is for --task au"),
    Case(C, "attention width not a multiple of the heads",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "temporal", "--width", "30", "--heads-n", "4"),
         expect="--width 30 must be a multiple of --heads-n 4"),
    Case(C, "temporal head fitted without video ids and frames (API)",
         lambda tmp, shared: api(_temporal_without_rows), expect="need their video ids and frame numbers"),
]
