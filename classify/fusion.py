"""Multi-extractor fusion: one affine map per extractor to a common width, then concatenation (the fusion
module of the stronger ABAW systems), and a per-frame MLP head built on it (`fusion_mlp`).

A feature set such as `enet/embedding+poster/embedding+openface/au` arrives as one matrix; `blocks_for` gives
its column count per extractor (outputs of one extractor, e.g. `enet/logits+va`, form one block), which the
heads take as their `blocks` parameter.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from features.errors import InputError
from features.store import FeatureStore

from . import featuresets
from .base import BATCH, EPOCHS, HIDDEN, SEED, Head, fit_context, integers
from .registry import register_head
from .losses import check_loss, make_loss
from .mlp import column_moments
from .sampling import SAMPLINGS, check_sampling
from .torchnet import (TorchHead, check_blocks, labels_tensor, output_activation, torch_threads, train)


def blocks_for(store: FeatureStore, feature_set: str) -> list[int]:
    """Column count per extractor of a feature set, in column order."""
    out: list[tuple[str, int]] = []
    for key in featuresets.resolve(store, feature_set):
        e, o = key.split("/")
        n = int(store.info(e).outputs[o])
        if out and out[-1][0] == e:
            out[-1] = (e, out[-1][1] + n)
        else:
            out.append((e, n))
    return [n for _, n in out]


def check_same_frames(store: FeatureStore, feature_set: str) -> None:
    """The extractors of a fused feature set must hold the same frames of every video: the store would keep
    only the common frames, silently cutting holes into the time line a temporal head sees."""
    exts = list(dict.fromkeys(k.split("/")[0] for k in featuresets.resolve(store, feature_set)))
    if len(exts) < 2:
        return
    vids = [set(store.videos(e)) for e in exts]
    for e, v in zip(exts[1:], vids[1:]):
        if v != vids[0]:
            only = sorted(vids[0] ^ v)
            raise InputError(f"feature set {feature_set!r}: extractors {exts[0]!r} and {e!r} cached different "
                             f"videos (e.g. {only[0]!r}); extract every extractor on the same videos",
                             store.paths[0])
    for vid in sorted(vids[0]):
        ref = store.read([vid], exts[0], outputs=[]).index["frame"].to_numpy()
        for e in exts[1:]:
            fr = store.read([vid], e, outputs=[]).index["frame"].to_numpy()
            if not np.array_equal(fr, ref):
                raise InputError(f"feature set {feature_set!r}: extractors {exts[0]!r} and {e!r} hold different "
                                 f"frames of video {vid!r} ({len(ref)} vs {len(fr)} frames); extract them on the "
                                 f"same frames before fusing", store.paths[0])


def _modules():
    import torch
    from torch import nn

    class Standardize(nn.Module):
        """Training-set column moments, part of the network so prediction cannot forget them."""

        def __init__(self, n: int):
            super().__init__()
            self.register_buffer("mean", torch.zeros(n))
            self.register_buffer("inv_std", torch.ones(n))

        def forward(self, x):
            return (x - self.mean) * self.inv_std

    class AffineFusion(nn.Module):
        """x (…, Σ blocks) -> concat_i(W_i x_i + b_i), each extractor's block mapped to `width` columns."""

        def __init__(self, blocks: list[int], width: int):
            super().__init__()
            self.blocks = list(blocks)
            self.maps = nn.ModuleList(nn.Linear(b, width) for b in blocks)
            self.out_features = width * len(blocks)

        def forward(self, x):
            parts = torch.split(x, self.blocks, dim=-1)
            return torch.cat([m(p) for m, p in zip(self.maps, parts)], dim=-1)

    return Standardize, AffineFusion


def standardize(n: int):
    return _modules()[0](n)


def affine_fusion(blocks: list[int], width: int):
    """The fusion module (a torch `nn.Module`)."""
    return _modules()[1](blocks, width)


def set_moments(std_module, X) -> None:
    import torch
    mean, var = column_moments(X, step=8192)    # float64 blocks of 8192 rows: ~85 MB at 1290 columns
    std_module.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    std_module.inv_std.copy_(torch.as_tensor(1 / np.sqrt(var), dtype=torch.float32))


def float_block(X, a: int, b: int):
    """Rows a:b of X as a float32 torch tensor. torch casts float16 (the cache's embedding type) ~6x faster
    than numpy, whose half-to-float conversion is a scalar loop (measured: 1.0 vs 0.17 s for 60 k x 1290)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(X[a:b])).to(torch.float32)


def folded_fusion(std_module, fusion_module):
    """x -> fusion(std(x)) with the standardisation folded into each extractor's linear map
    (W_i ((x_i - m_i) * s_i) + b_i = (W_i * s_i) x_i + (b_i - (W_i * s_i) m_i)), for prediction: it saves two
    passes over the (rows x features) input, which cost more than the maps themselves at 1,290 features."""
    import torch
    from torch.nn.functional import linear
    with torch.no_grad():
        mean, inv = std_module.mean, std_module.inv_std
        folded, o = [], 0
        for n, m in zip(fusion_module.blocks, fusion_module.maps):
            w = m.weight * inv[o:o + n]
            folded.append((w, m.bias - w @ mean[o:o + n]))
            o += n
    blocks = fusion_module.blocks

    def embed(x):
        parts = torch.split(x, blocks, dim=-1) if len(blocks) > 1 else (x,)
        return torch.cat([linear(p, w, b) for p, (w, b) in zip(parts, folded)], dim=-1)
    return embed


def predict_rows(net, X, task_kind: str, step: int = 16384) -> np.ndarray:
    """Scores of a per-frame network over X, a block at a time (float16 input cast per block)."""
    import torch
    outs = []
    with torch.inference_mode():
        for a in range(0, len(X), step):
            outs.append(output_activation(task_kind, net(float_block(X, a, a + step))).numpy())
    return np.concatenate(outs).astype(np.float32, copy=False) if outs else np.empty((0, 0), np.float32)


# the parameters the torch heads (fusion MLP, temporal) share
TORCH_CONSTRAINTS = {**Head._parameter_constraints, "blocks": ["array-like", None],
                     "width": [integers(1, 4096)],
                     "dropout": [Interval(Real, 0, 1, closed="left")],
                     "loss": [str, None], "epochs": [EPOCHS], "batch": [BATCH],
                     "lr": [Interval(Real, 0, None, closed="neither")],
                     "seed": [SEED], "threads": [integers(1), None], "verbose": ["verbose"]}


@register_head("fusion_mlp", title="fusion MLP")
class FusionMLPHead(TorchHead):
    """Per-frame MLP on fused extractors: standardise -> affine fusion (one map per extractor to `width`) ->
    ReLU -> Dense(hidden) -> ReLU -> output. Loss by name (classify.losses); for AU, ML-ROS oversampling or
    balanced batches (`sampling`). Best validation epoch kept."""
    _parameter_constraints = {**TORCH_CONSTRAINTS, "hidden": [HIDDEN],
                              "sampling": [StrOptions(set(SAMPLINGS)), None]}

    def __init__(self, task, blocks: Sequence[int] | None = None, width: int = 64, hidden: int = 128,
                 dropout: float = 0.1, loss: str | None = None, sampling: str | None = None, epochs: int = 10,
                 batch: int = 256, lr: float = 1e-3, seed: int = 0, threads: int | None = None, verbose: int = 0,
                 feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.blocks = blocks
        self.width = width
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.sampling = sampling
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.seed = seed
        self.threads = threads
        self.verbose = verbose

    def _make_net(self):
        from torch import nn
        n_out = self.task.n_outputs
        fusion = affine_fusion(self.blocks_, self.width)
        layers = [standardize(self.n_features_in_), fusion, nn.ReLU(), nn.Dropout(self.dropout)]
        if self.hidden:
            layers += [nn.Linear(fusion.out_features, self.hidden), nn.ReLU(), nn.Dropout(self.dropout)]
        layers.append(nn.Linear(self.hidden or fusion.out_features, n_out))
        if self.task.kind == "regression":
            layers.append(nn.Tanh())
        return nn.Sequential(*layers)

    def _check_params(self) -> None:
        check_loss(self.loss, self.task)
        check_sampling(self.sampling, self.task)

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        import torch
        from .sampling import epoch_rows
        self._check_fit(X, y, X_val, y_val)
        loss_name = check_loss(self.loss, self.task)
        self.blocks_ = check_blocks(self.blocks, X.shape[1], "fusion MLP")
        torch_threads(self.threads)
        torch.manual_seed(self.seed)
        self.net_ = self._make_net()
        set_moments(self.net_[0], X)
        y = np.asarray(y)
        loss_fn = make_loss(loss_name, self.task, y)
        order = epoch_rows(self.sampling, self.task, y, self.seed)

        def batches(epoch):
            idx = order(epoch)
            for i in range(math.ceil(len(idx) / self.batch)):
                b = np.sort(idx[i * self.batch:(i + 1) * self.batch])
                yield (torch.from_numpy(np.asarray(X[b], np.float32)), labels_tensor(self.task.kind, y[b]))

        val = None
        if X_val is not None and len(X_val):
            val = lambda: self.task.score(y_val, predict_rows(self.net_, X_val, self.task.kind))
        self.history_, self.best_epoch_ = train(self.net_, loss_fn, batches, self.epochs, self.lr, self.seed,
                                                val, verbose=self.verbose, desc=f"{self.task.name} fusion MLP")
        return self

    history = property(lambda self: getattr(self, "history_", []))
    best_epoch = property(lambda self: getattr(self, "best_epoch_", None))

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        torch_threads(self.threads)
        return predict_rows(self.net_, X, self.task.kind)
