"""Frozen feature extraction: frames or videos -> per-frame embeddings / logits / VA in the HDF5 cache.

``python -m extract run --data DIR --out FILE --extractors fer[,spec2]`` (see extract.cli). Modules:
sources (layouts, robust image decode, shards), faces (face detection in video files), tracks (persons linked
across frames), runner (the batched, resumable runner; with datasets, committer, planning), ray_engine (the same
on a Ray cluster), registry (names)/factory (specs)/base/models (the extractors), convert/checkpoints (weights),
finetune (a network trained on a task's crops, run afterwards as ``finetuned:CKPT``).
Importing the package is cheap: torch, PIL and cv2 load only when used.
"""
