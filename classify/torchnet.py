"""What the torch heads (fusion MLP, temporal) share: the training loop with best-epoch selection, thread
settings, and saving a network as plain arrays (`net.npz`, no pickle) next to head.json.

Why torch and not Keras (the reference MLP's library) for these heads: they need attention masks over padded
windows, per-extractor linear maps and losses over masked positions, which are a few lines each in torch; torch
is already installed (LightAutoML depends on it) and runs well on CPU with 2 threads. TensorFlow must then be
imported after torch in one process (`classify.mlp._keras` takes care of it): the other order segfaults.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from features.errors import InputError
from features.outputs import write_output

from .base import Head


def torch_threads(n: int | None) -> None:
    """Intra-op threads for torch (None: one per core, at most 2 by default, the budget these heads target)."""
    import torch
    torch.set_num_threads(max(1, n or min(2, os.cpu_count() or 1)))


def train(net, loss_fn: Callable, batches: Callable[[int], Iterable], epochs: int, lr: float, seed: int,
          val_score: Callable[[], float] | None = None, weight_decay: float = 1e-4, verbose: int = 0,
          desc: str = "") -> tuple[list[float], int | None]:
    """Adam over `batches(epoch)` -> (inputs, labels[, mask]) for `epochs`; with `val_score`, the weights of the
    best epoch are kept. Returns (validation score per epoch, best epoch)."""
    import torch
    from tqdm.auto import tqdm
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    history, best, best_state, best_epoch = [], -np.inf, None, None
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=not verbose):
        net.train()
        for xb, yb, *rest in batches(epoch):
            out = net(xb, *rest)
            if rest:                      # a mask of the positions that carry a label
                out, yb = out[rest[0]], yb[rest[0]]
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val_score is None:
            continue
        net.eval()
        s = float(val_score())
        history.append(s)
        if s > best:
            best, best_epoch = s, epoch + 1
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history, best_epoch


def save_net(net, path: Path) -> None:
    write_output(path / "net.npz", lambda f: np.savez(f, **{k: v.detach().cpu().numpy()
                                                            for k, v in net.state_dict().items()}))


def load_net(net, path: Path):
    import torch
    with np.load(path / "net.npz", allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    net.eval()
    return net


def check_net(make: Callable, path: Path) -> None:
    """The network that the saved parameters describe, built without memory (torch's meta device), has the
    shapes of the saved arrays: parameters that do not fit the weights (or ask for a huge network) are refused
    before anything is allocated."""
    import torch
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in make().state_dict().items()}
    with np.load(path / "net.npz", allow_pickle=False) as z:
        have = {k: tuple(z[k].shape) for k in z.files}
    if want != have:
        diff = next((k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)))
        raise InputError(f"the saved weights do not fit the head's parameters (array {diff!r}: "
                         f"{have.get(diff, 'absent')} saved, {want.get(diff, 'absent')} expected)", path / "net.npz")


def output_activation(task_kind: str, z):
    """Scores from raw outputs: softmax (EXPR), sigmoid (AU); VA nets end in tanh already."""
    import torch
    if task_kind == "multiclass":
        return torch.softmax(z, -1)
    if task_kind == "multilabel":
        return torch.sigmoid(z)
    return z


def labels_tensor(task_kind: str, y: np.ndarray):
    import torch
    return torch.as_tensor(np.asarray(y), dtype=torch.long if task_kind == "multiclass" else torch.float32)


class TorchHead(Head):
    """Saving/loading for heads whose fitted state is one torch network (`net_`) rebuilt by `_make_net()` from
    the parameters and the plain fitted attributes."""
    files = ("net.npz", "fitted.json")

    def _make_net(self):
        raise NotImplementedError

    def _save(self, path: Path):
        save_net(self.net_, path)
        self._save_fitted(path)

    def _load(self, path: Path):
        self._load_fitted(path)
        check_net(self._make_net, path)
        self.net_ = load_net(self._make_net(), path)


def check_blocks(blocks, n_features: int, what: str) -> list[int]:
    """Per-extractor column counts: None -> one block of all columns; else they must add up to the width."""
    if blocks is None:
        return [n_features]
    b = [int(x) for x in blocks]
    if sum(b) != n_features or min(b) < 1:
        raise InputError(f"{what}: extractor blocks {b} do not add up to the {n_features} feature columns")
    return b
