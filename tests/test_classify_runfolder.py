"""classify.runfolder: what a run folder and a saved head may name and hold (the catalogue's runs.py has the
commands' cases; these are the rules themselves)."""
import inspect
import json
import os

import numpy as np
import pytest

from classify.base import load_head, sha256
from classify.factory import head_class, list_heads
from classify.kfold import KFoldHead
from classify.rules import AFFECTNET8, LogitsRule
from classify.runfolder import check_params, read_metrics
from features.errors import InputError
from features.paths import inside, plain_name


def logits_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    X = rng.normal(0, 1, (n, 8)).astype(np.float32)
    X[np.arange(n), y] += 2.0
    return X, y


@pytest.mark.parametrize("kind", list_heads())
def test_every_kinds_default_params_pass_the_check(kind, tmp_path):
    """Every constructor parameter has an annotation the check knows (else saved heads would be refused)."""
    cls = head_class(kind)
    defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()   # head.json's
                if n not in ("self", "task", "feature_set") and p.default is not inspect.Parameter.empty}  # params
    check_params(cls, json.loads(json.dumps(defaults)), tmp_path / "head.json")


def test_params_of_the_wrong_type_or_name_are_refused(tmp_path):
    where = tmp_path / "head.json"
    cls = head_class("temporal")
    check_params(cls, {"window": 16, "lr": 1, "blocks": [4, 4], "stride": None}, where)     # an int is a float
    for params, msg in (({"window": "16"}, "'window' must be int"), ({"window": True}, "'window' must be int"),
                        ({"lr": float("nan")}, "'lr' must be float"), ({"blocks": [4, "4"]}, "'blocks' must be"),
                        ({"arch": None}, "'arch' must be str"), ({"windows": 16}, "no parameter 'windows'")):
        with pytest.raises(InputError, match=msg):
            check_params(cls, params, where)
    with pytest.raises(InputError, match="member head must be given as"):
        check_params(head_class("kfold"), {"estimator": {"kind": "logits", "code": "x"}}, where)
    with pytest.raises(InputError, match="logits heads take no parameter 'width'"):
        check_params(head_class("kfold"), {"estimator": {"kind": "logits", "params": {"width": 3}}}, where)


def test_composites_record_their_members_head_json(tmp_path):
    X, y = logits_data()
    groups = np.repeat(np.arange(6), 50)
    h = KFoldHead("expr", estimator=LogitsRule("expr", class_names=AFFECTNET8, max_iter=5), n_splits=2)
    h.fit(X, y, groups=groups).save(tmp_path / "k")
    meta = json.loads((tmp_path / "k" / "head.json").read_text())
    assert set(meta["sha256"]) == {"fitted.json", "fold0/head.json", "fold1/head.json"}
    np.testing.assert_allclose(load_head(tmp_path / "k").predict_proba(X), h.predict_proba(X), rtol=1e-6)
    # an extra member folder, or one member less, than the head recorded
    (tmp_path / "k" / "fold1").rename(tmp_path / "k" / "fold7")
    with pytest.raises(InputError):
        load_head(tmp_path / "k")


def test_fitted_json_cannot_replace_what_the_head_restored(tmp_path):
    X, y = logits_data()
    y[::4] = 7
    LogitsRule("expr", max_iter=5).fit(X, y).save(tmp_path / "h")
    f = tmp_path / "h" / "fitted.json"
    good = json.loads(f.read_text())
    # the Other gate restored from other.json, a private flag, a constructor parameter, a value nested too deep
    for bad in ({"other_": None}, {"_allow_pickle": True}, {"task": "va"}, {"n_bags_": [[[[[[1]]]]]]}):
        f.write_text(json.dumps({**good, **bad}))
        meta = json.loads((tmp_path / "h" / "head.json").read_text())
        meta["sha256"]["fitted.json"] = sha256(f)
        (tmp_path / "h" / "head.json").write_text(json.dumps(meta))
        with pytest.raises(InputError, match="fitted.json: .* is not a fitted value"):
            load_head(tmp_path / "h")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifos_in_a_run_are_refused_unread(tmp_path):
    """A FIFO would block the reader forever: refused before it is opened."""
    X, y = logits_data()
    LogitsRule("expr", max_iter=5).fit(X, y).save(tmp_path / "h")
    os.unlink(tmp_path / "h" / "fitted.json")
    os.mkfifo(tmp_path / "h" / "fitted.json")
    with pytest.raises(InputError, match="fitted.json: not a regular file"):
        load_head(tmp_path / "h")
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "metrics.json")
    with pytest.raises(InputError, match="metrics.json: not a regular file"):
        read_metrics(tmp_path / "run")


def test_names_and_symlinks(tmp_path):
    for bad in ("", ".", "..", "a/b", "/abs", "a\\b", "x\0y", 3, None):
        with pytest.raises(InputError):
            plain_name(bad, "head", "metrics.json")
    assert plain_name("mlp-enet.embedding+c.embedding", "head") == "mlp-enet.embedding+c.embedding"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "loop").symlink_to(tmp_path / "run" / "loop")
    with pytest.raises(InputError):
        inside(tmp_path / "run", tmp_path / "run" / "loop")
    (tmp_path / "run" / "in").symlink_to("loop2")
    (tmp_path / "run" / "loop2").write_text("x")
    assert inside(tmp_path / "run", tmp_path / "run" / "in") == tmp_path / "run" / "in"     # stays inside
    (tmp_path / "latest").symlink_to("run")                                                  # the run is a link
    assert inside(tmp_path / "latest", tmp_path / "latest" / "in")


def test_torch_head_params_that_do_not_fit_the_weights_allocate_nothing(tmp_path):
    """A width in head.json beyond the saved weights is refused from the shapes alone (torch's meta device): the
    network it describes is never built; one beyond the head's bounds is refused before that."""
    from classify.fusion import FusionMLPHead
    X, y = logits_data()
    FusionMLPHead("expr", width=8, hidden=8, epochs=1).fit(X, y).save(tmp_path / "f")
    p = tmp_path / "f" / "head.json"
    meta = json.loads(p.read_text())
    meta["params"]["hidden"] = 8192
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"net.npz: the saved weights do not fit the head's parameters"):
        load_head(tmp_path / "f")
    meta["params"]["hidden"] = 600_000_000               # ~20 GB of weights
    p.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"head.json: The 'hidden' parameter of FusionMLPHead must be an int in the "
                                         r"range \[0, 8192\]"):
        load_head(tmp_path / "f")
