"""Fine-tuning: train a whole network on a task's labelled crops and use the result as an extractor.

    python -m extract finetune --task expr|va|au --data ROOT --from SPEC --out CKPT.safetensors
    python -m extract run --extractors finetuned:CKPT.safetensors ...

It starts from any timm-built torch extractor the registry makes (EmotiEffNet B0/B2, MT-EmotiEffNet, ResNet18,
``timm:<model>:<weights>``, or an earlier fine-tuned checkpoint), replaces its classifier with the task's
outputs (8 Aff-Wild2 classes, 2 VA values through tanh, 12 AU logits), trains every layer from
``--freeze-until`` on with the task's loss (features.losses: class-weighted CE, 1 - CCC, weighted BCE, ...),
scores each epoch on the validation split by the official metric and keeps the best epoch. The checkpoint's
metadata says everything extract.models.finetuned needs to run it; a report (CKPT.json) lists per epoch the
training loss, the validation metric, seconds and frames/s.

Modules: settings (options and their bounds), frames (labelled crops, per-epoch sampling), augment (flip and crop
in the decode workers, colour jitter on the device),
network (start network, layer groups, freezing), state (resumable state, checkpoint writer), train (the loop).
"""
from .settings import Settings
from .train import Result, finetune

__all__ = ["Settings", "Result", "finetune"]
