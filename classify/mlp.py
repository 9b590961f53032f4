"""Keras MLP heads configured per task as in the reference (docs/heads.md, "The reference heads"):

- VA:   Dense(2, tanh) on the input, loss 1 - mean CCC over (valence, arousal), batch 1024.
- EXPR: Dense(hidden, relu) -> Dense(8, softmax), class-weighted sparse cross-entropy (1/count, min 1), batch 256.
- AU:   Dense(hidden, relu) -> Dense(12, sigmoid), per-AU weighted BCE (w0 = n/(2 neg), w1 = n/(2 pos)), batch 256.

All: Adam, a standardisation layer fitted on the training rows (so no per-user scaling step is forgotten at
prediction time), the best epoch on validation by the task's official metric is kept, fixed seeds. Batches are
cut from the (possibly float16) feature matrix on the fly, so no float32 copy of it is made. Saved as
`model.keras` (loadable with plain Keras).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval
from tqdm.auto import tqdm

from features.errors import InputError
from features.import_order import import_keras
from features.outputs import output_path
from features.serialized_code import is_keras_safe_mode_error, keras_refusal

from .base import BATCH, EPOCHS, HIDDEN, SEED, Head, fit_context
from .registry import register_head

_TF_READY = False


def _keras():
    """Import TensorFlow/Keras once, with thread counts that respect the machine."""
    global _TF_READY
    # the torch heads (temporal, fusion MLP) share the process with this one, and torch's optimizers load
    # torch._dynamo -> triton, which crashes the process when TensorFlow came first: import_keras orders them
    # (and keeps TensorFlow's start-up lines off the console)
    keras = import_keras()
    import tensorflow as tf
    if not _TF_READY:
        n = os.cpu_count() or 1
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
        except RuntimeError:      # already initialised by someone else: keep their setting
            pass
        tf.get_logger().setLevel("ERROR")      # retracing chatter on varying batch sizes
        _TF_READY = True
    return tf, keras


DEFAULTS = {
    "va": dict(hidden=0, epochs=20, batch=1024, lr=1e-3),
    "expr": dict(hidden=128, epochs=10, batch=256, lr=1e-3),
    "au": dict(hidden=128, epochs=10, batch=256, lr=1e-3),
}


def _batch_source(X, y, w, batch: int, seed: int):
    """Epoch e's shuffled mini-batches cut from X on the fly (rows gathered in sorted order, cast to float32
    per batch), so a float16 matrix is never copied whole; the order is drawn from (seed, e)."""
    def epoch(e: int):
        order = np.random.default_rng([seed, e]).permutation(len(X))

        def get(i: int):
            idx = np.sort(order[i * batch:(i + 1) * batch])
            return np.asarray(X[idx], np.float32), y[idx], (None if w is None else w[idx])
        return get
    return epoch


@register_head("mlp", title="Keras MLP")
class MLPHead(Head):
    files = ("model.keras",)
    optional_files = ("fitted.json",)      # heads saved before fitted.json existed have only model.keras
    # None: the task's reference value (DEFAULTS); hidden 0 is no hidden layer (the reference's VA layout)
    _parameter_constraints = {**Head._parameter_constraints,
                              "hidden": [HIDDEN, None], "epochs": [EPOCHS, None], "batch": [BATCH, None],
                              "lr": [Interval(Real, 0, None, closed="neither"), None],     # finite, > 0
                              "seed": [SEED], "verbose": ["verbose"]}

    def __init__(self, task, hidden: int | None = None, epochs: int | None = None, batch: int | None = None,
                 lr: float | None = None, seed: int = 0, verbose: int = 0, feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.hidden = hidden          # None: the task's reference value (DEFAULTS), resolved in fit
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.seed = seed
        self.verbose = verbose

    def _resolved(self) -> dict:
        """The parameters with the task's reference values for those left at None (read at fit time, so
        set_params(task=...) changes them too)."""
        d = DEFAULTS[self.task.name]
        out = {k: d[k] if getattr(self, k) is None else getattr(self, k) for k in ("hidden", "epochs", "batch", "lr")}
        return out | {"seed": self.seed, "verbose": self.verbose}

    # -- model ------------------------------------------------------------------------------------------------
    def _build(self, n_in: int, mean=None, var=None):
        tf, keras = _keras()
        keras.utils.set_random_seed(self.seed)
        inp = keras.Input((n_in,))
        norm = keras.layers.Normalization(mean=mean if mean is not None else np.zeros(n_in),
                                          variance=var if var is not None else np.ones(n_in))
        h = norm(inp)
        if self.hidden_:
            h = keras.layers.Dense(self.hidden_, activation="relu")(h)
        act = {"regression": "tanh", "multiclass": "softmax", "multilabel": "sigmoid"}[self.task.kind]
        out = keras.layers.Dense(self.task.n_outputs, activation=act)(h)
        return keras.Model(inp, out)

    def _loss(self, y):
        tf, keras = _keras()
        if self.task.kind == "regression":
            def ccc_loss(yt, yp):
                mt, mp = tf.reduce_mean(yt, 0), tf.reduce_mean(yp, 0)
                vt, vp = tf.math.reduce_variance(yt, 0), tf.math.reduce_variance(yp, 0)
                cov = tf.reduce_mean((yt - mt) * (yp - mp), 0)
                return 1.0 - tf.reduce_mean(2 * cov / (vt + vp + (mt - mp) ** 2 + 1e-8))
            return ccc_loss
        if self.task.kind == "multiclass":
            return keras.losses.SparseCategoricalCrossentropy()
        pos = np.clip(y.mean(axis=0), 1e-6, 1 - 1e-6)
        w1 = tf.constant(0.5 / pos, tf.float32)            # n / (2 pos)
        w0 = tf.constant(0.5 / (1 - pos), tf.float32)      # n / (2 neg)

        def weighted_bce(yt, yp):
            yp = tf.clip_by_value(yp, 1e-7, 1 - 1e-7)
            yt = tf.cast(yt, tf.float32)
            return -tf.reduce_mean(w1 * yt * tf.math.log(yp) + w0 * (1 - yt) * tf.math.log(1 - yp))
        return weighted_bce

    def _train_step(self, tf, keras, loss_fn):
        model = self.model_
        opt = keras.optimizers.Adam(self.lr_)
        opt.build(model.trainable_variables)

        @tf.function(reduce_retracing=True)
        def step(x, yt, w=None):
            with tf.GradientTape() as tape:
                yp = model(x, training=True)
                loss = loss_fn(yt, yp) if w is None else loss_fn(yt, yp, sample_weight=w)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return step

    def _sample_weights(self, y):
        if self.task.kind != "multiclass":
            return None
        counts = np.bincount(y, minlength=self.task.n_outputs).astype(float)
        w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        w = w / w[counts > 0].min()                      # 1/count normalised so the smallest weight is 1
        return w[y].astype(np.float32)

    # -- interface --------------------------------------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        """Train; with validation data, keep the epoch with the best official metric on it."""
        self._check_fit(X, y, X_val, y_val)
        tf, keras = _keras()
        p = self._resolved()
        self.hidden_, self.lr_ = int(p["hidden"]), float(p["lr"])
        y = np.asarray(y)
        ytr = y.astype(np.float32) if self.task.kind != "multiclass" else y.astype(np.int64)
        self.model_ = self._build(X.shape[1], *column_moments(X))
        step = self._train_step(tf, keras, self._loss(y))
        source = _batch_source(X, ytr, self._sample_weights(ytr), p["batch"], p["seed"])
        n_batches = math.ceil(len(X) / p["batch"])
        best, best_w, self.history_, self.best_epoch_ = -np.inf, None, [], None
        # a plain loop over a compiled step, the next batch gathered in a thread while the step runs: less
        # per-step overhead than Keras' fit on a Python data source
        with ThreadPoolExecutor(1) as pool:
            for epoch in tqdm(range(p["epochs"]), desc=f"{self.task.name} MLP", unit="epoch",
                              disable=not p["verbose"]):
                get = source(epoch)
                nxt = pool.submit(get, 0)
                for i in range(n_batches):
                    xb, yb, wb = nxt.result()
                    if i + 1 < n_batches:
                        nxt = pool.submit(get, i + 1)
                    step(xb, yb) if wb is None else step(xb, yb, wb)
                if X_val is None or len(X_val) == 0:
                    continue
                score = self.task.score(y_val, self.predict_proba(X_val))
                self.history_.append(float(score))
                if score > best:
                    best, best_w, self.best_epoch_ = score, self.model_.get_weights(), epoch + 1
        if best_w is not None:
            self.model_.set_weights(best_w)
        return self

    # the run's report reads these names
    history = property(lambda self: getattr(self, "history_", []))
    best_epoch = property(lambda self: getattr(self, "best_epoch_", None))

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        tf, keras = _keras()
        out = np.empty((len(X), self.task.n_outputs), np.float32)
        step = 65536
        for a in range(0, len(X), step):
            xb = np.asarray(X[a:a + step], np.float32)
            out[a:a + len(xb)] = self.model_.predict(xb, batch_size=4096, verbose=0)
        return out

    def _save(self, path: Path):
        # the whole model (standardisation included) in Keras' own format; loaded with compile=False, so the
        # custom losses are not needed to predict
        with output_path(path / "model.keras") as p:
            self.model_.save(p)
        self._save_fitted(path)

    def _load(self, path: Path):
        tf, keras = _keras()
        f = path / "model.keras"
        # safe mode (Keras refuses Lambda bytecode and modules outside Keras) unless the caller opted in
        allow = bool(getattr(self, "_allow_pickle", False))
        try:
            self.model_ = keras.models.load_model(f, compile=False, safe_mode=not allow)
        except Exception as e:
            if is_keras_safe_mode_error(e):
                raise keras_refusal(f, "pass --allow-pickle (Python: allow_pickle=True)") from None
            msg = (str(e).strip().splitlines() or [""])[0][:200]
            raise InputError(f"cannot load the Keras model ({type(e).__name__}: {msg})", f) from None
        self._load_fitted(path)
        if not hasattr(self, "n_features_in_"):          # saved before fitted.json existed
            self.n_features_in_ = int(self.model_.inputs[0].shape[-1])


def column_moments(X, step: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and variance in float64, a block at a time (no float32 copy of a float16 matrix)."""
    n = len(X)
    s = np.zeros(X.shape[1])
    s2 = np.zeros(X.shape[1])
    for a in range(0, n, step):
        b = np.asarray(X[a:a + step], np.float64)
        s += b.sum(0)
        s2 += (b * b).sum(0)
    mean = s / max(n, 1)
    var = np.maximum(s2 / max(n, 1) - mean ** 2, 1e-12)
    return mean, var
