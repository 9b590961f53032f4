"""The scikit-learn estimator contract, for every head: clone, set_params, unfitted and wrong-width input
refused, save -> load -> predict identical (LightAutoML's own round trip is in test_classify_lama.py)."""
import json

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError

from classify.base import Head, load_head
from classify.bagging import BaggingHead
from classify.blend import BlendHead
from classify.fusion import FusionMLPHead
from classify.kfold import KFoldHead
from classify.lama import LamaHead
from classify.mlp import MLPHead
from classify.polarity import PolarityGateHead
from classify.rules import AFFECTNET8, LogitsRule, VAOnly
from classify.temporal import TemporalHead
from features.errors import InputError
from features.synthetic import make_feature_data
from features.tasks import EXPR

TASK_Y = {"expr": "y_expr", "va": "y_va", "au": "y_au"}


@pytest.fixture(scope="module")
def data():
    return make_feature_data(1200, 16, 12, seed=3, noise=0.5)


def xy(d, task, cols=None):
    X = np.asarray(d.X, np.float32) if cols is None else np.asarray(d.X[:, :cols], np.float32)
    return X, getattr(d, TASK_Y[task])


# every head kind: (factory, task, feature columns); new heads are added here
HEADS = {
    "mlp": (lambda: MLPHead("expr", epochs=1, hidden=8), "expr", None),
    "mlp-va": (lambda: MLPHead("va", epochs=1, batch=128), "va", None),
    "logits": (lambda: LogitsRule("expr", class_names=AFFECTNET8, max_iter=5), "expr", 8),
    "va_only": (lambda: VAOnly("va"), "va", 2),
    "fusion_mlp": (lambda: FusionMLPHead("au", blocks=[10, 6], epochs=1, sampling="mlros"), "au", None),
    "temporal": (lambda: TemporalHead("va", window=16, width=16, heads_n=2, layers=1, epochs=1), "va", None),
    "kfold": (lambda: KFoldHead("expr", estimator=FusionMLPHead("au", epochs=1), n_splits=3), "expr", None),
    "bagging": (lambda: BaggingHead("expr", estimator=FusionMLPHead("expr", epochs=1), n_estimators=2,
                                    rule="priority", priority=["Other"]), "expr", None),
    "polarity": (lambda: PolarityGateHead("va", threshold=0.3), "va", None),
    "temporal-gru": (lambda: TemporalHead("expr", window=16, width=16, arch="gru", epochs=1), "expr", None),
}


def test_mlp_set_params_task_changes_the_resolved_defaults():
    """The reference per-task values are resolved at fit time: set_params(task=...) does not keep EXPR's."""
    h = MLPHead("expr")
    assert h.get_params() == dict(task="expr", hidden=None, epochs=None, batch=None, lr=None, seed=0, verbose=0,
                                  feature_set=None)
    h.set_params(task="va")
    assert h.task.name == "va" and h._resolved()["hidden"] == 0 and h._resolved()["batch"] == 1024
    assert MLPHead("expr")._resolved()["hidden"] == 128


def test_lama_stores_cpu_limit_as_given():
    h = LamaHead("expr")
    assert h.get_params()["cpu_limit"] is None
    c = clone(h.set_params(cpu_limit=2, timeout=5))
    assert c.cpu_limit == 2 and c.timeout == 5 and not hasattr(c, "model_")


def test_blend_fit_leaves_its_params_alone():
    y = np.array([0, 1, 2, 3] * 10)
    good = np.eye(8)[y].astype(np.float32)
    b = BlendHead("expr")
    b.fit({"a": good, "b": np.full_like(good, 1 / 8)}, y)
    assert b.get_params() == {"task": "expr", "members": None, "step": 0.1, "feature_set": None}
    assert b.members_ == ["a", "b"] and np.isclose(sum(b.weights_), 1)
    assert b.val_score_ == EXPR.score(y, good)
    c = clone(b)
    assert not hasattr(c, "weights_")
    with pytest.raises(NotFittedError):
        c.predict_proba({"a": good, "b": good})


@pytest.mark.parametrize("name", list(HEADS))
def test_clone_set_params_and_tags(name):
    make, task, _ = HEADS[name]
    h = make()
    assert isinstance(h, Head)
    c = clone(h)
    norm = lambda p: {k: repr(v) if isinstance(v, Head) else v for k, v in p.items()}   # nested heads
    assert type(c) is type(h) and norm(c.get_params()) == norm(h.get_params()) and c is not h
    assert (is_regressor(h) if task == "va" else is_classifier(h))
    p = h.get_params()
    assert p["task"] == task
    key = next((k for k in p if k not in ("task",) and isinstance(p[k], int) and not isinstance(p[k], bool)),
               None)
    if key is not None:
        assert h.set_params(**{key: p[key] + 1}).get_params()[key] == p[key] + 1
    with pytest.raises(ValueError):
        h.set_params(no_such_parameter=1)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(HEADS))
def test_unfitted_wrong_width_and_round_trip(name, data, tmp_path):
    make, task, cols = HEADS[name]
    X, y = xy(data, task, cols)
    rows = dict(groups=data.video, frames=data.frame)
    h = make()
    with pytest.raises(NotFittedError):
        h.predict_proba(X, **rows)
    tr = data.video < 8
    h.fit(X[tr], y[tr], X[~tr], y[~tr], groups=data.video[tr], frames=data.frame[tr],
          groups_val=data.video[~tr], frames_val=data.frame[~tr])
    assert h.n_features_in_ == X.shape[1]
    vrows = dict(groups=data.video[~tr], frames=data.frame[~tr])
    p = h.predict_proba(X[~tr], **vrows)
    assert p.shape == (int((~tr).sum()), h.task.n_outputs) and np.isfinite(p).all()
    with pytest.raises(InputError, match=f"X has {X.shape[1] + 1} features, but .* fitted with {X.shape[1]}"):
        h.predict_proba(np.hstack([X[~tr], X[~tr, :1]]), **vrows)
    h.feature_set = "ext/embedding"
    h.save(tmp_path / name)
    g = load_head(tmp_path / name, task=task)
    as_json = lambda p: json.loads(json.dumps(p))        # head.json stores tuples as lists
    assert type(g) is type(h) and g.task == h.task and as_json(g.params) == as_json(h.params)
    assert g.n_features_in_ == h.n_features_in_
    np.testing.assert_allclose(g.predict_proba(X[~tr], **vrows), p, rtol=1e-5, atol=1e-6)
    # a clone of a fitted head is unfitted
    with pytest.raises(NotFittedError):
        clone(h).predict_proba(X[~tr], **vrows)
