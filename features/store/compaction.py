"""Compaction: the whole catalogue written to ``<main>.tmp`` and renamed over the main file, after which the
segments folded in are deleted. Only segments this writer has indexed are folded (and deleted); committed
segments it has not indexed yet are indexed first, and one that cannot be indexed is left on disk, unread."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .catalogue import VideoLoc
from .durability import atomic_replace, io_error, sigint_deferred
from .paths import parts_dir, segments
from .reader import CacheReader
from .schema import FACE_OUTPUTS, create_group, new_file

log = logging.getLogger("features.store")      # one logger for the package: its name is in every log line


class Compaction(CacheReader):
    """Folds the catalogue into one file (:meth:`fold_into`, :meth:`compact`)."""

    def _indexed_segments(self, main: Path) -> list[Path]:
        """Segment files of `main` that hold videos of the catalogue (those a compaction folds in)."""
        parts = parts_dir(main)
        return [s for s in self.source_files() if s.parent == parts]

    def _adopt_segments(self, main: Path) -> None:
        """Index committed segments this writer has not indexed yet (a commit interrupted between its rename
        and its indexing). One that cannot be indexed is left on disk, unread by the compaction and kept."""
        indexed = set(self.source_files())
        for seg in segments(main):
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
            faces = self._faces.get(name, False)
            sources = any(l.origin for l in locs)
            g = create_group(out, self._info[name], n_rows, len(locs), compression, faces=faces, sources=sources)
            g["video_names"][:] = list(cat)
            g["video_count"][:] = [l.count for l in locs]
            g["video_start"][:] = np.concatenate([[0], np.cumsum([l.count for l in locs])[:-1]])
            if sources:
                g["video_source"][:] = [l.origin for l in locs]
            for key in ("frame", "face", *self._info[name].outputs, *(FACE_OUTPUTS if faces else ())):
                self._copy_dataset(name, key, locs, g[key])

    def _copy_dataset(self, name: str, key: str, locs: list[VideoLoc], ds: h5py.Dataset) -> None:
        """Dataset `key` of the videos at `locs` into `ds`, in file order, ~64 MiB at a time."""
        step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        o = 0
        buf_locs: list[VideoLoc] = []
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

    def fold_into(self, main: Path, merged: list[Path], what: str) -> None:
        """Write the whole catalogue to ``<main>.tmp`` and rename it over `main`; the tmp file goes on any
        failure (the old main file and every segment stay as they were). `merged` are recorded in the new
        file (so a crash before they are deleted does not count them twice) and deleted after the rename.
        The cache's files are closed afterwards; `what` names the action in an error line."""
        tmp = main.with_name(main.name + ".tmp")
        try:
            with new_file(tmp) as out:
                self._write_catalog(out, self.compression)
                out.create_dataset("merged_segments", data=[s.name for s in merged], dtype=h5py.string_dtype())
            with sigint_deferred():        # rename, cleanup and reopening go together
                self._close_files()
                atomic_replace(tmp, main)
                for s in merged:
                    s.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    parts_dir(main).rmdir()      # only when empty
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise io_error(e, f"cannot {what}", tmp, main,
                               f"the committed videos are kept in {main} and {parts_dir(main)}; "
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
            self.fold_into(main, segs, "compact the cache")
        finally:
            if not self._files:
                self._open_all()
