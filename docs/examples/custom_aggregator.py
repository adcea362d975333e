"""A custom aggregator: Integrated Gradients with the midpoint rule, points x̄ + (k − ½)/m (x − x̄) for k = 1..m.

Run from the repository root: `python docs/examples/custom_aggregator.py`.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import pgig_tf
from pgig_tf.analyzers import ANALYZERS
from pgig_tf.core.aggregators import Aggregator, per_row


class MidpointPath(Aggregator):
    """m points per sample on the straight path, reduced by their mean, times (x − x̄)."""

    statistic = "mean"  # how the engine reduces multiplier × gradient over a sample's draws

    def __init__(self, steps, baseline):
        self.draws = steps  # points (gradient evaluations) per sample
        self.baseline = np.float32(baseline)

    def points(self, x, sample_index, draw_index, seed):
        # x: one row per point (a sample repeated), draw_index: which of the sample's points each row is
        alpha = (tf.cast(draw_index, x.dtype) + 0.5) / self.draws
        return self.baseline + per_row(alpha, x) * (x - self.baseline), None  # None: multiplier 1

    def finish(self, x, reduced):
        # reduced: the mean gradient over the m points of each sample
        return (x - self.baseline) * reduced


class MidpointIGAnalyzer(pgig_tf.Analyzer):
    """Integrated Gradients by the midpoint rule; takes any backward rule (rule=, patterns=)."""

    # What the method is, as class attributes (these are the defaults of pgig_tf.Analyzer):
    fixed_rule = None  # None: takes rule=; a rule name fixes it (PGIGAnalyzer: "pattern_attribution")
    start = "one"  # the backward pass starts with 1.0; "value": with the output's value
    random = False  # True: draws random numbers and takes seed=
    uses_background = False  # True: fit(data) keeps background samples (Expected Gradients)
    expects_logits = False  # True: warns (SoftmaxOutputWarning) when it explains a softmax output

    def __init__(self, model, *, steps=16, baseline=0.0, **options):
        # options: rule, patterns and the shared batch_size, output, compute_dtype, jit_compile, strategy
        super().__init__(model, **options)
        self.steps, self.baseline = steps, baseline

    def _make_aggregator(self):
        return MidpointPath(self.steps, self.baseline)


# A tiny ReLU network and an independent numpy evaluation of the same quadrature.
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
(W1, b1), (W2, b2) = model.layers[0].get_weights(), model.layers[1].get_weights()
target = 2


def gradient(z):
    """∂f_target/∂z of f(z) = W2ᵀ relu(W1ᵀ z + b1) + b2, for one point z."""
    return W1 @ (W2[:, target] * (z @ W1 + b1 > 0))


steps = 16
expected = np.stack(
    [sample * np.mean([gradient((k - 0.5) / steps * sample) for k in range(1, steps + 1)], axis=0) for sample in x]
)

analyzer = MidpointIGAnalyzer(model, steps=steps, batch_size=32)
maps = analyzer.analyze(x, neuron_selection=target)
np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)

# Known by name, it works with create_analyzer, save and load_analyzer like the built-in methods.
ANALYZERS["midpoint_ig"] = MidpointIGAnalyzer
same = pgig_tf.create_analyzer("midpoint_ig", model, steps=steps)
with tempfile.TemporaryDirectory() as folder:
    loaded = pgig_tf.load_analyzer(same.save(os.path.join(folder, "midpoint_ig.npz")), model)
np.testing.assert_allclose(loaded.analyze(x, neuron_selection=target), maps, rtol=1e-6, atol=1e-7)

# Completeness (Σᵢ φᵢ ≈ f(x) − f(0)) holds up to the quadrature error of 16 points.
gap = maps.sum(axis=1) - (model.predict(x, verbose=0)[:, target] - model.predict(0 * x, verbose=0)[:, target])
print("midpoint IG: largest completeness gap with 16 points:", float(np.abs(gap).max()))
