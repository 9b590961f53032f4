"""Feature sets by name: `<extractor>/embedding`, `<extractor>/logits`, `<extractor>/logits+va`, `<extractor>/va`,
and `+`-joined concatenations across extractors, e.g. `enet_b0_8_va_mtl/embedding+enet_b0_8_best_vgaf/logits`.
"""
from __future__ import annotations

from features.errors import InputError
from features.store import FeatureStore


def resolve(store: FeatureStore, name: str) -> list[str]:
    """A feature set name -> the store's "extractor/output" keys, checked against what the cache holds."""
    keys: list[str] = []
    current = None
    if not name.strip():
        raise InputError("empty feature set name", store.paths[0])
    for part in name.split("+"):
        part = part.strip()
        if "/" in part:
            current, out = part.split("/", 1)
        elif current is not None:
            out = part            # "ext/logits+va" continues the previous extractor
        else:
            raise InputError(f"feature set {name!r}: {part!r} must look like extractor/output")
        if current not in store.extractors or out not in store.info(current).outputs:
            what = f"no extractor {current!r}" if current not in store.extractors else \
                f"extractor {current!r} has no output {out!r}"
            raise InputError(f"unknown feature set {name!r} ({what}); the cache offers "
                             f"{', '.join(available(store)) or 'nothing'} and '+'-joins of these", store.paths[0])
        keys.append(f"{current}/{out}")
    if len(set(keys)) != len(keys):
        raise InputError(f"feature set {name!r} names the same output twice", store.paths[0])
    return keys


def available(store: FeatureStore) -> list[str]:
    """The feature set names this cache offers (for listings and error messages)."""
    out = []
    for e in store.extractors:
        outs = store.info(e).outputs
        out += [f"{e}/{o}" for o in outs]
        if "logits" in outs and "va" in outs:
            out.append(f"{e}/logits+va")
    return out


def default_sets(store: FeatureStore, task_name: str) -> dict[str, str]:
    """Reference choices for the first extractor: MLP on the embedding (VA: on logits+VA when the model has
    them), LightAutoML on logits (+VA)."""
    if not store.extractors:
        raise InputError("the cache holds no extractors", store.paths[0])
    e = store.extractors[0]
    outs = store.info(e).outputs
    small = f"{e}/logits+va" if "logits" in outs and "va" in outs else (
        f"{e}/logits" if "logits" in outs else f"{e}/embedding")
    mlp = small if task_name == "va" and "va" in outs else f"{e}/embedding"
    return {"mlp": mlp, "lama": small, "logits": f"{e}/logits" if "logits" in outs else "",
            "va_only": f"{e}/va" if "va" in outs else ""}
