"""Reading weight files safely: sha256, safetensors, plain state_dicts, and (opt-in only) pickled modules.

A `.pt` file that holds a whole pickled module (the published HSEmotion checkpoints) can run arbitrary code
when it is unpickled, so it is only loaded with ``allow_pickle=True``; everything else goes through
``torch.load(weights_only=True)`` or safetensors, which cannot execute code.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from features.errors import InputError
from features.serialized_code import file_globals, refusal

CACHE_ENV = "AFFECT_FEATURES_HOME"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


def cache_dir() -> Path:
    """Where checkpoints are looked up when a spec names none: $AFFECT_FEATURES_HOME or ~/.cache/affect-features."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "affect-features")


def require_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} not found", p)
    if p.stat().st_size == 0:
        raise InputError(f"{what} is an empty file (0 bytes): an interrupted download or copy?", p)
    return p


def find_checkpoint(name: str, path: str | None) -> Path:
    """The given path, else `<name>.safetensors|.pt|.pth|.onnx` in the checkpoint cache directory."""
    if path:
        return Path(path).expanduser()
    d = cache_dir()
    for ext in (".safetensors", ".pt", ".pth", ".onnx"):
        if (d / (name + ext)).is_file():
            return d / (name + ext)
    raise InputError(f"no checkpoint for {name}: give one in the spec ({name}:path/to/weights) or put "
                     f"{name}.safetensors (or .pt / .pth / .onnx) in {d}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Weights:
    """A state_dict with where it came from."""
    state_dict: dict
    path: Path
    sha256: str
    format: str                       # "safetensors" | "state_dict" | "pickled-module"
    metadata: dict = field(default_factory=dict)   # safetensors metadata, or cfg of a pickled module

    @property
    def provenance_sha256(self) -> str:
        """sha256 of the original checkpoint: a file from `extract.convert` holds the same tensors as its
        source, so features from either file share one store group."""
        return self.metadata.get("source_sha256") or self.sha256


def strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    """Drop a DataParallel-style prefix when every key carries it."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _unwrap(obj, path: Path) -> dict:
    """The tensor dict inside a checkpoint: plain, or under 'state_dict' / 'model' / ... (DAN, POSTER style)."""
    import torch
    for _ in range(3):
        if isinstance(obj, torch.nn.Module):
            return obj.state_dict()
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
        if inner is None:
            break
        obj = inner
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise InputError(f"no state_dict found in checkpoint (top level: {keys})", path)


def _module_cfg(module) -> dict:
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    out = {"module_class": f"{type(module).__module__}.{type(module).__name__}"}
    for k in ("architecture", "url", "hf_hub_id", "tag", "num_classes"):
        if cfg.get(k) is not None:
            out[k] = str(cfg[k])
    return out


def pickled_globals(path: Path) -> list[str]:
    """The globals (``module.name``) a checkpoint's pickles would import, found WITHOUT unpickling (every
    ``*.pkl`` of a zip checkpoint, the pickles of a legacy or plain file). Code-running ones first."""
    return file_globals(path)


def torch_safe_globals() -> set[str]:
    """The globals torch's ``weights_only`` unpickler accepts (its allowlist and any the user added): a pickle
    naming only these rebuilds tensors and containers and nothing else."""
    from torch import _weights_only_unpickler as wou
    return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())


def load_weights(path: str | os.PathLike, allow_pickle: bool = False) -> Weights:
    """Load a checkpoint as tensors. Safetensors and plain state_dicts load safely; a whole pickled module
    needs ``allow_pickle=True`` (and only its state_dict is kept: the module itself is never called)."""
    import torch
    p = require_file(path)
    digest = sha256_file(p)
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = dict(f.metadata() or {})
            sd = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise InputError(f"not a readable safetensors file ({e})", p) from None
        return Weights(sd, p, digest, "safetensors", meta)
    from .program_check import is_torchscript
    if is_torchscript(p):           # torch.load would hand it to torch.jit.load, which runs its code
        raise InputError("a TorchScript program, not a checkpoint: give it as exported:<file> (it needs "
                         "--allow-pickle), or save the model's state_dict instead", p)
    try:
        with warnings.catch_warnings():     # torch's note on newer pickle protocols: the refusal below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's safe loader refused the file (its wording changes between versions, so look at the file, not
        # the message): it names globals to import -> it holds Python objects; none -> not a torch checkpoint
        names = pickled_globals(p)
        if not names:
            raise InputError("cannot read checkpoint (corrupt, or not a torch file)", p) from None
        if not allow_pickle:
            raise refusal(p, names, "pass --allow-pickle (spec option allow_pickle=1), or convert it once: "
                          f"python -m extract.convert {p} {p.with_suffix('.safetensors')} --allow-pickle") from None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise InputError(f"cannot unpickle checkpoint: {type(e2).__name__}: {e2}", p) from None
        if isinstance(obj, torch.nn.Module):
            return Weights(obj.state_dict(), p, digest, "pickled-module", _module_cfg(obj))
        return Weights(strip_prefix(_unwrap(obj, p)), p, digest, "pickled")
    except EOFError:
        raise InputError("checkpoint ends too early (truncated: an interrupted download or copy?)", p) from None
    except Exception as e:
        with open(p, "rb") as f:
            head = f.read(2)
        what = ("a damaged torch zip checkpoint (truncated or corrupted)" if head == b"PK" else
                "a damaged pickle (truncated or corrupted)" if head[:1] == b"\x80" else
                "not a torch checkpoint (neither a zip archive nor a pickle; safetensors files must end in "
                ".safetensors, ONNX files in .onnx)")
        msg = (str(e).splitlines() or [""])[0].strip()
        raise InputError(f"cannot read checkpoint: {what}" + (f" ({type(e).__name__}: {msg[:120]})" if msg else ""),
                         p) from None
    return Weights(strip_prefix(_unwrap(obj, p)), p, digest, "state_dict")


def load_strict(model, sd: dict, path: Path, arch: str) -> None:
    """load_state_dict(strict=True) with a one-line error naming what is missing / unexpected / mis-shaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", shapes)):
            if items:
                parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}")
        raise InputError(f"weights do not fit {arch}: " + "; ".join(parts), path)
    model.load_state_dict(sd, strict=True)
