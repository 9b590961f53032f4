"""Apply a run (or a pre-trained model's own classes) to any cache made by the same extractors.

`python -m classify predict --run runs/expr/<name> --cache new.h5 --out preds.csv` loads the run's final head
(a blend loads its members too), checks that every extractor the run used has the same provenance in the cache
(checkpoint sha256, input size, normalisation, output widths, pixel pipeline), scores every cached frame, and
post-processes exactly as `classify`, `postprocess sweep` and `submit` do (postprocess.timeline): frames without
a face are filled from their neighbours, the box filter runs over the frame timeline with the run's k (the
per-output ks and AU thresholds of `postprocess.json` when `sweep` wrote one, else the k and thresholds
`classify` chose), then the task's decision.

Per-frame table (CSV or Parquet, by the extension of --out): video, frame, time (seconds; NaN when the frame
rate is unknown: the cache does not record it, so it comes from --fps or from the video files given with
--source), face, then per task the post-processed outputs: EXPR the 8 class probabilities and `label` (the class
name); VA `valence`, `arousal`; AU the 12 probabilities and `<AU>_on` (0/1). A video with no face at all gets
empty values. Beside the table, one timeline PNG per video (raw vs smoothed, postprocess.plots).

`--pretrained <extractor>` needs no run: the extractor's own class logits, mapped to Aff-Wild2's 8 classes
(features.tasks.affwild_probabilities), gap-filled and smoothed (default k: half a second each side).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from features.errors import InputError
from features.outputs import Outputs, check_output, data_names
from features.finite import read_for_heads
from features.paths import check_file_or_folder
from features.store import FeatureStore, cache_files
from features.tasks import EXPR, Task, get_task
from postprocess.gaps import fill_gaps
from postprocess.smoothing import box_filter, check_k

from . import featuresets, runfolder
from .base import Head, load_head

OUT_FORMATS = (".csv", ".parquet")
CHUNK_ROWS = 1 << 18           # cached rows scored at a time: bounds the float32 feature matrix (~1.3 GB at 1290)
DEFAULT_FPS_K = 0.5            # --pretrained: default half-width in seconds (a one-second window)
FALLBACK_K = 12                # ... in frames when the frame rate is unknown (0.5 s at 24 fps)
_PIXEL_KEYS = ("resize", "min_side", "bad_frames")     # extract.runner.PIXELS: how crops became model input


# -- what a run records and needs ---------------------------------------------------------------------------
def run_provenance(store: FeatureStore, feature_sets: Sequence[str]) -> dict:
    """Provenance of every extractor the feature sets use, as `classify` records it in metrics.json."""
    out = {}
    for fs in feature_sets:
        for key in featuresets.resolve(store, fs):
            e, o = key.split("/")
            info = store.info(e)
            rec = out.setdefault(e, {**info.provenance(), "used_outputs": [],
                                     "class_names": list(info.extra.get("class_names") or []),
                                     "source": info.extra.get("source") or {}})
            if o not in rec["used_outputs"]:
                rec["used_outputs"].append(o)
    return out


def check_provenance(store: FeatureStore, recorded: dict, where: str | os.PathLike) -> None:
    """Refuse a cache whose extractors differ from the ones the run was trained on (one line naming the first
    difference). Compared: checkpoint sha256, input size, normalisation, the widths of the outputs the run
    uses and the pixel pipeline; not compared: how the frames were found (crop folders vs face detection in
    video files: that is the point of applying a run to new videos) or the storage dtype of the embedding."""
    for e, rec in recorded.items():
        if e not in store.extractors:
            raise InputError(f"the cache holds no features of extractor {e!r}, which the run uses (it holds "
                             f"{', '.join(store.extractors) or 'none'}); extract them with the run's "
                             f"checkpoint (sha256 {str(rec.get('checkpoint_sha256'))[:12]}...)", store.paths[0])
        info = store.info(e)
        have = info.provenance()
        diffs = []
        for k in ("checkpoint_sha256", "input_size", "normalization"):
            if k in rec and have.get(k) != rec[k]:
                a, b = have.get(k), rec[k]
                if k == "checkpoint_sha256":
                    a, b = f"{str(a)[:12]}...", f"{str(b)[:12]}..."
                diffs.append(f"{k} {a} here, {b} in the run")
        for o in rec.get("used_outputs", []):
            w_run, w_here = (rec.get("outputs") or {}).get(o), info.outputs.get(o)
            if w_here != w_run:
                diffs.append(f"output {o!r} of width {w_here} here, {w_run} in the run")
        src_run, src_here = rec.get("source") or {}, info.extra.get("source") or {}
        for k in _PIXEL_KEYS:
            if k in src_run and k in src_here and src_run[k] != src_here[k]:
                diffs.append(f"pixel pipeline {k} {src_here[k]!r} here, {src_run[k]!r} in the run")
        if diffs:
            raise InputError(f"extractor {e!r} differs from the one run {where} was trained on ({diffs[0]}); "
                             f"extract the videos again with the run's checkpoint and preprocessing",
                             store.paths[0])


@dataclass
class Post:
    """The run's own post-processing: half-width(s), AU thresholds, statistic, and where they came from."""
    k: int | list[int]
    thresholds: list[float] | None = None
    stat: str = "mean"
    source: str = ""


@dataclass
class LoadedRun:
    dir: Path
    task: Task
    final: str
    heads: dict[str, Head]                   # the final head and, for a blend, its members
    members: dict[str, str]                  # member name -> feature set (the heads that read features)
    post: Post
    provenance: dict = field(default_factory=dict)

    @property
    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(self.members.values()))


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"not valid JSON ({e})", path) from None
    if not isinstance(d, dict):
        raise InputError("expected a JSON object", path)
    return d


def run_post(run: Path, task: Task, metrics: dict) -> Post:
    """k (or per-output ks) and thresholds: postprocess.json when `postprocess sweep` wrote one (its per-output
    choice when it was made with --per-output, as `submit` reads it), else what `classify` chose."""
    cfg_path = runfolder.run_file(run, "postprocess.json")
    if cfg_path.exists():
        from postprocess.cli import _config_choice      # the one reader submit uses, checks included
        cfg = _read_json(cfg_path)
        if cfg.get("task") != task.name:
            raise InputError(f"it is for task {cfg.get('task')!r}, the run for {task.name!r}", cfg_path)
        k, thr, stat = _config_choice(cfg, task, cfg_path)
        per = bool(cfg.get("use_per_output") and "per_output" in cfg)
        return Post(k if np.ndim(k) == 0 else [int(x) for x in k], _thresholds(thr, task), stat,
                    f"{cfg_path.name}{' (per output)' if per else ''}")
    s = metrics.get("summary") or {}
    if "k" not in s:
        raise InputError("metrics.json has no summary k; the run did not finish", run / "metrics.json")
    k = check_k(s["k"], "k")
    return Post(int(k), _thresholds(s.get("thresholds"), task), "mean", "metrics.json")


def _thresholds(thr, task: Task) -> list[float] | None:
    if thr is None or task.kind != "multilabel":
        return None
    return [float(x) for x in np.broadcast_to(np.asarray(thr, np.float64).reshape(-1), (task.n_outputs,))]


def load_run(run: str | os.PathLike, allow_pickle: bool = False) -> LoadedRun:
    """The run's final head (and a blend's members), its post-processing and the recorded provenance. The run
    folder is untrusted input: classify.runfolder checks what it names and holds before it is used."""
    run = Path(run)
    if not run.is_dir():
        raise InputError("run folder not found (give runs/<task>/<name> as classify wrote it)", run)
    if run.name.endswith(".failed") or (run / "FAILED.txt").exists():
        raise InputError("this run failed (see FAILED.txt); train it again", run)
    metrics = runfolder.read_metrics(run)
    mp = run / "metrics.json"
    task, final = get_task(metrics["task"]), metrics["final"]
    heads_dir = run / "heads"
    if not runfolder.head_folder(run, final, mp, "the final head").is_dir():
        raise InputError(f"the final head {final!r} was not saved (no heads/{final}/); train the run again", run)
    heads = {final: load_head(heads_dir / final, task, allow_pickle=allow_pickle)}
    names = list(heads[final].members_) if heads[final].kind == "blend" else [final]
    for m in names:
        if m not in heads:
            if not runfolder.head_folder(run, m, heads_dir / final / "weights.json", "blend member").is_dir():
                raise InputError(f"blend member {m!r} was not saved (no heads/{m}/)", run)
            heads[m] = load_head(heads_dir / m, task, allow_pickle=allow_pickle)
            if heads[m].kind == "blend":
                raise InputError(f"blend member {m!r} is itself a blend; members are heads that read features",
                                 heads_dir / final / "weights.json")
    members = {}
    for m in names:
        fs = heads[m].feature_set or (metrics.get("members") or {}).get(m, {}).get("feature_set")
        if not fs:
            raise InputError(f"head {m!r} records no feature set", heads_dir / m / "head.json")
        members[m] = fs
    return LoadedRun(run, task, final, heads, members, run_post(run, task, metrics),
                     metrics.get("provenance") or {})


# -- scoring ------------------------------------------------------------------------------------------------
@dataclass
class Scored:
    """Every frame 1..last of each video (postprocess.timeline), raw scores NaN where no face was cached."""
    task: Task
    video: np.ndarray
    frame: np.ndarray
    face: np.ndarray
    raw: np.ndarray


def choose_videos(store: FeatureStore, extractors: Sequence[str], videos: Sequence[str] | None) -> list[str]:
    """The videos to score: the given ones (each must be cached for every extractor), else every video the
    first extractor holds that the others hold too, in cache order."""
    if videos:
        for v in videos:
            for e in extractors:
                if not store.has_video(e, v):
                    have = store.videos(e)
                    raise InputError(f"video {v!r} is not in the cache for extractor {e!r} (it holds "
                                     f"{len(have)} videos, e.g. {', '.join(have[:3]) or 'none'})", store.paths[0])
        return list(dict.fromkeys(videos))
    out = [v for v in store.videos(extractors[0]) if all(store.has_video(e, v) for e in extractors[1:])]
    if not out:
        raise InputError(f"no video is cached for all of {', '.join(extractors)}", store.paths[0])
    return out


def _chunks(store: FeatureStore, extractor: str, videos: list[str], rows: int) -> list[list[str]]:
    out, cur, n = [], [], 0
    for v in videos:
        c = store.n_frames(extractor, v)
        if cur and n + c > rows:
            out.append(cur)
            cur, n = [], 0
        cur.append(v)
        n += c
    return out + ([cur] if cur else [])


def score_run(store: FeatureStore, lr: LoadedRun, videos: list[str], chunk_rows: int = CHUNK_ROWS) -> Scored:
    """The final head's scores on every frame of `videos`, a chunk of videos at a time (a chunk's features are
    the only large arrays). Each head gets what `classify` gave it on validation (run.Frames.predict): the rows
    with a face, with their videos and frames (temporal heads window them by video), as stored (float16
    embeddings go to the Keras MLP as they are; it converts a block at a time). Frames without a face get NaN,
    for gap filling."""
    from postprocess.timeline import full_timeline, spread
    keys = {fs: featuresets.resolve(store, fs) for fs in lr.feature_sets}
    outs: dict[str, list[str]] = {}
    for ks in keys.values():
        for key in ks:
            e, o = key.split("/")
            if o not in outs.setdefault(e, []):
                outs[e].append(o)
    exts = list(outs)
    final = lr.heads[lr.final]
    parts = []
    for chunk in _chunks(store, exts[0], videos, chunk_rows):
        blk = read_for_heads(store, chunk, exts, outputs=outs)
        face = blk.index["face"].to_numpy(bool)
        every = bool(face.all())                   # no copy of the features when every frame has a face
        rows = dict(groups=blk.index["video"].to_numpy(str)[face],
                    frames=blk.index["frame"].to_numpy(np.int64)[face])
        member = {}
        for m, fs in lr.members.items():
            head = lr.heads[m]
            X = blk.arrays[keys[fs][0]] if len(keys[fs]) == 1 else blk.matrix(keys[fs])
            if X.dtype != np.float32 and head.kind != "mlp":
                X = X.astype(np.float32)
            sc = np.full((len(face), lr.task.n_outputs), np.nan, np.float32)
            if face.any():
                sc[face] = head.predict_proba(X if every else X[face], **rows)
            bad = face & ~np.isfinite(sc).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"features {fs}: {int(bad.sum())} frames with a face get NaN or infinite scores "
                                 f"(are their features finite?), first: video {blk.index['video'].iloc[i]!r}, "
                                 f"frame {int(blk.index['frame'].iloc[i])}", store.paths[0])
            member[m] = sc
        raw = final.predict_proba(member) if final.kind == "blend" else member[lr.final]
        video, frame, pos = full_timeline(blk.index["video"].to_numpy(str), blk.index["frame"].to_numpy(np.int64),
                                          f"{store.paths[0]}")
        n = len(video)
        parts.append((video, frame, spread(pos, n, face, False), spread(pos, n, raw, np.nan)))
    return Scored(lr.task, *(np.concatenate([p[i] for p in parts]) for i in range(4)))


def pretrained_classes(store: FeatureStore, extractor: str) -> list[str]:
    """The class names of an extractor's logits, or one line saying why it cannot be used with --pretrained."""
    from .rules import default_class_names
    if extractor not in store.extractors:
        raise InputError(f"--pretrained {extractor}: the cache holds no extractor of that name (it holds "
                         f"{', '.join(store.extractors) or 'none'})", store.paths[0])
    info = store.info(extractor)
    if "logits" not in info.outputs:
        raise InputError(f"--pretrained {extractor}: the extractor has no class logits (outputs: "
                         f"{', '.join(info.outputs)}); train a run on its features and pass --run", store.paths[0])
    return list(info.extra.get("class_names") or default_class_names(info.outputs["logits"]))


def score_pretrained(store: FeatureStore, extractor: str, videos: list[str]) -> Scored:
    """EXPR from the extractor's own class logits mapped to Aff-Wild2's classes (no training)."""
    from postprocess.timeline import full_timeline, spread
    from .rules import affwild_probabilities
    names = pretrained_classes(store, extractor)
    blk = read_for_heads(store, videos, extractor, ("logits",))
    p = affwild_probabilities(names, blk.arrays[f"{extractor}/logits"])
    face = blk.index["face"].to_numpy(bool)
    video, frame, pos = full_timeline(blk.index["video"].to_numpy(str), blk.index["frame"].to_numpy(np.int64),
                                      "predict")
    n = len(video)
    p[~face] = np.nan
    return Scored(EXPR, video, frame, spread(pos, n, face, False), spread(pos, n, p, np.nan))


def postprocess(sc: Scored, post: Post, log=print) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(filled, smoothed, decision) on the timeline: the path of postprocess.timeline. A video with no face at
    all has nothing to fill from: its rows stay NaN (and say so) rather than borrowing other videos' mean."""
    from postprocess.segments import video_segments
    seg = video_segments(sc.video)
    has = np.add.reduceat(sc.face.astype(np.int64), seg.starts) > 0 if len(seg) else np.zeros(0, bool)
    if len(seg) and not has.all():
        log(f"  {int((~has).sum())} of {len(seg)} videos have no frame with a face; their rows are left empty: "
            f"{', '.join(map(str, seg.names[~has][:5]))}")
    filled = fill_gaps(sc.raw, sc.face, sc.video, sc.frame, default=None if sc.face.any() else 0.0)
    smoothed = box_filter(filled, sc.video, post.k, post.stat)
    empty = np.repeat(~has, seg.lengths)
    filled[empty] = np.nan
    smoothed[empty] = np.nan
    return filled, smoothed, sc.task.decide(smoothed, post.thresholds)


def frame_rates(source: str | os.PathLike | None, videos: Sequence[str]) -> dict[str, float]:
    """Frame rates of the videos from the video files in `source` (a file or folder; matched by file stem,
    as extract names them), read from the container with PyAV. Videos without a file get none."""
    if source is None:
        return {}
    src = check_file_or_folder(source, "--source", "--source: no such video file or folder")
    files = [src] if src.is_file() else [p for p in sorted(src.iterdir()) if p.is_file()]
    want = set(videos)
    out = {}
    for p in files:
        if p.stem not in want:
            continue
        import av
        try:
            with av.open(str(p)) as c:
                s = c.streams.video[0] if c.streams.video else None
                rate = s.average_rate or s.guessed_rate if s is not None else None
        except (av.error.FFmpegError, OSError, IndexError):
            rate = None
        if rate:
            out[p.stem] = float(rate)
    return out


def build_table(sc: Scored, smoothed: np.ndarray, decision: np.ndarray, fps: dict[str, float]) -> pd.DataFrame:
    task = sc.task
    codes, names = pd.factorize(sc.video)
    rate = pd.Series(fps, dtype=np.float64).reindex(names).to_numpy(np.float64)
    cols: dict[str, object] = {"video": pd.Categorical.from_codes(codes, names) if len(names) else sc.video,
                               "frame": sc.frame.astype(np.int64),
                               "time": (sc.frame - 1) / rate[codes] if len(rate) else np.zeros(0),
                               "face": sc.face.astype(bool)}
    empty = ~np.isfinite(smoothed).all(axis=1)
    if task.kind == "regression":
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
    elif task.kind == "multiclass":
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
        lab = np.asarray(task.labels, dtype=object)[decision]
        lab[empty] = None
        cols["label"] = pd.Categorical(lab, categories=list(task.labels))
    else:
        for j, n in enumerate(task.labels):
            cols[n] = smoothed[:, j].astype(np.float32)
        for j, n in enumerate(task.labels):
            cols[f"{n}_on"] = pd.array(np.where(empty, pd.NA, decision[:, j]), dtype="Int8")
    return pd.DataFrame(cols)


def check_out(out: str | os.PathLike, force: bool = False) -> Path:
    out = Path(out)
    if out.suffix.lower() not in OUT_FORMATS:
        raise InputError(f"--out must end in {' or '.join(OUT_FORMATS)} (the table's format), got "
                         f"{out.suffix or 'no extension'!r}", out)
    if out.is_dir() and not out.is_symlink():
        raise InputError("--out is a folder; give a file name ending in .csv or .parquet", out)
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError("the folder of --out is a file", out.parent)
    return check_output(out, force)


def write_table(df: pd.DataFrame, out: Path, outs: Outputs | None = None, force: bool = False) -> None:
    """Through the one writer (features.outputs): a temporary file renamed at the end, never half a table; with
    `outs`, renamed when that command's other outputs are."""
    def write(f) -> None:
        if out.suffix.lower() == ".parquet":
            df.to_parquet(f, index=False)
        else:
            df.to_csv(f, index=False, float_format="%.6g")
    if outs is None:
        with Outputs([out], force=force) as one:
            one.write(out, write, text=out.suffix.lower() != ".parquet")
    else:
        outs.write(out, write, text=out.suffix.lower() != ".parquet")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table `predict` wrote, with the same dtypes from CSV and Parquet."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    df = pd.read_csv(path, dtype={"video": str})
    df["video"] = pd.Categorical(df["video"], categories=pd.unique(df["video"]))
    if "label" in df:
        df["label"] = pd.Categorical(df["label"], categories=list(EXPR.labels))
    for c in [c for c in df.columns if c.endswith("_on")]:
        df[c] = df[c].astype("Int8")
    for c in df.columns[4:]:
        if df[c].dtype == np.float64:
            df[c] = df[c].astype(np.float32)
    return df


def timeline_paths(sc: Scored, smoothed: np.ndarray, out: Path, limit: int | None) -> dict[int, Path]:
    """Video index -> its PNG beside the table, `<out stem>.<video>.png` (a name too long for the file system is
    shortened with a hash, features.outputs.data_name), for the first `limit` videos that have scores."""
    from postprocess.segments import video_segments
    seg = video_segments(sc.video)
    idx = [i for i, (a, b) in enumerate(zip(seg.starts, seg.ends))
           if i < (len(seg) if limit is None else limit) and np.isfinite(smoothed[a:b]).all()]
    names = data_names([seg.names[i] for i in idx], ".png", prefix=f"{out.stem}.")
    return {i: out.with_name(n) for i, n in zip(idx, names)}


def plot_timelines(sc: Scored, filled: np.ndarray, smoothed: np.ndarray, paths: dict[int, Path], k,
                   outs: Outputs) -> list[Path]:
    """The PNGs `timeline_paths` planned (raw = gap-filled per-frame scores), written through `outs`."""
    from postprocess.plots import plot_timeline
    from postprocess.segments import video_segments
    seg = video_segments(sc.video)
    for i, p in paths.items():
        v, a, b = seg.names[i], seg.starts[i], seg.ends[i]
        outs.write(p, lambda f: plot_timeline(sc.task, sc.frame[a:b], filled[a:b], smoothed[a:b], f,
                                              title=f"{v}: raw vs smoothed (k = {k})"))
    return list(paths.values())


@dataclass
class Prediction:
    table: pd.DataFrame
    out: Path
    timelines: list[Path]
    post: Post
    seconds: float
    filled: np.ndarray | None = None         # per-frame scores, gaps filled (the table's rows, before smoothing)
    stages: dict = field(default_factory=dict)   # seconds per stage

    def line(self) -> str:
        n_v = self.table["video"].nunique()
        return (f"wrote {self.out}: {len(self.table)} frames of {n_v} videos ({int(self.table['face'].sum())} with "
                f"a face), k = {self.post.k} from {self.post.source}"
                + (f"; {len(self.timelines)} timelines beside it" if self.timelines else "")
                + f" [{self.seconds:.1f} s]")


def predict(cache: str | os.PathLike, out: str | os.PathLike, run: str | os.PathLike | None = None,
            pretrained: str | None = None, videos: Sequence[str] | None = None, fps: float | None = None,
            source: str | os.PathLike | None = None, k: int | None = None, timelines: int | None = None,
            allow_pickle: bool = False, force: bool = False, log=print) -> Prediction:
    """Apply `run` (or `pretrained` logits) to `cache` and write the per-frame table and timelines.

    k: override the run's half-width (frames). timelines: PNGs for the first N videos (None: all, 0: none)."""
    t0 = time.perf_counter()
    if (run is None) == (pretrained is None):
        raise InputError("give either --run <run folder> or --pretrained <extractor>")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be a positive frame rate, got {fps}")
    if k is not None:
        k = check_k(k, "--k")
    out = check_out(out, force)
    stages, t = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        stages[name] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()

    lr = load_run(run, allow_pickle) if run is not None else None
    lap("load run")
    with FeatureStore(cache_files(cache)) as store:
        sc, post, rates = _score(store, lr, pretrained, videos, fps, source, k, log, lap)
    filled, smoothed, decision = postprocess(sc, post, log)
    lap("fill, smooth, decide")
    table = build_table(sc, smoothed, decision, rates)
    # every output (the table and each timeline PNG) checked before any is written; all renamed at the end
    tl = {} if timelines == 0 else timeline_paths(sc, smoothed, out, timelines)
    with Outputs([out, *tl.values()], force=force) as outs:
        write_table(table, out, outs)
        lap("write")
        pngs = plot_timelines(sc, filled, smoothed, tl, post.k, outs)
        lap("timelines")
    if not rates:
        log("  time is empty: the cache does not record frame rates; pass --fps N or --source <video file or "
            "folder>")
    return Prediction(table, out, pngs, post, time.perf_counter() - t0, filled, stages)


def _score(store: FeatureStore, lr: LoadedRun | None, pretrained: str | None, videos, fps, source, k, log, lap):
    """Check the cache against the run (or the pretrained extractor), choose the videos, score them."""
    if lr is not None:
        if lr.provenance:
            check_provenance(store, lr.provenance, lr.dir)
        else:
            log(f"  note: {lr.dir} records no extractor provenance (made before it was recorded); the cache's "
                f"extractors are not checked against it")
        for fs in lr.feature_sets:
            featuresets.resolve(store, fs)
        exts = list(dict.fromkeys(x.split("/")[0] for fs in lr.feature_sets for x in featuresets.resolve(store, fs)))
    else:
        exts = [pretrained]
        pretrained_classes(store, pretrained)
    chosen = choose_videos(store, exts, videos)
    rates = frame_rates(source, chosen)
    lap("check cache")
    if fps is not None:
        rates = {v: float(fps) for v in chosen}
    if lr is not None:
        sc, post = score_run(store, lr, chosen), lr.post
        if k is not None:
            post = Post(k, post.thresholds, post.stat, "--k")
    else:
        sc = score_pretrained(store, pretrained, chosen)
        known = sorted({rates[v] for v in chosen if v in rates})
        if k is not None:
            post = Post(k, None, "mean", "--k")
        elif len(known) == 1:
            post = Post(int(round(DEFAULT_FPS_K * known[0])), None, "mean", f"half a second at {known[0]:g} frames/s")
        else:
            post = Post(FALLBACK_K, None, "mean", "the default for an unknown or mixed frame rate")
    lap("score")
    return sc, post, rates


def run_extractors(run: str | os.PathLike) -> list[str]:
    """The extractor names a run used (from its recorded provenance), for `make predict` to extract with."""
    run = Path(run)
    mp = run / "metrics.json"
    prov = runfolder.read_metrics(run).get("provenance") or {}
    if not prov:
        raise InputError("the run records no extractors (made before provenance was recorded); pass "
                         "EXTRACTORS=<specs> to make predict", mp)
    return list(prov)
