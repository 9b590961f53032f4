"""LightAutoML heads on small feature sets (as the reference: logits, + VA)."""
import os
import stat
import sys
import time

import numpy as np
import pytest

import classify.lama as lama
from classify.base import load_head
from classify.lama import PILOT_ROWS, LamaHead, LamaTimeout, hard_limit, sample_order, sample_rows, second_fit_rows
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
    capfd.readouterr()          # TensorFlow's own start-up lines (absl, oneDNN): not LightAutoML's
    log = tmp_path / "lama.log"
    h = LamaHead("expr", timeout=60, cv=2, log_file=str(log), max_rows=3000)
    h.fit(d.X[tr], d.y_expr[tr], d.X[va], d.y_expr[va], groups=d.video[tr])     # folds of whole videos
    assert tr.sum() > 3000 and abs(h.rows_used - 3000) <= 8     # a stratified sample of the training rows
    p = h.predict_proba(d.X[va])          # scored in the fitting worker already
    assert p.shape == (va.sum(), 8) and np.allclose(p.sum(1), 1, atol=1e-4)
    chance = EXPR.score(d.y_expr[va], np.eye(8)[np.random.default_rng(0).integers(0, 8, va.sum())])
    assert EXPR.score(d.y_expr[va], p) > chance + 0.2
    out = capfd.readouterr()
    text = log.read_text()     # the whole log, not only LightAutoML's first lines
    assert out.out + out.err == "" and "Task: multiclass" in text and "fold" in text.lower()
    assert "stage 1: 3000 of 3000 rows, linear_l2+lgb" in text and len(h.stages_) == 1
    assert 0.05 < h.worker_peak_gb_ < 8          # the worker's own peak, not the test process's at its fork
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


@pytest.mark.slow
def test_lama_holds_a_small_limit_on_many_rows():
    """300 k training rows of 8 columns and a 30 s limit: the pilot's model comes back within the limit (the
    earlier preset, on a 100 k-row sample, was stopped at the hard limit with no model), and the second fit,
    if there was time for one, is sized to fit too."""
    rng = np.random.default_rng(0)
    n, video = 300_000, np.repeat(np.arange(300), 1000)
    y = rng.choice(8, n, p=[0.4, 0.1, 0.08, 0.08, 0.15, 0.08, 0.08, 0.03])
    X = (np.eye(8)[y] * 1.5 + rng.standard_normal((n, 8))).astype(np.float32)
    h = LamaHead("expr", timeout=30)
    t = time.perf_counter()
    h.fit(X, y, X[:20_000], y[:20_000], groups=video)
    took = time.perf_counter() - t
    assert took <= 30 + 2, (took, h.stages_)          # the limit itself, not only its margin
    assert h.rows_used >= PILOT_ROWS and len(h.stages_) in (1, 2)
    p = h.predict_proba(X[:20_000])
    assert EXPR.score(y[:20_000], p) > 0.3


def test_second_fit_sized_from_the_pilot():
    # the pilot's 5000 rows took 10 s; 40 s left: half of them, at the pilot's rate, is 10000 rows
    assert second_fit_rows(5000, 10.0, 40.0, 100_000) == 10_000
    assert second_fit_rows(5000, 1.0, 100.0, 80_000) == 80_000          # capped by the rows there are
    assert second_fit_rows(5000, 10.0, 30.0, 100_000) == 0              # not twice the pilot: pilot kept
    assert second_fit_rows(5000, 10.0, -3.0, 100_000) == 0


def test_fit_stages_write_each_stage_whole(tmp_path, monkeypatch):
    """The stages in the worker, with LightAutoML replaced by a fit whose time grows with the rows: the pilot
    and a second fit sized to the time left, each written whole before the next starts."""
    calls = []

    def fake_fit(self, X, y, timeout, groups=None):
        calls.append((len(X), timeout, None if groups is None else len(np.unique(groups))))
        time.sleep(0.2 + len(X) * 2e-5)
        return b"model-%d" % len(X)

    monkeypatch.setattr(lama, "_import_lama", lambda: None)
    monkeypatch.setattr(LamaHead, "_fit_local", fake_fit)
    monkeypatch.setattr(LamaHead, "_predict_local", lambda self, X: np.full((len(X), 8), len(self.model_), np.float32))
    n = 60_000
    X, y, g = np.zeros((n, 8), np.float32), np.arange(n) % 8, np.arange(n) // 100
    h = LamaHead("expr", timeout=10)
    deadline = time.time() + 10
    h._fit_stages(tmp_path, X, y, deadline, groups=g, X_val=np.zeros((7, 8), np.float32))
    assert calls[0][0] == PILOT_ROWS and calls[0][2] == len(np.unique(g[:PILOT_ROWS]))
    assert len(calls) == 2 and 2 * PILOT_ROWS <= calls[1][0] <= n and time.time() < deadline
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage0", "stage1"]
    assert (tmp_path / "stage1" / "model.pkl").read_bytes() == b"model-%d" % calls[1][0]
    assert lama._last_stage(tmp_path).name == "stage1" and np.load(tmp_path / "stage1" / "scores.npy").shape == (7, 8)


def test_stopped_after_the_pilot_keeps_the_pilot(tmp_path, monkeypatch):
    """A worker stopped at the hard limit after its pilot finished: the pilot's model and scores are the fit's,
    within the limit. (A stand-in worker writes the pilot's stage and then hangs.)"""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\n[ "$3" = fit ] || exit 3\nmkdir "$4/stage0.part"\nprintf pilot > "$4/stage0.part/model.pkl"\n'
                    'echo \'{"rows": 5000, "stages": ["5000 rows: fit 1.0 s"]}\' > "$4/stage0.part/info.json"\n'
                    'mv "$4/stage0.part" "$4/stage0"\nexec sleep 60\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setattr(lama, "hard_limit", lambda timeout: 1.5)
    h = LamaHead("expr", timeout=1)
    t = time.perf_counter()
    h.fit(np.zeros((50, 3), np.float32), np.arange(50) % 8)
    assert time.perf_counter() - t < 5
    assert h.model_ == b"pilot" and h.rows_used == 5000 and "stopped at" in h.stages_[-1]


def test_sample_order_prefixes_stratified_and_spread_over_videos():
    rng = np.random.default_rng(1)
    n = 60_000
    y = rng.choice(8, n, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.04, 0.0095, 0.0005])
    video = np.sort(rng.integers(0, 200, n))
    order = sample_order(y, 0, "multiclass", video)
    assert np.array_equal(np.sort(order), np.arange(n))                                 # every row, once
    np.testing.assert_array_equal(order, sample_order(y, 0, "multiclass", video))      # deterministic
    full = np.bincount(y, minlength=8)
    assert set(y[order[:8]]) == set(range(8))                                           # every class first
    for m in (500, 5_000, 20_000):
        part = np.bincount(y[order[:m]], minlength=8)
        assert np.abs(part - full * m / n).max() <= 1.5, (m, part)                      # each class its share
        # each video about its share of the rows (a plain random sample strays about twice as far)
        spread = np.abs(np.bincount(video[order[:m]], minlength=200) - np.bincount(video, minlength=200) * m / n)
        plain = np.abs(np.bincount(video[rng.permutation(n)[:m]], minlength=200) - np.bincount(video, minlength=200) * m / n)
        assert spread.max() < plain.max() and spread.mean() < 0.7 * plain.mean(), (m, spread.mean(), plain.mean())
    # multilabel / regression: spread over the videos only
    o = sample_order(np.zeros((n, 12)), 0, "multilabel", video)[:5_000]
    assert len(np.unique(o)) == 5_000 and (np.bincount(video[o], minlength=200) > 0).all()


def test_video_folds_only_when_every_class_is_in_enough_videos():
    """Folds of whole videos where a class lives in one video leave folds without it (LightAutoML's models then
    fail, "different number of classes"): row folds are used instead."""
    from classify.lama import _groups_fold
    groups = np.repeat(np.arange(6), 10)
    y = np.tile(np.arange(3), 20)                               # every class in every video
    assert _groups_fold("multiclass", y, groups, 3)
    y2 = y.copy()
    y2[groups == 0] = 7                                         # class 7 only in video 0
    assert not _groups_fold("multiclass", y2, groups, 3)
    assert not _groups_fold("regression", y.astype(float), groups[:20] % 2, 3)   # two videos for three folds
    au = np.zeros((60, 2), int)
    au[groups < 4, 0] = 1                                      # label 0 in 4 videos, absent in 2
    au[groups == 5, 1] = 1                                     # label 1 in one video only
    assert _groups_fold("multilabel", au[:, :1], groups, 2) and not _groups_fold("multilabel", au, groups, 3)
