"""Training losses by name for every torch model trained here (classify's temporal and fusion heads, extract's
fine-tuning), the reference's and those of stronger ABAW systems. They live in `features` because both stages
train with them and neither may import the other:

| name      | task | loss                                                                                   |
|-----------|------|----------------------------------------------------------------------------------------|
| `ce`      | EXPR | class-weighted cross-entropy, weights 1/count scaled so the smallest is 1 (reference)    |
| `ce_dice` | EXPR | `ce` + λ·(1 − mean soft Dice over classes)                                             |
| `bce`     | AU   | per-AU weighted BCE, w1 = n/(2·pos), w0 = n/(2·neg) (reference)                         |
| `focal`   | AU   | focal BCE, (1−p_t)^γ · BCE (Lin et al. 2017), optionally α-balanced                     |
| `asl`     | AU   | weighted asymmetric loss (Ridnik et al. 2021): γ+ on positives, γ− and a probability     |
|           |      | margin m on negatives, the per-AU `bce` weights on top                                  |
| `ccc`     | VA   | 1 − mean CCC over valence, arousal (reference)                                         |
| `mse_ccc` | VA   | MSE + (1 − mean CCC)                                                                   |

Every loss takes the network's raw outputs (EXPR: logits (n, 8); AU: logits (n, 12); VA: values (n, 2) in
[-1, 1]) and the labels, and is built from the training labels (`make_loss`), which fix the class weights.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import InputError
from .tasks import Task

LOSSES: dict[str, str] = {"ce": "multiclass", "ce_dice": "multiclass", "bce": "multilabel", "focal": "multilabel",
                          "asl": "multilabel", "ccc": "regression", "mse_ccc": "regression"}
DEFAULT_LOSS = {"multiclass": "ce", "multilabel": "bce", "regression": "ccc"}


def check_loss(name: str | None, task: Task) -> str:
    """The loss name for `task` (None: the reference's), or one clear line naming the ones that fit."""
    if name is None:
        return DEFAULT_LOSS[task.kind]
    fits = [n for n, k in LOSSES.items() if k == task.kind]
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; for {task.name} choose from {', '.join(fits)}")
    if LOSSES[name] != task.kind:
        raise InputError(f"loss {name!r} is for {LOSSES[name]} tasks, not {task.name}; choose from {', '.join(fits)}")
    return name


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """1/count per class, scaled so the smallest weight of a present class is 1; absent classes get 0."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(float)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return w / w[counts > 0].min()


def label_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (w1, w0) = (n / (2 pos), n / (2 neg)), the reference's AU weights."""
    pos = np.clip(np.asarray(y, np.float64).mean(axis=0), 1e-6, 1 - 1e-6)
    return 0.5 / pos, 0.5 / (1 - pos)


def make_loss(name: str | None, task: Task, y: np.ndarray, lam: float = 1.0, gamma: float = 2.0,
              alpha: float | None = None, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
              margin: float = 0.05, device=None) -> Callable:
    """A torch loss `f(outputs, labels) -> scalar` for `task`, weights from the training labels `y` (kept on
    `device`, default the CPU, where the outputs will be)."""
    import torch
    import torch.nn.functional as F

    name = check_loss(name, task)
    if task.kind == "multiclass":
        w = torch.tensor(class_weights(y, task.n_outputs), dtype=torch.float32, device=device)

        def ce(z, t):
            # PyTorch's weighted mean (Σ w_i l_i / Σ w_i), like Keras' sample weights normalised per batch
            return F.cross_entropy(z, t, weight=w)

        if name == "ce":
            return ce

        def ce_dice(z, t):
            p = torch.softmax(z, 1)
            oh = F.one_hot(t, task.n_outputs).to(p.dtype)
            dice = (2 * (p * oh).sum(0) + 1e-6) / (p.sum(0) + oh.sum(0) + 1e-6)
            return ce(z, t) + lam * (1 - dice.mean())
        return ce_dice

    if task.kind == "multilabel":
        w1, w0 = (torch.tensor(a, dtype=torch.float32, device=device) for a in label_weights(y))

        def bce(z, t):
            # log-sigmoid forms: stable for large logits
            return -(w1 * t * F.logsigmoid(z) + w0 * (1 - t) * F.logsigmoid(-z)).mean()

        def focal(z, t):
            p = torch.sigmoid(z)
            pt = t * p + (1 - t) * (1 - p)
            ce_ = -(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z))
            a = 1.0 if alpha is None else t * alpha + (1 - t) * (1 - alpha)
            return (a * (1 - pt) ** gamma * ce_).mean()

        def asl(z, t):
            p = torch.sigmoid(z)
            pm = (p - margin).clamp(min=0)                  # shifted probability: easy negatives drop out
            lp = t * (1 - p) ** gamma_pos * F.logsigmoid(z)
            ln = (1 - t) * pm ** gamma_neg * torch.log((1 - pm).clamp(min=1e-8))
            return -(w1 * lp + w0 * ln).mean()
        return {"bce": bce, "focal": focal, "asl": asl}[name]

    def ccc(p, t):
        mt, mp = t.mean(0), p.mean(0)
        vt, vp = t.var(0, unbiased=False), p.var(0, unbiased=False)
        cov = ((t - mt) * (p - mp)).mean(0)
        return 1 - (2 * cov / (vt + vp + (mt - mp) ** 2 + 1e-8)).mean()

    if name == "ccc":
        return ccc
    return lambda p, t: F.mse_loss(p, t) + ccc(p, t)
