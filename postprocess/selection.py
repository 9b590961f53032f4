"""Honest choice of k (and AU thresholds): pick them on the training folds of a video-level GroupKFold inside
the validation set, apply them to the held-out fold, pool the held-out predictions and score them once.

The in-sample number (choose and score on the same frames, what the reference reports) is returned beside the
cross-validated one, so the optimism of tuning on validation is visible. Smoothing never crosses videos, so the
box filter of all rows at k, restricted to a fold's rows, is the fold's own box filter: one smoothing pass per k
feeds the statistics of every fold at once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from features.errors import InputError
from features.tasks import Task, get_task

from .smoothing import BoxSmoother, Stat
from .stats import AUGridStats, check_labels, make_stats, valid_rows
from .sweep import check_ks, choose_au, longest_video, run_states


@dataclass
class Selection:
    task: str
    k: int | list[int]                  # chosen on all rows (one k, or one per output)
    thresholds: list[float] | None      # AU only
    in_sample: float                    # metric with the chosen parameters on the rows they were chosen on
    cv: float                           # pooled held-out metric, parameters chosen on the other folds
    baseline: float                     # k = 0, thresholds 0.5 (no post-processing)
    fold_k: list = field(default_factory=list)
    fold_thresholds: list = field(default_factory=list)
    n_splits: int = 0
    per_output: bool = False
    tune_thresholds: bool = False

    @property
    def optimism(self) -> float:
        return self.in_sample - self.cv

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimism"] = self.optimism
        return d


def _folds(video: np.ndarray, n_splits: int, seg) -> np.ndarray:
    if n_splits < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {n_splits}")
    if len(seg) < n_splits:
        raise InputError(f"{n_splits} folds need at least {n_splits} videos, got {len(seg)}")
    ids = seg.row_ids()
    fold = np.empty(len(ids), np.int64)
    for f, (_, test) in enumerate(GroupKFold(n_splits=n_splits).split(ids, groups=ids)):
        fold[test] = f
    return fold


def _choose(task: Task, metric_rows: list[dict], ks: list[int], per_output: bool):
    """Best k (or per-output ks for VA) from a list of metric dicts, one per k."""
    if per_output and task.kind == "regression":
        return [ks[int(np.argmax([m[f"ccc_{l}"] for m in metric_rows]))] for l in task.labels]
    return ks[int(np.argmax([m[task.metric_name] for m in metric_rows]))]


class _Pooled:
    """Each fold's rows smoothed with the k chosen without that fold (one k, or one per column); each k's
    smoothing is computed once and shared by every fold and choice that uses it."""

    def __init__(self, sm: BoxSmoother, fold: np.ndarray, n_splits: int):
        self.sm, self.fold, self.folds = sm, fold, range(n_splits)
        self.cache: dict[int, np.ndarray] = {}

    def smoothed(self, k: int) -> np.ndarray:
        if k not in self.cache:
            self.cache[k] = self.sm.smooth(k).reshape(self.sm.n, self.sm.c)
        return self.cache[k]

    def __call__(self, k_of_fold: list) -> np.ndarray:
        sm = self.sm
        out = np.empty((sm.n, sm.c), np.float64)
        for f, kf in zip(self.folds, k_of_fold):
            rows = self.fold == f
            kcol = np.broadcast_to(np.asarray(kf), (sm.c,))
            for kk in np.unique(kcol):
                cols = np.flatnonzero(kcol == kk)
                out[np.ix_(rows, cols)] = self.smoothed(int(kk))[rows][:, cols]
        return out


def _select_au_thresholds(task: Task, sm: BoxSmoother, y: np.ndarray, fold: np.ndarray, valid: np.ndarray,
                          ks: list[int], n_splits: int, bins: int, per_output: bool, progress: bool,
                          baseline: float) -> Selection:
    """AU with thresholds: k and thresholds chosen together on all folds, and again without each fold for
    the cross-validated score."""
    pooled, folds = _Pooled(sm, fold, n_splits), range(n_splits)
    st = AUGridStats(task, sm.to_layout(y, task.invalid), sm.to_layout(fold, 0), n_splits, bins=bins)
    states = run_states(sm, st, ks, progress)
    all_k, all_thr, _, _ = choose_au(np.stack([st.f1_curves(s) for s in states]), ks, bins, per_output,
                                     st.positives())
    fk, fthr = [], []
    for f in folds:
        train = [g for g in folds if g != f]
        kf, tf, _, _ = choose_au(np.stack([st.f1_curves(s, train) for s in states]), ks, bins, per_output,
                                 st.positives(train))
        fk.append(kf.tolist() if per_output else int(kf[0]))
        fthr.append(tf.tolist())
    thr_rows = np.asarray(fthr)[fold]
    cv = task.score(y[valid], pooled(fk)[valid], thr_rows[valid])
    k_all = all_k.tolist() if per_output else int(all_k[0])
    in_sample = task.score(y[valid], pooled([all_k] * n_splits)[valid], all_thr)
    return Selection(task.name, k_all, all_thr.tolist(), in_sample, cv, baseline, fk, fthr, n_splits,
                     per_output, True)


def _select_k(task: Task, sm: BoxSmoother, y: np.ndarray, fold: np.ndarray, valid: np.ndarray, ks: list[int],
              n_splits: int, per_output: bool, progress: bool, baseline: float) -> Selection:
    """k alone (AU at threshold 0.5): chosen on all folds, and again without each fold for the CV score."""
    pooled, folds = _Pooled(sm, fold, n_splits), range(n_splits)
    st = make_stats(task, sm.to_layout(y, task.invalid), sm.to_layout(fold, 0), n_splits)
    states = run_states(sm, st, ks, progress)
    k_all = _choose(task, [st.metric(s) for s in states], ks, per_output)
    fk = [_choose(task, [st.metric(s, [g for g in folds if g != f]) for s in states], ks, per_output)
          for f in folds]
    cv = task.score(y[valid], pooled(fk)[valid])
    in_sample = task.score(y[valid], pooled([k_all] * n_splits)[valid])
    thr = [0.5] * task.n_outputs if task.kind == "multilabel" else None
    return Selection(task.name, k_all, thr, in_sample, cv, baseline, fk, [], n_splits, per_output, False)


def cross_validated_selection(task: Task | str, y: np.ndarray, scores: np.ndarray, video: np.ndarray,
                              ks: Iterable[int], n_splits: int = 5, tune_thresholds: bool = True,
                              per_output: bool = False, bins: int = 100, stat: Stat = "mean",
                              progress: bool = False) -> Selection:
    """Choose k (per output when `per_output`: VA per dimension, AU per unit; EXPR always one k) and, for AU
    when `tune_thresholds`, thresholds on a grid of 1/bins, by GroupKFold over videos."""
    task = get_task(task)
    ks = check_ks(ks, longest_video(video))
    sm = BoxSmoother(scores, video, stat, max_k=ks[-1])
    if sm.c != task.n_outputs:
        raise InputError(f"{task.name}: scores have {sm.c} columns, expected {task.n_outputs}")
    fold = _folds(video, n_splits, sm.seg)
    y = check_labels(task, y, sm.n)
    valid = valid_rows(task, y)
    if not valid.any():
        raise InputError(f"{task.name}: no row has a valid label")
    baseline = task.score(y[valid], sm.raw[valid])
    if task.kind == "multilabel" and tune_thresholds:
        return _select_au_thresholds(task, sm, y, fold, valid, ks, n_splits, bins, per_output, progress, baseline)
    return _select_k(task, sm, y, fold, valid, ks, n_splits, per_output, progress, baseline)


def selection_table(sel: Selection) -> pd.DataFrame:
    return pd.DataFrame([{"baseline (k=0)": sel.baseline, "in-sample": sel.in_sample,
                          "cross-validated": sel.cv, "optimism": sel.optimism}])
