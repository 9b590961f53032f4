"""Run every benchmark under bench/ and print one table of ratios measured side by side in the same run.

    python bench/run.py [--quick] [--only store,postprocess] [--out bench/results/latest.md (quick: quick.md)]

Each bench/bench_<area>.py has `run(quick: bool = False) -> list[dict]` returning rows with keys
benchmark, measured, baseline, ratio, goal, ok; an area that raises or returns no rows fails the run (exit 1).
--quick is a smoke run: the same code paths on small sizes (its numbers say nothing about the goals). Scripts
that are not areas (gpu_extract.py, run by gpu.sh on a GPU machine; heads_table.py) are named otherwise.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import torch
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch missing or broken: the table still prints
        dev = "torch unavailable"
    return f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}), {dev}, Python {platform.python_version()}"


def table(rows: list[dict]) -> str:
    head = "| area | benchmark | measured | baseline | ratio | goal | ok |\n|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r.get('area', '')} | {r['benchmark']} | {r['measured']} | {r['baseline']} | "
        f"{r['ratio']:.2f} | {r['goal']} | {'yes' if r['ok'] else 'NO'} |\n" for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the same code paths")
    ap.add_argument("--only", default="", help="comma-separated areas, e.g. store,postprocess")
    ap.add_argument("--out", default=None, help="default bench/results/latest.md (with --quick: quick.md)")
    a = ap.parse_args(argv)
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    rows, failed = [], []
    for path in sorted(HERE.glob("bench_*.py")):
        area = path.stem.removeprefix("bench_")
        if only and area not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        t0 = time.perf_counter()
        print(f"== {area} ...", flush=True)
        try:
            spec.loader.exec_module(mod)
            got = mod.run(quick=a.quick)
            if not got:
                raise RuntimeError(f"bench_{area}.run() returned no rows")
            rows.extend({"area": area, **r} for r in got)
        except Exception:
            traceback.print_exc()
            failed.append(area)
        print(f"== {area} done in {time.perf_counter() - t0:.0f} s", flush=True)
    out = f"Machine: {machine()}{' (quick sizes)' if a.quick else ''}\n\n{table(rows)}"
    if failed:
        out += f"\nFailed to run: {', '.join(failed)}\n"
    print("\n" + out)
    dest = Path(a.out) if a.out else HERE / "results" / ("quick.md" if a.quick else "latest.md")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
