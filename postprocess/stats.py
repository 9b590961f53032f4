"""Sufficient statistics of each task's metric, accumulated chunk by chunk of smoothed scores and kept per
group of rows (a group is a cross-validation fold; rows with an invalid label, and the smoother's gap rows,
go to a discarded extra group).

Any union of groups then gives its metric without touching the scores again: VA keeps per-column sums
(n, Σs, Σs², Σsy) for CCC, EXPR an 8x8 confusion matrix, AU true-positive and predicted-positive counts at
fixed thresholds, or, for threshold search, counts per score bin (`AUGridStats`). Results equal
`Task.evaluate` on the same rows (checked in the tests).
"""
from __future__ import annotations

import numpy as np

from features.errors import InputError
from features.tasks import Task


def valid_rows(task: Task, y: np.ndarray) -> np.ndarray:
    """Rows whose label is usable for the metric (no invalid marker in any column)."""
    y = np.asarray(y)
    if y.shape[:1] == (0,):
        return np.zeros(0, bool)
    bad = (y == task.invalid) | ~np.isfinite(y.astype(np.float64))
    return ~(bad.reshape(len(y), -1).any(axis=1))


def check_labels(task: Task, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if len(y) != n:
        raise InputError(f"{task.name}: {len(y)} label rows but {n} score rows")
    want = task.label_shape(n)
    if y.shape != want:
        raise InputError(f"{task.name}: labels have shape {y.shape}, expected {want}")
    return y


class Stats:
    """Base: group per row (0..G-1; G = discarded), reset() before each k, update() per chunk, state() copy."""

    def __init__(self, task: Task, y: np.ndarray, group: np.ndarray | None = None, n_groups: int = 1):
        self.task = task
        n = len(y)
        self.y = check_labels(task, y, n)
        valid = valid_rows(task, self.y)
        g = np.zeros(n, np.int64) if group is None else np.asarray(group, np.int64).copy()
        g[~valid] = n_groups
        self.g, self.G = g, n_groups
        self.simple = n_groups == 1          # fast path: masked sums and counts, no bincount
        self.valid = valid

    def groups_mask(self, groups) -> np.ndarray:
        m = np.zeros(self.G + 1, bool)
        m[list(range(self.G)) if groups is None else list(groups)] = True
        return m


class VAStats(Stats):
    def __init__(self, task, y, group=None, n_groups=1):
        super().__init__(task, y, group, n_groups)
        yt = np.where(self.valid[:, None], self.y, 0.0).astype(np.float64)
        self.validf = self.valid.astype(np.float64)
        self.yT = np.ascontiguousarray(yt.T)
        G1 = self.G + 1
        self.n = np.bincount(self.g, minlength=G1).astype(np.float64)
        self.sy = np.stack([np.bincount(self.g, weights=c, minlength=G1) for c in self.yT], 1)
        self.syy = np.stack([np.bincount(self.g, weights=c * c, minlength=G1) for c in self.yT], 1)

    def reset(self):
        self.acc = np.zeros((3, self.G + 1, self.task.n_outputs))   # Σs, Σs², Σsy

    def update(self, a: int, b: int, s: np.ndarray):
        s = np.clip(s, -1.0, 1.0)          # Task.decide clips VA
        yc = self.yT[:, a:b]
        if self.simple:
            sv = s * self.validf[a:b]
            self.acc[0, 0] += sv.sum(axis=1)
            self.acc[1, 0] += np.einsum("ij,ij->i", sv, s)
            self.acc[2, 0] += np.einsum("ij,ij->i", sv, yc)
            return
        g = self.g[a:b]
        for j in range(s.shape[0]):
            self.acc[0, :, j] += np.bincount(g, weights=s[j], minlength=self.G + 1)
            self.acc[1, :, j] += np.bincount(g, weights=s[j] * s[j], minlength=self.G + 1)
            self.acc[2, :, j] += np.bincount(g, weights=s[j] * yc[j], minlength=self.G + 1)

    def state(self):
        return self.acc.copy()

    def metric(self, state, groups=None) -> dict[str, float]:
        m = self.groups_mask(groups)
        n = self.n[m].sum()
        if n == 0:
            raise InputError("va: no labelled rows to evaluate")
        s, ss, sy = state[:, m].sum(axis=1)
        mt, mp = self.sy[m].sum(0) / n, s / n
        vt, vp = self.syy[m].sum(0) / n - mt ** 2, ss / n - mp ** 2
        cov = sy / n - mt * mp
        den = vt + vp + (mt - mp) ** 2
        c = np.where(den > 0, 2 * cov / np.where(den > 0, den, 1), 0.0)
        return {self.task.metric_name: float(c.mean()),
                **{f"ccc_{l}": float(v) for l, v in zip(self.task.labels, c)}}


def f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class F1 from a confusion matrix (rows: labels, columns: predictions); an absent class scores 0."""
    tp = np.diag(conf)
    den = conf.sum(0) + conf.sum(1)
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


class EXPRStats(Stats):
    def __init__(self, task, y, group=None, n_groups=1):
        super().__init__(task, y, group, n_groups)
        self.yc = np.where(self.y == task.invalid, 0, self.y).astype(np.int64)
        self.base = (self.g * task.n_outputs + self.yc) * task.n_outputs

    def reset(self):
        C = self.task.n_outputs
        self.acc = np.zeros((self.G + 1) * C * C, np.int64)

    def update(self, a, b, s):
        pred = np.argmax(s, axis=0)
        self.acc += np.bincount(self.base[a:b] + pred, minlength=len(self.acc))

    def state(self):
        return self.acc.copy()

    def metric(self, state, groups=None) -> dict[str, float]:
        C = self.task.n_outputs
        conf = state.reshape(self.G + 1, C, C)[self.groups_mask(groups)].sum(axis=0)
        if conf.sum() == 0:
            raise InputError("expr: no labelled rows to evaluate")
        f1 = f1_from_confusion(conf)
        return {self.task.metric_name: float(f1.mean()), "accuracy": float(np.trace(conf) / conf.sum()),
                **{f"f1_{l}": float(v) for l, v in zip(self.task.labels, f1)}}


class AUStats(Stats):
    """True positives and predicted positives per column at fixed thresholds.

    Counting works on bit-packed rows (numpy's packbits and bitwise_count): the positives and each group's rows
    are packed once, so a chunk costs one packbits of the predictions and a few operations on 1/8 of the
    bytes, instead of a masked count per column and group."""

    def __init__(self, task, y, group=None, n_groups=1, thresholds=None):
        super().__init__(task, y, group, n_groups)
        C = task.n_outputs
        thr = 0.5 if thresholds is None else thresholds
        self.thr = np.broadcast_to(np.asarray(thr, np.float64), (C,)).reshape(C, 1).copy()
        pos = (self.y == 1).T & self.valid[None, :]                          # (C, N)
        self.npos = np.stack([np.bincount(self.g[p], minlength=self.G + 1) for p in pos], 1)
        self.pos_bits = np.packbits(pos, axis=1)
        self.group_bits = np.packbits(self.g[None, :] == np.arange(self.G)[:, None], axis=1)   # (G, N/8)

    def reset(self):
        self.acc = np.zeros((2, self.G + 1, self.task.n_outputs), np.int64)   # predicted, true positives

    def update(self, a, b, s):
        self.update_pred(a, b, s >= self.thr)

    def update_pred(self, a: int, b: int, pred: np.ndarray) -> None:
        """Count a chunk of predictions (C, b-a) for rows a..b-1; a must be a multiple of 8."""
        if a % 8:
            raise ValueError("AUStats chunks must start at a multiple of 8 rows")
        bits = np.packbits(pred, axis=1)
        a8 = a // 8
        b8 = a8 + bits.shape[1]
        pos = self.pos_bits[:, a8:b8]
        for gi in range(self.G):
            pg = bits & self.group_bits[gi, a8:b8]
            self.acc[0, gi] += np.bitwise_count(pg).sum(axis=1, dtype=np.int64)
            self.acc[1, gi] += np.bitwise_count(pg & pos).sum(axis=1, dtype=np.int64)

    def state(self):
        return self.acc.copy()

    def metric(self, state, groups=None) -> dict[str, float]:
        m = self.groups_mask(groups)
        npred, tp = state[:, m].sum(axis=1)
        den = npred + self.npos[m].sum(0)
        f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
        return {self.task.metric_name: float(f1.mean()),
                **{f"f1_{l}": float(v) for l, v in zip(self.task.labels, f1)}}


class AUGridStats(Stats):
    """Counts of rows and of positives per score bin floor(s * bins), per group and column, from which F1 at
    every threshold j / bins follows by suffix sums. One integer bincount per chunk: each (row, column) has a
    precomputed base index (group, column, positive or not) to which twice its bin is added."""

    def __init__(self, task, y, group=None, n_groups=1, bins: int = 100):
        super().__init__(task, y, group, n_groups)
        self.B = bins
        C = task.n_outputs
        valid = self.valid
        posT = ((self.y == 1) & valid[:, None]).T
        self.npos = np.stack([np.bincount(self.g, weights=p, minlength=self.G + 1) for p in posT], 1)
        self.size = (self.G + 1) * C * (bins + 1)
        cell = self.g[None, :] * (C * (bins + 1)) + (np.arange(C) * (bins + 1))[:, None]   # (C, N)
        itype = np.int32 if 2 * self.size < 2 ** 31 else np.int64
        self.base = (2 * cell + posT).astype(itype)
        self.itype = itype

    def reset(self):
        self.acc = np.zeros((2, self.size))

    def update(self, a, b, s):
        v = np.multiply(s, self.B)
        np.clip(v, 0, self.B, out=v)
        idx = v.astype(self.itype)          # truncation = floor for v >= 0
        idx += idx
        idx += self.base[:, a:b]
        cnt = np.bincount(idx.ravel(), minlength=2 * self.size).reshape(self.size, 2)
        self.acc[0] += cnt.sum(axis=1)
        self.acc[1] += cnt[:, 1]

    def state(self):
        return self.acc.copy()

    def positives(self, groups=None) -> np.ndarray:
        """(C,) positive frames per column in the given groups (all by default)."""
        return self.npos[self.groups_mask(groups)].sum(0)

    def f1_curves(self, state, groups=None) -> np.ndarray:
        """(C, B+1): F1 of each column when predicting s >= j / B."""
        C = self.task.n_outputs
        m = self.groups_mask(groups)
        cnt = state.reshape(2, self.G + 1, C, self.B + 1)[:, m].sum(axis=1)
        suffix = np.cumsum(cnt[..., ::-1], axis=-1)[..., ::-1]     # rows with bin >= j
        npred, tp = suffix
        den = npred + self.npos[m].sum(0)[:, None]
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def make_stats(task: Task, y, group=None, n_groups=1, thresholds=None) -> Stats:
    if task.kind == "regression":
        return VAStats(task, y, group, n_groups)
    if task.kind == "multiclass":
        return EXPRStats(task, y, group, n_groups)
    return AUStats(task, y, group, n_groups, thresholds)
