"""The MLP heads are the reference configurations (docs/heads.md), pinned layer by layer, with their losses checked
against values computed by hand on a small batch:

- VA:   Dense(2, tanh) on logits+VA (10 inputs), loss 1 - (CCC_V + CCC_A) / 2, batch 1024;
- EXPR: Dense(128, relu) -> Dense(8, softmax), Adam 1e-3, batch 256, sparse cross-entropy with class weights
        1/count normalised so the smallest is 1;
- AU:   Dense(128, relu) -> Dense(12, sigmoid), per-AU weighted BCE, w0 = n / (2 neg), w1 = n / (2 pos).
"""
import numpy as np
import pytest

from classify.featuresets import default_sets
from classify.mlp import MLPHead
from features.store import ExtractorInfo, FeatureStore

keras = pytest.importorskip("keras")


def fitted_model(h, n_in):
    """The network `fit` builds (one epoch on random rows of the task's label shape)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, n_in)).astype(np.float32)
    y = {"va": lambda: rng.uniform(-1, 1, (64, 2)), "expr": lambda: np.arange(64) % 8,
         "au": lambda: (rng.random((64, 12)) < 0.5).astype(int)}[h.task.name]()
    return h.set_params(epochs=1).fit(X, y).model_


def dense_layers(model):
    return [(layer.units, layer.activation.__name__) for layer in model.layers
            if isinstance(layer, keras.layers.Dense)]


def ccc(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    return 2 * cov / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)


def test_va_head_is_one_tanh_layer_on_logits_plus_va(tmp_path):
    info = ExtractorInfo("enet", "0" * 64, 224, {}, {"embedding": 16, "logits": 8, "va": 2})
    with FeatureStore(tmp_path / "c.h5", "a") as s:
        s.writer(info).write_video("v", frame=np.arange(1, 3), face=np.ones(2, bool),
                                   embedding=np.zeros((2, 16), np.float32), logits=np.zeros((2, 8), np.float32),
                                   va=np.zeros((2, 2), np.float32))
        assert default_sets(s, "va")["mlp"] == "enet/logits+va"          # 8 logits + 2 VA = 10 inputs
    h = MLPHead("va")
    assert h._resolved()["batch"] == 1024 and h._resolved()["lr"] == 1e-3 and h._resolved()["hidden"] == 0
    model = fitted_model(h, 10)
    assert model.input_shape == (None, 10)
    assert dense_layers(model) == [(2, "tanh")]
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 10 * 2 + 2   # one Dense(2) only


def test_va_loss_is_one_minus_mean_ccc():
    yt = np.array([[0.1, -0.3], [0.5, 0.2], [-0.4, 0.0], [0.9, 0.6], [0.0, -0.8]], np.float32)
    yp = np.array([[0.2, -0.1], [0.3, 0.1], [-0.2, 0.2], [0.7, 0.3], [0.1, -0.5]], np.float32)
    want = 1 - (ccc(yt[:, 0], yp[:, 0]) + ccc(yt[:, 1], yp[:, 1])) / 2
    got = float(MLPHead("va")._loss(yt)(yt, yp))
    assert got == pytest.approx(want, abs=1e-5)
    assert float(MLPHead("va")._loss(yt)(yt, yt)) == pytest.approx(0, abs=1e-5)      # perfect agreement


def test_expr_head_layers_optimizer_and_batch(monkeypatch):
    h = MLPHead("expr")
    assert h._resolved()["hidden"] == 128 and h._resolved()["batch"] == 256 and h._resolved()["lr"] == 1e-3
    model = fitted_model(h, 24)
    assert dense_layers(model) == [(128, "relu"), (8, "softmax")]
    made = []
    real = keras.optimizers.Adam

    def spy(*a, **k):
        opt = real(*a, **k)
        made.append(opt)
        return opt
    monkeypatch.setattr(keras.optimizers, "Adam", spy)
    rng = np.random.default_rng(0)
    MLPHead("expr", epochs=1).fit(rng.normal(size=(64, 6)).astype(np.float32), np.arange(64) % 8)
    assert len(made) == 1 and float(made[0].learning_rate) == pytest.approx(1e-3)


def test_expr_class_weights_and_weighted_cross_entropy():
    y = np.array([0] * 6 + [3] * 3 + [5] * 2 + [7])          # counts 6, 3, 2, 1 (classes 1, 2, 4, 6 absent)
    h = MLPHead("expr")
    w = h._sample_weights(y)
    # 1/count normalised so the smallest weight (the most frequent class) is 1
    assert w.tolist() == [1.0] * 6 + [2.0] * 3 + [3.0] * 2 + [6.0]
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(8), len(y)).astype(np.float32)
    want = np.sum(w * -np.log(p[np.arange(len(y)), y])) / len(y)   # Keras: weighted sum over the batch size
    got = float(h._loss(y)(y, p, sample_weight=w))
    assert got == pytest.approx(want, rel=1e-5)


def test_au_head_layers_and_weighted_bce():
    h = MLPHead("au")
    assert h._resolved()["hidden"] == 128 and h._resolved()["batch"] == 256 and h._resolved()["lr"] == 1e-3
    assert dense_layers(fitted_model(h, 24)) == [(128, "relu"), (12, "sigmoid")]
    rng = np.random.default_rng(2)
    y = (rng.random((8, 12)) < np.linspace(0.15, 0.85, 12)).astype(np.int64)
    y[0], y[1] = 1, 0                                       # every AU has positives and negatives
    n, pos = len(y), y.sum(0)
    w1, w0 = n / (2 * pos), n / (2 * (n - pos))
    p = rng.uniform(0.05, 0.95, y.shape).astype(np.float32)
    want = -np.mean(w1 * y * np.log(p) + w0 * (1 - y) * np.log(1 - p))
    got = float(h._loss(y)(y.astype(np.float32), p))
    assert got == pytest.approx(want, rel=1e-5)
    # the weights balance each AU: an all-0.5 prediction costs log 2 per AU whatever its base rate
    half = float(h._loss(y)(y.astype(np.float32), np.full(y.shape, 0.5, np.float32)))
    assert half == pytest.approx(np.log(2), rel=1e-5)
