"""One error type for bad input, so command-line tools can print one line and exit non-zero."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


class InputError(ValueError):
    """Bad input from the user: a file, a line, a value. The message is one line and names the file."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{os.fspath(path)}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else os.fspath(path)
        self.line = line


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Attach `path` to an OSError raised inside that names no file (a failed write() or flush() says only
    "[Errno 28] No space left on device"), so the one error line says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = os.fspath(path)
        raise


def os_error_text(e: OSError) -> str:
    """`<file>: <reason>` for an OSError (`<file> -> <file2>: <reason>` for a rename); the reason alone when it
    names no file."""
    if getattr(e, "names_its_file", False):     # features.outputs.OutputError: "could not write <file>: <reason>"
        return str(e)
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return reason if e.errno is None else f"{reason} (errno {e.errno})"
    where = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes, os.PathLike)) else str(e.filename)
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    return f"{where}: {reason}"
