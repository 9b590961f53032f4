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

from numbers import Real
from typing import Sequence

import numpy as np
from sklearn.utils._param_validation import Interval

from features.errors import InputError

from .base import SEED, Head, fit_context, integers
from .composite import Composite
from .registry import register_head

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


@register_head("bagging", tasks=("expr",), title="bagging head (meta-vote)", member="fusion_mlp")
class BaggingHead(Composite):
    """`n_estimators` clones of `estimator` (a per-frame EXPR head, or its saved {"kind", "params"}) on bootstrap
    samples of `max_samples` × n rows, combined by `rule`."""
    member_prefix = "bag"
    _parameter_constraints = {**Composite._parameter_constraints,
                              "n_estimators": [integers(1, 256)],
                              "max_samples": [Interval(Real, 0, 1, closed="right")],
                              "rule": [str], "priority": ["array-like", None],
                              "quorum": [Interval(Real, 0, 1, closed="right")],
                              "seed": [SEED]}

    def __init__(self, task="expr", estimator: Head | dict | None = None, n_estimators: int = 5,
                 max_samples: float = 1.0, rule: str = "majority", priority: Sequence[str] | None = None,
                 quorum: float = 1 / 3, seed: int = 0, feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.rule = rule
        self.priority = priority
        self.quorum = quorum
        self.seed = seed

    def _default_member(self) -> Head:
        from .fusion import FusionMLPHead
        return FusionMLPHead(self.get_params(deep=False)["task"], epochs=5, seed=self.seed)

    def _check_params(self) -> None:
        if self.rule not in RULES:
            raise InputError(f"unknown meta-rule {self.rule!r}; choose from {', '.join(RULES)}")
        order = parse_priority(self.priority, self.task.labels)
        if self.rule == "priority" and not order:
            raise InputError("the priority meta-rule needs a class order (e.g. --vote priority:Other,Fear)")
        if self._member().kind == "temporal":
            raise InputError("bagging draws frames, not videos: use a per-frame head (fusion_mlp, mlp)")

    @fit_context(prefer_skip_nested_validation=False)     # the member is a head given by the caller
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        self.priority_ = parse_priority(self.priority, self.task.labels)
        self._check_fit(X, y, X_val, y_val)
        y = np.asarray(y)
        rng = np.random.default_rng(self.seed)
        n = max(1, int(round(self.max_samples * len(X))))
        self.estimators_ = []
        for i in range(int(self.n_estimators)):
            idx = np.sort(rng.integers(0, len(X), n))
            while len(np.unique(y[idx])) < 2:                 # a sample of one class cannot train a classifier
                idx = np.sort(rng.integers(0, len(X), n))
            self.estimators_.append(self._fit_member(X, y, idx, seed=(self.seed + i) % 2**32,   # seeds are 32-bit
                                                     X_val=X_val, y_val=y_val))
        return self

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        probs = [h.predict_proba(X) for h in self.estimators_]
        decision, votes = meta_vote(np.stack([p.argmax(1) for p in probs]), self.task.n_outputs, self.rule,
                                    self.priority_, self.quorum, np.mean(probs, axis=0))
        out = 0.5 * votes
        out[np.arange(len(X)), decision] += 0.5
        return out.astype(np.float32)

    def _n_saved(self) -> int:
        return int(self.n_estimators)
