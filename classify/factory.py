"""Head factory: every head is built here, by kind, from the options its constructor takes.

`make_head(kind, task, **options)` keeps the options the kind's constructor accepts and leaves the others (as
timm's ``create_model`` and extract.factory do), so one dict of options can build any head; the command line,
`load_head`, k-fold and bagging all build their heads through it. Layering: classify.registry is a leaf (kinds
-> classes); each head module registers itself there; this module imports them all.

| kind         | role    | tasks        | head                                                                    |
|--------------|---------|--------------|-------------------------------------------------------------------------|
| `mlp`        | learned | va, expr, au | Keras MLP, the reference's (classify.mlp)                               |
| `lama`       | learned | va, expr, au | LightAutoML TabularAutoML (classify.lama)                               |
| `fusion_mlp` | learned | va, expr, au | per-frame torch MLP on affine-fused extractors (classify.fusion)        |
| `temporal`   | learned | va, expr, au | Transformer / GRU over windows of one video (classify.temporal)         |
| `bagging`    | learned | expr         | fusion MLPs on bootstrap samples + meta-vote (classify.bagging)         |
| `polarity`   | learned | va           | extreme-region gate before ridge regressors (classify.polarity)         |
| `va_only`    | rule    | va           | the pre-trained valence/arousal outputs (classify.rules)                |
| `logits`     | rule    | expr         | pre-trained logits mapped to Aff-Wild2 + an Other gate (classify.rules) |
| `blend`      | blend   | va, expr, au | weighted mean of the members' scores (classify.blend)                   |
| `kfold`      | wrapper | va, expr, au | video-level k-fold, fold models averaged (classify.kfold)               |
"""
from __future__ import annotations

import inspect

from features.tasks import Task, get_task

# importing registers every kind (in this order: the order `--heads` choices are listed in)
from . import mlp, lama, fusion, temporal, bagging, polarity, rules, blend, kfold  # noqa: F401,E401,I001
from .base import Head
from .registry import entry, kinds

__all__ = ["head_class", "head_params", "kinds", "list_heads", "make_head", "reads"]


def list_heads(role: str | tuple[str, ...] | None = None, task: str | None = None) -> list[str]:
    """Registered head kinds (of `role`, supporting `task`)."""
    return kinds(role, task)


def head_class(kind: object, where=None) -> type[Head]:
    """The class of a head kind (`where`: the file that named it, for the error)."""
    return entry(kind, where).cls


def head_params(kind: str) -> list[str]:
    """The parameters the kind's constructor takes (task, feature_set and the kind's own)."""
    sig = inspect.signature(head_class(kind).__init__)
    return [n for n, p in sig.parameters.items() if n != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def reads(kind: str) -> set[str]:
    """The options a head of `kind` built from the run's options reads: its own parameters, and those of the
    member kind a composite bags (bagging: fusion_mlp)."""
    e = entry(kind)
    return set(head_params(kind)) | (set(head_params(e.member)) if e.member else set())


def make_head(kind: str, task: str | Task, **options) -> Head:
    """A head of `kind` for `task` from the `options` its constructor takes (the others are ignored); a kind
    not made for the task is refused with one line."""
    e = entry(kind)
    e.check_task(get_task(task).name)
    names = set(head_params(kind)) - {"task"}
    return e.cls(task, **{k: v for k, v in options.items() if k in names})
