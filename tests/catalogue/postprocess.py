"""Bad input to `python -m postprocess sweep|submit|validate`."""
from __future__ import annotations

from postprocess.cli import main

from . import Case, cli

CASES = [
    Case("postprocess sweep", "run directory without scores.h5",
         lambda tmp, shared: cli(main, ["sweep", "--run", tmp]), expect="no scores.h5"),
]
