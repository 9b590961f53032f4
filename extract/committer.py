"""The committer: rows of launched batches into per-video buffers, each video written the moment it is complete.

A video is committed (one atomic segment per extractor, see features.store) as soon as all its rows are in, so a
run killed at any moment loses at most the videos in flight. Both engines (extract.runner and extract.ray_engine)
commit through this class.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from features.errors import InputError

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
        _collect(chunk, vid, ok, results, pending)
        self.bar.update(len(vid))
        t = clock()
        for k in _complete(pending, chunk["ends"], vid):
            p = pending.pop(k)
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

    def check_done(self) -> None:
        if self.pending:     # cannot happen unless a worker lost rows: refuse to commit partial videos
            raise InputError(f"{len(self.pending)} videos were not completed (e.g. "
                             f"{self.videos[next(iter(self.pending))].describe()})")


def _known_length(video: Any) -> bool:
    return isinstance(video, ImageVideo)


@dataclass
class _Pending:
    expected: int | None
    frames: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    outs: dict = field(default_factory=dict)      # extractor index -> output name -> list of arrays
    received: int = 0



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
