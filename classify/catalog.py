"""The heads beyond the reference, as `python -m classify --heads` builds them: their kinds, the options they
read and their construction from a feature set of the cache.

| kind         | head                                                                   | options read            |
|--------------|------------------------------------------------------------------------|-------------------------|
| `fusion_mlp` | per-frame MLP on affine-fused extractors (classify.fusion)            | loss, sampling, width,  |
|              |                                                                        | hidden, epochs, batch,  |
|              |                                                                        | lr                      |
| `temporal`   | Transformer / GRU over windows of one video (classify.temporal)       | window, stride, layers, |
|              |                                                                        | width, heads_n, arch,   |
|              |                                                                        | loss, epochs, batch, lr |
| `bagging`    | EXPR: fusion MLPs on bootstrap samples + meta-vote (classify.bagging) | bags, vote, + fusion_mlp|
| `polarity`   | VA: extreme-region gate before ridge regressors (classify.polarity)   | (none)                  |
"""
from __future__ import annotations

from features.errors import InputError
from features.store import FeatureStore
from features.tasks import Task

from .base import Head
from .losses import check_loss

KINDS = ("fusion_mlp", "temporal", "bagging", "polarity")
# head kind -> the module that registers it (for loading a saved head in a fresh process)
MODULES = {"fusion_mlp": "classify.fusion", "temporal": "classify.temporal", "bagging": "classify.bagging",
           "polarity": "classify.polarity", "kfold": "classify.kfold"}
TORCH_OPTS = ("loss", "epochs", "batch", "lr", "width")


def _given(opts: dict, keys) -> dict:
    return {k: opts[k] for k in keys if opts.get(k) is not None}


def check_options(task: Task, kinds: list[str], opts: dict) -> None:
    """Options that no chosen head reads, or that do not fit the task, fail before any work."""
    if "bagging" in kinds and task.kind != "multiclass":
        raise InputError("the bagging head (meta-vote) is for --task expr")
    if "polarity" in kinds and task.kind != "regression":
        raise InputError("the polarity gate is for --task va")
    if opts.get("vote"):
        from .bagging import RULES, parse_priority
        rule, _, order = opts["vote"].partition(":")
        if rule not in RULES or (rule == "priority") != bool(order):
            raise InputError(f"--vote {opts['vote']!r}: use majority or priority:<class>,<class>,... "
                             f"(e.g. priority:Other,Fear)")
        parse_priority(order.split(",") if order else None, task.labels)
    if opts.get("loss") is not None:
        if not set(kinds) & {"fusion_mlp", "temporal", "bagging"}:
            raise InputError(f"--loss {opts['loss']} applies to the fusion_mlp and temporal heads; add one of "
                             f"them to --heads (the Keras mlp keeps the reference losses)")
        check_loss(opts["loss"], task)
    if opts.get("sampling") not in (None, "none") and task.kind != "multilabel":
        raise InputError(f"--sampling {opts['sampling']} is for --task au")


def check_data(kinds: list[str], opts: dict, video, frame) -> None:
    """Checks that need the training rows, made before the run folder exists."""
    if "temporal" in kinds:
        from .temporal import TemporalHead, check_window, longest_span
        check_window(int(opts.get("window") or TemporalHead("expr").window), longest_span(video, frame))


def make(kind: str, task: Task, store: FeatureStore, feature_set: str, opts: dict) -> Head:
    from .fusion import FusionMLPHead, blocks_for, check_same_frames
    blocks = blocks_for(store, feature_set)
    if len(blocks) > 1:
        check_same_frames(store, feature_set)
    seed = dict(seed=opts.get("seed", 0), threads=opts.get("cpus"))
    if kind == "fusion_mlp":
        return FusionMLPHead(task, blocks=blocks, **_given(opts, TORCH_OPTS + ("hidden", "sampling")), **seed)
    if kind == "temporal":
        from .temporal import TemporalHead
        return TemporalHead(task, blocks=blocks, **_given(opts, TORCH_OPTS + ("window", "stride", "layers",
                                                                               "heads_n", "arch")), **seed)
    if kind == "bagging":
        from .bagging import BaggingHead
        rule, _, order = (opts.get("vote") or "majority").partition(":")
        base = FusionMLPHead(task, blocks=blocks, **_given(opts, TORCH_OPTS + ("hidden",)), **seed)
        return BaggingHead(task, estimator=base, n_estimators=opts.get("bags") or 5, rule=rule,
                           priority=order.split(",") if order else None, seed=opts.get("seed", 0))
    if kind == "polarity":
        from .polarity import PolarityGateHead
        return PolarityGateHead(task, seed=opts.get("seed", 0))
    raise InputError(f"unknown head {kind!r}")
