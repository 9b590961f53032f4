"""Classification heads at Aff-Wild2 scale: EXPR on feature-level synthetic data (~585 k train + ~281 k
validation frames x 1290 float16 features, as the EXPR split with MT-EmotiEffNet embedding + logits + VA).

Each part runs in its own child process so its peak memory (ru_maxrss) is its own:
- `pipeline`: our heads one after the other, as `python -m classify` runs them: the Keras MLP (reference
  configuration, 10 epochs, best epoch on validation by P_EXPR), LightAutoML on 8 logit columns (its time
  limit, its sample sized from it, folds of whole videos; it runs in its own worker process, whose memory is
  not in this peak), the logits rule, the blend of the three (simplex grid); wall time per head, peak memory
  (ru_maxrss of the child), and whether LightAutoML kept a model within its limit.
- `mlp_epochs`: our MLP's time per training epoch alone, 2 epochs.
- `reference`: the reference way of feeding the MLP: a float32 copy of the matrices and `model.fit` on the
  arrays with `validation_data`, 2 epochs (per-epoch time and peak memory compared with ours).

Goals: all heads under 15 minutes on this 2-core machine; peak memory under 2.5 x the float32 feature matrix.
`python bench/bench_classify.py [--quick]` prints the rows; quick=True uses 1/20 of the size.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_TRAIN, N_VAL, N_FEATURES = 585_317, 280_532, 1290
GOAL_S, GOAL_MEM = 15 * 60, 2.5


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20     # KiB on Linux


def _data(scale: float):
    """Feature-level synthetic EXPR data split by video into train (first ~N_TRAIN rows) and validation, plus
    8 'logit' columns standing in for a pre-trained model's logits: the features projected on the class-mean
    directions of the first ~5 % of the training videos (a weak model trained on other data; a random
    projection, as before, left the logits without signal, so every head on them predicted the majority class)."""
    from features.synthetic import make_feature_data
    n_tr, n_va = int(N_TRAIN * scale), int(N_VAL * scale)
    d = make_feature_data(n_tr + n_va, N_FEATURES, n_videos=max(30, int(900 * scale)), seed=0)
    cut = int(np.searchsorted(d.video, d.video[n_tr]))            # first row of the video holding row n_tr
    m = int(np.searchsorted(d.video, d.video[cut // 20]))
    Xm, ym = d.X[:m].astype(np.float32), d.y_expr[:m]
    mu = Xm.mean(0)
    W = np.stack([Xm[ym == c].mean(0) - mu if (ym == c).any() else np.zeros_like(mu) for c in range(8)], 1)
    W /= np.maximum(np.linalg.norm(W, axis=0, keepdims=True), 1e-12)
    logits = np.empty((len(d.X), 8), np.float32)
    for a in range(0, len(d.X), 65536):
        logits[a:a + 65536] = (d.X[a:a + 65536].astype(np.float32) - mu) @ W
    return d, cut, logits


def part_pipeline(scale: float, lama_timeout: int, epochs: int) -> dict:
    from classify.blend import BlendHead
    from classify.lama import LamaHead, LamaTimeout, hard_limit
    from classify.mlp import MLPHead
    from classify.rules import LogitsRule
    from features.tasks import EXPR
    from classify.mlp import _keras
    _keras()
    out = {"imports_gb": _peak_gb()}                       # TensorFlow & co. before any data
    t = time.perf_counter()
    d, cut, logits = _data(scale)
    y = d.y_expr
    out["data"] = {"s": time.perf_counter() - t, "rows": [cut, len(y) - cut], "peak_gb": _peak_gb()}
    X, Xv, yt, yv = d.X[:cut], d.X[cut:], y[:cut], y[cut:]
    scores = {}
    for name, make, Xa, Xb in (
            ("mlp", lambda: MLPHead("expr", epochs=epochs), X, Xv),
            ("lama", lambda: LamaHead("expr", timeout=lama_timeout, log_file=os.devnull), logits[:cut], logits[cut:]),
            ("logits", lambda: LogitsRule("expr"), logits[:cut], logits[cut:])):
        t = time.perf_counter()
        try:
            # video ids, as classify.run passes them (LightAutoML: sample spread over videos, folds of videos)
            h = make().fit(Xa, yt, Xb, yv, groups=d.video[:cut])
        except LamaTimeout as e:          # no LightAutoML model: its rows say so, the other heads still run
            out[name] = {"s": time.perf_counter() - t, "error": str(e), "limit": lama_timeout,
                         "hard_limit": hard_limit(lama_timeout), "peak_gb": _peak_gb()}
            print(f"  {name}: {e}", file=sys.stderr, flush=True)
            continue
        scores[name] = h.predict_proba(Xb)
        out[name] = {"s": time.perf_counter() - t, "metric": EXPR.score(yv, scores[name]), "peak_gb": _peak_gb()}
        if name == "mlp":
            out[name]["epoch_s"] = None
            out[name]["best_epoch"] = h.best_epoch
        if name == "lama":
            out[name].update(rows=h.rows_used, stages=h.stages_, limit=lama_timeout,
                             hard_limit=hard_limit(lama_timeout), worker_peak_gb=h.worker_peak_gb_)
        print(f"  {name}: {out[name]['s']:.1f} s, P_EXPR {out[name]['metric']:.4f}", file=sys.stderr, flush=True)
    out["members"] = sorted(scores)
    t = time.perf_counter()
    b = BlendHead("expr").fit(scores, yv)
    out["blend"] = {"s": time.perf_counter() - t, "metric": EXPR.score(yv, b.predict_proba(scores)),
                    "weights": b.weights_, "peak_gb": _peak_gb()}
    return out


def part_mlp_epochs(scale: float, epochs: int) -> dict:
    """Our MLP's time per training epoch alone (no validation pass), for the side-by-side with the reference."""
    from classify.mlp import MLPHead
    d, cut, _ = _data(scale)
    h = MLPHead("expr", epochs=epochs)
    t = time.perf_counter()
    h.fit(d.X[:cut], d.y_expr[:cut])
    return {"epoch_s": (time.perf_counter() - t) / epochs, "peak_gb": _peak_gb()}


def part_reference(scale: float, epochs: int) -> dict:
    """The reference's feeding: float32 copies, model.fit on arrays with validation_data and class weights."""
    from classify.mlp import _keras
    tf, keras = _keras()
    d, cut, _ = _data(scale)
    base = _peak_gb()
    X = d.X[:cut].astype(np.float32)
    Xv = d.X[cut:].astype(np.float32)
    y, yv = d.y_expr[:cut], d.y_expr[cut:]
    counts = np.bincount(y, minlength=8)
    cw = {i: float(counts.max() / max(c, 1)) for i, c in enumerate(counts)}
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((N_FEATURES,)), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(8, activation="softmax")])
    m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    t = time.perf_counter()
    m.fit(X, y, batch_size=256, epochs=epochs, validation_data=(Xv, yv), class_weight=cw, verbose=0)
    return {"epoch_s": (time.perf_counter() - t) / epochs, "peak_gb": _peak_gb(), "data_peak_gb": base}


def _child(part: str, **kw) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, __file__, "--part", part, "--kw", json.dumps(kw)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bench part {part} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    scale = 1 / 20 if quick else 1.0
    lama_timeout = 30 if quick else 180
    size = f"{int(N_TRAIN * scale) // 1000}k+{int(N_VAL * scale) // 1000}k x {N_FEATURES}"
    f32_gb = (int(N_TRAIN * scale) + int(N_VAL * scale)) * N_FEATURES * 4 / 2 ** 30
    load0 = os.getloadavg()[0]
    p = _child("pipeline", scale=scale, lama_timeout=lama_timeout, epochs=10)
    load1 = os.getloadavg()[0]
    ours = _child("mlp_epochs", scale=scale, epochs=2)
    ref = _child("reference", scale=scale, epochs=2)
    heads_s = sum(p[k]["s"] for k in ("mlp", "lama", "logits", "blend"))
    total_s = heads_s + p["data"]["s"]
    mem = p["blend"]["peak_gb"] - (p["imports_gb"] if quick else 0.0)
    lama = p["lama"]
    lama_metric = f"{lama['metric']:.4f}" if "metric" in lama else "no model"
    members = p["members"]
    best = max(p[k]["metric"] for k in members)
    rows = [
        {"benchmark": f"EXPR all heads ({size}): MLP 10 ep + LAMA ({lama_timeout} s limit, sample sized from it) "
                      f"+ logits + blend",
         "measured": (f"{total_s:.0f} s (data {p['data']['s']:.0f}, mlp {p['mlp']['s']:.0f}, lama "
                      f"{lama['s']:.0f}, logits {p['logits']['s']:.0f}, blend {p['blend']['s']:.1f}; "
                      f"load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores)"),
         "baseline": f"goal {GOAL_S} s", "ratio": total_s / GOAL_S, "goal": "< 15 min in total",
         "ok": total_s < GOAL_S},
        {"benchmark": f"LightAutoML on 8 logit columns of {int(N_TRAIN * scale) // 1000}k training rows: a model "
                      f"within its {lama_timeout} s limit (the fit's wall time, worker start-up included)",
         "measured": (f"{lama['s']:.0f} s, {lama.get('rows', 0)} rows, P_EXPR {lama_metric} ("
                      + ("; ".join(lama.get("stages", [])) or lama.get("error", "")) + ")"),
         "baseline": f"limit {lama_timeout} s (worker stopped at {lama['hard_limit']:.0f} s)",
         "ratio": lama["s"] / lama_timeout, "goal": "a model, in <= the limit (ratio <= 1)",
         "ok": "metric" in lama and lama["s"] <= lama_timeout},
        {"benchmark": f"EXPR pipeline peak memory ({size} float16 in memory)"
                      + (", net of the imports (quick: they dominate)" if quick else ""),
         "measured": f"{mem:.2f} GB (peak {p['blend']['peak_gb']:.2f}: imports {p['imports_gb']:.2f}, data "
                     f"{p['data']['peak_gb']:.2f}, mlp {p['mlp']['peak_gb']:.2f}, lama {lama['peak_gb']:.2f}; "
                     f"LightAutoML's worker process {lama.get('worker_peak_gb') or float('nan'):.2f})",
         "baseline": f"float32 matrix {f32_gb:.2f} GB", "ratio": mem / f32_gb,
         "goal": f"< {GOAL_MEM} x float32 matrix", "ok": mem < GOAL_MEM * f32_gb},
        {"benchmark": "MLP peak memory: batches cut from float16 vs reference float32 copy + fit on arrays",
         "measured": f"{ours['peak_gb']:.2f} GB", "baseline": f"{ref['peak_gb']:.2f} GB",
         "ratio": ref["peak_gb"] / ours["peak_gb"], "goal": "lower than the reference (ratio > 1)",
         "ok": ours["peak_gb"] < ref["peak_gb"]},
        {"benchmark": "MLP time per training epoch (batch 256): ours vs reference fit on float32 arrays",
         "measured": f"{ours['epoch_s']:.1f} s", "baseline": f"{ref['epoch_s']:.1f} s (incl. its val loss)",
         "ratio": ref["epoch_s"] / ours["epoch_s"], "goal": "within 1.5x of the reference (ratio > 0.67)",
         "ok": ref["epoch_s"] / ours["epoch_s"] > 0.67},
        {"benchmark": f"blend of {len(members)} heads (simplex grid, step 0.1) vs best member, P_EXPR on val",
         "measured": f"{p['blend']['metric']:.4f} (weights {p['blend']['weights']})",
         "baseline": f"{best:.4f} (mlp {p['mlp']['metric']:.4f}, lama {lama_metric}, "
                     f"logits {p['logits']['metric']:.4f})",
         "ratio": p["blend"]["metric"] / best, "goal": ">= best member (ratio >= 1)",
         "ok": p["blend"]["metric"] >= best - 1e-12},
    ]
    return rows


def _main() -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default=None)
    ap.add_argument("--kw", default="{}")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.part:
        fn = {"pipeline": part_pipeline, "mlp_epochs": part_mlp_epochs, "reference": part_reference}[a.part]
        print(json.dumps(fn(**json.loads(a.kw)), default=float))
        return
    for r in run(a.quick):
        print(r)


if __name__ == "__main__":
    _main()
