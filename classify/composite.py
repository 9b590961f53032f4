"""What k-fold and bagging share: heads made of fitted clones of one member head.

The member is given as an unfitted head (cloned for each fit) or as the ``{"kind", "params"}`` that head.json
records (built by classify.factory.make_head); every clone gets the composite's task and feature set. The fitted
members are saved in `<prefix>0/`, `<prefix>1/`, ... beside the composite's own head.json, each a saved head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods

from features.errors import InputError

from .base import Head, load_head


class Composite(Head):
    """A head whose fitted state is `estimators_`, clones of `estimator` each fitted on some of the rows."""
    member_prefix = "member"
    _parameter_constraints = {**Head._parameter_constraints,
                              "estimator": [HasMethods(["fit", "predict_proba"]), dict, None]}

    @property
    def params(self) -> dict:
        """head.json's params: the member as {"kind", "params"}, then the composite's own."""
        e = self.estimator
        spec = {"kind": e.kind, "params": e.params} if isinstance(e, Head) else e
        return {"estimator": spec, **{k: v for k, v in super().params.items() if k != "estimator"}}

    def _default_member(self) -> Head:
        raise InputError(f"{self.kind}: estimator must be a head, got None")

    def _member(self, seed: int | None = None) -> Head:
        """A fresh unfitted member, for this head's task and feature set (and `seed`, when it takes one)."""
        from .factory import make_head
        e = self.estimator
        task = self.get_params(deep=False)["task"]
        if e is None:
            h = self._default_member()
        elif isinstance(e, Head):
            h = clone(e)
        elif isinstance(e, dict) and isinstance(e.get("kind"), str) and isinstance(e.get("params", {}), dict):
            h = make_head(e["kind"], task, **e.get("params", {}))
        else:
            raise InputError(f"{self.kind}: estimator must be a head, got {e!r}")
        h.set_params(task=task)
        if self.feature_set is not None:
            h.set_params(feature_set=self.feature_set)
        if seed is not None and "seed" in h.get_params(deep=False):
            h.set_params(seed=seed)
        return h

    def _fit_member(self, X, y, rows: np.ndarray, seed: int | None = None, X_val=None, y_val=None,
                    groups=None, frames=None) -> Head:
        """A new member fitted on `rows` of (X, y) and of the rows' video ids / frame numbers (when given)."""
        take = lambda a: None if a is None else np.asarray(a)[rows]
        extra = {} if groups is None and frames is None else dict(groups=take(groups), frames=take(frames))
        return self._member(seed).fit(X[rows], np.asarray(y)[rows], X_val, y_val, **extra)

    def _n_saved(self) -> int:
        """How many members a saved head of this kind holds (read from its fitted values)."""
        raise NotImplementedError

    def _save(self, path: Path) -> None:
        for i, h in enumerate(self.estimators_):
            h.save(path / f"{self.member_prefix}{i}")
        self._save_fitted(path)

    def _load(self, path: Path) -> None:
        """The members saved by _save, loaded as this head was (same task, same allow_pickle); the folder must
        hold exactly those."""
        self._load_fitted(path)
        n, prefix = self._n_saved(), self.member_prefix
        have = sum(1 for p in path.iterdir() if p.is_dir() and p.name.startswith(prefix))
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or have != n:
            raise InputError(f"a {self.kind} head of {n!r} members, but the folder holds {have} member folders "
                             f"({prefix}0/, {prefix}1/, ...)", path)
        self.estimators_ = [load_head(path / f"{prefix}{i}", task=self.task,
                                      allow_pickle=getattr(self, "_allow_pickle", False)) for i in range(n)]
