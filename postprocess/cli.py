"""Command line: `python -m postprocess sweep|submit|validate` (see `python -m postprocess -h`). Argument handling
only: the sweep's tuning is postprocess.tuning, postprocess.json is postprocess.config, the run folder
features.runs. A command's result (the sweep's report, the submission's check) is its output on stdout; notes
and progress go to stderr."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from features.cliargs import count_or_all, int_values, integer
from features.errors import InputError
from features.outputs import Outputs, check_folder, check_output
from features.runs import scores_file
from features.tasks import get_task

from .config import CONFIG, check_run_task, config_choice, config_text, read_config
from .plots import plot_sweep, timeline_files, write_timelines
from .scores import load_scores
from .segments import video_segments
from .submission import check_sample_frames, read_sample_list, validate_submission, write_submission
from .timeline import extend_timeline, smoothed_scores
from .tuning import SweepOptions, tune_split


def parse_k(spec: str) -> range | list[int]:
    """'a:b' (inclusive) or 'a:b:s' -> a lazy range; 'a,b,c' or 'a' -> sorted distinct non-negative ints. Each
    value is at most INT32_MAX (no video is longer); the sweep clips a range to the longest video
    (`postprocess.sweep.clip_ks`), so a huge end costs nothing."""
    return int_values(spec, "--k")


def cmd_sweep(a) -> int:
    run = Path(a.run)
    ks = parse_k(a.k)
    timelines = count_or_all(a.timelines, "--timelines")
    ss = load_scores(scores_file(run), a.split)
    task = get_task(ss.task)
    if ss.y is None:
        raise InputError(f"split {a.split!r} has no labels to sweep against", run / "scores.h5")
    check_run_task(run, task.name)
    # every output checked before anything is computed or written; a sweep replaces its own outputs (so it can
    # be run again) but never writes through a link
    seg = video_segments(ss.video)
    shown = range(len(seg) if timelines is None else min(timelines, len(seg)))
    tl_paths = timeline_files(check_folder(run / f"timelines_{task.name}"), [seg.names[i] for i in shown])
    png = run / f"sweep_{task.name}.png"
    outs = Outputs([png, *tl_paths, run / CONFIG], force=True)
    res = tune_split(ss, ks, SweepOptions(a.split, a.stat, a.thresholds, a.per_output, a.cv),
                     str(run / "scores.h5"))
    print("\n".join(res.report))
    with outs:
        outs.write(png, lambda f: plot_sweep(res.table, task, f, res.k))
        write_timelines(outs, tl_paths, shown, seg, task, ss.frame, res.filled, res.smoothed, ss.y,
                        title=lambda v: f"{v}: raw vs k = {res.k}", progress=True)
        outs.write(run / CONFIG, config_text(res.config))
    left = len(seg) - len(tl_paths)
    tl = (f"{len(tl_paths)} timelines in {tl_paths[0].parent}" + (f" ({left} more videos: --timelines all)"
                                                                   if left else "")) if tl_paths else ""
    print(f"\nwrote {png}, {run / CONFIG}" + (f", {tl}" if tl else ""))
    return 0


def cmd_submit(a) -> int:
    run = Path(a.run)
    cfg, cfg_path = read_config(run)
    ss = load_scores(scores_file(run), a.split)
    task = get_task(ss.task)
    if task.name != cfg.get("task"):
        raise InputError(f"{CONFIG} is for task {cfg.get('task')!r} but split {a.split} holds {task.name}", run)
    k, thr, stat = config_choice(cfg, task, cfg_path)
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
    from features.cli import add_verbose
    for p in (s, m, v):
        add_verbose(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    from features.cli import run_main
    return run_main(_dispatch, argv)


def _dispatch(argv: list[str]) -> int:
    from features.cli import setup_console
    a = build_parser().parse_args(argv)
    setup_console(a.verbose)
    return a.func(a)
