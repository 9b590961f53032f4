import numpy as np
import pytest
from sklearn.metrics import f1_score

from features import metrics
from features.errors import InputError
from features.tasks import AU, EXPR, VA, get_task


def test_ccc_hand_computed():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([2.0, 3.0, 4.0])          # shifted by one: rho = 1, var 2/3 each, mean diff 1
    assert metrics.ccc(x, y) == pytest.approx(2 * (2 / 3) / (2 / 3 + 2 / 3 + 1))
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    c = x - x.mean()
    assert metrics.ccc(c, -c) == pytest.approx(-1.0)
    assert metrics.ccc(x, np.zeros(3)) == 0.0       # constant prediction


def test_ccc_columns_match_pearson_formula():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(500, 2))
    p = 0.5 * t + rng.normal(size=(500, 2)) + 0.3
    c = metrics.ccc(t, p)
    for j in range(2):
        rho = np.corrcoef(t[:, j], p[:, j])[0, 1]
        sx, sy = t[:, j].std(), p[:, j].std()
        ref = 2 * rho * sx * sy / (sx ** 2 + sy ** 2 + (t[:, j].mean() - p[:, j].mean()) ** 2)
        assert c[j] == pytest.approx(ref)
    assert metrics.p_va(t, p) == pytest.approx(c.mean())


def test_expr_f1_counts_absent_classes():
    y = np.array([0, 1, 1, 2])
    p = np.array([0, 1, 2, 2])
    assert metrics.expr_f1(y, p) == pytest.approx(f1_score(y, p, labels=range(8), average="macro",
                                                          zero_division=0))
    # only 3 of 8 classes present -> macro F1 over 8 is at most 3/8
    assert metrics.expr_f1(y, y) == pytest.approx(3 / 8)


def test_au_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(300, 12))
    p = rng.integers(0, 2, size=(300, 12))
    ref = f1_score(y, p, average=None, zero_division=0)
    assert np.allclose(metrics.f1_per_column(y, p), ref)
    assert metrics.au_f1(y, p) == pytest.approx(ref.mean())


def test_task_evaluate_and_decide():
    probs = np.array([[0.1, 0.9] + [0] * 6, [0.8, 0.2] + [0] * 6])
    assert EXPR.decide(probs).tolist() == [1, 0]
    assert EXPR.score(np.array([1, 0]), probs) == pytest.approx(2 / 8)
    s = np.full((2, 12), 0.4)
    assert AU.decide(s).sum() == 0
    assert AU.decide(s, thresholds=np.full(12, 0.3)).sum() == 24
    assert VA.decide(np.array([[2.0, -3.0]])).tolist() == [[1.0, -1.0]]
    with pytest.raises(InputError, match="2 labels but 3"):
        EXPR.evaluate(np.array([0, 1]), np.zeros((3, 8)))
    with pytest.raises(InputError, match="unknown task"):
        get_task("pose")
