"""Bad input to `python -m extract run|convert|openface`: options, frames, extractor specs, checkpoints, CSVs."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from extract.base import Extractor, torch_before_tensorflow
from extract.cli import main
from features.store import FeatureStore

from . import Case, Result, api, cli

# Cases of other groups (classify's Keras heads) may load TensorFlow in this process before these cases build
# torch models; loading torch and triton now, at collection, keeps that order safe (see torch_before_tensorflow).
torch_before_tensorflow()

S = 16      # frames are S x S and the numpy extractor's input is S x S, so its input is the decoded frame itself


class PixelExtractor(Extractor):
    """embedding = the input pixels as decoded (no resize at S x S): what the model was fed, checkable."""

    def __init__(self):
        self.name, self.input_size, self.checkpoint_sha256 = "pix", S, "p" * 64
        self.outputs = {"embedding": S * S * 3}
        self.extra = {}

    def __call__(self, batch):
        return {"embedding": np.asarray(batch, np.float32).reshape(len(batch), -1)}


def _data(shared: Path) -> Path:
    """A folders-layout set: two videos of three 16x16 PNG frames."""
    d = shared / "data"
    if not d.exists():
        from PIL import Image
        rng = np.random.default_rng(0)
        for v in ("v1", "v2"):
            (d / v).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(d / v / f"{i}.png")
    return d


def _tiny_exported(shared: Path) -> Path:
    p = shared / "tiny.pt2"
    if not p.exists():
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Linear(4, 3)

            def forward(self, x):
                emb = torch.relu(self.conv(x)).mean((2, 3))
                return emb, self.fc(emb)
        torch.manual_seed(0)
        prog = torch.export.export(Tiny().eval(), (torch.zeros(2, 3, S, S),),
                                   dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
        torch.export.save(prog, str(p))
    return p


def _timm_weights(shared: Path, arch: str) -> Path:
    p = shared / f"{arch}.safetensors"
    if not p.exists():
        import timm
        from safetensors.torch import save_file
        m = timm.create_model(arch, pretrained=False, num_classes=3)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p))
    return p


def _resnet18_with_objects(shared: Path) -> Path:
    """A DAN-style resnet18 checkpoint that also pickles an argparse.Namespace (refused by weights_only)."""
    p = shared / "resnet18_args.pth"
    if not p.exists():
        import timm
        import torch
        sd = timm.create_model("resnet18", pretrained=False, num_classes=7).state_dict()
        torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1)}, p)
    return p


class _RunsCode:
    """Unpickling this calls os.system (posix.system): it touches a marker file if the tool ever unpickles it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil(tmp: Path) -> Path:
    import torch
    p = tmp / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _RunsCode(tmp / "code_ran")}, p)
    return p


def _not_run(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "code_ran").exists(), "the checkpoint's code ran"


def _quiet_run(folder: Path, out: Path) -> Result:
    """The runner on `folder` with the pixel extractor; its expected warnings (masked frames) are not shown,
    and the logger's level is restored for whoever logs next."""
    from extract.runner import run
    from extract.sources import discover
    log = logging.getLogger("extract")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return api(lambda: run(discover(folder), [PixelExtractor()], out, workers=0, progress=False))
    finally:
        log.setLevel(level)


def _run(tmp: Path, shared: Path, *args) -> Result:
    return cli(main, ["run", "--data", _data(shared), "--out", tmp / "c.h5", "--workers", "0", "--quiet", *args])


def _no_cache(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "c.h5").exists(), "a cache was written for a refused run"


# ----------------------------------------------------------------------------------------------- frames

def _frame_modes(tmp: Path) -> dict[str, np.ndarray]:
    """One folder per PNG/TIFF pixel mode, each frame's expected 8-bit RGB (None: must be masked)."""
    from PIL import Image
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (S, S), dtype=np.uint16)
    rgb = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    expected = {}
    frames = {
        "grey16": (Image.fromarray(g16), np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, 2)),
        "rgba": (Image.fromarray(np.dstack([rgb, np.full((S, S), 128, np.uint8)])), rgb),
        "grey8": (Image.fromarray(rgb[..., 0]), np.repeat(rgb[..., :1], 3, 2)),
        "palette": (Image.fromarray(rgb).quantize(16), None),
        "float": (Image.fromarray(g16.astype(np.float32) / 65535), "masked"),
    }
    frames["palette"] = (frames["palette"][0], np.asarray(frames["palette"][0].convert("RGB")))
    for name, (im, exp) in frames.items():
        (tmp / "modes" / name).mkdir(parents=True)
        im.save(tmp / "modes" / name / ("1.tif" if name == "float" else "1.png"))
        expected[name] = exp
    # 16-bit RGB PNG (PIL cannot write it: OpenCV can, BGR order)
    import cv2
    c16 = rng.integers(0, 65536, (S, S, 3), dtype=np.uint16)
    (tmp / "modes" / "rgb16").mkdir()
    cv2.imwrite(str(tmp / "modes" / "rgb16" / "1.png"), c16[..., ::-1])
    expected["rgb16"] = (c16 >> 8).astype(np.uint8)
    return expected


def _run_modes(tmp: Path, shared: Path) -> Result:
    np.savez(tmp / "expected.npz", **{k: (v if isinstance(v, np.ndarray) else np.zeros(0)) for k, v in
                                      _frame_modes(tmp).items()})
    return _quiet_run(tmp / "modes", tmp / "c.h5")


def _check_modes(tmp: Path, shared: Path, res: Result) -> None:
    exp = dict(np.load(tmp / "expected.npz"))
    with FeatureStore(tmp / "c.h5") as st:
        for v, e in exp.items():
            blk = st.read([v], ["pix"])
            face = bool(blk.index["face"][0])
            if e.size == 0:
                assert not face, f"{v}: a frame with no 8-bit scale was fed to the model"
            else:
                assert face, f"{v}: usable frame masked"
                got = blk.arrays["pix/embedding"][0].reshape(S, S, 3)
                np.testing.assert_array_equal(got, e.astype(np.float32), err_msg=f"{v}: wrong pixels")


def _corrupt_frame(tmp: Path, shared: Path) -> Result:
    d = tmp / "f" / "v"
    d.mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (S, S), (9, 9, 9)).save(d / "1.png")
    (d / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return _quiet_run(tmp / "f", tmp / "c.h5")


def _check_corrupt(tmp: Path, shared: Path, res: Result) -> None:
    with FeatureStore(tmp / "c.h5") as st:
        assert st.read(["v"], ["pix"]).index["face"].tolist() == [True, False]


# ------------------------------------------------------------------------------------------------- specs

def _exported_classes(tmp: Path, shared: Path) -> Result:
    return _run(tmp, shared, "--extractors", f"exported:{_tiny_exported(shared)}:size={S}:classes=a,b,c:name=m")


def _check_classes(tmp: Path, shared: Path, res: Result) -> None:
    with FeatureStore(tmp / "c.h5") as st:
        assert st.info("m").extra["class_names"] == ["a", "b", "c"]


def _resnet_allow_pickle(tmp: Path, shared: Path) -> Result:
    return _run(tmp, shared, "--extractors", f"resnet18_msceleb:{_resnet18_with_objects(shared)}",
                "--allow-pickle", "--limit-videos", "1")


def _check_resnet(tmp: Path, shared: Path, res: Result) -> None:
    with FeatureStore(tmp / "c.h5") as st:
        assert st.videos("resnet18_msceleb") == ["v1"] and st.info("resnet18_msceleb").outputs == {"embedding": 512}


def _empty_ckpt(tmp: Path) -> Path:
    (tmp / "empty.pt").write_bytes(b"")
    return tmp / "empty.pt"


def _truncated_ckpt(tmp: Path) -> Path:
    import torch
    p = tmp / "half.pt"
    torch.save({"w": torch.zeros(1000)}, p)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])
    return p


# ---------------------------------------------------------------------------------------------- openface

def _of_header(version: str) -> list[str]:
    """FeatureExtraction's header with -aus -pose -gaze only (2.0.x: no face_id; 2.2.0: face_id)."""
    from extract.openface import AU_C, AU_R
    return (["frame"] + (["face_id"] if version != "2.0.0" else []) + ["timestamp", "confidence", "success"]
            + ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x",
               "gaze_angle_y"] + [f"eye_lmk_{a}_{i}" for a in "xy" for i in range(56)]
            + ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
            + [f"{a}_r" for a in sorted(AU_R)] + [f"{a}_c" for a in sorted(AU_C)])


def _of_csv(path: Path, version: str = "2.2.0", sep: str = ", ", drop: tuple = (), cell: tuple | None = None,
            rows: int = 3) -> Path:
    cols = [c for c in _of_header(version) if c not in drop]
    lines = [sep.join(cols)]
    for r in range(rows):
        vals = {"frame": r + 1, "face_id": 0, "timestamp": r / 30, "confidence": 0.9, "success": 1}
        lines.append(sep.join(str(vals.get(c, round(0.1 * (r + 1), 2))) for c in cols))
    if cell is not None:
        line, col, value = cell
        parts = lines[line - 1].split(sep)
        parts[cols.index(col)] = value
        lines[line - 1] = sep.join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _of(tmp: Path, csv: Path | str, *args) -> Result:
    return cli(main, ["openface", csv, "--out", tmp / "c.h5", *args])


def _check_of(tmp: Path, shared: Path, res: Result) -> None:
    with FeatureStore(tmp / "c.h5") as st:
        blk = st.read(["vid"], ["openface"])
        assert blk.index["frame"].tolist() == [1, 2, 3] and blk.index["face"].all()
        np.testing.assert_allclose(blk.arrays["openface/embedding"][1], 0.2)


def _check_of_pose(tmp: Path, shared: Path, res: Result) -> None:
    with FeatureStore(tmp / "c.h5") as st:
        assert st.info("openface_pose_gaze").outputs == {"embedding": 8}


CASES = [
    # -- numeric options
    Case("extract run", "--limit-videos -1", lambda tmp, sh: _run(tmp, sh, "--limit-videos", "-1"),
         expect="--limit-videos: must be >= 1", check=_no_cache, defect="silent"),
    Case("extract run", "--limit-videos 0", lambda tmp, sh: _run(tmp, sh, "--limit-videos", "0"),
         expect="--limit-videos: must be >= 1", check=_no_cache, defect="silent"),
    Case("extract run", "--workers -1", lambda tmp, sh: _run(tmp, sh, "--workers", "-1"),
         expect="--workers: must be >= 0", check=_no_cache, defect="traceback"),
    Case("extract run", "--batch 0", lambda tmp, sh: _run(tmp, sh, "--batch", "0"), expect="--batch"),
    Case("extract run", "--batch -1", lambda tmp, sh: _run(tmp, sh, "--batch", "-1"), expect="--batch"),
    Case("extract run", "--batch x", lambda tmp, sh: _run(tmp, sh, "--batch", "x"), expect="--batch"),
    Case("extract run", "--shard 3/2", lambda tmp, sh: _run(tmp, sh, "--shard", "3/2"), expect="--shard"),
    Case("extract run", "--shard x", lambda tmp, sh: _run(tmp, sh, "--shard", "x"), expect="--shard"),
    Case("extract run", "--shard 0/2", lambda tmp, sh: _run(tmp, sh, "--shard", "0/2"), expect="--shard"),
    Case("extract run", "--threads -2", lambda tmp, sh: _run(tmp, sh, "--threads", "-2"),
         expect="--threads: must be >= 0", defect="traceback"),
    Case("extract run", "--smooth 1.5 (box smoothing must be in [0, 1))",
         lambda tmp, sh: _run(tmp, sh, "--smooth", "1.5"), expect="--smooth", defect="silent"),
    # -- data and frames
    Case("extract run", "missing data folder",
         lambda tmp, sh: cli(main, ["run", "--data", tmp / "nope", "--out", tmp / "c.h5"]),
         expect="data folder does not exist", check=_no_cache),
    Case("extract run", "frame folder with no images",
         lambda tmp, sh: ((tmp / "d" / "v").mkdir(parents=True), (tmp / "d" / "v" / "notes.txt").write_text("x"),
                          cli(main, ["run", "--data", tmp / "d", "--out", tmp / "c.h5"]))[-1],
         expect="no videos found", check=_no_cache),
    Case("extract run", "frames in every pixel mode (16-bit grey and RGB, RGBA, palette, grey; float masked)",
         _run_modes, expect=None, check=_check_modes, defect="silent"),
    Case("extract run", "undecodable PNG among good frames (masked, run goes on)", _corrupt_frame, expect=None,
         check=_check_corrupt),
    # -- extractor specs
    Case("extract run", "unknown extractor name", lambda tmp, sh: _run(tmp, sh, "--extractors", "nosuch"),
         expect="unknown extractor 'nosuch'", check=_no_cache),
    Case("extract run", "unknown spec option",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"exported:{_tiny_exported(sh)}:size={S}:colour=1"),
         expect="unknown option(s) colour", check=_no_cache),
    Case("extract run", "class names with commas in a spec (classes=a,b,c)", _exported_classes, expect=None,
         check=_check_classes, defect="misleading"),
    Case("extract run", "fewer class names than logits",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"exported:{_tiny_exported(sh)}:size={S}:classes=a,b"),
         expect="2 class names but the model gives 3 logits", check=_no_cache, defect="misleading"),
    Case("extract run", "unbalanced quote in --extractors",
         lambda tmp, sh: _run(tmp, sh, "--extractors", 'exported:m.pt2:classes="a,b'),
         expect="unbalanced double quote"),
    Case("extract run", "checkpoint of another architecture",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"timm:test_efficientnet:{_timm_weights(sh, 'test_resnet')}"),
         expect="weights do not fit test_efficientnet", check=_no_cache),
    Case("extract run", "enet checkpoint with the wrong class count",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"enet_b0_8_va_mtl:{_timm_weights(sh, 'test_efficientnet')}"),
         expect="expected a classifier with 10 outputs", check=_no_cache),
    # -- checkpoints
    Case("extract run", "checkpoint pickling os.system, no --allow-pickle",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"timm:test_efficientnet:{_evil(tmp)}"),
         expect="posix.system", check=_not_run, defect="misleading"),
    Case("extract run", "resnet18_msceleb checkpoint holding objects, with --allow-pickle", _resnet_allow_pickle,
         expect=None, check=_check_resnet, defect="misleading"),
    Case("extract run", "resnet18_msceleb checkpoint holding objects, no --allow-pickle",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"resnet18_msceleb:{_resnet18_with_objects(sh)}"),
         expect="argparse.Namespace", check=_no_cache),
    Case("extract run", "zero-byte checkpoint",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"enet_b0_8_va_mtl:{_empty_ckpt(tmp)}"),
         expect="empty.pt: checkpoint is an empty file (0 bytes)", check=_no_cache, defect="misleading"),
    Case("extract run", "truncated checkpoint",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"timm:test_efficientnet:{_truncated_ckpt(tmp)}"),
         expect="damaged torch zip checkpoint (truncated or corrupted)", check=_no_cache),
    Case("extract run", "checkpoint not found",
         lambda tmp, sh: _run(tmp, sh, "--extractors", f"timm:test_efficientnet:{tmp / 'none.safetensors'}"),
         expect="none.safetensors: checkpoint not found", check=_no_cache),
    # -- convert
    Case("extract convert", "checkpoint pickling os.system, no --allow-pickle",
         lambda tmp, sh: cli(main, ["convert", _evil(tmp), tmp / "out.safetensors"]),
         expect="posix.system", check=_not_run, defect="misleading"),
    Case("extract convert", "zero-byte checkpoint",
         lambda tmp, sh: cli(main, ["convert", _empty_ckpt(tmp), tmp / "out.safetensors"]),
         expect="empty file (0 bytes)", defect="misleading"),
    Case("extract convert", "output exists",
         lambda tmp, sh: ((tmp / "o.safetensors").write_bytes(b"keep"),
                          cli(main, ["convert", _timm_weights(sh, "test_resnet"), tmp / "o.safetensors"]))[-1],
         expect="output exists; pass --force",
         check=lambda tmp, sh, res: (tmp / "o.safetensors").read_bytes() == b"keep" or (_ for _ in ()).throw(
             AssertionError("existing output replaced"))),
    Case("extract convert", "output not .safetensors",
         lambda tmp, sh: cli(main, ["convert", _timm_weights(sh, "test_resnet"), tmp / "o.pt"]),
         expect="output must end in .safetensors"),
    # -- openface
    Case("extract openface", "OpenFace 2.0.x CSV (no face_id, spaces after commas)",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", "2.0.0", ", ")), expect=None, check=_check_of,
         defect="misleading"),
    Case("extract openface", "OpenFace 2.2.0 CSV (face_id, no spaces)",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", "2.2.0", ",")), expect=None, check=_check_of),
    Case("extract openface", "--pose-gaze from a 2.0.x CSV",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", "2.0.0"), "--pose-gaze"), expect=None,
         check=_check_of_pose),          # a new option: no defect before
    Case("extract openface", "missing AU column",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", drop=("AU12_r",))),
         expect="vid.csv:1: missing OpenFace column(s): AU12_r", check=_no_cache),
    Case("extract openface", "non-numeric cell",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", cell=(3, "AU04_r", "n/a"))),
         expect="vid.csv:3: column 'AU04_r': non-numeric value 'n/a'", check=_no_cache),
    Case("extract openface", "empty CSV (0 bytes)",
         lambda tmp, sh: ((tmp / "vid.csv").write_bytes(b""), _of(tmp, tmp / "vid.csv"))[-1],
         expect="vid.csv:1: not an OpenFace CSV", check=_no_cache),
    Case("extract openface", "header only, no rows",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", rows=0)), expect="vid.csv:2: no data rows",
         check=_no_cache, defect="silent"),
    Case("extract openface", "FaceLandmarkImg per-image CSV",
         lambda tmp, sh: ((tmp / "img.csv").write_text("face, confidence, AU01_r\n0, 0.9, 1.2\n"),
                          _of(tmp, tmp / "img.csv"))[-1], expect="per-image CSV"),
    Case("extract openface", "--threshold 2 (a confidence is in [0, 1])",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv"), "--threshold", "2"), expect="--threshold",
         check=_no_cache, defect="silent"),
    Case("extract openface", "--pose-gaze on a CSV without pose columns",
         lambda tmp, sh: _of(tmp, _of_csv(tmp / "vid.csv", drop=("pose_Rx", "pose_Ry")), "--pose-gaze"),
         expect="missing OpenFace column(s): pose_Rx, pose_Ry", check=_no_cache),
    Case("extract openface", "CSV path does not exist",
         lambda tmp, sh: _of(tmp, tmp / "none.csv"), expect="none.csv: no such file or folder", check=_no_cache),
]
