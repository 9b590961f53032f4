"""Per-AU thresholds against brute force; cross-validated selection behaves honestly."""
import numpy as np
import pytest

from features.errors import InputError
from features.tasks import AU, EXPR, VA
from postprocess.selection import cross_validated_selection
from postprocess.thresholds import REFERENCE_GRID, compare_thresholds, f1_at, tune_thresholds


def _f1(t, p):
    tp = np.sum(t & p)
    den = p.sum() + t.sum()
    return 2 * tp / den if den else 0.0


def _data(n=400, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < np.linspace(0.05, 0.5, c)
    p = np.clip(0.35 * y + rng.random((n, c)) * 0.7, 0, 1)
    p = np.round(p, 2)                      # many ties: cuts must fall between distinct scores
    return y.astype(int), p


def test_exact_beats_every_candidate_and_is_reproducible():
    y, p = _data()
    res = tune_thresholds(y, p, "exact")
    fine = np.linspace(-0.01, 1.01, 1021)
    for j in range(p.shape[1]):
        cands = np.r_[fine, np.unique(p[:, j])]
        brute = max(_f1(y[:, j].astype(bool), p[:, j] >= t) for t in cands)
        assert res.f1[j] == pytest.approx(brute)
    np.testing.assert_allclose(f1_at(y, p, res.thresholds), res.f1)


def test_grid_and_fixed():
    y, p = _data(seed=1)
    g = tune_thresholds(y, p, "grid")
    assert set(g.thresholds) <= set(REFERENCE_GRID)
    for j in range(p.shape[1]):
        assert g.f1[j] == pytest.approx(max(_f1(y[:, j].astype(bool), p[:, j] >= t) for t in REFERENCE_GRID))
    f = tune_thresholds(y, p, "fixed")
    np.testing.assert_allclose(f.f1, f.f1_fixed)
    comp = compare_thresholds(y, p)
    assert (comp.f1_exact >= comp.f1_grid - 1e-12).all() and (comp.f1_grid >= comp.f1_fixed - 1e-12).all()


def test_threshold_bad_input():
    y, p = _data()
    with pytest.raises(InputError, match="differ in shape"):
        tune_thresholds(y[:-1], p)
    p2 = p.astype(float).copy()
    p2[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tune_thresholds(y, p2)
    with pytest.raises(InputError, match="0/1 labels"):
        tune_thresholds(np.where(y == 1, -1, y), p)


def _videos(task, seed=0, n_videos=12):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 120, n_videos)
    video = np.repeat([f"v{i:02d}" for i in range(n_videos)], lengths)
    n, c = len(video), task.n_outputs
    base = np.cumsum(rng.normal(size=(n, c)), axis=0) * 0.2
    noisy = base + rng.normal(size=(n, c)) * 1.5
    if task is VA:
        return np.tanh(base).astype(np.float32), np.tanh(noisy), video
    if task is EXPR:
        e = np.exp(noisy)
        return base.argmax(1), e / e.sum(1, keepdims=True), video
    return (base > 0).astype(int), 1 / (1 + np.exp(-noisy)), video


@pytest.mark.parametrize("task", [VA, EXPR, AU], ids=lambda t: t.name)
@pytest.mark.parametrize("per_output", [False, True])
def test_cross_validated_selection(task, per_output):
    y, s, video = _videos(task)
    ks = list(range(0, 40, 4))
    sel = cross_validated_selection(task, y, s, video, ks, n_splits=4, per_output=per_output)
    assert len(sel.fold_k) == 4
    # smoothing noisy scores of a slow signal helps, and in-sample is at least as good as held-out on average
    assert sel.in_sample > sel.baseline
    assert sel.cv <= sel.in_sample + 0.02
    kk = np.atleast_1d(sel.k)
    assert all(k in ks for k in kk)
    if task is AU:
        assert len(sel.thresholds) == 12
    d = sel.to_dict()
    assert d["optimism"] == pytest.approx(sel.in_sample - sel.cv)


def test_selection_needs_enough_videos():
    y, s, video = _videos(VA, n_videos=3)
    with pytest.raises(InputError, match="at least 5 videos"):
        cross_validated_selection(VA, y, s, video, [0, 1], n_splits=5)
