"""The run's head options (the flags of `python -m classify train`): checked before any work against the
constraints the heads themselves declare, and turned into constructor arguments for
classify.factory.make_head, which gives each head the ones it takes.

A flag sets the constructor parameter(s) it names (`--cpus`: LightAutoML's cpu_limit and the torch heads'
threads); a flag scoped to some kinds sets only theirs (`--lama-*`: LightAutoML's; `--hidden`: the MLPs', not the
logits rule's Other gate). Options read from the cache (a fused feature set's column blocks, a model's class
names) are added for the kinds that take them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sklearn.utils._param_validation import Interval

from features.cliargs import check_int, cpu_count
from features.errors import InputError
from features.store import FeatureStore
from features.tasks import Task

from .base import Head, ParameterError, check_constraints
from .factory import head_class, head_params, list_heads, make_head, reads
from .registry import entry


@dataclass(frozen=True)
class Flag:
    params: tuple[str, ...]                  # the constructor parameters it sets
    kinds: tuple[str, ...] | None = None     # only these kinds' (None: every kind that takes them)
    what: str | None = None                  # what the number counts, for the one-line error; None: a name,
                                             # checked by the heads that read it (built before any work)
    low: int | None = None                   # bounds stricter than the heads' own
    high: Callable[[], int] | None = None


FLAGS = {
    "epochs": Flag(("epochs",), what="epochs"),
    # 0 (no hidden layer) is the reference's VA layout, which the command line gets by leaving --hidden out
    "hidden": Flag(("hidden",), ("mlp", "fusion_mlp"), "hidden units (leave it out for the reference layout)",
                   low=1),
    "batch": Flag(("batch",), what="rows per batch"),
    "lr": Flag(("lr",), what="a positive finite learning rate (e.g. 0.001)"),
    "lama_timeout": Flag(("timeout",), ("lama",), "seconds"),
    "lama_max_rows": Flag(("max_rows",), ("lama",), "rows (0: all rows)"),
    "cpus": Flag(("cpu_limit", "threads"), what="cores; this machine has {cores}", high=cpu_count),
    "seed": Flag(("seed",), what="seed"),
    "width": Flag(("width",), what="units per extractor"),
    "window": Flag(("window",), what="frames per window"),
    "stride": Flag(("stride",), what="frames"),
    "layers": Flag(("layers",), what="encoder layers"),
    "heads_n": Flag(("heads_n",), what="attention heads"),
    "bags": Flag(("n_estimators",), what="sub-classifiers"),
    "kfold": Flag(("n_splits",), ("kfold",), "folds"),
    **{k: Flag((k,)) for k in ("loss", "sampling", "arch")},
}


def _constraints(f: Flag) -> list[list]:
    """The constraints of every head parameter the flag sets."""
    return [head_class(k)._parameter_constraints[p] for k in (f.kinds or list_heads()) for p in f.params
            if p in head_class(k)._parameter_constraints]


def int_bounds(f: Flag) -> tuple[int, int | None]:
    """[low, high] an integer flag must be in: within every bound the heads it sets declare (and the flag's own)."""
    lows, highs = [f.low] if f.low is not None else [], [f.high()] if f.high else []
    for c in (c for rule in _constraints(f) for c in rule if isinstance(c, Interval)):
        if c.left is not None:
            lows.append(int(c.left) + (c.closed in ("right", "neither")))
        if c.right is not None:
            highs.append(int(c.right) - (c.closed in ("left", "neither")))
    return max(lows), (min(highs) if highs else None)


def check_options(opts: dict) -> None:
    """Refuse option values that would train nothing, allocate without bound, or fail deep inside a library,
    before any work and whichever heads are chosen: one line naming the flag. The bounds are the heads' own
    (`_parameter_constraints`)."""
    for flag, value in opts.items():
        f = FLAGS.get(flag)
        if value is None or f is None or f.what is None:
            continue
        name = f"--{flag.replace('_', '-')}"
        if flag == "lr":
            try:
                for rule in _constraints(f):
                    check_constraints({flag: rule}, {flag: value}, "the run")
            except ParameterError:
                raise InputError(f"{name} must be {f.what}, got {value!r}") from None
        else:
            check_int(value, name, *int_bounds(f), f.what.format(cores=cpu_count()))


def check_heads(task: Task, kinds: list[str], opts: dict) -> None:
    """Options that no chosen head reads, or that do not fit the task, fail before any work (the values
    themselves are the heads' to check: `build_head`)."""
    if opts.get("vote"):
        from .bagging import RULES
        rule, _, order = opts["vote"].partition(":")
        if rule not in RULES or (rule == "priority") != bool(order):
            raise InputError(f"--vote {opts['vote']!r}: use majority or priority:<class>,<class>,... "
                             f"(e.g. priority:Other,Fear)")
    if opts.get("loss") is not None and not any("loss" in reads(k) for k in kinds):
        takers = [k for k in list_heads() if "loss" in head_params(k)]
        raise InputError(f"--loss {opts['loss']} applies to the {' and '.join(takers)} heads; add one of them to "
                         f"--heads (the Keras mlp keeps the reference losses)")
    if opts.get("sampling") not in (None, "none") and task.kind != "multilabel":
        raise InputError(f"--sampling {opts['sampling']} is for --task au")


def head_options(kind: str, store: FeatureStore, feature_set: str, opts: dict, run_dir: Path) -> dict:
    """The constructor arguments the run's options give a head of `kind` on `feature_set` (options not given,
    None, are left to the constructor's defaults)."""
    out: dict = {"feature_set": feature_set, "log_file": str(run_dir / "lama.log")}
    for flag, f in FLAGS.items():
        if opts.get(flag) is not None and (f.kinds is None or kind in f.kinds):
            out.update(dict.fromkeys(f.params, opts[flag]))
    if opts.get("vote"):
        rule, _, order = opts["vote"].partition(":")
        out.update(rule=rule, priority=order.split(",") if order else None)
    takes = reads(kind)
    if "blocks" in takes:
        from .fusion import blocks_for, check_same_frames
        out["blocks"] = blocks_for(store, feature_set)
        if len(out["blocks"]) > 1:
            check_same_frames(store, feature_set)
    if "class_names" in takes:
        out["class_names"] = store.info(feature_set.split("/")[0]).extra.get("class_names") or None
    return out


def build_head(kind: str, task: Task, store: FeatureStore, feature_set: str, opts: dict, run_dir: Path) -> Head:
    """The head of `kind` the run fits on `feature_set`, its parameters validated (a composite's member too);
    a composite kind that names a member kind (bagging: fusion_mlp) gets that member, from the same options."""
    options = head_options(kind, store, feature_set, opts, run_dir)
    member = entry(kind).member
    if member:
        options["estimator"] = make_head(member, task, **head_options(member, store, feature_set, opts, run_dir))
        options["estimator"].validate_params()
    return make_head(kind, task, **options).validate_params()


def check_data(heads: dict[str, Head], video, frame) -> None:
    """Checks of the heads against the training rows, made before the run folder exists."""
    from .temporal import TemporalHead, check_window, longest_span
    temporal = [h for h in heads.values() if isinstance(h, TemporalHead)]
    if temporal:
        longest = longest_span(video, frame)
        for h in temporal:
            check_window(int(h.window), longest)
