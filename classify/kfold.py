"""Video-level k-fold cross-validation for training: GroupKFold over the videos of train + val, one clone of the
head per fold (trained on the other folds, without early stopping on the held-out fold, so the fold metric is
honest), per-fold metrics and out-of-fold scores, and the fold models averaged as an ensemble (`kfold` head).
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold

from features.cliargs import INT32_MAX
from features.errors import InputError

from .base import Head, fit_context, integers
from .composite import Composite
from .registry import register_head


def check_folds(groups, n_splits: int) -> None:
    n_videos = len(np.unique(np.asarray(groups)))
    if n_splits < 2:
        raise InputError(f"k-fold needs at least 2 folds, got {n_splits}")
    if n_videos < n_splits:
        raise InputError(f"k-fold: {n_videos} videos for {n_splits} folds (folds are split by video); use "
                         f"--kfold {n_videos} or fewer")


@register_head("kfold", role="wrapper", title="k-fold head")
class KFoldHead(Composite):
    """The mean of the fold models' scores. `estimator`: an unfitted head (cloned per fold), or its
    {"kind", "params"} description as saved in head.json."""
    member_prefix = "fold"
    _not_saved = ("oof_",)
    _parameter_constraints = {**Composite._parameter_constraints,
                              "n_splits": [integers(2, INT32_MAX)]}

    def __init__(self, task, estimator: Head | dict | None = None, n_splits: int = 5,
                 feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.estimator = estimator
        self.n_splits = n_splits

    @fit_context(prefer_skip_nested_validation=False)     # the members are heads given by the caller
    def fit(self, X, y, X_val=None, y_val=None, groups=None, frames=None, **rows):
        """Cross-fit on (X, y) grouped by video (`groups`); X_val is not used (the folds are the validation)."""
        self._check_fit(X, y)
        if groups is None:
            raise InputError("k-fold needs the rows' video ids (groups=...)")
        groups = np.asarray(groups)
        check_folds(groups, self.n_splits)
        y = np.asarray(y)
        self.estimators_, self.fold_scores_, self.fold_videos_, self.held_out_ = [], [], [], []
        oof = np.full((len(X), self.task.n_outputs), np.nan, np.float32)
        for tr, te in GroupKFold(self.n_splits).split(X, y, groups):
            h = self._fit_member(X, y, tr, groups=groups, frames=frames)
            oof[te] = h.predict_proba(X[te], groups=groups[te], frames=None if frames is None else
                                      np.asarray(frames)[te])
            self.estimators_.append(h)
            self.fold_scores_.append(float(self.task.score(y[te], oof[te])))
            self.fold_videos_.append(int(len(np.unique(groups[te]))))
            self.held_out_.append(sorted(map(str, np.unique(groups[te]))))
        self.oof_ = oof                    # out-of-fold scores of the training rows (not saved)
        return self

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        return np.mean([h.predict_proba(X, **rows) for h in self.estimators_], axis=0).astype(np.float32)

    def predict_oof(self, X, groups=None, **rows) -> np.ndarray:
        """Out-of-fold scores: each row by the fold model that held its video out (rows of videos no fold held
        out get the ensemble mean), so frames of the training videos are scored honestly, e.g. every frame of a
        validation video on its timeline, not only its labelled rows."""
        self._check_predict(X)
        if groups is None:
            raise InputError("out-of-fold scores need the rows' video ids (groups=...)")
        groups = np.asarray(groups)
        g = groups.astype(str)
        out = np.empty((len(X), self.task.n_outputs), np.float32)
        todo = np.ones(len(X), bool)
        sub = lambda m: {k: (None if v is None else np.asarray(v)[m]) for k, v in rows.items()}
        for h, videos in zip(self.estimators_, self.held_out_):
            m = np.isin(g, videos)
            if m.any():
                out[m] = h.predict_proba(X[m], groups=groups[m], **sub(m))
                todo &= ~m
        if todo.any():
            out[todo] = self.predict_proba(X[todo], groups=groups[todo], **sub(todo))
        return out

    def _n_saved(self) -> int:
        return len(self.fold_scores_)
