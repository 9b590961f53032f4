"""Extractor factory: a one-line spec string picks the registered model, its weights and how it runs.

Spec syntax (one string per extractor, as given to ``python -m extract run --extractors``)::

    NAME[:ARG]...[:KEY=VALUE]...

Fields are separated by ``:``; a field with ``=`` is an option, any other field is a positional argument
(a checkpoint path, a timm model name). Option values are typed as bool (true/false/yes/no/on/off), int,
float, a comma list of numbers (``mean=0.5,0.5,0.5``), else text. Examples::

    fer                                              offline default (fer's mini-Xception)
    enet_b0_8_va_mtl:ckpt/enet_b0_8_va_mtl.safetensors
    enet_b0_8_best_vgaf:ckpt/enet_b0_8_best_vgaf.pt:allow_pickle=1   whole pickled module (explicit opt-in)
    resnet18_msceleb:ckpt/resnet18_msceleb.pth
    timm:convnext_tiny:weights.safetensors:size=224:name=convnext
    exported:poster.pt2:size=224:mean=0.485,0.456,0.406:std=0.229,0.224,0.225:name=posterpp

Options every extractor takes: ``name`` (the HDF5 group name; default the registry name), ``amp``
(bf16|fp16, torch models), ``channels_last`` (torch models), ``compile`` (torch.compile, torch models),
``runtime`` (auto | torch | onnxruntime: a torch model exported in memory and run by onnxruntime; auto picks
onnxruntime for float32 torch networks on a CPU when the onnx extra is installed, torch otherwise), ``device``.
When a checkpoint is left out, ``<name>.safetensors`` (then ``.pt``/``.pth``) is looked up in
$AFFECT_FEATURES_HOME or ~/.cache/affect-features/.

The runtime is applied here and only here (:func:`apply_runtime`), whether it comes from the spec or from
``python -m extract run --runtime auto|torch|onnxruntime`` (default auto; it sets the runtime of every spec that
does not name one): torch networks are exported and run by onnxruntime; extractors that are not torch networks
(fer's Keras model, the ONNX twins) run as they are. The runtime used is recorded in the cache (``extra["runtime"]``,
and ``extra["runtime_choice"]`` when auto chose it).

Layering (as timm's ``_registry`` / ``_factory`` / ``models``): extract.registry is a leaf (names -> factories);
each family in extract.models registers itself there; this module imports both.
"""
from __future__ import annotations

import inspect
import logging
import re
from typing import Any

from features.errors import InputError

from . import models  # noqa: F401  (importing registers every family)
from .base import Extractor
from .registry import _REGISTRY, entrypoint


log = logging.getLogger(__name__)
_COMMON = ("name", "amp", "channels_last", "compile", "runtime", "device")
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def list_extractors() -> list[str]:
    return sorted(_REGISTRY)


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _NUM.match(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    if "," in text and all(_NUM.match(p.strip()) for p in text.split(",")):
        return tuple(float(p) for p in text.split(","))
    return text


def parse_spec(spec: str, typed: bool = True) -> tuple[str, list[str], dict[str, Any]]:
    """'name:arg:key=value' -> (name, [arg], {key: value}); `typed=False` keeps every value as its text."""
    fields = spec.strip().split(":")
    # re-join Windows drive letters ("C:\\x" split into "C", "\\x")
    joined: list[str] = []
    for f in fields:
        if joined and len(joined[-1]) == 1 and joined[-1].isalpha() and f[:1] in ("\\", "/") and len(joined) > 1:
            joined[-1] += ":" + f
        else:
            joined.append(f)
    name, rest = joined[0], joined[1:]
    if not name:
        raise InputError(f"empty extractor name in spec {spec!r}")
    args, opts = [], {}
    for f in rest:
        if "=" in f and not f.startswith(("/", ".", "~")):
            k, v = f.split("=", 1)
            opts[k.strip()] = _value(v.strip()) if typed else v.strip()
        elif f:
            args.append(f)
    return name, args, opts


RUNTIMES = ("auto", "torch", "onnxruntime")


def create(spec: str, *, allow_pickle: bool = False, default_runtime: str = "torch", **kw: Any) -> Extractor:
    """Build an extractor from a spec string; keyword arguments (None: not given) override the spec's options.

    `allow_pickle=True` goes only to factories that take it (the spec option ``allow_pickle=1`` to any).
    `default_runtime`: the runtime when neither the spec nor `runtime=` names one (the CLI passes its
    ``--runtime``, default auto)."""
    name, args, opts = parse_spec(spec)
    factory = entrypoint(name, spec)
    if not getattr(factory, "tensorflow_only", False):
        from .base import torch_before_tensorflow
        torch_before_tensorflow(strict=True)    # torch models may load triton: never after TensorFlow
    # options the factory declares as text keep their text (classes=1,2,3 are names, not numbers)
    raw = parse_spec(spec, typed=False)[2]
    for k, p in inspect.signature(factory).parameters.items():
        if k in opts and str(p.annotation).replace(" ", "") in ("str", "str|None", "Optional[str]"):
            opts[k] = raw[k]
    opts.update({k: v for k, v in kw.items() if v is not None})
    common = {k: opts.pop(k) for k in _COMMON if k in opts}
    params = inspect.signature(factory).parameters
    if allow_pickle and "allow_pickle" in params:
        opts.setdefault("allow_pickle", True)
    takes_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    unknown = [k for k in opts if k not in named]
    if unknown and not takes_kw:
        raise InputError(f"extractor {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(list(named) + list(_COMMON))}")
    positional = [v for v in params.values() if v.kind in (v.POSITIONAL_ONLY, v.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(positional) and not any(v.kind is v.VAR_POSITIONAL for v in params.values()):
        raise InputError(f"extractor {name!r}: too many fields in spec {spec!r} "
                         f"(takes {', '.join(p.name for p in positional) or 'none'})")
    ext = factory(*args, **opts)
    if common.get("name"):
        ext.name = str(common["name"])
    if "/" in ext.name:
        raise InputError(f"extractor name {ext.name!r} must not contain '/'")
    if common.get("device"):
        ext.to(str(common["device"]))
    if common.get("amp") or common.get("channels_last") or common.get("compile"):
        ext.configure(amp=common.get("amp") or None, channels_last=bool(common.get("channels_last")),
                      compile=bool(common.get("compile")))
    return apply_runtime(ext, str(common.get("runtime") or default_runtime))


def auto_runtime(ext: Extractor) -> tuple[str, str]:
    """(runtime, why) that ``runtime=auto`` picks for `ext`: onnxruntime for a float32, uncompiled torch network
    on a CPU when the onnx extra is installed (EfficientNet-B0 on a 2-core CPU: 2.0-2.5x the per-image loop,
    outputs within ~1e-6 of torch's), torch otherwise (CUDA, amp, compile: torch's own fast paths)."""
    import torch

    from .base import TorchExtractor
    if not isinstance(ext, TorchExtractor) or not isinstance(ext.net, torch.nn.Module):
        return "torch", "not a torch network"
    if ext.device.type != "cpu":
        return "torch", f"torch on {ext.device.type}"
    if ext.amp or ext.compile:
        return "torch", "amp/compile run in torch"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch", "the onnx extra is not installed"
    return "onnxruntime", "onnxruntime on cpu (float32 torch network)"


def apply_runtime(ext: Extractor, runtime: str) -> Extractor:
    """``torch``: as built; ``onnxruntime``: a torch network exported in memory and run by onnxruntime (other
    extractors are not torch networks and run as they are); ``auto``: see :func:`auto_runtime` (a network the
    exporter refuses stays with torch, with a warning)."""
    if runtime not in RUNTIMES:
        raise InputError(f"extractor {ext.name!r}: runtime must be {', '.join(RUNTIMES)}, got {runtime!r}")
    auto = runtime == "auto"
    why = ""
    if auto:
        runtime, why = auto_runtime(ext)
    if runtime == "torch":
        if auto and hasattr(ext, "extra"):
            ext.extra = {**ext.extra, "runtime_choice": f"auto: {why}"}
        return ext
    import torch

    from .base import TorchExtractor
    if not isinstance(ext, TorchExtractor) or not isinstance(ext.net, torch.nn.Module):
        log.info("%s: not a torch network; runtime=onnxruntime leaves it as it is", ext.name)
        return ext
    from .models.onnx_twin import from_torch
    if not auto:
        return from_torch(ext)
    try:
        out = from_torch(ext)
        _same_outputs(ext, out)
    except Exception as e:      # auto must never make a working model fail: any refusal keeps torch
        log.info("%s: runtime auto: onnxruntime could not run this model (%s); using torch", ext.name, _reason(e))
        log.debug("%s: the ONNX twin's error in full", ext.name, exc_info=True)
        ext.extra = {**ext.extra, "runtime_choice": "auto: torch (the ONNX export did not reproduce the model)"}
        return ext
    out.extra = {**out.extra, "runtime_choice": f"auto: {why}"}
    return out


def _reason(e: BaseException) -> str:
    """The gist of an export or onnxruntime failure in one short clause (onnxruntime's status prefix and its
    source-file trailer dropped)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text).split(" Status Message:")[0].strip()
    return text if len(text) <= 160 else text[:157] + "..."


def _same_outputs(ext: Extractor, twin: Extractor, rows: int = 3) -> None:
    """Raise unless `twin` gives `ext`'s outputs on a probe batch of a size neither was built with (a network
    traced at a fixed batch size, e.g. a torch.export program, exports to a graph that only takes that size)."""
    import numpy as np
    x = np.random.default_rng(0).integers(0, 256, (rows, ext.input_size, ext.input_size, 3), dtype=np.uint8)
    a, b = ext(x), twin(x)
    for k in a:
        scale = max(1.0, float(np.abs(a[k]).max()))
        if k not in b or b[k].shape != a[k].shape or float(np.abs(a[k] - b[k]).max()) > 1e-4 * scale:
            raise ValueError(f"output {k!r} differs from torch's")
