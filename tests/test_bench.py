"""`bench/run.py --quick` (`make bench-quick`): every benchmark area runs its code paths on small sizes, exits 0
and puts its rows in the one table."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_runs_every_area_into_the_table(tmp_path):
    out = tmp_path / "quick.md"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    text = out.read_text()
    assert "(quick sizes)" in text.splitlines()[0] and "Failed to run" not in text
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| area ")]
    areas = {p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py")}
    assert {"classify", "extract", "faces", "heads", "postprocess", "predict", "store"} <= areas
    assert {row[0] for row in rows} == areas                 # every area measured something
    for area, benchmark, measured, baseline, ratio, goal, ok in rows:
        assert benchmark and measured and goal and ok in ("yes", "NO"), (area, benchmark)
        float(ratio)                                          # a number (inf or nan allowed), not a placeholder
