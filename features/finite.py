"""Cached features read for heads: NaN or infinite values on a frame with a face are refused, on every path.

Every path that gives cached features to a head reads them through :func:`read_for_heads` (classify training and
validation through :func:`features.labels.join` and ``classify.splits.load_test``, ``classify predict`` with a run
or ``--pretrained``), so one rule holds everywhere: a frame with a face whose features hold NaN or an infinite
value is refused with one line naming the cache, the extractor and output, how many frames of how many videos,
and the first video and frame.

Why refuse rather than treat such frames as frames without a face: the extractors never write such values
(frames without a face get zeros), so they mean a damaged file or a broken model (e.g. activations beyond
float16's 65504 stored as inf), and the other frames of that cache are not to be trusted either. Left in, heads
score them without a word: LightAutoML takes NaN as a missing value, a clipping rule turns inf into 1.0.
Frames without a face are not checked: no head reads them. :meth:`features.store.FeatureStore.read` itself
returns what is stored, unchecked (a notebook may want to look at a damaged file).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError
from .store import FeatureBlock, FeatureStore

_STEP = 1 << 16          # rows checked at a time: the temporaries stay small beside a large matrix
# A float is NaN or +-inf when its exponent bits are all ones: seen as a signed integer, a positive one lies at the
# top of the range, and seen as an unsigned integer, a negative one does; so two flat integer maxima (vectorised,
# unlike numpy's float16 isfinite) clear a block that holds none, the usual case.
_BITS = {np.dtype(np.float16): (np.int16, np.uint16, 0x7C00, 0xFC00),
         np.dtype(np.float32): (np.int32, np.uint32, 0x7F800000, 0xFF800000),
         np.dtype(np.float64): (np.int64, np.uint64, 0x7FF0000000000000, 0xFFF0000000000000)}


def nonfinite_rows(a: np.ndarray, step: int = _STEP) -> np.ndarray:
    """Boolean mask of the rows of the float array `a` (rows along the first axis) holding NaN or +-inf."""
    a = np.asarray(a)
    bad = np.zeros(len(a), bool)
    if a.size == 0 or a.dtype.kind != "f":
        return bad
    a2 = a.reshape(len(a), -1)
    bits = _BITS.get(a2.dtype)
    for s in range(0, len(a2), step):
        blk = a2[s:s + step]
        if bits is not None and blk.flags.c_contiguous:
            signed, unsigned, pos, neg = bits
            if blk.view(signed).max() < pos and blk.view(unsigned).max() < neg:
                continue
        bad[s:s + len(blk)] = ~np.isfinite(blk).all(axis=1)
    return bad


def _cache_name(store: FeatureStore) -> str:
    p = store.paths
    return str(p[0]) if len(p) == 1 else f"{p[0]} (and {len(p) - 1} more cache files)"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def check_block(store: FeatureStore, blk: FeatureBlock) -> None:
    """Refuse `blk` (read from `store`) when a frame with a face holds NaN or an infinite value in any array."""
    face = blk.index["face"].to_numpy(bool)
    for key, a in blk.arrays.items():
        bad = nonfinite_rows(a) & face
        if not bad.any():
            continue
        i = int(np.argmax(bad))
        videos = blk.index["video"].to_numpy()[bad]
        extractor, output = key.split("/", 1)
        n, m = int(bad.sum()), len(set(videos.tolist()))
        raise InputError(f"extractor {extractor!r}, output {output!r}: {_count(n, 'frame')} with a face in "
                         f"{_count(m, 'video')} {'holds' if n == 1 else 'hold'} NaN or infinite values (first: "
                         f"video {str(blk.index['video'].iloc[i])!r}, frame {int(blk.index['frame'].iloc[i])}); "
                         f"the cache is damaged (or its model overflowed): extract these videos again",
                         _cache_name(store))


def read_for_heads(store: FeatureStore, videos: Sequence[str] | None = None,
                   extractors: Sequence[str] | str | None = None,
                   outputs: Sequence[str] | dict[str, Sequence[str]] = ("embedding",)) -> FeatureBlock:
    """:meth:`FeatureStore.read` for a head: the same block, refused (:func:`check_block`) when a frame with a
    face holds NaN or an infinite value."""
    blk = store.read(videos, extractors, outputs=outputs)
    check_block(store, blk)
    return blk
