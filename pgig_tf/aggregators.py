"""Aggregators: where gradients are taken for each input and how they are reduced to one map.

An aggregator gives, for sample `i` and draw `s`, an evaluation point and a multiplier; the
engine reduces `multiplier * gradient(point)` over the draws with the aggregator's
`statistic` ('mean', 'mean_square' or 'variance') and hands the result to `finish`. All
methods are TensorFlow ops, run inside the engine's compiled loop.

Randomness is counter-based: the noise of sample `i`, draw key `k` is drawn from a stateless
generator seeded by (seed, i, k), so it does not depend on how the points are chunked, and
the same seed gives bit-identical results in every call and process.
"""

import numpy as np
import tensorflow as tf

MEAN, MEAN_SQUARE, VARIANCE = "mean", "mean_square", "variance"

# Philox named explicitly (TF's choice on CPU today), so the streams do not change with TF's
# 'auto_select'. Under jit_compile XLA's Philox runs instead: other, equally valid numbers.
_ALG = "philox"

# Separate random streams for the different random quantities of one point.
_NORMAL, _UNIFORM_BASELINE, _BACKGROUND_INDEX, _ALPHA = range(4)


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


class StraightPath(Aggregator):
    """Integrated Gradients' path (PGIG paper Eq. 1, 4): right Riemann sum over k = 1..m.

    Point k of sample x is `baseline + k/m (x - baseline)`; the result is
    `(x - baseline) * mean_k gradient(point k)`.
    """

    def __init__(self, steps, baseline):
        self.draws = int(steps)
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index, seed):
        return _path_point(x, tf.cast(self.baseline, x.dtype), draw_index, self.draws), None

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
        return x + sample_noise(x, seed, sample_index, draw_index, self.noise_scale, self.segments), None


class NoisyPath(Aggregator):
    """SmoothGrad-IG (App. A.3): (x - x̄)/m Σ_k 1/n Σ_n ∇f(x̄ + k/m (x'_n - x̄)), x'_n = x + eps_n."""

    def __init__(self, steps, samples, noise_scale, baseline):
        self.steps = int(steps)
        self.draws = int(steps) * int(samples)
        self.noise_scale = float(noise_scale)
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps
        noisy = x + sample_noise(x, seed, sample_index, noise_index, self.noise_scale, self.segments)
        return _path_point(noisy, tf.cast(self.baseline, x.dtype), step, self.steps), None

    def finish(self, x, reduced):
        return (x - tf.cast(self.baseline, x.dtype)) * reduced


class UniformNoiseBaselines(Aggregator):
    """IG with uniform-noise baselines (SmoothTaylor paper Eq. 3): the mean of N IG maps.

    Baseline n of sample x is uniform noise in [min(x), max(x)]; the draws are the N x m
    path points, each weighted by its own (x - baseline_n).
    """

    def __init__(self, steps, samples):
        self.steps = int(steps)
        self.draws = int(steps) * int(samples)

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps
        low, high = _sample_min_max(x, self.segments)
        unit = _per_point_random(seed, _UNIFORM_BASELINE, sample_index, noise_index, x, tf.random.stateless_uniform)
        baseline = low + unit * (high - low)
        return _path_point(x, baseline, step, self.steps), x - baseline


class BackgroundBaselines(Aggregator):
    """Expected Gradients (App. A.5): E over x̄ ~ background, alpha ~ U(0, 1) of (x - x̄) ∇f(x̄ + alpha (x - x̄))."""

    def __init__(self, samples, background):
        self.draws = int(samples)
        self.background = background  # a tf.Variable (num_background, *sample_shape)

    def points(self, x, sample_index, draw_index, seed):
        count = tf.shape(self.background, out_type=tf.int64)[0]
        ids = _point_ids(seed, _BACKGROUND_INDEX, sample_index, draw_index)
        index = tf.map_fn(
            lambda s: tf.random.stateless_uniform([], s, minval=0, maxval=count, dtype=tf.int64, alg=_ALG),
            ids, fn_output_signature=tf.int64,
        )
        baseline = tf.cast(tf.gather(self.background, index), x.dtype)
        ids = _point_ids(seed, _ALPHA, sample_index, draw_index)
        alpha = tf.map_fn(lambda s: tf.random.stateless_uniform([], s, dtype=x.dtype, alg=_ALG), ids,
                          fn_output_signature=x.dtype)
        return baseline + per_row(alpha, x) * (x - baseline), x - baseline


class TaylorRoots(Aggregator):
    """SmoothTaylor (Goh et al., Eq. 6, 8): 1/R Σ_r (x - z_r) ∇f(z_r), roots z_r = x + eps_r."""

    def __init__(self, samples, noise_scale):
        self.draws = int(samples)
        self.noise_scale = float(noise_scale)

    def points(self, x, sample_index, draw_index, seed):
        noise = sample_noise(x, seed, sample_index, draw_index, self.noise_scale, self.segments)
        return x + noise, -noise


def sample_noise(x, seed, sample_index, key, noise_scale, segments=None):
    """N(0, sigma^2) noise per row of `x`, sigma = noise_scale * (max - min) of that row, keyed by (seed, i, key).

    With `segments` (sizes along a flat row: one per model input) sigma is per segment.
    """
    low, high = _sample_min_max(x, segments)
    unit = _per_point_random(seed, _NORMAL, sample_index, key, x, tf.random.stateless_normal)
    return unit * (noise_scale * (high - low))


def _sample_min_max(x, segments=None):
    """Per-row min and max of `x`; with `segments` of a flat row, each segment's own, spread over it."""
    if segments is None:
        axes = list(range(1, x.shape.rank))
        return (tf.reduce_min(x, axis=axes, keepdims=True), tf.reduce_max(x, axis=axes, keepdims=True))
    pieces = tf.split(x, segments, axis=1)
    low = tf.stack([tf.reduce_min(p, axis=1) for p in pieces], axis=1)
    high = tf.stack([tf.reduce_max(p, axis=1) for p in pieces], axis=1)
    return tf.repeat(low, segments, axis=1), tf.repeat(high, segments, axis=1)


def _point_ids(seed, stream, sample_index, key):
    """One stateless seed pair per point: (seed, stream) and (sample, key)."""
    first = tf.fill(tf.shape(sample_index), tf.cast(seed, tf.int64) * 4 + stream)
    second = tf.cast(sample_index, tf.int64) * (2**31) + tf.cast(key, tf.int64)
    return tf.stack([first, second], axis=1)


def _per_point_random(seed, stream, sample_index, key, x, generator):
    ids = _point_ids(seed, stream, sample_index, key)
    shape = tf.shape(x)[1:]
    return tf.map_fn(lambda s: generator(shape, s, dtype=x.dtype, alg=_ALG), ids,
                     fn_output_signature=tf.TensorSpec(x.shape[1:], x.dtype))


def per_row(values, x):
    """`values` (one per row) shaped to broadcast against `x`."""
    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))
