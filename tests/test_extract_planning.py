"""Planning at Aff-Wild2 scale (simulated): per-worker frame loads of the longest-first plan."""
from __future__ import annotations

import numpy as np
import pytest

from extract.planning import balance, loads, select_videos
from extract.sources import ImageVideo, shard_videos


def affwild2_like(seed: int, sigma: float = 0.8, cap: int | None = 45_000) -> np.ndarray:
    """564 video lengths summing to ~2.94 M frames: log-normal spread (a few hundred frames to ~25 minutes at
    30 fps), as in Aff-Wild2."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, sigma, 564)
    n = np.maximum(100, x / x.sum() * 2.94e6).astype(np.int64)
    return np.minimum(n, cap) if cap else n


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("workers", [8, 64])
def test_per_worker_load_max_over_mean_at_most_1_05(workers, seed):
    w = affwild2_like(seed)
    bins = balance(w, workers)
    assert sorted(k for b in bins for k in b) == list(range(len(w)))     # every video exactly once
    ld = loads(w, bins)
    assert ld.max() / ld.mean() <= 1.05, (workers, seed, ld.max() / ld.mean())
    # and each worker's queue runs longest first
    assert all(list(w[b]) == sorted(w[b], reverse=True) for b in bins)


def test_heavy_tail_is_bounded_by_the_longest_video():
    """Videos are committed whole, so no plan beats the longest video; the plan then reaches exactly that."""
    w = affwild2_like(0, sigma=1.2, cap=None)
    ld = loads(w, balance(w, 64))
    assert w.max() > 1.05 * ld.mean() and ld.max() == w.max()


def test_shards_and_the_planner_agree():
    videos = [ImageVideo(f"v{k:03d}", None, [None] * int(n)) for k, n in enumerate(affwild2_like(3)[:60])]
    names = [v.name for v in videos]
    w = np.array([v.n_frames for v in videos])
    bins = balance(w, 4, names)
    for i in range(1, 5):
        assert [v.name for v in shard_videos(videos, i, 4)] == sorted(names[k] for k in bins[i - 1])
    sel, out = select_videos(videos, __import__("pathlib").Path("c/f.h5"), limit_videos=10, shard=(2, 3))
    assert out.name == "f.shard-2-of-3.h5" and {v.name for v in sel} <= set(names[:10])


def test_ray_leases_take_whole_videos_and_an_idle_worker_takes_the_shortest_of_the_fullest_queue(tmp_path):
    from extract.ray_engine import _Driver
    from extract.runner import Settings
    videos = [ImageVideo(f"v{k}", None, [None] * n) for k, n in enumerate([50, 40, 30, 20, 10, 5, 5])]
    d = _Driver(None, 2, tmp_path / "c.h5", videos, Settings(progress=False), summary=None)
    d.lease_frames = 35
    d.slots[1].queue, d.slots[2].queue = [0, 3, 4, 5], [1, 2, 6]
    assert d._next_lease(d.slots[1]) == [0]                  # one video reaches the lease size
    assert d._next_lease(d.slots[2]) == [1]
    assert d._next_lease(d.slots[1]) == [3, 4, 5]            # 20 + 10 + 5 >= 35
    assert d._next_lease(d.slots[1]) == [2, 6]               # empty: the tail of the other queue
    assert d.slots[2].queue == [] and d._next_lease(d.slots[2]) == []


def test_ray_run_finds_every_shard_file_of_the_cache(tmp_path):
    from extract.ray_engine import existing_files
    out = tmp_path / "c.h5"
    for name in ["c.shard-1-of-2.h5", "c.shard-2-of-2.h5.parts", "c.shard-1-of-3.h5", "c.h5", "other.shard-1-of-2.h5",
                 "c.shard-x-of-2.h5"]:
        (tmp_path / name).mkdir() if name.endswith(".parts") else (tmp_path / name).write_bytes(b"")
    assert [p.name for p in existing_files(out)] == ["c.h5", "c.shard-1-of-2.h5", "c.shard-1-of-3.h5",
                                                     "c.shard-2-of-2.h5"]


def test_a_ray_worker_that_committed_nothing_still_leaves_a_readable_file(tmp_path):
    """Otherwise FeatureStore(shard_paths(out, n)) refuses the run ("feature cache does not exist")."""
    from extract.ray_engine import _ensure_file
    from features.store import FeatureStore
    p = tmp_path / "c.shard-2-of-2.h5"
    _ensure_file(p)
    with FeatureStore([p]) as s:
        assert s.extractors == []
    before = p.stat().st_mtime_ns
    _ensure_file(p)                       # an existing file is left alone
    assert p.stat().st_mtime_ns == before
