"""The committer: rows of launched batches into per-video buffers, each video written the moment it is complete.

A video is committed (one atomic segment per extractor, see features.store) as soon as all its rows are in, so a
run killed at any moment loses at most the videos in flight. Where a detector ran, each row's face (box, score,
landmarks) is committed beside the outputs. A tracked video (``--faces all`` on video files, extract.tracks) is
committed as one item per person, ``<video>_p<k>``, each with a row for every frame of the video; the persons of
one video are committed together (one segment per extractor), so ``<video>_p1`` being in the cache means the
whole video is (:func:`marker_item`). Both engines (extract.runner and extract.ray_engine) commit through this class.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from features.errors import InputError

from .faces import RECORD
from .sources import ImageVideo, VideoFile

log = logging.getLogger("extract.runner")


class Committer:
    """Owns collect -> complete -> commit for one run over `videos[todo]`.

    `needs[k, j]`: video k still lacks extractor j's features; `bar` is anything with ``update(n)`` and
    ``set_postfix_str(s, refresh=False)`` (a tqdm bar, or the Ray worker's progress counter).
    `known_lengths=False`: row counts are known only once decoded (face detection: a photo's rows are its faces),
    so a video is complete when its last chunk says so."""

    def __init__(self, videos: Sequence[Any], todo: Sequence[int], needs: np.ndarray, writers: Sequence[Any],
                 out: Path, summary: Any, bar: Any, known_lengths: bool = True):
        self.videos, self.needs, self.writers, self.out, self.summary, self.bar = \
            videos, needs, writers, out, summary, bar
        self.n_todo = len(todo)
        self.pending: dict[int, _Pending] = {
            k: _Pending(videos[k].n_frames if known_lengths and _known_length(videos[k]) else None) for k in todo}

    def finish(self, chunk: dict, launched: list) -> None:
        """Outputs of a launched batch into the videos' buffers; commit every video now complete."""
        summary, pending, videos, clock = self.summary, self.pending, self.videos, time.perf_counter
        vid, ok = chunk["video"], chunk["ok"]
        t = clock()
        results = [f() if f is not None else None for f in launched]
        summary.model_s += clock() - t
        for k, tr in chunk.get("tracks", {}).items():
            pending[int(k)].tracks = tr
        _collect(chunk, vid, ok, results, pending)
        self.bar.update(len(vid))
        t = clock()
        for k in _complete(pending, chunk["ends"], vid):
            p = pending.pop(k)
            if p.tracks is not None:
                self._commit_persons(k, p)
                continue
            if p.received == 0:
                n = getattr(videos[k], "est_frames", 0)
                log.warning("%s: no frames decoded%s; skipped", videos[k].describe(),
                            f" (its container announces {n})" if n > 0 else "")
                continue
            _commit(videos[k], p, self.writers, self.needs[k], self.out)
            short = videos[k].short_decode(p.received) if isinstance(videos[k], VideoFile) else None
            if short:
                log.warning("%s: %s", videos[k].describe(), short)
                summary.short_videos += 1
            summary.videos += 1
            summary.frames += p.received
            summary.no_face += int(p.received - sum(int(f.sum()) for f in p.faces))
            self.bar.set_postfix_str(f"{summary.videos}/{self.n_todo} videos", refresh=False)
        summary.write_s += clock() - t

    def _commit_persons(self, k: int, p: "_Pending") -> None:
        """A tracked video: one item per person (see the module docstring)."""
        video, summary = self.videos[k], self.summary
        n_frames, person = p.tracks
        if n_frames == 0:
            n = getattr(video, "est_frames", 0)
            log.warning("%s: no frames decoded%s; skipped", video.describe(),
                        f" (its container announces {n})" if n > 0 else "")
            return
        n_persons = int(person.max()) if len(person) else 0
        if n_persons == 0:
            log.warning("%s: no person found in enough frames to be tracked (--track-min); nothing stored for it",
                        video.describe())
            return
        rows = _Rows.of(p)
        who = person[rows.track] if len(rows.track) else np.zeros(0, np.int64)
        items = {}
        for q in range(1, n_persons + 1):
            sel = np.flatnonzero(who == q)
            at = rows.frame[sel] - 1
            face = np.zeros(n_frames, bool)
            face[at] = True
            rec = np.full((n_frames, RECORD), np.nan, np.float32)
            rec[at] = rows.faces[sel]
            outs = {j: {key: _spread(a[sel], at, n_frames) for key, a in d.items()} for j, d in rows.outs.items()}
            items[f"{video.name}_p{q}"] = _Rows(np.arange(1, n_frames + 1), face, outs, rec, None)
            summary.frames += n_frames
            summary.no_face += int(n_frames - face.sum())
        _write(items, self.writers, self.needs[k], self.out, source_video=video.name)
        short = video.short_decode(n_frames) if isinstance(video, VideoFile) else None
        if short:
            log.warning("%s: %s", video.describe(), short)
            summary.short_videos += 1
        summary.videos += 1
        summary.persons += n_persons
        self.bar.set_postfix_str(f"{summary.videos}/{self.n_todo} videos", refresh=False)

    def check_done(self) -> None:
        if self.pending:     # cannot happen unless a worker lost rows: refuse to commit partial videos
            raise InputError(f"{len(self.pending)} videos were not completed (e.g. "
                             f"{self.videos[next(iter(self.pending))].describe()})")


def _known_length(video: Any) -> bool:
    return isinstance(video, ImageVideo)


def marker_item(video: Any, tracked: bool) -> str:
    """The item whose presence in the cache marks `video` as done: itself, or its first person when tracked
    (persons are committed last first, see the module docstring)."""
    return f"{video.name}_p1" if tracked else video.name


@dataclass
class _Pending:
    expected: int | None
    frames: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    outs: dict = field(default_factory=dict)      # extractor index -> output name -> list of arrays
    received: int = 0
    records: list = field(default_factory=list)   # the detector's face per row (extract.faces.RECORD)
    track: list = field(default_factory=list)     # track id per row (a tracked video)
    tracks: tuple | None = None                   # a tracked video: (frames decoded, person number per track)


@dataclass
class _Rows:
    """One item's rows, concatenated: what is written per extractor."""
    frame: np.ndarray
    face: np.ndarray
    outs: dict                      # extractor index -> output name -> (n, d)
    faces: np.ndarray | None        # (n, RECORD), None when no detector ran
    track: np.ndarray | None

    @classmethod
    def of(cls, p: _Pending) -> "_Rows":
        cat = lambda xs, empty: np.concatenate(xs) if xs else empty      # noqa: E731
        return cls(cat(p.frames, np.zeros(0, np.int64)), cat(p.faces, np.zeros(0, bool)),
                   {j: {k: np.concatenate(a) for k, a in d.items()} for j, d in p.outs.items()},
                   cat(p.records, None), cat(p.track, np.zeros(0, np.int64)))


def _spread(a: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    """Rows `a` placed at row indices `at` of n rows, zeros elsewhere (as for frames without a face)."""
    out = np.zeros((n, *a.shape[1:]), a.dtype)
    out[at] = a
    return out



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
        if "faces" in chunk:
            p.records.append(chunk["faces"][lo:hi])
        if "track" in chunk:
            p.track.append(chunk["track"][lo:hi])
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
    _write({video.name: _Rows.of(p)}, writers, need, out)


def _write(items: dict[str, _Rows], writers, need: np.ndarray, out: Path, source_video: str | None = None) -> None:
    """Items' rows into every extractor that needs them; the items of one call in one commit per extractor."""
    for j, w in enumerate(writers):
        if not need[j]:
            continue
        batch = []
        for name, rows in items.items():
            n = len(rows.frame)
            faces = None if rows.faces is None else {
                "face_box": rows.faces[:, :4], "face_score": rows.faces[:, 4:5], "face_landmarks": rows.faces[:, 5:]}
            got = rows.outs.get(j, {})
            arrays = {k: got[k] if k in got else np.zeros((n, d), np.float32) for k, d in w.info.outputs.items()}
            batch.append(dict(video=name, frame=rows.frame, face=rows.face, faces=faces, source_video=source_video,
                              **arrays))
        try:
            w.write_videos(batch)
        except OSError as e:
            raise InputError(f"cannot commit video {next(iter(items))!r} ({e.strerror or e}); the videos "
                             f"committed before it are kept, rerun to resume", out) from None
