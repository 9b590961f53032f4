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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from features.errors import InputError
from features.store import FeatureStore

from .base import TorchExtractor
from . import jpeg
from .committer import Committer, marker_item
from .datasets import FaceChunks, ImageBatches, _as_is, _worker_init
from .faces import DetectorConfig, resolve as resolve_detector
from .planning import select_videos
from .resize import resize_bilinear
from .sources import ImageVideo, Source

log = logging.getLogger(__name__)

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
    short_videos: int = 0            # video files that decoded fewer frames than their header announces
    persons: int = 0                 # --faces all on videos: persons tracked (one item each)
    seconds: float = 0.0
    out: str = ""
    wait_s: float = 0.0              # main process waiting for decoded frames (input-bound when large)
    model_s: float = 0.0             # forward passes, including host<->device copies
    write_s: float = 0.0             # committing videos to the cache

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.videos} videos ({self.skipped} already cached), "
                + (f"{self.persons} persons tracked, " if self.persons else "")
                + f"{self.frames} frames, "
                f"{self.no_face} without a face ({self.bad_files} unreadable files"
                + (f", {self.short_videos} video file{'s' if self.short_videos > 1 else ''} shorter than announced"
                   if self.short_videos else "")
                + f"), {self.seconds:.1f} s, "
                f"{self.fps:.1f} frames/s (waiting for frames {self.wait_s:.1f} s, models {self.model_s:.1f} s, "
                f"writing {self.write_s:.1f} s) -> {self.out}")


# ----------------------------------------------------------------------------------------------------------
# model launches

def _pixels(chunk: dict, sizes: Sequence[int], device) -> dict:
    """Model input per size: the workers' resized crops, and the decoded crops resized here on `device` for
    the sizes the workers left out; or the JPEG bytes the workers read, decoded on `device` (extract.jpeg)."""
    if "jpeg" in chunk:
        return jpeg.decoded_pixels(chunk, sizes, device)
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


@dataclass(frozen=True)
class Settings:
    """How a run decodes and batches (the same for every video and, on Ray, for every worker)."""
    batch: int = 64
    workers: int | None = None               # decode processes; None: cores - 1, at most 8
    device: str = "cpu"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    progress: bool = True
    resize_on: str = "auto"
    decode: str = "auto"                     # JPEG decode: workers (PIL) | device (extract.jpeg) | auto

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        if self.resize_on not in ("auto", "workers", "device"):
            raise InputError(f"--resize-on must be auto, workers or device, got {self.resize_on!r}")
        if self.decode not in ("auto", "workers", "device"):
            raise InputError(f"--decode must be auto, workers or device, got {self.decode!r}")

    @property
    def n_workers(self) -> int:
        return self.workers if self.workers is not None else max(1, min(8, (os.cpu_count() or 2) - 1))

    @property
    def cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    @property
    def device_resize(self) -> bool:
        return self.resize_on == "device" or (self.resize_on == "auto" and self.cuda)

    def device_decode(self, source: Source) -> bool:
        """Whether baseline JPEGs are decoded on the model's device (image crops given, no detection)."""
        wanted = self.decode == "device" or (self.decode == "auto" and self.cuda)
        return wanted and not detects(source, self.detector)


def check_names(extractors: Sequence[Any]) -> None:
    names = [e.name for e in extractors]
    if len(set(names)) != len(names):
        raise InputError(f"two extractors share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}; "
                         f"give one another name (spec option name=...)")


def detects(source: Source, detector: DetectorConfig) -> bool:
    """Whether frames go through FaceChunks (decoded with face detection, or video files): their row counts
    are known only once decoded."""
    return source.layout == "videos" or detector.detect == "on"


def tracks(source: Source, detector: DetectorConfig) -> bool:
    """Whether each person of a video becomes an item of its own (``--faces all`` on video files)."""
    return source.layout == "videos" and detector.faces == "all" and detector.detect == "on"


def with_detector(source: Source, detector: DetectorConfig) -> Source:
    """Video files, photo folders and detected crops: the face detector's settings become part of the
    source's provenance."""
    if detects(source, detector) or source.layout == "images":
        source = dataclasses.replace(source, description={**source.description, "detector": detector.to_dict()})
    return source


def run(source: Source, extractors: Sequence[Any], out: str | os.PathLike, *, batch: int = 64,
        workers: int | None = None, device: str = "cpu", shard: tuple[int, int] | None = None,
        limit_videos: int | None = None, detector: DetectorConfig | None = None,
        progress: bool = True, resize_on: str = "auto", decode: str = "auto") -> Summary:
    """Extract features of `source`'s videos with every extractor into the cache `out` (resumable).

    `extractors` are built extractor objects (see extract.base.Extractor), already on `device`.
    With `shard=(i, n)` only shard i's videos are extracted, into ``<out stem>.shard-i-of-n.h5``.
    `resize_on`: where image crops are resized to each model's input size: "workers" (PIL, in the decode
    processes), "device" (a batch at a time on `device`, bit-identical to PIL, for batches whose crops share
    one shape no larger than the input; others still resize in the workers) or "auto" (device on CUDA).
    `decode`: where baseline JPEG crops are decoded: "workers" (PIL), "device" (torchvision.io.decode_jpeg on
    `device`, a batch at a time; the workers only read the files; see extract.jpeg) or "auto" (device on CUDA).
    """
    t0 = time.perf_counter()
    settings = Settings(batch=batch, workers=workers, device=device,
                        detector=resolve_detector(detector, source.layout), progress=progress, resize_on=resize_on,
                        decode=decode)
    check_names(extractors)
    videos, out = select_videos(source.videos, Path(out), limit_videos, shard)
    source = with_detector(source, settings.detector)
    summary = Summary(out=str(out))

    store = FeatureStore(out, mode="a")
    finished = False
    try:
        extract_into(store, source, videos, extractors, settings, summary, out)
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


# ----------------------------------------------------------------------------------------------------------
# the pieces both engines share: writers, the work plan, the loader, the one-batch-ahead loop

def open_writers(store: FeatureStore, extractors: Sequence[Any], prov: dict, out: Path, batch: int,
                 decoder: str = "PIL in the decode workers") -> list:
    writers = []
    for e in extractors:
        _check_source(store, e.name, prov, out)
        info = e.info()
        # the batch size of the run that creates the group (outputs depend on it within BATCH_TOLERANCE)
        info = dataclasses.replace(info, extra={**info.extra, "source": prov, "batch": int(batch),
                                                "decoder": decoder})
        writers.append(store.writer(info))
    return writers


@dataclass
class Work:
    """What is left to do: `needs[k, j]` is True while video k lacks extractor j's features."""
    needs: np.ndarray
    todo: list[int]
    skipped: int


def plan_work(videos: Sequence[Any], writers: Sequence[Any], wanted: np.ndarray | None = None,
              tracked: bool = False) -> Work:
    """Which (video, extractor) pairs to compute: not yet in the cache and, if given, `wanted`. A `tracked`
    video is in the cache when its first person is (extract.committer.marker_item); one in which no person was
    tracked is not, and is done again by a rerun."""
    needs = np.array([[not w.has_video(marker_item(v, tracked)) for w in writers] for v in videos], bool).reshape(
        len(videos), len(writers))
    if wanted is not None:
        needs &= np.asarray(wanted, bool).reshape(needs.shape)
    todo = [k for k in range(len(videos)) if needs[k].any()]
    skipped = len(videos) - len(todo)
    empty = [k for k in todo if isinstance(videos[k], ImageVideo) and videos[k].n_frames == 0]
    for k in empty:
        log.warning("%s: no frames (no images and no annotation); skipped", videos[k].describe())
    todo = [k for k in todo if k not in set(empty)]
    return Work(needs, todo, skipped)


def create_loader(source: Source, videos: Sequence[Any], todo: Sequence[int], sizes: Sequence[int],
                  settings: Settings):
    """The decode pipeline over `videos[todo]`: a torch DataLoader of batches (images) or chunks (video files)."""
    import torch
    batch, workers = settings.batch, settings.n_workers
    found_here = detects(source, settings.detector)
    if found_here:
        ds = FaceChunks([videos[k] for k in todo], todo, sizes, batch, settings.detector)
        n_workers = min(workers, len(todo))
    else:
        ds = ImageBatches([videos[k] for k in todo], todo, sizes, batch, settings.device_resize,
                          settings.device_decode(source))
        n_workers = min(workers, len(ds))
    # OpenCV's thread pool does not survive fork(): a forked worker that calls cv2 after the parent has used it
    # deadlocks. Video workers (cv2 detection) therefore start from a fresh forkserver process; image workers
    # use PIL only and fork (cheaper start).
    ctx = "forkserver" if found_here and n_workers else None
    return torch.utils.data.DataLoader(
        ds, batch_size=None, collate_fn=_as_is, num_workers=n_workers, pin_memory=settings.cuda,
        worker_init_fn=_worker_init, prefetch_factor=4 if n_workers else None, persistent_workers=False,
        multiprocessing_context=ctx)


class OneAhead:
    """Iterate (chunk, launched) pairs with batch i+1 fetched and launched before batch i is handed out, so on
    a GPU the forward pass overlaps the host's work (waiting for frames, collecting, writing).

    `launch(chunk)` starts the models and returns their finish functions. A worker's ``{"error": ...}`` chunk
    ends the iteration after the batches before it; it is then in :attr:`error`."""

    def __init__(self, chunks: Any, launch: Callable[[dict], list], summary: Summary):
        self.chunks, self.launch, self.summary = chunks, launch, summary
        self.error: str | None = None

    def __iter__(self) -> Iterator[tuple[dict, list]]:
        clock = time.perf_counter
        prev = None
        it = iter(self.chunks)
        while True:
            t = clock()
            chunk = next(it, None)
            self.summary.wait_s += clock() - t
            if chunk is None:
                break
            if "error" in chunk:
                self.error = chunk["error"]
                break
            t = clock()
            launched = self.launch(chunk)
            self.summary.model_s += clock() - t
            if prev is not None:
                yield prev
            prev = (chunk, launched)
        if prev is not None:
            yield prev


def extract_into(store: FeatureStore, source: Source, videos: Sequence[Any], extractors: Sequence[Any],
                 settings: Settings, summary: Summary, out: Path, wanted: np.ndarray | None = None,
                 bar: Any = None) -> None:
    """Compute what `store` lacks of `videos` (restricted to `wanted`, see plan_work) and commit it video by
    video. The local runner calls this once; each Ray worker once per lease of videos, on its own shard file.
    `bar`: a progress sink (default: a tqdm bar when settings.progress)."""
    import torch
    prov = _source_provenance(source)
    on_device = settings.device_decode(source)
    if on_device:
        prov = {**prov, **jpeg.provenance(settings.device)}
    writers = open_writers(store, extractors, prov, out, settings.batch,
                           jpeg.description(settings.device) if on_device else "PIL in the decode workers")
    work = plan_work(videos, writers, wanted, tracks(source, settings.detector))
    summary.skipped += work.skipped
    if not work.todo:
        return
    needs, todo = work.needs, work.todo
    sizes = sorted({int(e.input_size) for e in extractors})
    size_of = [int(e.input_size) for e in extractors]
    loader = create_loader(source, videos, todo, sizes, settings)
    own_bar = bar is None
    if own_bar:
        from tqdm.auto import tqdm
        total = sum(max(videos[k].n_frames, 0) for k in todo)
        bar = tqdm(total=total or None, unit="frame", disable=not settings.progress, dynamic_ncols=True,
                   desc=out.name, smoothing=0.1)
    committer = Committer(videos, todo, needs, writers, out, summary, bar,
                          known_lengths=not detects(source, settings.detector))

    def launch(chunk: dict) -> list:
        pix = _pixels(chunk, sizes, settings.device)        # may mask rows whose JPEG fails to decode
        for path, why in chunk["bad"]:
            log.warning("%s: %s; frame masked (face=False)", path, why)
            summary.bad_files += 1
        vid, ok = chunk["video"], chunk["ok"]
        launched = []
        for j, e in enumerate(extractors):
            rows = needs[vid, j]
            x = pix[size_of[j]]
            if rows.any() and x.device.type != "cpu" and not isinstance(e, TorchExtractor):
                x = x.cpu()                 # numpy-fed runtimes (onnxruntime, Keras) read host memory
            launched.append(_launch(e, x, rows, ok, e.outputs) if rows.any() else None)
        return launched

    try:
        with torch.inference_mode():
            ahead = OneAhead(loader, launch, summary)
            for chunk, launched in ahead:
                committer.finish(chunk, launched)
            # what was decoded before a worker's error is committed above
            if ahead.error is not None:
                raise InputError(ahead.error)
    finally:
        if own_bar:
            bar.close()
    committer.check_done()
