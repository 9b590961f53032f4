"""Extractor registry (a leaf: it imports no model family): names map to factories.

Each family in extract.models registers its factories with :func:`register` when imported; extract.factory
imports every family and builds extractors from spec strings (``registry.create`` etc. still work: they are
looked up in extract.factory on first use).
"""
from __future__ import annotations

from typing import Any, Callable

from features.errors import InputError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("enet_b0_8_va_mtl") def make(path=None, **opts) -> Extractor``."""
    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"extractor {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory
    return deco


def entrypoint(name: str, spec: str | None = None) -> Callable[..., Any]:
    """The factory registered as `name` (families must be imported: extract.factory does it)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown extractor {name!r} in spec {spec or name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def __getattr__(name: str) -> Any:
    # the factory's public names, for callers of ``registry.create(...)``; imported on use (not a cycle)
    if name in ("create", "parse_spec", "apply_runtime", "list_extractors"):
        from . import factory
        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
