"""The labelled frames a fine-tuning trains and validates on, and the torch Dataset that serves them.

Frames come from the same places and in the same pixels as extraction: the crops the data set's layout lists
(extract.sources.discover), decoded by extract.sources.load_image and resized by resize_square (PIL bilinear
to the network's input size), so the network is trained on what `extract run` will feed it. Training frames
are then flipped and cropped here (extract.finetune.augment; their colour is jittered on the device), each from
its own seed (seed, epoch, position), so an epoch's pixels are the same whatever the number of decode workers,
and a resumed run sees what an uninterrupted one saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.errors import InputError
from features.labels import label_array, load_labels
from features.tasks import Task

from ..sources import ImageVideo, discover, load_image, resize_square
from .augment import geometric, seed_of

try:    # keep the module importable for listings without torch
    from torch.utils.data import Dataset as _Dataset
except ImportError:  # pragma: no cover
    _Dataset = object

@dataclass
class Frames:
    """One split's labelled frames that have a crop: its file, label and video."""
    paths: list[str]
    y: np.ndarray                 # the task's label array (EXPR: (n,) ints; VA, AU: (n, k))
    video: np.ndarray             # (n,) index into `videos`
    videos: list[str]
    n_labelled: int               # valid labelled frames of the split
    n_without_crop: int           # of those, frames whose crop (or whose video's crop folder) is missing
    labels_source: str

    def __len__(self) -> int:
        return len(self.paths)


def crop_videos(data: Path, crops: str = "auto") -> dict[str, ImageVideo]:
    """The data set's videos given as crops (Aff-Wild2 layout or one folder of frames per video), by name."""
    source = discover(data, "auto", crops=crops)
    if source.layout not in ("affwild", "folders"):
        raise InputError(f"fine-tuning reads face crops (the Aff-Wild2 layout, or one folder of frames per video); "
                         f"this is the {source.layout} layout", data)
    return {v.name: v for v in source.videos if isinstance(v, ImageVideo)}


def labelled_frames(data: Path, task: Task, split: str, videos: dict[str, ImageVideo]) -> Frames:
    """`split`'s valid labelled frames of `task` (annotation folders or MTL files under `data`) that have a crop."""
    labels = load_labels(data, task, split, progress=False)
    if len(labels) == 0:
        raise InputError(f"{task.name}: the {split} split has no valid labelled frames", data)
    y_all = label_array(task, labels)
    names = labels["video"].astype(str).to_numpy()
    frames = labels["frame"].to_numpy(np.int64)
    paths, keep, vid, order = [], [], [], {}
    for i, (v, f) in enumerate(zip(names, frames)):
        src = videos.get(v)
        p = src.paths[f - 1] if src is not None and 1 <= f <= src.n_frames else None
        if p is None:
            continue
        paths.append(p)
        keep.append(i)
        vid.append(order.setdefault(v, len(order)))
    if not paths:
        raise InputError(f"{task.name}: none of the {len(labels)} labelled {split} frames has a crop under the "
                         f"data folder", data)
    return Frames(paths, y_all[keep], np.asarray(vid, np.int64), list(order), len(labels),
                  len(labels) - len(paths), labels.attrs.get("source", ""))


def epoch_sample(frames: Frames, per_video: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s training frames: up to `per_video` of each video drawn without replacement, shuffled;
    the same for the same (seed, epoch), so a resumed run draws what an uninterrupted one would."""
    rng = np.random.default_rng([seed, epoch])
    picks = []
    for v in range(len(frames.videos)):
        rows = np.flatnonzero(frames.video == v)
        picks.append(rows if len(rows) <= per_video else rng.choice(rows, per_video, replace=False))
    out = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    return out[rng.permutation(len(out))]


def epoch_size(frames: Frames, per_video: int) -> int:
    return int(sum(min(int((frames.video == v).sum()), per_video) for v in range(len(frames.videos))))


def even_sample(frames: Frames, per_video: int | None) -> np.ndarray:
    """Validation frames: all, or `per_video` evenly spaced frames of each video (the same every epoch)."""
    if per_video is None:
        return np.arange(len(frames))
    picks = []
    for v in range(len(frames.videos)):
        rows = np.flatnonzero(frames.video == v)
        if len(rows) > per_video:
            rows = rows[np.linspace(0, len(rows) - 1, per_video).round().astype(np.int64)]
        picks.append(rows)
    return np.concatenate(picks)


class FrameSet(_Dataset):
    """A split's frames, decoded and resized like extraction; when `train`, also flipped and cropped, each
    frame by its own draw. Keys: a row (validation) or (row, epoch, position) from :class:`EpochOrder`
    (training: epoch and position fix the draw). Item: (uint8 (3, size, size) tensor, label, decoded ok)."""

    def __init__(self, frames: Frames, size: int, task: Task, train: bool, seed: int = 0):
        self.paths, self.y = frames.paths, frames.y
        self.size, self.train, self.seed = int(size), bool(train), int(seed)
        self.float_labels = task.kind != "multiclass"      # VA values, AU 0/1 targets of the BCE

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        import torch
        row, epoch, position = key if self.train else (key, 0, 0)
        img, _ = load_image(self.paths[row])
        ok = img is not None
        if ok:
            x = torch.from_numpy(np.array(resize_square(img, self.size))).permute(2, 0, 1)   # a writable copy
            if self.train:
                x = geometric(x, np.random.default_rng(seed_of(self.seed, epoch, position)))
            x = x.contiguous()
        else:
            x = torch.zeros((3, self.size, self.size), dtype=torch.uint8)
        y = torch.as_tensor(self.y[row], dtype=torch.float32 if self.float_labels else torch.int64)
        return x, y, ok


class EpochOrder:
    """The sampler of training keys: epoch `epoch`'s sample (:func:`epoch_sample`) as (row, epoch, position).
    Set `epoch` before iterating; it lives in the main process, so persistent decode workers serve every epoch."""

    def __init__(self, frames: Frames, per_video: int, seed: int):
        self.frames, self.per_video, self.seed, self.epoch = frames, int(per_video), int(seed), 1
        self.n = epoch_size(frames, per_video)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rows = epoch_sample(self.frames, self.per_video, self.seed, self.epoch)
        return iter([(int(r), self.epoch, i) for i, r in enumerate(rows)])
