"""The runner's two torch Datasets: what the decode worker processes do.

``ImageBatches`` (map-style) serves batches of the flat frame list of image-folder videos (crops given);
``FaceChunks`` (iterable) serves frames whose faces are found during extraction (see its docstring).
Both yield dicts: ``video``, ``frame``, ``ok`` (numpy), ``pix`` (size -> uint8 tensor), optionally ``faces``
(rows x extract.faces.RECORD, what the detector found), ``track`` and ``tracks`` (``--faces all`` on videos, see
FaceChunks), ``raw``
(decoded crops of one shape, resized later on the device), ``jpeg``/``jpeg_off``/``jpeg_rows``/``jpeg_paths``
(baseline JPEG files as bytes, decoded later on the device: extract.jpeg), ``bad`` (unreadable files) and ``ends`` (video index
-> frame count, in the chunk that holds a video's last frame), or ``{"error": line}``.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

import numpy as np

from features.errors import InputError

from .faces import NO_FACE, RECORD, DetectorConfig, decode_video, frame_crops
from .jpeg import baseline_jpeg, pack, read_files
from .resize import on_device_exact
from .sources import ImageVideo, VideoFile, load_image, resize_square

try:    # the runner needs torch; keep `import extract.runner` working for listing/help without it
    from torch.utils.data import Dataset as _Dataset, IterableDataset as _IterableDataset
except ImportError:  # pragma: no cover
    _Dataset = _IterableDataset = object


# ----------------------------------------------------------------------------------------------------------
# decoding in worker processes

def _as_is(item: dict) -> dict:
    """The loader's collate function: keep numpy metadata as numpy. The default turns every array into a
    tensor, and each tensor then crosses from the worker through its own file descriptor handshake (~1 ms);
    only the pixels need shared memory."""
    return item


def _worker_init(_: int) -> None:
    # decode workers are many; keep each single-threaded so they do not fight over cores
    import sys

    import torch
    torch.set_num_threads(1)
    if "cv2" in sys.modules:
        # a forked worker of a parent that had used OpenCV: its thread pool did not survive fork() and any cv2
        # call here deadlocks (seen in one process that detected faces, then extracted crops). Forked workers
        # (ImageBatches) only use PIL; the cv2 workers (FaceChunks) start from a fresh forkserver process.
        return
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass


class ImageBatches(_Dataset):
    """Map-style dataset: item i = batch i of the flat frame list of all pending image videos (in order)."""

    def __init__(self, videos: Sequence[ImageVideo], vids: Sequence[int], sizes: Sequence[int], batch: int,
                 device_resize: bool = False, device_decode: bool = False):
        self.sizes, self.batch, self.device_resize = list(sizes), int(batch), bool(device_resize)
        # device_decode: baseline JPEGs are only read here and shipped as bytes (extract.jpeg)
        self.device_decode = bool(device_decode)
        # Paths as compact numpy byte strings (folder id + file name): no per-item Python objects, so forked
        # workers do not copy the list page by page through reference counting.
        self.folders = [str(v.folder) for v in videos]
        names, vid, frame, fold = [], [], [], []
        for k, (v, vi) in enumerate(zip(videos, vids)):
            names += [os.path.basename(p).encode() if p else b"" for p in v.paths]
            vid.append(np.full(v.n_frames, vi, np.int64))
            frame.append(np.arange(1, v.n_frames + 1, dtype=np.int64))
            fold.append(np.full(v.n_frames, k, np.int32))
        self.names = np.array(names, dtype="S") if names else np.zeros(0, "S1")
        self.vid = np.concatenate(vid) if vid else np.zeros(0, np.int64)
        self.frame = np.concatenate(frame) if frame else np.zeros(0, np.int64)
        self.fold = np.concatenate(fold) if fold else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return math.ceil(len(self.vid) / self.batch)

    def __getitem__(self, i: int) -> dict:
        import torch
        sl = slice(i * self.batch, min((i + 1) * self.batch, len(self.vid)))
        n = sl.stop - sl.start
        imgs: list = [None] * n
        bad = []
        jpeg_rows, jpeg_paths, blobs = [], [], []
        for r, (name, k) in enumerate(zip(self.names[sl], self.fold[sl])):
            if not name:
                continue            # no crop for this frame (no face found by the data set's own detector)
            path = os.path.join(self.folders[k], name.decode())
            if self.device_decode:
                data = read_files([path])[0]
                if data is not None and baseline_jpeg(data) is not None:
                    jpeg_rows.append(r), jpeg_paths.append(path), blobs.append(data)
                    continue
            img, why = load_image(path)
            if img is None:
                bad.append((path, why))
                continue
            imgs[r] = img
        ok = np.array([im is not None for im in imgs], bool)
        decoded = np.flatnonzero(ok)                 # rows decoded here (all ok rows unless device_decode)
        out = {"video": self.vid[sl], "frame": self.frame[sl], "ok": ok, "pix": {}, "bad": bad, "ends": {}}
        if self.device_decode:
            ok[jpeg_rows] = True
            out["jpeg"], out["jpeg_off"] = pack(blobs)
            out["jpeg_rows"], out["jpeg_paths"] = np.array(jpeg_rows, np.int64), jpeg_paths
        shapes = {im.shape for im in imgs if im is not None}
        here = self.sizes if len(decoded) or not self.device_decode else []
        if self.device_resize and len(shapes) == 1 and not self.device_decode:
            shape = next(iter(shapes))
            here = [s for s in self.sizes if not on_device_exact(shape[:2], s)]
            if len(here) < len(self.sizes):
                # every crop has one shape (Aff-Wild2's aligned crops are all 112x112): ship the decoded
                # pixels; the main process resizes them up on the model's device (extract.resize: same pixels
                # as PIL). Downscales (e.g. a 64 px model beside a 224 px one) are still done here.
                raw = torch.zeros((n, *shape), dtype=torch.uint8)
                view = raw.numpy()
                for r in decoded:
                    view[r] = imgs[r]
                out["raw"] = raw
        for s in here:
            pix = torch.zeros((n, s, s, 3), dtype=torch.uint8)
            view = pix.numpy()                             # fill through a numpy view (no per-row tensors)
            for r in decoded:
                view[r] = resize_square(imgs[r], s)
            out["pix"][s] = pix
        return out


class FaceChunks(_IterableDataset):
    """Frames whose faces are found during extraction: video files, and image layouts with ``--detect on``.

    Each worker takes every n-th item (a video file, or the images of one folder or one photo), decodes its
    frames in order, detects faces (:func:`extract.faces.frame_crops`) and yields chunks of up to `batch` rows
    that may span items; the chunk holding (or following) an item's last row carries ``ends[item] = its row
    count``, since that count is known only once its frames are decoded (a video's header may be wrong; a photo
    has as many rows as faces with ``--faces all``).

    Rows: one per frame (frame = 1-based position), or with ``faces == "all"`` one per face of a photo
    (frame = face number, largest first). A frame or photo without a face, or whose image cannot be decoded, is
    one row with ``face=False``. With detection on, ``faces`` holds each row's record (NaN without a face).

    Video files with ``faces == "all"``: one row per face found (frame = its frame number), ``track`` = its
    track id (extract.tracks); the chunk that carries the video's ``ends`` also carries ``tracks[item] =
    (frames decoded, person number per track id)``, and the committer makes one item per person.
    """
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
        rows: list[tuple[int, int, dict | None, np.ndarray, int]] = []   # (item id, frame, crops, record, track)
        bad: list[tuple[str, str]] = []
        ends: dict[int, int] = {}
        tracks: dict[int, tuple[int, np.ndarray]] = {}

        def flush() -> dict:
            m = len(rows)
            pix = {s: torch.zeros((m, s, s, 3), dtype=torch.uint8) for s in self.sizes}
            views = {s: p.numpy() for s, p in pix.items()}       # fill through numpy views
            for r, row in enumerate(rows):
                if row[2] is not None:
                    for s in self.sizes:
                        views[s][r] = row[2][s]
            out = {"video": np.array([r[0] for r in rows], np.int64).reshape(m),
                   "frame": np.array([r[1] for r in rows], np.int64).reshape(m),
                   "ok": np.array([r[2] is not None for r in rows], bool).reshape(m),
                   "pix": pix, "bad": list(bad), "ends": dict(ends)}
            if detect:
                out["faces"] = np.array([r[3] for r in rows], np.float32).reshape(m, RECORD)
            if tracked:
                out["track"] = np.array([r[4] for r in rows], np.int64).reshape(m)
                out["tracks"] = dict(tracks)
            rows.clear(), bad.clear(), ends.clear(), tracks.clear()
            return out

        tracked = every and any(kind == "video" for kind, _ in self.items)
        for (kind, what), vi in list(zip(self.items, self.vids))[k::n]:
            count = 0
            frames = decode_video(what) if kind == "video" else self._images(what, bad)
            try:
                if kind == "video" and every:       # one row per face, linked into persons
                    from .tracks import tracked_crops, tracker_for
                    tracker, n_frames = tracker_for(self.cfg), 0
                    for f, faces in enumerate(tracked_crops(frames, self.sizes, self.cfg, tracker), 1):
                        n_frames = f
                        for t, fc in faces:
                            rows.append((vi, f, fc.crops, fc.record, t))
                            count += 1
                            if len(rows) == self.batch:
                                yield flush()
                    tracks[vi] = (n_frames, tracker.persons())
                else:
                    for f, faces in enumerate(frame_crops(frames, self.sizes, self.cfg, detect, every), 1):
                        if every:       # a photo: one row per face, numbered 1.. (largest first)
                            for j, fc in enumerate(faces or [None], 1):
                                crops, rec = (None, NO_FACE) if fc is None else fc
                                rows.append((vi, j, crops, rec, -1))
                                count += 1
                                if len(rows) == self.batch:
                                    yield flush()
                            continue
                        rows.append((vi, f, faces[0].crops if faces else None,
                                     faces[0].record if faces else NO_FACE, -1))
                        count += 1
                        if len(rows) == self.batch:
                            yield flush()
            except InputError as e:
                yield {"error": str(e)}     # one line; the main process raises it
                return
            ends[vi] = count
        if rows or ends or bad or tracks:
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
