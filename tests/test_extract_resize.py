"""Resizing on the device: Pillow's bilinear reproduced bit for bit, and the runner's caches unchanged by it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from extract import runner as runner_mod
from extract.resize import on_device_exact, resize_bilinear
from extract.runner import run
from extract.sources import discover
from features.errors import InputError

from helpers import TinyExtractor, TinyTorch, assert_same, read_all


def pil(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


@pytest.mark.parametrize("seed", range(4))
def test_equals_pillow_on_random_upscales(seed):
    rng = np.random.default_rng(seed)
    shapes = [(112, 112, 224), (112, 112, 260), (112, 112, 112), (87, 131, 224), (223, 224, 224), (16, 16, 299),
              (40, 17, 64)]
    shapes += [(int(h), int(w), int(rng.integers(max(h, w), 400))) for h, w in rng.integers(16, 300, (12, 2))]
    for h, w, s in shapes:
        imgs = rng.integers(0, 256, (3, h, w, 3), np.uint8)
        imgs[1] = (np.indices((h, w)).sum(0) % 2 * 255)[..., None]      # hardest case: 0/255 checkerboard
        got = resize_bilinear(torch.from_numpy(imgs), s).numpy()
        assert got.shape == (3, s, s, 3) and got.dtype == np.uint8
        for i in range(3):
            np.testing.assert_array_equal(got[i], pil(imgs[i], s), err_msg=f"{h}x{w} -> {s}")


def test_downscales_are_refused_not_approximated():
    assert on_device_exact((112, 112), 224) and on_device_exact((224, 224), 224)
    assert not on_device_exact((300, 200), 224) and not on_device_exact((100, 240), 224)
    with pytest.raises(ValueError, match="downscale"):
        resize_bilinear(torch.zeros((1, 300, 200, 3), dtype=torch.uint8), 224)
    with pytest.raises(ValueError, match="uint8"):
        resize_bilinear(torch.zeros((1, 30, 20, 3)), 224)


def _spy(monkeypatch) -> list:
    calls = []

    def counted(batch, size):
        calls.append((tuple(batch.shape), size))
        return resize_bilinear(batch, size)
    monkeypatch.setattr(runner_mod, "resize_bilinear", counted)
    return calls


@pytest.mark.parametrize("workers", [0, 2])
def test_device_resize_gives_the_same_cache(crops, tmp_path, monkeypatch, workers):
    calls = _spy(monkeypatch)
    exts = lambda: [TinyExtractor(48), TinyExtractor(64, name="tiny64", dim=3), TinyTorch(40)]   # noqa: E731
    run(discover(crops), exts(), tmp_path / "w.h5", batch=7, workers=workers, progress=False, resize_on="workers")
    assert calls == []
    run(discover(crops), exts(), tmp_path / "d.h5", batch=7, workers=workers, progress=False, resize_on="device")
    assert {s for _, s in calls} == {40, 48, 64} and all(shape[1:] == (32, 32, 3) for shape, _ in calls)
    for name in ("tiny", "tiny64"):
        assert_same(read_all(tmp_path / "w.h5", name), read_all(tmp_path / "d.h5", name))
    with runner_mod.FeatureStore(tmp_path / "w.h5") as a, runner_mod.FeatureStore(tmp_path / "d.h5") as b:
        vids = sorted(a.videos("torchy"))
        ea = a.read(vids, ["torchy"], outputs=("embedding",)).arrays["torchy/embedding"]
        eb = b.read(vids, ["torchy"], outputs=("embedding",)).arrays["torchy/embedding"]
        np.testing.assert_array_equal(ea, eb)
        assert ea.any()


def test_mixed_shapes_and_downscales_resize_in_the_workers(tmp_path, monkeypatch, caplog):
    d = tmp_path / "cropped" / "v"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = [(30, 30), (30, 30), (30, 30), (30, 30), (36, 30), (30, 30)]   # batch 2 (rows 3-4) mixes shapes
    for i, (h, w) in enumerate(sizes, 1):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(d / f"{i:05d}.jpg", quality=95)
    (d / "00002.jpg").write_bytes(b"not a jpeg")
    calls = _spy(monkeypatch)
    caplog.set_level("WARNING")
    run(discover(tmp_path), [TinyExtractor(40)], tmp_path / "d.h5", batch=2, workers=0, progress=False,
        resize_on="device")
    assert len(calls) == 2                           # batches 1 and 3; batch 2 went through PIL
    assert any("00002.jpg" in r.getMessage() for r in caplog.records)
    run(discover(tmp_path), [TinyExtractor(40)], tmp_path / "w.h5", batch=2, workers=0, progress=False,
        resize_on="workers")
    assert_same(read_all(tmp_path / "w.h5"), read_all(tmp_path / "d.h5"))
    assert read_all(tmp_path / "d.h5")[1]["face"].tolist() == [True, False, True, True, True, True]
    # a downscale stays with PIL; beside an upscale, only the upscale moves to the device
    calls.clear()
    run(discover(tmp_path), [TinyExtractor(20, name="small")], tmp_path / "s.h5", batch=2, workers=0,
        progress=False, resize_on="device")
    assert calls == []
    both = lambda: [TinyExtractor(20, name="small"), TinyExtractor(40)]   # noqa: E731
    run(discover(tmp_path), both(), tmp_path / "b.h5", batch=2, workers=0, progress=False, resize_on="device")
    assert [s for _, s in calls] == [40, 40]
    run(discover(tmp_path), both(), tmp_path / "bw.h5", batch=2, workers=0, progress=False, resize_on="workers")
    for name in ("small", "tiny"):
        assert_same(read_all(tmp_path / "bw.h5", name), read_all(tmp_path / "b.h5", name))


def test_bad_resize_option(crops, tmp_path):
    with pytest.raises(InputError, match="resize-on"):
        run(discover(crops), [TinyExtractor(8)], tmp_path / "x.h5", progress=False, resize_on="gpu")
