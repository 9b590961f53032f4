"""The cache opened to read or to write (:class:`FeatureStore`) and its per-extractor :class:`VideoWriter`.

A writer holds ``<cache>.lock`` from opening to closing; each video it commits is one segment file (written as
``*.tmp``, fsynced, renamed, then indexed, with Ctrl-C held meanwhile); closing compacts the segments into the
main file (features.store.compaction)."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cachelock import CacheLock
from ..errors import InputError
from ..paths import path_kind
from .compaction import Compaction
from .durability import atomic_replace, io_error, sigint_deferred
from .paths import SEG_RE, main_or_shards, parts_dir, segments
from .schema import FACE_OUTPUTS, ExtractorInfo, create_group, new_file, open_read, provenance_diff


class FeatureStore(Compaction):
    """A feature cache: one main file (plus its committed segments) or several shard files read as one.

    ``FeatureStore(path)`` reads; when `path` is absent (and has no segments) its shard files
    ``<stem>.shard-i-of-n<suffix>`` are read instead (all n must be there). ``FeatureStore(path, mode="a")``
    also writes through :meth:`writer`: it holds the cache's writer lock until :meth:`close`, which compacts
    committed segments into the main file.
    """

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike], mode: str = "r",
                 compression: str | None = None):
        if mode not in ("r", "a"):
            raise ValueError("mode must be 'r' or 'a'")
        paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
        if not paths:
            raise InputError("no cache files given")
        if mode == "a" and len(paths) != 1:
            raise InputError("write to one cache file at a time (shards are separate files)")
        if mode == "r":
            paths = [q for p in paths for q in main_or_shards(p)]
        for p in paths:                      # a FIFO would block h5py's open forever, a device never end
            kind = path_kind(p)
            if kind not in ("missing", "a regular file"):
                raise InputError(f"the feature cache is {kind}, not a regular file", p)
        super().__init__(paths, mode, compression)
        self._writers: dict[str, VideoWriter] = {}
        self._lock: CacheLock | None = None
        if mode == "a":
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            self._lock = CacheLock(paths[0]).acquire()
        try:
            if mode == "a":
                self._prepare_for_append(paths[0])
            self._open_all()
        except BaseException:
            self._close_files()
            if self._lock is not None:
                self._lock.release()
            raise

    parts_dir = staticmethod(parts_dir)

    def _prepare_for_append(self, path: Path) -> None:
        # under the writer lock: no other writer is using these
        for tmp in [path.with_name(path.name + ".tmp"), *parts_dir(path).glob("*.tmp")]:
            tmp.unlink(missing_ok=True)     # debris of a writer killed mid-write: never committed
        self._drop_merged_segments(path)

    def _drop_merged_segments(self, path: Path) -> None:
        """Delete segments that a finished compaction already merged (it was killed before deleting them)."""
        if not path.exists():
            return
        with open_read(path) as f:
            merged = set(f["merged_segments"].asstr()[()]) if "merged_segments" in f else set()
        for seg in segments(path):
            if seg.name in merged:
                seg.unlink()

    # -- writing --------------------------------------------------------------------------------------------
    def writer(self, info: ExtractorInfo) -> "VideoWriter":
        """A writer committing whole videos of one extractor; refuses a group of other provenance."""
        if self.mode != "a":
            raise InputError("cache opened read-only; open with mode='a' to write", self.paths[0])
        if self._lock is None or not self._lock.held:
            raise InputError("cache closed; open it again to write", self.paths[0])
        if info.name in self._info and self._info[info.name].provenance() != info.provenance():
            raise InputError(f"extractor {info.name!r} already holds features made with other weights or "
                             f"preprocessing ({provenance_diff(self._info[info.name], info)}); "
                             f"write to another cache file or another extractor name", self.paths[0])
        if info.name not in self._writers:
            self._info.setdefault(info.name, info)
            self._catalog.setdefault(info.name, {})
            self._writers[info.name] = VideoWriter(self, self._info[info.name])
        return self._writers[info.name]

    def _next_segment(self) -> Path:
        d = parts_dir(self.paths[0])
        d.mkdir(parents=True, exist_ok=True)
        seqs = [int(SEG_RE.match(p.name).group(1)) for p in segments(self.paths[0])]
        self._seq = max([getattr(self, "_seq", -1), *seqs]) + 1
        return d / f"seg-{self._seq:09d}-{uuid.uuid4().hex[:8]}.h5"

    # -- closing --------------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if self.mode == "a" and self._lock is not None and self._lock.held:
                self.compact()
        finally:
            self._close_files()
            if self._lock is not None:
                self._lock.release()

    def __del__(self) -> None:
        # A writer dropped without close() (an error in a notebook cell) releases its lock, so the process can
        # open the cache again; its committed segments stay and the next writer folds them in.
        lock = getattr(self, "_lock", None)
        if lock is not None and lock.held:
            with contextlib.suppress(Exception):
                self._close_files()
                lock.release()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ex = ", ".join(f"{e}: {len(self._catalog[e])} videos" for e in self.extractors)
        return f"FeatureStore({', '.join(map(str, self.paths))}; {ex or 'empty'})"


class VideoWriter:
    """Commits whole videos of one extractor; each commit is atomic (see the package docstring)."""

    def __init__(self, store: FeatureStore, info: ExtractorInfo):
        self.store = store
        self.info = info

    def has_video(self, video: str) -> bool:
        return self.store.has_video(self.info.name, video)

    def write_video(self, video: str, frame: np.ndarray, face: np.ndarray, embedding: np.ndarray,
                    logits: np.ndarray | None = None, va: np.ndarray | None = None,
                    faces: dict[str, np.ndarray] | None = None, source_video: str | None = None) -> None:
        """Commit all rows of `video` (atomically). `faces`: the detector's face_box, face_score and
        face_landmarks rows (schema: features.store.schema), or None when no detector ran; `source_video`:
        the video file `video` was cut from (a tracked person), None when it is one."""
        self.write_videos([dict(video=video, frame=frame, face=face, embedding=embedding, logits=logits, va=va,
                                faces=faces, source_video=source_video)])

    def write_videos(self, items: Sequence[dict]) -> None:
        """Commit several videos at once, all or none (one segment): each item holds the arguments of
        :meth:`write_video`. The persons tracked in one video file are committed so."""
        info = self.info
        store = self.store
        if store._lock is None or not store._lock.held:
            raise InputError("cache closed; open it again to write", store.paths[0])
        names = [it["video"] for it in items]
        if len(set(names)) != len(names):
            raise InputError(f"extractor {info.name!r}: one commit names a video twice", store.paths[0])
        checked = [self._checked(**it) for it in items]
        what = f"video {names[0]!r}" if len(names) == 1 else f"videos {', '.join(map(repr, names))}"
        seg = store._next_segment()
        tmp = seg.with_name(seg.name + ".tmp")
        # The commit is: write tmp, fsync, rename (the video is committed), open + index (this writer knows).
        # Ctrl-C is held until all of it is done. Any failure before the rename removes the tmp file; one
        # after it leaves a committed segment that compaction indexes (and folds in) before deleting anything.
        with sigint_deferred():
            try:
                _write_segment(tmp, info, checked)
                atomic_replace(tmp, seg)
            except BaseException as e:
                tmp.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    raise io_error(e, f"cannot commit {what} of extractor {info.name!r}", tmp,
                                   store.paths[0], "the videos committed before it are kept; free some space "
                                   "and rerun to resume") from None
                raise
            store._add_source(seg)

    def _checked(self, video: str, frame: np.ndarray, face: np.ndarray, embedding: np.ndarray,
                 logits: np.ndarray | None = None, va: np.ndarray | None = None,
                 faces: dict[str, np.ndarray] | None = None, source_video: str | None = None) -> dict:
        """One video's rows, checked against the group's layout."""
        info = self.info
        if self.has_video(video):
            raise InputError(f"video {video!r} is already in the cache for extractor {info.name!r}",
                             self.store.paths[0])
        frame = np.asarray(frame)
        n = len(frame)
        data = {"embedding": embedding, "logits": logits, "va": va}
        for k, dim in info.outputs.items():
            a = data[k]
            if a is None or np.shape(a) != (n, dim):
                raise InputError(f"{info.name}/{video}: output {k!r} must have shape ({n}, {dim}), "
                                 f"got {None if a is None else np.shape(a)}")
        if np.shape(face) != (n,):
            raise InputError(f"{info.name}/{video}: face mask must have shape ({n},)")
        if faces is not None:
            for k, dim in FACE_OUTPUTS.items():
                if np.shape(faces.get(k)) != (n, dim):
                    raise InputError(f"{info.name}/{video}: face dataset {k!r} must have shape ({n}, {dim}), "
                                     f"got {np.shape(faces.get(k)) if k in faces else None}")
            data.update({k: faces[k] for k in FACE_OUTPUTS})
        if source_video is not None and not isinstance(source_video, str):
            raise InputError(f"{info.name}/{video}: source_video must be a string, got {source_video!r}")
        if n > 1 and np.any(np.diff(frame) <= 0):
            raise InputError(f"{info.name}/{video}: frame numbers must increase")
        if n and frame[0] < 1:
            raise InputError(f"{info.name}/{video}: frame numbers are 1-based, got {frame[0]}")
        return {"video": video, "frame": frame, "face": face, "data": data, "faces": faces is not None,
                "source": source_video or ""}


def _write_segment(tmp: Path, info: ExtractorInfo, items: list[dict]) -> None:
    counts = [len(it["frame"]) for it in items]
    n = sum(counts)
    faces = any(it["faces"] for it in items)
    sources = any(it["source"] for it in items)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    with new_file(tmp) as f:
        g = create_group(f, info, n, len(items), faces=faces, sources=sources)
        g["video_names"][:] = [it["video"] for it in items]
        if sources:
            g["video_source"][:] = [it["source"] for it in items]
        g["video_start"][:] = starts
        g["video_count"][:] = counts
        if not n:
            return
        g["frame"][:] = _cat([it["frame"] for it in items])
        g["face"][:] = _cat([np.asarray(it["face"], bool) for it in items])
        for k in (*info.outputs, *(FACE_OUTPUTS if faces else ())):
            # cast here, not in HDF5: its float32 -> float16 conversion is ~25x slower than numpy's
            # and rounds wrongly (-0.24998 became -0.125; subnormals are truncated)
            dt = g[k].dtype
            parts = [np.asarray(it["data"][k]).astype(dt, copy=False) if k in it["data"]
                     else np.full((c, FACE_OUTPUTS[k]), np.nan, dt) for it, c in zip(items, counts)]
            g[k][:] = _cat(parts)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)    # one video (the usual commit): no copy


def create_empty(path: str | os.PathLike) -> None:
    """An empty, valid cache file at `path` (written beside it, then renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        new_file(tmp).close()
        atomic_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
