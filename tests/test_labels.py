import numpy as np
import pytest

from features.errors import InputError
from features.labels import join, load_labels, read_annotation, read_mtl, task_dir
from features.store import ExtractorInfo, FeatureStore
from features.tasks import AU, EXPR, VA


def write_ann(root, folder, split, video, header, rows):
    d = root / folder / split
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{video}.txt"
    p.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return p


def test_parse_three_tasks_and_invalid_rows(tmp_path):
    write_ann(tmp_path, "VA_Estimation_Challenge", "Train_Set", "v1", "valence,arousal",
              ["0.1,0.2", "-5,-5", "1,-1"])
    write_ann(tmp_path, "EXPR_Recognition_Challenge", "Validation_Set", "v1", EXPR.header, ["3", "-1", "7", "0"])
    write_ann(tmp_path, "AU_Detection_Challenge", "Train_Set", "v1_left", AU.header,
              ["0,1,0,0,0,0,1,0,0,0,0,0", "-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1", "1,1,1,1,1,1,1,1,1,1,1,1"])
    va = load_labels(tmp_path, "va", "train")
    assert va["frame"].tolist() == [1, 3] and va.attrs["n_invalid"] == 1
    np.testing.assert_allclose(va[["valence", "arousal"]].to_numpy(), [[0.1, 0.2], [1.0, -1.0]], rtol=1e-6)
    ex = load_labels(tmp_path, EXPR, "val")        # the EXPR_Recognition_Challenge spelling
    assert ex["label"].tolist() == [3, 7, 0] and ex["frame"].tolist() == [1, 3, 4]
    au = load_labels(tmp_path, "au", "Train_Set")
    assert au["video"].tolist() == ["v1_left", "v1_left"] and au["frame"].tolist() == [1, 3]
    assert au["AU12"].tolist() == [1, 1]


@pytest.mark.parametrize("header,rows,match", [
    ("valence,arousal", [], None),
    ("arousal,valence", ["0,0"], r"v\.txt:1: header 'arousal,valence' is not the VA header"),
    ("valence,arousal", ["0.1,0.2", "0.1,0.2,0.3"], r"v\.txt:3: expected 2 comma-separated values, got 3"),
    ("valence,arousal", ["0.1,abc"], r"v\.txt:2: not a number: 'abc'"),
    ("valence,arousal", ["0.1,0.2", "1.5,0"], r"v\.txt:3: values must lie in \[-1, 1\]"),
])
def test_bad_va_files(tmp_path, header, rows, match):
    p = write_ann(tmp_path, "VA_Estimation_Challenge", "Train_Set", "v", header, rows)
    if match is None:
        assert read_annotation(p, VA).shape == (0, 2)
        return
    with pytest.raises(InputError, match=match):
        read_annotation(p, VA)


def test_bad_expr_au_and_empty(tmp_path):
    p = write_ann(tmp_path, "EXPR_Classification_Challenge", "Train_Set", "e", EXPR.header, ["1", "8"])
    with pytest.raises(InputError, match=r"e\.txt:3: values must be integers 0..7"):
        read_annotation(p, EXPR)
    p = write_ann(tmp_path, "AU_Detection_Challenge", "Train_Set", "a", AU.header, ["0,1,0,0,0,0,1,0,0,0,0,0.5"])
    with pytest.raises(InputError, match=r"a\.txt:2: values must be integers 0..1"):
        read_annotation(p, AU)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.txt:1: empty annotation file"):
        read_annotation(empty, AU)


def test_missing_challenge_folder(tmp_path):
    with pytest.raises(InputError, match="no AU annotations: expected folder AU_Detection_Challenge/Train_Set"):
        task_dir(tmp_path, "au", "train")
    with pytest.raises(InputError, match="annotation root does not exist"):
        task_dir(tmp_path / "nowhere", "va", "train")


def test_mtl_file(tmp_path):
    p = tmp_path / "mtl.txt"
    p.write_text("image,valence,arousal,expression,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n"
                 "vid/00001.jpg,0.5,-0.2,4,0,0,0,1,0,0,1,0,0,0,0,0\n"
                 "vid/00002.jpg,-5,-5,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1\n")
    df = read_mtl(p)
    assert df["video"].tolist() == ["vid", "vid"] and df["frame"].tolist() == [1, 2]
    assert df.loc[0, "expr"] == 4 and df.loc[0, "AU12"] == 1
    p.write_text(p.read_text().replace("vid/00002.jpg,-5", "vid/00002.jpg,3"))
    with pytest.raises(InputError, match=r"mtl\.txt:3: values must lie in"):
        read_mtl(p)


def test_join_counts_frames_without_features(tmp_path):
    write_ann(tmp_path, "EXPR_Classification_Challenge", "Train_Set", "v1", EXPR.header, ["1", "2", "3", "4", "-1"])
    write_ann(tmp_path, "EXPR_Classification_Challenge", "Train_Set", "v2", EXPR.header, ["5", "6"])
    info = ExtractorInfo("m", "x", 64, {}, {"embedding": 3, "logits": 2})
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        # v1 has frames 1..4 but no face on frame 2 and no row for frame 4; v2 is not cached
        emb = np.arange(9, dtype=np.float32).reshape(3, 3)
        s.writer(info).write_video("v1", frame=np.array([1, 2, 3]), face=np.array([True, False, True]),
                                   embedding=emb, logits=np.ones((3, 2), np.float32))
    store = FeatureStore(tmp_path / "c.h5")
    labels = load_labels(tmp_path, "expr", "train")
    j = join(store, labels, "expr", ["m/embedding", "m/logits"])
    assert j.y.tolist() == [1, 3] and j.index["frame"].tolist() == [1, 3]
    np.testing.assert_array_equal(j.X, np.c_[emb[[0, 2]], np.ones((2, 2))])
    assert j.n_labelled == 6 and j.n_missing == 4
    assert j.missing["reason"].value_counts().to_dict() == {"video not cached": 2, "no face": 1,
                                                            "frame not cached": 1}
    assert "2 of 6 labelled frames" in j.summary()
    with pytest.raises(InputError, match="not in the cache"):
        join(store, labels, "expr", ["enet/embedding"])
