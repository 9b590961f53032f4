"""A run folder as untrusted input to `classify predict`, `postprocess sweep` and `submit` (and `load_head`):
names and symlinks that lead out of the run, head.json with a wrong kind or params, head files missing,
truncated, swapped or without a recorded sha256, Keras files that safe mode refuses.

Shared runs, built once per session on the classify catalogue's world: `b` (mlp + logits rule + blend, final
blend), `k` (the logits rule in 2-fold k-fold, final kfold), the predict catalogue's logits run, a bagging head
saved through the API; each case copies what it damages.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from classify.base import load_head, sha256
from classify.run import run
from postprocess.cli import main as post_main

from . import Case, Result, api, cli
from helpers import build_small_world as world
from .postprocess import _shared as post_shared
from .predict import no_output, predict, shared_run


def _runs(shared: Path) -> Path:
    """shared/runs_trust/runs/expr/{b,k}: a blend of the Keras MLP and the logits rule, and a k-fold run."""
    d = shared / "runs_trust" / "runs"
    w = world(shared)
    quiet = dict(ks=[0, 2])
    if not (d / "expr" / "b" / "metrics.json").exists():
        run("expr", w / "features.h5", w / "labels", ["mlp", "logits", "blend"], name="b", runs_dir=d,
            opts={"epochs": 1, "hidden": 8}, **quiet)
    if not (d / "expr" / "k" / "metrics.json").exists():
        run("expr", w / "features.h5", w / "labels", ["logits"], name="k", runs_dir=d, opts={"kfold": 2}, **quiet)
    return d / "expr"


def _copy(tmp: Path, src: Path, name: str | None = None) -> Path:
    rd = tmp / "runs" / "expr" / (name or src.name)
    shutil.copytree(src, rd, symlinks=True)
    return rd


def _blend(tmp, shared) -> Path:
    return _copy(tmp, _runs(shared) / "b")


def _kfold(tmp, shared) -> Path:
    return _copy(tmp, _runs(shared) / "k")


def _logits(tmp, shared) -> Path:
    return _copy(tmp, shared_run(shared))


def _meta(folder: Path, edit) -> None:
    """head.json of `folder` edited by `edit(meta)` (in place)."""
    p = folder / "head.json"
    meta = json.loads(p.read_text())
    edit(meta)
    p.write_text(json.dumps(meta))


def _rehash(folder: Path, *names: str) -> None:
    """Record the current sha256 of `names` (what someone who edits a file and its head.json would do)."""
    _meta(folder, lambda m: m["sha256"].update({n: sha256(folder / n) for n in names}))


def _unhash(folder: Path, name: str) -> None:
    _meta(folder, lambda m: m["sha256"].pop(name))


def _final(rd: Path, final) -> None:
    m = json.loads((rd / "metrics.json").read_text())
    (rd / "metrics.json").write_text(json.dumps({**m, "final": final}))


def _predict(tmp, shared, rd, *args) -> Result:
    return predict(tmp, shared, *args, run_dir=rd)


def _with(make, change, *args):
    """A case: copy a shared run (`make`), damage it with `change(tmp, rd)`, predict with it."""
    def go(tmp, shared):
        rd = make(tmp, shared)
        change(tmp, rd)
        return _predict(tmp, shared, rd, *args)
    return go


# -- names and symlinks that lead out of the run -----------------------------------------------------------------
def _final_dotdot(tmp, rd):
    shutil.copytree(rd / "heads" / "logits", tmp / "runs" / "expr" / "x")      # heads/../../x from the run
    _final(rd, "../../x")


def _final_absolute(tmp, rd):
    shutil.copytree(rd / "heads" / "logits", tmp / "elsewhere")
    _final(rd, str(tmp / "elsewhere"))


def _head_symlink(tmp, rd):
    shutil.move(rd / "heads" / "logits", tmp / "elsewhere")
    (rd / "heads" / "logits").symlink_to(tmp / "elsewhere", target_is_directory=True)


def _member_dotdot(tmp, rd):
    shutil.copytree(rd / "heads" / "logits", tmp / "runs" / "expr" / "x")
    blend = rd / "heads" / "blend"
    w = json.loads((blend / "weights.json").read_text())
    w = {("../../x" if k == "logits" else k): v for k, v in w.items()}
    (blend / "weights.json").write_text(json.dumps(w))
    fitted = json.loads((blend / "fitted.json").read_text())
    (blend / "fitted.json").write_text(json.dumps({**fitted, "members_": list(w)}))
    _rehash(blend, "weights.json", "fitted.json")


def _file_symlink(tmp, rd):
    f = rd / "heads" / "logits" / "other.npz"
    shutil.move(f, tmp / "other.npz")                                         # same bytes: its sha256 matches
    f.symlink_to(tmp / "other.npz")


def _post_symlink(tmp, rd):
    (tmp / "mine.json").write_text(json.dumps({"task": "expr", "k": 1}))
    (rd / "postprocess.json").symlink_to(tmp / "mine.json")


def _post_run(tmp, shared) -> Path:
    rd = tmp / "run"
    shutil.copytree(post_shared(shared) / "run", rd)
    return rd


def _sweep_scores_symlink(tmp, shared) -> Result:
    rd = _post_run(tmp, shared)
    shutil.move(rd / "scores.h5", tmp / "other.h5")
    (rd / "scores.h5").symlink_to(tmp / "other.h5")
    (rd / "postprocess.json").unlink()
    return cli(post_main, ["sweep", "--run", rd, "--k", "0:2", "--cv", "0", "--timelines", "0"])


def _no_sweep_config(tmp, shared, res):
    assert not (tmp / "run" / "postprocess.json").exists()


def _submit_config_symlink(tmp, shared) -> Result:
    rd = _post_run(tmp, shared)
    shutil.move(rd / "postprocess.json", tmp / "theirs.json")
    (rd / "postprocess.json").symlink_to(tmp / "theirs.json")
    return cli(post_main, ["submit", "--run", rd, "--samples", post_shared(shared) / "samples.txt", "--out",
                           tmp / "out.txt"])


def _submit_scores_symlink(tmp, shared) -> Result:
    rd = _post_run(tmp, shared)
    shutil.move(rd / "scores.h5", tmp / "other.h5")
    (rd / "scores.h5").symlink_to(os.path.relpath(tmp / "other.h5", rd))        # relative: ../other.h5
    return cli(post_main, ["submit", "--run", rd, "--samples", post_shared(shared) / "samples.txt", "--out",
                           tmp / "out.txt"])


def _no_submission(tmp, shared, res):
    assert not (tmp / "out.txt").exists()


# -- head.json: kind and params ----------------------------------------------------------------------------------
def _bagging(tmp: Path, shared: Path) -> Path:
    """A bagging head (two logits-rule members) saved through the API, copied to tmp/bagging."""
    src = shared / "runs_trust" / "bagging"
    if not (src / "head.json").exists():
        from classify.bagging import BaggingHead
        from classify.rules import LogitsRule
        from features.store import FeatureStore
        from features.tasks import EXPR
        s = FeatureStore(world(shared) / "features.h5")
        X = s.read(s.videos("enet"), "enet", ("logits",)).arrays["enet/logits"]
        y = np.argmax(X, 1) % EXPR.n_outputs
        BaggingHead("expr", estimator=LogitsRule("expr", max_iter=5), n_estimators=2).fit(X, y).save(src)
    shutil.copytree(src, tmp / "bagging")
    return tmp / "bagging"


def _bagging_param(tmp, shared) -> Result:
    h = _bagging(tmp, shared)
    _meta(h, lambda m: m["params"].update(n_estimators="2"))
    return api(lambda: load_head(h, task="expr"))


def _bagging_member_kind(tmp, shared) -> Result:
    h = _bagging(tmp, shared)
    _meta(h, lambda m: m["params"].update(estimator={"kind": "svm", "params": {}}))
    return api(lambda: load_head(h, task="expr"))


def _kind_mismatch(kind, head="logits"):
    def change(tmp, rd):
        _meta(rd / "heads" / head, lambda m: m.update(kind=kind, params={}))
    return change


# -- files missing, truncated, swapped, unhashed -----------------------------------------------------------------
def _mlp_dir(rd: Path) -> Path:
    return rd / "heads" / "mlp"


def _keras_missing(tmp, rd):
    (_mlp_dir(rd) / "model.keras").unlink()


def _keras_truncated_unhashed(tmp, rd):
    f = _mlp_dir(rd) / "model.keras"
    f.write_bytes(f.read_bytes()[:1000])
    _unhash(_mlp_dir(rd), "model.keras")


def _keras_swapped_unhashed(tmp, rd):
    """Another valid model (the same one with every weight zeroed) and no recorded hash."""
    from classify.mlp import _keras
    _, keras = _keras()
    f = _mlp_dir(rd) / "model.keras"
    m = keras.models.load_model(f, compile=False)
    m.set_weights([np.zeros_like(w) for w in m.get_weights()])
    f.unlink()
    m.save(f)
    _unhash(_mlp_dir(rd), "model.keras")


def _fitted_missing(tmp, rd):
    (rd / "heads" / "logits" / "fitted.json").unlink()
    _unhash(rd / "heads" / "logits", "fitted.json")


def _lama_head(tmp, rd, fitted: bool = False):
    """A LightAutoML head in place of the logits rule: lama.pkl (never unpickled here) with its sha256."""
    h = rd / "heads" / "lama"
    h.mkdir()
    (h / "lama.pkl").write_bytes(b"not unpickled")
    names = ["lama.pkl"]
    if fitted:
        (h / "fitted.json").write_text(json.dumps({"n_features_in_": 8}))
        names.append("fitted.json")
    (h / "head.json").write_text(json.dumps({"kind": "lama", "task": "expr", "params": {"timeout": 60},
                                             "feature_set": "enet/logits",
                                             "sha256": {n: sha256(h / n) for n in names}}))
    _final(rd, "lama")
    return h


def _lama_param(tmp, rd):
    h = _lama_head(tmp, rd, fitted=True)
    _meta(h, lambda m: m["params"].update(time_out=60))


def _fold_swapped(tmp, rd):
    """fold0 replaced by another valid logits head (the logits run's, trained on other rows)."""
    fold = rd / "heads" / "logits" / "fold0"
    shutil.rmtree(fold)
    shutil.copytree(rd.parent / "r" / "heads" / "logits", fold)


def _with_logits_run(make, change):
    """Like _with, with the logits run copied beside the damaged one (tmp/runs/expr/r)."""
    def go(tmp, shared):
        _logits(tmp, shared)
        return _with(make, change)(tmp, shared)
    return go


def _fold_file_swapped(tmp, rd):
    fold0, fold1 = (rd / "heads" / "logits" / f"fold{i}" for i in (0, 1))
    shutil.copyfile(fold1 / "other.npz", fold0 / "other.npz")
    _unhash(fold0, "other.npz")
    _rehash(fold0.parent, "fold0/head.json")


# -- Keras files that safe mode refuses --------------------------------------------------------------------------
def _lambda_keras(f: Path) -> None:
    """A model.keras whose Lambda layer carries Python bytecode (safe mode refuses to deserialise it)."""
    from classify.mlp import _keras
    _, keras = _keras()
    inp = keras.Input((8,))
    out = keras.layers.Lambda(lambda x: keras.ops.softmax(x))(keras.layers.Dense(7)(inp))
    f.unlink()
    keras.Model(inp, out).save(f)


def _keras_lambda(tmp, rd):
    _lambda_keras(_mlp_dir(rd) / "model.keras")
    _rehash(_mlp_dir(rd), "model.keras")


def _keras_lambda_api(tmp, shared) -> Result:
    h = tmp / "mlp"
    shutil.copytree(_runs(shared) / "b" / "heads" / "mlp", h)
    _lambda_keras(h / "model.keras")
    _rehash(h, "model.keras")
    return api(lambda: load_head(h))


def _keras_foreign_module(tmp, rd):
    """A model.keras whose config names a function of another module (os.system) as a layer."""
    f = _mlp_dir(rd) / "model.keras"
    with zipfile.ZipFile(f) as z:
        items = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(items["config.json"])
    layers = cfg["config"]["layers"]
    layers[-1] = {**layers[-1], "module": "os", "class_name": "system", "config": f"touch {tmp / 'pwned'}",
                  "registered_name": None}
    items["config.json"] = json.dumps(cfg).encode()
    f.unlink()
    with zipfile.ZipFile(f, "w") as z:
        for n, b in items.items():
            z.writestr(n, b)
    _rehash(_mlp_dir(rd), "model.keras")


def _nothing_ran(tmp, shared, res):
    no_output(tmp, shared, res)
    assert not (tmp / "pwned").exists()


def _table(tmp, shared, res):
    import pandas as pd
    t = pd.read_csv(tmp / "p.csv")
    assert len(t) > 0 and t["label"].notna().all()


P = "classify predict"
CASES = [
    # valid runs of every shape used below load and predict
    Case(P, "a blend run (Keras MLP + logits rule)", lambda tmp, shared: _predict(tmp, shared, _blend(tmp, shared)),
         expect=None, check=_table),
    Case(P, "a k-fold run (logits rule, 2 folds)", lambda tmp, shared: _predict(tmp, shared, _kfold(tmp, shared)),
         expect=None, check=_table),
    # names and symlinks that lead out of the run
    Case(P, "metrics.json final head ../../x", _with(_logits, _final_dotdot), expect="not a plain name",
         check=no_output, defect="silent"),
    Case(P, "metrics.json final head an absolute path", _with(_blend, _final_absolute), expect="not a plain name",
         check=no_output, defect="silent"),
    Case(P, "heads/<final> a symlink out of the run", _with(_kfold, _head_symlink), expect="leads outside",
         check=no_output, defect="silent"),
    Case(P, "blend weights.json names member ../../x", _with(_blend, _member_dotdot),
         expect="blend member '../../x' is not a plain name", check=no_output, defect="silent"),
    Case(P, "a head file a symlink out of the run", _with(_logits, _file_symlink), expect="leads outside",
         check=no_output, defect="silent"),
    Case(P, "postprocess.json a symlink out of the run", _with(_logits, _post_symlink), expect="leads outside",
         check=no_output, defect="silent"),
    Case("postprocess sweep", "scores.h5 a symlink out of the run", _sweep_scores_symlink, expect="leads outside",
         check=_no_sweep_config, defect="silent"),
    Case("postprocess submit", "postprocess.json a symlink out of the run", _submit_config_symlink,
         expect="leads outside", check=_no_submission, defect="silent"),
    Case("postprocess submit", "scores.h5 a relative symlink out of the run", _submit_scores_symlink,
         expect="leads outside", check=_no_submission, defect="silent"),
    # head.json: kind and params
    Case(P, "logits head.json with an unknown parameter",
         _with(_logits, lambda tmp, rd: _meta(rd / "heads" / "logits", lambda m: m["params"].update(hiden=64))),
         expect="logits heads take no parameter 'hiden'", check=no_output, defect="traceback"),
    Case(P, "logits head.json class_names a number",
         _with(_logits, lambda tmp, rd: _meta(rd / "heads" / "logits", lambda m: m["params"].update(class_names=5))),
         expect="parameter 'class_names' must be a list of str or null", check=no_output, defect="traceback"),
    Case(P, "LightAutoML head.json with an unknown parameter", _with(_logits, _lama_param, "--allow-pickle"),
         expect="lama heads take no parameter 'time_out'", check=no_output, defect="traceback"),
    Case("classify heads", "bagging head.json n_estimators a string (API)", _bagging_param,
         expect="parameter 'n_estimators' must be int", defect="silent"),
    Case("classify heads", "bagging head.json member of an unknown kind (API)", _bagging_member_kind,
         expect="unknown head kind 'svm'", defect="silent"),
    Case(P, "k-fold head.json kind a list",
         _with(_kfold, lambda tmp, rd: _meta(rd / "heads" / "logits", lambda m: m.update(kind=["kfold"]))),
         expect="kind must be a head kind's name", check=no_output, defect="traceback"),
    Case(P, "blend member head.json says logits over a Keras MLP's files",
         _with(_blend, _kind_mismatch("logits", "mlp")),
         expect="the kind in head.json does not match the files", check=no_output, defect="silent"),
    Case(P, "logits head.json says lama", _with(_logits, _kind_mismatch("lama"), "--allow-pickle"),
         expect="the kind in head.json does not match the files", check=no_output, defect="misleading"),
    Case(P, "k-fold head.json says bagging", _with(_kfold, _kind_mismatch("bagging")),
         expect="a bagging head saves no folder here", check=no_output, defect="misleading"),
    # files missing, truncated, swapped, without a recorded sha256
    Case(P, "Keras MLP member without model.keras", _with(_blend, _keras_missing), expect="model.keras: is missing",
         check=no_output, defect="traceback"),
    Case(P, "Keras model.keras truncated, its sha256 removed", _with(_blend, _keras_truncated_unhashed),
         expect="model.keras: no sha256 recorded", check=no_output, defect="traceback"),
    Case(P, "Keras model.keras swapped, its sha256 removed", _with(_blend, _keras_swapped_unhashed),
         expect="model.keras: no sha256 recorded", check=no_output, defect="silent"),
    Case(P, "logits head without fitted.json", _with(_logits, _fitted_missing), expect="fitted.json: is missing",
         check=no_output, defect="traceback"),
    Case(P, "LightAutoML head without fitted.json", _with(_logits, _lama_head, "--allow-pickle"),
         expect="fitted.json: is missing", check=no_output, defect="traceback"),
    Case(P, "k-fold member folder swapped for another head", _with_logits_run(_kfold, _fold_swapped),
         expect="fold0/head.json: sha256 differs", check=no_output, defect="silent"),
    Case(P, "k-fold member file swapped, its sha256 removed", _with(_kfold, _fold_file_swapped),
         expect="other.npz: no sha256 recorded", check=no_output, defect="silent"),
    # Keras files that safe mode refuses
    Case(P, "Keras model.keras with a Lambda layer", _with(_blend, _keras_lambda), expect="Keras' safe mode refuses",
         check=no_output, defect="traceback"),
    Case("classify heads", "Keras model.keras with a Lambda layer (API)", _keras_lambda_api,
         expect="Keras' safe mode refuses", defect="traceback"),
    Case(P, "Keras model.keras naming os.system as a layer", _with(_blend, _keras_foreign_module),
         expect="cannot load the Keras model", check=_nothing_ran, defect="traceback"),
]
