"""Video-level cross-validated estimate of what a run tunes on its validation videos.

`classify train` chooses blend weights, the smoothing half-width k and (AU) per-unit thresholds on the
validation videos and reports the metric on the same videos: that number is in-sample, optimistic by as much as
the choices fit noise (a blend of two heads on two videos easily "beats" its best member). The estimate here
makes the very same choices, the same way (`BlendHead.fit`, the best k of a sweep, `tune_thresholds`), on the
videos of all but one fold of a GroupKFold over the validation videos, applies them to the held-out fold, pools
the held-out frames and scores them once, as `postprocess sweep --cv` does for k. It needs at least `N_FOLDS`
labelled validation videos; with fewer there is no estimate, and the report says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold

from features.tasks import Task
from postprocess.gaps import fill_gaps
from postprocess.smoothing import BoxSmoother
from postprocess.stats import check_labels, make_stats, valid_rows
from postprocess.sweep import check_ks, run_states
from postprocess.thresholds import tune_thresholds

from .blend import BlendHead

N_FOLDS = 5          # as `postprocess sweep --cv`; also the fewest labelled videos an estimate needs


@dataclass
class CVEstimate:
    """The pooled held-out metric (None when the validation set is too small: `note` says why)."""
    metric: float | None
    n_splits: int
    n_videos: int
    fold_k: list[int] = field(default_factory=list)
    fold_weights: list[list[float]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return {"metric": self.metric, "folds": self.n_splits, "videos": self.n_videos, "fold_k": self.fold_k,
                **({"fold_weights": self.fold_weights} if self.fold_weights else {}),
                **({"note": self.note} if self.note else {})}


def too_small_note(n_videos: int) -> str:
    return (f"the validation set is too small for a video-level cross-validated estimate ({n_videos} labelled "
            f"video{'s' if n_videos != 1 else ''}; it needs at least {N_FOLDS})")


def labelled_videos(task: Task, y: np.ndarray | None, video: np.ndarray) -> int:
    if y is None:
        return 0
    return int(len(np.unique(np.asarray(video)[valid_rows(task, y)])))


def video_folds(task: Task, y: np.ndarray, video: np.ndarray, n_splits: int) -> np.ndarray:
    """Fold of every row (-1 for videos without a labelled frame): GroupKFold over the labelled videos,
    balanced by their labelled frames."""
    video = np.asarray(video).astype(str)
    valid = valid_rows(task, y)
    fold_of = {}
    for f, (_, test) in enumerate(GroupKFold(n_splits=n_splits).split(video[valid], groups=video[valid])):
        fold_of.update(dict.fromkeys(np.unique(video[valid][test]).tolist(), f))
    names, inv = np.unique(video, return_inverse=True)
    return np.array([fold_of.get(v, -1) for v in names.tolist()], np.int64)[inv]


def cross_validated(task: Task, y: np.ndarray, video: np.ndarray, frame: np.ndarray, face: np.ndarray,
                    members: dict[str, np.ndarray], ks, blend: bool = False,
                    tune: bool | None = None) -> CVEstimate:
    """Estimate of the run's headline number for one row of its table.

    y, video, frame, face: the validation frame timeline (rows of a video contiguous); `members`: per head,
    scores on that timeline (NaN where face is False); one member unless `blend`, whose weights are then chosen
    per fold. ks: one int (k fixed, not chosen) or the candidates swept. `tune` (default: AU) tunes per-unit
    thresholds on the smoothed scores of the training folds. Folds that share their scores (every fold without
    a blend, folds whose blend weights agree) share one smoothing pass over ks: the statistics are kept per
    fold, as in `postprocess.selection`."""
    tune = task.kind == "multilabel" if tune is None else tune
    n_vid = labelled_videos(task, y, video)
    if n_vid < N_FOLDS:
        return CVEstimate(None, 0, n_vid, note=too_small_note(n_vid))
    names = list(members)
    if not blend and len(names) != 1:
        raise ValueError("cross_validated: one member, unless blend")
    fold = video_folds(task, y, video, N_FOLDS)
    valid = valid_rows(task, y)
    weights: list[tuple[float, ...]] = []
    for f in range(N_FOLDS):
        if blend:
            rows = (fold >= 0) & (fold != f) & valid & face
            weights.append(tuple(BlendHead(task).fit({m: members[m][rows] for m in names}, y[rows]).weights_))
        else:
            weights.append((1.0,))
    pred = np.full((len(y), task.n_outputs), np.nan)
    thr_rows = np.full((len(y), task.n_outputs), 0.5) if task.kind == "multilabel" else None
    fold_k = [0] * N_FOLDS
    for w in dict.fromkeys(weights):                      # one pass per distinct scoring of the timeline
        folds = [f for f in range(N_FOLDS) if weights[f] == w]
        raw = (np.tensordot(np.asarray(w), np.stack([members[m] for m in names]), axes=1) if blend
               else members[names[0]])
        filled = fill_gaps(raw, face, video, frame)
        ks_f = _fold_ks(task, y, video, fold, filled, ks, folds)
        sm = BoxSmoother(filled, video, max_k=max(ks_f.values()))
        for k in sorted(set(ks_f.values())):
            smoothed = sm.smooth(k).reshape(len(y), -1)
            for f in (f for f in folds if ks_f[f] == k):
                fold_k[f] = k
                held, train = fold == f, (fold >= 0) & (fold != f)
                pred[held] = smoothed[held]
                if tune:
                    v = train & valid
                    thr_rows[held] = tune_thresholds(y[v], smoothed[v]).thresholds
    scored = valid & (fold >= 0)
    metric = float(task.score(y[scored], pred[scored], None if thr_rows is None else thr_rows[scored]))
    return CVEstimate(metric, N_FOLDS, n_vid, fold_k, [list(w) for w in weights] if blend else [])


def _fold_ks(task: Task, y, video, fold, filled, ks, folds: list[int]) -> dict[int, int]:
    """k of each fold in `folds`: the given k, or the best of the sweep on the other folds' videos (the smallest
    such k on ties, as `best_k`), from one pass over ks with the metric's statistics kept per fold."""
    if isinstance(ks, (int, np.integer)):
        return dict.fromkeys(folds, int(ks))
    ks = check_ks({0, *ks})
    sm = BoxSmoother(filled, video, max_k=ks[-1])
    st = make_stats(task, sm.to_layout(check_labels(task, y, len(y)), task.invalid),
                    sm.to_layout(np.maximum(fold, 0), 0), N_FOLDS)       # fold -1: no labelled frame anyway
    states = run_states(sm, st, ks)
    out = {}
    for f in folds:
        train = [g for g in range(N_FOLDS) if g != f]
        vals = np.array([st.metric(s, train)[task.metric_name] for s in states])
        out[f] = ks[int(np.flatnonzero(vals == vals.max())[0])]
    return out
