"""Bagging with a meta-rule for EXPR, after USTC's ABAW-5 system: sub-classifiers trained on bootstrap samples
of the training frames, their predictions combined by a rule:

- `majority`: the class most sub-classifiers predict (ties: the higher mean probability);
- `priority`: the user's class order, highest first: the first class that at least `quorum` of the
  sub-classifiers predict wins, else the majority (so a class that the sub-classifiers under-predict, e.g. a rare
  one, can be favoured deliberately).

Scores are 0.5 · vote shares + 0.5 · one-hot(decision): probabilities that sum to 1, whose argmax is the rule's
decision, and which still carry the vote shares for blends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import clone

from features.errors import InputError

from .base import HEAD_KINDS, Head, register

RULES = ("majority", "priority")


def meta_vote(pred: np.ndarray, n_classes: int, rule: str = "majority", priority: Sequence[int] = (),
              quorum: float = 1 / 3, mean_proba: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(decision (n,), vote shares (n, C)) from sub-classifier predictions `pred` (m, n)."""
    m, n = pred.shape
    votes = np.zeros((n, n_classes))
    for p in pred:
        votes[np.arange(n), p] += 1
    votes /= m
    tie = 1e-6 * (mean_proba if mean_proba is not None else 0)
    decision = np.argmax(votes + tie, axis=1)
    if rule == "priority":
        done = np.zeros(n, bool)
        for c in priority:
            hit = ~done & (votes[:, c] >= quorum - 1e-12)
            decision[hit] = c
            done |= hit
    return decision, votes


def parse_priority(spec: Sequence[str | int] | None, labels: Sequence[str]) -> list[int]:
    """Class names or indices -> indices, each known and named once."""
    out = []
    for c in spec or ():
        if isinstance(c, (int, np.integer)) or str(c).isdigit():
            i = int(c)
        else:
            names = {n.lower(): j for j, n in enumerate(labels)}
            if str(c).lower() not in names:
                raise InputError(f"priority class {c!r} is not one of {', '.join(labels)}")
            i = names[str(c).lower()]
        if not 0 <= i < len(labels) or i in out:
            raise InputError(f"priority class {c!r} is out of range or named twice")
        out.append(i)
    return out


@register
class BaggingHead(Head):
    """`n_estimators` clones of `estimator` (a per-frame EXPR head, or its saved {"kind", "params"}) on bootstrap
    samples of `max_samples` × n rows, combined by `rule`."""
    kind = "bagging"
    member_prefix = "bag"

    def __init__(self, task="expr", estimator: Head | dict | None = None, n_estimators: int = 5, max_samples: float = 1.0,
                 rule: str = "majority", priority: Sequence[str] | None = None, quorum: float = 1 / 3,
                 seed: int = 0):
        super().__init__(task)
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.rule = rule
        self.priority = priority
        self.quorum = quorum
        self.seed = seed

    @property
    def params(self) -> dict:
        e = self.estimator
        p = {k: v for k, v in self.get_params(deep=False).items() if k not in ("task", "estimator")}
        return {"estimator": {"kind": e.kind, "params": e.params} if isinstance(e, Head) else e, **p}

    def _base(self) -> Head:
        e = self.estimator
        if e is None:
            from .fusion import FusionMLPHead
            return FusionMLPHead(self._task, epochs=5, seed=self.seed)
        if isinstance(e, Head):
            return clone(e)
        if isinstance(e, dict) and e.get("kind") in HEAD_KINDS:
            return HEAD_KINDS[e["kind"]](self._task, **e.get("params", {}))
        raise InputError(f"bagging: estimator must be a head, got {e!r}")

    def fit(self, X, y, X_val=None, y_val=None, **rows):
        if self.task.kind != "multiclass":
            raise InputError(f"bagging with a meta-vote is for the EXPR task, not {self.task.name}")
        if self.rule not in RULES:
            raise InputError(f"unknown meta-rule {self.rule!r}; choose from {', '.join(RULES)}")
        self.priority_ = parse_priority(self.priority, self.task.labels)
        if self.rule == "priority" and not self.priority_:
            raise InputError("the priority meta-rule needs a class order (e.g. --vote priority:Other,Fear)")
        if getattr(self._base(), "kind", "") == "temporal":
            raise InputError("bagging draws frames, not videos: use a per-frame head (fusion_mlp, mlp)")
        self._check_fit(X, y, X_val, y_val)
        y = np.asarray(y)
        rng = np.random.default_rng(self.seed)
        n = max(1, int(round(self.max_samples * len(X))))
        self.estimators_ = []
        for i in range(int(self.n_estimators)):
            idx = np.sort(rng.integers(0, len(X), n))
            while len(np.unique(y[idx])) < 2:                 # a sample of one class cannot train a classifier
                idx = np.sort(rng.integers(0, len(X), n))
            h = self._base()
            if "seed" in h.get_params():
                h.set_params(seed=(self.seed + i) % 2**32)   # seeds are 32-bit
            self.estimators_.append(h.fit(X[idx], y[idx], X_val, y_val))
        return self

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        probs = [h.predict_proba(X) for h in self.estimators_]
        decision, votes = meta_vote(np.stack([p.argmax(1) for p in probs]), self.task.n_outputs, self.rule,
                                    self.priority_, self.quorum, np.mean(probs, axis=0))
        out = 0.5 * votes
        out[np.arange(len(X)), decision] += 0.5
        return out.astype(np.float32)

    def _save(self, path: Path):
        self._save_members(path, "bag")

    def _load(self, path: Path):
        self._load_fitted(path)
        self._load_members(path, "bag", int(self.n_estimators))
