"""Extractor families; importing this package registers them (see extract.registry)."""
from . import exported, fer, hsemotion, resnet_msceleb, timm_generic  # noqa: F401
