"""LightAutoML heads on small feature sets (as the reference: logits, + VA)."""
import os

import numpy as np
import pytest

from classify.base import load_head
from classify.lama import LamaHead
from classify.mlp import MLPHead
from features.metrics import f1_per_column
from features.synthetic import make_feature_data
from features.tasks import AU, EXPR, VA
from postprocess.thresholds import tune_thresholds


@pytest.fixture(scope="module")
def data():
    d = make_feature_data(6000, 16, 30, seed=0, noise=0.5)
    tr = d.video < 20
    return d, tr, ~tr


def test_lama_expr_fast_learns_saves_and_logs_to_a_file(data, tmp_path, capfd):
    """Also after TensorFlow is loaded in this process (an MLP first, as `python -m classify` does): in one
    process with TensorFlow, LightAutoML's torch import crashed."""
    d, tr, va = data
    MLPHead("expr", hidden=4, epochs=1).fit(d.X[tr][:500], d.y_expr[tr][:500])
    log = tmp_path / "lama.log"
    h = LamaHead("expr", timeout=3, cv=2, log_file=str(log)).fit(d.X[tr], d.y_expr[tr], d.X[va], d.y_expr[va])
    p = h.predict_proba(d.X[va])          # scored in the fitting worker already
    assert p.shape == (va.sum(), 8) and np.allclose(p.sum(1), 1, atol=1e-4)
    chance = EXPR.score(d.y_expr[va], np.eye(8)[np.random.default_rng(0).integers(0, 8, va.sum())])
    assert EXPR.score(d.y_expr[va], p) > chance + 0.2
    out = capfd.readouterr()
    assert out.out + out.err == "" and "Task: multiclass" in log.read_text()
    h.save(tmp_path / "head")
    np.testing.assert_array_equal(load_head(tmp_path / "head", task="expr").predict_proba(d.X[va]), p)


@pytest.mark.slow
def test_lama_va_multi_reg(data):
    d, tr, va = data
    h = LamaHead("va", timeout=20, cv=2, log_file=os.devnull).fit(d.X[tr], d.y_va[tr])
    p = h.predict_proba(d.X[va])
    assert p.shape == (va.sum(), 2) and np.abs(p).max() <= 1
    assert VA.score(d.y_va[va], p) > 0.3


@pytest.mark.slow
def test_lama_au_multilabel(data):
    d, tr, va = data
    h = LamaHead("au", timeout=20, cv=2).fit(d.X[tr], d.y_au[tr])
    p = h.predict_proba(d.X[va])
    assert p.shape == (va.sum(), 12) and ((0 <= p) & (p <= 1)).all()
    y = d.y_au[va]
    # calibrated probabilities: compare at tuned thresholds with the best constant prediction
    assert tune_thresholds(y, p).mean_f1 > f1_per_column(y, np.ones_like(y)).mean() + 0.1
