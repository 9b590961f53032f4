"""postprocess.json in a run folder: the smoothing `postprocess sweep` chose on validation (shared k or per-output
ks, AU thresholds, mean or median), which `postprocess submit` and `classify predict` apply.

The file is untrusted input like the rest of the run folder (features.runs): `config_choice` checks what is
applied (k non-negative integers, one or one per output; thresholds in [0, 1]; a known statistic) and refuses
anything else with one line naming the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.errors import InputError
from features.runs import METRICS, POSTPROCESS, read_json, read_json_object, run_file
from features.tasks import Task

from .smoothing import check_k

CONFIG = POSTPROCESS


@dataclass
class Post:
    """The post-processing a run applies: half-width(s), AU thresholds, statistic, and where they came from."""
    k: int | list[int]
    thresholds: list[float] | None = None
    stat: str = "mean"
    source: str = ""


def config_text(cfg: dict) -> str:
    """postprocess.json's content as `sweep` writes it."""
    return json.dumps(cfg, indent=2) + "\n"


def read_config(run: str | os.PathLike) -> tuple[dict, Path]:
    """The run's postprocess.json (which must exist) and its path."""
    path = run_file(run, CONFIG)
    if not path.exists():
        raise InputError(f"no {CONFIG}: run `python -m postprocess sweep --run {run}` first", run)
    return read_json_object(path, not_object="expected a JSON object as `postprocess sweep` writes it"), path


def config_choice(cfg: dict, task: Task, path: Path) -> tuple:
    """(k, thresholds, stat) that `submit` and `predict` apply, checked: one line naming postprocess.json
    otherwise. k is one int or one per output (the per-output choice when the sweep stored it with
    --per-output)."""
    if "k" not in cfg:
        raise InputError("no smoothing k in it; rerun `python -m postprocess sweep`", path)
    src = cfg
    if cfg.get("use_per_output") and "per_output" in cfg:
        src = cfg["per_output"] if isinstance(cfg["per_output"], dict) else {}
    try:
        ks = [check_k(x, "k") for x in np.atleast_1d(np.asarray(src.get("k", cfg["k"]), dtype=object))]
    except InputError as e:
        raise InputError(str(e), path) from None
    if len(ks) not in (1, task.n_outputs):
        raise InputError(f"{len(ks)} values of k for {task.n_outputs} {task.name} outputs", path)
    k = ks[0] if np.ndim(src.get("k", cfg["k"])) == 0 else ks
    thr = src.get("thresholds", cfg.get("thresholds"))
    if thr is not None:
        try:
            t = np.asarray(thr, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"thresholds must be numbers, got {thr!r}", path) from None
        if len(t) not in (1, task.n_outputs) or not np.all((t >= 0) & (t <= 1)):
            raise InputError(f"thresholds must be 1 or {task.n_outputs} values in [0, 1]", path)
    stat = cfg.get("stat", "mean")
    if stat not in ("mean", "median"):
        raise InputError(f"stat must be mean or median, got {stat!r}", path)
    return k, thr, stat


def read_post(run: str | os.PathLike, task: Task) -> Post | None:
    """The run's post-processing from postprocess.json (None when the sweep wrote none), as `submit` reads it;
    refused when it is for another task than `task` (the run's)."""
    path = run_file(run, CONFIG)
    if not path.exists():
        return None
    cfg = read_json_object(path)
    if cfg.get("task") != task.name:
        raise InputError(f"it is for task {cfg.get('task')!r}, the run for {task.name!r}", path)
    k, thr, stat = config_choice(cfg, task, path)
    per = bool(cfg.get("use_per_output") and "per_output" in cfg)
    return Post(k if np.ndim(k) == 0 else [int(x) for x in k], per_output_thresholds(thr, task), stat,
                f"{path.name}{' (per output)' if per else ''}")


def per_output_thresholds(thr, task: Task) -> list[float] | None:
    """AU thresholds as one float per output (one given value repeated); None for the other tasks."""
    if thr is None or task.kind != "multilabel":
        return None
    return [float(x) for x in np.broadcast_to(np.asarray(thr, np.float64).reshape(-1), (task.n_outputs,))]


def check_run_task(run: Path, task: str) -> None:
    """Refuse scores of another task than the run's (metrics.json's task, else the existing postprocess.json's):
    the sweep would replace the run's postprocess.json with one for the other task."""
    for name in (METRICS, CONFIG):
        p = run_file(run, name)
        if not p.is_file():
            continue
        d = read_json(p, "remove it to sweep again" if name == CONFIG else "not a classify run's metrics")
        if isinstance(d, dict) and d.get("task") is not None:
            if d["task"] != task:
                raise InputError(f"scores.h5 holds {task!r} scores but the run is for task {d['task']!r} ({name}); "
                                 f"nothing written (sweep the scores of the run's own task)", run / "scores.h5")
            return
