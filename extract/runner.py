"""The batched extraction runner: decode each frame once, feed every extractor, commit whole videos to the cache.

Pipeline::

    worker processes (torch DataLoader)            main process
    ───────────────────────────────────            ─────────────────────────────────────────────
    JPEG / video decode (+ face crop)  ──batch──►  [crops of one shape: resize on the device, same pixels]
    resize to every extractor's size               per extractor: forward (inference_mode, amp,
    (uint8, shared memory, pinned on CUDA)         channels_last on CUDA) → rows of each video
                                                   video complete → writer.write_video (atomic)

Batches span videos (image layouts); a video is committed as soon as all its rows are in, so a run killed at
any moment loses at most the videos in flight, and a rerun skips every committed video.

Batch size. Each row's forward pass is independent of the other rows, but not bit-for-bit independent of the
batch *size*: CPU (oneDNN) and GPU kernels pick other blockings for other batch shapes, which reorders float
sums. A run resumed with another ``--batch`` therefore matches an uninterrupted one to within
:data:`BATCH_TOLERANCE`, not exactly. Measured on the EfficientNet-B0 stand-in (random weights, 224 px, CPU,
torch 2.14) over batch sizes 1, 7 and 64: max |Δ| 2.0e-8 for logits (|logits| <= 0.039, i.e. 5e-7 of the
largest value) and 4.1e-8 for VA; the float16 embedding differed by 6.1e-5 at |x| <= 0.16, one float16 rounding
step. The batch size of the run that created a group is recorded in its ``extra["batch"]``.

Frames that cannot be used (no crop, undecodable or tiny image, no face found) become rows with
``face=False`` and zero outputs; undecodable files are logged as warnings naming the file and the run goes on.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from features.errors import InputError
from features.store import FeatureStore

from .base import TorchExtractor
from .facechunks import FaceChunks
from .faces import DetectorConfig, resolve as resolve_detector
from .resize import on_device_exact, resize_bilinear
from .sources import ImageVideo, Source, load_image, resize_square, shard_path, shard_videos

log = logging.getLogger(__name__)

try:    # the runner needs torch; keep `import extract.runner` working for listing/help without it
    from torch.utils.data import Dataset as _Dataset
except ImportError:  # pragma: no cover
    _Dataset = object

#: How far outputs of one frame may move with the batch size, relative to the output's largest |value| in the
#: batch: float32 outputs (logits, va) by 1e-5 of it (20x the measured 5e-7); the float16 embedding by one
#: float16 rounding step (2**-10 of it). See "Batch size" above.
BATCH_TOLERANCE = {"float32": 1e-5, "float16": 2.0 ** -10}

#: Provenance of how frames became model input; a group made from other frames/preprocessing is refused.
PIXELS = {"resize": "PIL bilinear to input_size x input_size (aspect ratio not kept)", "min_side": 16,
          "bad_frames": "face=False, zero outputs"}


@dataclass
class Summary:
    videos: int = 0                  # committed in this run
    skipped: int = 0                 # already in the cache
    frames: int = 0
    no_face: int = 0
    bad_files: int = 0
    seconds: float = 0.0
    out: str = ""
    wait_s: float = 0.0              # main process waiting for decoded frames (input-bound when large)
    model_s: float = 0.0             # forward passes, including host<->device copies
    write_s: float = 0.0             # committing videos to the cache

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.videos} videos ({self.skipped} already cached), {self.frames} frames, "
                f"{self.no_face} without a face ({self.bad_files} unreadable files), {self.seconds:.1f} s, "
                f"{self.fps:.1f} frames/s (waiting for frames {self.wait_s:.1f} s, models {self.model_s:.1f} s, "
                f"writing {self.write_s:.1f} s) -> {self.out}")


# ----------------------------------------------------------------------------------------------------------
# decoding in worker processes

def _as_is(item: dict) -> dict:
    """The loader's collate function: keep numpy metadata as numpy. The default turns every array into a
    tensor, and each tensor then crosses from the worker through its own file descriptor handshake (~1 ms);
    only the pixels need shared memory."""
    return item


def _worker_init(_: int) -> None:
    # decode workers are many; keep each single-threaded so they do not fight over cores
    import torch
    torch.set_num_threads(1)
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass


class ImageBatches(_Dataset):
    """Map-style dataset: item i = batch i of the flat frame list of all pending image videos (in order)."""

    def __init__(self, videos: Sequence[ImageVideo], vids: Sequence[int], sizes: Sequence[int], batch: int,
                 device_resize: bool = False):
        self.sizes, self.batch, self.device_resize = list(sizes), int(batch), bool(device_resize)
        # Paths as compact numpy byte strings (folder id + file name): no per-item Python objects, so forked
        # workers do not copy the list page by page through reference counting.
        self.folders = [str(v.folder) for v in videos]
        names, vid, frame, fold = [], [], [], []
        for k, (v, vi) in enumerate(zip(videos, vids)):
            names += [os.path.basename(p).encode() if p else b"" for p in v.paths]
            vid.append(np.full(v.n_frames, vi, np.int64))
            frame.append(np.arange(1, v.n_frames + 1, dtype=np.int64))
            fold.append(np.full(v.n_frames, k, np.int32))
        self.names = np.array(names, dtype="S") if names else np.zeros(0, "S1")
        self.vid = np.concatenate(vid) if vid else np.zeros(0, np.int64)
        self.frame = np.concatenate(frame) if frame else np.zeros(0, np.int64)
        self.fold = np.concatenate(fold) if fold else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return math.ceil(len(self.vid) / self.batch)

    def __getitem__(self, i: int) -> dict:
        import torch
        sl = slice(i * self.batch, min((i + 1) * self.batch, len(self.vid)))
        n = sl.stop - sl.start
        imgs: list = [None] * n
        bad = []
        for r, (name, k) in enumerate(zip(self.names[sl], self.fold[sl])):
            if not name:
                continue            # no crop for this frame (no face found by the data set's own detector)
            path = os.path.join(self.folders[k], name.decode())
            img, why = load_image(path)
            if img is None:
                bad.append((path, why))
                continue
            imgs[r] = img
        ok = np.array([im is not None for im in imgs], bool)
        out = {"video": self.vid[sl], "frame": self.frame[sl], "ok": ok, "pix": {}, "bad": bad, "ends": {}}
        shapes = {im.shape for im in imgs if im is not None}
        here = self.sizes
        if self.device_resize and len(shapes) == 1:
            shape = next(iter(shapes))
            here = [s for s in self.sizes if not on_device_exact(shape[:2], s)]
            if len(here) < len(self.sizes):
                # every crop has one shape (Aff-Wild2's aligned crops are all 112x112): ship the decoded
                # pixels; the main process resizes them up on the model's device (extract.resize: same pixels
                # as PIL). Downscales (e.g. a 64 px model beside a 224 px one) are still done here.
                raw = torch.zeros((n, *shape), dtype=torch.uint8)
                view = raw.numpy()
                for r in np.flatnonzero(ok):
                    view[r] = imgs[r]
                out["raw"] = raw
        for s in here:
            pix = torch.zeros((n, s, s, 3), dtype=torch.uint8)
            view = pix.numpy()                             # fill through a numpy view (no per-row tensors)
            for r in np.flatnonzero(ok):
                view[r] = resize_square(imgs[r], s)
            out["pix"][s] = pix
        return out


# ----------------------------------------------------------------------------------------------------------
# the main loop

@dataclass
class _Pending:
    expected: int | None
    frames: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    outs: dict = field(default_factory=dict)      # extractor index -> output name -> list of arrays
    received: int = 0


def _pixels(chunk: dict, sizes: Sequence[int], device) -> dict:
    """Model input per size: the workers' resized crops, and the decoded crops resized here on `device` for
    the sizes the workers left out."""
    pix = dict(chunk["pix"])
    if "raw" in chunk:
        raw = chunk["raw"].to(device, non_blocking=True)
        pix.update({s: resize_bilinear(raw, s) for s in sizes if s not in pix})
    return pix


def _take(x, rows: np.ndarray):
    """Rows of a batch tensor; the index is known on the host, so a GPU need not report a count back (a
    boolean mask would make the host wait for the device)."""
    import torch
    return x.index_select(0, torch.from_numpy(np.flatnonzero(rows)).to(x.device, non_blocking=True))


def _launch(ext, x, rows: np.ndarray, ok: np.ndarray, outputs: dict[str, int]) -> Callable[[], dict]:
    """Start `ext` on the batch rows that need it (`rows`) and hold a face (`ok`); the returned function gives
    outputs for every row of the batch, zeros where a row was not run."""
    n = len(ok)
    run_rows = rows & ok
    fin = None
    if run_rows.any():
        fin = ext.launch(x if run_rows.all() else _take(x, run_rows))

    def finish() -> dict[str, np.ndarray]:
        res = {k: np.zeros((n, d), np.float32) for k, d in outputs.items()}
        if fin is not None:
            y = fin()
            for k in outputs:
                res[k][run_rows] = y[k]
        return res
    return finish


def _detects(source: Source, detector: DetectorConfig) -> bool:
    """Whether frames go through FaceChunks (decoded with face detection, or video files): their row counts
    are known only once decoded."""
    return source.layout == "videos" or detector.detect == "on"


def _source_provenance(source: Source) -> dict:
    return {**source.description, **PIXELS}


def _check_source(store: FeatureStore, name: str, prov: dict, path: Path) -> None:
    """Refuse appending features of other frames (e.g. aligned vs plain crops) to an existing group."""
    if name in store.extractors:
        old = store.info(name).extra.get("source")
        if old is not None and old != prov:
            diff = "; ".join(f"{k}: {old.get(k)} vs {prov.get(k)}" for k in sorted(set(old) | set(prov))
                             if old.get(k) != prov.get(k))
            raise InputError(f"extractor {name!r} already holds features of other frames ({diff}); "
                             f"write to another cache file or another extractor name", path)


def run(source: Source, extractors: Sequence[Any], out: str | os.PathLike, *, batch: int = 64,
        workers: int | None = None, device: str = "cpu", shard: tuple[int, int] | None = None,
        limit_videos: int | None = None, detector: DetectorConfig | None = None,
        progress: bool = True, resize_on: str = "auto") -> Summary:
    """Extract features of `source`'s videos with every extractor into the cache `out` (resumable).

    `extractors` are built extractor objects (see extract.base.Extractor), already on `device`.
    With `shard=(i, n)` only shard i's videos are extracted, into ``<out stem>.shard-i-of-n.h5``.
    `resize_on`: where image crops are resized to each model's input size: "workers" (PIL, in the decode
    processes), "device" (a batch at a time on `device`, bit-identical to PIL, for batches whose crops share
    one shape no larger than the input; others still resize in the workers) or "auto" (device on CUDA).
    """
    t0 = time.perf_counter()
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    if limit_videos is not None and limit_videos < 1:
        raise InputError(f"--limit-videos must be >= 1, got {limit_videos}")
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    if resize_on not in ("auto", "workers", "device"):
        raise InputError(f"--resize-on must be auto, workers or device, got {resize_on!r}")
    names = [e.name for e in extractors]
    if len(set(names)) != len(names):
        raise InputError(f"two extractors share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}; "
                         f"give one another name (spec option name=...)")
    videos = list(source.videos)
    if limit_videos is not None:
        videos = videos[:limit_videos]
    out = Path(out)
    if shard is not None:
        videos = shard_videos(videos, *shard)
        out = shard_path(out, *shard)
    detector = resolve_detector(detector, source.layout)
    if _detects(source, detector) or source.layout == "images":
        source = dataclasses.replace(source, description={**source.description, "detector": detector.to_dict()})
    prov = _source_provenance(source)
    summary = Summary(out=str(out))
    if workers is None:
        workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    cuda = str(device).startswith("cuda")
    device_resize = resize_on == "device" or (resize_on == "auto" and cuda)

    store = FeatureStore(out, mode="a")
    finished = False
    try:
        _extract(store, source, videos, extractors, out, prov, summary, batch, workers, device, detector,
                 progress, device_resize)
        finished = True
    finally:
        try:
            store.close()       # folds committed videos into the main file; on failure they stay in segments
        except Exception as e:
            if finished:
                raise
            log.error("%s: could not compact the cache (%s); committed videos stay in %s", out, e,
                      FeatureStore.parts_dir(out))
    summary.seconds = time.perf_counter() - t0
    return summary


def _extract(store, source, videos, extractors, out, prov, summary, batch, workers, device, detector, progress,
             device_resize):
    import torch
    from tqdm.auto import tqdm
    cuda = str(device).startswith("cuda")
    writers = []
    for e in extractors:
        _check_source(store, e.name, prov, out)
        info = e.info()
        # the batch size of the run that creates the group (outputs depend on it within BATCH_TOLERANCE)
        info = dataclasses.replace(info, extra={**info.extra, "source": prov, "batch": int(batch)})
        writers.append(store.writer(info))
    needs = np.array([[not w.has_video(v.name) for w in writers] for v in videos], bool).reshape(
        len(videos), len(writers))
    todo = [k for k in range(len(videos)) if needs[k].any()]
    summary.skipped = len(videos) - len(todo)
    empty = [k for k in todo if isinstance(videos[k], ImageVideo) and videos[k].n_frames == 0]
    for k in empty:
        log.warning("%s: no frames (no images and no annotation); skipped", videos[k].describe())
    todo = [k for k in todo if k not in set(empty)]
    if not todo:
        return
    sizes = sorted({int(e.input_size) for e in extractors})
    size_of = [int(e.input_size) for e in extractors]
    faces_found_here = _detects(source, detector)
    if faces_found_here:
        ds = FaceChunks([videos[k] for k in todo], todo, sizes, batch, detector)
        n_workers = min(workers, len(todo))
    else:
        ds = ImageBatches([videos[k] for k in todo], todo, sizes, batch, device_resize)
        n_workers = min(workers, len(ds))
    # OpenCV's thread pool does not survive fork(): a forked worker that calls cv2 after the parent has used it
    # deadlocks. Video workers (cv2 detection) therefore start from a fresh forkserver process; image workers
    # use PIL only and fork (cheaper start).
    ctx = "forkserver" if faces_found_here and n_workers else None
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, collate_fn=_as_is, num_workers=n_workers, pin_memory=cuda,
        worker_init_fn=_worker_init, prefetch_factor=4 if n_workers else None, persistent_workers=False,
        multiprocessing_context=ctx)

    pending: dict[int, _Pending] = {
        k: _Pending(None if faces_found_here else videos[k].n_frames) for k in todo}
    total = sum(max(videos[k].n_frames, 0) for k in todo)
    bar = tqdm(total=total or None, unit="frame", disable=not progress, dynamic_ncols=True,
               desc=out.name, smoothing=0.1)
    try:
        clock = time.perf_counter

        def finish(chunk: dict, launched: list) -> None:
            """Outputs of a launched batch into the videos' buffers; commit every video now complete."""
            vid, ok = chunk["video"], chunk["ok"]
            t = clock()
            results = [f() if f is not None else None for f in launched]
            summary.model_s += clock() - t
            _collect(chunk, vid, ok, results, pending)
            bar.update(len(vid))
            t = clock()
            for k in _complete(pending, chunk["ends"], vid):
                p = pending.pop(k)
                if p.received == 0:
                    log.warning("%s: no frames decoded; skipped", videos[k].describe())
                    continue
                _commit(videos[k], p, writers, needs[k], out)
                summary.videos += 1
                summary.frames += p.received
                summary.no_face += int(p.received - sum(int(f.sum()) for f in p.faces))
                bar.set_postfix_str(f"{summary.videos}/{len(todo)} videos", refresh=False)
            summary.write_s += clock() - t

        # One batch in flight: batch i+1 is fetched and launched before batch i's outputs are read, so on a GPU
        # the forward pass overlaps the host's work (waiting for frames, collecting, writing).
        prev = None
        with torch.inference_mode():
            it = iter(loader)
            while True:
                t = clock()
                chunk = next(it, None)
                summary.wait_s += clock() - t
                if chunk is None or "error" in chunk:
                    break
                for path, why in chunk["bad"]:
                    log.warning("%s: %s; frame masked (face=False)", path, why)
                    summary.bad_files += 1
                vid, ok = chunk["video"], chunk["ok"]
                t = clock()
                pix = _pixels(chunk, sizes, device)
                launched = []
                for j, e in enumerate(extractors):
                    rows = needs[vid, j]
                    x = pix[size_of[j]]
                    if rows.any() and x.device.type != "cpu" and not isinstance(e, TorchExtractor):
                        x = x.cpu()                 # numpy-fed runtimes (onnxruntime, Keras) read host memory
                    launched.append(_launch(e, x, rows, ok, e.outputs) if rows.any() else None)
                summary.model_s += clock() - t
                if prev is not None:
                    finish(*prev)
                prev = (chunk, launched)
            if prev is not None:
                finish(*prev)           # before any error below: what was decoded is committed
            if chunk is not None:
                raise InputError(chunk["error"])
    finally:
        bar.close()
    if pending:     # cannot happen unless a worker lost rows: refuse to commit partial videos
        raise InputError(f"{len(pending)} videos were not completed (e.g. "
                         f"{videos[next(iter(pending))].describe()})")


def _collect(chunk: dict, vid: np.ndarray, ok: np.ndarray, results: list, pending: dict[int, _Pending]) -> None:
    """Append the chunk's rows to each video's pending buffers (rows of a video are contiguous and ordered)."""
    if len(vid) == 0:
        return
    frame = chunk["frame"]
    cuts = np.flatnonzero(np.diff(vid)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(vid)]):
        p = pending[int(vid[lo])]
        p.frames.append(frame[lo:hi])
        p.faces.append(ok[lo:hi])
        p.received += hi - lo
        for j, r in enumerate(results):
            if r is not None:
                d = p.outs.setdefault(j, {})
                for k, a in r.items():
                    d.setdefault(k, []).append(a[lo:hi])


def _complete(pending: dict[int, _Pending], ends: dict, vid: np.ndarray) -> list[int]:
    for k, n in ends.items():
        pending[int(k)].expected = int(n)
    return [k for k in dict.fromkeys(int(v) for v in vid) | {int(k): None for k in ends}
            if pending[k].expected is not None and pending[k].received >= pending[k].expected]


def _commit(video, p: _Pending, writers, need: np.ndarray, out: Path) -> None:
    frame = np.concatenate(p.frames) if p.frames else np.zeros(0, np.int64)
    face = np.concatenate(p.faces) if p.faces else np.zeros(0, bool)
    for j, w in enumerate(writers):
        if not need[j]:
            continue
        got = p.outs.get(j, {})
        arrays = {k: np.concatenate(got[k]) if k in got else np.zeros((len(frame), d), np.float32)
                  for k, d in w.info.outputs.items()}
        try:
            w.write_video(video.name, frame=frame, face=face, **arrays)
        except OSError as e:
            raise InputError(f"cannot commit video {video.name!r} ({e.strerror or e}); the videos committed "
                             f"before it are kept, rerun to resume", out) from None
