"""Merging: several cache files (e.g. the shards of one run) folded into one, atomically and under their locks."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

from ..cachelock import CacheLock
from ..errors import InputError
from .paths import main_or_shards, parts_dir, segments
from .writer import FeatureStore


def merge_caches(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, remove_inputs: bool = False,
                 compression: str | None = None) -> dict[str, int]:
    """Fold several cache files (e.g. the shards of one run) into `out`, atomically (``<out>.tmp``, renamed).

    `out` may be one of the inputs (the others are folded into it); any other existing `out` is refused.
    Every input and `out` are locked for the duration, so a file still being written is refused. Inputs are
    kept unless `remove_inputs` (then deleted, with their segments, after the rename). Returns videos per
    extractor.
    """
    out = Path(out)
    key = lambda p: os.path.normcase(os.path.abspath(p))    # noqa: E731
    paths = [q for p in inputs for q in main_or_shards(Path(p))]
    if not paths:
        raise InputError("no input files given")
    paths = list({key(p): p for p in paths}.values())
    for p in paths:
        if not (p.exists() or segments(p)):
            raise InputError("feature cache does not exist", p)
    in_place = any(key(p) == key(out) for p in paths)
    if not in_place and (out.exists() or segments(out)):
        raise InputError("exists and is not one of the inputs; choose another --out, or name it among the inputs "
                         "to fold the others into it", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    locks: list[CacheLock] = []
    try:
        for p in sorted({key(p): p for p in [*paths, out]}.values(), key=key):
            locks.append(CacheLock(p).acquire())
        src = FeatureStore(paths, compression=compression)
        try:
            counts = {e: len(src.videos(e)) for e in src.extractors if src.videos(e)}
            if not counts:
                raise InputError("the inputs hold no videos; nothing to merge", paths[0])
            used = src.source_files()
            own = [s for s in used if key(s.parent) == key(parts_dir(out))]
            others = [s for s in used if s not in own and key(s) != key(out)]
            src.fold_into(out, own, "write the merged cache")
        finally:
            src.close()
        if remove_inputs:
            for p in others:
                p.unlink(missing_ok=True)
            for p in paths:
                if key(p) != key(out):
                    p.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        parts_dir(p).rmdir()
        return counts
    finally:
        for lk in locks:
            lk.release()
