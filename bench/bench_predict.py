"""Applying a run: `classify predict` on 1 M frames x 1,290 features (600 videos; MT-EmotiEffNet-sized
embedding 1280 + logits 8 + VA 2), extraction excluded.

Timed: load the heads (Keras MLP on the embedding, the logits rule, their blend), score every frame a chunk of
videos at a time, fill gaps, smooth over the frame timeline, decide, write the Parquet table. Untimed set-up:
the cache (feature-level synthetic data, features.synthetic) and a run folder whose heads are fitted on 20 k
rows. Goal: under 60 s on a 2-core machine.

`python bench/bench_predict.py [--quick] [--frames N]` prints the rows; quick (a smoke run) uses 10 k frames.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_FRAMES, N_VIDEOS, EMB, N_LOGITS = 1_000_000, 600, 1280, 8
GOAL_S = 60.0
FIT_ROWS = 20_000


def build(root: Path, n: int, n_videos: int) -> tuple[Path, Path]:
    """A cache of n frames (2 % without a face) and an EXPR run (MLP + logits rule + blend) that fits it."""
    from classify.blend import BlendHead
    from classify.mlp import MLPHead
    from classify.predict import run_provenance
    from classify.rules import AFFECTNET8, LogitsRule
    from features.store import ExtractorInfo, FeatureStore
    from features.synthetic import iter_feature_videos

    cache = root / "cache.h5"
    info = ExtractorInfo("enet", "0" * 64, 224, {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                         {"embedding": EMB, "logits": N_LOGITS, "va": 2}, extra={"class_names": list(AFFECTNET8)})
    rng = np.random.default_rng(0)
    fit_X, fit_L, fit_y = [], [], []
    with FeatureStore(cache, "a") as s:
        w = s.writer(info)
        for name, X, ctl in iter_feature_videos(n, EMB + N_LOGITS + 2, n_videos, seed=0):
            m = len(X)
            face = rng.random(m) > 0.02
            w.write_video(name, frame=np.arange(1, m + 1), face=face, embedding=X[:, :EMB],
                          logits=X[:, EMB:EMB + N_LOGITS], va=np.clip(X[:, -2:], -1, 1))
            if sum(len(x) for x in fit_X) < FIT_ROWS:
                fit_X.append(X[:, :EMB].astype(np.float16))
                fit_L.append(X[:, EMB:EMB + N_LOGITS])
                fit_y.append(ctl.expr)
    X, L, y = np.concatenate(fit_X), np.concatenate(fit_L), np.concatenate(fit_y)
    run = root / "runs" / "expr" / "bench"
    mlp = MLPHead("expr", epochs=1)
    mlp.feature_set = "enet/embedding"
    mlp.fit(X, y, X[:2000], y[:2000])
    rule = LogitsRule("expr", class_names=AFFECTNET8)
    rule.feature_set = "enet/logits"
    rule.fit(L, y)
    blend = BlendHead("expr", members=["mlp", "logits"]).fit(
        {"mlp": mlp.predict_proba(X[:4000]), "logits": rule.predict_proba(L[:4000])}, y[:4000])
    blend.feature_set = "enet/embedding & enet/logits"
    for name, h in (("mlp", mlp), ("logits", rule), ("blend", blend)):
        h.save(run / "heads" / name)
    store = FeatureStore(cache)
    metrics = {"task": "expr", "final": "blend", "summary": {"k": 10},
               "members": {"mlp": {"head": "mlp", "feature_set": "enet/embedding"},
                           "logits": {"head": "logits", "feature_set": "enet/logits"}},
               "provenance": run_provenance(store, ["enet/embedding", "enet/logits"])}
    store.close()
    (run / "metrics.json").write_text(json.dumps(metrics))
    return cache, run


def run(quick: bool = False, frames: int | None = None) -> list[dict]:
    from classify.predict import predict
    n = frames or (10_000 if quick else N_FRAMES)
    n_videos = max(1, round(N_VIDEOS * n / N_FRAMES))
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cache, run_dir = build(tmp, n, n_videos)
        print(f"  set-up (cache + heads, not timed): {time.perf_counter() - t0:.0f} s", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        res = predict(cache, tmp / "preds.parquet", run=run_dir, fps=30, timelines=0)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = (tmp / "preds.parquet").stat().st_size
    assert len(res.table) == n
    label = f"{n / 1e6:g} M" if n >= 1e6 else f"{n // 1000} k"
    return [{"benchmark": f"classify predict, {label} frames x 1290 features, {n_videos} videos: load heads (MLP + "
                          f"logits rule + blend), score, fill, smooth (k = 10), decide, write Parquet "
                          f"({size / 2 ** 20:.0f} MiB)",
             "measured": f"{secs:.1f} s ({n / secs:,.0f} frames/s; "
                         + ", ".join(f"{k} {v:.1f}" for k, v in res.stages.items() if k != "timelines")
                         + f"; CPU time of all threads {cpu:.1f} s)",
             "baseline": f"goal {GOAL_S * n / N_FRAMES:.0f} s ({N_FRAMES / GOAL_S:,.0f} frames/s)",
             "ratio": (GOAL_S * n / N_FRAMES) / secs, "goal": "< 60 s at 1 M frames (ratio > 1)",
             "ok": secs < GOAL_S * n / N_FRAMES}]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", type=int, default=None)
    a = ap.parse_args()
    for r in run(a.quick, a.frames):
        print(r)
