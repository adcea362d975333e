"""Aggregators: where gradients are taken for each input and how they are reduced to one map.

An aggregator gives, for sample `i` and draw `s`, an evaluation point and a multiplier; the
engine reduces `multiplier * gradient(point)` over the draws with the aggregator's
`statistic` ('mean', 'mean_square' or 'variance') and hands the result to `finish`. All
methods are TensorFlow ops, run inside the engine's compiled loop.

Random draws come from `pgig_tf.core.noise` (counter-based streams: independent of chunking).
"""

import numpy as np
import tensorflow as tf

from pgig_tf.core.integration import (
    AUTO_AGREEMENTS,
    DEFAULT_METHOD,
    RIEMANN_LEFT,
    RIEMANN_MIDDLE,
    RIEMANN_RIGHT,
    check_method,
    check_steps,
    nodes_and_weights,
)
from pgig_tf.core.noise import (
    ALPHA_STREAM,
    BACKGROUND_INDEX_STREAM,
    UNIFORM,
    UNIFORM_BASELINE_STREAM,
    WORDS,
    keyed_rows,
    row_ids,
    sample_min_max,
    sample_noise,
)

MEAN, MEAN_SQUARE, VARIANCE = "mean", "mean_square", "variance"


class Aggregator:
    """Base: `draws` points per sample, reduced by `statistic`."""

    draws = 1
    statistic = MEAN
    # For a multi-input model the engine's sample is all inputs flattened and concatenated;
    # `segments` (their sizes) makes noise ranges per input. None: one input.
    segments = None

    def points(self, x, sample_index, draw_index, seed):
        """(points, multiplier) for the gathered inputs `x` (one row per point); multiplier None = 1."""
        raise NotImplementedError

    def finish(self, x, reduced):
        """The attribution from the inputs and the reduced multiplier * gradient."""
        return reduced


class SinglePoint(Aggregator):
    """The gradient at the input itself; optionally times the input (Gradient x Input)."""

    def __init__(self, times_input=False):
        self.times_input = times_input

    def points(self, x, sample_index, draw_index, seed):
        return x, None

    def finish(self, x, reduced):
        return x * reduced if self.times_input else reduced


def _path_point(x, baseline, step, steps):
    """baseline + k/m (x - baseline) for k = step + 1 (the right Riemann sum of Eq. 1)."""
    alpha = tf.cast(step + 1, x.dtype) / tf.cast(steps, x.dtype)
    return baseline + per_row(alpha, x) * (x - baseline)


class PathRule:
    """An integration rule (`core.integration`) at m = `steps` points, as the path aggregators use it.

    Point k is `baseline + alpha_k (x - baseline)`. The engine averages over the m draws, so a
    point's gradient is scaled by m w_k (None where every w_k = 1/m): the mean is then Σ_k w_k g_k.
    """

    def __init__(self, steps, method=DEFAULT_METHOD):
        self.method = check_method(method)
        self.steps = check_steps(self.method, int(steps))
        alphas, weights = nodes_and_weights(self.method, self.steps)
        self.alphas = alphas
        self.scales = None if self.method in (RIEMANN_RIGHT, RIEMANN_LEFT, RIEMANN_MIDDLE) else weights * self.steps

    def point(self, x, baseline, step):
        """The path point of draw `step` (one per row of `x`)."""
        if self.method == RIEMANN_RIGHT:
            return _path_point(x, baseline, step, self.steps)  # alpha = k/m as one float division, as Eq. 1
        alpha = tf.gather(tf.constant(self.alphas, x.dtype), step)
        return baseline + per_row(alpha, x) * (x - baseline)

    def scale(self, step, like):
        """m w_k of each row's draw, shaped to broadcast against `like`; None for equal weights."""
        if self.scales is None:
            return None
        return per_row(tf.gather(tf.constant(self.scales, like.dtype), step), like)


class StraightPath(Aggregator):
    """Integrated Gradients' path (PGIG paper Eq. 1, 4) with an integration rule (`core.integration`).

    Point k of sample x is `baseline + alpha_k (x - baseline)`; the result is
    `(x - baseline) * Σ_k w_k gradient(point k)`. The default rule, right Riemann, has
    alpha_k = k/m and w_k = 1/m, k = 1..m.
    """

    def __init__(self, steps, baseline, method=DEFAULT_METHOD):
        self.rule = PathRule(steps, method)
        self.draws = self.rule.steps
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index, seed):
        point = self.rule.point(x, tf.cast(self.baseline, x.dtype), draw_index)
        return point, self.rule.scale(draw_index, x)

    def finish(self, x, reduced):
        return (x - tf.cast(self.baseline, x.dtype)) * reduced


class RefinedPath(Aggregator):
    """Integrated Gradients' path refined until it converges (steps="auto"; `core.engine.RefiningEngine`).

    `levels` are `core.integration.refinement_levels(method, max_steps)`; a sample stops at the
    first level whose map, like those of the `agreements` - 1 levels before, differs from its
    predecessor by at most `tolerance` (relative L2), and, with `check_completeness`, whose
    completeness gap |f(x) - f(x̄) - Σφ| is at most `tolerance` |f(x) - f(x̄)|.
    """

    def __init__(self, levels, baseline, tolerance, check_completeness, agreements=AUTO_AGREEMENTS):
        self.levels = levels
        self.baseline = np.asarray(baseline, dtype=np.float32)
        self.tolerance = float(tolerance)
        self.check_completeness = bool(check_completeness)
        self.agreements = int(agreements)  # successive refinements within the tolerance that stop a sample

    def finish(self, x, reduced):
        return (x - tf.cast(self.baseline, x.dtype)) * reduced


class GaussianNoise(Aggregator):
    """SmoothGrad family: gradients at x + eps, eps ~ N(0, sigma^2) (App. A.2, A.4).

    sigma = noise_scale * (max - min) of each sample. statistic 'mean' is SmoothGrad,
    'mean_square' SmoothGrad^2, 'variance' VarGrad (population variance over the draws).
    """

    def __init__(self, samples, noise_scale, statistic=MEAN):
        self.draws = int(samples)
        self.noise_scale = float(noise_scale)
        self.statistic = statistic

    def points(self, x, sample_index, draw_index, seed):
        noise = sample_noise(x, seed, sample_index, draw_index, self.draws, self.noise_scale, self.segments)
        return x + noise, None


class NoisyPath(Aggregator):
    """SmoothGrad-IG (App. A.3): (x - x̄)/m Σ_k 1/n Σ_n ∇f(x̄ + k/m (x'_n - x̄)), x'_n = x + eps_n.

    With another integration rule: (x - x̄) Σ_k w_k 1/n Σ_n ∇f(x̄ + alpha_k (x'_n - x̄)).
    """

    def __init__(self, steps, samples, noise_scale, baseline, method=DEFAULT_METHOD):
        self.rule = PathRule(steps, method)
        self.steps, self.samples = self.rule.steps, int(samples)
        self.draws = self.steps * self.samples
        self.noise_scale = float(noise_scale)
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps  # one noisy input per `steps` points
        noisy = x + sample_noise(x, seed, sample_index, noise_index, self.samples, self.noise_scale, self.segments)
        return self.rule.point(noisy, tf.cast(self.baseline, x.dtype), step), self.rule.scale(step, x)

    def finish(self, x, reduced):
        return (x - tf.cast(self.baseline, x.dtype)) * reduced


class UniformNoiseBaselines(Aggregator):
    """IG with uniform-noise baselines (SmoothTaylor paper Eq. 3): the mean of N IG maps.

    Baseline n of sample x is uniform noise in [min(x), max(x)]; the draws are the N x m
    path points, each weighted by its own (x - baseline_n) (and m w_k for a rule with unequal weights).
    """

    def __init__(self, steps, samples, method=DEFAULT_METHOD):
        self.rule = PathRule(steps, method)
        self.steps, self.samples = self.rule.steps, int(samples)
        self.draws = self.steps * self.samples

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps
        low, high = sample_min_max(x, self.segments)
        ids = row_ids(sample_index, noise_index, self.samples)
        unit = keyed_rows(seed, UNIFORM_BASELINE_STREAM, ids, x, UNIFORM)
        baseline = low + unit * (high - low)
        scale = self.rule.scale(step, x)
        return self.rule.point(x, baseline, step), (x - baseline) if scale is None else (x - baseline) * scale


class BackgroundBaselines(Aggregator):
    """Expected Gradients (App. A.5): E over x̄ ~ background, alpha ~ U(0, 1) of (x - x̄) ∇f(x̄ + alpha (x - x̄))."""

    def __init__(self, samples, background):
        self.draws = int(samples)
        self.background = background  # a tf.Variable (num_background, *sample_shape)

    def points(self, x, sample_index, draw_index, seed):
        count = tf.shape(self.background, out_type=tf.int64)[0]
        ids = row_ids(sample_index, draw_index, self.draws)
        # one random 32-bit word per point picks its background row (modulo bias < count / 2^32)
        words = keyed_rows(seed, BACKGROUND_INDEX_STREAM, ids, tf.zeros_like(ids), WORDS)
        index = tf.math.floormod(tf.cast(words, tf.int64), count)
        baseline = tf.cast(tf.gather(self.background, index), x.dtype)
        alpha = keyed_rows(seed, ALPHA_STREAM, ids, tf.zeros_like(ids, dtype=x.dtype), UNIFORM)
        return baseline + per_row(alpha, x) * (x - baseline), x - baseline


class TaylorRoots(Aggregator):
    """SmoothTaylor (Goh et al., Eq. 6, 8): 1/R Σ_r (x - z_r) ∇f(z_r), roots z_r = x + eps_r."""

    def __init__(self, samples, noise_scale):
        self.draws = int(samples)
        self.noise_scale = float(noise_scale)

    def points(self, x, sample_index, draw_index, seed):
        noise = sample_noise(x, seed, sample_index, draw_index, self.draws, self.noise_scale, self.segments)
        return x + noise, -noise


def per_row(values, x):
    """`values` (one per row) shaped to broadcast against `x`."""
    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))
