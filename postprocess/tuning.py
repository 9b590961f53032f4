"""`postprocess sweep` without its command line: on one labelled split of a run's scores, the metric by k, the
shared k, each task's per-output tuning (AU: per-AU thresholds and per-AU (k, threshold); VA: per-dimension k;
EXPR: per-class k), the video-level cross-validated estimate of the selection, and the postprocess.json content
that records them (`postprocess.config`).

`tune_split` returns the report (the tables and choices: the command's output, which the CLI prints) with the
config; writing the files is the CLI's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import pandas as pd

from features.tasks import Task, get_task

from .scores import ScoreSet
from .selection import cross_validated_selection
from .stats import valid_rows
from .sweep import best_k, clip_ks, longest_video, per_output_k, sweep_k, tune_au_k_thresholds, tune_expr_class_k
from .thresholds import compare_thresholds, tune_thresholds
from .timeline import filled_scores, smoothed_scores

log = logging.getLogger(__name__)


@dataclass
class SweepOptions:
    """What `postprocess sweep` tunes: the split's name (for the report), the window statistic, how AU
    thresholds are chosen, whether submit applies the per-output choice, and the folds of the CV estimate."""
    split: str = "val"
    stat: str = "mean"
    thresholds: str = "exact"
    per_output: bool = False
    cv: int = 5


@dataclass
class Tuned:
    """A sweep's results: the metric by k, the shared k, scores filled and smoothed at that k, the config for
    postprocess.json and the report lines."""
    task: Task
    table: pd.DataFrame
    k: int
    filled: np.ndarray
    smoothed: np.ndarray
    config: dict
    report: list[str] = field(default_factory=list)


def tune_split(ss: ScoreSet, ks: Sequence[int], opts: SweepOptions, source: str) -> Tuned:
    """Sweep k on the labelled split `ss` and tune what the task allows beyond one shared k (`source`: the
    scores file, recorded in the config)."""
    task = get_task(ss.task)
    filled = filled_scores(ss)
    asked, ks = ks, clip_ks(ks, longest_video(ss.video))
    if len(ks) < len(asked):
        log.info("--k: every window wider than the longest video (%d frames) smooths alike, so the sweep stops "
                 "at k = %d (%d of the %d values asked for)", longest_video(ss.video), ks[-1], len(ks), len(asked))
    table = sweep_k(task, ss.y, filled, ss.video, ks, stat=opts.stat, progress=True)
    k = best_k(table)
    res = Tuned(task, table, k, filled, smoothed_scores(ss, k, opts.stat, filled=filled), {})
    res.report = _shared_report(task, ss, table, k, ks, opts.split)
    res.config = {"task": task.name, "split": opts.split, "stat": opts.stat, "k": k,
                  "metric": float(table.loc[table.k == k, task.metric_name].iloc[0]),
                  "metric_name": task.metric_name, "ks": [ks[0], ks[-1], len(ks)],
                  "use_per_output": opts.per_output, "source": source,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    per_task = {"multilabel": _tune_au, "regression": _tune_va, "multiclass": _tune_expr}[task.kind]
    per_task(res, ss, ks, opts)
    if opts.cv >= 2:
        _cross_validate(res, ss, ks, opts)
    return res


def _fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _shared_report(task: Task, ss: ScoreSet, table: pd.DataFrame, k: int, ks: Sequence[int], split: str
                   ) -> list[str]:
    valid = valid_rows(task, ss.y)
    m0 = float(table[task.metric_name].iloc[0])
    mk = float(table.loc[table.k == k, task.metric_name].iloc[0])
    return [f"{task.name}: {task.metric_name} by k on split {split} ({len(np.unique(ss.video))} videos, "
            f"{len(ss)} frames smoothed, {int(valid.sum())} labelled frames scored, "
            f"{int((valid & ~ss.face).sum())} of them without a face and filled from neighbours)",
            _fmt(table[["k", task.metric_name] + [c for c in table.columns if c.startswith("ccc_")]]),
            f"best shared k = {k}: {task.metric_name} {mk:.4f} (first k in the sweep, {ks[0]}: {m0:.4f})"]


def _tune_au(res: Tuned, ss: ScoreSet, ks: Sequence[int], opts: SweepOptions) -> None:
    """Per-AU thresholds at the shared k (compared across methods), then per-AU (k, threshold)."""
    task, k, cfg, out = res.task, res.k, res.config, res.report
    valid = valid_rows(task, ss.y)
    comp = compare_thresholds(ss.y[valid], res.smoothed[valid], task.labels)
    out += [f"\nper-AU thresholds at k = {k} (in-sample):", comp.to_string(float_format=lambda v: f"{v:.3f}"),
            "mean F1: fixed 0.5 {:.4f}, grid 0.1..0.9 {:.4f}, exact {:.4f}".format(
                comp.f1_fixed.mean(), comp.f1_grid.mean(), comp.f1_exact.mean())]
    none = [n for n, has in zip(task.labels, (ss.y[valid] == 1).any(axis=0)) if not has]
    if none:
        out.append(f"no positive frame on split {opts.split} for {', '.join(none)}: F1 is 0 at any threshold, so "
                   f"{'its' if len(none) == 1 else 'their'} threshold stays 0.5 under every method (and per-AU "
                   f"k = the shared k)")
        cfg["no_positives"] = none
    thr = tune_thresholds(ss.y[valid], res.smoothed[valid], opts.thresholds)
    cfg.update(thresholds=thr.thresholds.tolist(), thresholds_method=opts.thresholds, metric_tuned=thr.mean_f1)
    tun = tune_au_k_thresholds(ss.y, res.filled, ss.video, ks, stat=opts.stat, progress=True)
    out += [f"\nper-AU (k, threshold), grid 1/100 (in-sample): mean F1 {tun.f1.mean():.4f} vs one shared "
            f"k = {tun.shared_k}: {tun.shared_f1.mean():.4f} (gain {tun.gain:+.4f})",
            tun.table().to_string(float_format=lambda v: f"{v:.3f}")]
    cfg["per_output"] = {"k": tun.k.tolist(), "thresholds": tun.thresholds.tolist(),
                         "metric": float(tun.f1.mean()), "shared_metric": float(tun.shared_f1.mean()),
                         "gain": tun.gain}


def _tune_va(res: Tuned, ss: ScoreSet, ks: Sequence[int], opts: SweepOptions) -> None:
    """Valence and arousal each at their own best k (CCC is separable per dimension)."""
    po = per_output_k(res.task, res.table)
    res.report.append(f"\nper-dimension k: {dict(zip(res.task.labels, po['k']))}: {po['metric']:.4f} "
                      f"(gain {po['gain']:+.4f} over shared k)")
    res.config["per_output"] = po


def _tune_expr(res: Tuned, ss: ScoreSet, ks: Sequence[int], opts: SweepOptions) -> None:
    """A k per class, by coordinate ascent from the shared k."""
    tun = tune_expr_class_k(ss.y, res.filled, ss.video, ks, stat=opts.stat, shared_k=res.k, progress=True)
    res.report.append(f"\nper-class k (coordinate ascent over {len(tun.candidates)} candidate k, in-sample): "
                      f"{dict(zip(res.task.labels, tun.k))}: {tun.metric:.4f} vs shared k = {tun.shared_k}: "
                      f"{tun.shared_metric:.4f} (gain {tun.gain:+.4f})")
    res.config["per_output"] = tun.to_dict()


def _cross_validate(res: Tuned, ss: ScoreSet, ks: Sequence[int], opts: SweepOptions) -> None:
    """Video-level folds inside the split: choose on the training folds, score the held-out fold, pooled."""
    n_vid = len(np.unique(ss.video))
    if n_vid < opts.cv:
        res.report.append(f"\n(cross-validation skipped: {n_vid} videos for {opts.cv} folds)")
        return
    cv = {}
    res.report.append(f"\nvideo-level {opts.cv}-fold selection inside {opts.split} (choose on train folds, score "
                      f"the held-out fold, pooled):")
    for po in ([False, True] if res.task.kind != "multiclass" else [False]):
        sel = cross_validated_selection(res.task, ss.y, res.filled, ss.video, ks, opts.cv, per_output=po,
                                        stat=opts.stat, progress=True)
        name = "per-output" if po else "shared k"
        res.report.append(f"  {name:10s}: no smoothing {sel.baseline:.4f}, in-sample {sel.in_sample:.4f}, "
                          f"cross-validated {sel.cv:.4f} (optimism {sel.optimism:+.4f}), fold k {sel.fold_k}")
        cv["per_output" if po else "shared"] = sel.to_dict()
    res.config["cv"] = cv
