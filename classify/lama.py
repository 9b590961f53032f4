"""LightAutoML heads: `TabularAutoML` on small feature sets (logits, + VA), as the reference did.

VA uses `multi:reg`, EXPR `multiclass`, AU `multilabel` (LightGBM supports neither multi-target kind, so
LightAutoML runs its other algorithms there). Its console output goes to a log file.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .base import Head, register

_LAMA_TASK = {"regression": "multi:reg", "multiclass": "multiclass", "multilabel": "multilabel"}


@contextlib.contextmanager
def _quiet():
    """LightAutoML prints and warns a lot (imports, per-fold progress): its console output is dropped (its log
    file, when given, keeps the detail), console handlers it binds to the redirected stream are removed
    afterwards, and the global logging level it changes is put back."""
    level = logging.root.level
    with open(os.devnull, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.root.setLevel(level)
            lg = logging.getLogger("lightautoml")
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler and h.stream is f:
                    lg.removeHandler(h)


@register
class LamaHead(Head):
    kind = "lama"

    def __init__(self, task, timeout: int = 60, cpu_limit: int | None = None, cv: int = 3, seed: int = 0,
                 log_file: str | None = None):
        super().__init__(task)
        self.params = dict(timeout=timeout, cpu_limit=cpu_limit or os.cpu_count() or 1, cv=cv, seed=seed,
                           log_file=log_file)
        self.automl = None

    def _frame(self, X) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(X, np.float32), columns=[f"f{i}" for i in range(X.shape[1])])

    def fit(self, X, y, X_val=None, y_val=None):
        """Fit on (X, y); TabularAutoML cross-validates on these rows itself, so the validation rows stay
        unseen (they are only checked)."""
        self._check_fit(X, y, X_val, y_val)
        p = self.params
        df = self._frame(X)
        y = np.asarray(y)
        if self.task.kind == "multiclass":
            df["target"] = y
            roles = {"target": "target"}
        else:
            names = [f"y{j}" for j in range(self.task.n_outputs)]
            for j, n in enumerate(names):
                df[n] = y[:, j]
            roles = {"target": names}
        with _quiet():
            from lightautoml.automl.presets.tabular_presets import TabularAutoML
            from lightautoml.tasks import Task as LTask
            # LightGBM/XGBoost support neither multi:reg nor multilabel: LightAutoML skips them there (and
            # says so in the log) and runs its linear model and random forest instead
            self.automl = TabularAutoML(task=LTask(_LAMA_TASK[self.task.kind]), timeout=p["timeout"],
                                        cpu_limit=p["cpu_limit"],
                                        reader_params={"n_jobs": p["cpu_limit"], "cv": p["cv"],
                                                       "random_state": p["seed"]})
            self.automl.fit_predict(df, roles=roles, verbose=0, log_file=p["log_file"] or None)
        self.classes_ = np.unique(y) if self.task.kind == "multiclass" else None
        return self

    def predict_proba(self, X):
        if self.automl is None:
            raise RuntimeError("fit the head first")
        with _quiet():
            p = np.asarray(self.automl.predict(self._frame(X)).data, np.float32)
        if self.task.kind == "multiclass":
            # columns follow the classes seen in training; absent classes get probability 0
            mapping = getattr(self.automl.reader, "class_mapping", None)
            out = np.zeros((len(X), self.task.n_outputs), np.float32)
            if mapping:
                for cls, col in mapping.items():
                    out[:, int(cls)] = p[:, col]
            else:
                out[:, self.classes_] = p[:, :len(self.classes_)]
            return out
        if self.task.kind == "regression":
            return np.clip(p, -1, 1)
        return p

    def _save(self, path: Path):
        # LightAutoML models are pickled by design (as its own docs do); only load heads you trained yourself
        with open(path / "lama.pkl", "wb") as f:
            pickle.dump((self.automl, self.classes_), f)

    def _load(self, path: Path):
        with open(path / "lama.pkl", "rb") as f, _quiet():
            self.automl, self.classes_ = pickle.load(f)
