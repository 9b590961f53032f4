"""Sweep of the smoothing half-width k: the task's metric for every k, one cumulative sum reused for all of
them, and per-output choices beyond the reference's single shared k.

- `sweep_k`: metric (and per-output details) by k at fixed AU thresholds; `best_k` picks the best row.
- `tune_au_k_thresholds`: AU F1 is separable per column, so each AU gets its own (k, threshold), found by
  counting scores into fine bins for every k (F1 at every grid threshold from one pass), compared with the
  best single shared k under the same threshold search.
- `per_output_k`: VA's CCC is separable too, so valence and arousal can each take their own best k.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.errors import InputError
from features.tasks import Task, get_task

from .segments import video_segments
from .smoothing import BoxSmoother, Stat, check_k
from .stats import AUGridStats, AUStats, Stats, check_labels, f1_from_confusion, make_stats
from .thresholds import NO_POSITIVES_THRESHOLD


def longest_video(video: np.ndarray) -> int:
    """Rows of the longest video (0 for no rows): no box filter is wider than that."""
    seg = video_segments(video)
    return int(seg.lengths.max()) if len(seg) else 0


def clip_ks(ks: Iterable[int], longest: int) -> list[int]:
    """Sorted distinct ks. A ``range`` is cut before it is listed: a window wider than the longest video covers
    every video whole, so every k of the range above `longest` smooths like the first of them, which stands
    for all (kept, so the table still shows a value that was asked for); ``range(0, 10**9)`` then costs the
    longest video's length, not a billion values. A list is kept whole (it costs what it holds already)."""
    if isinstance(ks, range):
        if ks.step <= 0 or ks.start < 0:
            raise InputError(f"k values must be a non-negative increasing range, got {ks!r}")
        n = len(range(ks.start, min(ks.stop, longest + 1), ks.step))
        return list(ks[:n + 1])
    return sorted({check_k(k) for k in ks})       # a list given whole costs what it holds already


def check_ks(ks: Iterable[int], longest: int | None = None) -> list[int]:
    """ks as a sorted list of distinct non-negative ints; with `longest` (rows of the longest video), clipped
    to what the data can tell apart (`clip_ks`)."""
    if isinstance(ks, range) and longest is None:
        raise InputError("a range of k needs the longest video to be clipped to (pass longest=)")
    out = clip_ks(ks, longest) if longest is not None else sorted({check_k(k) for k in ks})
    if not out:
        raise InputError("no values of k to sweep")
    return out


def run_states(smoother: BoxSmoother, stats: Stats, ks: Sequence[int], progress: bool = False) -> list:
    """Accumulate `stats` for each k; returns the list of states (one per k)."""
    accs = []
    for _ in ks:
        stats.reset()
        accs.append(stats.acc)
    bar = tqdm(total=smoother.n_pad * len(ks), desc="k sweep", unit="row", unit_scale=True,
               disable=not progress, leave=False)
    if isinstance(stats, AUStats):      # fixed thresholds: only "smoothed >= threshold" is needed
        chunks, update = smoother.above(ks, stats.thr), stats.update_pred
    else:
        chunks, update = smoother.sweep(ks), stats.update
    for i, a, b, s in chunks:
        stats.acc = accs[i]
        update(a, b, s)
        bar.update(b - a)
    bar.close()
    return accs


def sweep_k(task: Task | str, y: np.ndarray, scores: np.ndarray, video: np.ndarray, ks: Iterable[int],
            thresholds: np.ndarray | float | None = None, stat: Stat = "mean",
            progress: bool = False) -> pd.DataFrame:
    """Metric of the box-filtered scores for each k (rows with an invalid label are left out of the metric
    but still smoothed). Columns: k, the task's metric name, per-output details."""
    task = get_task(task)
    ks = check_ks(ks, longest_video(video))
    sm = BoxSmoother(scores, video, stat, max_k=ks[-1])
    if sm.c != task.n_outputs:
        raise InputError(f"{task.name}: scores have {sm.c} columns, expected {task.n_outputs}")
    stats = make_stats(task, sm.to_layout(check_labels(task, y, sm.n), task.invalid), thresholds=thresholds)
    if not (stats.g < stats.G).any():
        raise InputError(f"{task.name}: no row has a valid label")
    rows = [{"k": k, **stats.metric(st)} for k, st in zip(ks, run_states(sm, stats, ks, progress))]
    return pd.DataFrame(rows)


def best_k(table: pd.DataFrame, metric: str | None = None) -> int:
    """k of the best metric (the smallest such k on ties)."""
    metric = metric or [c for c in table.columns if c.startswith("P_")][0]
    vals = table[metric].to_numpy()
    return int(table["k"].to_numpy()[np.flatnonzero(vals == vals.max())[0]])


def per_output_k(task: Task | str, table: pd.DataFrame) -> dict:
    """For VA (CCC separable per column): best k of each output from a `sweep_k` table and the gain of using
    them over the best shared k (EXPR's argmax and AU's thresholds are handled elsewhere)."""
    task = get_task(task)
    if task.kind != "regression":
        raise InputError(f"{task.name}: per-output k from a sweep table applies to VA only")
    cols = [f"ccc_{l}" for l in task.labels]
    ks = [best_k(table, c) for c in cols]
    per = [float(table.loc[table.k == k, c].iloc[0]) for k, c in zip(ks, cols)]
    shared = float(table[task.metric_name].max())
    return {"k": ks, "ccc": per, "metric": float(np.mean(per)), "shared_k": best_k(table),
            "shared_metric": shared, "gain": float(np.mean(per)) - shared}


@dataclass
class AUTuning:
    """Per-AU (k, threshold) versus one shared k, both with per-AU grid thresholds (in-sample)."""
    ks: list[int]
    k: np.ndarray               # (C,) chosen k per AU
    thresholds: np.ndarray      # (C,)
    f1: np.ndarray              # (C,) F1 per AU at its (k, threshold)
    shared_k: int
    shared_thresholds: np.ndarray
    shared_f1: np.ndarray
    f1_by_k: np.ndarray         # (K, C) best F1 per AU at each k
    labels: tuple = field(default=())
    no_positives: np.ndarray | None = None   # (C,) bool: no positive frame; threshold 0.5 and the shared k

    @property
    def gain(self) -> float:
        return float(self.f1.mean() - self.shared_f1.mean())

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"k": self.k, "threshold": self.thresholds, "f1": self.f1,
                             "shared_k": self.shared_k, "shared_threshold": self.shared_thresholds,
                             "shared_f1": self.shared_f1}, index=list(self.labels) or None)


def choose_au(curves: np.ndarray, ks: Sequence[int], bins: int, per_au: bool = True,
              positives: np.ndarray | None = None):
    """curves: (K, C, B+1) F1 by k, AU and threshold j/bins (j = 0 and bins excluded: all / almost none).
    An AU without positive frames (`positives` == 0) has F1 0 everywhere: it gets threshold 0.5 (as every
    threshold method gives it, see `thresholds`) and the shared k, not the first of the tied grid points."""
    K, C, _ = curves.shape
    inner = curves[:, :, 1:bins]
    best_j = inner.argmax(axis=2) + 1                      # (K, C)
    best_f = np.take_along_axis(curves, best_j[..., None], axis=2)[..., 0]
    shared = best_f.mean(axis=1).argmax()
    if per_au:
        ki = best_f.argmax(axis=0)                          # first (smallest) k on ties
    else:
        ki = np.full(C, shared)
    cols = np.arange(C)
    thr = best_j[ki, cols] / bins
    if positives is not None:
        none = np.asarray(positives) == 0
        ki = np.where(none, shared, ki)
        thr = np.where(none, NO_POSITIVES_THRESHOLD, best_j[ki, cols] / bins)
    return (np.asarray(ks)[ki], thr, best_f[ki, cols], best_f)


def tune_au_k_thresholds(y: np.ndarray, scores: np.ndarray, video: np.ndarray, ks: Iterable[int],
                         bins: int = 100, stat: Stat = "mean", progress: bool = False) -> AUTuning:
    """Each AU's best (k, threshold) over ks x thresholds {1/bins, ..., (bins-1)/bins}, coordinate-wise (AU
    F1 is separable per column), next to the best shared k with per-AU thresholds from the same grid."""
    from features.tasks import AU
    ks = check_ks(ks, longest_video(video))
    sm = BoxSmoother(scores, video, stat, max_k=ks[-1])
    if sm.c != AU.n_outputs:
        raise InputError(f"au: scores have {sm.c} columns, expected {AU.n_outputs}")
    st = AUGridStats(AU, sm.to_layout(check_labels(AU, y, sm.n), AU.invalid), bins=bins)
    curves = np.stack([st.f1_curves(s) for s in run_states(sm, st, ks, progress)])
    pos = st.positives()
    k, thr, f1, by_k = choose_au(curves, ks, bins, True, pos)
    sk, sthr, sf1, _ = choose_au(curves, ks, bins, False, pos)
    return AUTuning(ks, k, thr, f1, int(sk[0]), sthr, sf1, by_k, AU.labels, pos == 0)


@dataclass
class ClassKTuning:
    """EXPR with one k per class column (the argmax couples the classes, so the ks are found by coordinate
    ascent from the best shared k) versus the best shared k; in-sample on the rows given."""
    k: list[int]
    metric: float
    shared_k: int
    shared_metric: float
    candidates: list[int]

    @property
    def gain(self) -> float:
        return self.metric - self.shared_metric

    def to_dict(self) -> dict:
        return {"k": self.k, "metric": self.metric, "shared_k": self.shared_k,
                "shared_metric": self.shared_metric, "gain": self.gain, "candidates": self.candidates}


def tune_expr_class_k(y: np.ndarray, scores: np.ndarray, video: np.ndarray, ks: Iterable[int],
                      stat: Stat = "mean", max_candidates: int = 16, rounds: int = 2, shared_k: int | None = None,
                      progress: bool = False) -> ClassKTuning:
    """One k per expression class: start from the best shared k (`shared_k` when the caller has swept
    already, else found here), then for each class in turn take the candidate k that most raises macro F1
    with the other classes' k fixed, for `rounds` passes. Candidates are up to `max_candidates` values spread
    over ks (plus the shared best), each smoothed once."""
    from features.tasks import EXPR
    ks = check_ks(ks, longest_video(video))
    shared = best_k(sweep_k(EXPR, y, scores, video, ks, stat=stat)) if shared_k is None else check_k(shared_k)
    cand = sorted({ks[int(round(i))] for i in np.linspace(0, len(ks) - 1, min(max_candidates, len(ks)))}
                  | {shared})
    sm = BoxSmoother(scores, video, stat, max_k=cand[-1])
    C = EXPR.n_outputs
    y = check_labels(EXPR, y, sm.n)
    valid = np.flatnonzero((y != EXPR.invalid).reshape(-1))
    yv = y.reshape(-1)[valid].astype(np.int64)
    smoothed = {k: sm.smooth(k).reshape(sm.n, C)[valid] for k in tqdm(cand, desc="smoothing", disable=not progress,
                                                                       leave=False)}

    def f1(m: np.ndarray) -> float:
        return float(f1_from_confusion(np.bincount(yv * C + m.argmax(axis=1), minlength=C * C).reshape(C, C)).mean())

    cur = smoothed[shared].copy()
    k_of = [shared] * C
    base = best = f1(cur)
    for _ in range(rounds):
        changed = False
        for c in range(C):
            for k in cand:
                if k == k_of[c]:
                    continue
                keep = cur[:, c].copy()
                cur[:, c] = smoothed[k][:, c]
                v = f1(cur)
                if v > best + 1e-12:
                    best, k_of[c], changed = v, k, True
                else:
                    cur[:, c] = keep
        if not changed:
            break
    return ClassKTuning(k_of, best, shared, base, cand)
