"""Command line: `python -m postprocess sweep|submit|validate` (see `python -m postprocess -h`)."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.cliargs import count_or_all, int_values, integer
from features.errors import InputError
from features.outputs import Outputs, check_folder, check_output, data_names
from features.paths import inside
from features.tasks import get_task

from .plots import plot_sweep, plot_timeline
from .scores import load_scores
from .segments import video_segments
from .selection import cross_validated_selection
from .smoothing import check_k
from .stats import valid_rows
from .submission import check_sample_frames, read_sample_list, validate_submission, write_submission
from .sweep import best_k, clip_ks, longest_video, per_output_k, sweep_k, tune_au_k_thresholds, tune_expr_class_k
from .thresholds import compare_thresholds, tune_thresholds
from .timeline import extend_timeline, filled_scores, smoothed_scores

CONFIG = "postprocess.json"


def parse_k(spec: str) -> range | list[int]:
    """'a:b' (inclusive) or 'a:b:s' -> a lazy range; 'a,b,c' or 'a' -> sorted distinct non-negative ints. Each
    value is at most INT32_MAX (no video is longer); the sweep clips a range to the longest video
    (`postprocess.sweep.clip_ks`), so a huge end costs nothing."""
    return int_values(spec, "--k")


def _scores_path(run: Path) -> Path:
    p = inside(run, run / "scores.h5", file=True)      # a run folder is untrusted: its files stay inside it
    if not p.exists():
        raise InputError("no scores.h5 in the run directory (run classify first)", run)
    return p


def _check_run_task(run: Path, task: str) -> None:
    """Refuse scores of another task than the run's (metrics.json's task, else the existing postprocess.json's):
    the sweep would replace the run's postprocess.json with one for the other task."""
    for name in ("metrics.json", CONFIG):
        p = inside(run, run / name, file=True)
        if not p.is_file():
            continue
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            what = "remove it to sweep again" if name == CONFIG else "not a classify run's metrics"
            raise InputError(f"not valid JSON ({e}); {what}", p) from None
        if isinstance(d, dict) and d.get("task") is not None:
            if d["task"] != task:
                raise InputError(f"scores.h5 holds {task!r} scores but the run is for task {d['task']!r} ({name}); "
                                 f"nothing written (sweep the scores of the run's own task)", run / "scores.h5")
            return


def _fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def cmd_sweep(a) -> int:
    run = Path(a.run)
    ks = parse_k(a.k)
    timelines = count_or_all(a.timelines, "--timelines")
    ss = load_scores(_scores_path(run), a.split)
    task = get_task(ss.task)
    if ss.y is None:
        raise InputError(f"split {a.split!r} has no labels to sweep against", run / "scores.h5")
    _check_run_task(run, task.name)
    # every output checked before anything is computed or written; a sweep replaces its own outputs (so it can
    # be run again) but never writes through a link
    seg = video_segments(ss.video)
    tl_dir = check_folder(run / f"timelines_{task.name}")
    tl_paths = [tl_dir / n for n in data_names(seg.names[: len(seg) if timelines is None else timelines], ".png")]
    png = run / f"sweep_{task.name}.png"
    outs = Outputs([png, *tl_paths, run / CONFIG], force=True)
    scores = filled_scores(ss)
    valid = valid_rows(task, ss.y)
    asked, ks = ks, clip_ks(ks, longest_video(ss.video))
    if len(ks) < len(asked):
        print(f"--k: every window wider than the longest video ({longest_video(ss.video)} frames) smooths alike, "
              f"so the sweep stops at k = {ks[-1]} ({len(ks)} of the {len(asked)} values asked for)")
    table = sweep_k(task, ss.y, scores, ss.video, ks, stat=a.stat, progress=True)
    k = best_k(table)
    print(f"{task.name}: {task.metric_name} by k on split {a.split} ({len(np.unique(ss.video))} videos, "
          f"{len(ss)} frames smoothed, {int(valid.sum())} labelled frames scored, "
          f"{int((valid & ~ss.face).sum())} of them without a face and filled from neighbours)")
    print(_fmt(table[["k", task.metric_name] + [c for c in table.columns if c.startswith("ccc_")]]))
    m0 = float(table[task.metric_name].iloc[0])
    mk = float(table.loc[table.k == k, task.metric_name].iloc[0])
    print(f"best shared k = {k}: {task.metric_name} {mk:.4f} (first k in the sweep, {ks[0]}: {m0:.4f})")
    cfg = {"task": task.name, "split": a.split, "stat": a.stat, "k": k, "metric": mk,
           "metric_name": task.metric_name, "ks": [ks[0], ks[-1], len(ks)], "use_per_output": a.per_output,
           "source": str(run / "scores.h5"), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    smooth_k = smoothed_scores(ss, k, a.stat, filled=scores)
    if task.kind == "multilabel":
        comp = compare_thresholds(ss.y[valid], smooth_k[valid], task.labels)
        print(f"\nper-AU thresholds at k = {k} (in-sample):")
        print(comp.to_string(float_format=lambda v: f"{v:.3f}"))
        print("mean F1: fixed 0.5 {:.4f}, grid 0.1..0.9 {:.4f}, exact {:.4f}".format(
            comp.f1_fixed.mean(), comp.f1_grid.mean(), comp.f1_exact.mean()))
        none = [n for n, has in zip(task.labels, (ss.y[valid] == 1).any(axis=0)) if not has]
        if none:
            print(f"no positive frame on split {a.split} for {', '.join(none)}: F1 is 0 at any threshold, so "
                  f"{'its' if len(none) == 1 else 'their'} threshold stays 0.5 under every method (and per-AU "
                  f"k = the shared k)")
            cfg["no_positives"] = none
        thr = tune_thresholds(ss.y[valid], smooth_k[valid], a.thresholds)
        cfg["thresholds"] = thr.thresholds.tolist()
        cfg["thresholds_method"] = a.thresholds
        cfg["metric_tuned"] = thr.mean_f1
        tun = tune_au_k_thresholds(ss.y, scores, ss.video, ks, stat=a.stat, progress=True)
        print(f"\nper-AU (k, threshold), grid 1/100 (in-sample): mean F1 {tun.f1.mean():.4f} vs one shared "
              f"k = {tun.shared_k}: {tun.shared_f1.mean():.4f} (gain {tun.gain:+.4f})")
        print(tun.table().to_string(float_format=lambda v: f"{v:.3f}"))
        cfg["per_output"] = {"k": tun.k.tolist(), "thresholds": tun.thresholds.tolist(),
                             "metric": float(tun.f1.mean()), "shared_metric": float(tun.shared_f1.mean()),
                             "gain": tun.gain}
    elif task.kind == "regression":
        po = per_output_k(task, table)
        print(f"\nper-dimension k: {dict(zip(task.labels, po['k']))}: {po['metric']:.4f} "
              f"(gain {po['gain']:+.4f} over shared k)")
        cfg["per_output"] = po
    else:
        tun = tune_expr_class_k(ss.y, scores, ss.video, ks, stat=a.stat, shared_k=k, progress=True)
        print(f"\nper-class k (coordinate ascent over {len(tun.candidates)} candidate k, in-sample): "
              f"{dict(zip(task.labels, tun.k))}: {tun.metric:.4f} vs shared k = {tun.shared_k}: "
              f"{tun.shared_metric:.4f} (gain {tun.gain:+.4f})")
        cfg["per_output"] = tun.to_dict()
    if a.cv >= 2:
        n_vid = len(np.unique(ss.video))
        if n_vid < a.cv:
            print(f"\n(cross-validation skipped: {n_vid} videos for {a.cv} folds)")
        else:
            cv = {}
            print(f"\nvideo-level {a.cv}-fold selection inside {a.split} (choose on train folds, score the "
                  f"held-out fold, pooled):")
            for po in ([False, True] if task.kind != "multiclass" else [False]):
                sel = cross_validated_selection(task, ss.y, scores, ss.video, ks, a.cv, per_output=po,
                                                stat=a.stat, progress=True)
                name = "per-output" if po else "shared k"
                print(f"  {name:10s}: no smoothing {sel.baseline:.4f}, in-sample {sel.in_sample:.4f}, "
                      f"cross-validated {sel.cv:.4f} (optimism {sel.optimism:+.4f}), fold k {sel.fold_k}")
                cv["per_output" if po else "shared"] = sel.to_dict()
            cfg["cv"] = cv
    with outs:
        outs.write(png, lambda f: plot_sweep(table, task, f, k))
        tl = _timelines(outs, tl_paths, seg, task, ss, scores, smooth_k, k)
        outs.write(run / CONFIG, json.dumps(cfg, indent=2) + "\n")
    print(f"\nwrote {png}, {run / CONFIG}" + (f", {tl}" if tl else ""))
    return 0


def _timelines(outs: Outputs, paths: list[Path], seg, task, ss, scores: np.ndarray, smoothed: np.ndarray,
               k: int) -> str:
    """Per-video timeline PNGs (raw vs smoothed vs labels) for the first len(paths) videos of the split."""
    if not paths:
        return ""
    for p, v, a, b in tqdm(list(zip(paths, seg.names, seg.starts, seg.ends)), desc="timelines", leave=False):
        outs.write(p, lambda f: plot_timeline(task, ss.frame[a:b], scores[a:b], smoothed[a:b], f, ss.y[a:b],
                                              title=f"{v}: raw vs k = {k}"))
    left = len(seg) - len(paths)
    return f"{len(paths)} timelines in {paths[0].parent}" + (f" ({left} more videos: --timelines all)" if left else "")


def _config_choice(cfg, task, path: Path) -> tuple:
    """(k, thresholds, stat) that `submit` applies, checked: one line naming postprocess.json otherwise."""
    if "k" not in cfg:
        raise InputError("no smoothing k in it; rerun `python -m postprocess sweep`", path)
    src = cfg
    if cfg.get("use_per_output") and "per_output" in cfg:
        src = cfg["per_output"] if isinstance(cfg["per_output"], dict) else {}
    try:
        ks = [check_k(x, "k") for x in np.atleast_1d(np.asarray(src.get("k", cfg["k"]), dtype=object))]
    except InputError as e:
        raise InputError(str(e), path) from None
    if len(ks) not in (1, task.n_outputs):
        raise InputError(f"{len(ks)} values of k for {task.n_outputs} {task.name} outputs", path)
    k = ks[0] if np.ndim(src.get("k", cfg["k"])) == 0 else ks
    thr = src.get("thresholds", cfg.get("thresholds"))
    if thr is not None:
        try:
            t = np.asarray(thr, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"thresholds must be numbers, got {thr!r}", path) from None
        if len(t) not in (1, task.n_outputs) or not np.all((t >= 0) & (t <= 1)):
            raise InputError(f"thresholds must be 1 or {task.n_outputs} values in [0, 1]", path)
    stat = cfg.get("stat", "mean")
    if stat not in ("mean", "median"):
        raise InputError(f"stat must be mean or median, got {stat!r}", path)
    return k, thr, stat


def cmd_submit(a) -> int:
    run = Path(a.run)
    cfg_path = inside(run, run / CONFIG, file=True)
    if not cfg_path.exists():
        raise InputError(f"no {CONFIG}: run `python -m postprocess sweep --run {run}` first", run)
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise InputError(f"not valid JSON ({e})", cfg_path) from None
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object as `postprocess sweep` writes it", cfg_path)
    ss = load_scores(_scores_path(run), a.split)
    task = get_task(ss.task)
    if task.name != cfg.get("task"):
        raise InputError(f"{CONFIG} is for task {cfg.get('task')!r} but split {a.split} holds {task.name}", run)
    k, thr, stat = _config_choice(cfg, task, cfg_path)
    samples = read_sample_list(a.samples)
    check_sample_frames(samples, ss)
    check_output(a.out, a.force)
    # frames the list names beyond a video's last crop join the timeline before smoothing, as labelled frames
    # beyond the last crop do on validation
    ss = extend_timeline(ss, samples.video, samples.frame)
    smoothed = smoothed_scores(ss, k, stat)
    n = write_submission(a.out, task, samples, ss.video, ss.frame, smoothed, thresholds=thr,
                         overwrite=a.force)
    rep = validate_submission(a.out, samples, task)
    print(f"wrote {a.out}: {n} rows (k = {k})")
    return _verdict(rep)


def _verdict(rep) -> int:
    """The report on stdout; for a broken file also one error line (its first problem) on stderr, exit 1."""
    print(rep)
    if rep.ok:
        return 0
    line, msg = rep.problems[0]
    more = f" ({rep.n_problems} problems in all, listed above)" if rep.n_problems > 1 else ""
    print(f"error: {rep.path}:{line}: {msg}{more}", file=sys.stderr)
    return 1


def cmd_validate(a) -> int:
    return _verdict(validate_submission(a.file, a.samples, a.task))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m postprocess",
                                 description="Smoothing sweep, thresholds and challenge files for a run.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep", help="metric by smoothing k on the run's validation scores")
    s.add_argument("--run", required=True, help="run directory holding scores.h5")
    s.add_argument("--k", default="0:200", help="a:b (inclusive), a:b:step or a,b,c (default 0:200)")
    s.add_argument("--split", default="val")
    s.add_argument("--stat", choices=("mean", "median"), default="mean")
    s.add_argument("--thresholds", choices=("exact", "grid", "fixed"), default="exact",
                   help="AU thresholds stored with the shared k (default exact)")
    s.add_argument("--per-output", action="store_true",
                   help="store per-output k (VA per dimension, AU per unit with its threshold, EXPR per class) "
                        "for submit")
    s.add_argument("--cv", type=integer(0), default=5, help="video-level folds for the honest estimate (0: skip)")
    s.add_argument("--timelines", default="12", help="timeline plots for the first N videos, or 'all' (default 12)")
    s.set_defaults(func=cmd_sweep)
    m = sub.add_parser("submit", help="challenge file from the run's test scores and postprocess.json")
    m.add_argument("--run", required=True)
    m.add_argument("--samples", required=True, help="the organisers' sample list")
    m.add_argument("--out", required=True)
    m.add_argument("--split", default="test")
    m.add_argument("--force", action="store_true", help="replace --out if it exists")
    m.set_defaults(func=cmd_submit)
    v = sub.add_parser("validate", help="check a challenge file against the sample list")
    v.add_argument("file")
    v.add_argument("--samples", required=True)
    v.add_argument("--task", required=True, choices=("va", "expr", "au"))
    v.set_defaults(func=cmd_validate)
    return ap


def main(argv: list[str] | None = None) -> int:
    from features.cli import run_main, setup_logging
    setup_logging()
    return run_main(_dispatch, argv)


def _dispatch(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    return a.func(a)
