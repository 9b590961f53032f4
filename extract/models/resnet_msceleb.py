"""ResNet-18 pre-trained on MS-Celeb-1M face identities (the DAN / POSTER backbone), as a 512-d embedding.

The checkpoint is ``{'state_dict': ...}`` with torchvision resnet18 keys (sometimes ``module.``-prefixed); its
``fc`` (identity classes) is dropped, so there are no logits. timm's ``resnet18`` has torchvision's keys.
"""
from __future__ import annotations

from features.errors import InputError

from ..base import IMAGENET_MEAN, IMAGENET_STD, TorchExtractor
from ..checkpoints import find_checkpoint, load_strict, load_weights, strip_prefix
from ..registry import register
from .timm_generic import TimmNet, create_timm

NAME = "resnet18_msceleb"


@register(NAME)
def make(path: str | None = None, *, allow_pickle: bool = False):
    """resnet18_msceleb:path.pth -> 512-d embedding (no logits)."""
    # the published files are plain tensors (weights_only loads them); re-saved ones may hold pickled objects
    w = load_weights(find_checkpoint(NAME, path), allow_pickle=allow_pickle)
    sd = {k: v for k, v in strip_prefix(w.state_dict).items() if not k.startswith("fc.")}
    if "conv1.weight" not in sd:
        raise InputError(f"{NAME}: not a torchvision-style resnet18 state_dict (no conv1.weight; keys like "
                         f"{', '.join(list(sd)[:3])})", w.path)
    model = create_timm("resnet18", 0)
    load_strict(model, sd, w.path, "resnet18 (fc dropped)")
    net = TimmNet(model)
    return TorchExtractor(NAME, net, 224, net.output_dims(), w.provenance_sha256, IMAGENET_MEAN, IMAGENET_STD,
                          extra={"family": "resnet18_msceleb", "architecture": "resnet18",
                                 "checkpoint": str(w.path), "checkpoint_format": w.format})
