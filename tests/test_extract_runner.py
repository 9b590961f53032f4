"""The extraction runner: layouts, decode-once multi-extractor batches, resume, shards, provenance, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract import runner as runner_mod
from extract.runner import run
from extract.sources import (affwild_videos, discover, folder_videos, load_image, parse_shard, resize_square,
                             shard_path, shard_paths, shard_videos)
from features.errors import InputError
from features.store import FeatureStore

from helpers import TinyExtractor, assert_same, b0_with_head, make_set, read_all

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("aff")
    info = make_set(root)
    return root, info


# ----------------------------------------------------------------------------------------------------------
# sources

def test_affwild_frame_count_uses_crops_and_annotations(tmp_path):
    d = tmp_path / "cropped" / "vidA"
    d.mkdir(parents=True)
    for i in (1, 2, 4, 5):
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(d / f"{i:05d}.jpg")
    (d / "notes.txt").write_text("x")
    ann = tmp_path / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True)
    (ann / "vidA.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 7)
    (tmp_path / "cropped" / "vidB").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "cropped" / "vidB" / "00003.jpg")
    src = affwild_videos(tmp_path)
    by = {v.name: v for v in src.videos}
    assert by["vidA"].n_frames == 7            # annotation is longer than the last crop
    assert [p is not None for p in by["vidA"].paths] == [True, True, False, True, True, False, False]
    assert by["vidB"].n_frames == 3 and by["vidB"].paths[:2] == [None, None]
    assert src.description["frames"] == "cropped"


def test_missing_video_folder_is_fatal(tmp_path, capsys):
    from extract import cli
    (tmp_path / "cropped" / "vidA").mkdir(parents=True)
    ann = tmp_path / "EXPR_Classification_Challenge" / "Validation_Set"
    ann.mkdir(parents=True)
    (ann / "vidA.txt").write_text("Neutral\n0\n")
    (ann / "gone.txt").write_text("Neutral\n0\n1\n")
    with pytest.raises(InputError, match=r"cropped/gone.*missing"):
        affwild_videos(tmp_path)
    rc = cli.main(["run", "--data", str(tmp_path), "--out", str(tmp_path / "c.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.strip().count("\n") == 0 and "gone" in err


def test_folder_layout_orders_by_name(tmp_path):
    for v, names in (("b", ["x10.png", "x02.png"]), ("a", ["f.jpg"])):
        (tmp_path / v).mkdir()
        for n in names:
            Image.new("RGB", (20, 20)).save(tmp_path / v / n)
    (tmp_path / "empty").mkdir()
    src = folder_videos(tmp_path)
    assert [v.name for v in src.videos] == ["a", "b"]
    assert [Path(p).name for p in src.videos[1].paths] == ["x02.png", "x10.png"]
    assert discover(tmp_path).layout == "folders"


def test_shards_are_disjoint_complete_balanced_and_stable(synth):
    root, _ = synth
    vids = affwild_videos(root).videos
    parts = [shard_videos(vids, i, 3) for i in (1, 2, 3)]
    names = [v.name for p in parts for v in p]
    assert sorted(names) == sorted(v.name for v in vids) and len(set(names)) == len(names)
    loads = [sum(v.n_frames for v in p) for p in parts]
    assert max(loads) - min(loads) <= max(v.n_frames for v in vids)
    assert sorted(v.name for v in shard_videos(list(reversed(vids)), 2, 3)) == sorted(v.name for v in parts[1])
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(InputError):
            parse_shard(bad)
    assert shard_path("cache/f.h5", 2, 3).name == "f.shard-2-of-3.h5"


# ----------------------------------------------------------------------------------------------------------
# running

def test_run_decodes_once_for_two_sizes_and_masks_missing_crops(synth, tmp_path):
    root, info = synth
    a, b = TinyExtractor(8), TinyExtractor(12, name="tiny12", dim=4)
    s = run(discover(root), [a, b], tmp_path / "c.h5", batch=16, workers=0, progress=False)
    calls = list(a.calls)
    src = discover(root)
    n_total = sum(v.n_frames for v in src.videos)
    assert s.frames == n_total and s.videos == len(src.videos) and s.skipped == 0
    # where the time went: the three parts are measured inside the run's wall time
    assert min(s.wait_s, s.model_s, s.write_s) > 0 and s.wait_s + s.model_s + s.write_s <= s.seconds
    assert "waiting for frames" in s.line()
    with FeatureStore(tmp_path / "c.h5") as st:
        assert sorted(st.extractors) == ["tiny", "tiny12"]
        for v in src.videos:
            blk = st.read([v.name], ["tiny", "tiny12"], outputs=("embedding",))
            assert blk.index["frame"].tolist() == list(range(1, v.n_frames + 1))
            missing = set(info.missing_crops[v.name].tolist())
            assert [f not in missing for f in blk.index["frame"]] == blk.index["face"].tolist()
            emb = blk.arrays["tiny/embedding"].astype(np.float32)
            assert not emb[~blk.index["face"].to_numpy()].any()
            # a row equals the extractor applied to its own decoded, resized crop
            k = int(np.flatnonzero(blk.index["face"].to_numpy())[0])
            img, _ = load_image(v.paths[k])
            for ext, key in ((a, "tiny"), (b, "tiny12")):
                ref = ext(resize_square(img, ext.input_size)[None])["embedding"][0]
                np.testing.assert_allclose(blk.arrays[f"{key}/embedding"][k], ref, rtol=2e-3, atol=2e-3)
        info_a = st.info("tiny")
        assert info_a.extra["source"]["frames"] == "cropped" and info_a.checkpoint_sha256 == "a" * 64
    # frames of every video went to each extractor once, in batches that may span videos
    assert sum(calls) == n_total - sum(len(m) for m in info.missing_crops.values())
    assert len(calls) == -(-n_total // 16)       # one call per batch of 16 rows across videos


def test_workers_and_batch_size_do_not_change_features(synth, tmp_path):
    root, _ = synth
    run(discover(root), [TinyExtractor()], tmp_path / "a.h5", batch=64, workers=0, progress=False)
    run(discover(root), [TinyExtractor()], tmp_path / "b.h5", batch=5, workers=2, progress=False)
    assert_same(read_all(tmp_path / "a.h5"), read_all(tmp_path / "b.h5"))


class AsyncTiny(TinyExtractor):
    """Like an extractor on a GPU: `launch` returns before the outputs exist; records the call order."""

    def __init__(self, log: list, **kw):
        super().__init__(**kw)
        self.log = log

    def launch(self, batch):
        k = sum(what == "launch" for what, _ in self.log)
        self.log.append(("launch", k))
        out = self(batch)

        def finish():
            self.log.append(("finish", k))
            return out
        return finish


def test_next_batch_is_launched_before_the_previous_is_read(synth, tmp_path):
    root, _ = synth
    order: list = []
    run(discover(root), [AsyncTiny(order)], tmp_path / "a.h5", batch=8, workers=0, progress=False)
    launches = [k for what, k in order if what == "launch"]
    assert len(launches) > 2
    # batch i is read after batch i+1 started (the last one after the loop ends)
    for i in launches[:-1]:
        assert order.index(("finish", i)) > order.index(("launch", i + 1))
    run(discover(root), [TinyExtractor()], tmp_path / "s.h5", batch=8, workers=0, progress=False)
    assert_same(read_all(tmp_path / "a.h5"), read_all(tmp_path / "s.h5"))


def test_rerun_skips_committed_and_partial_run_resumes_to_the_same_cache(synth, tmp_path):
    root, _ = synth
    ref = tmp_path / "ref.h5"
    run(discover(root), [TinyExtractor()], ref, batch=8, workers=0, progress=False)
    ext = TinyExtractor()
    again = run(discover(root), [ext], ref, batch=8, workers=0, progress=False)
    assert again.videos == 0 and again.skipped == len(discover(root).videos) and ext.calls == []
    part = tmp_path / "part.h5"
    run(discover(root), [TinyExtractor()], part, batch=8, workers=0, progress=False, limit_videos=2)
    assert len(read_all(part)[0]) == 2
    rest = run(discover(root), [TinyExtractor()], part, batch=8, workers=0, progress=False)
    assert rest.skipped == 2
    assert_same(read_all(ref), read_all(part))
    # a new extractor added later computes only its own group
    both = run(discover(root), [TinyExtractor(), TinyExtractor(12, name="tiny12")], part, batch=8, workers=0,
               progress=False)
    assert both.videos == len(discover(root).videos)
    assert_same(read_all(ref), read_all(part))


def test_shards_read_as_one_cache(synth, tmp_path):
    root, _ = synth
    out = tmp_path / "c.h5"
    run(discover(root), [TinyExtractor()], tmp_path / "full.h5", batch=8, workers=0, progress=False)
    for i in (1, 2):
        run(discover(root), [TinyExtractor()], out, batch=8, workers=0, progress=False, shard=(i, 2))
    assert all(p.exists() for p in shard_paths(out, 2)) and not out.exists()
    assert_same(read_all(tmp_path / "full.h5"), read_all(shard_paths(out, 2)))


def test_refuses_other_checkpoint_or_other_frames(synth, tmp_path):
    root, _ = synth
    out = tmp_path / "c.h5"
    run(discover(root), [TinyExtractor()], out, batch=8, workers=0, progress=False, limit_videos=1)
    with pytest.raises(InputError, match="other weights or preprocessing"):
        run(discover(root), [TinyExtractor(sha="b" * 64)], out, batch=8, workers=0, progress=False)
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    (aligned / "cropped_aligned").symlink_to(root / "cropped")
    with pytest.raises(InputError, match="other frames"):
        run(discover(aligned), [TinyExtractor()], out, batch=8, workers=0, progress=False)
    assert len(read_all(out)[0]) == 1


def test_no_space_left_keeps_committed_videos(synth, tmp_path, monkeypatch):
    import errno
    from features import store as store_mod
    root, _ = synth
    ref = tmp_path / "ref.h5"
    run(discover(root), [TinyExtractor()], ref, batch=8, workers=0, progress=False)
    real = store_mod.VideoWriter.write_videos      # every commit of the runner goes through it
    calls = []

    def failing(self, items):
        calls.extend(it["video"] for it in items)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, items)
    monkeypatch.setattr(store_mod.VideoWriter, "write_videos", failing)
    out = tmp_path / "c.h5"
    with pytest.raises(InputError) as ei:
        run(discover(root), [TinyExtractor()], out, batch=8, workers=0, progress=False)
    msg = str(ei.value)
    assert "\n" not in msg and "No space left" in msg and str(out) in msg and calls[2] in msg
    monkeypatch.undo()
    vids, idx, arr = read_all(out)
    assert vids == sorted(calls[:2])
    with FeatureStore(ref) as s:
        blk = s.read(vids, ["tiny"], outputs=("embedding", "logits"))
    np.testing.assert_array_equal(arr["tiny/embedding"], blk.arrays["tiny/embedding"])
    # and the rerun completes the cache
    run(discover(root), [TinyExtractor()], out, batch=8, workers=0, progress=False)
    assert_same(read_all(ref), read_all(out))


# ----------------------------------------------------------------------------------------------------------
# bad frames: each is logged, masked, and the run goes on

def _write_bad(kind: str, path: Path, good: bytes) -> bool:
    """Write a bad frame of `kind` to `path`; returns whether it should still count as a face."""
    if kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8)))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cmyk":
        Image.new("CMYK", (30, 30), (10, 200, 30, 0)).save(path, format="JPEG")
    elif kind == "grey":
        Image.new("L", (30, 30), 128).save(path, format="JPEG")
    elif kind == "png":
        Image.new("RGBA", (30, 30), (1, 2, 3, 255)).save(path, format="PNG")
    elif kind == "tiny4x4":
        Image.new("RGB", (4, 4), (200, 10, 10)).save(path, format="JPEG")
    return kind in ("cmyk", "grey", "png")


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "cmyk", "grey", "png", "tiny4x4"])
def test_bad_frame(kind, tmp_path, caplog):
    d = tmp_path / "cropped" / "v"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(d / f"{i:05d}.jpg", quality=95)
    bad = d / "00003.jpg"
    usable = _write_bad(kind, bad, bad.read_bytes())
    caplog.set_level("WARNING")
    s = run(discover(tmp_path), [TinyExtractor()], tmp_path / "c.h5", batch=4, workers=0, progress=False)
    _, idx, arr = read_all(tmp_path / "c.h5")
    assert idx["face"].tolist() == [True, True, usable, True, True]
    assert s.frames == 5 and s.no_face == (0 if usable else 1)
    if usable:
        assert arr["tiny/embedding"][2].any()
        assert not caplog.records
    else:
        assert not arr["tiny/embedding"][2].any()
        assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ----------------------------------------------------------------------------------------------------------
# command line

def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "extract", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_cli_missing_checkpoint_is_one_line(synth, tmp_path):
    root, _ = synth
    missing = tmp_path / "nope" / "enet.safetensors"
    r = _cli("run", "--data", str(root), "--out", str(tmp_path / "c.h5"),
             "--extractors", f"enet_b0_8_va_mtl:{missing}", "--quiet")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0 and str(missing) in r.stderr
    assert not (tmp_path / "c.h5").exists()


def test_unreadable_video_file_is_one_line(tmp_path, monkeypatch, capsys):
    from extract import cli
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    monkeypatch.setattr(cli, "create_extractor", lambda *a, **k: TinyExtractor())
    rc = cli.main(["run", "--data", str(tmp_path), "--out", str(tmp_path / "c.h5"), "--layout", "videos",
                   "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "clip.mp4" in err


def test_cli_list_and_bad_arguments(tmp_path, capsys):
    from extract import cli
    assert cli.main(["list"]) == 0 and "timm" in capsys.readouterr().out.split()
    assert cli.main(["run", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c.h5")]) == 2
    assert "data folder does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--data", str(tmp_path), "--shard", "5/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_split_specs_keeps_commas_inside_options():
    from extract.cli import split_specs
    assert split_specs("fer, timm:m:w.pt:mean=0.5,0.5,0.5:std=1,1,1,enet_b2_8") == [
        "fer", "timm:m:w.pt:mean=0.5,0.5,0.5:std=1,1,1", "enet_b2_8"]
    # class names are text: only a registered name after a comma starts a new spec
    assert split_specs("fer,exported:m.pt2:size=112:classes=a,b,c") == ["fer", "exported:m.pt2:size=112:classes=a,b,c"]
    assert split_specs("exported:m.pt2:classes=a,b,c:name=x,timm:y:w") == [
        "exported:m.pt2:classes=a,b,c:name=x", "timm:y:w"]
    assert split_specs('exported:m.pt2:classes="happy,fer",fer') == ["exported:m.pt2:classes=happy,fer", "fer"]
    assert split_specs(["exported:m.pt2:classes=a,b", "fer"]) == ["exported:m.pt2:classes=a,b", "fer"]
    assert split_specs("fer,nosuch") == ["fer", "nosuch"]          # refused later as an unknown extractor
    with pytest.raises(InputError, match="unbalanced double quote"):
        split_specs('exported:m.pt2:classes="a,b')
    with pytest.raises(InputError, match="empty"):
        split_specs(" , ")


# ----------------------------------------------------------------------------------------------------------
# batch size: a resumed run with another --batch stays within the stated tolerance

def _within_batch_tolerance(a: Path, b: Path, name: str) -> dict[str, float]:
    from extract.runner import BATCH_TOLERANCE
    worst = {}
    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        info = sa.info(name)
        vids = sorted(sa.videos(name))
        assert sorted(sb.videos(name)) == vids
        ra = sa.read(vids, [name], outputs=tuple(info.outputs))
        rb = sb.read(vids, [name], outputs=tuple(info.outputs))
        for k, x in ra.arrays.items():
            y = rb.arrays[k]
            dtype = info.embedding_dtype if k.endswith("/embedding") else "float32"
            d = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
            bound = BATCH_TOLERANCE[dtype] * float(np.abs(x).max())
            assert d <= bound, f"{k}: max |diff| {d:.3g} > {bound:.3g}"
            worst[k] = d
    return worst


def _resumed_at_other_batches(ext, root: Path, tmp_path: Path) -> None:
    """Uninterrupted at batch 64 vs. first video at batch 7 then resumed at batch 1."""
    run(discover(root), [ext], tmp_path / "a.h5", batch=64, workers=0, progress=False)
    run(discover(root), [ext], tmp_path / "b.h5", batch=7, workers=0, progress=False, limit_videos=1)
    run(discover(root), [ext], tmp_path / "b.h5", batch=1, workers=0, progress=False)
    _within_batch_tolerance(tmp_path / "a.h5", tmp_path / "b.h5", ext.name)
    with FeatureStore(tmp_path / "b.h5") as s:
        assert s.info(ext.name).extra["batch"] == 7          # the run that created the group


def test_batch_size_changes_outputs_only_within_tolerance(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file
    from extract.registry import create
    make_set(tmp_path / "d", n_train=2, n_val=0, n_frames=10, size=40)
    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", pretrained=False, num_classes=5)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    ext = create(f"timm:test_efficientnet:{tmp_path / 'w.safetensors'}:size=64")
    _resumed_at_other_batches(ext, tmp_path / "d", tmp_path)


def test_batch_size_tolerance_holds_for_the_b0_stand_in(tmp_path):
    import torch
    from extract.registry import create
    make_set(tmp_path / "d", n_train=2, n_val=0, n_frames=10, size=40)
    torch.save(b0_with_head(torch.nn.Linear(1280, 10)), tmp_path / "b0.pt")
    _resumed_at_other_batches(create(f"enet_b0_8_va_mtl:{tmp_path / 'b0.pt'}:allow_pickle=1"), tmp_path / "d",
                              tmp_path)
