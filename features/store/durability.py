"""Crash safety: a file becomes visible only whole (fsync, then an atomic rename, then fsync of the folder),
Ctrl-C is held while a commit is renamed and indexed, and a write error is one line naming both files."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

from ..errors import InputError


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def atomic_replace(tmp: Path, final: Path) -> None:
    """Move the finished `tmp` over `final`: its data on disk first, then the rename (atomic), then the rename
    itself made durable."""
    _fsync(tmp)
    _rename(tmp, final)
    try:  # make the rename itself durable
        dfd = os.open(final.parent, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


@contextlib.contextmanager
def sigint_deferred():
    """Hold Ctrl-C (SIGINT) until the block is done, then deliver it: a commit is renamed *and* indexed, or not
    renamed at all. Only the main thread can install handlers; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            if old is signal.default_int_handler or old is None:
                raise KeyboardInterrupt
            if callable(old):
                old(signal.SIGINT, None)
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def io_error(e: OSError, what: str, tmp: Path, where: Path, after: str) -> InputError:
    """An OSError while writing `tmp` as one line naming both files (h5py's own text names neither)."""
    reason = os.strerror(e.errno) if e.errno else (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return InputError(f"{what} ({reason}, writing {tmp}); {after}", where)
