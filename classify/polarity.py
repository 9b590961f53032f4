"""VA polarity gate: per dimension a classifier decides whether the value lies in an extreme region (≤ −t, the
middle, ≥ t) before the regression, and the valence prediction is fed to the arousal model.

Per dimension: a multinomial logistic gate over the three regions, and one ridge regressor per region trained on
that region's rows (the whole set's regressor stands in for a region with too few rows); the prediction is the
gate-weighted mixture Σ_r P(r | x) · f_r(x), so a confident gate pulls values to the ±1 regions that a single
least-squares regressor shrinks towards the mean. Arousal sees the standardised features plus the valence
prediction and its magnitude. Fitted with scikit-learn on a sample of at most `max_rows` rows; predicted and
saved as plain arrays (no pickle).
"""
from __future__ import annotations

from numbers import Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval

from features.outputs import write_output

from .base import ROWS, SEED, Head, fit_context
from .lama import sample_rows
from .mlp import column_moments
from .registry import register_head

MIN_REGION_ROWS = 20


def _with_valence(Z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Arousal's inputs: the features, the valence prediction and its magnitude (in the circumplex, arousal
    follows |valence| more than valence: both extremes are aroused; a linear model needs |v| given)."""
    return np.hstack([Z, v[:, None], np.abs(v)[:, None]]).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@register_head("polarity", tasks=("va",), title="polarity gate")
class PolarityGateHead(Head):
    files = ("polarity.npz", "fitted.json")
    _not_saved = ("mean_", "inv_std_")
    _parameter_constraints = {**Head._parameter_constraints,
                              "threshold": [Interval(Real, 0, 1, closed="neither")],
                              "alpha": [Interval(Real, 0, None, closed="left")],
                              "C": [Interval(Real, 0, None, closed="neither")], "feed_valence": ["boolean"],
                              "max_rows": [ROWS, None], "seed": [SEED]}

    def __init__(self, task="va", threshold: float = 0.5, alpha: float = 10.0, C: float = 1.0,
                 feed_valence: bool = True, max_rows: int | None = 100_000, seed: int = 0,
                 feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.threshold = threshold
        self.alpha = alpha
        self.C = C
        self.feed_valence = feed_valence
        self.max_rows = max_rows
        self.seed = seed

    def _z(self, X) -> np.ndarray:
        return (np.asarray(X, np.float32) - self.mean_) * self.inv_std_

    def _dim(self, Z: np.ndarray, d: int) -> np.ndarray:
        """Gate-weighted mixture of the region regressors for dimension d."""
        P = _softmax(Z @ self.gate_coef_[d].T + self.gate_intercept_[d])
        R = Z @ self.reg_coef_[d].T + self.reg_intercept_[d]
        return (P * R).sum(1)

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        from sklearn.linear_model import LogisticRegression, Ridge
        self._check_fit(X, y, X_val, y_val)
        y = np.asarray(y, np.float64)
        sel = sample_rows(y[:, 0], self.max_rows, self.seed, "regression")
        Xs, ys = (X, y) if sel is None else (X[sel], y[sel])
        mean, var = column_moments(Xs)
        self.mean_, self.inv_std_ = mean.astype(np.float32), (1 / np.sqrt(var)).astype(np.float32)
        Z = self._z(Xs)
        self.gate_coef_, self.gate_intercept_, self.reg_coef_, self.reg_intercept_ = [], [], [], []
        self.region_rows_ = []
        for d in range(2):
            if d == 1 and self.feed_valence:
                Z = _with_valence(Z, np.clip(self._dim(Z, 0), -1, 1))
            W, b, RC, RI, counts = self._fit_dim(Z, ys[:, d], LogisticRegression, Ridge)
            self.gate_coef_.append(W)
            self.gate_intercept_.append(b)
            self.reg_coef_.append(RC)
            self.reg_intercept_.append(RI)
            self.region_rows_.append(counts)
        return self

    def _fit_dim(self, Z, t, LogisticRegression, Ridge):
        region = np.where(t <= -self.threshold, 0, np.where(t >= self.threshold, 2, 1))
        present = np.unique(region)
        W = np.zeros((3, Z.shape[1]))
        b = np.full(3, -30.0)                   # a region absent from training gets (practically) no weight
        if len(present) == 1:
            b[present] = 0.0
        else:
            g = LogisticRegression(C=self.C, max_iter=300).fit(Z, region)
            if len(present) == 3:
                W[g.classes_], b[g.classes_] = g.coef_, g.intercept_
            else:                                # binary: the softmax of (-w/2, w/2) is the logistic of w
                c0, c1 = g.classes_
                W[c0], W[c1] = -g.coef_[0] / 2, g.coef_[0] / 2
                b[c0], b[c1] = -g.intercept_[0] / 2, g.intercept_[0] / 2
        base = Ridge(alpha=self.alpha).fit(Z, t)
        RC, RI, counts = np.tile(base.coef_, (3, 1)), np.full(3, float(base.intercept_)), []
        for r in range(3):
            m = region == r
            counts.append(int(m.sum()))
            if m.sum() >= MIN_REGION_ROWS:
                reg = Ridge(alpha=self.alpha).fit(Z[m], t[m])
                RC[r], RI[r] = reg.coef_, reg.intercept_
        f32 = lambda a: np.asarray(a, np.float32)
        return f32(W), f32(b), f32(RC), f32(RI), counts

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        out = np.empty((len(X), 2), np.float32)
        step = 65536
        for a in range(0, len(X), step):
            Z = self._z(X[a:a + step])
            v = np.clip(self._dim(Z, 0), -1, 1)
            if self.feed_valence:
                Z = _with_valence(Z, v)
            out[a:a + len(Z), 0] = v
            out[a:a + len(Z), 1] = np.clip(self._dim(Z, 1), -1, 1)
        return out

    def _save(self, path: Path):
        arrays = {"mean": self.mean_, "inv_std": self.inv_std_}
        for d in range(2):
            arrays |= {f"gate_coef{d}": self.gate_coef_[d], f"gate_intercept{d}": self.gate_intercept_[d],
                       f"reg_coef{d}": self.reg_coef_[d], f"reg_intercept{d}": self.reg_intercept_[d]}
        write_output(path / "polarity.npz", lambda f: np.savez(f, **arrays))
        self._save_fitted(path)

    def _load(self, path: Path):
        self._load_fitted(path)
        with np.load(path / "polarity.npz", allow_pickle=False) as z:
            self.mean_, self.inv_std_ = z["mean"], z["inv_std"]
            for name in ("gate_coef", "gate_intercept", "reg_coef", "reg_intercept"):
                setattr(self, f"{name}_", [z[f"{name}{d}"] for d in range(2)])
