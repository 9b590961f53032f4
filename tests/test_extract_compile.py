"""`compile`: torch.compile'd extractors give the eager outputs, with one compiled graph for every batch size."""
from __future__ import annotations

import numpy as np
import torch

from extract.runner import run
from extract.sources import discover

from helpers import TinyTorch


def test_compiled_matches_eager_and_pads_batches():
    eager, comp = TinyTorch(40), TinyTorch(40).configure(compile=True)
    assert comp.info().extra["compiled"] is True and eager.info().extra["compiled"] is False
    rng = np.random.default_rng(0)
    for n in (6, 2, 6, 1):
        x = rng.integers(0, 256, (n, 40, 40, 3), np.uint8)
        a, b = eager(x)["embedding"], comp(x)["embedding"]
        assert b.shape == (n, 4)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert comp._pad_to == 6                     # smaller batches ran padded to the first size
    graph = comp._compiled
    comp(rng.integers(0, 256, (3, 40, 40, 3), np.uint8))
    assert comp._compiled is graph


def test_compiled_run_gives_the_eager_cache(crops, tmp_path):  # noqa: F811
    from features.store import FeatureStore
    run(discover(crops), [TinyTorch(40)], tmp_path / "e.h5", batch=7, workers=0, progress=False)
    run(discover(crops), [TinyTorch(40).configure(compile=True)], tmp_path / "c.h5", batch=7, workers=0,
        progress=False)
    with FeatureStore(tmp_path / "e.h5") as a, FeatureStore(tmp_path / "c.h5") as b:
        vids = sorted(a.videos("torchy"))
        ea = a.read(vids, ["torchy"], outputs=("embedding",))
        eb = b.read(vids, ["torchy"], outputs=("embedding",))
        assert ea.index["face"].tolist() == eb.index["face"].tolist()
        np.testing.assert_allclose(eb.arrays["torchy/embedding"], ea.arrays["torchy/embedding"], rtol=1e-3,
                                   atol=1e-4)          # float16 storage
        assert b.info("torchy").extra["compiled"] is True
    assert torch.is_inference_mode_enabled() is False
