"""The head interface (scikit-learn-like) and saving/loading of heads as directories.

A saved head is a folder with `head.json` (kind, task, params, feature set, the sha256 of every file written)
beside the head's own files, so loading refuses a head made for another task with one clear line.

Loading never runs code from the folder by default: heads store plain arrays (Keras' `.keras` format loaded
without custom objects, JSON, NPZ read with ``allow_pickle=False``). The one exception is a LightAutoML model,
which only exists as a pickle: a head kind lists such files in `Head.pickled`, and `load_head` opens them only
with ``allow_pickle=True`` and only when their bytes still match the sha256 recorded when the head was saved.
"""
from __future__ import annotations

import hashlib
import json
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils._param_validation import (Interval, InvalidParameterError, make_constraint,
                                             validate_parameter_constraints)
from sklearn.utils.validation import check_is_fitted

from features.cliargs import INT32_MAX, SEED_MAX
from features.errors import InputError
from features.finite import nonfinite_rows
from features.outputs import json_default, write_output
from features.serialized_code import file_globals, refusal
from features.tasks import Task, get_task

from .registry import registered


class ParameterError(InputError, InvalidParameterError):
    """A constructor parameter outside the constraints its head declares: scikit-learn's InvalidParameterError
    (with its message) and an InputError, so the commands print it as their one line."""


def check_constraints(constraints: dict, params: dict, caller: str) -> None:
    """scikit-learn's parameter validation (`_parameter_constraints`), with booleans refused where a number is
    wanted (scikit-learn counts True as an integer: `batch=True` would train with batches of 1 row)."""
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is None or allowed == "no_validation" or not isinstance(value, (bool, np.bool_)):
            continue
        if not any(c in ("boolean", "verbose", bool, object) for c in allowed):
            shown = [str(make_constraint(c)) for c in allowed]
            shown = [s for s in shown if s]
            raise ParameterError(f"The {name!r} parameter of {caller} must be "
                                 f"{', '.join(shown[:-1]) + ' or ' if len(shown) > 1 else ''}{shown[-1]}. "
                                 f"Got {value!r} instead.")
    try:
        validate_parameter_constraints(constraints, params, caller_name=caller)
    except InvalidParameterError as e:
        raise ParameterError(str(e)) from None


def integers(low: int, high: int | None = None) -> Interval:
    """The constraint "an integer in [low, high]" (no upper bound when `high` is None)."""
    return Interval(Integral, low, high, closed="both" if high is not None else "left")


# Bounds of the numbers heads take (checked in fit, when a saved head is loaded, and on the command line's flags,
# classify.options). The largest values keep every allocation a number drives to a few hundred MB (hidden units
# and widths size weight matrices, batch the rows copied per step) and fit the libraries' types (32-bit seeds);
# windows, folds and row samples are also bounded by the data where it is read (temporal.check_window, kfold,
# lama.sample_rows).
SEED = integers(0, SEED_MAX)
EPOCHS = integers(1, 10_000)
BATCH = integers(1, 65_536)
HIDDEN = integers(0, 8192)           # 0: no hidden layer
ROWS = integers(0, INT32_MAX)        # a row sample; 0 (or None): every row


# scikit-learn's fit decorator: parameters validated (Head._validate_params) before the fit itself runs
fit_context = _fit_context


class _GivenTask:
    """`head.task`: stored as given (a name or a Task; what get_params, clone and set_params see, and what
    `vars(head)` holds), read back as the Task (`head.task.kind`)."""

    def __get__(self, head, owner=None):
        if head is None:
            return self
        return get_task(_task_name(head.__dict__["task"]))

    def __set__(self, head, value) -> None:
        head.__dict__["task"] = value


def _task_name(value):
    if not isinstance(value, (str, Task)):
        raise InputError(f"a head's task is a task name (va, expr, au) or a Task, got {value!r}")
    return value


class Head(BaseEstimator):
    """fit / predict_proba / predict / get_params / set_params / save / load for one `Task`, a scikit-learn
    estimator: `__init__` stores its arguments as given (defaults resolved in `fit`), fitted state ends with `_`,
    `sklearn.base.clone` and `set_params` work, predicting before `fit` or with another feature count fails.

    predict_proba returns the task's score array: VA values (n, 2), EXPR probabilities (n, 8), AU per-AU
    probabilities (n, 12); predict returns the challenge predictions (Task.decide). `groups` (video ids) and
    `frames` (frame numbers) of the rows are accepted by every head, as scikit-learn's `groups`; only temporal
    heads use them.

    `task` is stored as given (a name or a Task) and read back as the Task (`head.task.kind`): get_params returns
    what was given, so clone and set_params keep it. `feature_set` (the cache's feature set the head reads, saved
    with it) is a parameter like the others, so a clone keeps it.

    Parameters are checked in `fit` (decorated with `fit_context`), the scikit-learn way: each head declares
    `_parameter_constraints`; `_check_params` adds the rules between parameters; a kind fitted for a task it is
    not made for is refused (classify.registry). The error is a `ParameterError` (an InputError).
    """
    kind = "head"                     # set by classify.registry.register_head
    pickled: tuple[str, ...] = ()     # files of a saved head that are pickles (loaded only with allow_pickle)
    # what a saved head of this kind holds beside head.json (classify.runfolder refuses anything else)
    files: tuple[str, ...] = ("fitted.json",)
    optional_files: tuple[str, ...] = ()
    member_prefix: str | None = None  # composites: member heads in <prefix>0/, <prefix>1/, ...

    task = _GivenTask()
    _parameter_constraints: dict = {"task": [str, Task], "feature_set": [str, None]}

    def __init__(self, task: str | Task, feature_set: str | None = None):
        self.task = task
        self.feature_set = feature_set

    def get_params(self, deep: bool = True) -> dict:
        """scikit-learn's, with the task as given (a bad task fails where it is used, not here)."""
        out = {}
        for key in self._get_param_names():
            value = self.__dict__["task"] if key == "task" else getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    @property
    def params(self) -> dict:
        """The constructor arguments other than the task and the feature set (what head.json records as params;
        it records those two beside them)."""
        return {k: v for k, v in self.get_params(deep=False).items() if k not in ("task", "feature_set")}

    def _validate_params(self) -> None:
        """The declared constraints, the task the kind is made for, then the head's own rules between its
        parameters (`_check_params`); one ParameterError / InputError line."""
        check_constraints(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)
        e = registered(type(self))
        if e is not None:
            e.check_task(self.task.name)
        self._check_params()

    def _check_params(self) -> None:
        """Rules between parameters that constraints cannot state (a head overrides it)."""

    def validate_params(self) -> "Head":
        """What `fit` checks first, callable before any work (the run checks every head before loading data)."""
        self._validate_params()
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            kind = self.task.kind
        except InputError:
            return tags
        tags.estimator_type = "regressor" if kind == "regression" else "classifier"
        tags.target_tags.required = True
        if kind == "regression":
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        else:
            tags.classifier_tags = ClassifierTags(multi_label=kind == "multilabel")
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, **rows) -> "Head":
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray, **rows) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray, thresholds=None, **rows) -> np.ndarray:
        return self.task.decide(self.predict_proba(X, **rows), thresholds)

    def score(self, X, y, **rows) -> float:
        """The task's official metric (not scikit-learn's accuracy / R²), so model selection ranks by it."""
        return self.task.score(y, self.predict_proba(X, **rows))

    def _check_fit(self, X, y, X_val=None, y_val=None) -> None:
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None "
                             f"({self.task.name} labels)")
        check_xy(self.task, X, y, "training")
        check_finite(X, f"{self.task.name} training features")
        if X_val is not None:
            check_xy(self.task, X_val, y_val, "validation")
            check_finite(X_val, f"{self.task.name} validation features")
        self.n_features_in_ = int(X.shape[1])
        if self.task.kind != "regression":
            self.classes_ = np.arange(self.task.n_outputs)

    def _check_predict(self, X) -> None:
        """Fitted, and fed as many features as in training (one clear line instead of a shape error deep in a
        library)."""
        check_is_fitted(self)
        if getattr(X, "ndim", 0) != 2:
            raise InputError(f"{type(self).__name__}: features must be a 2-D matrix, got shape {np.shape(X)}")
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_} (feature set {self.feature_set or '?'})")
        check_finite(X, f"{type(self).__name__}: features to predict from")

    def _save_fitted(self, path: Path) -> None:
        """The fitted attributes that are plain values (n_features_in_, classes_, weights_, ...) as JSON, so a
        loaded head is fitted exactly as the saved one."""
        state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()
                 if k.endswith("_") and not k.startswith("_") and k not in getattr(self, "_not_saved", ())
                 and _plain(v)}
        write_output(path / "fitted.json", json.dumps(state, default=lambda o: o.item()))

    def _load_fitted(self, path: Path) -> None:
        """What _save_fitted wrote; only fitted names (`name_`) of plain values are set."""
        p = path / "fitted.json"
        if p.exists():
            state = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise InputError("expected a JSON object of fitted values", p)
            for k, v in state.items():
                # not a method, property or state the head restored from its other files
                taken = hasattr(type(self), k) or (k in vars(self) and not _same(vars(self)[k], v))
                if taken or not (k.endswith("_") and not k.startswith("_") and k.isidentifier() and _json_value(v)):
                    raise InputError(f"{k!r} is not a fitted value this head saves", p)
                setattr(self, k, np.asarray(v) if k == "classes_" else v)

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise InputError("head folder exists and is not empty; refusing to overwrite", path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        from .runfolder import head_entries
        # every file, and a composite's members' head.json (which hash the members' files in turn)
        meta = {"kind": self.kind, "task": self.task.name, "params": self.params, "feature_set": self.feature_set,
                "sha256": {name: sha256(path / name) for name in head_entries(path, type(self))}}
        write_output(path / "head.json", json.dumps(meta, indent=2, default=json_default))
        return path

    def _save(self, path: Path) -> None:
        raise NotImplementedError

    def _load(self, path: Path) -> None:
        raise NotImplementedError


def load_head(path: str | os.PathLike, task: str | Task | None = None, allow_pickle: bool = False) -> Head:
    """Load a saved head; with `task`, refuse a head made for another task.

    The folder is untrusted input, checked by classify.runfolder before anything is constructed or read:
    head.json's kind, task and params (names and types the kind's constructor takes), and the files (those the
    kind saves, each with a matching sha256 recorded at save time; a file without one is refused). A head
    holding a pickle (LightAutoML) loads only with ``allow_pickle=True`` (unpickling can run any code: pass it
    only for heads you trained yourself).
    """
    from . import runfolder
    from .factory import head_class, make_head
    path = Path(path)
    meta_p = path / "head.json"
    meta = runfolder.read_head_json(path)
    saved_task = meta["task"]
    if task is not None and saved_task != get_task(task).name:
        raise InputError(f"head was trained for task {saved_task!r}, not {get_task(task).name!r}", meta_p)
    cls = head_class(meta["kind"], meta_p)
    runfolder.check_params(cls, meta["params"], meta_p)
    recorded = meta["sha256"]
    for name in cls.pickled:
        f = path / name
        if not f.exists():
            continue
        if not allow_pickle:
            raise refusal(f, (file_globals(f, 1) if f.is_file() else []) or ["no readable pickle opcodes"],
                          "load it only if you trained it yourself, with --allow-pickle (Python: allow_pickle=True)")
        if name not in recorded:
            raise InputError("no sha256 recorded for this pickle in head.json; refusing to unpickle it", f)
    runfolder.check_head_files(path, cls, recorded)
    try:
        head = make_head(meta["kind"], saved_task, feature_set=meta["feature_set"], **meta["params"])
        head._validate_params()             # values within the kind's constraints, before any file is read
    except InputError as e:
        raise InputError(str(e), meta_p) from None
    head._allow_pickle = allow_pickle      # what composite heads (k-fold, bagging) pass to their members
    runfolder.load_files(head, path)
    return head


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- scikit-learn MLPs without pickle ---------------------------------------------------------------------------
def save_mlp_classifier(est, path: Path, stem: str) -> None:
    """A fitted scikit-learn MLPClassifier as `<stem>.json` (params, classes, shapes) + `<stem>.npz` (weights):
    plain data, so loading it runs no code (a pickle would)."""
    arrays = {f"coef{i}": c for i, c in enumerate(est.coefs_)}
    arrays.update({f"intercept{i}": b for i, b in enumerate(est.intercepts_)})
    write_output(path / f"{stem}.npz", lambda f: np.savez(f, classes=np.asarray(est.classes_), **arrays))
    meta = {"estimator": "sklearn.neural_network.MLPClassifier", "params": est.get_params(),
            "n_layers": int(est.n_layers_), "out_activation": est.out_activation_,
            "n_features_in": int(est.n_features_in_), "n_outputs": int(est.n_outputs_)}
    write_output(path / f"{stem}.json", json.dumps(meta, indent=2))


def load_mlp_classifier(path: Path, stem: str):
    """Rebuild what `save_mlp_classifier` wrote: the estimator with its weights, ready to predict."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import LabelBinarizer
    try:
        meta = json.loads((path / f"{stem}.json").read_text(encoding="utf-8"))
        with np.load(path / f"{stem}.npz", allow_pickle=False) as z:
            n = int(meta["n_layers"]) - 1
            coefs = [z[f"coef{i}"] for i in range(n)]
            intercepts = [z[f"intercept{i}"] for i in range(n)]
            classes = z["classes"]
        params = dict(meta["params"])
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        est = MLPClassifier(**params)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read the saved scikit-learn MLP {stem}.json/.npz ({type(e).__name__}: {e})",
                         path) from None
    est.coefs_, est.intercepts_ = coefs, intercepts
    est.n_layers_, est.out_activation_ = n + 1, meta["out_activation"]
    est.n_features_in_, est.n_outputs_ = int(meta["n_features_in"]), int(meta["n_outputs"])
    est.classes_ = classes
    est._label_binarizer = LabelBinarizer().fit(classes)
    return est


def check_xy(task: Task, X, y=None, what: str = "training") -> None:
    """Shapes and label values that fit the task (a head fed another task's labels fails here, not deep
    inside a library); an empty split is refused."""
    if sparse.issparse(X):
        raise InputError(f"{task.name} {what}: sparse features are not supported; give a dense 2-D matrix")
    if getattr(X, "ndim", 0) != 2:
        raise InputError(f"{task.name} {what}: features must be a 2-D matrix, got shape {np.shape(X)}")
    if X.shape[0] == 0:
        raise InputError(f"{task.name} {what}: no rows (empty split)")
    if X.shape[1] == 0:
        raise InputError(f"{task.name} {what}: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if np.dtype(getattr(X, "dtype", object)).kind not in "biuf":
        raise InputError(f"{task.name} {what}: features must be real numbers, not of dtype {X.dtype}"
                         + (" (Complex data not supported)" if np.dtype(X.dtype).kind == "c" else ""))
    if y is None:
        return
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise InputError(f"{task.name} {what}: labels must be numbers (the task's label columns: {task.header}), "
                         f"not of dtype {y.dtype}")
    if y.shape != task.label_shape(len(X)):
        raise InputError(f"{task.name} {what}: labels of shape {y.shape} do not fit the task (expected "
                         f"{task.label_shape(len(X))}: {task.header})")
    if task.kind == "regression":
        ok = np.isfinite(y).all() and (np.abs(y) <= 1).all()
        expect = "values in [-1, 1]"
    elif task.kind == "multiclass":
        ok = ((y >= 0) & (y < task.n_outputs) & (y == np.round(y))).all()
        expect = f"classes 0..{task.n_outputs - 1}"
    else:
        ok = np.isin(y, (0, 1)).all()
        expect = "0/1 values"
    if not ok:
        raise InputError(f"{task.name} {what}: labels are not {expect} (invalid rows must be dropped first)")
    if task.kind == "multiclass" and what == "training" and len(np.unique(y)) < 2:
        # LightAutoML and the class weights both break on this; say so before any library does
        raise InputError(f"{task.name} {what}: every row has class {int(y.flat[0])} "
                         f"({task.labels[int(y.flat[0])]}); a classifier needs at least two classes")


def check_finite(X: np.ndarray, what: str = "features", step: int = 65536) -> None:
    """NaN or infinite features poison training silently; refuse them, naming the first bad row (found by the
    cache readers' own check, `features.finite.nonfinite_rows`, a block at a time)."""
    bad = nonfinite_rows(X, step)
    if bad.any():
        raise InputError(f"{what}: {int(bad.sum())} rows hold NaN or infinite values "
                         f"(first: row {int(np.argmax(bad))})")


def _plain(v) -> bool:
    """JSON-able fitted state: numbers, strings, lists of them, small numeric arrays."""
    if isinstance(v, (bool, int, float, str, np.integer, np.floating)) or v is None:
        return True
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biuf" and v.size <= 10_000
    if isinstance(v, (list, tuple)):
        return all(isinstance(x, (bool, int, float, str)) or x is None for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False



def _same(a, b) -> bool:
    """a == b for plain values (False for anything that does not compare to one bool)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _json_value(v, depth: int = 0) -> bool:
    """A value fitted.json may hold: numbers, strings, null, and lists / objects of them (nested a few levels)."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    if depth < 4 and isinstance(v, list):
        return all(_json_value(x, depth + 1) for x in v)
    if depth < 4 and isinstance(v, dict):
        return all(isinstance(k, str) and _json_value(x, depth + 1) for k, x in v.items())
    return False
