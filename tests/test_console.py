"""Quiet consoles: a default command prints its own lines only (no TensorFlow / absl / onnxruntime start-up or
fallback noise); -v shows the dependencies' lines; a runtime-auto fallback is one info line."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import quiet

REPO = Path(__file__).resolve().parents[1]
# what TensorFlow, absl/gRPC, CUDA plugins and onnxruntime print on their own
NOISE = ("oneDNN", "I0000", "E:onnxruntime", "cuda", "TF-TRT", "absl")


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(p.lower() in line.lower() for p in NOISE)]


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in quiet.ENV}     # as a user's shell would have it
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.fixture
def verbose_after():
    """Run a test in verbose mode and restore the default (quiet) afterwards."""
    yield quiet.configure
    quiet.configure(False)


# -- the pieces ----------------------------------------------------------------------------------------------
def test_native_lines_are_filtered_and_real_ones_kept(capfd, verbose_after):
    noise = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             b"I0000 00:00:1796531328.714011    8459 port.cc:153] oneDNN custom operations are on.\n"
             b"E0000 00:00:1796531328.1 1 cuda_dnn.cc:8310] Unable to register cuDNN factory: one is already\n")
    real = b"E0000 00:00:1796531328.2 1 session.cc:12] out of memory\nsome library's own line\n"
    with quiet.native_stderr():
        os.write(2, noise + real)
    assert capfd.readouterr().err == real.decode()
    with pytest.raises(RuntimeError, match="boom"), quiet.native_stderr():     # a failure: its own lines kept
        os.write(2, noise + real)
        raise RuntimeError("boom")
    assert capfd.readouterr().err == real.decode()
    verbose_after(True)
    with quiet.native_stderr():
        os.write(2, noise)
    assert capfd.readouterr().err == noise.decode()


def test_quiet_sets_defaults_and_verbose_leaves_the_environment_alone(monkeypatch, verbose_after):
    for k in quiet.ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")                  # the user's own choice wins
    verbose_after(True)
    assert not [k for k in quiet.ENV if k in os.environ and k != "GRPC_VERBOSITY"]
    assert quiet.ort_severity() == 2
    quiet.configure(False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["GRPC_VERBOSITY"] == "DEBUG"
    assert logging.getLogger("absl").level == logging.ERROR and quiet.ort_severity() == 4


def _static_batch_torch():
    """A torch extractor that runs any batch in torch but whose ONNX export hard-codes the batch size of the
    trace (an int() of a shape): the twin fails inside onnxruntime on the probe batch."""
    import torch

    from extract.base import TorchExtractor
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x):
            return {"embedding": self.conv(x).mean((2, 3)).reshape(int(x.shape[0]), 4)}
    return TorchExtractor("static", Net(), 16, {"embedding": 4}, checkpoint_sha256="c" * 64)


@pytest.mark.parametrize("verbose", [False, True])
def test_runtime_auto_fallback_is_one_info_line(verbose, capfd, caplog, verbose_after):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from extract import factory
    from extract.base import TorchExtractor
    verbose_after(verbose)
    with caplog.at_level(logging.DEBUG, logger="extract"):
        ext = factory.apply_runtime(_static_batch_torch(), "auto")
    assert isinstance(ext, TorchExtractor) and "torch" in ext.extra["runtime_choice"]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and info[0].startswith("static: runtime auto: onnxruntime could not run this model (")
    assert info[0].endswith("); using torch") and "Reshape" in info[0] and "onnxruntime_src" not in info[0]
    err = capfd.readouterr().err
    assert ("E:onnxruntime" in err) == verbose, err          # onnxruntime's own red error line only with -v


# -- the commands, end to end (a subprocess each, as a user runs them) ----------------------------------------
@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A default `extract run` (fer, the offline default) on a small synthetic Aff-Wild2 set."""
    from features.synthetic import make_affwild
    root = tmp_path_factory.mktemp("console")
    make_affwild(root / "data", n_train=2, n_val=1, n_frames=10, size=32, seed=1)
    r = _run("extract", "run", "--data", str(root / "data"), "--cache", str(root / "f.h5"))
    return root, r


@pytest.mark.slow    # a TensorFlow (or torch export) start-up per command: > 20 s on 2 cores
def test_default_extract_run_prints_its_summary_and_no_library_noise(extracted):
    root, r = extracted
    assert r.returncode == 0, r.stderr[-3000:]
    assert not _noise(r.stdout + r.stderr), _noise(r.stdout + r.stderr)
    assert r.stdout.startswith("extract: ") and r.stdout.count("\n") == 1, r.stdout     # the summary, on stdout
    assert "extract: " not in r.stderr


@pytest.mark.slow    # a TensorFlow (or torch export) start-up per command: > 20 s on 2 cores
def test_verbose_extract_run_shows_the_libraries_lines(extracted, tmp_path):
    """-v leaves the dependencies alone: onnxruntime's own error line of a failing twin is shown, and debug
    lines are on. (TensorFlow's start-up lines depend on its build; this one is not asserted.)"""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import torch
    root, _ = extracted

    class Static(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))
    torch.export.save(torch.export.export(Static(), (torch.rand(2, 3, 16, 16),)), str(tmp_path / "m.pt2"))
    args = ("extract", "run", "--data", str(root / "data"), "--extractors", f"exported:{tmp_path / 'm.pt2'}:size=16",
            "--limit-videos", "1", "--workers", "0", "--quiet")
    quiet_run = _run(*args, "--cache", str(tmp_path / "q.h5"))
    loud = _run(*args, "--cache", str(tmp_path / "v.h5"), "-v")
    assert quiet_run.returncode == 0 and loud.returncode == 0, quiet_run.stderr[-2000:] + loud.stderr[-2000:]
    assert not _noise(quiet_run.stderr), quiet_run.stderr
    lines = quiet_run.stderr.strip().splitlines()
    assert len(lines) == 1 and "runtime auto: onnxruntime could not run this model" in lines[0], lines
    assert "E:onnxruntime" in loud.stderr and "DEBUG " in loud.stderr, loud.stderr[-2000:]


@pytest.mark.slow    # a TensorFlow (or torch export) start-up per command: > 20 s on 2 cores
def test_classify_train_and_predict_print_no_library_noise(extracted, tmp_path):
    root, r = extracted
    assert r.returncode == 0, r.stderr[-3000:]
    t = _run("classify", "train", "--task", "expr", "--cache", str(root / "f.h5"), "--data", str(root / "data"),
             "--heads", "logits", "--k", "0", "--runs-dir", str(tmp_path / "runs"))
    assert t.returncode == 0, t.stderr[-3000:]
    assert not _noise(t.stdout + t.stderr), _noise(t.stdout + t.stderr)
    p = _run("classify", "predict", "--pretrained", "fer", "--cache", str(root / "f.h5"), "--fps", "30",
             "--timelines", "0", "--out", str(tmp_path / "p.csv"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert not _noise(p.stdout + p.stderr), _noise(p.stdout + p.stderr)
    assert p.stdout.strip().splitlines()[-1].startswith("predict: wrote ")
