"""What each number of a run's table is: the rows of results.csv / metrics.json and results.md.

Every row says what it was scored on (`scored_on`), what was chosen on those same videos (`tuned_on_val`: the
training epoch, blend weights, k, AU thresholds), which of its numbers are therefore in-sample (`in_sample`:
column names), and the video-level cross-validated estimate of its headline number (`metric_cv`, see
`classify.crossval`) where something was tuned and the validation set allows one. results.md marks in-sample
numbers as such and says when there is no estimate, and why. A k-fold head has one row per fold (its held-out
train + val videos), a row with the mean ± standard deviation of those fold rows, and its main row scored
out-of-fold on the validation videos.
"""
from __future__ import annotations

import numpy as np

from features.tasks import Task

from .crossval import N_FOLDS, CVEstimate, too_small_note

TUNES_HEADLINE = ("weights", "k", "thresholds")        # what the CV estimate re-chooses per fold
SUMMARY_KEYS = {"metric_raw": "frame_level", "metric_smoothed": "smoothed",
                "metric_smoothed_thresholds": "smoothed_thresholds"}


def tuned_after(task: Task, ks) -> list[str]:
    """What every row's smoothing chooses on validation: k when swept, and AU thresholds."""
    return ([] if isinstance(ks, (int, np.integer)) else ["k"]) + (["thresholds"] if task.kind == "multilabel"
                                                                   else [])


def in_sample_columns(task: Task, tuned: list[str], train_val: bool) -> list[str]:
    """Columns of a row scored on the videos something of it was chosen on (all of them under --train-val)."""
    t = set(tuned) | ({"training"} if train_val else set())
    cols = []
    if t & {"training", "weights", "epoch"}:
        cols.append("metric_raw")
    if t & {"training", "weights", "epoch", "k"}:
        cols.append("metric_smoothed")
    if task.kind == "multilabel":
        cols.append("metric_smoothed_thresholds")      # thresholds are always tuned
    return cols


def needs_cv(tuned: list[str], train_val: bool) -> bool:
    """A held-out estimate means something only when validation videos were not training videos."""
    return not train_val and any(t in TUNES_HEADLINE for t in tuned)


def row_fields(task: Task, tuned: list[str], train_val: bool, est: CVEstimate | None) -> dict:
    return {"tuned_on_val": ", ".join(tuned + (["training (--train-val)"] if train_val else [])),
            "in_sample": ", ".join(in_sample_columns(task, tuned, train_val)),
            "metric_cv": None if est is None or est.metric is None else round(est.metric, 4)}


def _cols(row: dict) -> set[str]:
    return {c for c in str(row.get("in_sample") or "").split(", ") if c}


def _tuned(row: dict) -> list[str]:
    return [t for t in str(row.get("tuned_on_val") or "").split(", ") if t]


def fold_rows(mname: str, fs: str, head, n_folds: int | None) -> list[dict]:
    """A k-fold head's per-fold rows (each on its held-out train + val videos, frame level) and their
    mean ± standard deviation (ddof=1) in a row of its own."""
    scores = list(getattr(head, "fold_scores_", []) or [])
    if not n_folds or not scores:
        return []
    blank = dict(k="", metric_smoothed="", tuned_on_val="", in_sample="", metric_cv=None)
    rows = [dict(method=f"{mname} fold {i + 1}/{n_folds} ({n_vid} held-out videos)", feature_set=fs,
                 ensemble="no", metric_raw=round(s, 4), **blank,
                 scored_on=f"fold {i + 1}: its {n_vid} held-out train+val videos, frame level")
            for i, (s, n_vid) in enumerate(zip(scores, head.fold_videos_))]
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    rows.append(dict(method=f"{mname} mean ± std of {len(scores)} folds", feature_set=fs, ensemble="no",
                     metric_raw=round(float(np.mean(scores)), 4), metric_raw_std=round(std, 4), **blank,
                     scored_on=f"the {len(scores)} fold rows above: mean and standard deviation (ddof=1)"))
    return rows


def _find(rows: list[dict], name: str) -> dict:
    return next(r for r in rows if r["method"] == name or r["method"].startswith(f"{name} ("))


def said(task: Task, rows: list[dict], name: str) -> str:
    """One log line's worth of a head's numbers, each labelled (in-sample, out-of-fold, CV, per fold)."""
    r = _find(rows, name)
    ins = _cols(r)
    tag = lambda c: " (in-sample)" if c in ins else ""
    oof = " out-of-fold" if "out-of-fold" in r.get("scored_on", "") else ""
    parts = [f"{r['metric_raw']:.4f} frame-level{oof}{tag('metric_raw')}",
             f"{r['metric_smoothed']:.4f} smoothed (k={r['k']}){tag('metric_smoothed')}"]
    if "metric_smoothed_thresholds" in r:
        parts.append(f"{r['metric_smoothed_thresholds']:.4f} with tuned thresholds"
                     f"{tag('metric_smoothed_thresholds')}")
    if r.get("metric_cv") is not None:
        parts.append(f"video-level CV {r['metric_cv']:.4f}")
    mean = next((x for x in rows if x["method"].startswith(f"{name} mean ± std of ")), None)
    if mean is not None:
        parts.append(f"per fold {mean['metric_raw']:.4f} ± {mean['metric_raw_std']:.4f}")
    return ", ".join(parts)


def _no_cv_reason(row: dict, train_val: bool, n_val_videos: int, est: CVEstimate | None) -> str:
    if train_val:
        return "the validation videos were also training videos (--train-val): no held-out estimate"
    if est is not None and est.note:
        return est.note
    if not needs_cv(_tuned(row), False):
        return "nothing of the headline number was chosen on the validation videos"
    return ""


def summary_fields(row: dict, est: CVEstimate | None, train_val: bool, n_val_videos: int, summary: dict) -> dict:
    """metrics.json's summary: which of its numbers are in-sample, what was tuned, and the CV estimate."""
    ins = _cols(row)
    cv = est.to_dict() if est is not None else {"metric": None}
    note = _no_cv_reason(row, train_val, n_val_videos, est)
    if note:
        cv["note"] = note
    return {"in_sample": [s for c, s in SUMMARY_KEYS.items() if c in ins and s in summary],
            "tuned_on_val": row.get("tuned_on_val", ""), "cross_validated": row.get("metric_cv"),
            "cross_validation": cv}


def honesty_line(row: dict, est: CVEstimate | None, train_val: bool, n_val_videos: int) -> str:
    """The end of the run's last log line: what is in-sample, and the held-out estimate or why there is none."""
    if not _cols(row):
        return "nothing was tuned on the validation videos"
    what = f"in-sample ({row['tuned_on_val']} chosen on these {n_val_videos} validation videos)"
    if train_val:
        return "in-sample: the validation videos were also training videos (--train-val)"
    if row.get("metric_cv") is not None and est is not None:
        return f"{what}; video-level {est.n_splits}-fold CV estimate {row['metric_cv']:.4f}"
    note = _no_cv_reason(row, train_val, n_val_videos, est)
    return f"{what}" + (f"; {note}" if note else "")


def _cell(row: dict, col: str) -> str:
    v = row.get(col, "")
    if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
        return ""
    if not isinstance(v, (float, np.floating)):
        return str(v)
    s = f"{v:.4f}"
    if col == "metric_raw" and row.get("metric_raw_std") is not None:
        s += f" ± {row['metric_raw_std']:.4f}"
    return s + (" (in-sample)" if col in _cols(row) else "")


def markdown(task: Task, rows: list[dict], train_val: bool, n_val_videos: int, cv: dict[str, CVEstimate]) -> str:
    m = task.metric_name
    cols = {"method": "Method", "feature_set": "Features", "ensemble": "Ensemble", "metric_raw": f"{m} (frames)",
            "k": "k", "metric_smoothed": f"{m} (smoothed)",
            **({"metric_smoothed_thresholds": f"{m} (smoothed, tuned thresholds)"}
               if task.kind == "multilabel" else {}),
            "metric_cv": f"{m} video-level CV", "scored_on": "Scored on"}
    head = "| " + " | ".join(cols.values()) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        cells = [_cell(r, c) for c in cols]
        if r.get("metric_cv") is None and (train_val or needs_cv(_tuned(r), False)):
            cells[list(cols).index("metric_cv")] = "n/a"
        body += "| " + " | ".join(cells) + " |\n"
    notes = []
    tuned = sorted({t for r in rows for t in _tuned(r)})
    if any(_cols(r) for r in rows):
        notes.append(f"(in-sample): chosen and scored on the same {n_val_videos} validation videos ("
                     f"{', '.join(tuned)}: column tuned_on_val of results.csv), so optimistic.")
    ests = [e for e in cv.values() if e.metric is not None]
    if train_val:
        notes.append("Validation frames were also training frames (--train-val): these numbers are in-sample, "
                     "and no held-out estimate exists.")
    elif ests:
        notes.append(f"{m} video-level CV: the same choices made on {N_FOLDS - 1} of {N_FOLDS} folds of the "
                     f"validation videos (GroupKFold by video) and applied to the held-out fold, the held-out "
                     f"frames pooled and scored once: the estimate to quote."
                     + (" A training epoch chosen on validation is not re-chosen per fold." if "epoch" in tuned
                        else ""))
    elif cv:
        notes.append(f"No cross-validated estimate (n/a): {next(iter(cv.values())).note}; the in-sample numbers "
                     f"above are optimistic by an unknown amount.")
    if any(" mean ± std of " in r["method"] for r in rows):
        notes.append("k-fold: a head's first row scores each validation video with the fold model that did not "
                     "see it (out-of-fold); its fold rows score each fold's held-out train+val videos; "
                     "\"mean ± std\" is the mean and standard deviation (ddof=1) of those fold rows.")
    k_note = "k = smoothing half-width " + ("chosen on validation" if "k" in tuned else "as given")
    return (f"{task.name.upper()} on the validation set ({m}; {k_note})\n\n" + head + body
            + "".join(f"\n{n}\n" for n in notes))
