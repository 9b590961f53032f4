"""One error type for bad input, so command-line tools can print one line and exit non-zero."""
from __future__ import annotations

import os


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
