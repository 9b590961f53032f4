"""Paths given by users or read from files this process did not write.

Run folders and saved heads: a name read from such a folder's files is one plain folder or file name, and nothing
reached through it leads outside the folder, by `..`, an absolute path or a symlink (`plain_name`, `inside`).
Command-line paths: ``/dev/zero`` or a FIFO exists, but is neither a regular file nor a folder: reading it never
ends (or blocks until a writer appears), and "does not exist" sends the user looking in the wrong place
(`path_kind`, `check_file_or_folder`).
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


def plain_name(name: object, what: str, where: str | os.PathLike | None = None) -> str:
    """`name` as one path component (not empty, not `.` / `..`, no separator, no NUL), else one line naming
    `where` (the file the name came from)."""
    if not isinstance(name, str):
        raise InputError(f"{what} must be a name (a string), got {name!r}", where)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise InputError(f"{what} {name!r} is not a plain name inside the folder; refusing a path that could "
                         f"lead out of it", where)
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike, where: str | os.PathLike | None = None,
           file: bool = False) -> Path:
    """`path` (which need not exist) when it resolves inside `root`; a symlink that leads elsewhere (or a `..`)
    is refused with one line naming `path` (or `where`). `root` itself may be a symlink (`runs/expr/latest`).
    With `file`, an existing `path` must be a regular file (a FIFO or a device would block or never end)."""
    path = Path(path)
    try:
        top = Path(root).resolve()
        real = path.resolve()
    except (OSError, RuntimeError) as e:      # a symlink loop
        raise InputError(f"cannot resolve it ({e})", where or path) from None
    if real != top and top not in real.parents:
        how = f"a symlink to {os.readlink(path)}" if path.is_symlink() else f"it resolves to {real}"
        raise InputError(f"leads outside {os.fspath(root)} ({how}); refusing to read it", where or path)
    if file and path.exists() and not path.is_file():
        raise InputError("not a regular file", path)
    return path
