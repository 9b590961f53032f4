"""Box filter against the reference's slicing loop, the k sweep against separate calls, per-AU (k, threshold)."""
import numpy as np
import pytest

from features.errors import InputError
from features.tasks import AU, EXPR, VA
from postprocess.segments import video_segments
from postprocess.smoothing import BoxSmoother, box_filter
from postprocess.stats import valid_rows
from postprocess.sweep import best_k, per_output_k, sweep_k, tune_au_k_thresholds, tune_expr_class_k

LENGTHS = [1, 3, 10, 57, 2, 1, 120, 33]


def _videos(lengths=LENGTHS):
    return np.repeat([f"vid{i}" for i in range(len(lengths))], lengths)


def _slow(preds, video, k, stat):
    """The reference: preds[max(i-k,0):i+k+1] per frame, applied to each video separately."""
    out = np.empty(preds.shape, np.float64)
    for v in dict.fromkeys(video):
        idx = np.flatnonzero(video == v)
        p = preds[idx].astype(np.float64)
        for i in range(len(p)):
            w = p[max(i - k, 0):i + k + 1]
            out[idx[i]] = w.mean(axis=0) if stat == "mean" else np.median(w, axis=0)
    return out


@pytest.mark.parametrize("stat", ["mean", "median"])
@pytest.mark.parametrize("k", [0, 1, 2, 7, 40, 500])
def test_box_filter_matches_reference_loop(stat, k):
    rng = np.random.default_rng(k)
    video = _videos()
    s = rng.random((len(video), 3)).astype(np.float32)
    got = box_filter(s, video, k, stat)
    assert got.shape == s.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _slow(s, video, k, stat), atol=2e-6)


def test_box_filter_never_crosses_videos_and_1d():
    video = _videos([4, 4])
    s = np.r_[np.zeros(4), np.ones(4)]
    out = box_filter(s, video, 10)
    assert out.shape == (8,)
    np.testing.assert_array_equal(out, s)           # each video is constant, so nothing leaks across


def test_box_filter_per_column_k_and_long_float64_sum():
    rng = np.random.default_rng(3)
    video = _videos([5000, 7000])
    s = rng.random((12000, 2)) + 1000.0               # large offset: a float32 cumsum would drift here
    out = box_filter(s, video, [0, 25])
    np.testing.assert_array_equal(out[:, 0], s[:, 0])
    np.testing.assert_allclose(out[:, 1], _slow(s[:, 1:], video, 25, "mean")[:, 0], rtol=0, atol=1e-9)


def test_smoother_widens_its_gaps_for_a_larger_k():
    rng = np.random.default_rng(4)
    video = _videos()
    s = rng.random((len(video), 2))
    sm = BoxSmoother(s, video, max_k=2)
    np.testing.assert_allclose(sm.smooth(45), _slow(s, video, 45, "mean"), atol=1e-12)
    assert sm.pad == 45


def test_bad_input():
    video = _videos([3, 3])
    s = np.zeros((6, 2))
    with pytest.raises(InputError, match="non-negative integer"):
        box_filter(s, video, -1)
    with pytest.raises(InputError, match="non-negative integer"):
        box_filter(s, video, 2.5)
    with pytest.raises(InputError, match="score rows but 5"):
        box_filter(s, video[:5], 1)
    bad = s.copy()
    bad[4, 1] = np.nan
    with pytest.raises(InputError, match="NaN.*row 4.*vid1"):
        box_filter(bad, video, 1)
    with pytest.raises(InputError, match="not contiguous"):
        video_segments(np.array(["a", "b", "a"]))
    with pytest.raises(InputError, match="values of k for 2"):
        box_filter(s, video, [1, 2, 3])


def _task_data(task, rng, lengths=LENGTHS):
    video = _videos(lengths)
    n, c = len(video), task.n_outputs
    base = np.cumsum(rng.normal(size=(n, c)), axis=0) * 0.1
    noisy = base + rng.normal(size=(n, c))
    if task is VA:
        y = np.tanh(base).astype(np.float32)
        y[2] = VA.invalid
        s = np.tanh(noisy)
    elif task is EXPR:
        y = base.argmax(axis=1)
        y[5] = EXPR.invalid
        s = np.exp(noisy) / np.exp(noisy).sum(axis=1, keepdims=True)
    else:
        y = (base > 0).astype(np.int64)
        y[7, 3] = AU.invalid
        s = 1 / (1 + np.exp(-noisy))
    return y, s.astype(np.float32), video


@pytest.mark.parametrize("task", [VA, EXPR, AU], ids=lambda t: t.name)
def test_sweep_equals_separate_calls(task):
    rng = np.random.default_rng(11)
    y, s, video = _task_data(task, rng)
    s = s.astype(np.float64)          # box_filter then returns float64, exactly what the sweep evaluates
    ks = [0, 1, 4, 9, 30, 200]
    thr = np.linspace(0.3, 0.7, 12) if task is AU else None
    table = sweep_k(task, y, s, video, ks, thresholds=thr)
    assert table["k"].tolist() == ks
    valid = valid_rows(task, y)
    assert not valid.all()
    for k in ks:
        ref = task.evaluate(y[valid], box_filter(s, video, k)[valid], thr)
        row = table[table.k == k].iloc[0]
        for key, val in ref.items():
            assert row[key] == pytest.approx(val, abs=1e-9), (k, key)
    assert table.loc[table.k == best_k(table), task.metric_name].iloc[0] == table[task.metric_name].max()


@pytest.mark.parametrize("stat", ["mean", "median"])
def test_above_threshold_equals_smoothing_then_comparing(stat):
    """The sweep's AU path compares cumulative excess sums instead of forming the mean; small chunks put
    video and chunk boundaries everywhere."""
    rng = np.random.default_rng(5)
    video = _videos(LENGTHS * 3)
    s = rng.random((len(video), 4))
    s[::7] = 0.5                                # exact ties at the threshold
    thr = np.array([0.5, 0.3, 0.6, 0.5])
    ks = [0, 1, 2, 5, 17, 300]
    sm = BoxSmoother(s, video, stat, max_k=max(ks), chunk=64)
    got = np.zeros((len(ks), sm.c, sm.n_pad), bool)
    for i, a, b, pred in sm.above(ks, thr):
        got[i, :, a:b] = pred
    for i, k in enumerate(ks):
        want = box_filter(s, video, k, stat) >= thr
        np.testing.assert_array_equal(got[i][:, sm.pos].T, want, err_msg=f"k={k}")


def test_au_counts_per_group_match_direct_counts():
    from postprocess.stats import AUStats
    rng = np.random.default_rng(6)
    n = 1003
    y = (rng.random((n, 12)) < 0.3).astype(np.int64)
    y[5] = AU.invalid
    group = rng.integers(0, 3, n)
    st = AUStats(AU, y, group, 3, thresholds=np.linspace(0.2, 0.8, 12))
    s = rng.random((12, n))
    st.reset()
    for a in range(0, n, 256):
        st.update(a, min(a + 256, n), s[:, a:a + 256])
    pred = (s >= st.thr).T & valid_rows(AU, y)[:, None]
    for g in range(3):
        rows = group == g
        assert st.acc[0, g].tolist() == pred[rows].sum(0).tolist()
        assert st.acc[1, g].tolist() == (pred[rows] & (y[rows] == 1)).sum(0).tolist()
    assert st.metric(st.acc, [0, 2])["P_AU"] == pytest.approx(
        AU.evaluate(y[(group != 1) & valid_rows(AU, y)], s.T[(group != 1) & valid_rows(AU, y)],
                    st.thr[:, 0])["P_AU"], abs=1e-12)


def test_sweep_median_and_bad_labels():
    rng = np.random.default_rng(2)
    y, s, video = _task_data(VA, rng)
    t = sweep_k(VA, y, s, video, [0, 3], stat="median")
    valid = valid_rows(VA, y)
    assert t.P_VA.iloc[1] == pytest.approx(VA.score(y[valid], box_filter(s, video, 3, "median")[valid]))
    with pytest.raises(InputError, match="labels but|label rows but"):
        sweep_k(VA, y[:-1], s, video, [0])
    with pytest.raises(InputError, match="non-negative"):
        sweep_k(VA, y, s, video, [0, -3])


def test_per_output_k_va():
    rng = np.random.default_rng(5)
    y, s, video = _task_data(VA, rng)
    t = sweep_k(VA, y, s, video, range(0, 30, 3))
    po = per_output_k(VA, t)
    assert po["metric"] >= po["shared_metric"] - 1e-12
    assert po["ccc"][0] == pytest.approx(t.ccc_valence.max())


def test_per_au_k_thresholds_brute_force():
    rng = np.random.default_rng(9)
    y, s, video = _task_data(AU, rng, [40, 80, 25])
    y[7, 3] = 0
    ks = [0, 2, 6]
    tun = tune_au_k_thresholds(y, s, video, ks, bins=20)
    grid = np.arange(1, 20) / 20
    smoothed = {k: box_filter(s, video, k) for k in ks}
    for j in range(12):
        best = max(_f1(y[:, j], smoothed[k][:, j] >= t) for k in ks for t in grid)
        assert tun.f1[j] == pytest.approx(best, abs=1e-12)
        assert _f1(y[:, j], box_filter(s, video, int(tun.k[j]))[:, j] >= tun.thresholds[j]) == pytest.approx(
            tun.f1[j], abs=1e-12)
    assert tun.f1.mean() >= tun.shared_f1.mean() - 1e-12
    assert tun.gain == pytest.approx(tun.f1.mean() - tun.shared_f1.mean())


def _f1(t, p):
    tp = np.sum(t.astype(bool) & p)
    den = p.sum() + t.astype(bool).sum()
    return 2 * tp / den if den else 0.0


def test_per_class_k_for_expr():
    """Long noisy episodes of classes 0-3 and short clean bursts of classes 4-7: per-class k beats the best
    shared k, gives the slow classes the wider windows, and its metric is what the chosen ks give."""
    rng = np.random.default_rng(0)
    video = _videos([400, 250, 300, 350])
    n = len(video)
    y, i = np.zeros(n, np.int64), 0
    while i < n:
        c = int(rng.integers(0, 8))
        L = int(rng.integers(60, 120) if c < 4 else rng.integers(4, 10))
        y[i:i + L], i = c, i + L
    s = np.eye(8)[y] * 1.5 + rng.normal(size=(n, 8)) * np.r_[[2.0] * 4, [0.5] * 4]
    s = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    y[::50] = EXPR.invalid
    ks = list(range(0, 41))
    tun = tune_expr_class_k(y, s, video, ks, max_candidates=9)
    table = sweep_k(EXPR, y, s, video, ks)
    assert tun.shared_k == best_k(table)
    assert tun.shared_metric == pytest.approx(table.P_EXPR.max(), abs=1e-12)
    assert tun.gain > 0.05 and len(tun.k) == 8 and set(tun.k) <= set(tun.candidates)
    assert np.mean(tun.k[:4]) > np.mean(tun.k[4:]) + 10
    valid = y != EXPR.invalid
    again = EXPR.score(y[valid], box_filter(s, video, tun.k)[valid])
    assert again == pytest.approx(tun.metric, abs=1e-12)
    assert tun.to_dict()["gain"] == pytest.approx(tun.metric - tun.shared_metric)
