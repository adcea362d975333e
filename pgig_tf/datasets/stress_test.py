"""The PGIG paper's stress test (§3, Fig. 2): a plateau plus a distractor, and the model that cancels it."""

import keras
import numpy as np


def stress_data(mean=0.0, std=0.5, seed=0):
    """z on the grid -2, -1.99, ..., 2; signal s = (1, 0) z; distractor d = (1, 1) eps; x = s + d.

    eps ~ N(mean, std^2) drawn independently per sample. Returns (z, signal, distractor, x, y)
    with y = 1 - ReLU(1 - z), the target function (§3.1).
    """
    z = np.round(np.linspace(-2.0, 2.0, 401), 2)
    eps = np.random.default_rng(seed).normal(mean, std, size=z.shape)
    signal = np.stack([z, np.zeros_like(z)], axis=1)
    distractor = np.stack([eps, eps], axis=1)
    x = (signal + distractor).astype(np.float32)
    y = 1.0 - np.maximum(1.0 - z, 0.0)
    return z, signal, distractor, x, y


def stress_model():
    """y = f2(ReLU(f1(x))): f1 = Dense(1, relu) with kernel (-1, 1), bias 1; f2 = Dense(1), kernel -1, bias 1 (§3.3).

    f1 computes 1 - x1 + x2 = 1 - z: the weights cancel the distractor exactly.
    """
    inputs = keras.Input((2,), name="x")
    hidden = keras.layers.Dense(1, activation="relu", name="f1")(inputs)
    outputs = keras.layers.Dense(1, name="f2")(hidden)
    model = keras.Model(inputs, outputs, name="stress_model")
    model.get_layer("f1").set_weights([np.array([[-1.0], [1.0]], np.float32), np.array([1.0], np.float32)])
    model.get_layer("f2").set_weights([np.array([[-1.0]], np.float32), np.array([1.0], np.float32)])
    return model
