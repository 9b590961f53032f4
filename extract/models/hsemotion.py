"""EmotiEffNet (HSEmotion) models: timm TF-port EfficientNets trained on AffectNet.

Weights load in three ways, all into a freshly built timm model (the published pickled modules were saved
under timm 0.9 and their own forward fails under timm 1.x with ``'DepthwiseSeparableConv' object has no
attribute 'conv_s2d'``, so they are never called):

- a converted ``.safetensors`` (``python -m extract.convert``), or a plain state_dict ``.pt``: loaded safely;
- a published whole-pickled ``.pt`` module: only with ``allow_pickle=1`` (unpickling can run code);
  its state_dict is taken (``classifier.0.*`` of the Sequential head mapped to ``classifier.*``).

The published modules are ``tf_efficientnet_b0_ns`` / ``_b2_ns`` (the ``ns_jft_in1k`` tag of
``tf_efficientnet_b0`` / ``_b2`` in timm 1.x): same-padding convs and BatchNorm eps 1e-3, which a fresh
``tf_efficientnet_b*`` reproduces. Their ONNX twins (a path ending in ``.onnx``) run with onnxruntime
(`extract.models.onnx_twin`), the embedding taken from the input of the graph's classifier layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from features.errors import InputError

from ..base import AFFECTNET7, AFFECTNET8, IMAGENET_MEAN, IMAGENET_STD
from ..checkpoints import find_checkpoint, load_weights
from ..registry import register
from .timm_generic import timm_extractor


@dataclass(frozen=True)
class Variant:
    arch: str
    input_size: int
    classes: tuple[str, ...]
    has_va: bool = False


VARIANTS = {
    "enet_b0_8_best_vgaf": Variant("tf_efficientnet_b0", 224, AFFECTNET8),
    "enet_b0_8_best_afew": Variant("tf_efficientnet_b0", 224, AFFECTNET8),
    "enet_b0_8_va_mtl": Variant("tf_efficientnet_b0", 224, AFFECTNET8, has_va=True),
    "enet_b2_8": Variant("tf_efficientnet_b2", 260, AFFECTNET8),
    "enet_b2_7": Variant("tf_efficientnet_b2", 260, AFFECTNET7),
}
_ARCH_ALIASES = {"tf_efficientnet_b0_ns": "tf_efficientnet_b0", "tf_efficientnet_b2_ns": "tf_efficientnet_b2"}


def canonical_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch, arch)


def make(name: str, path: str | None = None, allow_pickle: bool = False):
    v = VARIANTS[name]
    found = find_checkpoint(name, path)
    if found.suffix.lower() == ".onnx":
        from .onnx_twin import OnnxExtractor
        return OnnxExtractor(name, found, v.input_size, v.classes, has_va=v.has_va,
                             extra={"family": "hsemotion", "architecture": v.arch})
    w = load_weights(found, allow_pickle=allow_pickle)
    stored = w.metadata.get("architecture")
    if stored and canonical_arch(stored) != v.arch:
        raise InputError(f"{name} needs a {v.arch} checkpoint, this one is {stored}", w.path)
    n = len(v.classes) + (2 if v.has_va else 0)
    return timm_extractor(name, v.arch, w, expect_classes=n, has_va=v.has_va, input_size=v.input_size,
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=v.classes,
                          extra={"family": "hsemotion", "source_module": w.metadata.get("module_class", "")})


def _register(name: str) -> None:
    def factory(path: str | None = None, *, allow_pickle: bool = False):
        return make(name, path, allow_pickle)
    factory.__doc__ = f"{name}: EmotiEffNet {VARIANTS[name].arch}, {VARIANTS[name].input_size} px"
    register(name)(factory)


for _n in VARIANTS:
    _register(_n)
