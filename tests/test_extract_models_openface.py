"""OpenFace 2.x CSV import: header variants, face mask, multi-face frames, errors with file:line, the store."""
from __future__ import annotations

import numpy as np
import pytest

from extract.openface import (AU_C, C_COLS, R_COLS, import_openface, main, openface_info,
                                     read_openface_csv)
from features.errors import InputError
from features.store import FeatureStore


def _write(path, rows, sep=", ", drop=(), extra_cols=("gaze_0_x", "pose_Tx")):
    """rows: (frame, face_id, confidence, success, seed) -> an OpenFace-like CSV with extra columns."""
    cols = ["frame", "face_id", "timestamp", "confidence", "success", *extra_cols, *R_COLS, *C_COLS]
    cols = [c for c in cols if c not in drop]
    lines = [sep.join(cols)]
    for frame, fid, conf, ok, seed in rows:
        rng = np.random.default_rng(seed)
        vals = {"frame": frame, "face_id": fid, "timestamp": (frame - 1) / 30, "confidence": conf, "success": ok,
                **{c: 0.1 for c in extra_cols},
                **{c: round(float(v), 2) for c, v in zip(R_COLS, rng.uniform(0, 5, 17))},
                **{c: int(v) for c, v in zip(C_COLS, rng.integers(0, 2, 18))}}
        lines.append(sep.join(str(vals[c]) for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("sep", [", ", ","])
def test_reads_both_header_styles(tmp_path, sep):
    p = _write(tmp_path / "vid.csv", [(1, 0, 0.98, 1, 1), (2, 0, 0.4, 1, 2), (3, 0, 0.0, 0, 3)], sep=sep)
    v = read_openface_csv(p, threshold=0.5)
    assert v.frame.tolist() == [1, 2, 3] and v.face.tolist() == [True, False, False]
    assert v.au_r.shape == (3, 17) and v.au_c.shape == (3, 18) and v.embedding.shape == (3, 35)
    assert v.embedding.dtype == np.float32
    rng = np.random.default_rng(2)
    np.testing.assert_allclose(v.au_r[1], np.round(rng.uniform(0, 5, 17), 2), atol=1e-6)
    assert read_openface_csv(p).face.tolist() == [True, True, False]     # threshold 0: success only
    assert AU_C[-2:] == ("AU28", "AU45") and "AU24" not in AU_C


def test_multi_face_keeps_most_confident_present_face(tmp_path):
    p = _write(tmp_path / "two.csv", [(1, 0, 0.6, 1, 1), (1, 1, 0.9, 1, 2), (2, 0, 0.95, 0, 3), (2, 1, 0.7, 1, 4)])
    v = read_openface_csv(p)
    assert v.frame.tolist() == [1, 2] and v.face.all()
    np.testing.assert_allclose(v.confidence, [0.9, 0.7])
    assert read_openface_csv(p, face_id=0).face.tolist() == [True, False]


def test_errors_name_file_and_line(tmp_path):
    p = _write(tmp_path / "m.csv", [(1, 0, 0.9, 1, 1)], drop=("AU12_r", "success"))
    with pytest.raises(InputError, match=r"m.csv:1: missing OpenFace column\(s\): success, AU12_r"):
        read_openface_csv(p)
    p = _write(tmp_path / "n.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.9, 1, 2)])
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace(", 0.9,", ", high,", 1)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"n.csv:3: column 'confidence': non-numeric value 'high'"):
        read_openface_csv(p)
    p = _write(tmp_path / "z.csv", [(0, 0, 0.9, 1, 1)])
    with pytest.raises(InputError, match=r"z.csv:2: frame must be a 1-based"):
        read_openface_csv(p)
    with pytest.raises(InputError, match="not found"):
        read_openface_csv(tmp_path / "absent.csv")


def test_import_into_store_and_resume(tmp_path, capsys):
    a = _write(tmp_path / "vid_a.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.9, 0, 2)])
    b = _write(tmp_path / "vid_b.csv", [(1, 0, 0.9, 1, 3)])
    out = tmp_path / "cache.h5"
    assert import_openface([a], out) == 1
    assert main([str(tmp_path), "--out", str(out)]) == 0        # a folder: vid_a is skipped, vid_b added
    assert "imported 1 video" in capsys.readouterr().out
    with FeatureStore(out) as store:
        assert store.videos("openface") == ["vid_a", "vid_b"]
        blk = store.read(["vid_a"], extractors=["openface"])
        assert blk.index["face"].tolist() == [True, False]
        np.testing.assert_allclose(blk.arrays["openface/embedding"], read_openface_csv(a).embedding)
    with pytest.raises(InputError):                              # another threshold is another provenance
        import_openface([b], out, threshold=0.5)
    assert openface_info(0.5).outputs == {"embedding": 35}
    assert main([str(tmp_path / "absent.csv"), "--out", str(out)]) == 2
