"""Fine-tuned networks (`python -m extract finetune`) as extractors: ``finetuned:<checkpoint.safetensors>``.

The checkpoint is a safetensors file: the timm network's tensors (its classifier replaced by the task's outputs)
and JSON metadata that says everything needed to run it, so nothing is taken from the file as code (no pickle)
and nothing needs to be given in the spec::

    format          "affect-features finetuned 1"
    architecture    timm model name (the network is built fresh, then its weights loaded strictly)
    input_size      pixels of the square input
    normalization   {"mean": [3], "std": [3], "scale": "x/255", "color": "rgb"}
    task            va | expr | au
    class_names     the task's labels, in output order
    outputs         {"embedding": d, "logits" | "va": n}
    output_layout   what each output column holds
    source          the starting extractor: spec, name, architecture, sha256 of its checkpoint
    data, training  what it was trained on and how (recorded, not used here)

Outputs: ``embedding`` (the pooled features before the classifier) and the task's outputs: EXPR ``logits`` (8
Aff-Wild2 classes, softmax gives probabilities), AU ``logits`` (12 per-unit logits, sigmoid gives probabilities;
the cache names task outputs embedding/logits/va only), VA ``va`` (tanh of 2 outputs: valence, arousal).
Every field is checked before the network is built; a file that breaks any rule is one line naming it.
"""
from __future__ import annotations

import json
import math
from typing import Any

import torch

from features.errors import InputError
from features.tasks import TASKS, Task, get_task

from ..base import TorchExtractor
from ..checkpoints import Weights, load_strict, load_weights, require_file
from ..registry import register
from .timm_generic import classifier_key, count_classes, create_timm

NAME = "finetuned"
FORMAT = "affect-features finetuned 1"
MIN_SIZE, MAX_SIZE = 16, 1024         # input sizes a checkpoint may ask for (each costs size^2 per frame)


def output_name(task: Task) -> str:
    """The cache output that holds a task's outputs: VA values under ``va``, EXPR/AU logits under ``logits``."""
    return "va" if task.kind == "regression" else "logits"


def output_layout(task: Task) -> dict[str, str]:
    """What each output column holds, in words (recorded in the checkpoint and the cache)."""
    what = {"expr": f"{task.n_outputs} expression logits in Aff-Wild2 order ({', '.join(task.labels)}); "
                    f"softmax gives class probabilities",
            "au": f"{task.n_outputs} action-unit logits ({', '.join(task.labels)}); sigmoid gives the "
                  f"probability of each unit",
            "va": "valence, arousal in [-1, 1] (tanh of the classifier's 2 outputs)"}[task.name]
    return {"embedding": "pooled features before the classifier", output_name(task): what}


class FinetuneNet(torch.nn.Module):
    """A timm network whose classifier has the task's outputs; returns {"embedding", "logits" | "va"}.

    The same module is trained (extract.finetune) and run as an extractor, so the two cannot disagree."""

    def __init__(self, model: torch.nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.task_name = task.name
        self.head = output_name(task)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        z = self.model.get_classifier()(emb)
        return {"embedding": emb, self.head: torch.tanh(z) if self.head == "va" else z}

    def output_dims(self) -> dict[str, int]:
        return {"embedding": int(self.model.num_features), self.head: int(self.model.num_classes)}


def _json(meta: dict, key: str, path) -> Any:
    if key not in meta:
        raise InputError(f"not a fine-tuned checkpoint: its metadata has no {key!r} (python -m extract finetune "
                         f"writes it)", path)
    try:
        return json.loads(meta[key])
    except ValueError:
        raise InputError(f"metadata {key!r} is not JSON", path) from None


def _triple(v: Any, what: str, path, positive: bool = False) -> tuple[float, float, float]:
    ok = isinstance(v, list) and len(v) == 3 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok or (positive and min(v) <= 0):
        raise InputError(f"metadata normalization {what} must be 3 finite{' positive' if positive else ''} numbers, "
                         f"got {v!r}", path)
    return tuple(float(x) for x in v)


def read_metadata(w: Weights) -> dict:
    """The checked metadata of a fine-tuned checkpoint: architecture, input_size, mean, std, task (a Task), the
    rest as recorded. Raises one InputError naming the file for anything out of place."""
    meta, path = w.metadata, w.path
    if meta.get("format") != FORMAT:
        raise InputError(f"not a fine-tuned checkpoint (metadata format {meta.get('format')!r}, expected "
                         f"{FORMAT!r}); fine-tune one with python -m extract finetune", path)
    arch = meta.get("architecture")
    if not isinstance(arch, str) or not arch or len(arch) > 200:
        raise InputError("metadata architecture must name a timm model", path)
    size = _json(meta, "input_size", path)
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"metadata input_size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}", path)
    norm = _json(meta, "normalization", path)
    if not isinstance(norm, dict):
        raise InputError("metadata normalization must be an object with mean and std", path)
    mean, std = _triple(norm.get("mean"), "mean", path), _triple(norm.get("std"), "std", path, positive=True)
    task_name = meta.get("task")
    if task_name not in TASKS:
        raise InputError(f"metadata task must be one of {', '.join(TASKS)}, got {task_name!r}", path)
    task = get_task(task_name)
    names = _json(meta, "class_names", path)
    if names != list(task.labels):
        raise InputError(f"metadata class_names must be the {task.name} labels {list(task.labels)}, got "
                         f"{str(names)[:200]}", path)
    out = {"architecture": arch, "input_size": size, "mean": mean, "std": std, "task": task}
    for key in ("source", "data", "training", "output_layout"):
        v = _json(meta, key, path) if key in meta else {}
        out[key] = v if isinstance(v, dict) else {}
    return out


def build_network(arch: str, task: Task, state_dict: dict, path) -> FinetuneNet:
    """`arch` built fresh with the task's classifier, `state_dict` loaded strictly (shapes checked first)."""
    probe = create_timm(arch, 0)
    n = count_classes(state_dict, classifier_key(probe))
    if n != task.n_outputs:
        raise InputError(f"the classifier has {n or 'no'} outputs; a {task.name} network has {task.n_outputs}", path)
    model = create_timm(arch, n)
    load_strict(model, state_dict, path, arch)
    return FinetuneNet(model, task).eval()


@register(NAME)
def make(path: str):
    """finetuned:<checkpoint.safetensors>: a network fine-tuned by python -m extract finetune."""
    p = require_file(path)
    if p.suffix != ".safetensors":
        raise InputError("a fine-tuned checkpoint is a .safetensors file (python -m extract finetune --out ...)", p)
    w = load_weights(p)
    m = read_metadata(w)
    task = m["task"]
    net = build_network(m["architecture"], task, w.state_dict, p)
    extra = {"family": NAME, "architecture": m["architecture"], "task": task.name, "checkpoint": str(p),
             "checkpoint_format": "safetensors", "output_layout": output_layout(task),
             "source": m["source"], "best_epoch": m["training"].get("best_epoch"),
             "val_metric": m["training"].get("best_metric")}
    # class_names name the logits columns (EXPR classes, AU units); VA has no logits
    names = task.labels if output_name(task) == "logits" else ()
    return TorchExtractor(NAME, net, m["input_size"], net.output_dims(), w.sha256, m["mean"], m["std"], names, extra)
