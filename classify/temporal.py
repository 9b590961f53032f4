"""Temporal head: a small Transformer encoder (or a bidirectional GRU) over windows of per-frame features of one
video, as in the ABAW systems that beat frozen features + box filter.

Rows -> per video a time line from its first to its last frame (frames without a row, e.g. no face, are holes);
windows of `window` positions, never across videos (the last one aligned with the video's end; a video shorter
than a window is one padded window). Training windows do not overlap (`train_stride`, default `window`) and start
at a new random offset every epoch, so each frame is seen once per epoch, in new contexts; prediction windows
overlap (`stride`, default window/2) and their scores are averaged per frame. Network: standardise -> affine
fusion (one linear map per extractor to `width`, classify.fusion) -> sinusoidal positional encoding -> encoder
(holes and padding masked in attention) -> per-position output layer. The loss (classify.losses, by name) runs
over the positions that hold a row. Frames without a row get no score here (the run fills them afterwards, as
for every head).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from features.errors import InputError

from .base import fit_context, integers
from .fusion import TORCH_CONSTRAINTS, affine_fusion, float_block, folded_fusion, set_moments, standardize
from .losses import check_loss, make_loss
from .registry import register_head
from .torchnet import TorchHead, check_blocks, labels_tensor, output_activation, torch_threads, train

ARCHS = ("transformer", "gru")


def make_windows(groups, frames, window: int, stride: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """(n_windows, window) row indices (-1: no row at that position) and the longest video's time line. Windows
    start at 0, then at offset, offset + stride, ...; the last one ends with the video."""
    groups = np.asarray(groups)
    frames = np.asarray(frames, np.int64)
    if len(groups) != len(frames):
        raise InputError(f"temporal head: {len(groups)} video ids but {len(frames)} frame numbers")
    codes, _ = pd.factorize(groups, sort=False)
    order = np.lexsort((frames, codes))
    c, f = codes[order], frames[order]
    dup = (c[1:] == c[:-1]) & (f[1:] == f[:-1])
    if dup.any():
        i = order[1:][dup][0]
        raise InputError(f"temporal head: frame {frames[i]} of video {str(groups[i])!r} appears twice")
    cuts = np.flatnonzero(np.diff(c)) + 1
    out, longest = [], 0
    for rows, fr in zip(np.split(order, cuts), np.split(f, cuts)):
        pos = fr - fr[0]
        length = int(pos[-1]) + 1
        longest = max(longest, length)
        line = np.full(max(length, window), -1, np.int64)
        line[pos] = rows
        last = max(length - window, 0)
        starts = sorted({0, *range(min(offset, last), last + 1, stride), last})
        w = np.lib.stride_tricks.sliding_window_view(line, window)[starts]
        out.append(w[(w >= 0).any(1)])            # a window inside a long hole has nothing to learn or predict
    return (np.concatenate(out) if out else np.empty((0, window), np.int64)), longest


def longest_span(groups, frames) -> int:
    """Frames from the first to the last row of the longest video."""
    f = pd.Series(np.asarray(frames, np.int64))
    g = f.groupby(pd.factorize(np.asarray(groups))[0])
    return int((g.max() - g.min()).max()) + 1 if len(f) else 0


def check_window(window: int, longest: int) -> None:
    if longest < window:
        raise InputError(f"temporal head: --window {window} is longer than every training video (the longest "
                         f"spans {longest} frames); choose --window <= {longest}")


def _net(n_in: int, blocks: list[int], n_out: int, regression: bool, window: int, width: int, layers: int,
         heads_n: int, arch: str, dropout: float):
    import torch
    from torch import nn

    class TemporalNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.std = standardize(n_in)
            self.fusion = affine_fusion(blocks, width)
            self.mix = nn.Linear(self.fusion.out_features, width) if len(blocks) > 1 else nn.Identity()
            pos = torch.arange(window, dtype=torch.float32)[:, None]
            div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
            pe = torch.zeros(window, width)
            pe[:, 0::2] = torch.sin(pos * div)
            pe[:, 1::2] = torch.cos(pos * div)[:, :width // 2]
            self.register_buffer("pe", pe)
            self.drop = nn.Dropout(dropout)
            if arch == "transformer":
                layer = nn.TransformerEncoderLayer(width, heads_n, 2 * width, dropout, batch_first=True,
                                                   norm_first=True)
                self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            else:
                self.enc = nn.GRU(width, width // 2, layers, batch_first=True, bidirectional=True,
                                  dropout=dropout if layers > 1 else 0.0)
            self.out = nn.Linear(width if arch == "transformer" else 2 * (width // 2), n_out)

        def embed(self, x):
            """The per-frame part (standardise, fuse): computed once per row when predicting."""
            return self.mix(self.fusion(self.std(x)))

        def forward(self, x, mask):
            return self.encode(self.embed(x), mask)

        def encode(self, h, mask):
            h = h * mask[..., None]                       # holes carry nothing (the GRU has no attention mask)
            h = self.drop(h + self.pe[:h.shape[1]])
            if arch == "transformer":
                h = self.enc(h, src_key_padding_mask=~mask)
            else:
                h = self.enc(h)[0]
            z = self.out(h)
            return torch.tanh(z) if regression else z

    return TemporalNet()


@register_head("temporal", title="temporal head")
class TemporalHead(TorchHead):
    """Per-frame scores from windows of a video's frames (needs `groups` = video ids and `frames` = frame
    numbers of the rows in fit and predict)."""
    _parameter_constraints = {**TORCH_CONSTRAINTS, "window": [integers(2, 65_536)],
                              "stride": [integers(1, 65_536), None], "train_stride": [integers(1, 65_536), None],
                              "layers": [integers(1, 64)], "heads_n": [integers(1, 64)], "arch": [str]}

    def __init__(self, task, window: int = 64, stride: int | None = None, train_stride: int | None = None,
                 layers: int = 2, width: int = 64,
                 heads_n: int = 4, arch: str = "transformer", dropout: float = 0.1, blocks: Sequence[int] | None = None,
                 loss: str | None = None, epochs: int = 10, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                 threads: int | None = None, verbose: int = 0, feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.window = window
        self.stride = stride          # None: window // 2
        self.train_stride = train_stride    # None: window
        self.layers = layers
        self.width = width
        self.heads_n = heads_n
        self.arch = arch
        self.dropout = dropout
        self.blocks = blocks
        self.loss = loss
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.seed = seed
        self.threads = threads
        self.verbose = verbose

    # -- parameters -------------------------------------------------------------------------------------------
    def _stride(self) -> int:
        return int(self.stride or max(1, self.window // 2))

    def _check_params(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(f"unknown temporal architecture {self.arch!r}; choose from {', '.join(ARCHS)}")
        if int(self.window) < 2 or not 1 <= self._stride() <= int(self.window):
            raise InputError(f"temporal head: --window must be >= 2 and --stride in 1..window (got window "
                             f"{self.window}, stride {self._stride()})")
        if self.arch == "transformer" and self.width % self.heads_n:
            raise InputError(f"temporal head: --width {self.width} must be a multiple of --heads-n {self.heads_n}")
        if self.width % 2:
            raise InputError(f"temporal head: --width must be even (got {self.width})")
        if not 1 <= int(self.train_stride or self.window) <= int(self.window):
            raise InputError(f"temporal head: train_stride must be in 1..window (got {self.train_stride})")
        check_loss(self.loss, self.task)

    def _make_net(self):
        return _net(self.n_features_in_, self.blocks_, self.task.n_outputs, self.task.kind == "regression",
                    int(self.window), self.width, self.layers, self.heads_n, self.arch, self.dropout)

    @staticmethod
    def _rows(groups, frames, n: int, what: str):
        if groups is None or frames is None:
            raise InputError(f"temporal head: the {what} rows need their video ids and frame numbers "
                             f"(groups=..., frames=...)")
        if len(groups) != n or len(frames) != n:
            raise InputError(f"temporal head: {n} {what} rows but {len(groups)} video ids / {len(frames)} frames")

    # -- batches ----------------------------------------------------------------------------------------------
    def _gather(self, X, idx):
        import torch
        mask = idx >= 0
        safe = np.where(mask, idx, 0)
        flat = safe.ravel()
        srt = np.argsort(flat, kind="stable")             # gather in row order (cache-friendly, h5py-safe)
        xb = np.empty((flat.size, X.shape[1]), np.float32)
        xb[srt] = X[flat[srt]]
        xb = xb.reshape(*idx.shape, X.shape[1])
        return torch.from_numpy(xb), torch.from_numpy(mask), safe

    def _scores(self, X, windows: np.ndarray, n: int) -> np.ndarray:
        """Per-row scores averaged over the windows that cover the row."""
        import torch
        sums = torch.zeros((n, self.task.n_outputs), dtype=torch.float32)
        cnt = torch.zeros(n, dtype=torch.float32)
        step = max(1, 8192 // int(self.window))        # ~8k positions per encoder call: the fastest measured
        # the encoder's "fast path" turns padded windows into nested tensors: slower here (6.5 vs 5.4 us per
        # position, measured on 2 cores), so the plain path is used while predicting
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.inference_mode():
                # each row's embedding once (overlapping windows would repeat it), then windows of embeddings
                fused = folded_fusion(self.net_.std, self.net_.fusion)
                H = torch.cat([self.net_.mix(fused(float_block(X, a, a + 16384))) for a in range(0, n, 16384)])
                for a in range(0, len(windows), step):
                    idx = windows[a:a + step]
                    mask = torch.from_numpy(idx >= 0)
                    hb = H[torch.from_numpy(np.where(idx >= 0, idx, 0))]
                    s = output_activation(self.task.kind, self.net_.encode(hb, mask))
                    rows = torch.from_numpy(idx[idx >= 0])
                    sums.index_add_(0, rows, s[mask])
                    cnt.index_add_(0, rows, torch.ones(len(rows)))
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        return (sums / cnt.clamp(min=1)[:, None]).numpy()

    # -- interface --------------------------------------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, groups=None, frames=None, groups_val=None, frames_val=None,
            **rows):
        import torch
        self._check_fit(X, y, X_val, y_val)
        loss_name = check_loss(self.loss, self.task)
        self._rows(groups, frames, len(X), "training")
        self.blocks_ = check_blocks(self.blocks, X.shape[1], "temporal head")
        T, stride = int(self.window), self._stride()
        t_stride = int(self.train_stride or T)
        windows, longest = make_windows(groups, frames, T, t_stride)
        check_window(T, longest)
        val_windows = None
        if X_val is not None and len(X_val):
            self._rows(groups_val, frames_val, len(X_val), "validation")
            val_windows = make_windows(groups_val, frames_val, T, stride)[0]
        torch_threads(self.threads)
        torch.manual_seed(self.seed)
        self.net_ = self._make_net()
        set_moments(self.net_.std, X)
        y = np.asarray(y)
        loss_fn = make_loss(loss_name, self.task, y)

        def batches(epoch):
            rng = np.random.default_rng([self.seed, epoch])
            ws = windows if epoch == 0 else make_windows(groups, frames, T, t_stride, int(rng.integers(t_stride)))[0]
            order = rng.permutation(len(ws))
            for i in range(math.ceil(len(order) / self.batch)):
                idx = ws[order[i * self.batch:(i + 1) * self.batch]]
                xb, mask, safe = self._gather(X, idx)
                yield xb, labels_tensor(self.task.kind, y[safe]), mask

        val = None
        if val_windows is not None:
            val = lambda: self.task.score(y_val, self._scores(X_val, val_windows, len(X_val)))
        self.history_, self.best_epoch_ = train(self.net_, loss_fn, batches, self.epochs, self.lr, self.seed,
                                                val, verbose=self.verbose, desc=f"{self.task.name} temporal")
        self.n_windows_ = int(len(windows))
        return self

    history = property(lambda self: getattr(self, "history_", []))
    best_epoch = property(lambda self: getattr(self, "best_epoch_", None))

    def predict_proba(self, X, groups=None, frames=None, **rows):
        self._check_predict(X)
        self._rows(groups, frames, len(X), "prediction")
        torch_threads(self.threads)
        windows, _ = make_windows(groups, frames, int(self.window), self._stride())
        return self._scores(X, windows, len(X))
