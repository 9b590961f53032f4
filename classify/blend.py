"""Blending: a weighted average of per-frame scores (probabilities or VA values) of several heads.

Weights are searched on validation over the probability simplex: an exhaustive grid (step 0.1) for up to four
members, which contains every one-hot weighting, so the blend is never worse on validation than its best
member; beyond four members the grid grows too fast and a coordinate search from the best one-hot start is used
(same guarantee, since it starts there and only accepts improvements).
"""
from __future__ import annotations

import itertools
import json
from numbers import Real
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from features.errors import InputError
from features.outputs import write_output

from .base import Head, fit_context
from .registry import register_head


def simplex_grid(m: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors of m non-negative multiples of `step` that sum to 1."""
    n = int(round(1 / step))
    rows = [c for c in itertools.product(range(n + 1), repeat=m - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in rows], float) / n


@register_head("blend", role="blend", title="blend")
class BlendHead(Head):
    files = ("weights.json", "fitted.json")
    _parameter_constraints = {**Head._parameter_constraints, "members": ["array-like", None],
                              "step": [Interval(Real, 0, 1, closed="right")]}

    def __init__(self, task, members: Sequence[str] | None = None, step: float = 0.1,
                 feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.members = members        # None: the keys of the dict given to fit (or m0, m1, ... for a list)
        self.step = step

    @property
    def search_method(self) -> str:
        m = len(getattr(self, "members_", None) or self.members or ())
        return (f"exhaustive simplex grid, step {self.step} ({len(simplex_grid(m, self.step))} weightings)"
                if m <= 4 else f"pairwise coordinate ascent, step {self.step}, from the best single member")

    @property
    def weights(self) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(self.weights_)

    def _stack(self, scores, members) -> np.ndarray:
        if isinstance(scores, dict):
            missing = [m for m in members if m not in scores]
            if missing:
                raise InputError(f"blend: scores of {missing} are missing")
            scores = [scores[m] for m in members]
        if len(scores) != len(members):
            raise InputError(f"blend of {len(members)} members got {len(scores)} score arrays")
        return np.stack([np.asarray(s, np.float32) for s in scores])

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, scores, y, X_val=None, y_val=None, **rows):
        """`scores`: validation scores of the members (dict name -> array, or a list in member order)."""
        members = list(self.members) if self.members else (
            list(scores) if isinstance(scores, dict) else [f"m{i}" for i in range(len(scores))])
        if not members:
            raise InputError("blend: no members")
        S = self._stack(scores, members)
        m = len(S)
        y = np.asarray(y)
        if S.shape[1] != len(y) or S.shape[2] != self.task.n_outputs:
            raise InputError(f"blend: member scores of shape {S.shape[1:]} do not fit {len(y)} "
                             f"{self.task.name} labels ({self.task.n_outputs} columns)")
        if not np.isfinite(S).all():
            raise InputError("blend: member scores hold NaN or infinite values")
        score = lambda w: self.task.score(y, np.tensordot(w, S, axes=1))
        if m <= 4:
            grid = simplex_grid(m, self.step)
            vals = np.array([score(w) for w in grid])
            best = int(np.argmax(vals))
            w = grid[best]
        else:
            singles = [score(np.eye(m)[i]) for i in range(m)]
            w = np.eye(m)[int(np.argmax(singles))]
            best_v = max(singles)
            improved = True
            while improved:
                improved = False
                for i, j in itertools.permutations(range(m), 2):
                    d = min(self.step, w[j])
                    if d <= 0:
                        continue
                    cand = w.copy()
                    cand[i] += d
                    cand[j] -= d
                    v = score(cand)
                    if v > best_v + 1e-12:
                        w, best_v, improved = cand, v, True
        self.members_ = members
        self.weights_ = [round(float(x), 6) for x in w]
        self.val_score_ = float(score(w))
        self.n_features_in_ = m
        return self

    val_score = property(lambda self: self.val_score_)

    def predict_proba(self, scores, **rows):
        check_is_fitted(self)
        return np.tensordot(self.weights, self._stack(scores, self.members_), axes=1).astype(np.float32)

    def describe(self) -> str:
        return " + ".join(f"{w:.1f}·{m}" for m, w in zip(self.members_, self.weights) if w > 0)

    def _save(self, path: Path):
        write_output(path / "weights.json", json.dumps(dict(zip(self.members_, self.weights.tolist()))))
        self._save_fitted(path)

    def _load(self, path: Path):
        w = json.loads((path / "weights.json").read_text(encoding="utf-8"))
        if not isinstance(w, dict) or not w or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in w.values()):
            raise InputError("expected a JSON object of member name -> finite weight", path / "weights.json")
        self.members_, self.weights_ = list(w), list(w.values())
        self._load_fitted(path)
