"""The registry is a leaf, the factory builds from specs, and runtime=onnxruntime has one behaviour."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TinyTorch

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
    tiny = TinyTorch(40)
    assert isinstance(tiny, TorchExtractor) and isinstance(tiny.net, torch.nn.Module)
    ort = factory.apply_runtime(tiny, "onnxruntime")
    assert isinstance(ort, OnnxExtractor)
    x = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(ort(x)["embedding"], tiny(x)["embedding"], atol=1e-4, rtol=1e-4)
    assert factory.apply_runtime(tiny, "torch") is tiny


def _timm_spec(tmp_path) -> str:
    """A tiny timm network (random weights) as a spec: a torch extractor that loads in a second."""
    import timm
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    w = tmp_path / "test_efficientnet.safetensors"
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=8)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(w))
    return f"timm:test_efficientnet:{w}:size=64:name=tiny"


def test_runtime_auto_is_the_cli_default_and_picks_onnxruntime_on_cpu(tmp_path):
    """--runtime auto (the default): onnxruntime for a float32 torch network on a CPU, the same outputs as torch
    within 1e-5, and the choice recorded; a spec's own runtime wins over the flag."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import numpy as np
    from extract import factory
    from extract.base import TorchExtractor
    from extract.cli import build_parser, create_extractor
    from extract.models.onnx_twin import OnnxExtractor
    assert build_parser().parse_args(["run"]).runtime == "auto"
    spec = _timm_spec(tmp_path)
    auto = create_extractor(spec, "cpu")
    torch_ext = create_extractor(spec, "cpu", runtime="torch")
    assert isinstance(auto, OnnxExtractor) and isinstance(torch_ext, TorchExtractor)
    assert isinstance(create_extractor(spec + ":runtime=torch", "cpu"), TorchExtractor)
    assert isinstance(factory.create(spec), TorchExtractor)          # the Python API builds what it is asked
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    a, t = auto(x), torch_ext(x)
    for k in t:
        np.testing.assert_allclose(a[k], t[k], atol=1e-5 * max(1.0, float(np.abs(t[k]).max())), rtol=0)
    ia, it = auto.info(), torch_ext.info()
    assert ia.checkpoint_sha256 == it.checkpoint_sha256            # both join one group
    assert ia.extra["runtime"].startswith("onnxruntime") and ia.extra["runtime_choice"].startswith("auto: onnx")
    assert it.extra["runtime"] == "torch" and "runtime_choice" not in it.extra


def test_runtime_auto_keeps_torch_where_torch_is_faster_or_needed(tmp_path, monkeypatch):
    """bf16 autocast / compile stay with torch (onnxruntime runs float32 graphs), and so does a CPU without the
    onnx extra; the reason is recorded."""
    from extract import factory
    from extract.base import TorchExtractor
    bf16 = factory.apply_runtime(TinyTorch(40).configure(amp="bf16"), "auto")
    assert isinstance(bf16, TorchExtractor) and bf16.info().extra["runtime_choice"] == "auto: amp/compile run in torch"
    import builtins
    real = builtins.__import__

    def no_onnx(name, *a, **k):
        if name.startswith("onnxruntime"):
            raise ImportError("no onnxruntime")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    plain = factory.apply_runtime(TinyTorch(40), "auto")
    assert isinstance(plain, TorchExtractor) and "not installed" in plain.info().extra["runtime_choice"]
