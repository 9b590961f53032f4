"""Numbers a user gives are bounded before anything is allocated; OSErrors name their file.

The command-level cases (memory measured, old behaviour recorded) are in tests/catalogue/bounds.py; these test
the pieces: the argparse types, the k ranges clipped to the data, shard planning, the sample-list frame bound and
the failed-run path of `classify`.
"""
from __future__ import annotations

import argparse
import errno
import heapq

import numpy as np
import pytest

from extract.planning import balance
from extract.sources import ImageVideo, parse_shard, shard_videos
from features.cli import error_line
from features.cliargs import INT32_MAX, check_int, count_or_all, integer, int_values, number
from features.errors import InputError, naming, os_error_text
from features.tasks import EXPR
from postprocess.scores import timeline_scores
from postprocess.sweep import check_ks, clip_ks, sweep_k
from postprocess.timeline import FRAME_MARGIN, beyond_timeline, extend_timeline


def _argparse_error(type_, text: str) -> str:
    ap = argparse.ArgumentParser(prog="p", exit_on_error=False)
    ap.add_argument("--x", type=type_)
    with pytest.raises(argparse.ArgumentError) as e:
        ap.parse_args(["--x", text])
    return str(e.value)


def test_argparse_types_name_the_flag_and_the_bound():
    assert integer(1, 10)("7") == 7 and number(0.0, 1.0, high_open=True)("0.5") == 0.5
    assert _argparse_error(integer(1, 10), "11") == "argument --x: must be <= 10, got 11"
    assert _argparse_error(integer(1, 10), "0") == "argument --x: must be >= 1, got 0"
    assert _argparse_error(integer(0), "1e3") == "argument --x: expected an integer, got '1e3'"
    assert _argparse_error(integer(0), "9" * 30) == f"argument --x: must be <= {INT32_MAX}, got {'9' * 30}"
    assert "must be >= 0.0 and < 1.0, got 1" in _argparse_error(number(0.0, 1.0, high_open=True), "1")
    for bad in ("nan", "inf", "0"):
        assert "must be > 0.0" in _argparse_error(number(0.0, low_open=True), bad)


def test_check_int_for_api_values():
    assert check_int(np.int64(5), "--x", 0, 9) == 5
    for bad, msg in [(10, "must be an integer <= 9"), (-1, "must be an integer >= 0"),
                     (2.0, "must be an integer >= 0 and <= 9"), (True, "must be an integer")]:
        with pytest.raises(InputError, match=f"--x {msg}"):
            check_int(bad, "--x", 0, 9)
    assert count_or_all("all", "--t") is None and count_or_all(" 3 ", "--t") == 3
    with pytest.raises(InputError, match="--t must be an integer <= "):
        count_or_all(str(2**40), "--t")


def test_k_ranges_stay_lazy_and_are_clipped_to_the_longest_video():
    r = int_values("0:1000000000", "--k")
    assert isinstance(r, range) and len(r) == 10**9 + 1
    assert clip_ks(r, 30) == list(range(32))                 # 0..30 and 31, which stands for every wider one
    assert clip_ks(range(5, 10**9, 10), 30) == [5, 15, 25, 35]
    assert clip_ks(range(100, 10**9), 30) == [100]           # all wider than the video: one value
    assert clip_ks([300, 0, 7, 7], 30) == [0, 7, 300]        # a list is kept whole
    with pytest.raises(InputError, match="needs the longest video"):
        check_ks(range(10))
    with pytest.raises(InputError, match="--k: 3000000000 is above 2147483647"):
        int_values("0:3000000000", "--k")


def test_a_clipped_sweep_equals_the_full_one():
    rng = np.random.default_rng(0)
    video = np.repeat(["a", "b"], [12, 7])
    s = rng.dirichlet(np.ones(8), len(video))
    y = rng.integers(0, 8, len(video))
    full = sweep_k(EXPR, y, s, video, list(range(0, 40)))
    huge = sweep_k(EXPR, y, s, video, range(0, 10**9))
    assert list(huge.k) == list(range(14))
    np.testing.assert_array_equal(huge["P_EXPR"], full["P_EXPR"][:14])
    assert np.all(full["P_EXPR"][13:] == full["P_EXPR"].iloc[13])    # every wider k smooths alike


def _balance_all_bins(weights, n, names):
    """The plan built with all n bins (what `balance` did before it built only as many as there are items)."""
    order = sorted(range(len(weights)), key=lambda k: (-int(weights[k]), names[k]))
    heap = [(0, b) for b in range(n)]
    bins = [[] for _ in range(n)]
    for k in order:
        load, b = heapq.heappop(heap)
        bins[b].append(k)
        heapq.heappush(heap, (load + int(weights[k]), b))
    return bins


@pytest.mark.parametrize("n", [1, 3, 5, 6, 11])
def test_more_shards_than_videos_plan_the_same(n):
    w = np.array([5, 9, 1, 9, 3], np.int64)
    names = [f"v{k}" for k in range(5)]
    assert balance(w, n, names) == _balance_all_bins(w, n, names)
    videos = [ImageVideo(nm, None, [None] * int(x)) for nm, x in zip(names, w)]
    for i in range(1, n + 1):
        assert [v.name for v in shard_videos(videos, i, n)] == \
            [names[k] for k in sorted(_balance_all_bins(w, n, names)[i - 1])]
    assert shard_videos(videos, 10**9, 10**9) == []


def test_shard_count_bounded():
    assert parse_shard("2/65536") == (2, 65536)
    with pytest.raises(InputError, match="--shard: n must be <= 65536"):
        parse_shard("1/65537")
    with pytest.raises(InputError, match="--shard must be i/n"):
        parse_shard("1/" + "9" * 40)


def test_sample_frames_bounded_by_the_video_and_the_list():
    ss = timeline_scores("expr", np.repeat(["a", "b"], [10, 4]), np.r_[np.arange(1, 11), np.arange(1, 5)],
                         np.full((14, 8), 0.125, np.float32))
    last_ok = 10 + FRAME_MARGIN
    assert len(beyond_timeline(ss, np.array(["a", "a"]), np.array([1, last_ok]))) == 0
    assert list(beyond_timeline(ss, np.array(["a", "a", "b"]), np.array([1, last_ok + 1, 5]))) == [1]
    # a list naming many frames of a video whose faces ended early: its own length counts as known
    many = np.arange(1, 5001)
    assert len(beyond_timeline(ss, np.full(5000, "b"), many)) == 0
    # a video the scores lack is left to the caller's own message
    assert len(beyond_timeline(ss, np.array(["zz"]), np.array([10**9]))) == 0
    with pytest.raises(InputError, match=f"frame {10**8} of video 'a' is more than {FRAME_MARGIN} frames past"):
        extend_timeline(ss, np.array(["a"]), np.array([10**8]))
    assert len(extend_timeline(ss, np.array(["b"]), np.array([40]))) == 10 + 40


def test_os_errors_name_their_file():
    e = OSError(errno.ENOSPC, "No space left on device")
    assert error_line(e) == "error: No space left on device (errno 28)"
    with pytest.raises(OSError) as got:
        with naming("/runs/r/metrics.json"):
            raise e
    assert error_line(got.value) == "error: /runs/r/metrics.json: No space left on device"
    with pytest.raises(OSError) as kept:               # a file the error names already is kept
        with naming("/elsewhere"):
            open("/nonexistent-dir/x.txt")
    assert error_line(kept.value) == "error: /nonexistent-dir/x.txt: No such file or directory"
    assert os_error_text(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "a -> b: Invalid cross-device link"
    assert error_line(InputError("bad", "f.txt", 3)) == "error: f.txt:3: bad"


def test_failed_run_that_cannot_be_renamed_says_so(tmp_path, monkeypatch, caplog):
    import logging
    from pathlib import Path

    from features.runs import mark_failed
    d = tmp_path / "runs" / "expr" / "r"
    d.mkdir(parents=True)
    caplog.set_level(logging.INFO)

    def refuse(self, target):
        raise OSError(errno.EACCES, "Permission denied", str(self), None, str(target))
    monkeypatch.setattr(Path, "rename", refuse)
    mark_failed(d, ValueError("boom"))
    lines = caplog.messages
    assert d.is_dir() and not (tmp_path / "runs" / "expr" / "r.failed").exists()
    assert len(lines) == 1 and "could not be renamed r.failed" in lines[0] and "Permission denied" in lines[0]
    assert "its folder is now" not in lines[0]
