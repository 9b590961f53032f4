"""Damaged or hand-edited cache files are refused with one line naming the file (and extractor, video)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from features.errors import InputError
from features.store import FeatureStore

from helpers import write


@pytest.fixture
def cache(tmp_path):
    p = tmp_path / "c.h5"
    write(p, [("a", 5), ("b", 7)])
    return p


def _edit(p, fn):
    with h5py.File(p, "r+") as f:
        fn(f, f["extractors/m"])


def _reorder(f, g):
    g["frame"][6] = 3                        # video b: 1, 3, 3, ... (repeated)


def _backwards(f, g):
    g["frame"][5:7] = [2, 1]                 # video b starts 2, 1


def _zero(f, g):
    g["frame"][0] = 0


@pytest.mark.parametrize("damage, video, what", [
    (_reorder, "b", "frame 3 follows frame 3 (out of order or repeated)"),
    (_backwards, "b", "frame 1 follows frame 2"),
    (_zero, "a", "frame 0 is not a 1-based frame number"),
])
def test_frames_out_of_order_refused_on_read(cache, damage, video, what):
    """Before: accepted, and labels joined to the wrong rows."""
    _edit(cache, damage)
    s = FeatureStore(cache)
    other = "a" if video == "b" else "b"
    assert len(s.read([other]).index) in (5, 7)       # the intact video still reads
    with pytest.raises(InputError) as e:
        s.read()
    assert str(e.value).startswith(f"{cache}: extractor 'm', video '{video}': {what}")


def _shorter_embedding(f, g):
    emb = g["embedding"][:10]
    del g["embedding"]
    g.create_dataset("embedding", data=emb)


def _count_beyond(f, g):
    g["video_count"][1] = 100


def _start_negative(f, g):
    g["video_start"][0] = -1


def _index_lengths(f, g):
    del g["video_count"]
    g.create_dataset("video_count", data=np.array([5], np.int64))


def _non_json(f, g):
    g.attrs["outputs"] = "{embedding: 16"


def _json_list(f, g):
    g.attrs["normalization"] = "[1, 2]"


def _missing_attr(f, g):
    del g.attrs["checkpoint_sha256"]


def _missing_dataset(f, g):
    del g["face"]


def _wrong_width(f, g):
    g.attrs["outputs"] = '{"embedding": 32, "logits": 8, "va": 2}'


def _wrong_format(f, g):
    f.attrs["format"] = "something-else"


def _no_version(f, g):
    del f.attrs["schema_version"]


@pytest.mark.parametrize("damage, match", [
    (_shorter_embedding, r"extractor 'm': dataset 'embedding' has shape \(10, 16\), expected \(12, 16\)"),
    (_count_beyond, r"extractor 'm', video 'b': video_start=5, video_count=100 lie beyond the 12 rows"),
    (_start_negative, r"video 'a': video_start=-1"),
    (_index_lengths, r"video_names, video_start and video_count must be 1-d of one length"),
    (_non_json, r"extractor 'm': attribute 'outputs' is not valid JSON"),
    (_json_list, r"extractor 'm': attribute 'normalization' must be a JSON object"),
    (_missing_attr, r"extractor 'm': provenance attribute\(s\) missing: checkpoint_sha256"),
    (_missing_dataset, r"extractor 'm': dataset\(s\) face missing"),
    (_wrong_width, r"dataset 'embedding' has shape \(12, 16\), expected \(12, 32\)"),
    (_wrong_format, r"not a feature cache \(format attribute 'something-else'"),
    (_no_version, r"schema_version attribute None is not a number"),
])
def test_inconsistent_file_refused_on_open(cache, damage, match):
    """Before: TypeError / JSONDecodeError tracebacks, or reads past the data."""
    _edit(cache, damage)
    with pytest.raises(InputError, match=match) as e:
        FeatureStore(cache)
    assert str(e.value).startswith(f"{cache}: ") and "\n" not in str(e.value)


def test_classify_names_the_damaged_cache(cache, tmp_path, capsys):
    from classify.__main__ import main
    _edit(cache, _non_json)
    rc = main(["--task", "expr", "--cache", str(cache), "--labels", str(tmp_path), "--runs-dir",
               str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {cache}: extractor 'm': attribute 'outputs'")
