"""Training-row orders per epoch for multi-label (AU) training: plain shuffling, ML-ROS oversampling of rare
labels, or class-balanced batches.

- ML-ROS (Charte et al., "Addressing imbalance in multilabel classification", Neurocomputing 2015): the
  imbalance ratio per label IRLbl(l) = max_k count(k) / count(l); labels above the mean ratio are minority labels;
  random rows holding a minority label are cloned (one per minority label per round) until `pct` of the data
  set has been added or no label is a minority any more. The clones are drawn once; every epoch shuffles
  originals and clones.
- Balanced batches: each epoch draws n rows with replacement, a row's probability proportional to
  1 / frequency of its rarest positive label (rows with no positive label: 1 / frequency of such rows), so rare
  AUs reach every batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from features.errors import InputError
from features.tasks import Task

SAMPLINGS = ("none", "mlros", "balanced")


def ml_ros(y: np.ndarray, pct: float = 0.25, seed: int = 0) -> np.ndarray:
    """Row indices of the clones ML-ROS adds (to be appended to range(n))."""
    y = np.asarray(y).astype(bool)
    n = len(y)
    rng = np.random.default_rng(seed)
    counts = y.sum(0).astype(float)
    present = counts > 0
    if present.sum() < 2:
        return np.empty(0, np.int64)
    irl = lambda c: c[present].max() / np.where(present, np.maximum(c, 1), np.inf)
    mean_ir = irl(counts)[present].mean()
    minority = [l for l in np.flatnonzero(present) if irl(counts)[l] > mean_ir]
    rows_of = {l: np.flatnonzero(y[:, l]) for l in minority}
    budget, clones = int(pct * n), []
    while budget > 0 and minority:
        for l in list(minority):
            r = int(rng.choice(rows_of[l]))
            clones.append(r)
            counts += y[r]
            budget -= 1
            if irl(counts)[l] <= mean_ir:
                minority.remove(l)
            if budget == 0:
                break
    return np.asarray(clones, np.int64)


def balanced_probabilities(y: np.ndarray) -> np.ndarray:
    """Per-row sampling probability ∝ 1 / frequency of the row's rarest positive label."""
    y = np.asarray(y).astype(bool)
    freq = np.maximum(y.mean(0), 1e-12)
    inv = np.where(y, 1 / freq, 0).max(1)
    none = ~y.any(1)
    if none.any():
        inv[none] = 1 / none.mean()
    return inv / inv.sum()


def check_sampling(sampling: str | None, task: Task) -> str:
    """The sampling name (None: "none"), known and made for the task."""
    sampling = sampling or "none"
    if sampling not in SAMPLINGS:
        raise InputError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")
    if sampling != "none" and task.kind != "multilabel":
        raise InputError(f"sampling {sampling!r} is for the AU task (multi-label), not {task.name}")
    return sampling


def epoch_rows(sampling: str | None, task: Task, y: np.ndarray, seed: int) -> Callable[[int], np.ndarray]:
    """`f(epoch)` -> the training rows of that epoch, in order (deterministic in (seed, epoch))."""
    sampling = check_sampling(sampling, task)
    n = len(y)
    if sampling == "mlros":
        rows = np.concatenate([np.arange(n), ml_ros(y, seed=seed)])
        return lambda e: np.random.default_rng([seed, e]).permutation(rows)
    if sampling == "balanced":
        p = balanced_probabilities(y)
        return lambda e: np.random.default_rng([seed, e]).choice(n, n, p=p)
    return lambda e: np.random.default_rng([seed, e]).permutation(n)
