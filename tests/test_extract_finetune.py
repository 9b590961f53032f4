"""Fine-tuning (extract.finetune) and its checkpoints as extractors (finetuned:CKPT), on the synthetic Aff-Wild2 set:
training lowers the loss, the checkpoint and report hold what they promise, extraction reproduces the trained
network, classify blends pre-trained and fine-tuned features, a resumed run equals an uninterrupted one, a second
writer is refused, and (slow) fine-tuning learns what the pixels show."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.finetune import Settings, finetune
from extract.finetune.frames import crop_videos, even_sample, labelled_frames
from extract.finetune.network import start_network
from extract.sources import load_image, resize_square
from features.cachelock import CacheLock
from features.errors import InputError
from features.losses import make_loss
from features.store import FeatureStore
from features.synthetic import make_affwild
from features.tasks import AU, EXPR, VA

torch.set_num_threads(1)        # the test machine's cores are shared: one thread is faster than two fighting
FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hsemotion_timm097"
SIZE = 48                        # the tiny network's input: small, so a CPU trains it in seconds


def _timm_weights(path: Path, arch: str = "test_efficientnet", classes: int = 8) -> Path:
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = timm.create_model(arch, pretrained=False, num_classes=classes)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("affwild")
    make_affwild(root, n_train=3, n_val=2, n_frames=24, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny timm network (~0.1 M parameters) with random weights, as an extractor spec."""
    w = _timm_weights(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
    return f"timm:test_efficientnet:{w}:size={SIZE}"


def _settings(data: Path, spec: str, out: Path, **kw) -> Settings:
    base = dict(task="expr", data=data, source=spec, out=out, epochs=2, batch=8, lr=3e-3, backbone_lr=3e-3,
                frames_per_video=12, val_frames_per_video=8, ceiling_steps=1, progress=False, workers=0)
    return Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def run_a(data, tiny, tmp_path_factory):
    """One uninterrupted fine-tuning of the tiny network (EXPR, 2 epochs), shared by several tests."""
    out = tmp_path_factory.mktemp("run_a") / "ft.safetensors"
    return finetune(_settings(data, tiny, out)), out


def _read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _train_batch(data: Path, task, size: int, n: int = 16):
    """The first n training frames (evenly over videos), decoded and resized like extraction, as uint8."""
    fr = labelled_frames(data, task, "train", crop_videos(data))
    rows = even_sample(fr, max(1, n // len(fr.videos)))[:n]
    x = np.stack([resize_square(load_image(fr.paths[i])[0], size) for i in rows])
    return x, fr.y[rows], fr.y


def _forward(net, x: np.ndarray, mean, std) -> dict:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    t = (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return net(t)


def _batch_loss(net, task, x, y, y_all, mean, std) -> float:
    """The training objective on a fixed batch, BatchNorm on batch statistics (as in training): what the
    optimizer lowers, without the running statistics' drift over a few steps."""
    loss = make_loss(None, task, y_all)
    net.train()
    with torch.no_grad():
        out = _forward(net, x, mean, std)
    head = "va" if task is VA else "logits"
    target = torch.as_tensor(y, dtype=torch.int64 if task is EXPR else torch.float32)
    return float(loss(out[head].float(), target))


def _trained(path: Path):
    from extract.models.finetuned import make
    return make(str(path))


# ------------------------------------------------------------------------------------------ training lowers the loss

def test_finetuning_lowers_the_training_loss(data, tiny, run_a):
    res, out = run_a
    x, y, y_all = _train_batch(data, EXPR, SIZE)
    start = start_network(tiny, EXPR, seed=0)            # the very network training started from (same seed)
    ext = _trained(out)
    before = _batch_loss(start.net, EXPR, x, y, y_all, start.mean, start.std)
    after = _batch_loss(ext.net, EXPR, x, y, y_all, ext.mean, ext.std)
    assert after < before - 0.05, (before, after)
    assert len(res.history) == 2 and all(np.isfinite(h["train_loss"]) for h in res.history)


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"shared fixtures not found at {FIXTURE}")
def test_b0_stand_in_from_shared_fixture_lowers_the_loss(data, tmp_path):
    """The MT-EmotiEffNet-B0 stand-in (published format, converted to safetensors) fine-tuned for a few steps."""
    from extract.convert import convert
    b0 = tmp_path / "enet_b0_8_va_mtl.safetensors"
    convert(FIXTURE / "enet_b0_8_va_mtl_like.pt", b0, allow_pickle=True)
    spec = f"enet_b0_8_va_mtl:{b0}"
    out = tmp_path / "b0_expr.safetensors"
    res = finetune(_settings(data, spec, out, epochs=2, batch=4, frames_per_video=2, val_frames_per_video=2,
                             lr=1e-3, backbone_lr=1e-3, ceiling_steps=0))
    x, y, y_all = _train_batch(data, EXPR, 224, n=8)
    start = start_network(spec, EXPR, seed=0)
    ext = _trained(out)
    assert ext.input_size == 224 and ext.outputs == {"embedding": 1280, "logits": 8}
    before = _batch_loss(start.net, EXPR, x, y, y_all, start.mean, start.std)
    after = _batch_loss(ext.net, EXPR, x, y, y_all, ext.mean, ext.std)
    assert after < before - 0.01, (before, after)
    _, meta = _read(out)
    src = json.loads(meta["source"])
    # the starting checkpoint's sha256 is the original published file's (convert records it)
    from extract.checkpoints import sha256_file
    assert src["sha256"] == sha256_file(FIXTURE / "enet_b0_8_va_mtl_like.pt")
    assert meta["architecture"] == "tf_efficientnet_b0" and res.best_epoch in (1, 2)


# ------------------------------------------------------------------------------------------ checkpoint and report

def test_checkpoint_metadata_and_report(data, tiny, run_a):
    res, out = run_a
    tensors, meta = _read(out)
    assert meta["format"] == "affect-features finetuned 1" and meta["architecture"] == "test_efficientnet"
    assert json.loads(meta["input_size"]) == SIZE and meta["task"] == "expr"
    norm = json.loads(meta["normalization"])
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406]) and norm["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert json.loads(meta["class_names"]) == list(EXPR.labels)
    assert json.loads(meta["outputs"]) == {"embedding": 256, "logits": 8}
    assert set(json.loads(meta["output_layout"])) == {"embedding", "logits"}
    from extract.checkpoints import sha256_file
    assert json.loads(meta["source"])["sha256"] == sha256_file(tiny.split(":")[2])
    d, t = json.loads(meta["data"]), json.loads(meta["training"])
    report = json.loads(out.with_suffix(".json").read_text())
    assert d["frames_seen"] == sum(h["frames"] for h in report["epochs"]) > 0
    assert d["train_videos"] == 4 and d["val_videos"] == 2 and d["val_frames"] == 16
    assert {k: t[k] for k in ("epochs", "batch", "lr", "backbone_lr", "frames_per_video", "seed", "loss")} == \
        {"epochs": 2, "batch": 8, "lr": 3e-3, "backbone_lr": 3e-3, "frames_per_video": 12, "seed": 0, "loss": "ce"}
    assert t["best_epoch"] == report["best_epoch"] == res.best_epoch
    metrics = [h["val_metric"] for h in report["epochs"]]
    assert report["best_epoch"] == 1 + int(np.argmax(metrics))      # chosen by validation, not training loss
    for h in report["epochs"]:
        assert {"train_loss", "val_metric", "seconds", "frames_per_s"} <= set(h) and h["frames_per_s"] > 0
    assert report["ceiling_frames_per_s"] > 0
    assert "classifier.weight" in tensors and tuple(tensors["classifier.weight"].shape) == (8, 256)
    assert not out.with_suffix(".state.safetensors").exists()          # the state goes once the checkpoint is there


@pytest.mark.parametrize("task", [VA, AU])
def test_va_and_au_outputs(data, tiny, tmp_path, task):
    out = tmp_path / f"{task.name}.safetensors"
    finetune(_settings(data, tiny, out, task=task.name, epochs=1))
    ext = _trained(out)
    x, *_ = _train_batch(data, task, SIZE, n=4)
    y = ext(x)
    if task is VA:
        assert ext.outputs == {"embedding": 256, "va": 2} and np.abs(y["va"]).max() <= 1
    else:
        assert ext.outputs == {"embedding": 256, "logits": 12} and ext.class_names == AU.labels
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["metric"] == task.metric_name


# ------------------------------------------------------------------------------------------ as an extractor

@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_finetuned_extractor_gives_the_networks_own_outputs(data, run_a, tmp_path, runtime):
    """extract run --extractors finetuned:CKPT caches what the trained weights compute on the same frames, run
    by hand (a fresh timm model, the file's tensors, the recorded normalisation); `auto` runs it in onnxruntime."""
    import timm
    from extract.cli import main
    _, out = run_a
    cache = tmp_path / "c.h5"
    assert main(["run", "--data", str(data), "--cache", str(cache), "--extractors", f"finetuned:{out}",
                 "--workers", "0", "--quiet", "--runtime", runtime]) == 0
    store = FeatureStore(cache)
    info = store.info("finetuned")
    assert info.outputs == {"embedding": 256, "logits": 8} and info.extra["task"] == "expr"
    from extract.checkpoints import sha256_file
    assert info.checkpoint_sha256 == sha256_file(out)                 # its own provenance
    video = crop_videos(data)
    name = sorted(video)[0]
    blk = store.read([name], ["finetuned"], outputs=("embedding", "logits"))
    face = blk.index["face"].to_numpy(bool)
    paths = [p for p in video[name].paths if p]
    x = np.stack([resize_square(load_image(p)[0], SIZE) for p in paths])
    tensors, meta = _read(out)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=8)
    model.load_state_dict(tensors)
    model.eval()
    norm = json.loads(meta["normalization"])
    with torch.no_grad():
        t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) \
            / torch.tensor(norm["std"]).view(1, 3, 1, 1)
        emb = model.forward_head(model.forward_features(t), pre_logits=True).numpy()
        logits = model(t).numpy()
    tol = 1e-5 if runtime == "torch" else 1e-4           # onnxruntime's kernels: ~1e-6 of torch's
    np.testing.assert_allclose(blk.arrays["finetuned/logits"][face], logits, rtol=tol,
                               atol=tol * np.abs(logits).max())
    # the cache keeps embeddings as float16: one rounding step
    np.testing.assert_allclose(blk.arrays["finetuned/embedding"][face].astype(np.float32), emb, rtol=2 ** -10,
                               atol=2 ** -10 * np.abs(emb).max())


def test_classify_blends_pretrained_and_finetuned(data, tiny, run_a, tmp_path):
    """Pre-trained and fine-tuned feature sets in one classify run, blended with fixed weights from the command
    line (the reference's blend has that form), and with weights searched on validation."""
    from classify.__main__ import main as classify
    from extract.cli import main
    _, out = run_a
    cache = tmp_path / "c.h5"
    assert main(["run", "--data", str(data), "--cache", str(cache), "--extractors", f"{tiny}:name=pre",
                 "--extractors", f"finetuned:{out}", "--workers", "0", "--quiet", "--runtime", "torch"]) == 0
    common = ["--task", "expr", "--cache", str(cache), "--data", str(data), "--heads", "logits,blend",
              "--features", "logits=pre/logits,logits=finetuned/logits", "--runs-dir", str(tmp_path / "runs"),
              "--k", "0:4"]
    assert classify([*common, "--name", "fixed", "--blend-weights",
                     "logits-finetuned.logits=0.75,logits-pre.logits=0.25"]) == 0
    m = json.loads((tmp_path / "runs/expr/fixed/metrics.json").read_text())
    assert m["blend"]["weights"] == {"logits-pre.logits": 0.25, "logits-finetuned.logits": 0.75}
    assert m["blend"]["search"].startswith("fixed") and m["final"] == "blend"
    assert {v["feature_set"] for v in m["members"].values()} == {"pre/logits", "finetuned/logits"}
    assert classify([*common, "--name", "searched"]) == 0
    m = json.loads((tmp_path / "runs/expr/searched/metrics.json").read_text())
    assert "simplex" in m["blend"]["search"] and sum(m["blend"]["weights"].values()) == pytest.approx(1)


# ------------------------------------------------------------------------------------------ resume, one writer

def test_interrupted_run_resumes_to_the_same_checkpoint(data, tiny, run_a, tmp_path):
    """Stopped after epoch 1, then run again (with a decode worker this time): the checkpoint equals the
    uninterrupted run's bit for bit on the CPU (tolerance 0), since every random draw is seeded per epoch."""
    _, ref = run_a
    out = tmp_path / "ft.safetensors"

    def stop(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(_settings(data, tiny, out), on_epoch=stop)
    state = out.with_suffix(".state.safetensors")
    assert state.exists() and not out.exists() and not out.with_suffix(".json").exists()
    assert not CacheLock(out).path.exists()              # the lock went with the process's run
    res = finetune(_settings(data, tiny, out, workers=1))
    assert res.resumed_after == 1 and not state.exists()
    a, meta_a = _read(ref)
    b, meta_b = _read(out)
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = (json.loads(p.with_suffix(".json").read_text()) for p in (ref, out))
    strip = lambda h: {k: v for k, v in h.items() if "seconds" not in k and k != "frames_per_s"}
    assert [strip(h) for h in ra["epochs"]] == [strip(h) for h in rb["epochs"]]


def test_resume_with_other_settings_is_refused(data, tiny, tmp_path):
    out = tmp_path / "ft.safetensors"

    def stop(epoch):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(_settings(data, tiny, out, epochs=1, frames_per_video=4, val_frames_per_video=2), on_epoch=stop)
    with pytest.raises(InputError, match=r"other settings.*batch 8 vs 4 now"):
        finetune(_settings(data, tiny, out, epochs=1, frames_per_video=4, val_frames_per_video=2, batch=4))
    assert not out.exists()


def test_damaged_or_tampered_state_is_one_line(data, tiny, tmp_path):
    """The state is read back from disk: a damaged file or metadata that does not add up is refused, not used."""
    from safetensors.torch import save_file
    out = tmp_path / "ft.safetensors"
    kw = dict(epochs=2, frames_per_video=4, val_frames_per_video=2)

    def stop(epoch):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(_settings(data, tiny, out, **kw), on_epoch=stop)
    state = out.with_suffix(".state.safetensors")
    tensors, meta = _read(state)
    save_file(tensors, str(state), metadata={**meta, "history": json.dumps([{"epoch": 1, "frames": "many"}])})
    with pytest.raises(InputError, match="history do not add up"):
        finetune(_settings(data, tiny, out, **kw))
    state.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="unreadable"):
        finetune(_settings(data, tiny, out, **kw))
    assert not out.exists()


def test_second_writer_is_refused(data, tiny, tmp_path):
    out = tmp_path / "ft.safetensors"
    with CacheLock(out):
        with pytest.raises(InputError, match="another fine-tuning writes this checkpoint"):
            finetune(_settings(data, tiny, out, epochs=1))
    assert not out.exists() and not out.with_suffix(".state.safetensors").exists()


def test_freeze_until_keeps_the_first_layers(data, tiny, tmp_path):
    out = tmp_path / "ft.safetensors"
    finetune(_settings(data, tiny, out, epochs=1, freeze_until=2))
    start = start_network(tiny, EXPR, seed=0)
    after, _ = _read(out)
    before = start.net.model.state_dict()
    frozen = [n for g in start.groups[:2] for n in g]
    moved = [n for g in start.groups[2:] for n in g]
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    # BatchNorm statistics of the frozen groups stay too (their layers are kept in eval mode)
    stats = [k for k in before if k.endswith("running_mean") and k.rsplit(".", 1)[0] + ".weight" in frozen]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[n], after[n]) for n in moved)


# ------------------------------------------------------------------------------------------ learning

@pytest.mark.slow
def test_finetuning_beats_the_frozen_networks_logits_rule(tmp_path):
    """Expressions rendered into the crops: fine-tuning the whole network must beat what the frozen network's
    logits give through the logits rule, on the validation videos (P_EXPR, frame level). Many short videos:
    what generalises to new faces is seen on many identities (about 3 minutes on 2 busy cores)."""
    from classify.rules import LogitsRule
    from extract import factory
    data = tmp_path / "data"
    make_affwild(data, n_train=40, n_val=8, n_frames=30, size=64, seed=1)
    w = _timm_weights(tmp_path / "tiny.safetensors")
    spec = f"timm:test_efficientnet:{w}:size=64"
    res = finetune(Settings(task="expr", data=data, source=spec, out=tmp_path / "ft.safetensors", epochs=6,
                            batch=16, lr=3e-3, backbone_lr=3e-3, frames_per_video=30, ceiling_steps=0,
                            progress=False))
    frozen = factory.create(spec, default_runtime="torch")
    videos = crop_videos(data)
    tr, va = (labelled_frames(data, EXPR, s, videos) for s in ("train", "val"))

    def logits(fr):
        return np.concatenate([frozen(np.stack([load_image(p)[0] for p in fr.paths[i:i + 64]]))["logits"]
                               for i in range(0, len(fr), 64)])
    rule = LogitsRule("expr").fit(logits(tr), tr.y)
    baseline = EXPR.score(va.y, rule.predict_proba(logits(va)))
    assert res.best_metric > baseline + 0.05, (res.best_metric, baseline)
