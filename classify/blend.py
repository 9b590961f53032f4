"""Blending: a weighted average of per-frame scores (probabilities or VA values) of several heads.

Weights are searched on validation over the probability simplex: an exhaustive grid (step 0.1) for up to four
members, which contains every one-hot weighting, so the blend is never worse on validation than its best
member; beyond four members the grid grows too fast and a coordinate search from the best one-hot start is used
(same guarantee, since it starts there and only accepts improvements).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from features.errors import InputError

from .base import Head, register


def simplex_grid(m: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors of m non-negative multiples of `step` that sum to 1."""
    n = int(round(1 / step))
    rows = [c for c in itertools.product(range(n + 1), repeat=m - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in rows], float) / n


@register
class BlendHead(Head):
    kind = "blend"

    def __init__(self, task, members: Sequence[str] = (), weights: Sequence[float] | None = None,
                 step: float = 0.1):
        super().__init__(task)
        self.params = dict(members=list(members), weights=None if weights is None else list(map(float, weights)),
                           step=step)

    @property
    def search_method(self) -> str:
        m, step = len(self.params["members"]), self.params["step"]
        return (f"exhaustive simplex grid, step {step} ({len(simplex_grid(m, step))} weightings)" if m <= 4 else
                f"pairwise coordinate ascent, step {step}, from the best single member")

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.params["weights"])

    def _stack(self, scores) -> np.ndarray:
        if isinstance(scores, dict):
            missing = [m for m in self.params["members"] if m not in scores]
            if missing:
                raise InputError(f"blend: scores of {missing} are missing")
            scores = [scores[m] for m in self.params["members"]]
        if len(scores) != len(self.params["members"]):
            raise InputError(f"blend of {len(self.params['members'])} members got {len(scores)} score arrays")
        return np.stack([np.asarray(s, np.float32) for s in scores])

    def fit(self, scores, y, X_val=None, y_val=None):
        """`scores`: validation scores of the members (dict name -> array, or a list in member order)."""
        if isinstance(scores, dict) and not self.params["members"]:
            self.params["members"] = list(scores)
        if not self.params["members"] and not isinstance(scores, dict):
            self.params["members"] = [f"m{i}" for i in range(len(scores))]
        if not self.params["members"]:
            raise InputError("blend: no members")
        S = self._stack(scores)
        m = len(S)
        y = np.asarray(y)
        if S.shape[1] != len(y) or S.shape[2] != self.task.n_outputs:
            raise InputError(f"blend: member scores of shape {S.shape[1:]} do not fit {len(y)} "
                             f"{self.task.name} labels ({self.task.n_outputs} columns)")
        if not np.isfinite(S).all():
            raise InputError("blend: member scores hold NaN or infinite values")
        score = lambda w: self.task.score(y, np.tensordot(w, S, axes=1))
        if m <= 4:
            grid = simplex_grid(m, self.params["step"])
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
                    d = min(self.params["step"], w[j])
                    if d <= 0:
                        continue
                    cand = w.copy()
                    cand[i] += d
                    cand[j] -= d
                    v = score(cand)
                    if v > best_v + 1e-12:
                        w, best_v, improved = cand, v, True
        self.params["weights"] = [round(float(x), 6) for x in w]
        self.val_score = float(score(w))
        return self

    def predict_proba(self, scores):
        if self.params["weights"] is None:
            raise RuntimeError("fit the blend first")
        return np.tensordot(self.weights, self._stack(scores), axes=1).astype(np.float32)

    def describe(self) -> str:
        return " + ".join(f"{w:.1f}·{m}" for m, w in zip(self.params["members"], self.weights) if w > 0)

    def _save(self, path: Path):
        (path / "weights.json").write_text(json.dumps(dict(zip(self.params["members"], self.weights.tolist()))))

    def _load(self, path: Path):
        pass
