"""What a fine-tuning writes: the sidecar state after every epoch, and at the end the checkpoint and its report.

The state (``CKPT.state.safetensors`` beside the checkpoint) holds, as safetensors tensors and JSON metadata
(never a pickle, since the file is read back):

- ``last/<name>``: the network after the last finished epoch (parameters and BatchNorm statistics);
- ``best/<name>``: the network of the best epoch so far (by the validation metric);
- ``optim/<i>/<key>``: AdamW's moments and step count of parameter i (the optimizer's own numbering);
- metadata: the settings fingerprint, epochs finished, optimizer steps (the learning-rate schedule is a function
  of them), the per-epoch history, the best epoch, the fp16 gradient scaler's state.

No random-generator state is kept: every random draw of an epoch (frame sample, augmentation, dropout) is seeded
from (seed, epoch), so a resumed run makes the draws an uninterrupted one makes. The state is replaced atomically
(features.outputs) after each epoch and deleted once the checkpoint is in place.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from features.errors import InputError
from features.outputs import Outputs, output_path

STATE_FORMAT = "affect-features finetune state 1"


@dataclass
class Progress:
    """Where a fine-tuning stands after its last finished epoch."""
    epoch: int = 0                  # epochs finished
    step: int = 0                   # optimizer steps taken
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best: dict | None = None        # state_dict of the best epoch (CPU tensors)
    scaler: dict | None = None      # fp16 GradScaler state


def _cpu(sd: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_state(path: Path, fingerprint: str, net: torch.nn.Module, opt: torch.optim.Optimizer,
               p: Progress) -> None:
    from safetensors.torch import save_file
    tensors = {f"last/{k}": v for k, v in _cpu(net.state_dict()).items()}
    if p.best is not None:
        tensors.update({f"best/{k}": v for k, v in p.best.items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{i}/{k}"] = v.detach().to("cpu").contiguous().clone()
    meta = {"format": STATE_FORMAT, "fingerprint": fingerprint, "epoch": json.dumps(p.epoch),
            "step": json.dumps(p.step), "history": json.dumps(p.history), "best_epoch": json.dumps(p.best_epoch),
            "best_metric": json.dumps(p.best_metric), "scaler": json.dumps(p.scaler)}
    with output_path(path, force=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(path: Path, fingerprint: str, net: torch.nn.Module, opt: torch.optim.Optimizer,
               epochs: int) -> Progress:
    """Restore a run's state into `net` and `opt` (built with the same settings); every part is checked first,
    and a state of other settings is refused with one line naming what differs."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:      # safetensors raises its own error types for damaged files
        raise InputError(f"the state of an interrupted fine-tuning is unreadable ({str(e)[:120]}); remove it to "
                         f"start afresh", path) from None
    if meta.get("format") != STATE_FORMAT:
        raise InputError("not a fine-tuning state file (remove it, or choose another --out)", path)
    if meta.get("fingerprint") != fingerprint:
        raise InputError(f"an interrupted fine-tuning with other settings or data left this state "
                         f"({_difference(meta.get('fingerprint', ''), fingerprint)}); rerun it with its settings, "
                         f"or remove the file to start afresh", path)
    try:
        p = Progress(epoch=json.loads(meta["epoch"]), step=json.loads(meta["step"]),
                     history=json.loads(meta["history"]), best_epoch=json.loads(meta["best_epoch"]),
                     best_metric=json.loads(meta["best_metric"]), scaler=json.loads(meta["scaler"]))
    except (KeyError, ValueError):
        raise InputError("the state's metadata is incomplete; remove it to start afresh", path) from None
    if not _counts_add_up(p, epochs):
        raise InputError("the state's epoch counts or history do not add up; remove it to start afresh", path)
    own = net.state_dict()
    last = {k[5:]: v for k, v in tensors.items() if k.startswith("last/")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    for what, sd in (("last", last), ("best", best)):
        if sd and (set(sd) != set(own) or any(sd[k].shape != own[k].shape for k in own)):
            raise InputError(f"the state's {what} network does not fit this one; remove it to start afresh", path)
    if not last:
        raise InputError("the state holds no network; remove it to start afresh", path)
    net.load_state_dict(last)
    p.best = best or None
    if (p.best is None) != (p.epoch == 0):
        raise InputError("the state's best epoch has no network; remove it to start afresh", path)
    params = [q for g in opt.param_groups for q in g["params"]]
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if not k.startswith("optim/"):
            continue
        _, i, key = k.split("/", 2)
        if not i.isdigit() or int(i) >= len(params):
            raise InputError(f"the state's optimizer names parameter {i!r}, which this network lacks", path)
        if key != "step" and v.shape != params[int(i)].shape:
            raise InputError(f"the state's optimizer entry {k} does not fit this network", path)
        state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return p


def _count(v, low: int = 0) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= low


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _counts_add_up(p: Progress, epochs: int) -> bool:
    """Epochs, steps and the per-epoch history of a state read from disk: the types and ranges the report and
    the best-epoch choice rely on."""
    if not (_count(p.epoch) and _count(p.step) and p.epoch <= epochs and isinstance(p.history, list)
            and len(p.history) == p.epoch):
        return False
    for i, h in enumerate(p.history, 1):
        if not (isinstance(h, dict) and h.get("epoch") == i and _count(h.get("frames")) and
                _count(h.get("unreadable")) and all(_number(h.get(k)) for k in ("train_loss", "val_metric",
                                                                                 "frames_per_s"))):
            return False
    scaler_keys = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
    if p.scaler is not None and not (isinstance(p.scaler, dict) and all(_number(p.scaler.get(k)) for k in scaler_keys)):
        return False
    if p.epoch == 0:
        return p.best_epoch is None and p.best_metric is None
    best = p.history[p.best_epoch - 1] if _count(p.best_epoch, 1) and p.best_epoch <= p.epoch else None
    return best is not None and _number(p.best_metric) and best["val_metric"] == round(p.best_metric, 6)


def _difference(old: str, new: str) -> str:
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        return "unreadable settings"
    diff = [f"{k} {a.get(k)!r} vs {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diff)[:300] or "same settings"


def write_checkpoint(out: Path, report: Path, weights: dict, metadata: dict, report_data: dict,
                     force: bool) -> None:
    """The checkpoint (tensors + JSON metadata) and its report, renamed into place together."""
    from safetensors.torch import save_file
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with Outputs([out, report], force=force) as outs:
        with outs.path(out) as tmp:
            save_file(_cpu(weights), str(tmp), metadata=meta)
        outs.write(report, json.dumps(report_data, indent=2) + "\n")
