"""Extractor families; importing this package registers them in extract.registry (extract.factory imports it)."""
from . import exported, fer, finetuned, hsemotion, resnet_msceleb, timm_generic  # noqa: F401
