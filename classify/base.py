"""The head interface (scikit-learn-like) and saving/loading of heads as directories.

A saved head is a folder with `head.json` (kind, task, params, feature set) beside the head's own files, so
loading refuses a head made for another task with one clear line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.validation import check_is_fitted

from features.errors import InputError
from features.tasks import Task, get_task

HEAD_KINDS: dict[str, type["Head"]] = {}


def register(cls: type["Head"]) -> type["Head"]:
    HEAD_KINDS[cls.kind] = cls
    return cls


class Head(BaseEstimator):
    """fit / predict_proba / predict / get_params / set_params / save / load for one `Task`, a scikit-learn
    estimator: `__init__` stores its arguments as given (defaults resolved in `fit`), fitted state ends with `_`,
    `sklearn.base.clone` and `set_params` work, predicting before `fit` or with another feature count fails.

    predict_proba returns the task's score array: VA values (n, 2), EXPR probabilities (n, 8), AU per-AU
    probabilities (n, 12); predict returns the challenge predictions (Task.decide). `groups` (video ids) and
    `frames` (frame numbers) of the rows are accepted by every head, as scikit-learn's `groups`; only temporal
    heads use them.

    `task` is stored as given (a name or a Task) and read back as the Task (`head.task.kind`): get_params returns
    what was given, so clone and set_params keep it.
    """
    kind = "head"

    def __init__(self, task: str | Task):
        self.task = task
        self.feature_set: str | None = None      # set by the caller; saved with the head

    @property
    def task(self) -> Task:
        return get_task(self._task)

    @task.setter
    def task(self, value) -> None:
        self._task = value

    def get_params(self, deep: bool = True) -> dict:
        out = super().get_params(deep)
        out["task"] = self._task
        return out

    @property
    def params(self) -> dict:
        """The constructor arguments other than the task (what head.json records)."""
        return {k: v for k, v in self.get_params(deep=False).items() if k != "task"}

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

    def _save_fitted(self, path: Path) -> None:
        """The fitted attributes that are plain values (n_features_in_, classes_, weights_, ...) as JSON, so a
        loaded head is fitted exactly as the saved one."""
        state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()
                 if k.endswith("_") and not k.startswith("_") and k not in getattr(self, "_not_saved", ())
                 and _plain(v)}
        (path / "fitted.json").write_text(json.dumps(state, default=lambda o: o.item()))

    def _load_fitted(self, path: Path) -> None:
        p = path / "fitted.json"
        if p.exists():
            for k, v in json.loads(p.read_text()).items():
                setattr(self, k, np.asarray(v) if k == "classes_" else v)

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise InputError("head folder exists and is not empty; refusing to overwrite", path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "task": self.task.name, "params": self.params, "feature_set": self.feature_set}
        self._save(path)
        (path / "head.json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    def _save(self, path: Path) -> None:
        raise NotImplementedError

    def _load(self, path: Path) -> None:
        raise NotImplementedError


def load_head(path: str | os.PathLike, task: str | Task | None = None) -> Head:
    """Load a saved head; with `task`, refuse a head made for another task."""
    path = Path(path)
    meta_p = path / "head.json"
    if not meta_p.exists():
        raise InputError("not a saved head (no head.json)", path)
    meta = json.loads(meta_p.read_text())
    if task is not None and meta["task"] != get_task(task).name:
        raise InputError(f"head was trained for task {meta['task']!r}, not {get_task(task).name!r}", meta_p)
    cls = HEAD_KINDS.get(meta["kind"])
    if cls is None:
        raise InputError(f"unknown head kind {meta['kind']!r}", meta_p)
    head = cls(meta["task"], **meta["params"])
    head.feature_set = meta.get("feature_set")
    head._load(path)
    return head


def check_xy(task: Task, X, y=None, what: str = "training") -> None:
    """Shapes and label values that fit the task (a head fed another task's labels fails here, not deep
    inside a library); an empty split is refused."""
    if getattr(X, "ndim", 0) != 2:
        raise InputError(f"{task.name} {what}: features must be a 2-D matrix, got shape {np.shape(X)}")
    if len(X) == 0:
        raise InputError(f"{task.name} {what}: no rows (empty split)")
    if y is None:
        return
    y = np.asarray(y)
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
    """NaN or infinite features poison training silently; refuse them, naming the first bad row. Checked a block
    at a time so a large matrix does not get a same-sized boolean twin."""
    n_bad, first = 0, None
    for a in range(0, len(X), step):
        bad = ~np.isfinite(X[a:a + step]).all(axis=1)
        if bad.any():
            n_bad += int(bad.sum())
            first = a + int(np.argmax(bad)) if first is None else first
    if n_bad:
        raise InputError(f"{what}: {n_bad} rows hold NaN or infinite values (first: row {first})")


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
