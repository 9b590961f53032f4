"""Paths inside folders this process did not write (run folders, saved heads): a name read from such a folder's
files is one plain folder or file name, and nothing reached through it leads outside the folder, by `..`, an
absolute path or a symlink."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


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
