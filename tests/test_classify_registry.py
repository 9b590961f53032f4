"""The head registry and factory: one list of kinds with their tasks, make_head keeps the options a constructor
takes, parameters are checked in fit (the scikit-learn way), clone keeps the feature set, and k-fold and bagging
build their members through one path."""
import json
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

import classify  # noqa: F401  (sets the OpenMP wait policy before torch loads)
from classify import factory, registry
from classify.base import ParameterError, load_head
from classify.factory import head_class, head_params, list_heads, make_head, reads
from classify.fusion import FusionMLPHead
from classify.kfold import KFoldHead
from classify.mlp import MLPHead
from classify.rules import AFFECTNET8, LogitsRule
from features.errors import InputError

EXPECTED = {"mlp": ("va", "expr", "au"), "lama": ("va", "expr", "au"), "fusion_mlp": ("va", "expr", "au"),
            "temporal": ("va", "expr", "au"), "bagging": ("expr",), "polarity": ("va",), "va_only": ("va",),
            "logits": ("expr",), "blend": ("va", "expr", "au"), "kfold": ("va", "expr", "au")}


def expr_data(n=240, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    X = rng.normal(0, 1, (n, d)).astype(np.float32)
    X[np.arange(n), y] += 2.0
    return X, y


def test_one_registry_lists_every_kind_with_its_tasks():
    assert {k: registry.entry(k).tasks for k in list_heads()} == EXPECTED
    assert list_heads("rule") == ["va_only", "logits"] and list_heads("wrapper") == ["kfold"]
    assert set(list_heads(task="va")) == {k for k, t in EXPECTED.items() if "va" in t}
    for kind in list_heads():
        cls = head_class(kind)
        assert cls.kind == kind and registry.registered(cls).cls is cls
        # every constructor parameter has a declared constraint (scikit-learn checks them in fit)
        assert set(head_params(kind)) == set(cls._parameter_constraints), kind
    # the table in classify.factory's docstring says what the registry holds
    table = re.findall(r"^\| `(\w+)` +\| (\w+) +\| ([\w, ]+?) +\|", factory.__doc__, re.M)
    assert {k: (role, tuple(t.split(", "))) for k, role, t in table} == \
        {k: (registry.entry(k).role, registry.entry(k).tasks) for k in list_heads()}
    with pytest.raises(InputError, match="unknown head kind 'svm'"):
        head_class("svm")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_head("mlp")(type("Other", (), {}))


def test_make_head_keeps_the_options_its_constructor_takes():
    opts = dict(epochs=3, hidden=16, window=32, heads_n=2, timeout=5, feature_set="e/embedding", nonsense=1)
    h = make_head("mlp", "expr", **opts)
    assert type(h) is MLPHead and h.epochs == 3 and h.hidden == 16 and h.feature_set == "e/embedding"
    assert not hasattr(h, "window") and not hasattr(h, "timeout") and not hasattr(h, "nonsense")
    t = make_head("temporal", "va", **opts)
    assert t.window == 32 and t.heads_n == 2 and t.epochs == 3 and not hasattr(t, "timeout")
    assert make_head("lama", "au", **opts).timeout == 5
    assert "hidden" in reads("bagging") and "hidden" not in head_params("bagging")   # through its fusion member
    with pytest.raises(InputError, match="the polarity gate is for the VA task, not expr"):
        make_head("polarity", "expr")


@pytest.mark.parametrize("params, name", [(dict(batch=0), "batch"), (dict(epochs=0), "epochs"),
                                          (dict(batch=True), "batch"), (dict(lr=float("nan")), "lr"),
                                          (dict(hidden=-1), "hidden")])
def test_mlp_parameters_are_checked_in_fit(params, name):
    X, y = expr_data()
    with pytest.raises(ParameterError, match=rf"^The '{name}' parameter of MLPHead must be .* Got .* instead\.$") \
            as e:
        MLPHead("expr", **params).fit(X, y)
    assert isinstance(e.value, InputError) and isinstance(e.value, InvalidParameterError)
    assert "\n" not in str(e.value)


def test_rules_between_parameters_and_the_task_are_checked_in_fit():
    X, y = expr_data()
    with pytest.raises(InputError, match="must be a multiple of --heads-n 4"):
        make_head("temporal", "expr", width=30, heads_n=4).fit(X, y)
    with pytest.raises(InputError, match="loss 'focal' is for multilabel tasks, not expr"):
        FusionMLPHead("expr", loss="focal").fit(X, y)
    with pytest.raises(InputError, match="the va_only rule is for the VA task, not expr"):
        head_class("va_only")("expr").fit(X[:, :2])


def test_clone_keeps_the_feature_set_and_the_task_as_given():
    h = MLPHead("expr", epochs=2, feature_set="e/embedding")
    c = clone(h)
    assert c.feature_set == "e/embedding" and c.get_params()["task"] == "expr" and c.task.name == "expr"
    assert vars(c)["task"] == "expr"                     # stored as given; read back as the Task
    assert "feature_set" not in h.params                 # head.json records it beside the params


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_kfold_and_bagging_members_get_the_task_and_feature_set(tmp_path):
    X, y = expr_data()
    groups = np.repeat(np.arange(6), 40)
    member = LogitsRule("expr", class_names=AFFECTNET8, max_iter=5)
    k = make_head("kfold", "expr", estimator=member, n_splits=2, feature_set="e/logits").fit(X, y, groups=groups)
    assert all(m.feature_set == "e/logits" for m in k.estimators_) and member.feature_set is None
    b = make_head("bagging", "expr", estimator=FusionMLPHead("expr", epochs=1), n_estimators=2, seed=3,
                  feature_set="e/logits").fit(X, y)
    assert [m.seed for m in b.estimators_] == [3, 4] and {m.feature_set for m in b.estimators_} == {"e/logits"}
    k.save(tmp_path / "k")
    meta = json.loads((tmp_path / "k" / "head.json").read_text())
    assert meta["feature_set"] == "e/logits" and "feature_set" not in meta["params"]
    g = load_head(tmp_path / "k", task="expr")
    assert isinstance(g, KFoldHead) and g.feature_set == "e/logits" and g.estimators_[0].feature_set == "e/logits"
    np.testing.assert_allclose(g.predict_proba(X), k.predict_proba(X), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_saved_params_outside_the_constraints_are_refused_on_load(tmp_path):
    X, y = expr_data()
    LogitsRule("expr", class_names=AFFECTNET8, max_iter=5).fit(X, y).save(tmp_path / "h")
    p = tmp_path / "h" / "head.json"
    meta = json.loads(p.read_text())
    meta["params"]["hidden"] = 0
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"head.json: The 'hidden' parameter of LogitsRule must be an int"):
        load_head(tmp_path / "h")
    meta["params"]["hidden"], meta["params"]["feature_set"] = 4, "x/y"
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="logits heads take no parameter 'feature_set'"):
        load_head(tmp_path / "h")


def test_keras_mlp_takes_float_class_labels():
    X, y = expr_data(n=64)
    p = MLPHead("expr", epochs=1, hidden=4).fit(X, y.astype(np.float64)).predict_proba(X)
    assert p.shape == (64, 8) and np.isfinite(p).all()
