"""Per-AU decision thresholds maximising F1 on validation data.

`exact` tries every distinct cut point: sort each column's scores descending, the cumulative sum of the sorted
labels is the true-positive count of "predict the top i+1", so F1 of all cuts comes out of one vectorised pass
(only cuts between distinct scores count, since s >= thr cannot split ties). `grid` is the reference's
0.1 .. 0.9 search; 0.5 is the fixed baseline.

A column with no positive frame has F1 0 at every threshold, so there is nothing to tune: every method (and the
per-AU (k, threshold) search in `sweep`) keeps `NO_POSITIVES_THRESHOLD` = 0.5 there, the fixed baseline. Taking
the first of the tied thresholds instead (the lowest, e.g. 0.01) would predict that unit on nearly every test
frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import metrics
from features.errors import InputError

from .segments import as_2d, check_finite

REFERENCE_GRID = np.round(np.arange(1, 10) / 10, 2)
NO_POSITIVES_THRESHOLD = 0.5


@dataclass
class Thresholds:
    thresholds: np.ndarray   # (C,) predict 1 where score >= threshold
    f1: np.ndarray           # (C,) F1 of each column at its threshold, on the data it was tuned on
    f1_fixed: np.ndarray     # (C,) F1 at the fixed 0.5 baseline
    method: str
    no_positives: np.ndarray | None = None   # (C,) bool: no positive frame, threshold left at 0.5

    @property
    def mean_f1(self) -> float:
        return float(self.f1.mean())

    def table(self, names=None) -> pd.DataFrame:
        idx = list(names) if names is not None else list(range(len(self.f1)))
        return pd.DataFrame({"threshold": self.thresholds, "f1": self.f1, "f1_at_0.5": self.f1_fixed}, index=idx)


def _check(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, _ = as_2d(probs)
    t = np.asarray(y)
    t = t[:, None] if t.ndim == 1 else t
    if t.shape != p.shape:
        raise InputError(f"labels {t.shape} and scores {p.shape} differ in shape")
    check_finite(p)
    if not np.isin(t, (0, 1)).all():
        raise InputError("threshold tuning needs 0/1 labels (drop rows with the invalid marker first)")
    return t.astype(bool), p


def f1_at(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """F1 per column of probs >= thresholds."""
    t, p = _check(y, probs)
    return metrics.f1_per_column(t, p >= np.asarray(thresholds, np.float64))


def exact_thresholds(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, c = p.shape
    order = np.argsort(-p, axis=0, kind="stable")
    ps = np.take_along_axis(p, order, axis=0)
    tp = np.cumsum(np.take_along_axis(t, order, axis=0), axis=0, dtype=np.int64)
    npos = tp[-1]
    f1 = 2.0 * tp / (np.arange(1, n + 1)[:, None] + npos[None, :])
    cut = np.ones((n, c), bool)
    cut[:-1] = ps[:-1] > ps[1:]           # a cut after row i separates distinct scores
    f1[~cut] = -1.0
    best = np.argmax(f1, axis=0)
    thr = ps[best, np.arange(c)].astype(np.float64)
    f1b = np.maximum(f1[best, np.arange(c)], 0.0)
    thr[npos == 0] = NO_POSITIVES_THRESHOLD      # nothing to find: F1 is 0 at any threshold
    return thr, np.where(npos == 0, 0.0, f1b)


def grid_thresholds(t: np.ndarray, p: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(grid, np.float64)
    f1 = np.stack([metrics.f1_per_column(t, p >= x) for x in g])   # (G, C)
    best = np.argmax(f1, axis=0)
    thr = g[best]
    thr[~t.any(axis=0)] = NO_POSITIVES_THRESHOLD                    # all F1 tie at 0: nothing to tune
    return thr, f1[best, np.arange(p.shape[1])]


def tune_thresholds(y: np.ndarray, probs: np.ndarray, method: str = "exact",
                    grid: np.ndarray | None = None) -> Thresholds:
    """Per-column thresholds maximising F1: method "exact" (every distinct cut), "grid" (default 0.1..0.9) or
    "fixed" (0.5 everywhere)."""
    t, p = _check(y, probs)
    if method == "exact":
        thr, f1 = exact_thresholds(t, p)
    elif method == "grid":
        thr, f1 = grid_thresholds(t, p, REFERENCE_GRID if grid is None else grid)
    elif method == "fixed":
        thr = np.full(p.shape[1], 0.5)
        f1 = metrics.f1_per_column(t, p >= 0.5)
    else:
        raise InputError(f"unknown threshold method {method!r}; choose exact, grid or fixed")
    return Thresholds(thr, f1, metrics.f1_per_column(t, p >= 0.5), method, ~t.any(axis=0))


def compare_thresholds(y: np.ndarray, probs: np.ndarray, names=None) -> pd.DataFrame:
    """F1 per column under the fixed 0.5, the reference grid and the exact search (in-sample)."""
    rows = {m: tune_thresholds(y, probs, m) for m in ("fixed", "grid", "exact")}
    df = pd.DataFrame({"f1_fixed": rows["fixed"].f1, "thr_grid": rows["grid"].thresholds,
                       "f1_grid": rows["grid"].f1, "thr_exact": rows["exact"].thresholds,
                       "f1_exact": rows["exact"].f1},
                      index=list(names) if names is not None else None)
    return df
