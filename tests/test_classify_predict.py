"""`classify predict`: a run applied to a cache reproduces the run's own post-processed validation scores; a cache
from another checkpoint is refused; CSV and Parquet read back equal; --pretrained maps a model's own classes."""
import json
import logging

import h5py
import numpy as np
import pandas as pd
import pytest

from classify.__main__ import main
from classify.predict import load_run, predict, read_table
from classify.run import run
from features.errors import InputError
from features.store import ExtractorInfo, FeatureStore
from features.tasks import AU, EXPR, VA, get_task
from postprocess.scores import load_scores
from postprocess.timeline import smoothed_scores

@pytest.fixture(scope="module")
def runs(small_world, tmp_path_factory):
    """An EXPR run whose final head is a blend (logits rule + MLP), an AU run (MLP on two feature sets + blend)
    with AU thresholds, and a VA run (the pre-trained VA outputs)."""
    d = tmp_path_factory.mktemp("runs")
    opts = {"epochs": 3}
    expr = run("expr", small_world / "features.h5", small_world / "labels", ["logits", "mlp", "blend"], name="e", runs_dir=d,
               ks=[0, 2, 4, 8], opts=opts)
    au = run("au", small_world / "features.h5", small_world / "labels", ["mlp", "blend"], ["enet/embedding", "enet/logits"],
             name="a", runs_dir=d, ks=[0, 3, 6], opts=opts)
    va = run("va", small_world / "features.h5", small_world / "labels", ["va_only"], name="v", runs_dir=d, ks=[0, 5])
    return {"expr": expr, "au": au, "va": va}


def _val_videos(run_dir):
    return list(dict.fromkeys(load_scores(run_dir / "scores.h5", "val").video.tolist()))


@pytest.mark.parametrize("task", ["expr", "au", "va"])
def test_predict_reproduces_the_runs_postprocessed_validation_scores(small_world, runs, tmp_path, task):
    rd = runs[task]
    lr = load_run(rd)
    m = json.loads((rd / "metrics.json").read_text())
    assert lr.final == m["final"] and set(m["provenance"]) == {"enet"}
    if task == "expr":
        assert lr.final == "blend" and len(lr.members) == 2
    ss = load_scores(rd / "scores.h5", "val")
    k = m["summary"]["k"]
    want = smoothed_scores(ss, k)
    res = predict(small_world / "features.h5", tmp_path / "p.parquet", run=rd, videos=_val_videos(rd), timelines=0)
    t = get_task(task)
    got = res.table.merge(pd.DataFrame({"video": ss.video, "frame": ss.frame, "row": np.arange(len(ss))}),
                          on=["video", "frame"], how="inner")
    assert len(got) == len(ss)                      # every validation frame, once
    cols = list(t.labels)
    np.testing.assert_allclose(got[cols].to_numpy(np.float64), want[got["row"].to_numpy()], atol=2e-5)
    assert (got["face"].to_numpy() == ss.face[got["row"].to_numpy()]).all()
    if task == "au":
        thr = np.asarray(m["summary"]["thresholds"])
        on = got[[f"{n}_on" for n in cols]].to_numpy(np.int64)
        assert (on == (want[got["row"].to_numpy()] >= thr)).all()
        assert lr.post.thresholds == pytest.approx(list(thr))
    elif task == "expr":
        assert (got["label"].astype(str).to_numpy()
                == np.asarray(t.labels)[want[got["row"].to_numpy()].argmax(1)]).all()


def test_predict_uses_the_sweeps_per_output_ks(small_world, runs, tmp_path):
    """After `postprocess sweep --per-output`, predict smooths each AU with its own k and threshold."""
    from postprocess.cli import main as pp_main
    from postprocess.smoothing import box_filter
    from postprocess.timeline import filled_scores
    import shutil
    rd = tmp_path / "a"
    shutil.copytree(runs["au"], rd)
    assert pp_main(["sweep", "--run", str(rd), "--k", "0:6", "--per-output", "--cv", "0", "--timelines", "0"]) == 0
    cfg = json.loads((rd / "postprocess.json").read_text())
    ks, thr = cfg["per_output"]["k"], np.asarray(cfg["per_output"]["thresholds"])
    res = predict(small_world / "features.h5", tmp_path / "p.csv", run=rd, videos=_val_videos(rd), timelines=0)
    assert res.post.k == ks and "per output" in res.post.source
    ss = load_scores(rd / "scores.h5", "val")
    want = box_filter(filled_scores(ss), ss.video, ks)
    got = res.table.merge(pd.DataFrame({"video": ss.video, "frame": ss.frame, "row": np.arange(len(ss))}),
                          on=["video", "frame"])
    rows = got["row"].to_numpy()
    np.testing.assert_allclose(got[list(AU.labels)].to_numpy(np.float64), want[rows], atol=2e-5)
    assert (got[[f"{n}_on" for n in AU.labels]].to_numpy(np.int64) == (want[rows] >= thr)).all()


def test_csv_and_parquet_read_back_equal(small_world, runs, tmp_path):
    a = predict(small_world / "features.h5", tmp_path / "p.csv", run=runs["expr"], fps=25, timelines=1)
    b = predict(small_world / "features.h5", tmp_path / "p.parquet", run=runs["expr"], fps=25, timelines=0)
    ca, pb = read_table(tmp_path / "p.csv"), read_table(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(ca, pb, check_exact=False, rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(pb, b.table)
    assert list(ca.columns[:5]) == ["video", "frame", "time", "face", "far_from_face"]
    assert list(ca.columns[5:]) == [*EXPR.labels, "label"]      # no detector ran: no face columns
    assert ca["far_from_face"].dtype == bool
    np.testing.assert_allclose(ca["time"], (ca["frame"] - 1) / 25)
    assert len(a.timelines) == 1 and a.timelines[0].name.startswith("p.") and a.timelines[0].stat().st_size > 1000


def test_other_checkpoint_refused_with_one_line(small_world, runs, tmp_path):
    src = FeatureStore(small_world / "features.h5")
    info = src.info("enet")
    blk = src.read(src.videos("enet")[:1], "enet", ("embedding", "logits", "va"))
    other = ExtractorInfo("enet", "1" * 64, info.input_size, info.normalization, info.outputs, extra=info.extra)
    with FeatureStore(tmp_path / "other.h5", "a") as s:
        s.writer(other).write_video(src.videos("enet")[0], blk.index["frame"].to_numpy(), blk.index["face"].to_numpy(),
                                    blk.arrays["enet/embedding"], blk.arrays["enet/logits"], blk.arrays["enet/va"])
    with pytest.raises(InputError, match=r"extractor 'enet' differs .*checkpoint_sha256 111111111111\.\.\. here, "
                                         r"000000000000\.\.\. in the run"):
        predict(tmp_path / "other.h5", tmp_path / "p.csv", run=runs["expr"])
    assert not (tmp_path / "p.csv").exists()


def test_cli_train_and_bare_forms_and_predict(small_world, tmp_path, capsys, caplog):
    """`python -m classify train ...` and the bare form run the same; `--data` names the labels like `--labels`."""
    base = ["--task", "expr", "--cache", str(small_world / "features.h5"), "--heads", "logits", "--k", "2",
            "--runs-dir", str(tmp_path / "runs")]
    assert main(["train", *base, "--data", str(small_world / "labels"), "--name", "t"]) == 0
    assert main([*base, "--labels", str(small_world / "labels"), "--name", "b"]) == 0
    rd = tmp_path / "runs" / "expr" / "t"
    capsys.readouterr()
    assert main(["predict", "--run", str(rd), "--print-extractors"]) == 0
    assert capsys.readouterr().out.strip() == "enet"
    assert main(["predict", "--run", str(tmp_path / "runs" / "expr" / "latest"), "--cache",
                 str(small_world / "features.h5"), "--out", str(tmp_path / "o.csv"), "--videos", "vid0004",
                 "--timelines", "0"]) == 0
    out = capsys.readouterr().out
    assert "predict: wrote" in out and "k = 2 from metrics.json" in out and "--fps" in caplog.text
    t = read_table(tmp_path / "o.csv")
    assert set(t["video"]) == {"vid0004"} and t["time"].isna().all()


def test_pretrained_maps_the_models_own_classes(small_world, tmp_path):
    from features.tasks import affwild_probabilities
    from postprocess.smoothing import box_filter
    res = predict(small_world / "features.h5", tmp_path / "p.csv", pretrained="enet", fps=24, timelines=0)
    assert res.post.k == 12
    s = FeatureStore(small_world / "features.h5")
    blk = s.read(s.videos("enet"), "enet", ("logits",))
    p = affwild_probabilities(s.info("enet").extra["class_names"], blk.arrays["enet/logits"])
    want = box_filter(p, blk.index["video"].to_numpy(str), 12)     # every frame has a face here
    np.testing.assert_allclose(res.table[list(EXPR.labels)].to_numpy(np.float64), want, atol=1e-5)


def test_run_without_recorded_provenance_still_applies_with_a_note(small_world, runs, tmp_path, caplog):
    """Runs made before provenance was recorded: predicted as before, and the log says nothing was checked."""
    import shutil
    rd = tmp_path / "old"
    shutil.copytree(runs["expr"], rd)
    m = json.loads((rd / "metrics.json").read_text())
    del m["provenance"]
    (rd / "metrics.json").write_text(json.dumps(m))
    caplog.set_level(logging.INFO)
    res = predict(small_world / "features.h5", tmp_path / "p.csv", run=rd, timelines=0)
    assert len(res.table) > 0 and any("records no extractor provenance" in ln for ln in caplog.messages)
    with pytest.raises(InputError, match="records no extractors"):
        from classify.predict import run_extractors
        run_extractors(rd)


@pytest.mark.parametrize("exc, code, text", [(InputError("x.csv:3: bad row"), 2, "error: x.csv:3: bad row\n"),
                                             (OSError(28, "No space left on device"), 2, "No space left on device"),
                                             (KeyboardInterrupt(), 130, "error: interrupted\n")])
def test_shared_error_wrapper(exc, code, text, capsys):
    """features.cli.run_main, which the three command lines share: one line, exit 2 or 130."""
    from features.cli import run_main

    def fail(argv):
        raise exc
    assert run_main(fail, []) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_extract_run_takes_cache_and_out_alike():
    from extract.cli import build_parser
    assert build_parser().parse_args(["run", "--cache", "a.h5"]).out == "a.h5"
    assert build_parser().parse_args(["run", "--out", "b.h5"]).out == "b.h5"


def test_temporal_and_fusion_heads_in_a_fresh_process(small_world, tmp_path):
    """The heads beyond the reference load in a fresh `python -m classify predict` (their modules are imported
    by kind), and a temporal head gets each video's frames as in training: the run's validation scores again."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    rd = run("expr", small_world / "features.h5", small_world / "labels", ["temporal", "fusion_mlp", "blend"], name="t",
             runs_dir=tmp_path / "runs", ks=[0, 3], opts={"epochs": 1, "window": 16})
    m = json.loads((rd / "metrics.json").read_text())
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "classify", "predict", "--run", str(rd), "--cache",
                        str(small_world / "features.h5"), "--out", str(tmp_path / "p.csv"), "--timelines", "0",
                        "--videos", ",".join(_val_videos(rd))], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ss = load_scores(rd / "scores.h5", "val")
    want = smoothed_scores(ss, m["summary"]["k"])
    got = read_table(tmp_path / "p.csv").merge(
        pd.DataFrame({"video": ss.video, "frame": ss.frame, "row": np.arange(len(ss))}), on=["video", "frame"])
    assert len(got) == len(ss)
    np.testing.assert_allclose(got[list(EXPR.labels)].to_numpy(np.float64), want[got["row"].to_numpy()], atol=1e-4)
