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
FAILED.txt, lama.log kept) and `latest` stays where it was.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.labels import Joined, join, label_array, load_labels
from features.outputs import write_json, write_output
from features.store import FeatureStore, cache_files
from features.tasks import Task, get_task
from postprocess.scores import ScoreSet, save_scores, timeline_scores
from postprocess.stats import valid_rows
from postprocess.submission import read_sample_list
from postprocess.sweep import best_k, sweep_k
from postprocess.thresholds import tune_thresholds
from postprocess.timeline import filled_scores, full_timeline, smoothed_scores, spread

from . import crossval, featuresets, kfold, report
from .base import Head, check_finite
from .factory import list_heads, make_head
from .lama import LamaTimeout
from .options import build_head, check_data, check_heads, check_options
from .predict import run_provenance
from .registry import entry


@dataclass
class Split:
    """One split's rows for every feature set, on a common set of (video, frame) rows."""
    X: dict[str, np.ndarray]
    y: np.ndarray
    video: np.ndarray
    frame: np.ndarray
    n_labelled: int
    n_missing: int
    missing_reasons: dict
    labels: pd.DataFrame | None = None     # every valid labelled frame (video, frame, label columns)
    source: str = ""             # the annotation folder or MTL file the labels came from


def load_split(store: FeatureStore, labels_root: str | Path, task: Task, split: str,
               sets: list[str]) -> Split:
    """Labelled frames of a split with the features of every set; only rows every set has are kept."""
    labels = load_labels(labels_root, task, split)
    if len(labels) == 0:
        raise InputError(f"{task.name}: the {split} split has no valid labelled frames", labels_root)
    joins: dict[str, Joined] = {s: join(store, labels, task, featuresets.resolve(store, s)) for s in sets}
    first = joins[sets[0]]
    keys = first.index.assign(i0=np.arange(len(first.index)))
    for s in sets[1:]:
        keys = keys.merge(joins[s].index.assign(**{f"i_{s}": np.arange(len(joins[s].index))}),
                          on=["video", "frame"], how="inner")
    X = {}
    for s in sets:
        col = "i0" if s == sets[0] else f"i_{s}"
        rows = keys[col].to_numpy()
        X[s] = joins[s].X if len(rows) == len(joins[s].X) and (rows == np.arange(len(rows))).all() \
            else joins[s].X[rows]
        check_finite(X[s], f"{store.paths[0]}: features {s} ({split})")
    rows0 = keys["i0"].to_numpy()
    n_missing = first.n_labelled - len(rows0)
    if len(rows0) == 0:
        raise InputError(f"{task.name}: none of the {first.n_labelled} labelled {split} frames has features "
                         f"({first.summary()})", store.paths[0])
    return Split(X=X, y=first.y[rows0], video=first.groups[rows0], frame=first.index["frame"].to_numpy()[rows0],
                 n_labelled=first.n_labelled, n_missing=n_missing,
                 missing_reasons=first.missing["reason"].value_counts().to_dict(), labels=labels,
                 source=labels.attrs.get("source", ""))


def merge_splits(a: Split, b: Split) -> Split:
    """Train+val: both splits once each (the reference appended validation rows twice)."""
    return Split(X={s: np.concatenate([a.X[s], b.X[s]]) for s in a.X}, y=np.concatenate([a.y, b.y]),
                 video=np.concatenate([a.video, b.video]), frame=np.concatenate([a.frame, b.frame]),
                 n_labelled=a.n_labelled + b.n_labelled, n_missing=a.n_missing + b.n_missing,
                 missing_reasons={})


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
    table = sweep_k(task, ss.y, filled, ss.video, [0, int(ks)] if fixed else sorted({0, *ks}))
    k = int(ks) if fixed else best_k(table, task.metric_name)
    at = lambda kk: float(table.loc[table["k"] == kk, task.metric_name].iloc[0])
    out = {"k": k, "metric_raw": at(0), "metric_smoothed": at(k)}
    if task.kind == "multilabel":
        valid = valid_rows(task, ss.y)
        thr = tune_thresholds(ss.y[valid], smoothed_scores(ss, k, filled=filled)[valid])
        out["thresholds"] = [round(float(t), 4) for t in thr.thresholds]
        out["metric_smoothed_thresholds"] = thr.mean_f1
    return out


def read_test_list(path: str | Path) -> list[str]:
    """Test videos from the organisers' sample list (`video/00001.jpg,...` rows) or a file of video names."""
    p = Path(path)
    if not p.exists():
        raise InputError("test list not found", p)
    lines = [ln.split(",", 1)[0].strip() for ln in p.read_text(encoding="utf-8-sig").splitlines()]
    lines = [ln for ln in lines if ln and not ln.lower().startswith("image_location")]
    if not lines:
        raise InputError("test list has no rows", p)
    if all("/" in ln for ln in lines):
        return list(dict.fromkeys(read_sample_list(p).video.tolist()))
    return list(dict.fromkeys(lines))


def load_test(store: FeatureStore, videos: list[str], sets: list[str], log=print,
              what: str = "test") -> tuple[dict, pd.DataFrame]:
    """All cached frames of the test (or other) videos for every feature set (face-less rows included, flagged)."""
    exts = list(dict.fromkeys(k.split("/")[0] for s in sets for k in featuresets.resolve(store, s)))
    have = [v for v in videos if all(store.has_video(e, v) for e in exts)]
    if len(have) < len(videos):
        log(f"  {what}: {len(videos) - len(have)} of {len(videos)} videos are not cached for {', '.join(exts)}; "
            f"they get no scores here")
    if not have:
        raise InputError(f"none of the {what} videos is cached", store.paths[0])
    outs: dict[str, list[str]] = {}
    for s in sets:
        for k in featuresets.resolve(store, s):
            e, o = k.split("/")
            outs.setdefault(e, [])
            if o not in outs[e]:
                outs[e].append(o)
    blk = store.read(have, exts, outputs=outs)
    X = {s: np.hstack([blk.arrays[k].astype(np.float32, copy=False) for k in featuresets.resolve(store, s)])
         for s in sets}
    return X, blk.index.assign(video=blk.index["video"].astype(str))


@dataclass
class Frames:
    """Every frame 1..last of some videos (the full timeline of postprocess.timeline): features of the cached
    frames, and labels where given (the task's invalid marker elsewhere)."""
    task: Task
    X: dict[str, np.ndarray]     # per feature set, cached rows
    row: np.ndarray              # (N,) cached row of each frame, -1 where the cache has none
    video: np.ndarray
    frame: np.ndarray
    face: np.ndarray             # (N,) cached with a face: the frames that get scores
    y: np.ndarray | None

    def predict(self, head: Head, feature_set: str, what: str, out_of_fold: bool = False) -> np.ndarray:
        """The head's scores on every frame with a face, NaN on the others (filled later, when smoothing).
        `out_of_fold`: a k-fold head scores each video with the fold model that did not see it."""
        s = np.full((len(self.video), self.task.n_outputs), np.nan, np.float32)
        if self.face.any():
            X = self.X[feature_set][self.row[self.face]]
            check_finite(X, f"{what} features {feature_set}")
            rows = dict(groups=self.video[self.face], frames=self.frame[self.face])
            s[self.face] = head.predict_oof(X, **rows) if out_of_fold else head.predict_proba(X, **rows)
        return s

    def scoreset(self, scores: np.ndarray, heads: dict | None = None) -> ScoreSet:
        return timeline_scores(self.task.name, self.video, self.frame, scores, self.face, self.y, heads)


def load_frames(store: FeatureStore, task: Task, videos: list[str], sets: list[str],
                labels: pd.DataFrame | None = None, log=print, what: str = "test") -> Frames:
    """Every frame of the cached videos among `videos`: cached frames (with or without a face) and labelled
    frames the cache lacks, laid out on the full timeline, so that a split is smoothed over frames."""
    X, idx = load_test(store, videos, sets, log, what)
    cached = pd.DataFrame({"video": idx["video"].to_numpy(str), "frame": idx["frame"].to_numpy(np.int64),
                           "face": idx["face"].to_numpy(bool), "row": np.arange(len(idx))})
    m = cached
    if labels is not None:
        lab = labels[labels["video"].astype(str).isin(set(cached["video"]))]
        lab = lab.assign(video=lab["video"].astype(str), frame=lab["frame"].to_numpy(np.int64))
        m = cached.merge(lab, on=["video", "frame"], how="outer", sort=False)
    order = pd.Categorical(m["video"], categories=pd.unique(cached["video"])).codes
    m = m.assign(_v=order).sort_values(["_v", "frame"], kind="stable")
    row = m["row"].fillna(-1).to_numpy(np.int64)
    face = m["face"].eq(True).to_numpy() & (row >= 0)
    y = None
    if labels is not None:
        cols = ["label"] if task.kind == "multiclass" else list(task.labels)
        y = label_array(task, m[cols].fillna(task.invalid))
    video, frame, pos = full_timeline(m["video"].to_numpy(str), m["frame"].to_numpy(np.int64), what)
    n = len(video)
    return Frames(task, X, spread(pos, n, row, -1), video, frame, spread(pos, n, face, False),
                  spread(pos, n, y, task.invalid))


def _unique_dir(runs_dir: Path, task: Task, name: str | None) -> Path:
    for d in (runs_dir, runs_dir / task.name):
        if d.exists() and not d.is_dir():
            raise InputError("--runs-dir: this is a file, not a folder", d)
    if name is not None:
        if not name.strip() or name != Path(name).name or name in (".", "..", "latest") \
                or name.endswith(".failed") or name.startswith("."):
            raise InputError(f"--name {name!r}: give a plain folder name (no '/', not 'latest', not starting "
                             f"with '.' or ending in '.failed')")
        d = runs_dir / task.name / name
        if d.exists():
            raise InputError("run folder exists; choose another --name (runs are never overwritten)", d)
        return d
    base = time.strftime("%Y%m%d-%H%M%S")
    d, i = runs_dir / task.name / base, 2
    while d.exists():
        d, i = runs_dir / task.name / f"{base}-{i}", i + 1
    return d


def run(task_name: str, cache: str | Path, labels: str | Path, heads: list[str], features: list[str] | None = None,
        name: str | None = None, runs_dir: str | Path = "runs", train_val: bool = False,
        ks: int | list[int] | range | None = None, opts: dict | None = None, test: str | Path | None = None,
        log=print) -> Path:
    """Fit the heads, blend them, choose k (and AU thresholds) on validation and write the run folder.

    Bad options and inputs are refused before the folder exists; if anything fails once it does, the folder
    is renamed `<name>.failed` (FAILED.txt says why) and `latest` is not moved."""
    started: list[Path] = []
    try:
        return _run(task_name, cache, labels, heads, features, name, runs_dir, train_val, ks, opts, test, log,
                    started)
    except BaseException as e:
        if started and started[0].exists():
            try:
                _mark_failed(started[0], e, log)
            except OSError as oe:            # never hide the run's own error behind this one
                log(f"  run failed; could not rename {started[0]} to mark it: {oe}")
        raise


def _mark_failed(run_dir: Path, e: BaseException, log=print) -> None:
    failed = run_dir.with_name(run_dir.name + ".failed")
    if failed.exists():                      # an earlier failed attempt of the same name: nothing valid
        shutil.rmtree(failed)
    run_dir.rename(failed)
    try:
        write_output(failed / "FAILED.txt", f"{type(e).__name__}: {e}\n")
    except OSError as oe:                    # e.g. the disk is full: say so, not that the rename failed
        log(f"  run failed; its folder is now {failed} ({run_dir.parent / 'latest'} unchanged); {oe}")
        return
    log(f"  run failed; its folder is now {failed} ({run_dir.parent / 'latest'} unchanged)")


def _run(task_name, cache, labels, heads, features, name, runs_dir, train_val, ks, opts, test, log,
         started: list[Path]) -> Path:
    task = get_task(task_name)
    opts = dict(opts or {})
    check_options(opts)
    ks = DEFAULT_KS if ks is None else ks
    store = FeatureStore(cache_files(cache))    # the file, else its shard files; or a comma list
    members = plan_members(task, store, heads, list(features or []))
    check_heads(task, [k for k, _ in members.values()], opts)
    used = list(dict.fromkeys(fs for _, fs in members.values()))
    run_dir = _unique_dir(Path(runs_dir), task, name)
    # every head built and its parameters validated (by the head itself) before any data is read
    unfitted = {mname: build_head(kind, task, store, fs, opts, run_dir) for mname, (kind, fs) in members.items()}
    test_videos = read_test_list(test) if test is not None else None

    t0 = time.perf_counter()
    tr = load_split(store, labels, task, "train", used)
    va = load_split(store, labels, task, "val", used)
    for nm, sp in (("train", tr), ("val", va)):
        log(f"{task.name}/{nm}: {len(sp.y)} frames; {sp.n_missing} of {sp.n_labelled} labelled frames have no "
            f"features{f' {sp.missing_reasons}' if sp.n_missing else ''} (labels: {sp.source})")
    log(f"  loaded in {time.perf_counter() - t0:.1f} s")
    fit_on = merge_splits(tr, va) if train_val else tr
    n_folds = opts.get("kfold")
    if n_folds:
        fit_on = merge_splits(tr, va)
        kfold.check_folds(fit_on.video, n_folds)
    check_data(unfitted, fit_on.video, fit_on.frame)
    run_dir.mkdir(parents=True)
    started.append(run_dir)
    val_videos = list(dict.fromkeys((va.labels["video"] if va.labels is not None else va.video).astype(str)))
    vf = load_frames(store, task, val_videos, used, va.labels, log, "val")

    scores: dict[str, np.ndarray] = {}
    val_tl: dict[str, np.ndarray] = {}       # every head's scores on the validation frame timeline
    fitted: dict[str, Head] = {}
    rows, extra = [], {}
    cv: dict[str, crossval.CVEstimate] = {}  # per row: the video-level CV estimate of its headline number
    n_val_videos = len(val_videos)

    def honest(name: str, tuned: list[str], members_tl: dict, blend: bool = False) -> dict:
        """The row's in-sample columns and, where something was tuned, its video-level CV estimate."""
        est = None
        if report.needs_cv(tuned, train_val):
            est = cv[name] = crossval.cross_validated(task, vf.y, vf.video, vf.frame, vf.face, members_tl, ks,
                                                      blend=blend)
        return report.row_fields(task, tuned, train_val, est)
    for mname, (kind, fs) in members.items():
        t = time.perf_counter()
        head = unfitted[mname]
        try:
            if n_folds:
                # fold models on train + val grouped by video; the validation rows' scores are out-of-fold
                head = make_head("kfold", task, estimator=head, n_splits=n_folds, feature_set=fs)
                head.fit(fit_on.X[fs], fit_on.y, groups=fit_on.video, frames=fit_on.frame)
                scores[mname] = head.oof_[len(tr.y):]
            else:
                head.fit(fit_on.X[fs], fit_on.y, va.X[fs], va.y, groups=fit_on.video, frames=fit_on.frame,
                         groups_val=va.video, frames_val=va.frame)
                scores[mname] = head.predict_proba(va.X[fs], groups=va.video, frames=va.frame)
        except LamaTimeout as e:          # the other members still make a run; the log and metrics say so
            log(f"  {mname} left out: {e}")
            extra[mname] = {"left_out": str(e)}
            continue
        fitted[mname] = head
        val_tl[mname] = vf.predict(head, fs, f"{cache}: val", out_of_fold=bool(n_folds))
        sm = smoothing(task, vf.scoreset(val_tl[mname]), ks)
        # what was chosen on the validation videos this row is scored on
        tuned = (["epoch"] if getattr(head, "best_epoch", None) is not None and not n_folds else []) + \
            report.tuned_after(task, ks)
        scored_on = (f"val ({n_val_videos} videos), out-of-fold: each by the fold model that did not see it"
                     if n_folds else f"val ({n_val_videos} videos)")
        rows.append(dict(method=mname, feature_set=fs,
                         ensemble=f"{n_folds} fold models averaged" if n_folds else "no",
                         **_metrics(task, sm), **honest(mname, tuned, {mname: val_tl[mname]}),
                         scored_on=scored_on, seconds=round(time.perf_counter() - t, 1)))
        rows.extend(report.fold_rows(mname, fs, head, n_folds))
        if getattr(head, "history", None):
            extra[mname] = {"val_metric_by_epoch": head.history, "best_epoch": head.best_epoch}
        sample, n_fit = "", getattr(head, "rows_used", None)
        if n_fit and n_fit < len(fit_on.y):
            sample = f", trained on a sample of {n_fit} of {len(fit_on.y)} rows"
            extra.setdefault(mname, {})["train_rows"] = n_fit
        log(f"  {mname} on {fs}: {task.metric_name} {report.said(task, rows, mname)} "
            f"[{time.perf_counter() - t:.1f} s{sample}]")
    if not scores:
        raise InputError(f"no head was fitted: {'; '.join(v['left_out'] for v in extra.values())}")
    final_name = max((r for r in rows if r["method"] in scores), key=lambda r: r["metric_raw"])["method"]
    if "blend" in heads and len(scores) > 1:
        t = time.perf_counter()
        blend = make_head("blend", task, feature_set=" & ".join(members[m][1] for m in scores)).fit(scores, va.y)
        scores["blend"] = blend.predict_proba(scores)
        fitted["blend"] = blend
        val_tl["blend"] = blend.predict_proba(val_tl)
        sm = smoothing(task, vf.scoreset(val_tl["blend"]), ks)
        rows.append(dict(method=f"blend ({blend.describe()})", feature_set=blend.feature_set, ensemble="yes",
                         **_metrics(task, sm),
                         **honest("blend", ["weights"] + report.tuned_after(task, ks),
                                  {m: val_tl[m] for m in blend.members_}, blend=True),
                         scored_on=f"val ({n_val_videos} videos)", seconds=round(time.perf_counter() - t, 1)))
        final_name = "blend"
        log(f"  blend {blend.describe()}: {task.metric_name} {report.said(task, rows, 'blend')} "
            f"[{time.perf_counter() - t:.1f} s]")
    elif "blend" in heads:
        log("  blend skipped: it needs at least two members")

    for hname, head in fitted.items():
        head.save(run_dir / "heads" / hname)
    attrs = {"task": task.name, "final": final_name, "train_val": train_val}
    save_scores(run_dir / "scores.h5", "val", vf.video, vf.frame, val_tl[final_name], y=vf.y, face=vf.face,
                heads=val_tl, attrs=attrs)
    val_valid = valid_rows(task, vf.y)
    n_val = {"frames": int(len(vf.video)), "with_face": int(vf.face.sum()), "labelled": int(val_valid.sum()),
             "labelled_filled": int((val_valid & ~vf.face).sum())}
    n_test = None
    if test_videos is not None:
        t = time.perf_counter()
        tf = load_frames(store, task, test_videos, used, log=log, what="test")
        ts = {mname: tf.predict(fitted[mname], fs, f"{cache}: test") for mname, (kind, fs) in members.items()
              if mname in fitted}
        if final_name == "blend":
            ts["blend"] = fitted["blend"].predict_proba(ts)
        save_scores(run_dir / "scores.h5", "test", tf.video, tf.frame, ts[final_name], face=tf.face, heads=ts,
                    attrs=attrs)
        n_test = {"frames": int(len(tf.video)), "with_face": int(tf.face.sum()),
                  "videos": int(len(np.unique(tf.video)))}
        log(f"  test: scored {len(tf.video)} frames of {n_test['videos']} videos ({int((~tf.face).sum())} without "
            f"a face or crop, left for gap filling) [{time.perf_counter() - t:.1f} s]")

    table = pd.DataFrame(rows)
    write_output(run_dir / "results.csv", lambda f: table.to_csv(f, index=False), text=True)
    final = smoothing(task, vf.scoreset(val_tl[final_name]), ks)
    final_row = next(r for r in rows if r["method"].split(" ")[0] == final_name)
    md = report.markdown(task, rows, train_val, n_val_videos, cv)
    if "thresholds" in final:
        md += (f"\nPer-AU thresholds of {final_name} (tuned on the smoothed validation scores, k = {final['k']}; "
               f"their F1 above is in-sample): "
               + ", ".join(f"{n} {t:.2f}" for n, t in zip(task.labels, final["thresholds"])) + "\n")
    write_output(run_dir / "results.md", md)
    summary = {"frame_level": final["metric_raw"], "smoothed": final["metric_smoothed"], "k": final["k"],
               **({"thresholds": final["thresholds"], "smoothed_thresholds": final["metric_smoothed_thresholds"]}
                  if "thresholds" in final else {})}
    summary.update(report.summary_fields(final_row, cv.get(final_name), train_val, n_val_videos, summary))
    metrics = {"task": task.name, "metric": task.metric_name, "final": final_name, "summary": summary,
               "heads": rows, "members": {m: {"head": k, "feature_set": fs} for m, (k, fs) in members.items()},
               "training": extra,
               "blend": {"weights": dict(zip(fitted["blend"].members_, fitted["blend"].weights.tolist())),
                         "search": fitted["blend"].search_method} if "blend" in fitted else None,
               "frames": {"train": len(tr.y), "val": len(va.y), "train_labelled": tr.n_labelled,
                          "val_labelled": va.n_labelled, "train_labelled_without_features": tr.n_missing,
                          "val_labelled_without_features": va.n_missing,
                          "train_missing_reasons": tr.missing_reasons, "val_missing_reasons": va.missing_reasons,
                          "val_timeline": n_val, "test": n_test},
               "train_val": train_val, "validation_in_training": train_val,
               "provenance": run_provenance(store, used),      # what `classify predict` checks a cache against
               "cache": str(cache), "labels": str(labels), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(run_dir / "metrics.json", metrics, default=_json_default)
    _point_latest(run_dir, log)
    log(f"{task.name}: final {final_name}: {task.metric_name} {final['metric_raw']:.4f} -> "
        f"{final['metric_smoothed']:.4f} with k={final['k']}"
        + (f" -> {final['metric_smoothed_thresholds']:.4f} with tuned thresholds" if "thresholds" in final else "")
        + f"; {report.honesty_line(final_row, cv.get(final_name), train_val, n_val_videos)}; wrote {run_dir}")
    return run_dir


def _point_latest(run_dir: Path, log=print) -> None:
    """`<runs>/<task>/latest` -> the newest run (a symlink, so `make sweep` finds it); a real folder of that
    name is left alone."""
    latest = run_dir.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        log(f"  note: {latest} is a run folder, not a link; it is left as it is")
        return
    tmp = run_dir.parent / f".latest-{run_dir.name}"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _metrics(task: Task, sm: dict) -> dict:
    out = {"metric_raw": round(sm["metric_raw"], 4), "k": sm["k"], "metric_smoothed": round(sm["metric_smoothed"], 4)}
    if "metric_smoothed_thresholds" in sm:
        out["metric_smoothed_thresholds"] = round(sm["metric_smoothed_thresholds"], 4)
    return out
