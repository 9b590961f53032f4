"""features.runs (the run folder's life and metrics.json) and postprocess.config (postprocess.json), on folders made
here: names refused before anything exists, a failure inside a run marks it failed, `latest` moves only to a
finished run, and postprocess.json's choice reads back as `submit` and `predict` apply it."""
import errno
import json
import logging

import pytest

from features import runs
from features.errors import InputError
from features.tasks import AU, VA
from postprocess.config import Post, read_post


@pytest.mark.parametrize("name", ["", "a/b", "..", "latest", "x.failed", ".hidden"])
def test_bad_run_names_are_refused_before_anything_exists(tmp_path, name):
    with pytest.raises(InputError, match="give a plain folder name"):
        runs.new_run_dir(tmp_path / "runs", "expr", name)
    assert not (tmp_path / "runs").exists()


def test_a_run_is_never_overwritten_and_default_names_are_unique(tmp_path):
    (tmp_path / "runs" / "expr" / "mine").mkdir(parents=True)
    with pytest.raises(InputError, match="run folder exists"):
        runs.new_run_dir(tmp_path / "runs", "expr", "mine")
    a = runs.new_run_dir(tmp_path / "runs", "expr", None)
    a.mkdir()
    assert runs.new_run_dir(tmp_path / "runs", "expr", None) != a
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="this is a file, not a folder"):
        runs.new_run_dir(tmp_path / "file", "expr", "r")


def test_a_failure_inside_a_run_marks_it_and_leaves_latest(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first = tmp_path / "expr" / "first"
    with runs.creating(first):
        runs.point_latest(first)
    d = tmp_path / "expr" / "second"
    with pytest.raises(KeyboardInterrupt):
        with runs.creating(d):
            (d / "half.txt").write_text("x")
            raise KeyboardInterrupt
    assert not d.exists() and (d.with_name("second.failed") / "FAILED.txt").read_text() == "KeyboardInterrupt: \n"
    assert (tmp_path / "expr" / "latest").resolve() == first.resolve()
    assert any("its folder is now" in m and "second.failed" in m for m in caplog.messages)


def test_failed_note_on_a_full_disk_leaves_no_empty_file(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(runs, "write_output", full)
    d = tmp_path / "expr" / "r"
    d.mkdir(parents=True)
    runs.mark_failed(d, RuntimeError("boom"))
    assert (tmp_path / "expr" / "r.failed").is_dir() and not (tmp_path / "expr" / "r.failed" / "FAILED.txt").exists()
    assert any("FAILED.txt could not be written (" in m and "No space left on device" in m for m in caplog.messages)


def test_latest_moves_but_a_real_folder_named_latest_is_left_alone(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    runs.point_latest(a)
    runs.point_latest(b)
    assert (tmp_path / "latest").resolve() == b.resolve() and not list(tmp_path.glob(".latest-*"))
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()
    runs.point_latest(a)
    assert not (tmp_path / "latest").is_symlink() and "is a run folder, not a link" in caplog.text


def test_metrics_json_is_checked_and_numpy_values_are_written_plainly(tmp_path):
    import numpy as np
    d = tmp_path / "r"
    d.mkdir()
    with pytest.raises(InputError, match="not a finished classify run"):
        runs.read_metrics(d)
    (d / "metrics.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        runs.read_metrics(d)
    (d / "metrics.json").unlink()
    runs.write_metrics(d, {"task": "va", "final": "m", "k": np.int64(3), "w": np.arange(2.0)})
    assert runs.read_metrics(d) == {"task": "va", "final": "m", "k": 3, "w": [0.0, 1.0]}
    (d / "metrics.json").write_text(json.dumps({"task": "va", "final": "../x"}))
    with pytest.raises(InputError, match="not a plain name"):
        runs.read_metrics(d)


def test_postprocess_json_choice_as_submit_and_predict_apply_it(tmp_path):
    assert read_post(tmp_path, VA) is None
    cfg = {"task": "au", "k": 4, "thresholds": [0.4], "use_per_output": True,
           "per_output": {"k": list(range(12)), "thresholds": [0.3] * 12}}
    (tmp_path / "postprocess.json").write_text(json.dumps(cfg))
    assert read_post(tmp_path, AU) == Post(list(range(12)), [0.3] * 12, "mean", "postprocess.json (per output)")
    cfg["use_per_output"] = False
    (tmp_path / "postprocess.json").write_text(json.dumps(cfg))
    assert read_post(tmp_path, AU) == Post(4, [0.4] * 12, "mean", "postprocess.json")
    with pytest.raises(InputError, match="it is for task 'au', the run for 'va'"):
        read_post(tmp_path, VA)
    (tmp_path / "postprocess.json").write_text(json.dumps({"task": "au", "k": -1}))
    with pytest.raises(InputError, match="postprocess.json.*non-negative"):
        read_post(tmp_path, AU)
