"""Head parameters and data checked by the heads themselves (scikit-learn's `_parameter_constraints`, checked in
`fit` and when a saved head is loaded), from Python and through `python -m classify`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classify.__main__ import main

from . import Case, Result, api, cli
from .heads import _world

C = "classify heads"


def _expr(n: int = 80, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    X = rng.normal(0, 1, (n, d)).astype(np.float32)
    X[np.arange(n), y % d] += 2.0
    return X, y


def _mlp_fit(**params):
    def run():
        from classify.mlp import MLPHead
        MLPHead("expr", **params).fit(*_expr())
    return run


def _fusion_fit_without_labels():
    from classify.fusion import FusionMLPHead
    FusionMLPHead("expr", epochs=1).fit(_expr()[0], None)


def _fusion_predict_nan():
    from classify.fusion import FusionMLPHead
    X, y = _expr()
    h = FusionMLPHead("expr", epochs=1).fit(X, y)
    X = X.copy()
    X[3, 1] = np.nan
    h.predict_proba(X)


def _fusion_complex():
    from classify.fusion import FusionMLPHead
    X, y = _expr()
    FusionMLPHead("expr", epochs=1).fit(X.astype(np.complex64) + 1j, y)


def _saved_logits_with(tmp: Path, **params) -> Result:
    from classify.base import load_head
    from classify.rules import LogitsRule
    X, y = _expr(d=8)
    LogitsRule("expr", hidden=4, max_iter=5).fit(X, y).save(tmp / "h")
    p = tmp / "h" / "head.json"
    meta = json.loads(p.read_text())
    meta["params"].update(params)
    p.write_text(json.dumps(meta))
    return api(lambda: load_head(tmp / "h", task="expr"))


def _classify(tmp: Path, shared: Path, *argv):
    cache, labels = _world(shared)
    return cli(main, ["--task", "expr", "--cache", cache, "--labels", labels, "--runs-dir", tmp / "runs",
                      "--epochs", "1", "--k", "0", *argv])


def _no_run_folder(tmp, shared, res):
    assert not (tmp / "runs").exists() or not any(p.is_dir() for p in (tmp / "runs").glob("*/*")), \
        "a run folder was left behind"


CASES = [
    Case(C, "Keras MLP batch=0 (API)", lambda tmp, shared: api(_mlp_fit(batch=0)),
         expect="The 'batch' parameter of MLPHead must be an int in the range [1, 65536]", defect="traceback"),
    Case(C, "Keras MLP epochs=0 (API)", lambda tmp, shared: api(_mlp_fit(epochs=0)),
         expect="The 'epochs' parameter of MLPHead must be an int in the range [1, 10000]", defect="silent"),
    Case(C, "Keras MLP batch=True (API)", lambda tmp, shared: api(_mlp_fit(batch=True, epochs=1)),
         expect="The 'batch' parameter of MLPHead must be an int in the range [1, 65536] or None. Got True",
         defect="silent"),
    Case(C, "fusion MLP fitted without labels (API)", lambda tmp, shared: api(_fusion_fit_without_labels),
         expect="FusionMLPHead requires y to be passed, but the target y is None", defect="traceback"),
    Case(C, "fusion MLP asked to predict NaN features (API)", lambda tmp, shared: api(_fusion_predict_nan),
         expect="1 rows hold NaN or infinite values (first: row 3)", defect="silent"),
    Case(C, "fusion MLP fitted on complex features (API)", lambda tmp, shared: api(_fusion_complex),
         expect="features must be real numbers, not of dtype complex64", defect="silent"),
    Case(C, "logits head.json max_iter 0 (API)", lambda tmp, shared: _saved_logits_with(tmp, max_iter=0),
         expect="The 'max_iter' parameter of LogitsRule must be an int in the range [1, 10000]", defect="silent"),
    Case(C, "temporal --width 30 --heads-n 4 refused before the run folder",
         lambda tmp, shared: _classify(tmp, shared, "--heads", "temporal", "--width", "30", "--heads-n", "4"),
         expect="--width 30 must be a multiple of --heads-n 4", check=_no_run_folder, defect="misleading"),
]
