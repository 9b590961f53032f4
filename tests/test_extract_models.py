"""Extractor models: registry specs, checkpoint formats (pickled HSEmotion modules, safetensors, DAN-style
state_dicts, exported programs), outputs against direct forward passes, the published-format fixture."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from extract import convert
from extract.base import AFFECTNET8, TorchExtractor, affwild_probabilities
from extract.checkpoints import load_weights
from extract.registry import create, list_extractors, parse_spec
from features.errors import InputError
from features.store import FeatureStore
from features.tasks import EXPR

from helpers import assert_close, b0_with_head, direct_forward

torch.set_num_threads(2)
FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hsemotion_timm097"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def pickled(tmp_path_factory):
    """Whole pickled timm modules made the way HSEmotion published them (torch.save(model))."""
    d = tmp_path_factory.mktemp("hsemotion")
    models = {"seq8": b0_with_head(torch.nn.Sequential(torch.nn.Linear(1280, 8))),
              "lin10": b0_with_head(torch.nn.Linear(1280, 10))}
    paths = {}
    for k, m in models.items():
        paths[k] = d / f"{k}.pt"
        torch.save(m, paths[k])
    return models, paths


@pytest.fixture(scope="module")
def exts(pickled):
    """Extractors loaded once from the pickled modules (tests that reconfigure them restore the settings)."""
    _, paths = pickled
    return {"seq8": create(f"enet_b0_8_best_vgaf:{paths['seq8']}:allow_pickle=1"),
            "lin10": create(f"enet_b0_8_va_mtl:{paths['lin10']}:allow_pickle=1")}


# ---------------------------------------------------------------------------------------------- registry

def test_registry_lists_all_families():
    names = set(list_extractors())
    assert {"enet_b0_8_best_vgaf", "enet_b0_8_best_afew", "enet_b0_8_va_mtl", "enet_b2_8", "enet_b2_7",
            "resnet18_msceleb", "exported", "timm", "fer"} <= names


def test_parse_spec_types_options_and_paths():
    name, args, opts = parse_spec("exported:dir/m.pt2:size=112:mean=0.5,0.5,0.5:amp=bf16:channels_last=yes")
    assert (name, args) == ("exported", ["dir/m.pt2"])
    assert opts == {"size": 112, "mean": (0.5, 0.5, 0.5), "amp": "bf16", "channels_last": True}
    assert parse_spec(r"timm:resnet18:C:\w\x.safetensors")[1] == ["resnet18", r"C:\w\x.safetensors"]


def test_registry_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="unknown extractor 'nope'.*enet_b0_8_va_mtl"):
        create("nope")
    with pytest.raises(InputError, match="not found"):
        create(f"enet_b0_8_va_mtl:{tmp_path / 'missing.pt'}")
    with pytest.raises(InputError, match="unknown option.*colour"):
        create(f"enet_b0_8_va_mtl:{tmp_path / 'x.pt'}:colour=red")
    with pytest.raises(InputError, match="too many fields"):
        create(f"resnet18_msceleb:{tmp_path / 'a'}:{tmp_path / 'b'}")


def test_missing_default_checkpoint_names_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECT_FEATURES_HOME", str(tmp_path))
    with pytest.raises(InputError, match=f"enet_b2_8.safetensors.*{tmp_path}"):
        create("enet_b2_8")


# ------------------------------------------------------------------------------------- HSEmotion formats

def test_pickled_module_needs_opt_in(pickled, tmp_path):
    _, paths = pickled
    with pytest.raises(InputError, match=r"pickled Python objects \(timm\..*in all\)\) that run code.*"
                                         "allow_pickle.*extract.convert"):
        create(f"enet_b0_8_best_vgaf:{paths['seq8']}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00junk" * 8)
    with pytest.raises(InputError, match="junk.pt: cannot read checkpoint"):
        create(f"enet_b0_8_best_vgaf:{junk}:allow_pickle=1")


@pytest.mark.parametrize("key,name", [("seq8", "enet_b0_8_best_vgaf"), ("lin10", "enet_b0_8_va_mtl")])
def test_pickled_module_matches_direct_forward(pickled, exts, key, name):
    models, _ = pickled
    ext = exts[key]
    assert ext.name == name and ext.input_size == 224 and ext.outputs["embedding"] == 1280
    assert ext.class_names == AFFECTNET8
    x01 = torch.rand(2, 3, 64, 64)            # the nets are fully convolutional: small input, same code path
    out = ext.forward01(x01)
    emb, y = direct_forward(models[key], x01)
    assert_close(out["embedding"], emb)
    assert_close(out["logits"], y[:, :8])
    if key == "lin10":
        assert_close(out["va"], y[:, 8:])
    else:
        assert "va" not in out
    # the runner's path: uint8 NHWC RGB, scaled and normalised by the extractor (a 32 px stand-in for 224)
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(InputError, match=r"expected a \(B, 224, 224, 3\)"):
        ext(batch)
    ext.input_size = 32
    try:
        full = ext(batch)
    finally:
        ext.input_size = 224
    emb_u8, _ = direct_forward(models[key], torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
    assert_close(full["embedding"], emb_u8)
    assert all(v.dtype == np.float32 for v in full.values())


def test_class_count_and_architecture_are_checked(pickled):
    _, paths = pickled
    with pytest.raises(InputError, match="expected a classifier with 8 outputs.*found 10"):
        create(f"enet_b0_8_best_afew:{paths['lin10']}:allow_pickle=1")
    with pytest.raises(InputError, match="expected a classifier with 10 outputs.*found 8"):
        create(f"enet_b0_8_va_mtl:{paths['seq8']}:allow_pickle=1")
    with pytest.raises(InputError, match="needs a tf_efficientnet_b2 checkpoint.*tf_efficientnet_b0"):
        create(f"enet_b2_8:{paths['seq8']}:allow_pickle=1")


def test_convert_then_safe_load_gives_same_features(pickled, exts, tmp_path, capsys):
    _, paths = pickled
    out = tmp_path / "vgaf.safetensors"
    assert convert.main([str(paths["seq8"]), str(out)]) == 2
    assert "allow-pickle" in capsys.readouterr().err
    assert convert.main([str(paths["seq8"]), str(out), "--allow-pickle"]) == 0
    w = load_weights(out)            # no pickle needed any more
    assert w.format == "safetensors" and "classifier.weight" in w.state_dict
    assert w.metadata["architecture"] == "tf_efficientnet_b0" and w.metadata["num_classes"] == "8"
    assert convert.main([str(paths["seq8"]), str(out), "--allow-pickle"]) == 2   # never overwrites
    a = exts["seq8"]
    b = create(f"enet_b0_8_best_vgaf:{out}")
    x = torch.rand(2, 3, 32, 32)
    np.testing.assert_array_equal(a.forward01(x)["logits"], b.forward01(x)["logits"])
    assert a.info().checkpoint_sha256 == b.info().checkpoint_sha256 == w.metadata["source_sha256"]


def test_amp_and_channels_last_stay_close(exts):
    ext = exts["seq8"]
    x = torch.rand(2, 3, 32, 32)
    ref = ext.forward01(x)["embedding"]
    try:
        ext.configure(channels_last=True)
        assert_close(ext.forward01(x)["embedding"], ref)
        ext.configure(amp="bf16")
        got = ext.forward01(x)["embedding"]
        assert got.dtype == np.float32 and np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
        assert ext.info().normalization["precision"] == "bf16"     # bf16 features never mix with fp32 ones
        ext.configure(amp="fp16")
        with pytest.raises(InputError, match="CUDA"):
            ext.forward01(x)
        with pytest.raises(InputError, match="amp must be"):
            ext.configure(amp="int8")
    finally:
        ext.configure()
    assert ext.info().normalization["precision"] == "float32"


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"shared fixtures not found at {FIXTURE}")
def test_published_format_fixture_reproduces_reference():
    """The stand-in pickled under timm 0.9.7 (tf_efficientnet_b0_ns) gives its recorded outputs here."""
    ref = np.load(FIXTURE / "reference_io.npz")
    pt = FIXTURE / "enet_b0_8_va_mtl_like.pt"
    w = load_weights(pt, allow_pickle=True)
    assert w.metadata["architecture"] == "tf_efficientnet_b0" and "ns" in w.metadata["tag"]
    ext = create(f"enet_b0_8_va_mtl:{pt}:allow_pickle=1")
    model = ext.net.model
    assert type(model.conv_stem).__name__ == "Conv2dSame" and model.bn1.eps == pytest.approx(1e-3)
    out = ext.forward01(torch.from_numpy(ref["images01"]))
    assert_close(np.hstack([out["logits"], out["va"]]), ref["logits"])
    assert_close(out["embedding"], ref["embedding"])


# ----------------------------------------------------------------------------------- other families

def test_resnet18_msceleb_from_dan_style_checkpoint(tmp_path):
    import torchvision
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None, num_classes=12).eval()
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv.state_dict().items()}, "epoch": 3}, path)
    ext = create(f"resnet18_msceleb:{path}")
    assert ext.outputs == {"embedding": 512}
    x = torch.rand(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        assert_close(ext.forward01(x)["embedding"], tv((x - MEAN) / STD).numpy())
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(InputError, match="do not fit resnet18.*missing"):
        create(f"resnet18_msceleb:{path}")


def test_timm_generic_with_safetensors(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(2)
    m = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    path = tmp_path / "r18.safetensors"
    save_file(m.state_dict(), str(path))
    ext = create(f"timm:resnet18:{path}:size=96:classes=a,b,c:name=myres")
    assert ext.name == "myres" and ext.input_size == 96 and ext.outputs == {"embedding": 512, "logits": 3}
    x = torch.rand(2, 3, 96, 96)
    emb, y = direct_forward(m, x)
    out = ext.forward01(x)
    assert_close(out["embedding"], emb)
    assert_close(out["logits"], y)
    with pytest.raises(InputError, match="do not fit resnet34"):
        create(f"timm:resnet34:{path}")


class _Tiny(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv, self.fc = torch.nn.Conv2d(3, 16, 3), torch.nn.Linear(16, 7)

    def forward(self, x):
        e = self.conv(x).mean((2, 3))
        if self.kind == "tensor":
            return e
        if self.kind == "dict":
            return {"embedding": e, "logits": self.fc(e)}
        return e, self.fc(e)


@pytest.mark.parametrize("fmt,kind", [("pt2-dynamic", "tuple"), ("pt2-static", "dict"), ("torchscript", "tensor")])
def test_exported_models(tmp_path, fmt, kind):
    torch.manual_seed(3)
    m = _Tiny(kind).eval()
    x = torch.rand(2, 3, 32, 32)
    path = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(m, x), str(path))
    else:
        dyn = ({0: torch.export.Dim("batch")},) if fmt == "pt2-dynamic" else None
        torch.export.save(torch.export.export(m, (x,), dynamic_shapes=dyn), str(path))
    spec = f"exported:{path}:size=32:mean=0.5:std=0.5,0.25,0.5"
    if fmt == "torchscript":        # a TorchScript archive is a program torch runs while loading it: opt-in only
        with pytest.raises(InputError, match=r"m.pt: is a TorchScript program \(__torch__\..*--allow-pickle"):
            create(spec)
        spec += ":allow_pickle=1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ext = create(spec)
    assert any("TorchScript" in str(c.message) for c in caught) == (fmt == "torchscript")
    batch = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)   # 3: pads a static 2
    out = ext(batch)
    std = torch.tensor([0.5, 0.25, 0.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = m((torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5) / std)
    if kind != "dict":
        want = dict(zip(("embedding", "logits"), want if kind == "tuple" else (want,)))
    assert set(out) == set(want) and ext.outputs["embedding"] == 16
    for k in want:
        assert_close(out[k], want[k].numpy())


def test_exported_errors(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a program")
    with pytest.raises(InputError, match="bad.pt2: cannot load torch.export"):
        create(f"exported:{bad}:size=32")
    m = _Tiny("tuple").eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(2, 3, 32, 32),)), str(path))
    with pytest.raises(InputError, match="3 class names but the model gives 7 logits"):
        create(f"exported:{path}:size=32:classes=a,b,c")


# ------------------------------------------------------------------------------- class order, store

def test_affwild_probabilities_maps_classes():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 8))
    p = affwild_probabilities(AFFECTNET8, z)
    soft = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(p[:, EXPR.labels.index("Neutral")], soft[:, AFFECTNET8.index("Neutral")], rtol=1e-6)
    np.testing.assert_allclose(p[:, EXPR.labels.index("Other")], soft[:, AFFECTNET8.index("Contempt")], rtol=1e-6)
    fer = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    q = affwild_probabilities(fer, z[:, :7])
    np.testing.assert_allclose(q.sum(1), 1, rtol=1e-6)
    assert np.all(q[:, EXPR.labels.index("Other")] == 0)
    assert np.argmax(q, 1).tolist() == [EXPR.labels.index({"angry": "Anger", "disgust": "Disgust", "fear": "Fear",
                                        "happy": "Happiness", "sad": "Sadness", "surprise": "Surprise",
                                        "neutral": "Neutral"}[fer[i]]) for i in np.argmax(z[:, :7], 1)]
    with pytest.raises(InputError, match="3 classes"):
        affwild_probabilities(("a", "b", "c"), z)


def test_outputs_fit_the_store(exts, tmp_path):
    ext = exts["lin10"]
    out = ext.forward01(torch.rand(3, 3, 32, 32))
    with FeatureStore(tmp_path / "c.h5", mode="a") as store:
        store.writer(ext.info()).write_video("v", frame=np.arange(1, 4), face=np.ones(3, bool), **out)
    with FeatureStore(tmp_path / "c.h5") as store:
        info = store.info("enet_b0_8_va_mtl")
        assert info.outputs == {"embedding": 1280, "logits": 8, "va": 2}
        assert info.extra["class_names"] == list(AFFECTNET8) and info.extra["architecture"] == "tf_efficientnet_b0"
        assert isinstance(ext, TorchExtractor)


def test_checkpoint_globals_are_named_without_running_them(tmp_path):
    import os
    import pickle

    from extract.checkpoints import pickled_globals

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"w": torch.zeros(2), "x": RunsCode()}, tmp_path / "zip.pt")
    torch.save({"w": torch.zeros(2), "x": RunsCode()}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with open(tmp_path / "plain.pkl.pt", "wb") as f:
        pickle.dump({"x": RunsCode()}, f, protocol=4)
    for name in ("zip.pt", "legacy.pt", "plain.pkl.pt"):
        assert pickled_globals(tmp_path / name)[0] == "posix.system", name
        with pytest.raises(InputError, match=rf"{name}: holds pickled Python objects \(posix.system.*--allow-pickle"):
            load_weights(tmp_path / name)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.pt: checkpoint is an empty file \(0 bytes\)"):
        load_weights(tmp_path / "empty.pt")


def test_text_options_keep_their_text(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):
            e = x.mean((2, 3))
            return e, e
    prog = torch.export.export(Net(), (torch.zeros(2, 3, 8, 8),))
    torch.export.save(prog, str(tmp_path / "m.pt2"))
    ext = create(f"exported:{tmp_path / 'm.pt2'}:size=8:classes=1,2,3")     # names that look like numbers
    assert ext.class_names == ("1", "2", "3")
