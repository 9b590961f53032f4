"""Any timm architecture with local weights (`timm:<model>:<weights>`), and the timm wrapper other families use.

The embedding is the globally pooled feature vector before the classifier
(``forward_head(forward_features(x), pre_logits=True)``); logits are ``classifier(embedding)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from features.errors import InputError

from ..base import TorchExtractor
from ..checkpoints import Weights, load_strict, load_weights
from ..registry import register


class TimmNet(torch.nn.Module):
    """Wraps a timm model: returns {"embedding", "logits"[, "va"]} (MT-EmotiEffNet: last 2 logits are V, A)."""

    def __init__(self, model: torch.nn.Module, n_expr: int | None = None, has_va: bool = False):
        super().__init__()
        self.model, self.has_va = model, has_va
        self.n_classes = int(getattr(model, "num_classes", 0) or 0)
        self.n_expr = self.n_classes - 2 if has_va else self.n_classes
        if n_expr is not None and n_expr != self.n_expr:
            raise ValueError(f"{n_expr} expression classes but the classifier has {self.n_classes} outputs")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        out = {"embedding": emb}
        if self.n_classes:
            y = self.model.get_classifier()(emb)
            out["logits"] = y[:, :self.n_expr]
            if self.has_va:
                out["va"] = y[:, self.n_expr:self.n_expr + 2]
        return out

    def output_dims(self) -> dict[str, int]:
        d = {"embedding": int(self.model.num_features)}
        if self.n_classes:
            d["logits"] = self.n_expr
            if self.has_va:
                d["va"] = 2
        return d


def create_timm(arch: str, num_classes: int) -> torch.nn.Module:
    import timm
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        near = timm.list_models(f"*{arch.split('.')[0][:12]}*")[:8]
        raise InputError(f"unknown timm model {arch!r} ({e}); similar: {', '.join(near) or 'none'}") from None


def classifier_key(model: torch.nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "classifier")


def unwrap_sequential_head(sd: dict, clf: str) -> dict:
    """HSEmotion's `classifier = Sequential(Linear)` saves `classifier.0.weight`: map it onto `classifier.weight`."""
    inner = [k for k in sd if k.startswith(clf + ".0.")]
    if inner and not any(k in sd for k in (clf + ".weight", clf + ".bias")):
        sd = {(clf + "." + k[len(clf) + 3:] if k in inner else k): v for k, v in sd.items()}
    return sd


def count_classes(sd: dict, clf: str) -> int:
    w = sd.get(clf + ".weight")
    return 0 if w is None else int(w.shape[0])


def timm_extractor(name: str, arch: str, w: Weights, *, expect_classes: int | None = None, has_va: bool = False,
                   input_size: int | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, class_names: Sequence[str] = (),
                   extra: dict | None = None) -> TorchExtractor:
    """Build `arch` fresh, load `w` strictly, wrap it; checks the class count before building."""
    probe = create_timm(arch, 0)
    clf = classifier_key(probe)
    sd = unwrap_sequential_head(w.state_dict, clf)
    n = count_classes(sd, clf)
    if expect_classes is not None and n != expect_classes:
        raise InputError(f"{name}: expected a classifier with {expect_classes} outputs ({arch}), "
                         f"found {n or 'no classifier'}", w.path)
    model = create_timm(arch, n) if n else probe
    load_strict(model, sd, w.path, arch)
    cfg = model.pretrained_cfg or {}
    net = TimmNet(model, has_va=has_va)
    if class_names and len(class_names) != net.n_expr:
        raise InputError(f"{name}: {len(class_names)} class names for {net.n_expr} logits", w.path)
    info = {"family": "timm", "architecture": arch, "checkpoint": str(w.path), "checkpoint_format": w.format,
            "file_sha256": w.sha256, **(extra or {})}
    return TorchExtractor(name, net, input_size or int(cfg.get("input_size", (3, 224, 224))[-1]),
                          net.output_dims(), w.provenance_sha256, mean or cfg.get("mean"), std or cfg.get("std"),
                          class_names, info)


@register("timm")
def make_timm(model: str, weights: str, size: int | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, classes: str | None = None, *, allow_pickle: bool = False):
    """`timm:<model>:<weights>`: a timm architecture with a local safetensors / state_dict file."""
    w = load_weights(weights, allow_pickle=allow_pickle)
    names = tuple(c.strip() for c in classes.split(",")) if classes else ()
    for label, v in (("mean", mean), ("std", std)):
        if v is not None and len(tuple(v)) != 3:
            raise InputError(f"timm:{model}: {label} needs 3 values, got {v}", Path(weights))
    ext = timm_extractor(model, model, w, input_size=size, mean=mean, std=std, class_names=names)
    return ext
