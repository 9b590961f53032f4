"""Results table of the heads on synthetic sets: the reference MLP + best-k box filter vs the temporal head
(± smoothing) vs fusion, per task, each run through `classify.run.run` exactly as `python -m classify` runs it.

Sets:
- `features`: feature-level synthetic data with temporal structure (`features.synthetic.make_feature_data`:
  expression episodes with onset and offset, labels smooth in time), its columns split into two "extractors"
  (a: 40 columns, b: 24) so that fusion has something to fuse;
- `motion`: EXPR whose label is the direction of an AU's motion (onset / offset,
  `tests/synthetic_motion.py`), which no per-frame head can learn;
- `rendered` (in --sets): the rendered synthetic Aff-Wild2 set through `python -m extract run` with the
  offline default extractor (fer), as `make demo` does.

`python bench/heads_table.py [--out DIR] [--frames N] [--epochs E] [--sets features,motion,rendered]` prints a
markdown table (metric at frame level and after the box filter with k chosen on validation) and writes it to
DIR/<time stamp>/heads_table.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.store import ExtractorInfo, FeatureStore  # noqa: E402
from features.tasks import AU, EXPR, VA  # noqa: E402


def _labels(root: Path, task, split: str, video: str, rows) -> None:
    d = root / task.folders[0] / {"train": "Train_Set", "val": "Validation_Set"}[split]
    d.mkdir(parents=True, exist_ok=True)
    lines = [task.header] + [",".join(str(v) for v in np.atleast_1d(r)) for r in rows]
    (d / f"{video}.txt").write_text("\n".join(lines) + "\n")


def write_world(root: Path, X, video, frame, labels: dict, blocks: dict[str, slice], n_train: int):
    """A cache with one extractor per column block and Aff-Wild2-style label files (videos < n_train: train)."""
    cache, lab = root / "features.h5", root / "labels"
    names = [f"v{i:04d}" for i in range(int(video.max()) + 1)]
    with FeatureStore(cache, "a") as s:
        for ext, cols in blocks.items():
            w = s.writer(ExtractorInfo(ext, "0" * 64, 224, {}, {"embedding": cols.stop - cols.start}))
            for i, name in enumerate(names):
                r = video == i
                w.write_video(name, frame=frame[r].astype(np.int64), face=np.ones(r.sum(), bool),
                              embedding=np.asarray(X[r][:, cols], np.float32))
    for task, y in labels.items():
        for i, name in enumerate(names):
            _labels(lab, task, "train" if i < n_train else "val", name, y[video == i])
    return cache, lab


def run_heads(cache, labels, task: str, plan: list[tuple[str, str, str]], runs: Path, epochs: int | None,
              window: int) -> list[dict]:
    """One run per (label, head kind, feature set); rows of the table."""
    from classify.run import run
    rows = []
    for label, kind, fs in plan:
        t = time.perf_counter()
        opts = dict(epochs=epochs if kind != "mlp" else None, window=window, seed=0)
        d = run(task, cache, labels, [kind], [fs], name=f"{label}".replace(" ", "_").replace("+", "_"),
                runs_dir=runs, opts=opts)
        m = json.loads((d / "metrics.json").read_text())
        r = m["heads"][0]
        rows.append(dict(task=task, head=label, features=fs, frames=r["metric_raw"], k=r["k"],
                         smoothed=r["metric_smoothed"], seconds=round(time.perf_counter() - t, 1)))
        print(f"  {task} {label:<28} {fs:<28} {r['metric_raw']:.4f} -> {r['metric_smoothed']:.4f} (k={r['k']}) "
              f"[{rows[-1]['seconds']} s]", flush=True)
    return rows


PLAN = [("MLP (reference)", "mlp", "a/embedding"),
        ("MLP, a+b concatenated", "mlp", "a/embedding+b/embedding"),
        ("fusion MLP a+b", "fusion_mlp", "a/embedding+b/embedding"),
        ("temporal", "temporal", "a/embedding"),
        ("temporal, fusion a+b", "temporal", "a/embedding+b/embedding")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/heads_table")
    ap.add_argument("--frames", type=int, default=24000, help="frames of the feature-level set")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the torch heads")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--sets", default="features,motion", help="comma-separated: features, motion, rendered "
                                                              "(rendered runs the extraction first)")
    a = ap.parse_args(argv)
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out / stamp
    out.mkdir(parents=True)
    rows = []

    sets = a.sets.split(",")
    from features.synthetic import make_feature_data
    if "features" in sets:
        d = make_feature_data(a.frames, 64, 40, seed=0, noise=1.0)
        cache, lab = write_world(out / "features", d.X, d.video, d.frame,
                                 {VA: d.y_va, EXPR: d.y_expr, AU: d.y_au}, {"a": slice(0, 40), "b": slice(40, 64)},
                                 n_train=28)
        print("features set:", flush=True)
        for task in ("va", "expr", "au"):
            for r in run_heads(cache, lab, task, PLAN, out / "features" / "runs", a.epochs, a.window):
                rows.append(dict(set="features", **r))

    if "motion" in sets:
        from tests.synthetic_motion import make_motion_data
        m = make_motion_data(40, 300, n_features=8, seed=0, drop=0.05)
        cache, lab = write_world(out / "motion", m.X, m.video, m.frame, {EXPR: m.y}, {"a": slice(0, 8)},
                                 n_train=28)
        print("motion set:", flush=True)
        plan = [p for p in PLAN if "+" not in p[2]] + [("fusion MLP a", "fusion_mlp", "a/embedding")]
        for r in run_heads(cache, lab, "expr", plan, out / "motion" / "runs", a.epochs, a.window):
            rows.append(dict(set="motion", **r))

    if "rendered" in sets:
        from features.synthetic import make_affwild
        data, cache = out / "rendered", out / "rendered" / "cache.h5"
        make_affwild(data, n_train=6, n_val=3, n_frames=300, size=112, seed=0)
        subprocess.run([sys.executable, "-m", "extract", "run", "--data", str(data), "--out", str(cache),
                        "--extractors", "fer", "--batch", "64"], check=True, cwd=ROOT)
        store = FeatureStore(cache)
        ext = store.extractors[0]
        plan = [("MLP (reference)", "mlp", f"{ext}/embedding"), ("fusion MLP", "fusion_mlp", f"{ext}/embedding"),
                ("temporal", "temporal", f"{ext}/embedding")]
        print("rendered set:", flush=True)
        for task in ("va", "expr", "au"):
            for r in run_heads(cache, data, task, plan, data / "runs", a.epochs, a.window):
                rows.append(dict(set="rendered", **r))

    md = ("| set | task | head | features | metric (frames) | k | metric (smoothed) | s |\n"
          "|---|---|---|---|---|---|---|---|\n")
    md += "".join(f"| {r['set']} | {r['task']} | {r['head']} | {r['features']} | {r['frames']:.4f} | {r['k']} | "
                  f"{r['smoothed']:.4f} | {r['seconds']} |\n" for r in rows)
    (out / "heads_table.md").write_text(md)
    (out / "heads_table.json").write_text(json.dumps(rows, indent=1))
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
