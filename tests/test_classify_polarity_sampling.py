"""VA polarity gate (extreme regions before the regression, valence fed to arousal) and AU sampling (ML-ROS,
balanced batches)."""
import numpy as np
import pytest

from classify.polarity import PolarityGateHead
from classify.sampling import balanced_probabilities, epoch_rows, ml_ros
from features.errors import InputError
from features.tasks import AU, EXPR, VA


def _extreme_va(n=6000, d=10, seed=0):
    """Valence: mostly ±0.9 clusters plus a middle; the features carry a noisy linear trace of it. Arousal =
    |valence| (it depends on valence, not on a linear map of the features)."""
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(0.9, 0.05, n // 3), rng.normal(-0.9, 0.05, n // 3),
                        rng.normal(0, 0.2, n - 2 * (n // 3))]).clip(-1, 1)
    rng.shuffle(v)
    w = rng.normal(size=d)
    X = (v[:, None] * w + rng.normal(0, 1.0, (n, d))).astype(np.float32)
    y = np.stack([v, np.abs(v) * 2 - 1], 1).astype(np.float32)
    return X, y


def test_polarity_gate_beats_one_ridge_on_extreme_values():
    from sklearn.linear_model import Ridge
    X, y = _extreme_va()
    tr = np.arange(len(X)) < 4000
    h = PolarityGateHead("va").fit(X[tr], y[tr])
    p = h.predict_proba(X[~tr])
    ridge = np.clip(np.stack([Ridge(10).fit(X[tr], y[tr, j]).predict(X[~tr]) for j in range(2)], 1), -1, 1)
    gate, plain = VA.evaluate(y[~tr], p), VA.evaluate(y[~tr], ridge)
    # arousal = |valence| is not linear in the features: only the valence fed to arousal + the gate get it
    assert gate["ccc_arousal"] > plain["ccc_arousal"] + 0.3, (gate, plain)
    assert gate["ccc_valence"] >= plain["ccc_valence"] - 0.01
    assert h.region_rows_[0][0] > 1000 and h.region_rows_[0][2] > 1000
    no_feed = PolarityGateHead("va", feed_valence=False).fit(X[tr], y[tr]).predict_proba(X[~tr])
    assert VA.evaluate(y[~tr], no_feed)["ccc_arousal"] < gate["ccc_arousal"]
    with pytest.raises(InputError, match="for the VA task"):
        PolarityGateHead("expr").fit(X[:10], np.zeros(10, int))


def test_ml_ros_clones_rows_of_minority_labels():
    rng = np.random.default_rng(0)
    y = np.zeros((1000, 3), int)
    y[:600, 0] = 1
    y[:300, 1] = 1
    y[rng.choice(1000, 30, replace=False), 2] = 1            # rare label
    clones = ml_ros(y, pct=0.25, seed=0)
    assert len(clones) <= 250 and len(clones) > 0
    assert y[clones, 2].all()                                # only rows of the minority label (the rarest) cloned
    # IRLbl by hand: counts 600, 300, 30 -> IRLbl 1, 2, 20; MeanIR = 23/3: label 2 is the only minority label,
    # cloned until its IRLbl (max count / its count) falls to MeanIR; the budget (250) is not reached
    yy = np.concatenate([y, y[clones]])
    irl = lambda c: c.max() / c[2]
    assert irl(yy.sum(0)) <= 23 / 3 < irl(yy[:-1].sum(0)) and len(clones) < 250


def test_balanced_batches_and_epoch_rows():
    y = np.zeros((100, 2), int)
    y[:50, 0] = 1
    y[:5, 1] = 1
    p = balanced_probabilities(y)
    assert p.sum() == pytest.approx(1) and p[0] / p[10] == pytest.approx(10)      # 1/0.05 vs 1/0.5
    f = epoch_rows("balanced", AU, y, 0)
    rows = np.concatenate([f(e) for e in range(20)])
    assert y[rows, 1].mean() > 3 * y[:, 1].mean()
    assert sorted(epoch_rows(None, AU, y, 0)(3)) == list(range(100))
    with pytest.raises(InputError, match="sampling 'mlros' is for the AU task"):
        epoch_rows("mlros", EXPR, np.zeros(10, int), 0)
    with pytest.raises(InputError, match="unknown sampling 'smote'"):
        epoch_rows("smote", AU, y, 0)
