"""Frames whose faces are found during extraction: video files, and image layouts with ``--detect on``.

An iterable dataset for the runner's DataLoader: each worker takes every n-th item (a video file, or the images
of one folder or one photo), decodes its frames in order, detects faces (:func:`extract.faces.frame_crops`) and
yields chunks of up to `batch` rows that may span items; the chunk holding (or following) an item's last row
carries ``ends[item] = its row count``, since that count is known only once its frames are decoded (a video's
header may be wrong; a photo has as many rows as faces with ``--faces all``).

Rows: one per frame (frame = 1-based position), or with ``faces == "all"`` one per face of a photo
(frame = face number, largest first). A frame or photo without a face, or whose image cannot be decoded, is one
row with ``face=False``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from features.errors import InputError

from .faces import DetectorConfig, decode_video, frame_crops
from .sources import ImageVideo, VideoFile, load_image

try:    # keep the module importable without torch (listing, help)
    from torch.utils.data import IterableDataset as _IterableDataset
except ImportError:  # pragma: no cover
    _IterableDataset = object


class FaceChunks(_IterableDataset):
    def __init__(self, videos: Sequence[ImageVideo | VideoFile], vids: Sequence[int], sizes: Sequence[int],
                 batch: int, detector: DetectorConfig):
        self.items = [("video", str(v.path)) if isinstance(v, VideoFile) else ("images", list(v.paths))
                      for v in videos]
        self.vids, self.sizes, self.batch, self.cfg = list(vids), list(sizes), int(batch), detector

    def __iter__(self) -> Iterator[dict]:
        import torch
        info = torch.utils.data.get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        detect, every = self.cfg.detect != "off", self.cfg.faces == "all"
        rows: list[tuple[int, int, dict | None]] = []      # (item id, frame, crops or None)
        bad: list[tuple[str, str]] = []
        ends: dict[int, int] = {}

        def flush() -> dict:
            m = len(rows)
            pix = {s: torch.zeros((m, s, s, 3), dtype=torch.uint8) for s in self.sizes}
            views = {s: p.numpy() for s, p in pix.items()}       # fill through numpy views
            for r, (_, _, c) in enumerate(rows):
                if c is not None:
                    for s in self.sizes:
                        views[s][r] = c[s]
            out = {"video": np.array([r[0] for r in rows], np.int64).reshape(m),
                   "frame": np.array([r[1] for r in rows], np.int64).reshape(m),
                   "ok": np.array([r[2] is not None for r in rows], bool).reshape(m),
                   "pix": pix, "bad": list(bad), "ends": dict(ends)}
            rows.clear(), bad.clear(), ends.clear()
            return out

        for (kind, what), vi in list(zip(self.items, self.vids))[k::n]:
            count = 0
            frames = decode_video(what) if kind == "video" else self._images(what, bad)
            try:
                for f, crops in enumerate(frame_crops(frames, self.sizes, self.cfg, detect, every), 1):
                    if every:       # a photo: one row per face, numbered 1.. (largest first)
                        for j, c in enumerate(crops or [None], 1):
                            rows.append((vi, j, c))
                            count += 1
                            if len(rows) == self.batch:
                                yield flush()
                        continue
                    rows.append((vi, f, crops[0] if crops else None))
                    count += 1
                    if len(rows) == self.batch:
                        yield flush()
            except InputError as e:
                yield {"error": str(e)}     # one line; the main process raises it
                return
            ends[vi] = count
        if rows or ends or bad:
            yield flush()

    @staticmethod
    def _images(paths: list[str | None], bad: list) -> Iterator[np.ndarray | None]:
        for p in paths:
            img = None
            if p:
                img, why = load_image(p)
                if img is None:
                    bad.append((p, why))
            yield img
