"""The catalogue of an open cache: its files (main, shard and segment files) and, per extractor, where each
video's rows lie. Opening indexes every file (all of its videos or, on an error, none); segments are closed
when many are open and reopened on demand."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import InputError
from .paths import segments
from .schema import ExtractorInfo, group_index, open_read, provenance_diff

log = logging.getLogger("features.store")      # one logger for the package: its name is in every log line

_OPEN_SEGMENTS = 64             # segment files kept open at once (each holds a file descriptor)


@dataclass
class VideoLoc:
    source: int     # index into Catalogue._files
    start: int
    count: int
    origin: str = ""    # the video file this item was cut from (a tracked person), "" for itself


class Catalogue:
    """Files of a cache opened for reading, and the index of their videos per extractor (no rows read yet)."""

    def __init__(self, paths: list[Path], mode: str, compression: str | None) -> None:
        self.mode = mode
        self.paths = paths
        self.compression = compression
        self._files: list[h5py.File | None] = []    # None: a segment closed to save descriptors (see _file)
        self._sources: list[Path] = []
        self._open_segments: dict[int, None] = {}   # indices of open segment files, least recently used first
        self._catalog: dict[str, dict[str, VideoLoc]] = {}
        self._info: dict[str, ExtractorInfo] = {}
        self._faces: dict[str, bool] = {}           # extractor -> some file holds its face datasets

    # -- opening --------------------------------------------------------------------------------------------
    def _open_all(self) -> None:
        self._close_files()
        self._catalog = {}
        self._info = {}
        self._faces = {}
        merged_by_main: dict[Path, set] = {}
        sources: list[Path] = []
        for p in self.paths:
            if p.exists():
                sources.append(p)
            elif self.mode == "r" and not segments(p):
                raise InputError("feature cache does not exist", p)
            sources.extend(segments(p))
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
        f = open_read(src)
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
            f = self._files[i] = open_read(self._sources[i])
        if i in self._open_segments or self._sources[i].parent.name.endswith(".parts"):
            self._touch_segment(i)
        return f

    def _index_file(self, i: int, src: Path) -> None:
        f = self._file(i)
        new: list[tuple[str, ExtractorInfo, dict[str, VideoLoc], bool]] = []
        groups = f.get("extractors")
        if groups is None:              # a valid empty cache (e.g. a worker's shard before its first commit)
            return
        if not isinstance(groups, h5py.Group):
            raise InputError("'extractors' is not a group; the file is damaged", src)
        for name, g in groups.items():
            if not isinstance(g, h5py.Group):
                raise InputError(f"extractors/{name} is not a group; the file is damaged", src)
            try:
                info, names, starts, counts = group_index(g, name)
            except InputError as e:
                raise InputError(str(e), src) from None
            known = self._info.get(name)
            if known is None:
                known = info
            elif known.provenance() != info.provenance():
                raise InputError(f"extractor {name!r} here was made with other weights or preprocessing than "
                                 f"in {self.paths[0]} ({provenance_diff(known, info)})", src)
            cat = self._catalog.get(name, {})
            add: dict[str, VideoLoc] = {}
            origins = list(g["video_source"].asstr()[()]) if "video_source" in g else [""] * len(names)
            for v, s, c, o in zip(names, starts, counts, origins):
                if v in cat or v in add:
                    other = self._sources[cat[v].source] if v in cat else src
                    raise InputError(f"video {v!r} of extractor {name!r} is stored twice (also in {other})", src)
                add[v] = VideoLoc(i, int(s), int(c), "" if o == v else o)
            new.append((name, known, add, "face_box" in g))
        for name, info, add, faces in new:   # all checked: index them (so a failure leaves nothing half-indexed)
            self._info.setdefault(name, info)
            self._catalog.setdefault(name, {}).update(add)
            self._faces[name] = self._faces.get(name, False) or faces

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

    def n_frames(self, name: str, video: str | None = None) -> int:
        """Rows (frames) extractor `name` holds: of one `video` (an InputError when it has none), else of all."""
        if video is not None:
            return self._loc(name, video).count
        self.info(name)
        return sum(loc.count for loc in self._catalog[name].values())

    def has_faces(self, name: str) -> bool:
        """Whether extractor `name` holds recorded faces (boxes, scores, landmarks) for some of its videos."""
        self.info(name)
        return self._faces.get(name, False)

    def video_sources(self, name: str) -> dict[str, str]:
        """Item -> the video file it was cut from (a tracked person ``<video>_p1`` -> ``<video>``; an item
        that is a whole video -> its own name)."""
        self.info(name)
        return {v: loc.origin or v for v, loc in self._catalog[name].items()}

    def has_video(self, name: str, video: str) -> bool:
        return video in self._catalog.get(name, {})

    def source_files(self) -> list[Path]:
        """The files (main, shard and segment files) that hold at least one indexed video, sorted."""
        return sorted({self._sources[loc.source] for cat in self._catalog.values() for loc in cat.values()})

    def _loc(self, name: str, video: str) -> VideoLoc:
        try:
            return self._catalog[name][video]
        except KeyError:
            raise InputError(f"video {video!r} is not in the cache for extractor {name!r}",
                             self.paths[0]) from None
