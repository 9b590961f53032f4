"""Models the user exported themselves (e.g. POSTER++): `torch.export` ``.pt2`` or TorchScript ``.pt``.

Spec: ``exported:<file>:size=224[:mean=...:std=...][:classes=a,b,...][:name=...][:allow_pickle=1]``. The
module takes a normalised float NCHW batch and returns the embedding tensor, a tuple/list ``(embedding,
logits[, va])`` or a dict with those keys. Output sizes are found by one probe call at load time. A ``.pt2``
exported with a static batch size is fed in chunks of exactly that size (the last one padded).

Loading runs no code from the file unless ``allow_pickle`` is given: a ``.pt2`` is checked member by member
first (extract.program_check), and a TorchScript archive, which torch compiles and partly runs while loading
it, is refused.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch

from features.errors import InputError

from ..base import IMAGENET_MEAN, IMAGENET_STD, TorchExtractor
from ..checkpoints import require_file, sha256_file
from ..program_check import check_pt2, torchscript_refusal
from ..registry import register

_KEYS = ("embedding", "logits", "va")


def _as_dict(y, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return {"embedding": y}
    if isinstance(y, (tuple, list)) and 1 <= len(y) <= 3 and all(isinstance(t, torch.Tensor) for t in y):
        return dict(zip(_KEYS, y))
    if isinstance(y, dict) and "embedding" in y:
        return {k: y[k] for k in _KEYS if k in y}
    raise InputError("exported module must return a tensor, a tuple (embedding, logits[, va]) or a dict with "
                     f"'embedding'; it returned {type(y).__name__}", path)


class ExportedNet(torch.nn.Module):
    """Calls the loaded program, flattening its outputs to 2-D float tensors; pads to a static batch size."""

    def __init__(self, fn, path: Path, static_batch: int | None):
        super().__init__()
        self.fn, self.path, self.static_batch = fn, path, static_batch

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.reshape(len(v), -1) for k, v in _as_dict(self.fn(x), self.path).items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.static_batch
        if not b or len(x) == b:
            return self._run(x)
        parts = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, *chunk.shape[1:])])
            parts.append({k: v[:n] for k, v in self._run(chunk).items()})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def train(self, mode: bool = True):
        # an exported program is traced in eval mode already; some torch versions refuse .eval() on it
        self.training = mode
        try:
            self.fn.train(mode)
        except (NotImplementedError, RuntimeError, AttributeError):
            pass
        return self


def _static_batch(program) -> int | None:
    """First input's batch dimension of a torch.export program, if it was exported as a fixed number."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            val = node.meta.get("val")
            d0 = getattr(val, "shape", [None])[0] if val is not None else None
            return d0 if isinstance(d0, int) else None
    return None


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """torch.export.load logs its own tracebacks (one with a broken format string): failures become one line."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_program(path: Path, allow_pickle: bool = False):
    """(callable, static batch size or None, format). Without `allow_pickle`, only a .pt2 that check_pt2
    finds to be plain tensors and tensor operators is loaded."""
    if path.suffix == ".pt2":
        if not allow_pickle:
            check_pt2(path)
        try:
            with _quiet_loggers("torch.export", "torch._export.serde.serialize"):
                program = torch.export.load(str(path))
            # check_guards=False: the guards are Python source from the file, compiled into the module otherwise
            module = program.module(check_guards=False)
        except Exception as e:
            raise InputError(f"cannot load torch.export program: {type(e).__name__}: {e}", path) from None
        return module, _static_batch(program), "torch.export"
    if not allow_pickle:
        raise torchscript_refusal(path)
    warnings.warn("TorchScript is deprecated in current torch; prefer torch.export (.pt2)", DeprecationWarning,
                  stacklevel=3)
    try:
        fn = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise InputError(f"cannot load TorchScript module (expected .pt2 torch.export or TorchScript .pt): "
                         f"{type(e).__name__}: {e}", path) from None
    fn.eval()
    return fn, None, "torchscript"


def _triple(v) -> tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else (float(v),) * 3


@register("exported")
def make(path: str, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
         classes: str | None = None, *, allow_pickle: bool = False):
    """exported:<file.pt2|file.pt>:size=N:mean=a,b,c:std=a,b,c:classes=...[:allow_pickle=1]"""
    p = require_file(path, "exported model")
    mean, std = _triple(mean), _triple(std)
    if len(mean) != 3 or len(std) != 3:
        raise InputError(f"exported: mean and std need 3 values, got {mean} / {std}", p)
    fn, static_batch, fmt = load_program(p, allow_pickle)
    net = ExportedNet(fn, p, static_batch)
    probe = torch.zeros(static_batch or 2, 3, int(size), int(size))
    try:
        with torch.inference_mode():
            out = net(probe)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"exported model fails on a ({len(probe)}, 3, {size}, {size}) input: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", p) from None
    dims = {k: int(v.shape[1]) for k, v in out.items()}
    names = tuple(c.strip() for c in classes.split(",")) if classes else ()
    if names and len(names) != dims.get("logits", 0):
        raise InputError(f"exported: {len(names)} class names but the model gives {dims.get('logits', 0)} logits", p)
    return TorchExtractor(p.stem, net, int(size), dims, sha256_file(p), mean, std, names,
                          extra={"family": "exported", "format": fmt, "checkpoint": str(p),
                                 "static_batch": static_batch})
