"""The registry is a leaf, the factory builds from specs, and runtime=onnxruntime has one behaviour."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_registry_is_a_leaf_and_the_factory_imports_every_family():
    code = ("import sys, extract.registry as r\n"
            "assert not [m for m in sys.modules if m.startswith(('extract.models', 'extract.factory'))], sys.modules\n"
            "assert r._REGISTRY == {}\n"
            "from extract import factory\n"
            "assert {'fer', 'timm', 'exported'} <= set(factory.list_extractors())\n"
            "assert r.create is factory.create and r.list_extractors() == factory.list_extractors()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]


def test_unknown_name_and_option_are_one_line():
    from extract import factory
    from features.errors import InputError
    with pytest.raises(InputError, match="unknown extractor 'nope'"):
        factory.create("nope:x")
    with pytest.raises(InputError, match="unknown option"):
        factory.create("fer:bogus=1")


def test_runtime_option_and_flag_behave_alike_on_a_non_torch_model():
    """fer is a Keras model: the spec option used to raise while the CLI flag left it alone."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from extract import factory
    from extract.cli import create_extractor
    from extract.models.onnx_twin import OnnxExtractor
    by_spec = factory.create("fer:runtime=onnxruntime")
    by_flag = create_extractor("fer", "cpu", runtime="onnxruntime")
    assert type(by_spec) is type(by_flag) and not isinstance(by_spec, OnnxExtractor)


def test_runtime_applies_to_torch_networks_from_spec_and_flag_alike(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import numpy as np
    import torch
    from extract import factory
    from extract.base import TorchExtractor
    from extract.models.onnx_twin import OnnxExtractor
    from test_extract_resize import TinyTorch
    tiny = TinyTorch(40)
    assert isinstance(tiny, TorchExtractor) and isinstance(tiny.net, torch.nn.Module)
    ort = factory.apply_runtime(tiny, "onnxruntime")
    assert isinstance(ort, OnnxExtractor)
    x = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(ort(x)["embedding"], tiny(x)["embedding"], atol=1e-4, rtol=1e-4)
    assert factory.apply_runtime(tiny, "torch") is tiny
