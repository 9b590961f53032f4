"""`python -m classify [train] --task expr|va|au ...`: train heads on cached features (classify/run.py);
`python -m classify predict --run RUN --cache CACHE --out preds.csv`: apply a run (classify/predict.py).

`train` is the default sub-command, so `python -m classify --task ...` keeps working. Flags shared with the other
commands: `--cache` (the HDF5 feature cache) and `--data` (the data root; here the annotation root, which
`--labels` also names). Argument handling only; a command's result line is its output on stdout, progress and
notes are log lines on stderr."""
from __future__ import annotations

import argparse
import sys

from features.cli import add_verbose, run_main, setup_console
from features.cliargs import INT32_MAX, int_values, integer, number

from .lama import LAMA_MAX_ROWS


def parse_k(spec: str):
    """'auto' -> sweep the default range; 'N' -> fixed k; 'a:b[:s]' (a lazy range, clipped to the longest
    video before it is listed) or 'a,b,c' -> sweep those values."""
    spec = spec.strip()
    if spec == "auto":
        return None
    ks = int_values(spec, "--k")
    return ks[0] if ":" not in spec and "," not in spec else ks


def blend_weights(text: str) -> dict[str, float]:
    """argparse type: 'a=0.6,b=0.4' -> {'a': 0.6, 'b': 0.4} (finite numbers >= 0; the sum is checked with the
    members, classify.blend.check_weights)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise argparse.ArgumentTypeError(f"expected MEMBER=WEIGHT pairs separated by commas, got {part!r}")
        try:
            w = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {name.strip()!r} is not a number: {value!r}") from None
        if not (w >= 0 and w < float("inf")):
            raise argparse.ArgumentTypeError(f"weight of {name.strip()!r} must be a finite number >= 0, got {value}")
        if name.strip() in out:
            raise argparse.ArgumentTypeError(f"member {name.strip()!r} is named twice")
        out[name.strip()] = w
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m classify [train]",
                                 description="Train light heads on cached features; blend, smooth, report. "
                                             "(`python -m classify predict -h`: apply a run to new videos.)")
    ap.add_argument("--task", required=True, choices=["va", "expr", "au"])
    ap.add_argument("--cache", default="cache/features.h5",
                    help="feature cache (HDF5), default %(default)s; when the file is absent its shard files "
                         "<stem>.shard-i-of-n.h5 (extract run --shard) are read as one cache; several files or "
                         "globs may be given separated by commas")
    ap.add_argument("--data", "--labels", dest="labels", default="data/synthetic",
                    help="data root: the Aff-Wild2 annotation root, or a folder of MTL split files (e.g. "
                         "<root>/MTL_Challenge), default %(default)s (--labels is the same flag)")
    ap.add_argument("--heads", default="mlp,lama,blend",
                    help="comma-separated: mlp, lama, fusion_mlp (torch MLP on affine-fused extractors), temporal "
                         "(Transformer/GRU over windows of a video), bagging (EXPR: bagged fusion MLPs + meta-vote), "
                         "polarity (VA: extreme-region gate + ridge), logits (EXPR rule), va_only (VA rule), blend")
    ap.add_argument("--features", default="",
                    help="comma-separated feature sets, e.g. enet_b0_8_va_mtl/embedding (for mlp and lama) or "
                         "lama=enet_b0_8_va_mtl/logits+va (one head); default: the reference choices")
    ap.add_argument("--name", default=None, help="run name (default: a time stamp); runs are never overwritten")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--train-val", action="store_true", help="fit on train and validation (each row once)")
    ap.add_argument("--test", default=None, help="sample list or file of video names to score as split 'test'")
    ap.add_argument("--k", default="auto", help="smoothing half-width: auto (sweep 0..200 on validation), N, "
                                                "or values to sweep (0:100, 0:100:5, 0,10,50)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--lama-timeout", type=int, default=60,
                    help="seconds for a LightAutoML fit, start-up included; its worker is stopped at this plus "
                         "max(10 s, 25%%) and the head left out")
    ap.add_argument("--lama-max-rows", type=int, default=LAMA_MAX_ROWS,
                    help="LightAutoML trains on a class-stratified sample of this many rows (0: all rows)")
    ap.add_argument("--cpus", type=int, default=None,
                    help="LightAutoML cpu_limit (default: all cores) and the torch heads' threads (default: 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kfold", type=int, default=None,
                    help="video-level k-fold on train + val (e.g. 5): per-fold metrics, fold models averaged")
    ap.add_argument("--blend-weights", type=blend_weights, default=None, metavar="MEMBER=W,...",
                    help="fixed blend weights instead of a search on validation, e.g. the reference's "
                         "mlp=0.6,logits-finetuned.logits=0.3,logits-enet_b0_8_va_mtl.logits=0.1 (members as the "
                         "run names them: the head, or head-<feature set with / as .> when a head has several "
                         "sets); unnamed members get 0; the weights must sum to 1")
    g = ap.add_argument_group("fusion_mlp, temporal and bagging heads")
    g.add_argument("--loss", default=None, help="training loss: ce, ce_dice (EXPR); bce, focal, asl (AU); ccc, "
                                                "mse_ccc (VA); default: the reference's (ce / bce / ccc)")
    g.add_argument("--sampling", default=None, choices=["none", "mlros", "balanced"],
                   help="AU training rows: ML-ROS oversampling of rare AUs or balanced batches (fusion_mlp)")
    g.add_argument("--width", type=int, default=None, help="common width of each extractor's affine map (64)")
    g.add_argument("--window", type=int, default=None, help="temporal: frames per window (64)")
    g.add_argument("--stride", type=int, default=None,
                   help="temporal: step of the prediction windows, whose scores are averaged (window/2; training "
                        "windows do not overlap)")
    g.add_argument("--layers", type=int, default=None, help="temporal: encoder layers (2)")
    g.add_argument("--heads-n", type=int, default=None, help="temporal: attention heads (4)")
    g.add_argument("--bags", type=int, default=None, help="bagging: sub-classifiers (5)")
    g.add_argument("--vote", default=None, help="bagging meta-rule: majority (default) or priority:<class>,... "
                                                "(the first class voted by >= 1/3 of the sub-classifiers wins)")
    g.add_argument("--arch", default=None, choices=["transformer", "gru"], help="temporal: encoder (transformer)")
    add_verbose(ap)
    return ap


def train(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    setup_console(a.verbose)
    from .run import RunConfig, train_run
    res = train_run(RunConfig(
        a.task, a.cache, a.labels, [h.strip() for h in a.heads.split(",") if h.strip()],
        [f.strip() for f in a.features.split(",") if f.strip()], a.name, a.runs_dir, a.train_val, parse_k(a.k),
        dict(epochs=a.epochs, hidden=a.hidden, batch=a.batch, lr=a.lr, lama_timeout=a.lama_timeout,
             lama_max_rows=a.lama_max_rows, cpus=a.cpus, seed=a.seed, loss=a.loss, sampling=a.sampling,
             width=a.width, window=a.window, stride=a.stride, layers=a.layers, heads_n=a.heads_n, arch=a.arch,
             kfold=a.kfold, bags=a.bags, vote=a.vote, blend_weights=a.blend_weights),
        test=a.test))
    print(res.summary)
    return 0


def build_predict_parser() -> argparse.ArgumentParser:
    from .predict_faces import MAX_GAP
    ap = argparse.ArgumentParser(
        prog="python -m classify predict",
        description="Apply a run's final head (blends included) with its own post-processing (gap filling, its k "
                    "or per-output ks, AU thresholds) to any cache made by the same extractors, or map a "
                    "pre-trained model's classes to Aff-Wild2's (--pretrained). Writes one row per frame (CSV or "
                    "Parquet) and one timeline PNG per video beside it.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (runs/<task>/<name>, or runs/<task>/latest)")
    src.add_argument("--pretrained", metavar="EXTRACTOR",
                     help="no run: this extractor's own class logits mapped to Aff-Wild2's 8 classes (EXPR)")
    ap.add_argument("--cache", default="cache/features.h5", help="feature cache (HDF5), default %(default)s")
    ap.add_argument("--out", help="the per-frame table: .csv or .parquet (required)")
    ap.add_argument("--videos", default="", help="comma-separated video names (default: every cached video)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate for the time column (seconds)")
    ap.add_argument("--source", default=None,
                    help="the video file or folder the cache was extracted from: frame rates for the time column")
    ap.add_argument("--k", type=integer(0, INT32_MAX), default=None,
                    help="smoothing half-width in frames, instead of the run's (--pretrained: half a second); a "
                         "window wider than a video smooths it whole")
    ap.add_argument("--max-gap", type=number(0.0, MAX_GAP), default=None, metavar="SECONDS",
                    help="frames farther than this from every face frame of their video are left empty "
                         "(far_from_face) instead of filled from a face seconds away (default 1 s; counted in "
                         "frames where the frame rate is unknown, default 24); postprocess submit fills every "
                         "frame")
    ap.add_argument("--timelines", default="all", help="timeline PNGs for the first N videos, or all (default)")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="load heads whose files run code when loaded: LightAutoML pickles, Keras Lambda "
                         "layers (only runs you trained yourself)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--print-extractors", action="store_true",
                    help="print the run's extractor names (comma-separated) and exit (for make predict)")
    add_verbose(ap)
    return ap


def predict(argv: list[str]) -> int:
    ap = build_predict_parser()
    a = ap.parse_args(argv)
    setup_console(a.verbose)
    from .predict import predict as apply, run_extractors
    if a.print_extractors:
        print(",".join(run_extractors(a.run)) if a.run else a.pretrained)
        return 0
    if not a.out:
        ap.error("the following arguments are required: --out")
    from features.errors import InputError
    if a.timelines == "all":
        timelines = None
    else:
        try:
            timelines = int(a.timelines)
        except ValueError:
            timelines = -1
        if timelines < 0:
            raise InputError(f"--timelines: a number of videos or 'all', got {a.timelines!r}")
    res = apply(a.cache, a.out, run=a.run, pretrained=a.pretrained,
                videos=[v.strip() for v in a.videos.split(",") if v.strip()], fps=a.fps, source=a.source,
                k=a.k, timelines=timelines, allow_pickle=a.allow_pickle, force=a.force, max_gap=a.max_gap)
    print(f"predict: {res.line()}")
    return 0


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "predict":
        return predict(argv[1:])
    return train(argv[1:] if argv and argv[0] == "train" else argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
