"""The temporal head at Aff-Wild2 scale: EXPR on feature-level synthetic data (~585 k train + ~281 k validation
frames x 1290 float16 features, as the EXPR split with MT-EmotiEffNet embedding + logits + VA), on 2 cores.

Runs in a child process so its peak memory (ru_maxrss) is its own (also given without the ~1 GB of torch and its
imports, which does not grow with the data: at a reduced --scale it would dominate the ratio). Reports: training
time for the default epochs (best epoch on validation, so each epoch also predicts the validation set),
prediction speed (frames/s over the validation set, overlapping windows averaged) and peak memory against the
float32 feature matrix.

Goals: training < 15 min; peak memory < 2.5 x the float32 feature matrix; prediction >= 50,000 frames/s.
`python bench/bench_heads.py [--scale 0.05] [--epochs N] [--quick]` prints one JSON row; the scale shrinks frames
and videos alike (per-frame costs scale linearly, so full-scale time ≈ time / scale). In `make bench` (run()):
three rows at full scale; quick: 1/100 of the frames, 1 epoch.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL, N_FEATURES = 585_317, 280_532, 1290
GOAL_S, GOAL_MEM, GOAL_FPS = 15 * 60, 2.5, 50_000
QUICK_SCALE = 0.01


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20     # KiB on Linux


def child(scale: float, epochs: int | None, threads: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import classify  # noqa: F401  (OpenMP wait policy before torch loads)
    from classify.temporal import TemporalHead
    from features.synthetic import make_feature_data
    # torch and its lazily loaded parts (optimizer -> compiler stack) imported before timing: a one-off cost of
    # ~10 s that does not grow with the data
    w = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    TemporalHead("expr", window=8, epochs=1, threads=threads).fit(w, np.arange(64) % 8, groups=np.zeros(64),
                                                                   frames=np.arange(64))
    base_gb = _peak_gb()
    n_tr, n_va = int(N_TRAIN * scale), int(N_VAL * scale)
    t = time.perf_counter()
    d = make_feature_data(n_tr + n_va, N_FEATURES, n_videos=max(30, int(900 * scale)), seed=0)
    cut = int(np.searchsorted(d.video, d.video[n_tr]))
    tr, va = slice(0, cut), slice(cut, len(d.X))
    data_s = time.perf_counter() - t
    data_gb = _peak_gb()                       # the generator's own temporaries are in this peak
    f32_gb = len(d.X) * N_FEATURES * 4 / 2 ** 30
    kw = {} if epochs is None else {"epochs": epochs}
    h = TemporalHead("expr", threads=threads, **kw)
    t = time.perf_counter()
    h.fit(d.X[tr], d.y_expr[tr], d.X[va], d.y_expr[va], groups=d.video[tr], frames=d.frame[tr],
          groups_val=d.video[va], frames_val=d.frame[va])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    p = h.predict_proba(d.X[va], groups=d.video[va], frames=d.frame[va])
    pred_s = time.perf_counter() - t
    from features.tasks import EXPR
    return {"scale": scale, "train_frames": cut, "val_frames": len(d.X) - cut, "features": N_FEATURES,
            "epochs": h.epochs, "best_epoch": h.best_epoch_, "threads": threads, "data_s": round(data_s, 1),
            "fit_s": round(fit_s, 1), "fit_s_full_scale_estimate": round(fit_s / scale, 1),
            "predict_frames_per_s": round((len(d.X) - cut) / pred_s), "P_EXPR_val": round(EXPR.score(
                d.y_expr[va], p), 4), "peak_gb": round(_peak_gb(), 2), "imports_gb": round(base_gb, 2),
            "after_data_gb": round(data_gb, 2),
            "float32_matrix_gb": round(f32_gb, 2), "peak_over_f32": round(_peak_gb() / f32_gb, 2),
            "data_and_training_over_f32": round((_peak_gb() - base_gb) / f32_gb, 2)}


def measure(scale: float, epochs: int | None, threads: int) -> dict:
    """child() in a fresh process (its own peak memory), plus which goals it met."""
    r = subprocess.run([sys.executable, __file__, "--child", "--scale", str(scale), "--threads", str(threads),
                        *(["--epochs", str(epochs)] if epochs else [])], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"bench_heads child failed:\n{r.stderr[-3000:]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["goals"] = {"fit_under_15_min": row["fit_s_full_scale_estimate"] < GOAL_S,
                    "peak_under_2.5x_f32": row["peak_over_f32"] < GOAL_MEM,
                    "peak_minus_imports_under_2.5x_f32": row["data_and_training_over_f32"] < GOAL_MEM,
                    "predict_50k_fps": row["predict_frames_per_s"] >= GOAL_FPS}
    return row


def run(quick: bool = False, scale: float | None = None, epochs: int | None = None, threads: int = 2) -> list[dict]:
    """The rows of `make bench`: training time, peak memory, prediction speed (quick: 1/100 scale, 1 epoch)."""
    r = measure(scale or (QUICK_SCALE if quick else 1.0), epochs or (1 if quick else None), threads)
    size = f"{r['train_frames']:,} train + {r['val_frames']:,} val frames x {N_FEATURES} float16"
    est = r["fit_s_full_scale_estimate"]
    return [
        {"benchmark": f"temporal head training, EXPR, {r['epochs']} epoch(s) (validation each epoch), {size}, "
                      f"{r['threads']} threads",
         "measured": f"{r['fit_s']:.1f} s" + (f" ({est:.0f} s scaled to full size)" if r["scale"] < 1 else "")
                     + f"; best epoch {r['best_epoch']}, P_EXPR {r['P_EXPR_val']:.4f} (data {r['data_s']:.0f} s more)",
         "baseline": f"goal {GOAL_S} s", "ratio": GOAL_S / max(est, 1e-9), "goal": "< 15 min (ratio > 1)",
         "ok": r["goals"]["fit_under_15_min"]},
        {"benchmark": f"temporal head peak memory, net of torch's imports ({size})",
         "measured": f"{r['peak_gb'] - r['imports_gb']:.2f} GB (whole-process peak {r['peak_gb']:.2f} = "
                     f"{r['peak_over_f32']:.2f} x; imports {r['imports_gb']:.2f}, after the data "
                     f"{r['after_data_gb']:.2f})",
         "baseline": f"float32 matrix {r['float32_matrix_gb']:.2f} GB", "ratio": r["data_and_training_over_f32"],
         "goal": f"< {GOAL_MEM} x float32 matrix", "ok": r["goals"]["peak_minus_imports_under_2.5x_f32"]},
        {"benchmark": f"temporal head prediction over the {r['val_frames']:,} validation frames",
         "measured": f"{r['predict_frames_per_s']:,} frames/s", "baseline": f"{GOAL_FPS:,} frames/s",
         "ratio": r["predict_frames_per_s"] / GOAL_FPS, "goal": f">= {GOAL_FPS:,} frames/s",
         "ok": r["goals"]["predict_50k_fps"]},
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=None, help=f"default 1 ({QUICK_SCALE} with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the head's default (10; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1/100 of the frames, 1 epoch")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    scale = a.scale or (QUICK_SCALE if a.quick else 1.0)
    epochs = a.epochs or (1 if a.quick else None)
    if a.child:
        print(json.dumps(child(scale, epochs, a.threads)))
        return 0
    print(json.dumps(measure(scale, epochs, a.threads), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
