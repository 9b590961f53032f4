"""Per-AU thresholds against brute force; cross-validated selection behaves honestly."""
import numpy as np
import pytest

from features.errors import InputError
from features.tasks import AU, EXPR, VA
from postprocess.selection import cross_validated_selection
from postprocess.sweep import tune_au_k_thresholds
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


def test_au_without_positives_keeps_threshold_half_under_every_method():
    """All F1 tie at 0 for a column without positives: the first tied threshold (0.1 on the grid, 0.01 in the
    per-AU (k, threshold) search) would predict that AU almost everywhere; every method keeps 0.5 instead."""
    y, s, video = _videos(AU, seed=2)
    y[:, 7] = 0                                                  # AU15 never present on validation
    s[:, 7] = np.random.default_rng(0).uniform(0.05, 0.4, len(s))
    tuned = {m: tune_thresholds(y, s, m) for m in ("grid", "exact", "fixed")}
    for t in tuned.values():
        assert t.thresholds[7] == 0.5 and t.f1[7] == 0
    for t in tuned.values():
        assert t.no_positives.tolist() == [j == 7 for j in range(12)]
    comp = compare_thresholds(y, s)
    assert comp.thr_grid.iloc[7] == comp.thr_exact.iloc[7] == 0.5
    tun = tune_au_k_thresholds(y, s, video, [0, 2, 5, 9])
    assert tun.thresholds[7] == 0.5 and tun.shared_thresholds[7] == 0.5
    assert tun.k[7] == tun.shared_k and tun.no_positives[7] and tun.no_positives.sum() == 1
    assert (tun.thresholds[np.arange(12) != 7] < 0.5).any()     # the others are still tuned
    sel = cross_validated_selection(AU, y, s, video, [0, 2, 5, 9], n_splits=3, per_output=True)
    assert sel.thresholds[7] == 0.5 and all(ft[7] == 0.5 for ft in sel.fold_thresholds)
    assert all(fk[7] in (0, 2, 5, 9) for fk in sel.fold_k)


def test_sweep_and_submit_with_an_au_absent_from_validation(tmp_path, capsys):
    """`sweep --per-output` then `submit`: the absent AU is not predicted on every test frame."""
    from postprocess.cli import main
    from postprocess.scores import save_scores
    y, s, video = _videos(AU, seed=3, n_videos=6)
    y[:, 7] = 0
    s[:, 7] = np.random.default_rng(1).uniform(0.05, 0.4, len(s))
    frame = np.concatenate([np.arange(1, (video == v).sum() + 1) for v in np.unique(video)])
    run = tmp_path / "run"
    run.mkdir()
    save_scores(run / "scores.h5", "val", video, frame, s, y=y, attrs={"task": "au"})
    save_scores(run / "scores.h5", "test", video, frame, s, attrs={"task": "au"})
    samples = tmp_path / "samples.txt"
    samples.write_text("".join(f"{v}/{f:05d}.jpg\n" for v, f in zip(video, frame)))
    assert main(["sweep", "--run", str(run), "--k", "0:6", "--cv", "0", "--per-output", "--thresholds", "grid",
                 "--timelines", "0"]) == 0
    out = capsys.readouterr().out
    import json
    cfg = json.loads((run / "postprocess.json").read_text())
    sub = tmp_path / "au.txt"
    assert main(["submit", "--run", str(run), "--samples", str(samples), "--out", str(sub)]) == 0
    au15 = [int(ln.split(",")[8]) for ln in sub.read_text().splitlines()[1:]]
    assert len(au15) == len(s) and sum(au15) == 0
    assert cfg["thresholds"][7] == 0.5 and cfg["per_output"]["thresholds"][7] == 0.5
    line = next(ln for ln in out.splitlines() if ln.startswith("no positive frame on split val for"))
    assert "AU15" in line and "stays 0.5" in line and "AU15" in cfg["no_positives"]
