"""OpenFace 2.x CSV import: every real header variant, face mask, multi-face frames, pose/gaze, errors with
file:line, the store."""
from __future__ import annotations

import numpy as np
import pytest

from extract.openface import (AU_C, AU_R, C_COLS, POSE_GAZE_COLS, R_COLS, import_openface, main, openface_info,
                              read_openface_csv)
from features.errors import InputError
from features.store import FeatureStore


def openface_header(version: str, flags: tuple[str, ...] = ("gaze", "pose", "2d", "3d", "pdm", "aus")) -> list[str]:
    """Column names exactly as OpenFace's RecorderCSV writes them (56 eye landmarks, 68 face landmarks, 34
    shape modes). 2.0.0-2.0.x: no face_id and only 2-D eye landmarks; later 2.x: face_id and 3-D eye
    landmarks. AU names are sorted, as OpenFace sorts them."""
    face_id = version != "2.0.0"
    cols = ["frame", *(["face_id"] if face_id else []), "timestamp", "confidence", "success"]
    if "gaze" in flags:
        cols += ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x",
                 "gaze_angle_y"]
        axes = ("x", "y") + (("X", "Y", "Z") if face_id else ())
        cols += [f"eye_lmk_{a}_{i}" for a in axes for i in range(56)]
    if "pose" in flags:
        cols += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    if "2d" in flags:
        cols += [f"{a}_{i}" for a in ("x", "y") for i in range(68)]
    if "3d" in flags:
        cols += [f"{a}_{i}" for a in ("X", "Y", "Z") for i in range(68)]
    if "pdm" in flags:
        cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty", *[f"p_{i}" for i in range(34)]]
    if "aus" in flags:
        cols += [f"{a}_r" for a in sorted(AU_R)] + [f"{a}_c" for a in sorted(AU_C)]
    return cols


# (version, separator): 2.0.x writes ", " and no face_id; 2.2.0 writes "," and face_id; the other two mixes
# (face_id with spaces, as some 2.1 builds; no face_id without spaces, as re-saved files) are read too
VARIANTS = [("2.0.0", ", "), ("2.2.0", ","), ("2.1.0", ", "), ("2.0.0", ",")]


def _write(path, rows, sep=", ", drop=(), version="2.2.0", flags=("gaze", "pose", "2d", "3d", "pdm", "aus")):
    """rows: (frame, face_id, confidence, success, seed) -> a CSV with OpenFace's header of `version`."""
    cols = [c for c in openface_header(version, flags) if c not in drop]
    lines = [sep.join(cols)]
    for frame, fid, conf, ok, seed in rows:
        rng = np.random.default_rng(seed)
        vals = {"frame": frame, "face_id": fid, "timestamp": round((frame - 1) / 30, 3), "confidence": conf,
                "success": ok, **{c: round(float(v), 3) for c, v in zip(POSE_GAZE_COLS, rng.normal(size=8))},
                **{c: round(float(v), 2) for c, v in zip(R_COLS, rng.uniform(0, 5, 17))},
                **{c: int(v) for c, v in zip(C_COLS, rng.integers(0, 2, 18))}}
        lines.append(sep.join(str(vals.get(c, 0.5)) for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("version,sep", VARIANTS, ids=[f"{v}-{'spaced' if s == ', ' else 'tight'}"
                                                      for v, s in VARIANTS])
def test_reads_every_header_variant(tmp_path, version, sep):
    p = _write(tmp_path / "vid.csv", [(1, 0, 0.98, 1, 1), (2, 0, 0.4, 1, 2), (3, 0, 0.0, 0, 3)], sep=sep,
               version=version)
    assert ("face_id" in p.read_text().splitlines()[0]) == (version != "2.0.0")
    v = read_openface_csv(p, threshold=0.5, pose_gaze=True)
    assert v.frame.tolist() == [1, 2, 3] and v.face.tolist() == [True, False, False]
    assert v.au_r.shape == (3, 17) and v.au_c.shape == (3, 18) and v.embedding.shape == (3, 35)
    assert v.embedding.dtype == np.float32
    rng = np.random.default_rng(2)
    pg = rng.normal(size=8)
    np.testing.assert_allclose(v.pose_gaze[1], np.round(pg, 3), atol=1e-6)
    np.testing.assert_allclose(v.au_r[1], np.round(rng.uniform(0, 5, 17), 2), atol=1e-6)
    np.testing.assert_allclose(v.timestamp, [0, 0.033, 0.067])
    assert read_openface_csv(p).face.tolist() == [True, True, False]     # threshold 0: success only
    assert AU_C[-2:] == ("AU28", "AU45") and "AU24" not in AU_C and list(AU_C) == sorted(AU_C)


def test_aus_only_and_columns_in_any_order(tmp_path):
    a = _write(tmp_path / "a.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.9, 0, 2)], version="2.0.0", flags=("aus",))
    lines = a.read_text().splitlines()
    cols = lines[0].split(", ")
    order = np.random.default_rng(0).permutation(len(cols))
    b = tmp_path / "b.csv"
    b.write_text("\n".join(", ".join(np.array(ln.split(", "))[order]) for ln in lines) + "\n")
    va, vb = read_openface_csv(a), read_openface_csv(b)
    np.testing.assert_array_equal(va.embedding, vb.embedding)
    assert va.face.tolist() == vb.face.tolist() == [True, False]
    with pytest.raises(InputError, match=r"a.csv:1: missing OpenFace column\(s\): pose_Rx.*-pose -gaze"):
        read_openface_csv(a, pose_gaze=True)


def test_success_or_confidence_alone_gives_the_mask(tmp_path):
    p = _write(tmp_path / "c.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.2, 1, 2)], drop=("success",))
    assert read_openface_csv(p, threshold=0.5).face.tolist() == [True, False]
    p = _write(tmp_path / "s.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.2, 0, 2)], drop=("confidence",))
    assert read_openface_csv(p, threshold=0.5).face.tolist() == [True, False]
    p = _write(tmp_path / "n.csv", [(1, 0, 0.9, 1, 1)], drop=("success", "confidence"))
    with pytest.raises(InputError, match="n.csv:1: missing OpenFace column.*success or confidence"):
        read_openface_csv(p)


@pytest.mark.parametrize("version", ["2.0.0", "2.2.0"])
def test_multi_face_keeps_most_confident_present_face(tmp_path, version):
    rows = [(1, 0, 0.6, 1, 1), (1, 1, 0.9, 1, 2), (2, 0, 0.95, 0, 3), (2, 1, 0.7, 1, 4), (3, 1, 0.5, 1, 5)]
    p = _write(tmp_path / "two.csv", rows, version=version)
    v = read_openface_csv(p)
    assert v.frame.tolist() == [1, 2, 3] and v.face.all()
    np.testing.assert_allclose(v.confidence, [0.9, 0.7, 0.5])
    np.testing.assert_allclose(v.au_r[0], read_openface_csv(_write(tmp_path / "one.csv", [rows[1]])).au_r[0])
    if version == "2.0.0":
        with pytest.raises(InputError, match="missing OpenFace column.*face_id"):
            read_openface_csv(p, face_id=0)
    else:
        w = read_openface_csv(p, face_id=0)
        assert w.frame.tolist() == [1, 2] and w.face.tolist() == [True, False]


def test_errors_name_file_and_line(tmp_path):
    p = _write(tmp_path / "m.csv", [(1, 0, 0.9, 1, 1)], drop=("AU12_r", "success"))
    with pytest.raises(InputError, match=r"m.csv:1: missing OpenFace column\(s\): AU12_r \(run FeatureExtraction"):
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


def test_pose_gaze_group_and_bad_csv_leaves_cache_untouched(tmp_path, capsys):
    a = _write(tmp_path / "vid_a.csv", [(1, 0, 0.9, 1, 1), (2, 0, 0.9, 0, 2)], version="2.0.0")
    out = tmp_path / "cache.h5"
    assert main([str(a), "--out", str(out), "--pose-gaze"]) == 0
    with FeatureStore(out) as store:
        assert store.extractors == ["openface", "openface_pose_gaze"]
        assert store.info("openface_pose_gaze").extra["columns"] == list(POSE_GAZE_COLS)
        blk = store.read(["vid_a"], extractors=["openface_pose_gaze"])
        np.testing.assert_allclose(blk.arrays["openface_pose_gaze/embedding"],
                                   read_openface_csv(a, pose_gaze=True).pose_gaze)
        assert blk.index["face"].tolist() == [True, False]
    before = out.read_bytes()
    good = _write(tmp_path / "d" / "vid_b.csv", [(1, 0, 0.9, 1, 3)]) if (tmp_path / "d").mkdir() is None else None
    bad = _write(tmp_path / "d" / "vid_c.csv", [(1, 0, 0.9, 1, 3)], drop=("AU45_c",))
    assert main([str(tmp_path / "d"), "--out", str(out)]) == 2
    assert "vid_c.csv:1: missing OpenFace column(s): AU45_c" in capsys.readouterr().err
    with FeatureStore(out) as store:
        assert store.videos("openface") == ["vid_a"]       # vid_b not half-imported beside the bad vid_c
    assert good.exists() and bad.exists() and out.read_bytes() == before
