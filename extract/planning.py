"""Planning: which videos a run extracts, and how videos are spread over shards or workers.

Both engines use it: the local runner for ``--limit-videos`` / ``--shard i/n``, the Ray engine for the per-worker
queues. Work is balanced by frame count (a frame costs about the same everywhere: one decode, one forward pass
per extractor), longest video first to the least loaded worker (LPT): within 4/3 of the optimum in theory, and
on Aff-Wild2-like length spreads within a few percent of the mean (tests/test_extract_planning.py).
"""
from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from features.errors import InputError
from features.store import shard_path


def select_videos(videos: Sequence[Any], out: Path, limit_videos: int | None = None,
                  shard: tuple[int, int] | None = None) -> tuple[list, Path]:
    """The videos of this run (first `limit_videos`, then shard i of n) and the file they go to."""
    videos = list(videos)
    if limit_videos is not None:
        if limit_videos < 1:        # a slice would silently drop the last video (-1) or every video (0)
            raise InputError(f"--limit-videos must be >= 1, got {limit_videos}")
        videos = videos[:limit_videos]
    out = Path(out)
    if shard is not None:
        videos = shard_videos(videos, *shard)
        out = shard_path(out, *shard)
    return videos, out


def frame_weights(videos: Sequence[Any]) -> np.ndarray:
    """Cost of each video in frames (a video of unknown length counts as one frame)."""
    return np.array([max(int(v.n_frames), 1) for v in videos], np.int64)


def balance(weights: Sequence[int], n: int, names: Sequence[str] | None = None) -> list[list[int]]:
    """Indices of `weights` per bin (n bins): longest first to the lightest bin, ties broken by name/index.

    Deterministic; each bin's list is in assignment order (longest first), which is also the order a worker
    should process them in (its long videos start early, its short ones fill the end)."""
    keys = names if names is not None else [f"{k:012d}" for k in range(len(weights))]
    order = sorted(range(len(weights)), key=lambda k: (-int(weights[k]), keys[k]))
    # bins beyond the number of items stay empty (each item goes to the first empty bin), so only those are built
    used = min(n, len(order))
    heap = [(0, b) for b in range(used)]
    bins: list[list[int]] = [[] for _ in range(used)]
    for k in order:
        load, b = heapq.heappop(heap)
        bins[b].append(k)
        heapq.heappush(heap, (load + int(weights[k]), b))
    return bins + [[] for _ in range(n - used)]


def shard_videos(videos: Sequence[Any], i: int, n: int) -> list[Any]:
    """The videos of shard i of n (``--shard i/n``): bin i of :func:`balance` by frames, ties broken by name, in
    the listed order. Deterministic, so n processes given the same data agree without talking."""
    if i > len(videos):         # more shards than videos: the last ones are empty (balance fills bins in order)
        return []
    bins = balance(frame_weights(videos), min(n, len(videos)), [v.name for v in videos])
    return [videos[k] for k in sorted(bins[i - 1])]


def loads(weights: Sequence[int], bins: Sequence[Sequence[int]]) -> np.ndarray:
    w = np.asarray(weights)
    return np.array([int(w[list(b)].sum()) if len(b) else 0 for b in bins])
