"""ONNX twins of EmotiEffNet (published format: input "input", one output of logits [+ VA]) through onnxruntime:
the embedding recovered from the classifier layer's input matches a direct torch forward pass."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from extract.registry import create
from features.errors import InputError

from helpers import TinyTorch, assert_close, b0_with_head, direct_forward

pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _export(model: torch.nn.Module, path) -> None:
    """As the published files were made: the legacy exporter, input named "input", batch and size dynamic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.rand(1, 3, 224, 224), str(path), input_names=["input"],
                          output_names=["output"], opset_version=13, dynamo=False,
                          dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"}, "output": {0: "batch"}})


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    models = {"seq8": b0_with_head(torch.nn.Sequential(torch.nn.Linear(1280, 8))),
              "lin10": b0_with_head(torch.nn.Linear(1280, 10)),
              "softmax": b0_with_head(torch.nn.Sequential(torch.nn.Linear(1280, 8), torch.nn.Softmax(dim=1)))}
    paths = {k: d / f"{k}.onnx" for k in models}
    for k, m in models.items():
        _export(m, paths[k])
    return models, paths


@pytest.mark.parametrize("key,name", [("seq8", "enet_b0_8_best_vgaf"), ("lin10", "enet_b0_8_va_mtl")])
def test_onnx_twin_matches_direct_forward(onnx_files, key, name):
    models, paths = onnx_files
    ext = create(f"{name}:{paths[key]}")
    assert ext.outputs == {"embedding": 1280, "logits": 8, **({"va": 2} if key == "lin10" else {})}
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = ext(batch)
    emb, y = direct_forward(models[key], torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
    assert_close(out["embedding"], emb)
    assert_close(out["logits"], y[:, :8])
    if key == "lin10":
        assert_close(out["va"], y[:, 8:])
    info = ext.info()
    assert info.extra["format"] == "onnx" and len(info.checkpoint_sha256) == 64 and info.input_size == 224
    assert all(v.dtype == np.float32 for v in out.values())


def test_onnx_twin_errors(onnx_files, tmp_path):
    _, paths = onnx_files
    with pytest.raises(InputError, match=r"expects 8 outputs \(8 classes\), this model has 10"):
        create(f"enet_b0_8_best_afew:{paths['lin10']}")
    with pytest.raises(InputError, match="cannot find the embedding.*comes from Softmax"):
        create(f"enet_b0_8_best_vgaf:{paths['softmax']}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.onnx: not a readable ONNX file"):
        create(f"enet_b0_8_best_vgaf:{junk}")
    with pytest.raises(InputError, match="not found"):
        create(f"enet_b0_8_best_vgaf:{tmp_path / 'missing.onnx'}")


def test_torch_models_run_through_onnxruntime(tmp_path):
    """runtime=onnxruntime: the torch network exported in memory gives the torch outputs, under the torch
    checkpoint's provenance (same store group)."""
    from safetensors.torch import save_file
    model = b0_with_head(torch.nn.Linear(1280, 10))
    path = tmp_path / "mtl.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ref = create(f"enet_b0_8_va_mtl:{path}")
    ort_ext = create(f"enet_b0_8_va_mtl:{path}:runtime=onnxruntime")
    assert ort_ext.outputs == ref.outputs == {"embedding": 1280, "logits": 8, "va": 2}
    batch = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    a, b = ref(batch), ort_ext(batch)
    for k in ref.outputs:
        assert_close(b[k], a[k])
    ia, ib = ref.info(), ort_ext.info()
    assert ib.checkpoint_sha256 == ia.checkpoint_sha256 and ib.normalization == ia.normalization
    assert ib.extra["runtime"].startswith("onnxruntime") and ib.extra["class_names"] == ia.extra["class_names"]
    with pytest.raises(InputError, match="runtime must be auto, torch, onnxruntime"):
        create(f"enet_b0_8_va_mtl:{path}:runtime=tensorrt")
    with pytest.raises(InputError, match="drop amp / compile"):
        create(f"enet_b0_8_va_mtl:{path}:runtime=onnxruntime:compile=1")


def test_onnxruntime_option_leaves_other_extractors_alone():
    from extract.cli import create_extractor
    from extract.models.onnx_twin import OnnxExtractor, from_torch
    fer = create_extractor("fer", "cpu", runtime="onnxruntime")
    assert not isinstance(fer, OnnxExtractor)
    tiny = TinyTorch(40)
    ext = from_torch(tiny)                       # embedding only (no logits): outputs found by name
    assert ext.outputs == {"embedding": 4}
    x = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    assert_close(ext(x)["embedding"], tiny(x)["embedding"])


def test_normalization_is_bit_identical_to_the_array_expression():
    from extract.models.onnx_twin import normalized_nchw
    b = np.random.default_rng(2).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = (np.asarray(b, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    got = normalized_nchw(b, mean, std)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, ref.transpose(0, 3, 1, 2))


def test_one_input_convention_for_every_runtime():
    """uint8 frames hold [0, 255] pixels and float frames [0, 1] ones, for the torch extractor and for its
    onnxruntime twin alike: the same frames in either form (numpy or torch) give the same outputs from both, and
    a float batch outside [0, 1] (say [0, 255] floats) is refused by both with one line."""
    from extract.models.onnx_twin import from_torch
    tiny = TinyTorch(40)
    twin = from_torch(tiny)
    u8 = np.random.default_rng(3).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    f01 = u8.astype(np.float32) / 255
    ref = tiny(u8)["embedding"]
    for ext in (tiny, twin):
        for batch in (u8, f01, f01.astype(np.float64), torch.from_numpy(u8), torch.from_numpy(f01)):
            assert_close(ext(batch)["embedding"], ref)
    for ext in (tiny, twin):
        for bad in (u8.astype(np.float32), np.full_like(f01, np.nan), torch.from_numpy(f01 - 0.5)):
            with pytest.raises(InputError, match=r"float batch must hold pixels in \[0, 1\].*pass uint8"):
                ext(bad)
