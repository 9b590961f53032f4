"""What the three command lines (`python -m extract|classify|postprocess`) share: the console set-up and one
error wrapper, so bad input and interruptions end the same way everywhere.

The logging convention: library code logs with ``logging.getLogger(__name__)``; a command calls `setup_console`
(its `-v/--verbose` flag) once its arguments are parsed; its final summary or result line goes to stdout, every
other line to stderr through logging. Dependencies' own chatter is off unless -v (features.quiet).

    error: <file>[:<line>]: <what is wrong and what to do>     exit 2   (InputError, OSError)
    error: interrupted...                                      exit 130 (Ctrl-C)
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from . import quiet
from .errors import InputError, os_error_text

INTERRUPTED = "interrupted"
PACKAGES = ("features", "extract", "classify", "postprocess")


def setup_logging(level: int = logging.INFO) -> None:
    """One format for every command's log lines (stderr): our packages at `level`, other libraries' loggers at
    WARNING (their INFO chatter is not ours to print). A second call changes nothing."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in PACKAGES:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(level)


def add_verbose(ap: argparse.ArgumentParser) -> None:
    """The -v/--verbose flag every command takes (see setup_console)."""
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="debug messages, and the dependencies' own log lines (TensorFlow, absl, onnxruntime)")


def setup_console(verbose: bool = False) -> None:
    """Quiet dependencies (features.quiet) and our log lines at INFO; verbose: their lines left on and ours at
    DEBUG. Call before TensorFlow or onnxruntime is imported."""
    quiet.configure(verbose)
    setup_logging(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        for name in PACKAGES:
            logging.getLogger(name).setLevel(logging.DEBUG)


def error_line(e: BaseException) -> str:
    """The one line printed for an error: its first line (a multi-line library message is cut there); an
    OSError as `<file>: <reason>`, so a full disk or a missing folder says which file."""
    text = (os_error_text(e) if isinstance(e, OSError) and not isinstance(e, InputError) else str(e)).strip()
    return f"error: {text.splitlines()[0] if text else type(e).__name__}"


def run_main(fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             interrupted: str = INTERRUPTED) -> int:
    """Call `fn(argv)` (argv defaults to sys.argv[1:]) and turn its failures into exit codes: InputError and
    OSError -> one `error:` line on stderr, exit 2; KeyboardInterrupt -> `error: <interrupted>`, exit 130.
    argparse's own usage errors (SystemExit 2) pass through unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(fn(argv) or 0)
    except (InputError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
