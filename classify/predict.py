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
--source), face, far_from_face, source_video (only when the cache holds persons tracked in a video: the video
file each item `<video>_p<k>` was cut from), then per task the post-processed outputs: EXPR the 8 class
probabilities and `label` (the class name); VA `valence`, `arousal`; AU the 12 probabilities and `<AU>_on`
(0/1); then, when a face detector ran at extraction, the face box, score, five landmarks and an approximate head
pose (classify.predict_faces). Beside the table, one timeline PNG per video (raw vs smoothed, postprocess.plots).

Frames with no face near (`--max-gap`, default 1 s; frames where the frame rate is unknown, 24 by default): a
frame farther than that from every face frame of its item is left empty (far_from_face = True) rather than
given the values of a face seconds away; a video with no face at all is empty throughout. `postprocess submit`
instead fills every frame, however far from a face, since a challenge file needs a value on every line.

Modules: classify.runfolder loads the run, classify.provenance checks the cache against it,
classify.predict_scores scores the frames, postprocess.timeline fills, smooths and decides, classify.predict_table
writes the table; this module runs them in order.

`--pretrained <extractor>` needs no run: the extractor's own class logits, mapped to Aff-Wild2's 8 classes
(features.tasks.affwild_probabilities), gap-filled and smoothed (default k: half a second each side).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from features.errors import InputError
from features.outputs import Outputs
from features.store import FeatureStore, cache_files
from postprocess.config import Post
from postprocess.plots import timeline_files, write_timelines
from postprocess.scores import ScoreSet
from postprocess.segments import video_segments
from postprocess.smoothing import check_k
from postprocess.timeline import decided

from . import featuresets
from .predict_faces import MAX_GAP, face_columns, far_from_face, gap_limits
from .predict_scores import CHUNK_ROWS, choose_videos, pretrained_classes, score_pretrained, score_run
from .predict_table import OUT_FORMATS, build_table, check_out, frame_rates, read_table, write_table
from .provenance import check_provenance, run_provenance
from .runfolder import LoadedRun, load_run, run_extractors, run_post

__all__ = ["CHUNK_ROWS", "MAX_GAP", "OUT_FORMATS", "LoadedRun", "Post", "Prediction", "build_table", "check_out",
           "check_provenance", "choose_videos", "frame_rates", "load_run", "predict", "read_table",
           "run_extractors", "run_post", "run_provenance", "score_pretrained", "score_run", "timeline_paths",
           "write_table"]

log = logging.getLogger(__name__)

DEFAULT_FPS_K = 0.5            # --pretrained: default half-width in seconds (a one-second window)
FALLBACK_K = 12                # ... in frames when the frame rate is unknown (0.5 s at 24 fps)


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
        far = int(self.table["far_from_face"].sum()) if "far_from_face" in self.table else 0
        return (f"wrote {self.out}: {len(self.table)} frames of {n_v} videos ({int(self.table['face'].sum())} with "
                f"a face" + (f", {far} left empty: no face within --max-gap" if far else "")
                + f"), k = {self.post.k} from {self.post.source}"
                + (f"; {len(self.timelines)} timelines beside it" if self.timelines else "")
                + f" [{self.seconds:.1f} s]")


class _Laps:
    """Seconds per stage, each from the end of the one before (Prediction.stages)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self._t, 2)
        self._t = now


def predict(cache: str | os.PathLike, out: str | os.PathLike, run: str | os.PathLike | None = None,
            pretrained: str | None = None, videos: Sequence[str] | None = None, fps: float | None = None,
            source: str | os.PathLike | None = None, k: int | None = None, timelines: int | None = None,
            allow_pickle: bool = False, force: bool = False, max_gap: float | None = None) -> Prediction:
    """Apply `run` (or `pretrained` logits) to `cache` and write the per-frame table and timelines.

    k: override the run's half-width (frames). timelines: PNGs for the first N videos (None: all, 0: none).
    max_gap: frames farther than this from every face frame of their video are left empty: seconds, or frames
    where the frame rate is unknown (None: 1 s, or 24 frames)."""
    t0 = time.perf_counter()
    k, out = _check_args(run, pretrained, fps, k, out, force, max_gap)
    lap = _Laps()
    lr = load_run(run, allow_pickle) if run is not None else None
    lap("load run")
    with FeatureStore(cache_files(cache)) as store:
        chosen, exts = _check_cache(store, lr, pretrained, videos)
        origin = store.video_sources(exts[0])
        sources = {v: origin[v] for v in chosen} if any(origin[v] != v for v in chosen) else None
        file_rates = frame_rates(source, list(dict.fromkeys((sources or {}).get(v, v) for v in chosen)))
        rates = {v: file_rates[(sources or {}).get(v, v)] for v in chosen if (sources or {}).get(v, v) in file_rates}
        lap("check cache")
        if fps is not None:
            rates = {v: float(fps) for v in chosen}
        sc = score_run(store, lr, chosen) if lr is not None else score_pretrained(store, pretrained, chosen)
        post = _post(lr, k, rates, chosen)
        lap("score")
        faces = face_columns(store, exts, sc)
        lap("faces")
    d = decided(sc, post.k, post.stat, post.thresholds)
    if len(d.faceless):
        log.info("%d of %d videos have no frame with a face; their rows are left empty: %s", len(d.faceless),
                 len(video_segments(sc.video)), ", ".join(map(str, d.faceless[:5])))
    far = far_from_face(sc.face, sc.video, sc.frame, gap_limits(max_gap, rates, video_segments(sc.video).names))
    d.filled[far] = np.nan
    d.smoothed[far] = np.nan
    lap("fill, smooth, decide")
    table = build_table(sc, d.smoothed, d.decision, rates, far=far, faces=faces, sources=sources)
    # every output (the table and each timeline PNG) checked before any is written; all renamed at the end
    tl = {} if timelines == 0 else timeline_paths(sc, d.smoothed, out, timelines)
    with Outputs([out, *tl.values()], force=force) as outs:
        write_table(table, out, outs)
        lap("write")
        pngs = write_timelines(outs, list(tl.values()), list(tl), video_segments(sc.video), sc.task, sc.frame,
                               d.filled, d.smoothed, title=lambda v: f"{v}: raw vs smoothed (k = {post.k})")
        lap("timelines")
    if not rates:
        log.info("time is empty: the cache does not record frame rates; pass --fps N or --source <video file or "
                 "folder>")
    return Prediction(table, out, pngs, post, time.perf_counter() - t0, d.filled, lap.stages)


def _check_args(run, pretrained, fps, k, out, force, max_gap=None) -> tuple[int | None, Path]:
    """The options that need no file read: one source, a positive frame rate, a k >= 0, a --max-gap >= 0, an
    --out to write."""
    if (run is None) == (pretrained is None):
        raise InputError("give either --run <run folder> or --pretrained <extractor>")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be a positive frame rate, got {fps}")
    if max_gap is not None and not (isinstance(max_gap, (int, float)) and 0 <= max_gap <= MAX_GAP):
        raise InputError(f"--max-gap must be >= 0 and <= {MAX_GAP:g} (seconds, or frames where the frame rate is "
                         f"unknown), got {max_gap!r}")
    if k is not None:
        k = check_k(k, "--k")
    return k, check_out(out, force)


def _check_cache(store: FeatureStore, lr: LoadedRun | None, pretrained: str | None,
                 videos: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Check the cache against the run (or the pretrained extractor); the videos to score and the extractors
    read."""
    if lr is not None:
        if lr.provenance:
            check_provenance(store, lr.provenance, lr.dir)
        else:
            log.warning("note: %s records no extractor provenance (made before it was recorded); the cache's "
                        "extractors are not checked against it", lr.dir)
        for fs in lr.feature_sets:
            featuresets.resolve(store, fs)
        exts = list(dict.fromkeys(x.split("/")[0] for fs in lr.feature_sets for x in featuresets.resolve(store, fs)))
    else:
        exts = [pretrained]
        pretrained_classes(store, pretrained)
    return choose_videos(store, exts, videos), exts


def _post(lr: LoadedRun | None, k: int | None, rates: dict[str, float], chosen: list[str]) -> Post:
    """The run's post-processing (its k replaced by --k); for --pretrained, half a second at the videos' one
    frame rate, else a fixed default."""
    if lr is not None:
        return lr.post if k is None else Post(k, lr.post.thresholds, lr.post.stat, "--k")
    if k is not None:
        return Post(k, None, "mean", "--k")
    known = sorted({rates[v] for v in chosen if v in rates})
    if len(known) == 1:
        return Post(int(round(DEFAULT_FPS_K * known[0])), None, "mean", f"half a second at {known[0]:g} frames/s")
    return Post(FALLBACK_K, None, "mean", "the default for an unknown or mixed frame rate")


def timeline_paths(sc: ScoreSet, smoothed: np.ndarray, out: Path, limit: int | None) -> dict[int, Path]:
    """Video index -> its PNG beside the table, `<out stem>.<video>.png` (a name too long for the file system is
    shortened with a hash, features.outputs.data_name), for the first `limit` videos that have scores (frames
    left empty, far from a face, are gaps in the plot)."""
    seg = video_segments(sc.video)
    idx = [i for i, (a, b) in enumerate(zip(seg.starts, seg.ends))
           if i < (len(seg) if limit is None else limit) and np.isfinite(smoothed[a:b]).any()]
    return dict(zip(idx, timeline_files(out.parent, [seg.names[i] for i in idx], prefix=f"{out.stem}.")))
