"""What a cache file holds: the format, an extractor group's provenance (:class:`ExtractorInfo`), the checks a
file passes on open, and the layout a group is created with.

File layout (schema version 1; docs/cache-format.md has it as a table)::

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
        face_box       (N, 4)  float32, optional: the detected face (x, y, width, height) in the original
                               frame's pixels; NaN where no face was found
        face_score     (N, 1)  float32, optional: the detector's score of that face (MTCNN: probability;
                               Haar: neighbours merged into the box, not a probability); NaN where none
        face_landmarks (N, 10) float32, optional: five points x1, y1, ..., x5, y5 in frame pixels (image-left
                               eye, image-right eye, nose tip, image-left and image-right mouth corner);
                               NaN where the detector gives none (Haar) or no face was found
        video_source (V,)      utf-8 strings, optional: the video file each item was cut from (tracked
                               persons <video>_p1, <video>_p2, ... name <video>; "" or absent: itself)

The face datasets are written where a face detector ran (video files, photo folders, --detect on); the three
come together or not at all. A group without them (older caches, Aff-Wild2 crops) reads as NaN faces, so files
with and without them read, merge and compact together; the schema version stays 1.

The same layout serves a main file, a shard file and a segment (one committed video).
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from ..errors import InputError

SCHEMA_VERSION = 1
FORMAT = "affect-features"
OUTPUTS = ("embedding", "logits", "va")
#: the optional per-row face datasets (see the layout above) and their widths; all float32, NaN = none
FACE_OUTPUTS = {"face_box": 4, "face_score": 1, "face_landmarks": 10}
_CHUNK_BYTES = 1 << 20          # ~1 MiB chunks (compressed files only) fit HDF5's default chunk cache
_RDCC_BYTES = 64 << 20          # a larger chunk cache for partial-chunk reads at video boundaries
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


def provenance_diff(a: ExtractorInfo, b: ExtractorInfo) -> str:
    """The provenance fields in which `a` and `b` differ, for an error line."""
    pa, pb = a.provenance(), b.provenance()
    return "; ".join(f"{k}: {pa[k]} vs {pb[k]}" for k in pa if pa[k] != pb[k])


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


def group_index(g: h5py.Group, name: str) -> tuple[ExtractorInfo, list[str], np.ndarray, np.ndarray]:
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
    faces = [k for k in FACE_OUTPUTS if k in g]
    if faces and len(faces) != len(FACE_OUTPUTS):
        raise InputError(f"extractor {name!r}: face dataset(s) {', '.join(sorted(set(FACE_OUTPUTS) - set(faces)))} "
                         f"missing beside {', '.join(faces)}; the file is damaged, re-extract it")
    for k in faces:
        ds = g[k]
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n, FACE_OUTPUTS[k]) or ds.dtype.kind != "f":
            raise InputError(f"extractor {name!r}: dataset {k!r} has shape {getattr(ds, 'shape', None)}, expected "
                             f"({n}, {FACE_OUTPUTS[k]}) floats; the file is damaged, re-extract it")
    if "video_source" in g:
        vs = g["video_source"]
        if not isinstance(vs, h5py.Dataset) or vs.shape != (len(names),) or vs.dtype.kind not in "OS":
            raise InputError(f"extractor {name!r}: dataset 'video_source' has shape {getattr(vs, 'shape', None)}, "
                             f"expected ({len(names)},) strings; the file is damaged, re-extract it")
    bad = np.flatnonzero((starts < 0) | (counts < 0) | (starts + counts > n))
    if len(bad):
        k = bad[0]
        raise InputError(f"extractor {name!r}, video {names[k]!r}: video_start={starts[k]}, video_count={counts[k]} "
                         f"lie beyond the {n} rows of the data; the file is damaged, re-extract it")
    return info, names, starts, counts


def open_read(path: Path) -> h5py.File:
    """`path` opened read-only, its format and schema version checked (an InputError naming it otherwise)."""
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


def new_file(path: Path) -> h5py.File:
    """A new, empty cache file at `path` (truncated if present), open for writing."""
    f = h5py.File(path, "w")
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["created"] = _now()
    return f


def create_group(f: h5py.File, info: ExtractorInfo, n_rows: int, n_videos: int,
                 compression: str | None = None, faces: bool = False, sources: bool = False) -> h5py.Group:
    """The group of extractor `info` in `f`, its datasets created at their final sizes (filled by the caller);
    with `faces` the face datasets too, with `sources` the video_source dataset."""
    g = f.require_group("extractors").create_group(info.name)
    for k, v in info.to_attrs().items():
        g.attrs[k] = v
    str_dt = h5py.string_dtype("utf-8")
    g.create_dataset("video_names", shape=(n_videos,), dtype=str_dt)
    g.create_dataset("video_start", shape=(n_videos,), dtype=np.int64)
    g.create_dataset("video_count", shape=(n_videos,), dtype=np.int64)
    g.create_dataset("frame", shape=(n_rows,), dtype=np.int32)
    g.create_dataset("face", shape=(n_rows,), dtype=bool)
    if sources:
        g.create_dataset("video_source", shape=(n_videos,), dtype=str_dt)
    widths = {**info.outputs, **(FACE_OUTPUTS if faces else {})}
    for out, dim in widths.items():
        dt = np.dtype(info.embedding_dtype if out == "embedding" else np.float32)
        # Sizes are known when a file is written (files are never resized), so uncompressed data is stored
        # contiguously: bulk reads then run at raw disk/page-cache speed. Compression needs chunks.
        chunks = None
        if compression and n_rows:
            chunks = (max(1, min(n_rows, _CHUNK_BYTES // (dim * dt.itemsize))), dim)
        g.create_dataset(out, shape=(n_rows, dim), dtype=dt, chunks=chunks, compression=compression)
    return g
