"""The three ABAW tasks as data: one `Task` carries everything that differs between VA, EXPR and AU.

Scores are what heads output per frame: VA (n, 2) values in [-1, 1]; EXPR (n, 8) class probabilities; AU
(n, 12) per-AU probabilities. `Task.decide` turns scores into challenge predictions and `Task.evaluate` gives
the official metric, so no stage needs a per-task branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import metrics
from .errors import InputError

Kind = Literal["regression", "multiclass", "multilabel"]


@dataclass(frozen=True)
class Task:
    name: str                      # 'va' | 'expr' | 'au'
    folders: tuple[str, ...]       # annotation folder names under the Aff-Wild2 root (first is canonical)
    labels: tuple[str, ...]        # header of the annotation files, in order
    invalid: float                 # marker of an unlabelled frame
    kind: Kind
    metric_name: str
    value_range: tuple[float, float]

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    @property
    def header(self) -> str:
        return ",".join(self.labels)

    @property
    def label_dtype(self) -> type:
        return np.float32 if self.kind == "regression" else np.int64

    def label_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the label array for n frames: EXPR labels are one int per frame, VA/AU a row per frame."""
        return (n,) if self.kind == "multiclass" else (n, self.n_outputs)

    def decide(self, scores: np.ndarray, thresholds: np.ndarray | float | None = None) -> np.ndarray:
        """Challenge predictions from scores: VA clipped to [-1, 1], EXPR argmax, AU scores >= threshold."""
        s = np.asarray(scores)
        if self.kind == "regression":
            return np.clip(s, -1.0, 1.0)
        if self.kind == "multiclass":
            return s.argmax(axis=1)
        thr = 0.5 if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        return (s >= thr).astype(np.int64)

    def evaluate(self, y_true: np.ndarray, scores: np.ndarray,
                 thresholds: np.ndarray | float | None = None) -> dict[str, float]:
        """The official metric under key `self.metric_name`, plus per-output details."""
        y = np.asarray(y_true)
        if len(y) != len(scores):
            raise InputError(f"{self.name}: {len(y)} labels but {len(scores)} score rows")
        if len(y) == 0:
            raise InputError(f"{self.name}: nothing to evaluate (0 frames)")
        pred = self.decide(scores, thresholds)
        if self.kind == "regression":
            c = metrics.ccc(y, pred)
            return {self.metric_name: float(np.mean(c)),
                    **{f"ccc_{n}": float(v) for n, v in zip(self.labels, c)}}
        if self.kind == "multiclass":
            return {self.metric_name: metrics.expr_f1(y, pred, self.n_outputs),
                    "accuracy": metrics.accuracy(y, pred)}
        f1 = metrics.f1_per_column(y, pred)
        return {self.metric_name: float(f1.mean()), **{f"f1_{n}": float(v) for n, v in zip(self.labels, f1)}}

    def score(self, y_true: np.ndarray, scores: np.ndarray,
              thresholds: np.ndarray | float | None = None) -> float:
        """Just the official metric (higher is better for all three tasks)."""
        return self.evaluate(y_true, scores, thresholds)[self.metric_name]


VA = Task("va", ("VA_Estimation_Challenge",), ("valence", "arousal"), -5.0, "regression", "P_VA",
          (-1.0, 1.0))
EXPR = Task("expr", ("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"),
            ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"), -1,
            "multiclass", "P_EXPR", (0, 7))
AU = Task("au", ("AU_Detection_Challenge",),
          ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"), -1,
          "multilabel", "P_AU", (0, 1))

TASKS: dict[str, Task] = {t.name: t for t in (VA, EXPR, AU)}

# AffectNet 8-class order (Anger, Contempt, Disgust, Fear, Happiness, Neutral, Sadness, Surprise) -> for each
# Aff-Wild2 class, the AffectNet column that holds it (Contempt stands in for Other).
AFFECTNET_TO_AFFWILD = np.array([5, 0, 2, 3, 4, 6, 7, 1])


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None

AFFECTNET8 = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
# Synonyms other data sets use for the Aff-Wild2 classes (FER2013: angry, disgust, ...); Contempt -> Other.
_SYNONYMS = {"angry": "Anger", "anger": "Anger", "disgust": "Disgust", "fear": "Fear", "happy": "Happiness",
             "happiness": "Happiness", "sad": "Sadness", "sadness": "Sadness", "surprise": "Surprise",
             "neutral": "Neutral", "other": "Other", "contempt": "Other"}


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the class axis (axis 1), computed stably in float64."""
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def affwild_probabilities(class_names, logits: np.ndarray) -> np.ndarray:
    """Softmax of pre-trained expression logits over the class axis, re-ordered into Aff-Wild2's 8 classes.

    AffectNet's 8 classes use `AFFECTNET_TO_AFFWILD` (Contempt stands in for Other); other class lists (e.g.
    FER2013's 7) are mapped by name; classes the model does not have get probability 0.
    """
    names = tuple(class_names)
    z = np.asarray(logits, dtype=np.float64)
    if not names or z.ndim != 2 or z.shape[1] != len(names):
        raise InputError(f"logits have shape {z.shape} but the model names {len(names)} classes")
    p = softmax(z)
    if tuple(n.lower() for n in names) == tuple(n.lower() for n in AFFECTNET8):
        return p[:, AFFECTNET_TO_AFFWILD].astype(np.float32)
    target = {n: i for i, n in enumerate(EXPR.labels)}
    out = np.zeros((len(p), len(EXPR.labels)), np.float32)
    for j, n in enumerate(names):
        canon = _SYNONYMS.get(n.lower(), n)
        if canon not in target:
            raise InputError(f"class {n!r} has no Aff-Wild2 counterpart ({', '.join(EXPR.labels)})")
        out[:, target[canon]] += p[:, j]
    return out
