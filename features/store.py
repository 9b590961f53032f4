"""The HDF5 feature cache: per-frame embeddings, logits and valence/arousal of several frozen extractors.

File layout (schema version 1; see the README for the full table)::

    /                          attrs: format="affect-features", schema_version=1, created
    /extractors/<name>/        attrs: the ExtractorInfo provenance (name, checkpoint_sha256, input_size,
                                      normalization, outputs, embedding_dtype, package_versions, extra,
                                      schema_version, created)
        video_names  (V,)      utf-8 strings, in commit order
        video_start  (V,)      int64, first row of each video
        video_count  (V,)      int64, rows of each video
        frame        (N,)      int32, 1-based frame number
        face         (N,)      bool, False where no face was found / the crop is missing or unreadable
        embedding    (N, D)    float16 (or float32 on request), contiguous (or ~1 MiB chunks if compressed)
        logits       (N, C)    float32, where the model has them
        va           (N, 2)    float32, valence/arousal where the model has them

Crash safety. HDF5 is not journaled: a process killed inside a metadata update can leave a file unreadable.
So the main file is never modified in place. Each committed video is written to its own small segment file
``<cache>.parts/seg-<seq>-<id>.h5`` (written as ``*.tmp``, fsynced, then renamed, which is atomic), and closing a
writer compacts main + segments into ``<cache>.tmp`` and renames it over the main file. A writer killed at any
moment therefore leaves the main file intact, every committed video in a complete segment, and at worst a
``*.tmp`` file that the next writer deletes. Readers see main + segments as one cache, so a cache can be read
while it is being extracted, and several shard files read as one cache too.

One writer at a time. A writer holds ``<cache>.lock`` (features.cachelock) from opening to closing; a second
writer is refused at once with one line naming the holder (pid, host). The kernel releases the lock of a dead
process, so a lock file left by a crash is taken over. Compaction folds, and then deletes, only the segments
this writer has indexed; segments on disk that it has not indexed (a commit interrupted after its rename) are
indexed first, never deleted unread. Ctrl-C during a commit is held until the commit (rename + index) is done.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import glob as _glob
import json
import logging
import os
import re
import signal
import threading
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import pandas as pd

from .cachelock import CacheLock
from .errors import InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "affect-features"
OUTPUTS = ("embedding", "logits", "va")
_CHUNK_BYTES = 1 << 20          # ~1 MiB chunks (compressed files only) fit HDF5's default chunk cache
_RDCC_BYTES = 64 << 20          # a larger chunk cache for partial-chunk reads at video boundaries
_OPEN_SEGMENTS = 64             # segment files kept open at once (each holds a file descriptor)
_SEG_RE = re.compile(r"^seg-(\d{9})-[0-9a-f]{8}\.h5$")
_PROVENANCE_KEYS = ("checkpoint_sha256", "input_size", "normalization", "outputs", "embedding_dtype")
_VERSIONED_PACKAGES = ("numpy", "h5py", "torch", "timm", "tensorflow", "keras", "affect-features")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = _VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that determine the features (read from metadata, no imports)."""
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class ExtractorInfo:
    """Provenance of one extractor group; two groups with different provenance never mix."""
    name: str
    checkpoint_sha256: str
    input_size: int
    normalization: dict
    outputs: dict[str, int]
    embedding_dtype: str = "float16"
    extra: dict = field(default_factory=dict)
    package_versions: dict = field(default_factory=package_versions)
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if "embedding" not in self.outputs:
            raise InputError(f"extractor {self.name!r}: outputs must include 'embedding', got {self.outputs}")
        unknown = set(self.outputs) - set(OUTPUTS)
        if unknown:
            raise InputError(f"extractor {self.name!r}: unknown outputs {sorted(unknown)}; known: {OUTPUTS}")
        if self.embedding_dtype not in ("float16", "float32"):
            raise InputError(f"extractor {self.name!r}: embedding_dtype must be float16 or float32")
        if "/" in self.name or not self.name:
            raise InputError(f"extractor name {self.name!r} must be non-empty and contain no '/'")

    def to_attrs(self) -> dict:
        return {k: json.dumps(v) if isinstance(v, dict) else v for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs) -> "ExtractorInfo":
        """Read the provenance attributes back; anything unreadable is an InputError naming the attribute."""
        kw = {}
        for k in cls.__dataclass_fields__:
            if k in attrs:
                v = attrs[k]
                v = v.decode(errors="replace") if isinstance(v, bytes) else v
                if k in ("normalization", "outputs", "extra", "package_versions"):
                    try:
                        v = json.loads(v)
                    except (TypeError, ValueError) as e:
                        raise InputError(f"attribute {k!r} is not valid JSON ({e})") from None
                    if not isinstance(v, dict):
                        raise InputError(f"attribute {k!r} must be a JSON object, got {type(v).__name__}")
                elif isinstance(v, np.generic):
                    v = v.item()
                kw[k] = v
        missing = [k for k in ("name", "checkpoint_sha256", "input_size", "normalization", "outputs")
                   if k not in kw]
        if missing:
            raise InputError(f"provenance attribute(s) missing: {', '.join(missing)}")
        if not isinstance(kw["input_size"], int) or not all(
                isinstance(d, int) and d > 0 for d in kw["outputs"].values()):
            raise InputError("attribute 'input_size' or 'outputs' holds other than positive integers")
        return cls(**kw)

    def provenance(self) -> dict:
        """The fields that must agree before features may be appended to an existing group."""
        d = asdict(self)
        return {k: d[k] for k in _PROVENANCE_KEYS}


# ----------------------------------------------------------------------------------------------------------
# one HDF5 file (a main file, a shard or a segment)

def _check_file(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    ver = f.attrs.get("schema_version")
    fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise InputError(f"not a feature cache (format attribute {fmt!r}, expected {FORMAT!r})", path)
    try:
        ver = int(ver)
    except (TypeError, ValueError):
        raise InputError(f"cache schema_version attribute {ver!r} is not a number", path) from None
    if ver != SCHEMA_VERSION:
        raise InputError(f"cache schema version {ver}, this tool reads version {SCHEMA_VERSION}; "
                         f"re-extract or convert the cache", path)


def _group_index(g: h5py.Group, name: str) -> tuple["ExtractorInfo", list[str], np.ndarray, np.ndarray]:
    """Provenance and video index of one extractor group, checked against its datasets so that a damaged or
    hand-edited file is refused on open (one InputError) instead of failing later or reading wrong rows."""
    try:
        info = ExtractorInfo.from_attrs(g.attrs)
    except InputError as e:
        raise InputError(f"extractor {name!r}: {e}") from None
    need = ("video_names", "video_start", "video_count", "frame", "face", *info.outputs)
    missing = [k for k in need if not isinstance(g.get(k), h5py.Dataset)]
    if missing:
        raise InputError(f"extractor {name!r}: dataset(s) {', '.join(missing)} missing; the file is damaged, "
                         f"re-extract it")
    try:
        names = list(g["video_names"].asstr()[()]) if g["video_names"].shape else None
        starts, counts = g["video_start"][()], g["video_count"][()]
    except (TypeError, ValueError, OSError) as e:
        raise InputError(f"extractor {name!r}: unreadable video index ({e})") from None
    if names is None or starts.ndim != 1 or counts.ndim != 1 or not len(names) == len(starts) == len(counts) \
            or not (np.issubdtype(starts.dtype, np.integer) and np.issubdtype(counts.dtype, np.integer)):
        raise InputError(f"extractor {name!r}: video_names, video_start and video_count must be 1-d of one length "
                         f"(integers for the last two), got shapes {g['video_names'].shape}, {starts.shape}, "
                         f"{counts.shape}; the file is damaged, re-extract it")
    n = g["frame"].shape[0] if g["frame"].ndim == 1 else -1
    for k in ("face", *info.outputs):
        ds = g[k]
        want = (n,) if k == "face" else (n, info.outputs[k])
        if n < 0 or ds.shape != want:
            raise InputError(f"extractor {name!r}: dataset {k!r} has shape {ds.shape}, expected {want} like "
                             f"'frame' {g['frame'].shape} (and the width in the outputs attribute); the file is "
                             f"damaged, re-extract it")
    bad = np.flatnonzero((starts < 0) | (counts < 0) | (starts + counts > n))
    if len(bad):
        k = bad[0]
        raise InputError(f"extractor {name!r}, video {names[k]!r}: video_start={starts[k]}, video_count={counts[k]} "
                         f"lie beyond the {n} rows of the data; the file is damaged, re-extract it")
    return info, names, starts, counts


def _open_read(path: Path) -> h5py.File:
    try:
        f = h5py.File(path, "r", rdcc_nbytes=_RDCC_BYTES)
    except OSError as e:
        raise InputError(f"cannot open feature cache: {e}", path) from None
    try:
        _check_file(f, path)
    except InputError:
        f.close()
        raise
    return f


def _new_file(path: Path) -> h5py.File:
    f = h5py.File(path, "w")
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["created"] = _now()
    return f


def _create_group(f: h5py.File, info: ExtractorInfo, n_rows: int, n_videos: int,
                  compression: str | None = None) -> h5py.Group:
    g = f.require_group("extractors").create_group(info.name)
    for k, v in info.to_attrs().items():
        g.attrs[k] = v
    str_dt = h5py.string_dtype("utf-8")
    g.create_dataset("video_names", shape=(n_videos,), dtype=str_dt)
    g.create_dataset("video_start", shape=(n_videos,), dtype=np.int64)
    g.create_dataset("video_count", shape=(n_videos,), dtype=np.int64)
    g.create_dataset("frame", shape=(n_rows,), dtype=np.int32)
    g.create_dataset("face", shape=(n_rows,), dtype=bool)
    for out, dim in info.outputs.items():
        dt = np.dtype(info.embedding_dtype if out == "embedding" else np.float32)
        # Sizes are known when a file is written (files are never resized), so uncompressed data is stored
        # contiguously: bulk reads then run at raw disk/page-cache speed. Compression needs chunks.
        chunks = None
        if compression and n_rows:
            chunks = (max(1, min(n_rows, _CHUNK_BYTES // (dim * dt.itemsize))), dim)
        g.create_dataset(out, shape=(n_rows, dim), dtype=dt, chunks=chunks, compression=compression)
    return g


def create_empty(path: str | os.PathLike) -> None:
    """An empty, valid cache file at `path` (written beside it, then renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _new_file(tmp).close()
        _atomic_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _atomic_replace(tmp: Path, final: Path) -> None:
    _fsync(tmp)
    _rename(tmp, final)
    try:  # make the rename itself durable
        dfd = os.open(final.parent, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C (SIGINT) until the block is done, then deliver it: a commit is renamed *and* indexed, or not
    renamed at all. Only the main thread can install handlers; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            if old is signal.default_int_handler or old is None:
                raise KeyboardInterrupt
            if callable(old):
                old(signal.SIGINT, None)
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _io_error(e: OSError, what: str, tmp: Path, where: Path, after: str) -> InputError:
    """An OSError while writing `tmp` as one line naming both files (h5py's own text names neither)."""
    reason = os.strerror(e.errno) if e.errno else (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return InputError(f"{what} ({reason}, writing {tmp}); {after}", where)


def _write_segment(tmp: Path, info: "ExtractorInfo", video: str, frame: np.ndarray, face: np.ndarray,
                   data: dict) -> None:
    n = len(frame)
    with _new_file(tmp) as f:
        g = _create_group(f, info, n, 1)
        g["video_names"][0] = video
        g["video_start"][0] = 0
        g["video_count"][0] = n
        if n:
            g["frame"][:] = frame
            g["face"][:] = np.asarray(face, bool)
            for k in info.outputs:
                # cast here, not in HDF5: its float32 -> float16 conversion is ~25x slower than numpy's
                # and rounds wrongly (-0.24998 became -0.125; subnormals are truncated)
                g[k][:] = np.asarray(data[k]).astype(g[k].dtype, copy=False)


@dataclass
class _VideoLoc:
    source: int     # index into FeatureStore._files
    start: int
    count: int


# ----------------------------------------------------------------------------------------------------------

@dataclass
class FeatureBlock:
    """Frames of several videos for several extractors: an index plus aligned arrays."""
    index: pd.DataFrame                 # columns video, frame, face
    arrays: dict[str, np.ndarray]       # "extractor/output" -> (n, d)

    def matrix(self, keys: Sequence[str] | None = None, dtype=np.float32) -> np.ndarray:
        """The arrays side by side as one matrix (keys in the given or insertion order)."""
        keys = list(self.arrays) if keys is None else list(keys)
        n = len(self.index)
        width = sum(self.arrays[k].shape[1] for k in keys)
        out = np.empty((n, width), dtype=dtype)
        c = 0
        for k in keys:
            a = self.arrays[k]
            out[:, c:c + a.shape[1]] = a
            c += a.shape[1]
        return out

    def __len__(self) -> int:
        return len(self.index)


class FeatureStore:
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
            paths = [q for p in paths for q in _main_or_shards(p)]
        self.mode = mode
        self.paths = paths
        self.compression = compression
        self._files: list[h5py.File | None] = []    # None: a segment closed to save descriptors (see _file)
        self._sources: list[Path] = []
        self._open_segments: dict[int, None] = {}   # indices of open segment files, least recently used first
        self._writers: dict[str, "VideoWriter"] = {}
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

    # -- opening --------------------------------------------------------------------------------------------
    @staticmethod
    def parts_dir(path: Path) -> Path:
        path = Path(path)
        return path.with_name(path.name + ".parts")

    @staticmethod
    def _segments(path: Path) -> list[Path]:
        d = FeatureStore.parts_dir(path)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if _SEG_RE.match(p.name))

    def _prepare_for_append(self, path: Path) -> None:
        # under the writer lock: no other writer is using these
        for tmp in [path.with_name(path.name + ".tmp"), *self.parts_dir(path).glob("*.tmp")]:
            tmp.unlink(missing_ok=True)     # debris of a writer killed mid-write: never committed
        self._drop_merged_segments(path)

    def _drop_merged_segments(self, path: Path) -> None:
        """Delete segments that a finished compaction already merged (it was killed before deleting them)."""
        if not path.exists():
            return
        with _open_read(path) as f:
            merged = set(f["merged_segments"].asstr()[()]) if "merged_segments" in f else set()
        for seg in self._segments(path):
            if seg.name in merged:
                seg.unlink()

    def _open_all(self) -> None:
        self._close_files()
        self._catalog: dict[str, dict[str, _VideoLoc]] = {}
        self._info: dict[str, ExtractorInfo] = {}
        merged_by_main: dict[Path, set] = {}
        sources: list[Path] = []
        for p in self.paths:
            if p.exists():
                sources.append(p)
            elif self.mode == "r" and not self._segments(p):
                raise InputError("feature cache does not exist", p)
            sources.extend(self._segments(p))
        for src in sources:
            if any(src.name in m for m in merged_by_main.values()):
                continue       # already inside a main file (compaction killed before cleanup)
            try:
                f = self._add_source(src)
            except InputError as e:
                if self.mode == "r" or not src.parent.name.endswith(".parts"):
                    raise
                # a writer neither reads nor deletes a segment it cannot index; readers name it
                log.warning("%s; it is left as it is (not part of the cache)", e)
                continue
            if "merged_segments" in f:
                merged_by_main[src] = set(f["merged_segments"].asstr()[()])

    def _add_source(self, src: Path) -> h5py.File:
        """Open one file and index its videos (all of them or, on an error, none)."""
        f = _open_read(src)
        self._files.append(f)
        self._sources.append(src)
        i = len(self._files) - 1
        if src.parent.name.endswith(".parts"):
            self._touch_segment(i)
        self._index_file(i, src)
        return f

    def _touch_segment(self, i: int) -> None:
        """Mark segment i used; close the least recently used ones beyond _OPEN_SEGMENTS. A run commits one
        segment per video and extractor: kept open, thousands of them hit the open-file limit (1024 on many
        systems) and the next commit failed with 'Too many open files'."""
        self._open_segments.pop(i, None)
        self._open_segments[i] = None
        while len(self._open_segments) > _OPEN_SEGMENTS:
            j = next(iter(self._open_segments))
            del self._open_segments[j]
            f, self._files[j] = self._files[j], None
            if f is not None:
                f.close()

    def _file(self, i: int) -> h5py.File:
        """Source i, open. Main and shard files stay open; segments are reopened when needed (they never change
        once renamed into place; one is gone only if a writer compacted the cache since it was opened)."""
        f = self._files[i]
        if f is None:
            if not self._sources[i].exists():
                raise InputError("the cache was compacted while it was open here; open it again",
                                 self._sources[i])
            f = self._files[i] = _open_read(self._sources[i])
        if i in self._open_segments or self._sources[i].parent.name.endswith(".parts"):
            self._touch_segment(i)
        return f

    def _index_file(self, i: int, src: Path) -> None:
        f = self._file(i)
        new: list[tuple[str, ExtractorInfo, dict[str, _VideoLoc]]] = []
        groups = f.get("extractors")
        if groups is None:              # a valid empty cache (e.g. a worker's shard before its first commit)
            return
        if not isinstance(groups, h5py.Group):
            raise InputError("'extractors' is not a group; the file is damaged", src)
        for name, g in groups.items():
            if not isinstance(g, h5py.Group):
                raise InputError(f"extractors/{name} is not a group; the file is damaged", src)
            try:
                info, names, starts, counts = _group_index(g, name)
            except InputError as e:
                raise InputError(str(e), src) from None
            known = self._info.get(name)
            if known is None:
                known = info
            elif known.provenance() != info.provenance():
                raise InputError(f"extractor {name!r} here was made with other weights or preprocessing than "
                                 f"in {self.paths[0]} ({_diff(known, info)})", src)
            cat = self._catalog.get(name, {})
            add: dict[str, _VideoLoc] = {}
            for v, s, c in zip(names, starts, counts):
                if v in cat or v in add:
                    other = self._sources[cat[v].source] if v in cat else src
                    raise InputError(f"video {v!r} of extractor {name!r} is stored twice (also in {other})", src)
                add[v] = _VideoLoc(i, int(s), int(c))
            new.append((name, known, add))
        for name, info, add in new:         # all checked: index them (so a failure leaves nothing half-indexed)
            self._info.setdefault(name, info)
            self._catalog.setdefault(name, {}).update(add)

    def _close_files(self) -> None:
        for f in getattr(self, "_files", []):
            if f is not None:
                f.close()
        self._files = []
        self._open_segments = {}
        self._sources = []

    # -- metadata -------------------------------------------------------------------------------------------
    @property
    def extractors(self) -> list[str]:
        return list(self._catalog)

    def info(self, name: str) -> ExtractorInfo:
        if name not in self._info:
            raise InputError(f"extractor {name!r} is not in the cache; it has {self.extractors or 'none'}",
                             self.paths[0])
        return self._info[name]

    def videos(self, name: str) -> list[str]:
        self.info(name)
        return list(self._catalog[name])

    def n_frames(self, name: str) -> int:
        self.info(name)
        return sum(loc.count for loc in self._catalog[name].values())

    def has_video(self, name: str, video: str) -> bool:
        return video in self._catalog.get(name, {})

    # -- reading --------------------------------------------------------------------------------------------
    def _loc(self, name: str, video: str) -> _VideoLoc:
        try:
            return self._catalog[name][video]
        except KeyError:
            raise InputError(f"video {video!r} is not in the cache for extractor {name!r}",
                             self.paths[0]) from None

    def _read_rows(self, name: str, key: str, locs: list[_VideoLoc], out: np.ndarray) -> None:
        """Fill `out` with dataset `key` of the given video ranges, merging ranges adjacent in one file so a
        whole split in file order is a few large reads."""
        o = 0
        i = 0
        while i < len(locs):
            src, start, count = locs[i].source, locs[i].start, locs[i].count
            j = i + 1
            while j < len(locs) and locs[j].source == src and locs[j].start == start + count:
                count += locs[j].count
                j += 1
            if count:
                ds = self._file(src)["extractors"][name][key]
                ds.read_direct(out, np.s_[start:start + count], np.s_[o:o + count])
            o += count
            i = j

    def read(self, videos: Sequence[str] | None = None, extractors: Sequence[str] | str | None = None,
             outputs: Sequence[str] | dict[str, Sequence[str]] = ("embedding",), dtype=None) -> FeatureBlock:
        """All frames of `videos` (default: all videos of the first extractor) for one or several extractors.

        `outputs` is one list for all extractors or a dict extractor -> outputs.
        Rows follow the given video order, then frame order. With several extractors only frames present in
        all of them are kept; `face` is the AND of their masks. Missing outputs (e.g. 'va' of a model without
        it) raise an InputError. `dtype` converts arrays (default: as stored).
        """
        if extractors is None:
            extractors = self.extractors[:1]
        elif isinstance(extractors, str):
            extractors = [extractors]
        if not extractors:
            raise InputError("the cache holds no extractors", self.paths[0])
        per = {e: list(outputs.get(e, ())) for e in extractors} if isinstance(outputs, dict) \
            else {e: list(outputs) for e in extractors}
        for e in extractors:
            info = self.info(e)
            for o in per[e]:
                if o not in info.outputs:
                    raise InputError(f"extractor {e!r} has no output {o!r} (it has {list(info.outputs)})",
                                     self.paths[0])
        if videos is None:
            videos = self.videos(extractors[0])
        videos = list(videos)
        locs = {e: [self._loc(e, v) for v in videos] for e in extractors}

        # frame/face per extractor (small), then the row selection that aligns extractors on frames
        meta = {}
        for e in extractors:
            n = sum(l.count for l in locs[e])
            frame = np.empty(n, np.int32)
            face = np.empty(n, bool)
            self._read_rows(e, "frame", locs[e], frame)
            self._read_rows(e, "face", locs[e], face)
            self._check_frames(e, videos, locs[e], frame)
            meta[e] = (frame, face)
        base = extractors[0]
        counts = np.array([l.count for l in locs[base]])
        frame0, face0 = meta[base]
        sel: dict[str, np.ndarray | None] = {base: None}
        if len(extractors) > 1 and any(
                not np.array_equal(meta[e][0], frame0) or [l.count for l in locs[e]] != counts.tolist()
                for e in extractors[1:]):
            frame0, face0, counts, sel = self._align(videos, extractors, locs, meta)
        else:
            for e in extractors[1:]:
                face0 = face0 & meta[e][1]
                sel[e] = None

        arrays = {}
        for e in extractors:
            info = self.info(e)
            n_e = sum(l.count for l in locs[e])
            for o in per[e]:
                dt = np.dtype(info.embedding_dtype if o == "embedding" else np.float32)
                buf = np.empty((n_e, info.outputs[o]), dt)
                self._read_rows(e, o, locs[e], buf)
                if sel[e] is not None:
                    buf = buf[sel[e]]
                arrays[f"{e}/{o}"] = buf if dtype is None else buf.astype(dtype, copy=False)
        index = pd.DataFrame({
            "video": pd.Categorical(np.repeat(np.arange(len(videos)), counts)).rename_categories(videos)
            if len(videos) else pd.Categorical([]),
            "frame": frame0, "face": face0})
        return FeatureBlock(index, arrays)

    def _check_frames(self, name: str, videos: list[str], locs: list[_VideoLoc], frame: np.ndarray) -> None:
        """Frame numbers must increase within each video (the writer guarantees it; alignment with labels and
        other extractors relies on it), so a damaged file is refused instead of read as wrong rows."""
        if not len(frame):
            return
        bad = np.r_[frame[0] < 1, (np.diff(frame) <= 0) | (frame[1:] < 1)]
        ends = np.cumsum([l.count for l in locs])
        bad[ends[:-1][ends[:-1] < len(frame)]] &= frame[ends[:-1][ends[:-1] < len(frame)]] < 1   # video starts
        if not bad.any():
            return
        r = int(np.argmax(bad))
        k = int(np.searchsorted(ends, r, side="right"))
        what = f"frame {frame[r]} is not a 1-based frame number" if frame[r] < 1 else \
            f"frame {frame[r]} follows frame {frame[r - 1]} (out of order or repeated)"
        raise InputError(f"extractor {name!r}, video {videos[k]!r}: {what}; the file is damaged, re-extract this "
                         f"video", self._sources[locs[k].source])

    def _align(self, videos, extractors, locs, meta):
        """Row selections keeping, per video, the frames every extractor has."""
        offs = {e: np.concatenate([[0], np.cumsum([l.count for l in locs[e]])]) for e in extractors}
        sel = {e: [] for e in extractors}
        frames, faces, counts = [], [], []
        for vi in range(len(videos)):
            per = {e: meta[e][0][offs[e][vi]:offs[e][vi + 1]] for e in extractors}
            common = per[extractors[0]]
            for e in extractors[1:]:
                common = np.intersect1d(common, per[e])
            face = np.ones(len(common), bool)
            for e in extractors:
                idx = offs[e][vi] + np.searchsorted(per[e], common)
                sel[e].append(idx)
                face &= meta[e][1][idx]
            frames.append(common)
            faces.append(face)
            counts.append(len(common))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dt)
        return (cat(frames, np.int32), cat(faces, bool), np.array(counts),
                {e: cat(sel[e], np.int64) for e in extractors})

    def to_dataframe(self, videos: Sequence[str] | None = None, extractors: Sequence[str] | str | None = None,
                     outputs: Sequence[str] = ("embedding",)) -> pd.DataFrame:
        """A notebook view: columns video, frame, face, then `<extractor>/<output>_<i>` as float32."""
        blk = self.read(videos, extractors, outputs)
        cols = [blk.index.reset_index(drop=True)]
        for k, a in blk.arrays.items():
            cols.append(pd.DataFrame(a.astype(np.float32, copy=False),
                                     columns=[f"{k}_{i}" for i in range(a.shape[1])]))
        return pd.concat(cols, axis=1)

    # -- writing --------------------------------------------------------------------------------------------
    def writer(self, info: ExtractorInfo) -> "VideoWriter":
        """A writer committing whole videos of one extractor; refuses a group of other provenance."""
        if self.mode != "a":
            raise InputError("cache opened read-only; open with mode='a' to write", self.paths[0])
        if self._lock is None or not self._lock.held:
            raise InputError("cache closed; open it again to write", self.paths[0])
        if info.name in self._info and self._info[info.name].provenance() != info.provenance():
            raise InputError(f"extractor {info.name!r} already holds features made with other weights or "
                             f"preprocessing ({_diff(self._info[info.name], info)}); "
                             f"write to another cache file or another extractor name", self.paths[0])
        if info.name not in self._writers:
            self._info.setdefault(info.name, info)
            self._catalog.setdefault(info.name, {})
            self._writers[info.name] = VideoWriter(self, self._info[info.name])
        return self._writers[info.name]

    def _next_segment(self) -> Path:
        d = self.parts_dir(self.paths[0])
        d.mkdir(parents=True, exist_ok=True)
        seqs = [int(_SEG_RE.match(p.name).group(1)) for p in self._segments(self.paths[0])]
        self._seq = max([getattr(self, "_seq", -1), *seqs]) + 1
        return d / f"seg-{self._seq:09d}-{uuid.uuid4().hex[:8]}.h5"

    def _indexed_segments(self, main: Path) -> list[Path]:
        """Segment files of `main` that hold videos of the catalogue (those a compaction folds in)."""
        used = {loc.source for cat in self._catalog.values() for loc in cat.values()}
        parts = self.parts_dir(main)
        return sorted({self._sources[i] for i in used if self._sources[i].parent == parts})

    def _adopt_segments(self, main: Path) -> None:
        """Index committed segments this writer has not indexed yet (a commit interrupted between its rename
        and its indexing). One that cannot be indexed is left on disk, unread by the compaction and kept."""
        indexed = {self._sources[loc.source] for cat in self._catalog.values() for loc in cat.values()}
        for seg in self._segments(main):
            if seg in indexed:
                continue
            try:
                self._add_source(seg)
            except InputError as e:
                log.warning("%s; it is left as it is (not folded into the cache)", e)

    def _write_catalog(self, out: h5py.File, compression: str | None) -> None:
        """Every video of the catalogue into the open file `out`, one group per extractor, in catalogue order."""
        for name, cat in self._catalog.items():
            if not cat:
                continue
            locs = list(cat.values())
            n_rows = sum(l.count for l in locs)
            g = _create_group(out, self._info[name], n_rows, len(locs), compression)
            g["video_names"][:] = list(cat)
            g["video_count"][:] = [l.count for l in locs]
            g["video_start"][:] = np.concatenate([[0], np.cumsum([l.count for l in locs])[:-1]])
            for key in ("frame", "face", *self._info[name].outputs):
                ds = g[key]
                step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
                # copy in file order, ~64 MiB at a time
                o = 0
                buf_locs: list[_VideoLoc] = []
                buf_rows = 0
                for l in locs + [None]:
                    if l is None or (buf_rows + l.count > step and buf_locs):
                        if buf_rows:
                            buf = np.empty((buf_rows, *ds.shape[1:]), ds.dtype)
                            self._read_rows(name, key, buf_locs, buf)
                            ds[o:o + buf_rows] = buf
                            o += buf_rows
                        buf_locs, buf_rows = [], 0
                    if l is not None:
                        buf_locs.append(l)
                        buf_rows += l.count

    def _fold_into(self, main: Path, merged: list[Path], what: str) -> None:
        """Write the whole catalogue to ``<main>.tmp`` and rename it over `main`; the tmp file goes on any
        failure (the old main file and every segment stay as they were). `merged` are recorded in the new
        file (so a crash before they are deleted does not count them twice) and deleted after the rename."""
        tmp = main.with_name(main.name + ".tmp")
        try:
            with _new_file(tmp) as out:
                self._write_catalog(out, self.compression)
                out.create_dataset("merged_segments", data=[s.name for s in merged], dtype=h5py.string_dtype())
            with _sigint_deferred():        # rename, cleanup and reopening go together
                self._close_files()
                _atomic_replace(tmp, main)
                for s in merged:
                    s.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.parts_dir(main).rmdir()      # only when empty
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise _io_error(e, f"cannot {what}", tmp, main,
                                f"the committed videos are kept in {main} and {self.parts_dir(main)}; "
                                f"free some space and rerun") from None
            raise

    def compact(self) -> None:
        """Fold the committed segments this writer has indexed into the main file (written beside it, then
        renamed over it); only those segments are deleted."""
        if self.mode != "a":
            raise InputError("cache opened read-only", self.paths[0])
        main = self.paths[0]
        self._adopt_segments(main)
        segs = self._indexed_segments(main)
        if not segs:
            return
        try:
            self._fold_into(main, segs, "compact the cache")
        finally:
            if not self._files:
                self._open_all()

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
    """Commits whole videos of one extractor; each commit is atomic (see the module docstring)."""

    def __init__(self, store: FeatureStore, info: ExtractorInfo):
        self.store = store
        self.info = info

    def has_video(self, video: str) -> bool:
        return self.store.has_video(self.info.name, video)

    def write_video(self, video: str, frame: np.ndarray, face: np.ndarray, embedding: np.ndarray,
                    logits: np.ndarray | None = None, va: np.ndarray | None = None) -> None:
        info = self.info
        store = self.store
        if store._lock is None or not store._lock.held:
            raise InputError("cache closed; open it again to write", store.paths[0])
        if self.has_video(video):
            raise InputError(f"video {video!r} is already in the cache for extractor {info.name!r}",
                             store.paths[0])
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
        if n > 1 and np.any(np.diff(frame) <= 0):
            raise InputError(f"{info.name}/{video}: frame numbers must increase")
        if n and frame[0] < 1:
            raise InputError(f"{info.name}/{video}: frame numbers are 1-based, got {frame[0]}")
        seg = store._next_segment()
        tmp = seg.with_name(seg.name + ".tmp")
        # The commit is: write tmp, fsync, rename (the video is committed), open + index (this writer knows).
        # Ctrl-C is held until all of it is done. Any failure before the rename removes the tmp file; one
        # after it leaves a committed segment that compaction indexes (and folds in) before deleting anything.
        with _sigint_deferred():
            try:
                _write_segment(tmp, info, video, frame, face, data)
                _atomic_replace(tmp, seg)
            except BaseException as e:
                tmp.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    raise _io_error(e, f"cannot commit video {video!r} of extractor {info.name!r}", tmp,
                                    store.paths[0], "the videos committed before it are kept; free some space "
                                    "and rerun to resume") from None
                raise
            store._add_source(seg)


def _main_or_shards(path: Path) -> list[Path]:
    """`path` when it exists (or has committed segments), else its complete set of shard files, else `path`."""
    if path.exists() or FeatureStore._segments(path):
        return [path]
    return shard_files(path) or [path]


def shard_path(path: str | os.PathLike, i: int, n: int) -> Path:
    """``cache/features.h5`` -> ``cache/features.shard-2-of-4.h5``: the one place shard files are named (written
    by ``extract run --shard i/n`` and the Ray engine, found by :func:`shard_files`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{i}-of-{n}{path.suffix or '.h5'}")


def shard_sets(path: str | os.PathLike) -> dict[int, set[int]]:
    """n -> the shard numbers i found beside `path` (as files or as committed segments of a killed run)."""
    path = Path(path)
    pat = re.compile(rf"^{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix or '.h5')}$")
    found: dict[int, set[int]] = {}
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return found
    for p in parent.iterdir():
        name = p.name[:-len(".parts")] if p.name.endswith(".parts") and p.is_dir() else p.name
        m = pat.match(name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    return found


def shard_files(path: str | os.PathLike) -> list[Path]:
    """The shard files ``<stem>.shard-i-of-n<suffix>`` (:func:`shard_path`), i = 1..n; [] when there are none.
    A shard present only as committed segments (its run was killed) counts. Refuses an incomplete set or two
    sets of different n."""
    path = Path(path)
    found = shard_sets(path)
    if not found:
        return []
    if len(found) > 1:
        splits = ", ".join(f"of {n}" for n in sorted(found))
        raise InputError(f"shard files of {len(found)} different splits ({splits}) lie beside the absent cache; "
                         f"move the stale set away or name the files to read", path)
    n, have = next(iter(found.items()))
    missing = [i for i in range(1, n + 1) if i not in have]
    if missing:
        raise InputError(f"the cache is absent and shard(s) {', '.join(map(str, missing))} of {n} are missing "
                         f"(e.g. {shard_path(path, missing[0], n).name}); extract them, or name the shard "
                         f"files to read", path)
    return [shard_path(path, i, n) for i in range(1, n + 1)]


def cache_files(spec: str | os.PathLike) -> list[Path]:
    """The files of a cache named on a command line: ``FILE`` (with its committed segments); when FILE is
    absent, its shard files ``<stem>.shard-i-of-n<suffix>`` (all n); or several files or glob patterns
    separated by commas, read as one cache. Raises InputError when nothing is found."""
    out: list[Path] = []
    for piece in [p.strip() for p in str(spec).split(",")] if isinstance(spec, str) else [str(spec)]:
        if not piece:
            continue
        if any(c in piece for c in "*?["):
            hits = sorted(_glob.glob(piece))
            if not hits:
                raise InputError("no file matches this pattern", piece)
            out.extend(Path(h) for h in hits)
            continue
        p = Path(piece)
        got = _main_or_shards(p)
        if got == [p] and not (p.exists() or FeatureStore._segments(p)):
            raise InputError(f"feature cache not found, nor its shard files {p.stem}.shard-i-of-n"
                             f"{p.suffix or '.h5'} (run `python -m extract run` first)", p)
        out.extend(got)
    if not out:
        raise InputError("no cache files given")
    return list(dict.fromkeys(out))


def merge_caches(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, remove_inputs: bool = False,
                 compression: str | None = None) -> dict[str, int]:
    """Fold several cache files (e.g. the shards of one run) into `out`, atomically (``<out>.tmp``, renamed).

    `out` may be one of the inputs (the others are folded into it); any other existing `out` is refused.
    Every input and `out` are locked for the duration, so a file still being written is refused. Inputs are
    kept unless `remove_inputs` (then deleted, with their segments, after the rename). Returns videos per
    extractor.
    """
    out = Path(out)
    key = lambda p: os.path.normcase(os.path.abspath(p))    # noqa: E731
    paths = [q for p in inputs for q in _main_or_shards(Path(p))]
    if not paths:
        raise InputError("no input files given")
    paths = list({key(p): p for p in paths}.values())
    for p in paths:
        if not (p.exists() or FeatureStore._segments(p)):
            raise InputError("feature cache does not exist", p)
    in_place = any(key(p) == key(out) for p in paths)
    if not in_place and (out.exists() or FeatureStore._segments(out)):
        raise InputError("exists and is not one of the inputs; choose another --out, or name it among the inputs "
                         "to fold the others into it", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    locks: list[CacheLock] = []
    try:
        for p in sorted({key(p): p for p in [*paths, out]}.values(), key=key):
            locks.append(CacheLock(p).acquire())
        src = FeatureStore(paths)
        src.compression = compression
        try:
            if not any(src._catalog.values()):
                raise InputError("the inputs hold no videos; nothing to merge", paths[0])
            counts = {e: len(c) for e, c in src._catalog.items() if c}
            used = sorted({src._sources[loc.source] for c in src._catalog.values() for loc in c.values()})
            own = [s for s in used if key(s.parent) == key(FeatureStore.parts_dir(out))]
            others = [s for s in used if s not in own and key(s) != key(out)]
            src._fold_into(out, own, "write the merged cache")
        finally:
            src._close_files()
        if remove_inputs:
            for p in others:
                p.unlink(missing_ok=True)
            for p in paths:
                if key(p) != key(out):
                    p.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        FeatureStore.parts_dir(p).rmdir()
        return counts
    finally:
        for lk in locks:
            lk.release()


def _diff(a: ExtractorInfo, b: ExtractorInfo) -> str:
    pa, pb = a.provenance(), b.provenance()
    return "; ".join(f"{k}: {pa[k]} vs {pb[k]}" for k in pa if pa[k] != pb[k])
