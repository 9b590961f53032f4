"""`python -m postprocess` on a small scores.h5 made here: sweep table, PNG and JSON; submit; validate; errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.errors import InputError
from features.tasks import AU, EXPR, VA
from postprocess.cli import main, parse_k
from postprocess.scores import save_scores

ROOT = Path(__file__).resolve().parents[1]


def _make_run(tmp_path, task, n_videos=8, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 90, n_videos)
    video = np.repeat([f"v{i}" for i in range(n_videos)], lengths)
    frame = np.concatenate([np.arange(1, n + 1) for n in lengths])
    n, c = len(video), task.n_outputs
    base = np.cumsum(rng.normal(size=(n, c)), axis=0) * 0.2
    noisy = base + rng.normal(size=(n, c)) * 1.5
    if task is VA:
        y, s = np.tanh(base).astype(np.float32), np.tanh(noisy)
    elif task is EXPR:
        y, s = base.argmax(1), np.exp(noisy) / np.exp(noisy).sum(1, keepdims=True)
    else:
        y, s = (base > 0).astype(np.int64), 1 / (1 + np.exp(-noisy))
    face = rng.random(n) > 0.1
    s[~face] = np.nan
    run = tmp_path / "runs" / task.name / "r1"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("keep me")
    save_scores(run / "scores.h5", "val", video, frame, s, y=y, face=face, attrs={"task": task.name})
    save_scores(run / "scores.h5", "test", video, frame, s, face=face, attrs={"task": task.name})
    samples = tmp_path / "samples.txt"
    samples.write_text("image_location\n" + "".join(f"{v}/{f:05d}.jpg\n" for v, f in zip(video, frame)))
    return run, samples


@pytest.mark.parametrize("task", [VA, EXPR, AU], ids=lambda t: t.name)
def test_sweep_submit_validate(tmp_path, capsys, task):
    run, samples = _make_run(tmp_path, task)
    assert main(["sweep", "--run", str(run), "--k", "0:30:3", "--cv", "3"]) == 0
    out = capsys.readouterr().out
    assert task.metric_name in out and "best shared k" in out and "cross-validated" in out
    cfg = json.loads((run / "postprocess.json").read_text())
    assert cfg["task"] == task.name and cfg["k"] in range(0, 31, 3) and cfg["k"] > 0
    assert (run / f"sweep_{task.name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "notes.txt").read_text() == "keep me"
    pngs = sorted((run / f"timelines_{task.name}").glob("*.png"))
    assert [p.stem for p in pngs] == [f"v{i}" for i in range(8)]          # one per video (8 <= default 12)
    assert len(cfg["per_output"]["k"]) == task.n_outputs
    if task is AU:
        assert "per-AU (k, threshold)" in out and len(cfg["thresholds"]) == 12
        assert set(cfg["per_output"]) >= {"k", "thresholds", "gain"}
    sub = tmp_path / f"{task.name}_sub.txt"
    assert main(["submit", "--run", str(run), "--samples", str(samples), "--out", str(sub)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["validate", str(sub), "--samples", str(samples), "--task", task.name]) == 0
    assert main(["submit", "--run", str(run), "--samples", str(samples), "--out", str(sub)]) == 2
    assert "output exists" in capsys.readouterr().err
    # rewriting its own json is fine; a second sweep replaces it
    assert main(["sweep", "--run", str(run), "--k", "0,5", "--cv", "0", "--per-output", "--timelines", "2"]) == 0
    cfg = json.loads((run / "postprocess.json").read_text())
    assert cfg["ks"] == [0, 5, 2] and cfg["use_per_output"] and set(cfg["per_output"]["k"]) <= {0, 5}
    assert "2 timelines" in capsys.readouterr().out
    sub2 = tmp_path / f"{task.name}_sub_per_output.txt"
    assert main(["submit", "--run", str(run), "--samples", str(samples), "--out", str(sub2)]) == 0
    assert main(["validate", str(sub2), "--samples", str(samples), "--task", task.name]) == 0


def test_validate_reports_problems(tmp_path, capsys):
    run, samples = _make_run(tmp_path, EXPR, n_videos=2)
    bad = tmp_path / "bad.txt"
    bad.write_text("image_location,Neutral\nv0/00001.jpg,3\n")
    assert main(["validate", str(bad), "--samples", str(samples), "--task", "expr"]) == 1
    res = capsys.readouterr()
    assert "bad.txt:1: header" in res.out and "missing rows for 'v0/00002.jpg' .. " in res.out
    assert "1 rows for" in res.out and "2 problem(s)" in res.out      # the header, one run of missing rows
    err = res.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}:1: header should be") and "2 problems" in err[0]


def test_parse_k():
    assert list(parse_k("0:4")) == [0, 1, 2, 3, 4]
    assert list(parse_k("0:10:5")) == [0, 5, 10]
    assert parse_k("50,0,5,5") == [0, 5, 50]
    huge = parse_k("0:1000000000")          # a lazy range: nothing is listed before the data clips it
    assert isinstance(huge, range) and len(huge) == 10**9 + 1
    for bad, msg in [("-1:5", "non-negative"), ("0:2.5", "not an integer"), ("a", "not an integer"),
                     ("5:1", "below start"), ("0:5:0", "step"), ("1:2:3:4", "a:b"), ("", "empty"),
                     ("0:3000000000", "above 2147483647"), ("99999999999999999999", "above 2147483647")]:
        with pytest.raises(InputError, match=msg):
            parse_k(bad)


def test_command_line_errors_one_line(tmp_path):
    run, _ = _make_run(tmp_path, VA, n_videos=2)
    r = subprocess.run([sys.executable, "-m", "postprocess", "sweep", "--run", str(run), "--k", "0:-3"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "postprocess", "sweep", "--run", str(tmp_path / "nope")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "no scores.h5" in r.stderr
    for bad in ("-2", "some"):
        assert main(["sweep", "--run", str(run), "--k", "0,1", "--cv", "0", "--timelines", bad]) == 2
    assert main(["submit", "--run", str(run), "--samples", "x", "--out", str(tmp_path / "o")]) == 2
