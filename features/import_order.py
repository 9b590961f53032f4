"""Import order of the two deep-learning stacks, in one place for every stage.

Extraction runs torch models beside fer's Keras model, and classify trains Keras MLPs beside torch heads, so
both stacks often share one process; loaded in the wrong order that process crashes (see below).
"""
from __future__ import annotations

from .errors import InputError


def import_keras():
    """Import Keras (and TensorFlow under it) after torch and triton, its start-up lines kept off the console
    unless the command is verbose (features.quiet): the one place TensorFlow is loaded from."""
    from . import quiet
    torch_before_tensorflow()
    quiet.quiet_environment()
    with quiet.native_stderr():
        import keras
    return keras


def torch_before_tensorflow(strict: bool = False) -> None:
    """Load torch and triton now, before TensorFlow: the one place that orders them.

    Why: importing triton after TensorFlow crashes the process (segmentation fault inside triton's native
    library; torch 2.14 + TensorFlow 2.21, measured). timm (through torch._dynamo), torch.export, torch.compile
    and torch._inductor import triton lazily, so `--extractors fer,<any torch model>` died as soon as the second
    model was built, while the reverse order worked. With triton loaded first (0.3 s) every order of fer, timm,
    exported and ONNX extractors works in one process. When TensorFlow is already loaded and triton is not
    (a notebook that imported Keras first), triton cannot be loaded safely any more: `strict` (building a torch
    extractor) then refuses with one line instead of letting the process crash.
    """
    import importlib.util
    import sys
    if "triton" in sys.modules:
        return
    try:
        has_triton = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        has_triton = False
    if not has_triton:      # CPU-only torch builds have no triton, and then nothing imports it
        return
    if "tensorflow" in sys.modules:
        if strict:
            raise InputError("TensorFlow/Keras was imported before torch's triton, and loading triton now would "
                             "crash this process; import extract's models (or torch and triton) before TensorFlow, "
                             "or extract in a process of its own")
        return
    import torch  # noqa: F401
    import triton  # noqa: F401
