"""Post-processing: the k sweep (box filter + AU metric for 200 values of k over 1 M frames x 12 outputs in
~600 videos) against the reference way (a Python loop slicing preds[max(i-k,0):i+k+1] per frame, one k at a
time), plus the joint per-AU (k, threshold) search.

The reference loop is timed on a subset of frames at several k spread over the range and scaled linearly to
all frames and all k (its cost per frame is nearly independent of k at these sizes; the evaluation of each k is
added at its measured cost). Both sides run in this process on the same data.
"""
from __future__ import annotations

import time

import numpy as np

from features.tasks import AU
from postprocess.sweep import sweep_k, tune_au_k_thresholds


def synthetic_au(n: int, n_videos: int, seed: int = 0):
    """Random-walk latent per video (a different pace per AU, so their best k differ) -> binary labels; scores
    are the sigmoid of latent + noise."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), n_videos - 1, replace=False))
    lengths = np.diff(np.r_[0, cuts, n])
    video = np.repeat(np.array([f"video{i:04d}" for i in range(n_videos)]), lengths)
    pace = np.geomspace(0.02, 0.3, 12).astype(np.float32)
    latent = np.cumsum(rng.normal(size=(n, 12)).astype(np.float32) * pace, axis=0)
    starts = np.r_[0, cuts]
    latent -= np.repeat(latent[starts], lengths, axis=0)        # each video's walk starts at 0
    y = (latent > 0.5 * pace * np.sqrt(50)).astype(np.int8)
    scores = 1 / (1 + np.exp(-(latent + rng.normal(size=(n, 12)).astype(np.float32))))
    return y, scores.astype(np.float32), video


def reference_smooth(preds: np.ndarray, video: np.ndarray, k: int) -> np.ndarray:
    """The reference notebook's smoothing, applied per video (O(N k) with a Python loop per frame)."""
    out = np.empty_like(preds)
    bounds = np.flatnonzero(np.r_[True, video[1:] != video[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        p = preds[a:b]
        for i in range(b - a):
            out[a + i] = np.mean(p[max(i - k, 0):i + k + 1], axis=0)
    return out


def run(quick: bool = False) -> list[dict]:
    n, n_videos, sub = (20_000, 12, 2_000) if quick else (1_000_000, 600, 20_000)  # quick: a smoke run
    ks = list(range(200))
    y, s, video = synthetic_au(n, n_videos)

    t0 = time.perf_counter()
    table = sweep_k(AU, y, s, video, ks)
    fast = time.perf_counter() - t0

    # reference: a subset of whole videos (about `sub` frames), several k, scaled to n frames and 200 k
    ends = np.flatnonzero(np.r_[video[1:] != video[:-1], True]) + 1
    m = int(ends[np.searchsorted(ends, sub)]) if ends[-1] > sub else n
    probe = [0, 50, 100, 199]
    t0 = time.perf_counter()
    for k in probe:
        sm = reference_smooth(s[:m], video[:m], k)
        ref_metric = AU.score(y[:m], sm)
    per_frame_k = (time.perf_counter() - t0) / (len(probe) * m)
    t0 = time.perf_counter()
    AU.score(y, s)
    eval_per_k = time.perf_counter() - t0
    ref = per_frame_k * n * len(ks) + eval_per_k * len(ks)
    # check the two agree on the subset
    sub_fast = sweep_k(AU, y[:m], s[:m], video[:m], [probe[-1]])["P_AU"].iloc[0]
    agree = abs(sub_fast - ref_metric) < 1e-6

    t0 = time.perf_counter()
    tun = tune_au_k_thresholds(y, s, video, ks)
    joint = time.perf_counter() - t0
    size = f"{n / 1e6:g} M frames x 12 AU, {n_videos} videos, 200 k"
    return [
        {"benchmark": f"k sweep, box mean + P_AU ({size})",
         "measured": f"{fast:.2f} s (best k {int(table.k[table.P_AU.idxmax()])})",
         "baseline": f"{ref:.0f} s reference loop (timed on {m} frames x {len(probe)} k, scaled)"
                     + ("" if agree else "; RESULTS DIFFER"),
         "ratio": ref / fast, "goal": ">= 50x and < 5 s", "ok": bool(ref / fast >= 50 and fast < 5 and agree)},
        {"benchmark": f"per-AU (k, threshold) search, 99 thresholds ({size})",
         "measured": f"{joint:.2f} s (gain {tun.gain:+.4f} F1 over shared k)",
         "baseline": f"{ref:.0f} s reference loop for the smoothing alone",
         "ratio": ref / joint, "goal": ">= 10x", "ok": bool(ref / joint >= 10)},
    ]


if __name__ == "__main__":
    import sys
    for row in run(quick="--quick" in sys.argv[1:]):
        print(row)
