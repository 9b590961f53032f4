"""The rows a run fits and is scored on: the labelled frames of a split with the features of every feature set
(`Split`), and every frame of some videos on the full frame timeline of postprocess.timeline (`Frames`), which is
what validation scores, smoothing and the test split are computed on."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.finite import read_for_heads
from features.labels import Joined, join, label_array, load_labels
from features.store import FeatureStore
from features.tasks import Task
from postprocess.scores import ScoreSet, timeline_scores
from postprocess.submission import read_sample_list
from postprocess.timeline import full_timeline, spread

from . import featuresets
from .base import Head

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split's rows for every feature set, on a common set of (video, frame) rows."""
    X: dict[str, np.ndarray]
    y: np.ndarray
    video: np.ndarray
    frame: np.ndarray
    n_labelled: int
    n_missing: int
    missing_reasons: dict
    labels: pd.DataFrame | None = None     # every valid labelled frame (video, frame, label columns)
    source: str = ""             # the annotation folder or MTL file the labels came from


def load_split(store: FeatureStore, labels_root: str | Path, task: Task, split: str,
               sets: list[str]) -> Split:
    """Labelled frames of a split with the features of every set; only rows every set has are kept."""
    labels = load_labels(labels_root, task, split)
    if len(labels) == 0:
        raise InputError(f"{task.name}: the {split} split has no valid labelled frames", labels_root)
    joins: dict[str, Joined] = {s: join(store, labels, task, featuresets.resolve(store, s)) for s in sets}
    first = joins[sets[0]]
    keys = first.index.assign(i0=np.arange(len(first.index)))
    for s in sets[1:]:
        keys = keys.merge(joins[s].index.assign(**{f"i_{s}": np.arange(len(joins[s].index))}),
                          on=["video", "frame"], how="inner")
    X = {}
    for s in sets:
        col = "i0" if s == sets[0] else f"i_{s}"
        rows = keys[col].to_numpy()
        X[s] = joins[s].X if len(rows) == len(joins[s].X) and (rows == np.arange(len(rows))).all() \
            else joins[s].X[rows]
    rows0 = keys["i0"].to_numpy()
    n_missing = first.n_labelled - len(rows0)
    if len(rows0) == 0:
        raise InputError(f"{task.name}: none of the {first.n_labelled} labelled {split} frames has features "
                         f"({first.summary()})", store.paths[0])
    return Split(X=X, y=first.y[rows0], video=first.groups[rows0], frame=first.index["frame"].to_numpy()[rows0],
                 n_labelled=first.n_labelled, n_missing=n_missing,
                 missing_reasons=first.missing["reason"].value_counts().to_dict(), labels=labels,
                 source=labels.attrs.get("source", ""))


def merge_splits(a: Split, b: Split) -> Split:
    """Train+val: both splits once each (the reference appended validation rows twice)."""
    return Split(X={s: np.concatenate([a.X[s], b.X[s]]) for s in a.X}, y=np.concatenate([a.y, b.y]),
                 video=np.concatenate([a.video, b.video]), frame=np.concatenate([a.frame, b.frame]),
                 n_labelled=a.n_labelled + b.n_labelled, n_missing=a.n_missing + b.n_missing,
                 missing_reasons={})


def read_test_list(path: str | Path) -> list[str]:
    """Test videos from the organisers' sample list (`video/00001.jpg,...` rows) or a file of video names."""
    p = Path(path)
    if not p.exists():
        raise InputError("test list not found", p)
    lines = [ln.split(",", 1)[0].strip() for ln in p.read_text(encoding="utf-8-sig").splitlines()]
    lines = [ln for ln in lines if ln and not ln.lower().startswith("image_location")]
    if not lines:
        raise InputError("test list has no rows", p)
    if all("/" in ln for ln in lines):
        return list(dict.fromkeys(read_sample_list(p).video.tolist()))
    return list(dict.fromkeys(lines))


def load_test(store: FeatureStore, videos: list[str], sets: list[str],
              what: str = "test") -> tuple[dict, pd.DataFrame]:
    """All cached frames of the test (or other) videos for every feature set (face-less rows included, flagged)."""
    exts = list(dict.fromkeys(k.split("/")[0] for s in sets for k in featuresets.resolve(store, s)))
    have = [v for v in videos if all(store.has_video(e, v) for e in exts)]
    if len(have) < len(videos):
        log.info("%s: %d of %d videos are not cached for %s; they get no scores here", what,
                 len(videos) - len(have), len(videos), ", ".join(exts))
    if not have:
        raise InputError(f"none of the {what} videos is cached", store.paths[0])
    outs: dict[str, list[str]] = {}
    for s in sets:
        for k in featuresets.resolve(store, s):
            e, o = k.split("/")
            outs.setdefault(e, [])
            if o not in outs[e]:
                outs[e].append(o)
    blk = read_for_heads(store, have, exts, outputs=outs)
    X = {s: np.hstack([blk.arrays[k].astype(np.float32, copy=False) for k in featuresets.resolve(store, s)])
         for s in sets}
    return X, blk.index.assign(video=blk.index["video"].astype(str))


@dataclass
class Frames:
    """Every frame 1..last of some videos (the full timeline of postprocess.timeline): features of the cached
    frames, and labels where given (the task's invalid marker elsewhere)."""
    task: Task
    X: dict[str, np.ndarray]     # per feature set, cached rows
    row: np.ndarray              # (N,) cached row of each frame, -1 where the cache has none
    video: np.ndarray
    frame: np.ndarray
    face: np.ndarray             # (N,) cached with a face: the frames that get scores
    y: np.ndarray | None

    def predict(self, head: Head, feature_set: str, what: str, out_of_fold: bool = False) -> np.ndarray:
        """The head's scores on every frame with a face, NaN on the others (filled later, when smoothing).
        `out_of_fold`: a k-fold head scores each video with the fold model that did not see it."""
        s = np.full((len(self.video), self.task.n_outputs), np.nan, np.float32)
        if self.face.any():
            X = self.X[feature_set][self.row[self.face]]
            rows = dict(groups=self.video[self.face], frames=self.frame[self.face])
            s[self.face] = head.predict_oof(X, **rows) if out_of_fold else head.predict_proba(X, **rows)
        return s

    def scoreset(self, scores: np.ndarray, heads: dict | None = None) -> ScoreSet:
        return timeline_scores(self.task.name, self.video, self.frame, scores, self.face, self.y, heads)


def load_frames(store: FeatureStore, task: Task, videos: list[str], sets: list[str],
                labels: pd.DataFrame | None = None, what: str = "test") -> Frames:
    """Every frame of the cached videos among `videos`: cached frames (with or without a face) and labelled
    frames the cache lacks, laid out on the full timeline, so that a split is smoothed over frames."""
    X, idx = load_test(store, videos, sets, what)
    cached = pd.DataFrame({"video": idx["video"].to_numpy(str), "frame": idx["frame"].to_numpy(np.int64),
                           "face": idx["face"].to_numpy(bool), "row": np.arange(len(idx))})
    m = cached
    if labels is not None:
        lab = labels[labels["video"].astype(str).isin(set(cached["video"]))]
        lab = lab.assign(video=lab["video"].astype(str), frame=lab["frame"].to_numpy(np.int64))
        m = cached.merge(lab, on=["video", "frame"], how="outer", sort=False)
    order = pd.Categorical(m["video"], categories=pd.unique(cached["video"])).codes
    m = m.assign(_v=order).sort_values(["_v", "frame"], kind="stable")
    row = m["row"].fillna(-1).to_numpy(np.int64)
    face = m["face"].eq(True).to_numpy() & (row >= 0)
    y = None
    if labels is not None:
        cols = ["label"] if task.kind == "multiclass" else list(task.labels)
        y = label_array(task, m[cols].fillna(task.invalid))
    video, frame, pos = full_timeline(m["video"].to_numpy(str), m["frame"].to_numpy(np.int64), what)
    n = len(video)
    return Frames(task, X, spread(pos, n, row, -1), video, frame, spread(pos, n, face, False),
                  spread(pos, n, y, task.invalid))
