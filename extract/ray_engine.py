"""Extraction over a Ray cluster: ``python -m extract run ... --engine ray [--ray-address auto|HOST:PORT]``.

Why Ray Core actors (not Ray Data's ``map_batches``): a video is committed whole, by the process that holds its
rows, into a crash-safe file; an actor that owns one shard file and runs the local runner's own code path
(extract.runner.extract_into: the DataLoader, the one-batch-ahead loop, the Committer) on leases of whole videos
gives that directly. Decoding stays inside each actor's node (its DataLoader workers read the JPEGs / video files
next to the GPU): compressed frames are 3-4x smaller than decoded crops, so shipping pixels through the object
store would cost more than decoding where the model runs.

- One actor per GPU (``--gpus-per-worker``; fractional CPUs on a CPU-only cluster). Actor i writes
  ``<out stem>.shard-i-of-n.h5`` exactly as ``--shard i/n`` names its file, so the n files read as one cache:
  ``FeatureStore(extract.sources.shard_paths(out, n))``.
- Planning: videos go longest first to the least loaded worker (extract.planning.balance); each worker takes
  its queue in leases of whole videos; a worker with an empty queue takes the shortest videos of the fullest one.
- A worker that dies (process killed, node lost): the videos of its lease that it had not committed (read back
  from its file) go to the live worker with the least work queued; a replacement actor takes over its file.
- The driver dies: the actors go with it; a rerun of the same command reads every shard file and skips what
  is committed.
- Progress: one bar over all workers (frames/s), fed by polling each actor's frame counter.

Multi-machine runs need ``--data`` and ``--out`` on a file system every node sees at the same path.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from features.errors import InputError
from features.store import FeatureStore, shard_path, shard_sets

from .planning import balance, frame_weights, select_videos
from .runner import Settings, Summary, extract_into, with_detector
from .sources import Source

log = logging.getLogger(__name__)

RESTARTS = 3                 # replacement actors per worker slot before the slot is given up
MAX_RAY_WORKERS = 1024       # worker actors, each a process holding the models
START_TIMEOUT_S = 120.0      # a worker that cannot be placed (no GPU left, node gone) within this is given up
POLL_S = 0.5                 # progress poll interval


@dataclass
class RaySummary(Summary):
    workers: int = 0
    restarts: int = 0
    start_s: float = 0.0                                 # connecting and starting the workers
    per_worker: dict = field(default_factory=dict)      # slot -> [videos, frames]

    def line(self) -> str:
        per = ", ".join(f"{s}: {v} videos/{f} frames" for s, (v, f) in sorted(self.per_worker.items()))
        return (f"{super().line()}; {self.workers} Ray workers (started in {self.start_s:.1f} s, {self.restarts} "
                f"restarted): {per or 'none ran'}")


# ----------------------------------------------------------------------------------------------------------
# connecting

def _import_ray(address: str | None):
    if address is None:
        # a cluster started here listens on the loopback interface only (Ray would pick the routable address)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'affect-features[ray]' (or ray==2.60.0)") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast with one line: ray.init would retry an unreachable GCS for about a minute."""
    if address == "auto" or address.startswith(("ray://", "local")):
        return
    m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address.strip())
    if not m:
        raise InputError(f"--ray-address must be auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as e:
        raise InputError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); start one "
                         f"with `ray start --head` or leave --ray-address out to run on this machine") from None


def connect(address: str | None):
    """ray.init for the driver: an existing connection is reused; `address` None starts Ray on this machine."""
    if address is not None:
        _check_reachable(address)
    ray = _import_ray(address)
    if ray.is_initialized():
        return ray
    # the workers import this checkout even where it is not installed (a no-op where it is)
    env = {"PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")] if p)}
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=True, configure_logging=False,
                              runtime_env={"env_vars": env})
    if address is None:
        kw.update(object_store_memory=256 * 1024 ** 2)
    try:
        ray.init(address=address, **kw)
    except ConnectionError as e:
        raise InputError(f"--ray-address {address}: {str(e).splitlines()[0]}") from None
    return ray


# ----------------------------------------------------------------------------------------------------------
# the worker (an actor; one shard file)

def build_all(create: Callable[..., Any], specs: Sequence[str], *args: Any) -> list:
    """The extractors of a run, built inside a worker: ``create(spec, *args)`` for each spec."""
    return [create(spec, *args) for spec in specs]


class Progress:
    """The Committer's progress sink inside a worker: a frame counter the driver polls."""

    def __init__(self) -> None:
        self.frames = 0

    def update(self, n: int) -> None:
        self.frames += int(n)

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass


class Worker:
    """Holds the extractors and one shard file open; ``extract`` runs the local runner's code on a lease."""

    def __init__(self, slot: int, n: int, out: str, source: Source, settings: Settings,
                 make_extractors: Callable[[], list], threads: int):
        import torch
        if not settings.cuda:
            torch.set_num_threads(max(1, threads))
        self.path = shard_path(out, slot, n)
        self.source, self.settings = source, settings
        self.extractors = make_extractors()
        self.store = FeatureStore(self.path, mode="a")
        self.progress = Progress()

    def ready(self) -> list[str]:
        return [e.name for e in self.extractors]

    def pid(self) -> int:
        return os.getpid()

    def frames(self) -> int:
        return self.progress.frames

    def extract(self, videos: list, wanted: np.ndarray) -> dict:
        s = Summary(out=str(self.path))
        extract_into(self.store, self.source, videos, self.extractors, self.settings, s, self.path,
                     wanted=wanted, bar=self.progress)
        return {f.name: getattr(s, f.name) for f in fields(Summary)}

    def close(self) -> str:
        self.store.close()          # compacts this worker's segments into its shard file
        return str(self.path)


# ----------------------------------------------------------------------------------------------------------
# the driver

def existing_files(out: Path) -> list[Path]:
    """Files of `out` that may hold committed videos: the file itself and every shard file (with segments)."""
    found = {out} if out.exists() or FeatureStore.parts_dir(out).is_dir() else set()
    found |= {shard_path(out, i, n) for n, have in shard_sets(out).items() for i in have}
    return sorted(found)


def _ensure_file(path: Path) -> None:
    """An empty cache file at `path` unless it has one or committed segments (written beside it, renamed)."""
    from features.store import create_empty
    if path.exists() or FeatureStore.parts_dir(path).is_dir():
        return
    create_empty(path)


def committed(paths: Sequence[Path], names: Sequence[str], videos: Sequence[Any]) -> np.ndarray:
    """(videos, extractors) bool: already in one of `paths`."""
    done = np.zeros((len(videos), len(names)), bool)
    if not paths:
        return done
    with FeatureStore(list(paths)) as s:
        for j, n in enumerate(names):
            if n in s.extractors:
                have = set(s.videos(n))
                done[:, j] = [v.name in have for v in videos]
    return done


@dataclass
class _Slot:
    index: int                       # 1-based, as in the file name
    queue: list[int]                 # video indices, longest first
    actor: Any = None
    lease: list[int] = field(default_factory=list)
    ref: Any = None
    restarts: int = 0
    alive: bool = True
    starting: Any = None             # a replacement's ready() call, until it answers
    started_at: float = 0.0
    frames_seen: int = 0             # the actor's counter at the last poll
    videos: int = 0
    frames: int = 0


def _check_counts(settings: Settings, n_workers: int | None, gpus_per_worker: float) -> None:
    """Bound the worker counts before connecting (each worker is a process holding the models)."""
    if n_workers is not None and n_workers < 1:
        raise InputError(f"--ray-workers must be >= 1, got {n_workers}")
    if n_workers is not None and n_workers > MAX_RAY_WORKERS:
        raise InputError(f"--ray-workers must be <= {MAX_RAY_WORKERS}, got {n_workers}")
    if settings.cuda and gpus_per_worker <= 0:
        raise InputError(f"--gpus-per-worker must be > 0, got {gpus_per_worker}")


def _sizing(ray, settings: Settings, n_workers: int | None,
            gpus_per_worker: float) -> tuple[int, dict[str, Any], int]:
    """The number of workers, each actor's resource options and the CPUs each can count on, from the cluster."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
    if settings.cuda:
        n = n_workers or int(gpus // gpus_per_worker)
        if n < 1:
            raise InputError(f"--device {settings.device}: the Ray cluster has {gpus:g} GPUs, "
                             f"--gpus-per-worker {gpus_per_worker:g} needs more")
        opts: dict[str, Any] = dict(num_gpus=gpus_per_worker, num_cpus=min(1.0, cpus / n))
    else:
        n = n_workers or max(1, int(cpus))
        # fractional CPUs: whole-CPU actors on a small machine leave nothing for Ray's own tasks
        opts = dict(num_cpus=min(1.0, cpus / n) / 2)
    return n, opts, max(1, int(cpus // n))


def _driver(ray, n: int, out: Path, videos: list, settings: Settings, source: Source,
            make_extractors: Callable[[], list], opts: dict[str, Any], per_cpu: int) -> _Driver:
    """The driver with the way to start the actor of a slot (also used to replace one that died)."""
    d = _Driver(ray, n, out, videos, settings, summary=RaySummary(
        out=f"{shard_path(out, 1, n)} .. {shard_path(out, n, n).name}", workers=n))
    source_meta = Source(root=source.root, layout=source.layout, videos=[], description=source.description)
    actor_cls = ray.remote(concurrency_groups={"poll": 1})(_worker_actor(ray))
    actor_opts = dict(opts, max_restarts=0, max_concurrency=1)
    d.start = lambda slot: actor_cls.options(**actor_opts).remote(
        slot, n, str(out), source_meta, settings, make_extractors, per_cpu)
    return d


def _assign(d: _Driver, out: Path, videos: list, batch: int, lease_frames: int | None) -> list[_Slot]:
    """Skip what earlier runs committed and balance the rest over the live workers; returns those workers."""
    done = committed(existing_files(out), d.names, videos)
    d.wanted = ~done
    todo = [k for k in range(len(videos)) if not done[k].all()]
    d.summary.skipped = len(videos) - len(todo)
    live = [s for s in d.slots.values() if s.alive]
    for s, b in zip(live, balance(d.w[todo], len(live), [videos[k].name for k in todo])):
        s.queue = [todo[k] for k in b]
    d.lease_frames = lease_frames or max(4 * batch, int(d.w[todo].sum() / max(1, len(live)) / 4))
    return live


def _seal(out: Path, n: int) -> None:
    """Every worker's file exists (a worker that committed nothing, or died before its first commit, leaves none),
    so that FeatureStore(shard_paths(out, n)) reads the run; then the files must read as one cache (a video
    stored twice or mixed provenance would be refused here)."""
    for i in range(1, n + 1):
        _ensure_file(shard_path(out, i, n))
    FeatureStore([p for p in existing_files(out) if p != out]).close()


def run(source: Source, make_extractors: Callable[[], list], out: str | os.PathLike, *,
        settings: Settings | None = None, address: str | None = None, n_workers: int | None = None,
        gpus_per_worker: float = 1.0, limit_videos: int | None = None, lease_frames: int | None = None,
        on_start: Callable[[dict[int, Any]], None] | None = None) -> RaySummary:
    """Extract `source` into ``<out stem>.shard-i-of-n.h5`` (i = 1..n) with n Ray actors (resumable).

    `make_extractors` builds the extractor list inside each actor (it is pickled: a module-level function or a
    functools.partial of one). `n_workers`: default one per GPU (``gpus_per_worker`` each) on CUDA, else one per
    CPU. `on_start(actors)` is called with {slot: actor handle} once the workers are up (tests use it)."""
    t0 = time.perf_counter()
    settings = settings or Settings()
    _check_counts(settings, n_workers, gpus_per_worker)
    out = Path(out)
    videos, _ = select_videos(source.videos, out, limit_videos, None)
    source = with_detector(source, settings.detector)
    ray = connect(address)
    n, opts, per_cpu = _sizing(ray, settings, n_workers, gpus_per_worker)
    if settings.workers is None:      # decode processes per actor: the CPUs it can count on, less its own
        settings = dataclasses.replace(settings, workers=min(8, per_cpu - 1))
    d = _driver(ray, n, out, videos, settings, source, make_extractors, opts, per_cpu)
    try:
        d.start_all()
        d.summary.start_s = time.perf_counter() - t0
        live = _assign(d, out, videos, settings.batch, lease_frames)
        if on_start is not None:
            on_start({s.index: s.actor for s in live})
        d.drive()
        # compaction of each shard file on its worker (a replacement still starting has nothing of its own; the
        # segments it inherited stay readable and the next run compacts them)
        ray.get([s.actor.close.remote() for s in d.slots.values() if s.alive and s.starting is None])
    finally:
        for s in d.slots.values():
            if s.actor is not None:
                ray.kill(s.actor)
    _seal(out, n)
    d.summary.seconds = time.perf_counter() - t0
    return d.summary


def _worker_actor(ray):
    """The Worker class with its polled methods in their own concurrency group (they answer mid-lease)."""
    class WorkerActor(Worker):
        @ray.method(concurrency_group="poll")
        def frames(self) -> int:
            return self.progress.frames

        @ray.method(concurrency_group="poll")
        def pid(self) -> int:
            return os.getpid()
    return WorkerActor


def _raise_cause(e) -> None:
    """A worker's InputError / OSError is the user's one line; anything else stays a traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, (InputError, OSError)):
        raise InputError(str(cause).splitlines()[0] if str(cause) else type(cause).__name__) from None
    raise e


class _Driver:
    """The driver's state: worker slots, their queues and leases; `drive` runs until every queue is empty."""

    def __init__(self, ray, n: int, out: Path, videos: Sequence[Any], settings: Settings, summary: RaySummary):
        self.ray, self.out, self.videos, self.settings, self.summary = ray, out, videos, settings, summary
        self.slots = {i: _Slot(i, []) for i in range(1, n + 1)}
        self.w = frame_weights(videos)
        self.names: list[str] = []
        self.wanted = np.ones((len(videos), 0), bool)
        self.lease_frames = 1
        self.start: Callable[[int], Any] = lambda slot: None

    # -- workers --------------------------------------------------------------------------------------------
    def start_all(self) -> None:
        """Start every worker and wait until each has built its extractors; one that cannot is dropped."""
        for s in self.slots.values():
            s.actor = self.start(s.index)
        for s in self.slots.values():
            if self._ready(s) and not self.names:
                self.names = self._names
        if not any(s.alive for s in self.slots.values()):
            raise InputError("no Ray worker could start (see the log lines above)")

    def _ready(self, s: _Slot) -> bool:
        ray = self.ray
        while True:
            try:
                self._names = ray.get(s.actor.ready.remote(), timeout=START_TIMEOUT_S)
                return True
            except ray.exceptions.RayTaskError as e:
                _raise_cause(e)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                ray.kill(s.actor)
                s.restarts += 1
                if isinstance(e, ray.exceptions.GetTimeoutError) or s.restarts > RESTARTS:
                    log.warning("Ray worker %d could not start (%s); going on without it", s.index,
                                type(e).__name__)
                    s.alive, s.actor = False, None
                    return False
                s.actor = self.start(s.index)

    def _lost(self, s: _Slot, err: Exception) -> None:
        """A worker died: what its lease had not committed goes to the live worker with the least queued work;
        a replacement takes over its file."""
        lease, s.lease = s.lease, []
        path = shard_path(self.out, s.index, len(self.slots))
        have: dict[str, set] = {}
        if path.exists() or FeatureStore.parts_dir(path).is_dir():
            with FeatureStore([path]) as st:      # its process is gone: nothing writes this file now
                have = {n: set(st.videos(n)) for n in st.extractors}
        for k in lease:     # the worker committed extractor by extractor: keep only what is still missing
            self.wanted[k] &= np.array([self.videos[k].name not in have.get(n, ()) for n in self.names], bool)
        redo = [k for k in lease if self.wanted[k].any()]
        log.warning("Ray worker %d died (%s); %d video(s) of its lease go to another worker", s.index,
                    type(err).__name__, len(redo))
        others = [d for d in self.slots.values() if d.alive and d is not s] or [s]
        target = min(others, key=lambda d: (self._queued(d), d.index))
        target.queue[:0] = sorted(redo, key=lambda k: -int(self.w[k]))
        s.frames_seen = 0
        self.summary.restarts += 1
        s.restarts += 1
        if s.restarts > RESTARTS:
            s.alive, s.actor = False, None
            return
        # the replacement starts in the background (the others go on); it gets leases once it answers ready()
        s.actor = self.start(s.index)
        s.starting, s.started_at = s.actor.ready.remote(), time.monotonic()

    def _started(self, s: _Slot) -> None:
        """A replacement's ready() answered: it takes leases from now on, or (it died again) is replaced."""
        ref, s.starting = s.starting, None
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            _raise_cause(e)
        except self.ray.exceptions.RayActorError as e:
            self._lost(s, e)

    def _give_up_stuck(self) -> None:
        """A replacement that cannot be placed (no GPU left, node gone) is given up; its queue is taken over."""
        for s in self.slots.values():
            if s.starting is not None and time.monotonic() - s.started_at > START_TIMEOUT_S:
                log.warning("Ray worker %d could not restart within %.0f s; going on without it", s.index,
                            START_TIMEOUT_S)
                self.ray.kill(s.actor)
                s.alive, s.actor, s.starting = False, None, None

    # -- scheduling -----------------------------------------------------------------------------------------
    def _queued(self, s: _Slot) -> int:
        return int(self.w[s.queue].sum()) if s.queue else 0

    def _next_lease(self, s: _Slot) -> list[int]:
        """Whole videos from the head of the slot's queue (at least lease_frames, or one video); with an empty
        queue, the shortest videos from the tail of the fullest queue."""
        lease, frames = [], 0
        if s.queue:
            while s.queue and (not lease or frames < self.lease_frames):
                lease.append(s.queue.pop(0))
                frames += int(self.w[lease[-1]])
            return lease
        donor = max(self.slots.values(), key=self._queued)
        while donor.queue and (not lease or frames < self.lease_frames):
            lease.append(donor.queue.pop())
            frames += int(self.w[lease[-1]])
        return lease[::-1]

    def drive(self) -> None:
        from tqdm.auto import tqdm
        ray, summary = self.ray, self.summary
        total = sum(self._queued(s) for s in self.slots.values())
        bar = tqdm(total=total or None, unit="frame", dynamic_ncols=True, desc=f"{self.out.name} (Ray)",
                   smoothing=0.1, disable=not self.settings.progress)
        last_poll = 0.0
        try:
            while True:
                self._give_up_stuck()
                for s in self.slots.values():
                    if s.alive and s.ref is None and s.starting is None:
                        s.lease = self._next_lease(s)
                        if s.lease:
                            s.ref = s.actor.extract.remote([self.videos[k] for k in s.lease], self.wanted[s.lease])
                busy = {s.ref: s for s in self.slots.values() if s.ref is not None}
                starting = {s.starting: s for s in self.slots.values() if s.starting is not None}
                queued = any(s.queue for s in self.slots.values())
                if not busy and not (queued and starting):
                    if queued:
                        raise InputError(f"every Ray worker died; committed videos are kept in "
                                         f"{self.out.stem}.shard-*.h5, rerun to resume")
                    break
                ready, _ = ray.wait(list(busy) + list(starting), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    if ref in starting:
                        self._started(starting[ref])
                ready = [r for r in ready if r in busy]
                if time.monotonic() - last_poll >= POLL_S:
                    last_poll = time.monotonic()
                    bar.update(self._poll([s for s in self.slots.values() if s.ref is not None]))
                for ref in ready:
                    s = busy[ref]
                    s.ref = None
                    try:
                        r = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        _raise_cause(e)
                    except ray.exceptions.RayActorError as e:
                        self._lost(s, e)
                        continue
                    for k in ("videos", "frames", "no_face", "bad_files", "short_videos", "persons", "wait_s",
                              "model_s", "write_s"):
                        setattr(summary, k, getattr(summary, k) + r[k])
                    s.videos += int(r["videos"])
                    s.frames += int(r["frames"])
                    bar.update(self._poll([s]))
                    bar.set_postfix_str(f"{summary.videos} videos", refresh=False)
        finally:
            bar.close()
            summary.per_worker = {s.index: [s.videos, s.frames] for s in self.slots.values()}

    def _poll(self, slots: Sequence[_Slot]) -> int:
        """Frames done since the last poll, summed over `slots` (a worker that does not answer counts 0)."""
        refs = [(s, s.actor.frames.remote()) for s in slots if s.actor is not None]
        delta = 0
        for s, ref in refs:
            try:
                now = int(self.ray.get(ref, timeout=5))
            except Exception:           # noqa: BLE001 - dying or gone: its lease result tells the driver
                continue
            delta += max(0, now - s.frames_seen)
            s.frames_seen = now
        return delta
