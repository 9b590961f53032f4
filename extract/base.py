"""The extractor interface the runner calls and a torch implementation of it.

An extractor maps a batch of face crops, RGB (B, H, W, 3) already resized to ``input_size``, to float32
arrays per output ("embedding" always; "logits" and "va" where the model has them). One input convention for
every extractor and runtime (torch, onnxruntime, Keras): an integer batch (uint8) holds [0, 255] pixels, a
float batch [0, 1] pixels; a float batch outside [0, 1] is refused (`input_scale`), so [0, 255] floats are
never taken silently for something else. Its provenance (`info()`) is what the feature store compares before
appending to an existing group.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from features.errors import InputError
from features.import_order import import_keras, torch_before_tensorflow  # noqa: F401  (re-exported)
from features.store import ExtractorInfo
from features.tasks import AFFECTNET8, affwild_probabilities  # noqa: F401  (re-exported for extractors' users)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AFFECTNET7 = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")


FLOAT_PIXEL_SLACK = 1e-3     # float pixels may stray this far outside [0, 1] (rounding of a resize, say)


def input_scale(batch, what: str = "extractor") -> float:
    """255 for an integer pixel batch, 1 for a float one in [0, 1]; a float batch outside it (or NaN) is refused."""
    if hasattr(batch, "is_floating_point"):                  # a torch tensor, wherever it lives
        if not batch.is_floating_point():
            return 255.0
        import torch
        lo, hi = (float(v) for v in torch.aminmax(batch.detach())) if batch.numel() else (0.0, 0.0)
    else:
        a = np.asarray(batch)
        if not np.issubdtype(a.dtype, np.floating):
            return 255.0
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (lo >= -FLOAT_PIXEL_SLACK and hi <= 1 + FLOAT_PIXEL_SLACK):
        raise InputError(f"{what}: a float batch must hold pixels in [0, 1], got values in [{lo:g}, {hi:g}]; "
                         f"pass uint8 for [0, 255] pixels")
    return 1.0


class Extractor:
    """Abstract frozen feature extractor (framework-agnostic)."""
    name: str = ""
    input_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    outputs: dict[str, int] = {}
    checkpoint_sha256: str = ""
    class_names: tuple[str, ...] = ()      # names of the logits columns, in model order
    extra: dict

    def to(self, device: str) -> "Extractor":
        return self

    def configure(self, amp: str | None = None, channels_last: bool = False, compile: bool = False) -> "Extractor":
        if amp or channels_last or compile:
            warnings.warn(f"extractor {self.name}: amp / channels_last / compile apply to torch models only; "
                          f"ignored")
        return self

    def __call__(self, batch) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def launch(self, batch) -> Callable[[], dict[str, np.ndarray]]:
        """Start the forward pass of `batch`; calling the result gives the outputs. An extractor on an
        asynchronous device returns before the pass ends, so the caller's work overlaps it; here it runs now."""
        out = self(batch)
        return lambda: out

    @property
    def precision(self) -> str:
        return "float32"

    def preprocessing(self) -> dict:
        """How [0, 255] RGB becomes the network input; part of the provenance the store compares."""
        return {"mean": list(self.mean), "std": list(self.std), "scale": "x/255", "color": "rgb",
                "precision": self.precision}   # bf16 features differ from fp32 ones: keep them apart

    def runtime(self) -> dict:
        """Free-form facts about how the features were computed (recorded, not compared)."""
        return {}

    def info(self) -> ExtractorInfo:
        extra = {"class_names": list(self.class_names), **getattr(self, "extra", {}), **self.runtime()}
        return ExtractorInfo(name=self.name, checkpoint_sha256=self.checkpoint_sha256,
                             input_size=int(self.input_size), normalization=self.preprocessing(),
                             outputs=dict(self.outputs), extra=extra)

    def check_batch(self, batch) -> None:
        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1:] != (self.input_size, self.input_size, 3):
            raise InputError(f"extractor {self.name}: expected a (B, {self.input_size}, {self.input_size}, 3) "
                             f"RGB batch, got {shape}")

    def input_scale(self, batch) -> float:
        """What divides the batch to give [0, 1] pixels: 255 for integer batches, 1 for float ones, whose values
        must lie in [0, 1] (numpy or torch, on any device; checked, since a [0, 255] float batch would
        otherwise give wrong features without a word)."""
        return input_scale(batch, f"extractor {self.name}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, input_size={self.input_size}, outputs={self.outputs})"


class TorchExtractor(Extractor):
    """An extractor around a torch module that maps normalised NCHW float input to a dict of tensors.

    Normalisation runs on the device; ``amp`` ("bf16" | "fp16" | None) turns on autocast (fp16 on CUDA only)
    and ``channels_last`` the NHWC memory format, both usually faster on GPUs (check bf16 accuracy first).
    """

    def __init__(self, name: str, net: Callable, input_size: int, outputs: dict[str, int],
                 checkpoint_sha256: str = "", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, class_names: Sequence[str] = (), extra: dict | None = None):
        import torch
        self.name, self.net, self.input_size = name, net, int(input_size)
        self.outputs, self.checkpoint_sha256 = dict(outputs), checkpoint_sha256
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.class_names = tuple(class_names)
        self.extra = dict(extra or {})
        self.device = torch.device("cpu")
        self.amp: str | None = None
        self.channels_last = False
        self._norm = None                  # mean, std as tensors on the device (made once)
        self.compile = False
        self._compiled = None
        self._pad_to = 0                   # compiled: batches are padded to this many rows
        if isinstance(net, torch.nn.Module):
            net.eval()

    @property
    def precision(self) -> str:
        return self.amp or "float32"

    def runtime(self) -> dict:
        import torch
        out = {"runtime": "torch", "device": self.device.type, "channels_last": self.channels_last,
               "compiled": self.compile}
        if self.device.type == "cuda" and not self.amp:
            # float32 convolutions on Ampere+ GPUs run in TF32 by default: ~1e-3 relative from CPU float32
            out["cuda_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        return out

    def configure(self, amp: str | None = None, channels_last: bool = False,
                  compile: bool = False) -> "TorchExtractor":
        """`compile`: run the network through ``torch.compile`` (inductor; on a 2-core CPU EfficientNet-B0 runs
        ~1.5x faster after ~1 min of compiling). Batches are zero-padded to the largest size seen so that one
        compiled graph serves every batch (rows are independent, padding rows are dropped)."""
        if amp not in (None, "", "bf16", "fp16"):
            raise InputError(f"extractor {self.name}: amp must be bf16, fp16 or empty, got {amp!r}")
        self.amp, self.channels_last, self.compile = amp or None, bool(channels_last), bool(compile)
        self._compiled = None
        self._apply_memory_format()
        return self

    def _network(self):
        if not self.compile:
            return self.net
        if self._compiled is None:
            import torch
            self._compiled = torch.compile(self.net, dynamic=False)
        return self._compiled

    def _check_amp(self) -> None:
        if self.amp == "fp16" and self.device.type != "cuda":
            raise InputError(f"extractor {self.name}: fp16 autocast needs a CUDA device (use bf16 on CPU)")

    def _apply_memory_format(self) -> None:
        import torch
        if isinstance(self.net, torch.nn.Module):
            self.net.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def to(self, device: str) -> "TorchExtractor":
        import torch
        self.device = torch.device(device)
        if isinstance(self.net, torch.nn.Module):
            self.net.to(self.device)
        self._apply_memory_format()
        return self

    def _tensors(self, x) -> dict:
        """Outputs of a float NCHW batch of [0, 1] pixels as tensors on the device (not synchronised)."""
        import torch
        self._check_amp()
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True).float()
            if self._norm is None or self._norm[0].device != self.device:
                self._norm = (torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1),
                              torch.tensor(self.std, device=self.device).view(1, -1, 1, 1))
            x = (x - self._norm[0]) / self._norm[1]
            n = len(x)
            if self.compile:
                self._pad_to = max(self._pad_to, n)
                if n < self._pad_to:         # one shape, one compiled graph
                    x = torch.cat([x, x.new_zeros((self._pad_to - n, *x.shape[1:]))])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp or "")
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                out = self._network()(x)
            return {k: out[k][:n].float() for k in self.outputs}

    def forward01(self, x):
        """Run on a float NCHW tensor of [0, 1] pixels; returns float32 numpy arrays per output."""
        return {k: v.cpu().numpy() for k, v in self._tensors(x).items()}

    def _input01(self, batch):
        import torch
        self.check_batch(batch)
        t = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        scale = self.input_scale(t)
        # uint8 on the wire (4x less to copy to a GPU than float); scale on the device
        t = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return t if scale == 1.0 else t / scale

    def __call__(self, batch) -> dict[str, np.ndarray]:
        """uint8 (B, H, W, 3) RGB batch (numpy or torch); a float batch must hold [0, 1] pixels."""
        return self.forward01(self._input01(batch))

    def launch(self, batch) -> Callable[[], dict[str, np.ndarray]]:
        if self.device.type != "cuda":
            return super().launch(batch)
        import torch
        with torch.inference_mode():
            # device -> host copies into pinned memory, queued behind the forward pass; the event says when
            # they are done, so the caller can prepare the next batch meanwhile
            host = {k: v.to("cpu", non_blocking=True) for k, v in self._tensors(self._input01(batch)).items()}
            done = torch.cuda.Event()
            done.record()

        def finish() -> dict[str, np.ndarray]:
            done.synchronize()
            return {k: v.numpy() for k, v in host.items()}
        return finish
