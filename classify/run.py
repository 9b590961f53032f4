"""One classification run: load features and labels, fit heads, blend, smooth, write everything.

Outputs under `<runs-dir>/<task>/<name>/` (an existing run is never overwritten):
    scores.h5       per-frame scores (final + per head) of every frame of the validation (and test) videos,
                    labels where given, see postprocess.scores
    metrics.json    per head: metric at frame level and after smoothing; blend weights; chosen k; thresholds;
                    labelled frames without features; the provenance of every extractor used (`predict`)
    results.md/csv  the paper-style table (method, feature set, ensemble, metrics raw and smoothed), each number
                    labelled for what it is (classify.report): in-sample where it was tuned on the validation
                    videos it is scored on, beside its video-level cross-validated estimate (classify.crossval)
                    or the reason there is none; k-fold heads out-of-fold, per fold, and mean ± std of the folds
    heads/<head>/   saved heads (head.json records task and feature set)
    lama.log        LightAutoML's own log
and `<runs-dir>/<task>/latest` is pointed at the new run (a symlink) once everything is written. Options are
checked before the folder is made; a run that fails after that is renamed `<name>.failed` (its error in
FAILED.txt, lama.log kept) and `latest` stays where it was (the folder's life: features.runs).

`train_run(RunConfig)` runs the jobs in order, each its own function: `plan_run` (options, members, folder
name), `load_data` (labelled rows; classify.splits), `fit_member` per head, `fit_blend`, `save_fitted`,
`score_test`, `write_reports`; a `Fitting` carries what the heads gave on the validation videos between them.
Progress is logged (`logging`); the summary line is the result (`Trained.summary`, printed by the command).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from features import runs
from features.errors import InputError, naming
from features.outputs import write_output
from features.store import FeatureStore, cache_files
from features.tasks import Task, get_task
from postprocess.scores import ScoreSet, save_scores
from postprocess.stats import valid_rows
from postprocess.sweep import best_k, clip_ks, longest_video, sweep_k
from postprocess.thresholds import tune_thresholds
from postprocess.timeline import filled_scores, smoothed_scores

from . import crossval, featuresets, kfold, report
from .base import Head
from .factory import list_heads, make_head
from .lama import LamaTimeout
from .options import build_head, check_data, check_heads, check_options
from .provenance import run_provenance
from .registry import entry
from .splits import Frames, Split, load_frames, load_split, merge_splits, read_test_list

log = logging.getLogger(__name__)


DEFAULT_KS = range(0, 201, 2)


def plan_members(task: Task, store: FeatureStore, heads: list[str], features: list[str]) -> dict[str, tuple[str, str]]:
    """Members to fit: name -> (head kind, feature set). `features` entries are `set` (for every learned head,
    mlp and lama) or `kind=set` (that head only); several sets for one kind give one member each (named
    `kind-<set>`); a kind with no entry gets the reference choice (featuresets.default_sets)."""
    kinds = [h for h in heads if h != "blend"]
    learned = list_heads("learned")
    for k in kinds:
        if k not in list_heads(("learned", "rule")):
            raise InputError(f"unknown head {k!r}; choose from {', '.join(list_heads(('learned', 'rule', 'blend')))}")
        e = entry(k)
        if not e.supports(task.name):
            raise InputError(f"the {e.title} is for --task {' or '.join(e.tasks)}")
    if not kinds:
        raise InputError("no heads to fit (blend needs members, e.g. --heads mlp,lama,blend)")
    explicit: dict[str, list[str]] = {}
    bare: list[str] = []
    for item in features:
        if "=" in item:
            k, v = (x.strip() for x in item.split("=", 1))
            if k not in kinds:
                raise InputError(f"--features {item!r}: head {k!r} is not among --heads {','.join(heads)}")
            explicit.setdefault(k, []).append(v)
        else:
            bare.append(item)
    for fs in bare + [v for vs in explicit.values() for v in vs]:
        featuresets.resolve(store, fs)                      # unknown names fail here, before any work
    if bare and not any(k in learned for k in kinds):
        raise InputError(f"--features {', '.join(bare)}: no learned head (mlp, lama) to use them; name the head "
                         f"as in logits=<set>")
    defaults = featuresets.default_sets(store, task.name)
    members: dict[str, tuple[str, str]] = {}
    for k in kinds:
        # a learned kind without a reference choice of its own gets the mlp's
        sets = explicit.get(k) or (bare if k in learned else []) or [defaults.get(k, defaults["mlp"] if k in
                                                                              learned else "")]
        sets = list(dict.fromkeys(s for s in sets if s))
        if not sets:
            raise InputError(f"head {k!r}: the cache offers no feature set for it; pass {k}=<set> "
                             f"(available: {', '.join(featuresets.available(store))})", store.paths[0])
        for fs in sets:
            featuresets.resolve(store, fs)
            members[k if len(sets) == 1 else f"{k}-{fs.replace('/', '.')}"] = (k, fs)
    return members


def smoothing(task: Task, ss: ScoreSet, ks) -> dict:
    """k on validation (the best of a sweep, or the one given) and, for AU, per-AU thresholds tuned on the
    smoothed scores. The split is on the full frame timeline and goes the way `postprocess sweep` and `submit`
    take it (postprocess.timeline: frames without a face filled from neighbours, box filter over frames, metric
    on the labelled frames only), so a k here is the same window there. metric_raw is the metric at k = 0
    (AU at threshold 0.5)."""
    fixed = isinstance(ks, (int, np.integer))
    filled = filled_scores(ss)
    table = sweep_k(task, ss.y, filled, ss.video,
                    [0, int(ks)] if fixed else sorted({0, *clip_ks(ks, longest_video(ss.video))}))
    k = int(ks) if fixed else best_k(table, task.metric_name)
    at = lambda kk: float(table.loc[table["k"] == kk, task.metric_name].iloc[0])
    out = {"k": k, "metric_raw": at(0), "metric_smoothed": at(k)}
    if task.kind == "multilabel":
        valid = valid_rows(task, ss.y)
        thr = tune_thresholds(ss.y[valid], smoothed_scores(ss, k, filled=filled)[valid])
        out["thresholds"] = [round(float(t), 4) for t in thr.thresholds]
        out["metric_smoothed_thresholds"] = thr.mean_f1
    return out


# -- one run, job by job ----------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """What one run is given: the options of `classify train` (defaults as there)."""
    task: Task | str
    cache: str | Path
    labels: str | Path
    heads: Sequence[str]
    features: Sequence[str] | None = None
    name: str | None = None
    runs_dir: str | Path = "runs"
    train_val: bool = False
    ks: int | Sequence[int] | None = None    # None: sweep DEFAULT_KS
    opts: dict | None = None                 # head options (epochs, hidden, ..., kfold), see check_options
    test: str | Path | None = None           # sample list or file of video names to score as split 'test'

    def __post_init__(self) -> None:
        self.task = get_task(self.task)
        self.heads, self.features = list(self.heads), list(self.features or [])
        self.runs_dir = Path(self.runs_dir)
        self.ks = DEFAULT_KS if self.ks is None else self.ks
        self.opts = dict(self.opts or {})

    @property
    def n_folds(self) -> int | None:
        return self.opts.get("kfold")


@dataclass
class Plan:
    """What the options name, checked before any work: the cache, the members to fit, the new run folder."""
    store: FeatureStore
    members: dict[str, tuple[str, str]]      # name -> (head kind, feature set)
    heads: dict[str, Head]                   # name -> the unfitted head, its parameters validated
    used: list[str]                          # the feature sets, each once
    run_dir: Path
    test_videos: list[str] | None


@dataclass
class Data:
    """The labelled rows: train, validation and what the heads are fitted on (train, or train + val)."""
    train: Split
    val: Split
    fit_on: Split
    val_videos: list[str]                    # the labelled validation videos


@dataclass
class Fitting:
    """A run in progress: what every head fitted so far gave on the validation videos."""
    cfg: RunConfig
    plan: Plan
    data: Data
    frames: Frames                           # the validation videos on their full frame timeline
    scores: dict[str, np.ndarray] = field(default_factory=dict)     # per member, on the labelled val rows
    timeline: dict[str, np.ndarray] = field(default_factory=dict)   # per head, on the validation timeline
    heads: dict[str, Head] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)                  # results.csv / metrics.json "heads"
    extra: dict[str, dict] = field(default_factory=dict)            # metrics.json "training"
    cv: dict[str, crossval.CVEstimate] = field(default_factory=dict)  # per row: its video-level CV estimate

    @property
    def n_val_videos(self) -> int:
        return len(self.data.val_videos)


@dataclass
class Trained:
    """A finished run: its folder and the one-line summary of its result."""
    dir: Path
    summary: str


def run(task_name: str, cache: str | Path, labels: str | Path, heads: list[str], features: list[str] | None = None,
        name: str | None = None, runs_dir: str | Path = "runs", train_val: bool = False,
        ks: int | list[int] | range | None = None, opts: dict | None = None,
        test: str | Path | None = None) -> Path:
    """Fit the heads, blend them, choose k (and AU thresholds) on validation and write the run folder; the
    summary is logged. Bad options and inputs are refused before the folder exists; if anything fails once it
    does, the folder is renamed `<name>.failed` (FAILED.txt says why) and `latest` is not moved."""
    res = train_run(RunConfig(task_name, cache, labels, heads, features, name, runs_dir, train_val, ks, opts, test))
    log.info(res.summary)
    return res.dir


def train_run(cfg: RunConfig) -> Trained:
    """The run of `cfg`: plan, load, fit and score each head, blend, save, write the reports, move `latest`."""
    plan = plan_run(cfg)
    t0 = time.perf_counter()
    data = load_data(cfg, plan)
    with runs.creating(plan.run_dir):
        f = Fitting(cfg, plan, data, _val_frames(cfg, plan, data))
        for mname, (kind, fs) in plan.members.items():
            fit_member(f, mname, kind, fs)
        final = fit_blend(f)
        save_fitted(f, final)
        n_test = score_test(f, final)
        summary = write_reports(f, final, n_test, t0)
        with naming(plan.run_dir.parent / runs.LATEST):
            runs.point_latest(plan.run_dir)
    return Trained(plan.run_dir, summary)


def plan_run(cfg: RunConfig) -> Plan:
    """Options, cache, members, run folder name and test list checked; nothing is read or made yet."""
    check_options(cfg.opts)
    store = FeatureStore(cache_files(cfg.cache))    # the file, else its shard files; or a comma list
    members = plan_members(cfg.task, store, cfg.heads, cfg.features)
    check_heads(cfg.task, [k for k, _ in members.values()], cfg.opts)
    used = list(dict.fromkeys(fs for _, fs in members.values()))
    run_dir = runs.new_run_dir(cfg.runs_dir, cfg.task.name, cfg.name)
    # every head built through classify.factory and its parameters validated by the head itself
    heads = {m: build_head(kind, cfg.task, store, fs, cfg.opts, run_dir) for m, (kind, fs) in members.items()}
    test_videos = read_test_list(cfg.test) if cfg.test is not None else None
    return Plan(store, members, heads, used, run_dir, test_videos)


def load_data(cfg: RunConfig, plan: Plan) -> Data:
    """The labelled train and validation rows with their features; what the heads need of them checked."""
    t0 = time.perf_counter()
    tr = load_split(plan.store, cfg.labels, cfg.task, "train", plan.used)
    va = load_split(plan.store, cfg.labels, cfg.task, "val", plan.used)
    for nm, sp in (("train", tr), ("val", va)):
        log.info(f"{cfg.task.name}/{nm}: {len(sp.y)} frames; {sp.n_missing} of {sp.n_labelled} labelled frames "
                 f"have no features{f' {sp.missing_reasons}' if sp.n_missing else ''} (labels: {sp.source})")
    log.info(f"loaded in {time.perf_counter() - t0:.1f} s")
    fit_on = merge_splits(tr, va) if cfg.train_val else tr
    if cfg.n_folds:
        fit_on = merge_splits(tr, va)
        kfold.check_folds(fit_on.video, cfg.n_folds)
    check_data(plan.heads, fit_on.video, fit_on.frame)
    val_videos = list(dict.fromkeys((va.labels["video"] if va.labels is not None else va.video).astype(str)))
    return Data(tr, va, fit_on, val_videos)


def _val_frames(cfg: RunConfig, plan: Plan, data: Data) -> Frames:
    return load_frames(plan.store, cfg.task, data.val_videos, plan.used, data.val.labels, "val")


def fit_member(f: Fitting, mname: str, kind: str, fs: str) -> None:
    """Fit one member, score it on the validation videos (out-of-fold with --kfold) and add its rows; a
    LightAutoML head stopped at its time limit is left out (the log and metrics.json say so)."""
    cfg, data, n_folds = f.cfg, f.data, f.cfg.n_folds
    t = time.perf_counter()
    head = f.plan.heads[mname]
    try:
        head, f.scores[mname] = _fit_head(head, cfg.task, fs, data, n_folds)
    except LamaTimeout as e:
        log.info(f"{mname} left out: {e}")
        f.extra[mname] = {"left_out": str(e)}
        return
    f.heads[mname] = head
    f.timeline[mname] = f.frames.predict(head, fs, f"{cfg.cache}: val", out_of_fold=bool(n_folds))
    sm = smoothing(cfg.task, f.frames.scoreset(f.timeline[mname]), cfg.ks)
    # what was chosen on the validation videos this row is scored on
    tuned = (["epoch"] if getattr(head, "best_epoch", None) is not None and not n_folds else []) + \
        report.tuned_after(cfg.task, cfg.ks)
    scored_on = (f"val ({f.n_val_videos} videos), out-of-fold: each by the fold model that did not see it"
                 if n_folds else f"val ({f.n_val_videos} videos)")
    f.rows.append(dict(method=mname, feature_set=fs, ensemble=f"{n_folds} fold models averaged" if n_folds else "no",
                       **_metrics(cfg.task, sm), **_honest(f, mname, tuned, {mname: f.timeline[mname]}),
                       scored_on=scored_on, seconds=round(time.perf_counter() - t, 1)))
    f.rows.extend(report.fold_rows(mname, fs, head, n_folds))
    sample = _training_notes(f, mname, head)
    log.info(f"{mname} on {fs}: {cfg.task.metric_name} {report.said(cfg.task, f.rows, mname)} "
             f"[{time.perf_counter() - t:.1f} s{sample}]")


def _fit_head(head: Head, task: Task, fs: str, data: Data, n_folds: int | None) -> tuple[Head, np.ndarray]:
    """The fitted head and its scores on the labelled validation rows."""
    fit_on, va = data.fit_on, data.val
    if n_folds:
        # fold models on train + val grouped by video; the validation rows' scores are out-of-fold
        head = make_head("kfold", task, estimator=head, n_splits=n_folds, feature_set=fs)
        head.fit(fit_on.X[fs], fit_on.y, groups=fit_on.video, frames=fit_on.frame)
        return head, head.oof_[len(data.train.y):]
    head.fit(fit_on.X[fs], fit_on.y, va.X[fs], va.y, groups=fit_on.video, frames=fit_on.frame,
             groups_val=va.video, frames_val=va.frame)
    return head, head.predict_proba(va.X[fs], groups=va.video, frames=va.frame)


def _training_notes(f: Fitting, mname: str, head: Head) -> str:
    """The head's training history and row sample in metrics.json; the sample's note for the log."""
    if getattr(head, "history", None):
        f.extra[mname] = {"val_metric_by_epoch": head.history, "best_epoch": head.best_epoch}
    n_fit, n_rows = getattr(head, "rows_used", None), len(f.data.fit_on.y)
    if n_fit and n_fit < n_rows:
        f.extra.setdefault(mname, {})["train_rows"] = n_fit
        return f", trained on a sample of {n_fit} of {n_rows} rows"
    return ""


def _honest(f: Fitting, name: str, tuned: list[str], members_tl: dict, blend: bool = False) -> dict:
    """The row's in-sample columns and, where something was tuned, its video-level CV estimate."""
    est = None
    if report.needs_cv(tuned, f.cfg.train_val):
        vf = f.frames
        est = f.cv[name] = crossval.cross_validated(f.cfg.task, vf.y, vf.video, vf.frame, vf.face, members_tl,
                                                    f.cfg.ks, blend=blend)
    return report.row_fields(f.cfg.task, tuned, f.cfg.train_val, est)


def fit_blend(f: Fitting) -> str:
    """Blend the members when asked and there are two or more; the name of the final head (the blend, else the
    member with the best frame-level metric)."""
    if not f.scores:
        raise InputError(f"no head was fitted: {'; '.join(v['left_out'] for v in f.extra.values())}")
    final = max((r for r in f.rows if r["method"] in f.scores), key=lambda r: r["metric_raw"])["method"]
    if "blend" not in f.cfg.heads:
        return final
    if len(f.scores) < 2:
        log.info("blend skipped: it needs at least two members")
        return final
    task, ks, t = f.cfg.task, f.cfg.ks, time.perf_counter()
    blend = make_head("blend", task, feature_set=" & ".join(f.plan.members[m][1] for m in f.scores))
    blend.fit(f.scores, f.data.val.y)
    f.scores["blend"] = blend.predict_proba(f.scores)
    f.heads["blend"] = blend
    f.timeline["blend"] = blend.predict_proba(f.timeline)
    sm = smoothing(task, f.frames.scoreset(f.timeline["blend"]), ks)
    f.rows.append(dict(method=f"blend ({blend.describe()})", feature_set=blend.feature_set, ensemble="yes",
                       **_metrics(task, sm),
                       **_honest(f, "blend", ["weights"] + report.tuned_after(task, ks),
                                 {m: f.timeline[m] for m in blend.members_}, blend=True),
                       scored_on=f"val ({f.n_val_videos} videos)", seconds=round(time.perf_counter() - t, 1)))
    log.info(f"blend {blend.describe()}: {task.metric_name} {report.said(task, f.rows, 'blend')} "
             f"[{time.perf_counter() - t:.1f} s]")
    return "blend"


def save_fitted(f: Fitting, final: str) -> None:
    """Every fitted head under heads/, and the validation scores (final and per head) in scores.h5."""
    run_dir, vf = f.plan.run_dir, f.frames
    for hname, head in f.heads.items():
        with naming(run_dir / "heads" / hname):
            head.save(run_dir / "heads" / hname)
    with naming(run_dir / runs.SCORES):
        save_scores(run_dir / runs.SCORES, "val", vf.video, vf.frame, f.timeline[final], y=vf.y, face=vf.face,
                    heads=f.timeline, attrs=_score_attrs(f, final))


def _score_attrs(f: Fitting, final: str) -> dict:
    return {"task": f.cfg.task.name, "final": final, "train_val": f.cfg.train_val}


def score_test(f: Fitting, final: str) -> dict | None:
    """With --test: every head on every frame of the test videos, in scores.h5 as split 'test'; its counts."""
    if f.plan.test_videos is None:
        return None
    t, run_dir = time.perf_counter(), f.plan.run_dir
    tf = load_frames(f.plan.store, f.cfg.task, f.plan.test_videos, f.plan.used, what="test")
    ts = {mname: tf.predict(f.heads[mname], fs, f"{f.cfg.cache}: test")
          for mname, (kind, fs) in f.plan.members.items() if mname in f.heads}
    if final == "blend":
        ts["blend"] = f.heads["blend"].predict_proba(ts)
    with naming(run_dir / runs.SCORES):
        save_scores(run_dir / runs.SCORES, "test", tf.video, tf.frame, ts[final], face=tf.face, heads=ts,
                    attrs=_score_attrs(f, final))
    n_test = {"frames": int(len(tf.video)), "with_face": int(tf.face.sum()), "videos": int(len(np.unique(tf.video)))}
    log.info(f"test: scored {len(tf.video)} frames of {n_test['videos']} videos ({int((~tf.face).sum())} without "
             f"a face or crop, left for gap filling) [{time.perf_counter() - t:.1f} s]")
    return n_test


def write_reports(f: Fitting, final: str, n_test: dict | None, t0: float) -> str:
    """results.csv, results.md and metrics.json; the run's one-line summary."""
    task, run_dir, rows = f.cfg.task, f.plan.run_dir, f.rows
    table = pd.DataFrame(rows)
    write_output(run_dir / "results.csv", lambda fh: table.to_csv(fh, index=False), text=True)
    sm = smoothing(task, f.frames.scoreset(f.timeline[final]), f.cfg.ks)
    final_row = next(r for r in rows if r["method"].split(" ")[0] == final)
    md = report.markdown(task, rows, f.cfg.train_val, f.n_val_videos, f.cv)
    if "thresholds" in sm:
        md += (f"\nPer-AU thresholds of {final} (tuned on the smoothed validation scores, k = {sm['k']}; "
               f"their F1 above is in-sample): "
               + ", ".join(f"{n} {t:.2f}" for n, t in zip(task.labels, sm["thresholds"])) + "\n")
    write_output(run_dir / "results.md", md)
    summary = {"frame_level": sm["metric_raw"], "smoothed": sm["metric_smoothed"], "k": sm["k"],
               **({"thresholds": sm["thresholds"], "smoothed_thresholds": sm["metric_smoothed_thresholds"]}
                  if "thresholds" in sm else {})}
    summary.update(report.summary_fields(final_row, f.cv.get(final), f.cfg.train_val, f.n_val_videos, summary))
    runs.write_metrics(run_dir, _metrics_json(f, final, summary, n_test, t0))
    return (f"{task.name}: final {final}: {task.metric_name} {sm['metric_raw']:.4f} -> "
            f"{sm['metric_smoothed']:.4f} with k={sm['k']}"
            + (f" -> {sm['metric_smoothed_thresholds']:.4f} with tuned thresholds" if "thresholds" in sm else "")
            + f"; {report.honesty_line(final_row, f.cv.get(final), f.cfg.train_val, f.n_val_videos)}; "
              f"wrote {run_dir}")


def _metrics_json(f: Fitting, final: str, summary: dict, n_test: dict | None, t0: float) -> dict:
    """metrics.json: the summary, every row, members, training notes, blend weights, frame counts, provenance."""
    cfg, tr, va, vf, blend = f.cfg, f.data.train, f.data.val, f.frames, f.heads.get("blend")
    val_valid = valid_rows(cfg.task, vf.y)
    n_val = {"frames": int(len(vf.video)), "with_face": int(vf.face.sum()), "labelled": int(val_valid.sum()),
             "labelled_filled": int((val_valid & ~vf.face).sum())}
    return {"task": cfg.task.name, "metric": cfg.task.metric_name, "final": final, "summary": summary,
            "heads": f.rows, "members": {m: {"head": k, "feature_set": fs} for m, (k, fs) in f.plan.members.items()},
            "training": f.extra,
            "blend": {"weights": dict(zip(blend.members_, blend.weights.tolist())),
                      "search": blend.search_method} if blend is not None else None,
            "frames": {"train": len(tr.y), "val": len(va.y), "train_labelled": tr.n_labelled,
                       "val_labelled": va.n_labelled, "train_labelled_without_features": tr.n_missing,
                       "val_labelled_without_features": va.n_missing,
                       "train_missing_reasons": tr.missing_reasons, "val_missing_reasons": va.missing_reasons,
                       "val_timeline": n_val, "test": n_test},
            "train_val": cfg.train_val, "validation_in_training": cfg.train_val,
            "provenance": run_provenance(f.plan.store, f.plan.used),  # what `classify predict` checks a cache against
            "cache": str(cfg.cache), "labels": str(cfg.labels), "seconds": round(time.perf_counter() - t0, 1)}


def _metrics(task: Task, sm: dict) -> dict:
    out = {"metric_raw": round(sm["metric_raw"], 4), "k": sm["k"], "metric_smoothed": round(sm["metric_smoothed"], 4)}
    if "metric_smoothed_thresholds" in sm:
        out["metric_smoothed_thresholds"] = round(sm["metric_smoothed_thresholds"], 4)
    return out
