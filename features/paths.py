"""What a path given on a command line is, in words, so that a device or a pipe is not reported as missing.

``/dev/zero`` or a FIFO exists, but is neither a regular file nor a folder: reading it never ends (or blocks until
a writer appears), and "does not exist" sends the user looking in the wrong place.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def path_kind(path: str | os.PathLike) -> str:
    """"a regular file", "a folder", "a character device", "a named pipe (FIFO)", ..., "a broken symbolic link"
    or "missing" (symbolic links are followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else "missing"
    except NotADirectoryError:
        return "missing"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def check_file_or_folder(path: str | os.PathLike, what: str, missing: str) -> Path:
    """`path` when it is a regular file or a folder; else one InputError naming it: `missing` when it does not
    exist, "<what> is a character device (not a regular file or folder)" and the like otherwise."""
    kind = path_kind(path)
    if kind == "missing":
        raise InputError(missing, path)
    if kind not in ("a regular file", "a folder"):
        raise InputError(f"{what} is {kind}, not a regular file or folder", path)
    return Path(path)
