"""JPEG decode on the model's device (extract.jpeg): its CPU twin gives the cache of PIL in the workers, files it
cannot take fall back to PIL, a corrupt file masks only its own frame; the CUDA path runs where a GPU is."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from extract import jpeg
from extract.runner import run
from extract.sources import discover
from features.errors import InputError
from features.store import FeatureStore

from helpers import TinyExtractor, TinyTorch, assert_same, make_set, read_all


def _jpeg(img: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", **kw)
    return b.getvalue()


def _bogus_huffman(data: bytes) -> bytes:
    """A baseline JPEG whose first Huffman table claims 16 x 255 codes: libjpeg stops with an error (PIL and
    torchvision alike), while the header check still sees a plain baseline JPEG."""
    i = data.index(b"\xff\xc4")
    return data[:i + 5] + bytes([255] * 16) + data[i + 21:]


def _odd_files(rng) -> dict[str, bytes]:
    """Every kind of file the header check must send to PIL, and two broken baseline JPEGs."""
    img = rng.integers(0, 255, (40, 40, 3), np.uint8)
    good = _jpeg(img, quality=90)
    cmyk = io.BytesIO()
    Image.fromarray(img).convert("CMYK").save(cmyk, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG")
    return {"baseline": good, "baseline444": _jpeg(img, quality=95, subsampling=0),
            "progressive": _jpeg(img, quality=90, progressive=True), "cmyk": cmyk.getvalue(),
            "grey": _jpeg(img[..., 0]), "png": png.getvalue(), "tiny": _jpeg(img[:8, :8]),
            "truncated": good[: len(good) // 2],
            "premature_end": good[: len(good) // 2] + b"\xff\xd9",           # PIL and libjpeg pad it alike
            "corrupt": _bogus_huffman(good),                                  # both refuse it
            "odd_size": _jpeg(rng.integers(0, 255, (37, 53, 3), np.uint8), quality=80)}


def test_header_check_takes_only_plain_baseline_jpegs():
    f = _odd_files(np.random.default_rng(0))
    assert jpeg.baseline_jpeg(f["baseline"]) == (40, 40) and jpeg.baseline_jpeg(f["odd_size"]) == (37, 53)
    for k in ("progressive", "cmyk", "grey", "png", "tiny", "truncated"):
        assert jpeg.baseline_jpeg(f[k]) is None, k
    assert jpeg.baseline_jpeg(b"") is None and jpeg.baseline_jpeg(b"\xff\xd8\xff\xd9") is None


def test_cpu_decode_equals_pil_bit_for_bit():
    """torchvision's CPU decode_jpeg and PIL are the same libjpeg-turbo: identical pixels (measured on every
    chroma subsampling and quality here; the runner's CPU twin relies on it)."""
    rng = np.random.default_rng(1)
    blobs = [_jpeg(rng.integers(0, 255, (h, w, 3), np.uint8), quality=q, subsampling=sub)
             for h, w in ((112, 112), (37, 53)) for q in (75, 95) for sub in (0, 1, 2)]
    data, off = jpeg.pack(blobs)
    imgs, why = jpeg.decode(data, off, "cpu")
    assert why == [""] * len(blobs)
    for b, im in zip(blobs, imgs):
        np.testing.assert_array_equal(im.numpy(), np.asarray(Image.open(io.BytesIO(b)).convert("RGB")))


@pytest.mark.parametrize("workers", [0, 2])
def test_device_decode_on_cpu_gives_the_cache_of_pil_decode(tmp_path_factory, tmp_path, workers, monkeypatch):
    root = tmp_path_factory.mktemp("affjpeg")
    make_set(root, n_frames=11, size=32)
    calls = []
    real = jpeg.decode

    def spy(data, off, device):
        calls.append(len(off) - 1)
        return real(data, off, device)
    monkeypatch.setattr(jpeg, "decode", spy)
    # three extractors, one decode per batch: upscales on the device, a downscale through PIL
    exts = lambda: [TinyExtractor(48), TinyExtractor(20, name="small", dim=3), TinyTorch(40)]   # noqa: E731
    run(discover(root), exts(), tmp_path / "w.h5", batch=7, workers=workers, progress=False, decode="workers")
    assert calls == []
    run(discover(root), exts(), tmp_path / "d.h5", batch=7, workers=workers, progress=False, decode="device")
    assert calls and sum(calls) > 0
    for name in ("tiny", "small"):
        assert_same(read_all(tmp_path / "w.h5", name), read_all(tmp_path / "d.h5", name))
    with FeatureStore(tmp_path / "w.h5") as a, FeatureStore(tmp_path / "d.h5") as b:
        vids = sorted(a.videos("torchy"))
        np.testing.assert_array_equal(a.read(vids, ["torchy"]).arrays["torchy/embedding"],
                                      b.read(vids, ["torchy"]).arrays["torchy/embedding"])
        # same pixels, same provenance: a CPU run with either decoder extends the other's cache
        assert a.info("tiny").extra["source"] == b.info("tiny").extra["source"]
        assert b.info("tiny").extra["decoder"].startswith("baseline JPEGs: torchvision")
        assert a.info("tiny").extra["decoder"] == "PIL in the decode workers"


def test_fallbacks_and_a_corrupt_file_mask_only_their_frames(tmp_path, caplog):
    d = tmp_path / "cropped" / "v"
    d.mkdir(parents=True)
    files = _odd_files(np.random.default_rng(2))
    order = list(files)
    for i, k in enumerate(order, 1):
        (d / f"{i:05d}.jpg").write_bytes(files[k])
    caplog.set_level("WARNING")
    run(discover(tmp_path), [TinyExtractor(48)], tmp_path / "d.h5", batch=4, workers=0, progress=False,
        decode="device")
    warned = " ".join(r.getMessage() for r in caplog.records)
    run(discover(tmp_path), [TinyExtractor(48)], tmp_path / "w.h5", batch=4, workers=0, progress=False,
        decode="workers")
    a, b = read_all(tmp_path / "w.h5"), read_all(tmp_path / "d.h5")
    assert_same(a, b)
    face = dict(zip(order, b[1]["face"].tolist()))
    assert face == {k: k not in ("tiny", "truncated", "corrupt") for k in order}, face
    # the corrupt baseline JPEG failed in the device decoder (its batch's other frames were decoded)
    assert f"{order.index('corrupt') + 1:05d}.jpg: cannot decode JPEG" in warned


def test_decoder_provenance_and_bad_option(tmp_path):
    assert jpeg.provenance("cpu") == {} and "nvjpeg" in jpeg.provenance("cuda:0")["jpeg_decoder"]
    make_set(tmp_path, n_frames=10, size=32)
    with pytest.raises(InputError, match="--decode must be"):
        run(discover(tmp_path), [TinyExtractor(8)], tmp_path / "x.h5", progress=False, decode="gpu")
    from extract.cli import build_parser
    assert build_parser().parse_args(["run"]).decode == "auto"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_decode_matches_cpu_within_a_grey_level_or_two(tmp_path):
    """nvJPEG on CUDA: same shapes as the CPU twin, pixels within a few grey levels; a corrupt file in the batch
    masks only itself; the cache records the decoder in the source provenance."""
    rng = np.random.default_rng(3)
    files = _odd_files(rng)
    blobs = [files["baseline"], files["corrupt"], files["odd_size"]]
    data, off = jpeg.pack(blobs)
    gpu, why = jpeg.decode(data, off, "cuda")
    cpu, _ = jpeg.decode(data, off, "cpu")
    assert why[0] == "" and why[1] and why[2] == "" and gpu[1] is None
    for i in (0, 2):
        assert gpu[i].is_cuda and gpu[i].shape == cpu[i].shape
        assert (gpu[i].cpu().int() - cpu[i].int()).abs().max() <= 4
    make_set(tmp_path, n_frames=10, size=32)
    run(discover(tmp_path), [TinyTorch(40).to("cuda")], tmp_path / "g.h5", batch=4, workers=0, progress=False,
        device="cuda", decode="device")
    with FeatureStore(tmp_path / "g.h5") as s:
        assert "nvjpeg" in s.info("torchy").extra["source"]["jpeg_decoder"]
