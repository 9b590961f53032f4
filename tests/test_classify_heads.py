"""Heads on arrays: each learns the synthetic signal, blends, save/reload, rules and bad input."""
import numpy as np
import pytest

from classify.base import check_xy, load_head
from classify.blend import BlendHead, simplex_grid
from classify.lama import LamaHead
from classify.mlp import MLPHead
from classify.rules import AFFECTNET8, FER7, LogitsRule, VAOnly, affwild_probabilities, softmax
from features.errors import InputError
from features.metrics import f1_per_column
from features.synthetic import make_feature_data
from features.tasks import AU, EXPR, VA

LABELS = {"expr": "y_expr", "va": "y_va", "au": "y_au"}


@pytest.fixture(scope="module")
def data():
    """Train (videos 0-29) and validation (30-44) from one synthetic feature set (one projection)."""
    d = make_feature_data(9000, 48, 45, seed=0, noise=1.0)
    tr = d.video < 30
    return d, tr, ~tr


def split(data, task):
    d, tr, va = data
    y = getattr(d, LABELS[task])
    return d.X[tr], y[tr], d.X[va], y[va]


@pytest.fixture(scope="module")
def fitted(data):
    """One MLP per task (the reference configuration, few epochs; VA with a smaller batch for enough steps)."""
    out = {}
    for task in ("expr", "va", "au"):
        kw = dict(batch=128, lr=1e-2) if task == "va" else {}
        out[task] = MLPHead(task, epochs=4, **kw).fit(*split(data, task))
    return out


def test_mlp_learns_each_task_with_a_margin_over_chance(data, fitted):
    _, _, Xv, yv = split(data, "expr")
    p = fitted["expr"].predict_proba(Xv)
    assert p.shape == (len(Xv), 8) and np.allclose(p.sum(1), 1, atol=1e-4)
    chance = EXPR.score(yv, np.eye(8)[np.random.default_rng(0).integers(0, 8, len(yv))])
    assert EXPR.score(yv, p) > chance + 0.25
    _, _, Xv, yv = split(data, "va")
    p = fitted["va"].predict_proba(Xv)
    assert p.shape == (len(Xv), 2) and np.abs(p).max() <= 1
    assert VA.score(yv, p) > 0.4                          # chance is CCC 0
    _, _, Xv, yv = split(data, "au")
    p = fitted["au"].predict_proba(Xv)
    all_on = f1_per_column(yv, np.ones_like(yv)).mean()  # the best constant prediction
    assert AU.score(yv, p) > all_on + 0.15


def test_mlp_keeps_the_best_validation_epoch(fitted):
    h = fitted["expr"]
    assert len(h.history) == 4 and h.best_epoch == int(np.argmax(h.history)) + 1


def test_mlp_float16_input_and_params(data):
    X, y, Xv, yv = split(data, "expr")
    h = MLPHead("expr", hidden=16, epochs=1, batch=512, lr=3e-3)
    assert h.get_params()["hidden"] == 16 and h.set_params(epochs=2).params["epochs"] == 2 and h.epochs == 2
    assert X.dtype == np.float16
    h.fit(X, y, Xv, yv)
    assert h.model_.layers[-2].units == 16 and h.predict(Xv).shape == (len(Xv),)


def test_save_reload_identical_and_refuses_other_task(fitted, data, tmp_path):
    _, _, Xv, _ = split(data, "au")
    h = fitted["au"]
    h.feature_set = "ext/embedding"
    h.save(tmp_path / "au_mlp")
    g = load_head(tmp_path / "au_mlp", task="au")
    np.testing.assert_array_equal(g.predict_proba(Xv), h.predict_proba(Xv))
    assert g.feature_set == "ext/embedding" and g.params == h.params
    with pytest.raises(InputError, match="trained for task 'au', not 'expr'"):
        load_head(tmp_path / "au_mlp", task="expr")
    with pytest.raises(InputError, match="not empty"):
        h.save(tmp_path / "au_mlp")                       # nothing valid is overwritten
    with pytest.raises(InputError, match="no head.json"):
        load_head(tmp_path)


def test_blend_at_least_its_best_member_and_reloads(fitted, data, tmp_path):
    _, _, Xv, yv = split(data, "expr")
    good = fitted["expr"].predict_proba(Xv)
    rng = np.random.default_rng(1)
    noisy = softmax(np.log(good + 1e-6) + rng.normal(0, 2, good.shape)).astype(np.float32)
    members = {"mlp": good, "noisy": noisy, "flat": np.full_like(good, 1 / 8)}
    b = BlendHead("expr").fit(members, yv)
    best_single = max(EXPR.score(yv, s) for s in members.values())
    assert EXPR.score(yv, b.predict_proba(members)) >= best_single - 1e-12
    assert np.isclose(sum(b.weights), 1) and (b.weights >= 0).all()
    assert "grid" in b.search_method
    b.save(tmp_path / "blend")
    g = load_head(tmp_path / "blend", task="expr")
    np.testing.assert_array_equal(g.predict_proba(members), b.predict_proba(members))
    with pytest.raises(InputError, match="missing"):
        g.predict_proba({"mlp": good})


def test_blend_coordinate_search_beyond_four_members(data, fitted):
    _, _, Xv, yv = split(data, "va")
    good = fitted["va"].predict_proba(Xv)
    rng = np.random.default_rng(2)
    members = {f"m{i}": np.clip(good + rng.normal(0, 0.3 * (i + 1), good.shape), -1, 1) for i in range(5)}
    b = BlendHead("va").fit(members, yv)
    assert "coordinate" in b.search_method
    assert VA.score(yv, b.predict_proba(members)) >= max(VA.score(yv, s) for s in members.values()) - 1e-12


def test_simplex_grid_holds_the_one_hot_weights():
    g = simplex_grid(3, 0.1)
    assert len(g) == 66 and np.allclose(g.sum(1), 1)
    for e in np.eye(3):
        assert (np.abs(g - e).sum(1) < 1e-9).any()


def test_logits_rule_maps_affectnet_and_fer_orders():
    # a logit row that favours AffectNet "Happiness" (column 4) -> Aff-Wild2 Happiness (column 4)
    z = np.full((2, 8), -3.0)
    z[0, 4] = 3
    z[1, 0] = 3                                           # AffectNet Anger -> Aff-Wild2 Anger (column 1)
    p = affwild_probabilities(AFFECTNET8, z)
    assert p.argmax(1).tolist() == [4, 1] and np.allclose(p.sum(1), 1)
    # the softmax runs over classes: probabilities of one row do not depend on the other rows
    np.testing.assert_allclose(affwild_probabilities(AFFECTNET8, z[:1]), p[:1], rtol=1e-6)
    f = affwild_probabilities(FER7, np.eye(7)[[3, 6]] * 5)   # happy, neutral
    assert f.argmax(1).tolist() == [4, 0] and np.allclose(f[:, 7], 0)
    with pytest.raises(InputError, match="no Aff-Wild2 counterpart"):
        affwild_probabilities(("a", "b"), np.zeros((1, 2)))


def test_logits_rule_other_detector_and_reload(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 3000)
    z = rng.normal(0, 1, (3000, 8))
    z[np.arange(3000), np.array([5, 0, 2, 3, 4, 6, 7, 1])[y]] += 3   # logits in AffectNet order
    z[y == 7, 1] -= 3                                                # Other is not Contempt...
    z[y == 7, 0] += 2.5                                              # ...but angry and disgusted at once
    z[y == 7, 2] += 2.5
    h = LogitsRule("expr", class_names=AFFECTNET8).fit(z[:2000], y[:2000])
    p = h.predict_proba(z[2000:])
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert EXPR.score(y[2000:], p) > 0.6
    assert (p[:, 7] >= 0.5).sum() > 0 and (p.argmax(1)[p[:, 7] >= 0.5] == 7).all()
    h.save(tmp_path / "logits")
    np.testing.assert_array_equal(load_head(tmp_path / "logits").predict_proba(z[2000:]), p)
    with pytest.raises(InputError, match="EXPR task"):
        LogitsRule("au").fit(z[:50], y[:50])


def test_va_only_rule():
    X = np.array([[0.5, -2.0], [1.5, 0.1]], np.float32)
    np.testing.assert_allclose(VAOnly().fit(X).predict_proba(X), [[0.5, -1.0], [1.0, 0.1]], rtol=1e-6)
    with pytest.raises(InputError, match="2 valence/arousal"):
        VAOnly().fit(np.zeros((2, 3)))
    with pytest.raises(InputError, match="VA task"):
        VAOnly("expr").fit(X)


def test_bad_input_to_heads(data):
    X, y, Xv, yv = split(data, "expr")
    bad = X[:500].astype(np.float32)
    bad[7, 3] = np.nan
    with pytest.raises(InputError, match=r"1 rows hold NaN or infinite values \(first: row 7\)"):
        MLPHead("expr", epochs=1).fit(bad, y[:500])
    bad[7, 3] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        MLPHead("expr", epochs=1).fit(X[:500], y[:500], bad, y[:500])
    with pytest.raises(InputError, match="empty split"):
        MLPHead("expr", epochs=1).fit(X[:0], y[:0])
    # labels of another task: AU rows given to an EXPR head, EXPR classes to a VA head
    d, tr, _ = data
    with pytest.raises(InputError, match=r"labels of shape \(500, 12\) do not fit the task"):
        MLPHead("expr", epochs=1).fit(X[:500], d.y_au[tr][:500])
    with pytest.raises(InputError, match="do not fit the task"):
        check_xy(VA, X[:500], y[:500])
    with pytest.raises(InputError, match="classes 0..7"):
        check_xy(EXPR, X[:3], np.array([0, 8, -1]))
    # one class only in training (LightAutoML would fail deep inside; the MLP would learn nothing)
    with pytest.raises(InputError, match=r"every row has class 4 \(Happiness\); .* at least two classes"):
        LamaHead("expr", timeout=5).fit(X[:50], np.full(50, 4))
    check_xy(EXPR, X[:3], np.array([4, 4, 4]), "validation")      # a one-class validation split is allowed
