"""Aggregators: where gradients are taken for each input and how they are reduced to one map.

An aggregator gives, for sample `i` and draw `s`, an evaluation point and a multiplier; the
engine accumulates `multiplier * gradient(point)` over the draws and hands the running
statistic to `finish`. All methods are TensorFlow ops, run inside the engine's compiled loop.
"""

import numpy as np
import tensorflow as tf


class Aggregator:
    """Base: `draws` points per sample, reduced by `statistic` ('mean' is the only one here)."""

    draws = 1
    statistic = "mean"

    def points(self, x, sample_index, draw_index):
        """(points, multiplier) for the gathered inputs `x` (one row per point); multiplier None = 1."""
        raise NotImplementedError

    def finish(self, x, mean):
        """The attribution from the inputs and the mean of multiplier * gradient over the draws."""
        return mean


class SinglePoint(Aggregator):
    """The gradient at the input itself; optionally times the input (Gradient x Input)."""

    def __init__(self, times_input=False):
        self.times_input = times_input

    def points(self, x, sample_index, draw_index):
        return x, None

    def finish(self, x, mean):
        return x * mean if self.times_input else mean


class StraightPath(Aggregator):
    """Integrated Gradients' path (PGIG paper Eq. 1, 4): right Riemann sum over k = 1..m.

    Point k of sample x is `baseline + k/m (x - baseline)`; the result is
    `(x - baseline) * mean_k gradient(point k)`.
    """

    def __init__(self, steps, baseline):
        self.draws = int(steps)
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index):
        baseline = tf.cast(self.baseline, x.dtype)
        alpha = tf.cast(draw_index + 1, x.dtype) / tf.cast(self.draws, x.dtype)
        alpha = tf.reshape(alpha, [-1] + [1] * (x.shape.rank - 1))
        return baseline + alpha * (x - baseline), None

    def finish(self, x, mean):
        return (x - tf.cast(self.baseline, x.dtype)) * mean
