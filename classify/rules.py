"""Pre-trained-only rules: predictions straight from the frozen model's own outputs.

- `VAOnly`: the MT-EmotiEffNet valence/arousal outputs as VA predictions (clipped to [-1, 1]).
- `LogitsRule` (EXPR): a small binary Other/non-Other MLP gives P(Other); the other seven classes share the rest
  in proportion to the pre-trained class probabilities mapped to Aff-Wild2 order. Other therefore wins whenever
  P(Other) >= 0.5 (and also when it beats every other class). The softmax runs over the class axis (the
  reference took it over the wrong axis).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from features.errors import InputError
from features.tasks import AFFECTNET8, EXPR, affwild_probabilities, softmax  # noqa: F401 (re-exported)

from .base import EPOCHS, HIDDEN, SEED, Head, fit_context, integers, load_mlp_classifier, save_mlp_classifier
from .registry import register_head

FER7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
OTHER = EXPR.labels.index("Other")


def default_class_names(n: int) -> tuple[str, ...]:
    """Class names of pre-trained logits when the cache does not record them: 8 = AffectNet, 7 = FER2013."""
    if n == 8:
        return AFFECTNET8
    if n == 7:
        return FER7
    raise InputError(f"logits rule: expected 8 (AffectNet) or 7 (FER) logits, got {n} columns")


@register_head("va_only", tasks=("va",), role="rule", title="va_only rule")
class VAOnly(Head):
    """The pre-trained valence/arousal outputs as predictions (nothing is learned)."""

    def __init__(self, task="va", feature_set: str | None = None):
        super().__init__(task, feature_set)

    def _check(self, X):
        if X.ndim != 2 or X.shape[1] != 2:
            raise InputError(f"VA-only rule needs the 2 valence/arousal outputs (feature set <extractor>/va), "
                             f"got {X.shape[1] if X.ndim == 2 else X.shape} columns")

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, X_val=None, y_val=None, **rows):
        X = np.asarray(X)
        self._check(X)
        if y is not None:
            self._check_fit(X, y, X_val, y_val)
        self.n_features_in_ = 2
        return self

    def predict_proba(self, X, **rows):
        X = np.asarray(X)
        self._check_predict(X)
        self._check(X)
        return np.clip(X.astype(np.float32), -1, 1)

    def _save(self, path: Path):
        self._save_fitted(path)

    def _load(self, path: Path):
        self._load_fitted(path)
        self.n_features_in_ = 2


@register_head("logits", tasks=("expr",), role="rule", title="logits rule")
class LogitsRule(Head):
    """EXPR from the pre-trained logits, with a binary MLP (scikit-learn, on the same logits) for Other."""
    optional_files = ("other.json", "other.npz")     # the Other gate, absent when training had one class
    _parameter_constraints = {**Head._parameter_constraints, "class_names": ["array-like", None],
                              "hidden": [integers(1, HIDDEN.right)], "max_iter": [EPOCHS], "seed": [SEED]}

    def __init__(self, task="expr", class_names: Sequence[str] | None = None, hidden: int = 64,
                 max_iter: int = 50, seed: int = 0, feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.class_names = class_names
        self.hidden = hidden
        self.max_iter = max_iter
        self.seed = seed

    def _names(self, X) -> tuple[str, ...]:
        return tuple(self.class_names or default_class_names(X.shape[1]))

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        from sklearn.neural_network import MLPClassifier
        self._check_fit(X, y, X_val, y_val)
        X = np.asarray(X)
        affwild_probabilities(self._names(X), X[:1])          # fail early on a bad class list
        is_other = (np.asarray(y) == OTHER).astype(int)
        self.other_ = None
        if 0 < is_other.sum() < len(is_other):
            self.other_ = MLPClassifier((self.hidden,), max_iter=self.max_iter,
                                        early_stopping=True, random_state=self.seed)
            self.other_.fit(X.astype(np.float32), is_other)
        return self

    def predict_proba(self, X, **rows):
        X = np.asarray(X)
        self._check_predict(X)
        p = affwild_probabilities(self._names(X), X)
        if self.other_ is None:
            return p
        p_other = self.other_.predict_proba(X.astype(np.float32))[:, 1].astype(np.float32)
        rest = p.copy()
        rest[:, OTHER] = 0
        rest /= np.maximum(rest.sum(axis=1, keepdims=True), 1e-12)
        out = rest * (1 - p_other)[:, None]
        out[:, OTHER] = p_other
        return out

    def _save(self, path: Path):
        # the Other gate's weights as JSON + NPZ (no pickle: loading a run folder must not run code from it)
        if self.other_ is not None:
            save_mlp_classifier(self.other_, path, "other")
        self._save_fitted(path)

    def _load(self, path: Path):
        # (an older version pickled the gate as other.pkl: classify.runfolder refuses that file, unread)
        self.other_ = load_mlp_classifier(path, "other") if (path / "other.json").exists() else None
        self._load_fitted(path)
