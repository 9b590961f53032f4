"""LightAutoML heads on small feature sets (as the reference: logits, + VA)."""
import os
import time

import numpy as np
import pytest

import classify.lama as lama
from classify.base import load_head
from classify.lama import LamaHead, LamaTimeout, hard_limit, sample_rows
from features.errors import InputError
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


@pytest.mark.slow
def test_lama_expr_learns_saves_and_logs_to_a_file(data, tmp_path, capfd):
    """Also after TensorFlow is loaded in this process (an MLP first, as `python -m classify` does): in one
    process with TensorFlow, LightAutoML's torch import crashed. (Its time limit covers the worker's ~8 s of
    imports, so it is not a few seconds.)"""
    d, tr, va = data
    MLPHead("expr", hidden=4, epochs=1).fit(d.X[tr][:500], d.y_expr[tr][:500])
    log = tmp_path / "lama.log"
    h = LamaHead("expr", timeout=60, cv=2, log_file=str(log), max_rows=3000)
    h.fit(d.X[tr], d.y_expr[tr], d.X[va], d.y_expr[va])
    assert tr.sum() > 3000 and abs(h.rows_used - 3000) <= 8     # a stratified sample of the training rows
    p = h.predict_proba(d.X[va])          # scored in the fitting worker already
    assert p.shape == (va.sum(), 8) and np.allclose(p.sum(1), 1, atol=1e-4)
    chance = EXPR.score(d.y_expr[va], np.eye(8)[np.random.default_rng(0).integers(0, 8, va.sum())])
    assert EXPR.score(d.y_expr[va], p) > chance + 0.2
    out = capfd.readouterr()
    text = log.read_text()     # the whole log, not only LightAutoML's first lines
    assert out.out + out.err == "" and "Task: multiclass" in text and "fold" in text.lower()
    h.save(tmp_path / "head")
    with pytest.raises(InputError, match="allow_pickle"):
        load_head(tmp_path / "head", task="expr")
    np.testing.assert_array_equal(load_head(tmp_path / "head", task="expr", allow_pickle=True).predict_proba(d.X[va]), p)


def test_time_limit_and_margin():
    assert hard_limit(20) == 30 and hard_limit(60) == 75 and hard_limit(400) == 500
    assert lama._budget(20, None) == 20
    now = time.time()
    assert 7.5 < lama._budget(20, now + 12) <= 10        # 12 s left, 2 s kept for scoring
    assert lama._budget(100, now + 50) <= 40 and lama._budget(20, now - 5) == 1.0


def test_worker_stopped_at_the_hard_limit(data, monkeypatch):
    """The worker (and anything it started) is stopped when the limit and margin are up: one line, no model.
    The limit is shrunk to half a second here, so the worker is still importing when it is stopped."""
    d, tr, va = data
    monkeypatch.setattr(lama, "hard_limit", lambda timeout: 0.5)
    h = LamaHead("expr", timeout=1, cv=2, max_rows=500)
    t = time.perf_counter()
    with pytest.raises(LamaTimeout, match=r"LightAutoML did not finish within its 1 s limit; stopped after \d+ s"):
        h.fit(d.X[tr], d.y_expr[tr])
    assert time.perf_counter() - t < 5 and getattr(h, "model_", None) is None


@pytest.mark.slow
@pytest.mark.parametrize("task", ["expr", "au"])
def test_lama_holds_its_time_limit(data, task):
    """A few hundred rows with a 10 s limit (on 2 busy cores LightAutoML took 35-55 s for a 20 s limit before):
    the fit returns, with a model or with LamaTimeout, within the limit plus the stated margin (+2 s to stop)."""
    d, tr, va = data
    y = d.y_expr if task == "expr" else d.y_au
    h = LamaHead(task, timeout=10, cv=3, max_rows=450)
    t = time.perf_counter()
    try:
        h.fit(d.X[tr], y[tr], d.X[va][:200], y[va][:200])
        assert h.predict_proba(d.X[va][:200]).shape[0] == 200
    except LamaTimeout:
        assert getattr(h, "model_", None) is None
    assert time.perf_counter() - t <= hard_limit(10) + 2


@pytest.mark.slow
def test_lama_va_multi_reg(data):
    d, tr, va = data
    h = LamaHead("va", timeout=40, cv=2, log_file=os.devnull).fit(d.X[tr], d.y_va[tr])
    p = h.predict_proba(d.X[va])
    assert p.shape == (va.sum(), 2) and np.abs(p).max() <= 1
    assert VA.score(d.y_va[va], p) > 0.3


@pytest.mark.slow
def test_lama_au_multilabel(data):
    d, tr, va = data
    h = LamaHead("au", timeout=40, cv=2).fit(d.X[tr], d.y_au[tr])
    p = h.predict_proba(d.X[va])
    assert p.shape == (va.sum(), 12) and ((0 <= p) & (p <= 1)).all()
    y = d.y_au[va]
    # calibrated probabilities: compare at tuned thresholds with the best constant prediction
    assert tune_thresholds(y, p).mean_f1 > f1_per_column(y, np.ones_like(y)).mean() + 0.1


def test_sample_rows_stratified_and_plain():
    rng = np.random.default_rng(1)
    y = rng.choice(8, 20_000, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.04, 0.0095, 0.0005])
    assert sample_rows(y, 50_000, 0, "multiclass") is None and sample_rows(y, None, 0, "multiclass") is None
    idx = sample_rows(y, 2_000, 0, "multiclass")
    assert np.all(np.diff(idx) > 0) and abs(len(idx) - 2_000) <= 8
    full, part = np.bincount(y, minlength=8) / len(y), np.bincount(y[idx], minlength=8) / len(idx)
    assert np.abs(full - part).max() < 0.002 and (np.bincount(y[idx], minlength=8) > 0).all()  # rare class kept
    np.testing.assert_array_equal(idx, sample_rows(y, 2_000, 0, "multiclass"))                 # deterministic
    plain = sample_rows(np.zeros((20_000, 12)), 500, 0, "multilabel")
    assert len(plain) == 500 and len(np.unique(plain)) == 500
