"""Quiet consoles: the dependencies' own chatter stays off the console unless `-v` asks for it.

TensorFlow prints `oneDNN custom operations are on...` and absl's `WARNING: All log messages before
absl::InitializeLog()...` while it loads (TensorFlow 2.21 writes these through absl before anything reads
TF_CPP_MIN_LOG_LEVEL, so the variable alone does not stop them), CUDA builds add plugin-registration lines, and
onnxruntime logs `[E:onnxruntime...]` in red for an error it also raises. A user reads a failure where there is
none. So, in one place:

- `configure(verbose)`: called by every command line (extract, classify, postprocess) once its arguments are
  parsed, before TensorFlow or onnxruntime is imported. Quiet (the default): the log-level variables below
  (`setdefault`: a value the user exported wins), absl's and TensorFlow's Python loggers at ERROR, and the
  deprecation warnings of the deep-learning libraries off. Verbose: nothing is touched.
- `native_stderr()`: around TensorFlow's import and a Keras model load, native lines on file descriptor 2 are
  captured and every line that is not known noise is written back (a real message is never lost).
- `ort_severity()`: the onnxruntime log level for new sessions (FATAL when quiet: its errors arrive as
  exceptions, which the callers report).

Library use (a notebook) is quiet as well unless `configure(verbose=True)` was called.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator

# Log-level variables read by the native libraries when they load (setdefault: the user's own value wins).
ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",    # TensorFlow/XLA C++ INFO, WARNING and ERROR lines (errors also raise in Python)
    "TF_CPP_MIN_VLOG_LEVEL": "0",
    "GRPC_VERBOSITY": "ERROR",      # gRPC's I0000 ... lines
    "GLOG_minloglevel": "2",        # glog-based libraries
}
# Python loggers of libraries that log warnings meant for their developers.
LIBRARY_LOGGERS = ("absl", "tensorflow", "h5py._conv")
# Deprecation and future warnings raised inside these libraries concern their own code, not the user's.
WARNING_MODULES = r"(absl|google\.protobuf|h5py|keras|ml_dtypes|onnx|onnxruntime|tensorflow|tf_keras|timm|torch)(\.|$)"

# Native lines that are noise: absl/glog INFO and WARNING lines (`I0000 00:00:... file.cc:12] ...`), absl's
# pre-initialisation notice, TensorFlow's CPU-feature advice and the CUDA plugin/device registration errors a
# CUDA build prints on every start (or on a machine without a GPU).
_NOISE = re.compile("|".join((
    r"^[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ",
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"^E\d{4} .*(Unable to register cu\w+ factory|computation placer already registered|failed call to cuInit"
    r"|Could not find (cuda drivers|TensorRT))",
    r"^\s*$",
)))

_verbose = False


def configure(verbose: bool = False) -> None:
    """Quiet (default) or verbose console for this process; call before TensorFlow/onnxruntime load."""
    global _verbose
    _verbose = bool(verbose)
    if _verbose:
        return
    quiet_environment()
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=WARNING_MODULES)


def is_verbose() -> bool:
    return _verbose


def quiet_environment() -> None:
    """The log-level variables (unless verbose); run again just before a native library loads, so library
    use without a command line is quiet too."""
    if not _verbose:
        for k, v in ENV.items():
            os.environ.setdefault(k, v)


def ort_severity() -> int:
    """onnxruntime's `log_severity_level` for a session: 4 (FATAL only) when quiet, 2 (its default) when verbose."""
    return 2 if _verbose else 4


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


@contextlib.contextmanager
def native_stderr() -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 in this block; afterwards write back every line that
    is not known noise, whether the block succeeded or raised (an exception carries its own message, and a
    one-line error stays one line). Verbose: nothing is captured."""
    if _verbose:
        yield
        return
    fd = 2                                            # native code writes here, whatever sys.stderr is
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        _flush()
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            keep = [ln for ln in text.splitlines() if not is_noise(ln)]
            if keep:
                os.write(fd, ("\n".join(keep) + "\n").encode())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
