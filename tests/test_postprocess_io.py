"""Scores file round trip; submission write -> validate round trip; broken submissions are caught."""
import h5py
import numpy as np
import pytest

from features.errors import InputError
from features.tasks import AU, EXPR, VA
from postprocess.scores import load_scores, save_scores
from postprocess.submission import read_sample_list, validate_submission, write_submission


def _rows(task, seed=0):
    rng = np.random.default_rng(seed)
    video = np.repeat(["vidA", "vidB_left", "vidC"], [6, 4, 5])
    frame = np.concatenate([np.arange(1, 7), np.arange(3, 7), np.arange(10, 15)])
    s = rng.random((len(video), task.n_outputs)).astype(np.float32)
    if task is VA:
        s = 2 * s - 1
    face = np.ones(len(video), bool)
    face[[2, 7]] = False
    s[~face] = np.nan
    return video, frame, s, face


def test_scores_round_trip(tmp_path):
    video, frame, s, face = _rows(AU)
    y = (s > 0.5).astype(np.int64)
    p = tmp_path / "scores.h5"
    heads = {"mlp": np.nan_to_num(s), "lama": np.nan_to_num(s) * 0.5}
    save_scores(p, "val", video, frame, s, y=y, face=face, heads=heads, attrs={"blend": {"mlp": 0.6}})
    save_scores(p, "test", video, frame, s, face=face, attrs={"task": "au"})
    got = load_scores(p, "val")
    assert got.task == "au" and got.attrs["blend"] == {"mlp": 0.6} and "created" in got.attrs
    # stored on the full frame timeline: frames 1..last of each video; the frames not given are added
    lengths = [6, 6, 14]
    np.testing.assert_array_equal(got.video, np.repeat(["vidA", "vidB_left", "vidC"], lengths))
    np.testing.assert_array_equal(got.frame, np.concatenate([np.arange(1, n + 1) for n in lengths]))
    at = {(v, f): i for i, (v, f) in enumerate(zip(got.video, got.frame))}
    given = np.array([at[(v, f)] for v, f in zip(video, frame)])
    added = np.setdiff1d(np.arange(len(got)), given)
    np.testing.assert_array_equal(got.face[given], face)
    np.testing.assert_array_equal(got.y[given], y)
    np.testing.assert_array_equal(got.scores[given], s)
    np.testing.assert_array_equal(got.heads["mlp"][given], heads["mlp"])
    assert len(added) == sum(lengths) - len(video) and not got.face[added].any()
    assert (got.y[added] == AU.invalid).all() and np.isnan(got.scores[added]).all()
    assert set(got.heads) == {"mlp", "lama"} and np.isnan(got.heads["lama"][added]).all()
    assert load_scores(p, "test").y is None
    with h5py.File(p) as f:
        assert f["val/video_names"].shape == (3,) and f["val/video_id"].dtype == np.int32
        assert f["val/frame"].shape == (sum(lengths),)
    with pytest.raises(InputError, match="already exists"):
        save_scores(p, "val", video, frame, s, face=face)
    with pytest.raises(InputError, match="no split 'train'"):
        load_scores(p, "train")


def test_sparse_scores_file_is_read_on_the_full_timeline(tmp_path):
    """A file written before the full-timeline layout (validation = labelled frames with a face only) is
    expanded on reading, exactly as save_scores would have stored it."""
    video, frame, s, face = _rows(EXPR)
    y = np.arange(len(video)) % 8
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        g = f.create_group("val")
        g.create_dataset("video_names", data=np.array(["vidA", "vidB_left", "vidC"], object),
                         dtype=h5py.string_dtype("utf-8"))
        g.create_dataset("video_id", data=np.repeat([0, 1, 2], [6, 4, 5]).astype(np.int32))
        g.create_dataset("frame", data=frame.astype(np.int32))
        g.create_dataset("face", data=face)
        g.create_dataset("y", data=y)
        g.create_dataset("scores", data=s)
        g.attrs["task"] = "expr"
    new = tmp_path / "new.h5"
    save_scores(new, "val", video, frame, s, y=y, face=face, attrs={"task": "expr"})
    a, b = load_scores(old, "val"), load_scores(new, "val")
    for name in ("video", "frame", "face", "y", "scores"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert len(a) == 26 and (a.y == EXPR.invalid).sum() == 26 - 15


def test_scores_bad_input(tmp_path):
    video, frame, s, face = _rows(VA)
    p = tmp_path / "s.h5"
    with pytest.raises(InputError, match="NaN"):
        save_scores(p, "val", video, frame, s)          # NaN rows without face flags
    with pytest.raises(InputError, match="14 score rows but 15"):
        save_scores(p, "val", video, frame, s[:-1], face=face)
    with pytest.raises(InputError, match="label rows"):
        save_scores(p, "val", video, frame, s, face=face, y=np.zeros((3, 2)))
    with pytest.raises(InputError, match="not found"):
        load_scores(tmp_path / "missing.h5", "val")
    with pytest.raises(InputError, match="1-based"):
        save_scores(p, "val", video, frame - 1, s, face=face)
    with pytest.raises(InputError, match="frame number is corrupt"):
        save_scores(p, "val", video, np.r_[frame[:-1], 10 ** 9], s, face=face)


def _sample_list(path, video, frame, with_header=True, order=None):
    rows = [f"{v}/{f:05d}.jpg" for v, f in zip(video, frame)]
    if order is not None:
        rows = [rows[i] for i in order]
    text = ("image_location,AU1,AU2\n" if with_header else "") + "".join(r + ",\n" for r in rows)
    path.write_text(text)
    return path


@pytest.mark.parametrize("task", [VA, EXPR, AU], ids=lambda t: t.name)
def test_submission_round_trip(tmp_path, task):
    video, frame, s, face = _rows(task)
    # the organisers list frames we never scored (frame 1 of vidB_left, frame 20 of vidC) in their own order
    sv = np.concatenate([video, ["vidB_left", "vidC"]])
    sf = np.r_[frame, 1, 20]
    order = np.random.default_rng(1).permutation(len(sv))
    samples = _sample_list(tmp_path / "list.txt", sv, sf, with_header=task is AU, order=order)
    out = tmp_path / f"{task.name}.txt"
    n = write_submission(out, task, samples, video, frame, s, face=face)
    assert n == len(sv)
    rep = validate_submission(out, samples, task)
    assert rep.ok, str(rep)
    lines = out.read_text().splitlines()
    assert lines[0] == "image_location," + task.header
    sl = read_sample_list(samples)
    assert [ln.split(",")[0] for ln in lines[1:]] == list(sl.image_location)
    i = list(sl.image_location).index("vidC/00020.jpg")
    last_c = np.flatnonzero(video == "vidC")[-1]
    vals = lines[1 + i].split(",")[1:]
    ref = task.decide(s[last_c:last_c + 1])[0]
    np.testing.assert_allclose(np.asarray(vals, float), np.atleast_1d(ref), atol=1e-6)  # edge repeats
    with pytest.raises(InputError, match="output exists"):
        write_submission(out, task, samples, video, frame, s, face=face)


def test_broken_submissions_are_caught(tmp_path):
    video, frame, s, face = _rows(EXPR)
    samples = _sample_list(tmp_path / "list.txt", video, frame)
    out = tmp_path / "expr.txt"
    write_submission(out, EXPR, samples, video, frame, s, face=face)
    lines = out.read_text().splitlines()
    broken = lines[:3] + [lines[4], lines[3]] + lines[5:-1]          # swapped rows, one missing
    broken[1] = broken[1].split(",")[0] + ",9"                        # class out of range
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(broken) + "\n")
    rep = validate_submission(bad, samples, EXPR)
    assert not rep.ok
    # one problem each: the class, the swap, the last row missing (no cascade over the rows after it)
    assert rep.n_problems == 3 and rep.n_rows == len(video) - 1
    assert rep.problems[0] == (2, "expected a class 0-7, got '9'")
    assert "not in the sample list's order: 'vidA/00003.jpg' comes after 'vidA/00004.jpg'" in rep.problems[1][1]
    assert rep.problems[2] == (16, "missing row for 'vidC/00014.jpg' (sample list row 15)")
    assert "np.str_" not in str(rep)
    with pytest.raises(InputError, match=r"bad.txt:2: expected a class"):
        validate_submission(bad, samples, EXPR, raise_first=True)
    va = tmp_path / "va.txt"
    va.write_text("image_location,valence,arousal\n" + "\n".join(
        f"{v}/{f:05d}.jpg,0.5,{'1.5' if i == 3 else '0.1'}" for i, (v, f) in enumerate(zip(video, frame))) + "\n")
    rep = validate_submission(va, samples, VA)
    assert rep.problems == [(5, "values outside [-1, 1]: 0.5,1.5")]
    assert "va.txt:5" in str(rep)


def test_validate_matches_rows_by_location(tmp_path):
    """A missing row in the middle is one problem, not one per later row; an extra and a duplicated row are one
    each; a header-less file is told so; messages hold plain strings."""
    video, frame, s, face = _rows(VA)
    samples = _sample_list(tmp_path / "list.txt", video, frame)
    out = tmp_path / "va.txt"
    write_submission(out, VA, samples, video, frame, s, face=face)
    lines = out.read_text().splitlines()
    cases = {
        "missing": (lines[:4] + lines[5:], [(5, "missing row for 'vidA/00004.jpg' (sample list row 4)")]),
        "extra": (lines[:3] + ["vidA/00099.jpg,0.1,0.2"] + lines[3:],
                  [(4, "'vidA/00099.jpg' is not in the sample list")]),
        "duplicate": (lines[:3] + [lines[2]] + lines[3:], [(4, "'vidA/00002.jpg' again (first at line 3); "
                                                              "each sample once")]),
        "no header": (lines[1:], [(1, "no header line: the file should start with "
                                      "'image_location,valence,arousal'")]),
        "missing run": (lines[:2] + lines[6:], [(3, "missing rows for 'vidA/00002.jpg' .. 'vidA/00005.jpg' "
                                                    "(4 rows, sample list rows 2-5)")]),
    }
    for name, (text, want) in cases.items():
        p = tmp_path / f"{name.replace(' ', '_')}.txt"
        p.write_text("\n".join(text) + "\n")
        rep = validate_submission(p, samples, VA)
        assert rep.problems == want and rep.n_problems == 1, (name, rep.problems)
    many = tmp_path / "many.txt"
    many.write_text("\n".join(lines[:1] + [ln + ",0" for ln in lines[1:]]) + "\n")
    rep = validate_submission(many, samples, VA, max_listed=3)
    assert rep.n_problems == len(video) and [ln for ln, _ in rep.problems] == [2, 3, 4]
    assert rep.problems[0][1] == "expected 2 value(s), got 3" and "... and 12 more" in str(rep)


def test_sample_list_errors(tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("image_location\nvid/00001.jpg\nvid/frame.jpg\n")
    with pytest.raises(InputError, match=r"list.txt:3: expected video/<frame>.jpg"):
        read_sample_list(p)
    p.write_text("vidA/00001.jpg\nnope/00001.jpg\n")
    video, frame, s, face = _rows(AU)
    with pytest.raises(InputError, match="video 'nope' with no scores"):
        write_submission(tmp_path / "o.txt", AU, p, video, frame, s, face=face)
    assert not (tmp_path / "o.txt").exists()
