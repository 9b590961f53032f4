"""Augmentation of training frames: a horizontal flip and a small random crop and scale per frame (in the decode
workers, torchvision.transforms.v2.functional on the uint8 tensor), then brightness, contrast and saturation
jitter per frame on the device, a batch at a time.

Why the colour jitter is not v2.ColorJitter in the workers: v2 draws one factor per call, so per-frame factors
mean one call per frame, and on uint8 crops of 224 px its three adjustments cost ~4x the JPEG decode itself
(measured on a CPU), enough to starve a GPU; on the device the same blends (torchvision's formulas: brightness
scales, contrast blends with the frame's mean grey, saturation with its grey image; grey = 0.299 R + 0.587 G +
0.114 B) cost nothing beside the network. Every random draw comes from a generator seeded by (seed, epoch,
frame or batch), never from the global one, so a frame's augmentation does not depend on the number of workers,
and a resumed run repeats it.
"""
from __future__ import annotations

import math

import numpy as np

#: what is drawn per training frame (recorded in the checkpoint)
AUGMENTATION = {"horizontal_flip": 0.5, "crop_scale": [0.8, 1.0], "crop_ratio": [0.9, 1.1],
                "brightness": 0.2, "contrast": 0.2, "saturation": 0.2,
                "where": "flip and crop in the decode workers (torchvision.transforms.v2.functional), "
                         "colour on the device, per frame"}
_GREY = (0.299, 0.587, 0.114)


def seed_of(*key: int) -> int:
    """A 63-bit seed from integers (seed, epoch, frame position or batch number)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering `crop_scale` of the area at an aspect ratio in
    `crop_ratio` (log-uniform), as v2.RandomResizedCrop draws it (the whole frame when no draw fits)."""
    lo, hi = AUGMENTATION["crop_scale"]
    rlo, rhi = (math.log(r) for r in AUGMENTATION["crop_ratio"])
    area = h * w
    for _ in range(10):
        a = area * rng.uniform(lo, hi)
        r = math.exp(rng.uniform(rlo, rhi))
        cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return 0, 0, h, w


def geometric(x, rng: np.random.Generator):
    """Flip and crop/scale one uint8 (3, S, S) tensor back to S x S."""
    from torchvision.transforms.v2 import functional as F
    s = x.shape[-1]
    if rng.random() < AUGMENTATION["horizontal_flip"]:
        x = F.horizontal_flip(x)
    top, left, h, w = crop_box(rng, x.shape[-2], s)
    return F.resized_crop(x, top, left, h, w, [s, s], antialias=True)


def colour_jitter(x, seed: int):
    """Per-frame brightness, contrast and saturation jitter of a float batch (B, 3, H, W) of [0, 255] pixels,
    factors drawn from `seed` (on the CPU, then moved: the same factors on every device)."""
    import torch
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    f = {k: 1 + (torch.rand(n, generator=g) * 2 - 1) * AUGMENTATION[k] for k in ("brightness", "contrast",
                                                                              "saturation")}
    f = {k: v.to(x.device, non_blocking=True).view(n, 1, 1, 1) for k, v in f.items()}
    grey_w = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)

    def grey(t):
        return (t * grey_w).sum(1, keepdim=True)

    x = (x * f["brightness"]).clamp_(0, 255)
    mean = grey(x).mean((2, 3), keepdim=True)
    x = (f["contrast"] * x + (1 - f["contrast"]) * mean).clamp_(0, 255)
    return (f["saturation"] * x + (1 - f["saturation"]) * grey(x)).clamp_(0, 255)
