"""Aggregators: where gradients are taken for each input and how they are reduced to one map.

An aggregator gives, for sample `i` and draw `s`, an evaluation point and a multiplier; the
engine reduces `multiplier * gradient(point)` over the draws with the aggregator's
`statistic` ('mean', 'mean_square' or 'variance') and hands the result to `finish`. All
methods are TensorFlow ops, run inside the engine's compiled loop.

Randomness is counter-based: the noise of sample `i`, draw key `k` (of K keys per sample) is
row g = i K + k of a Philox stream keyed by (seed, quantity), so it does not depend on how the
points are chunked, and the same seed gives bit-identical results in every call and process.
A chunk's points have consecutive g (repeats allowed), so one random op draws all their rows.
"""

import contextlib

import numpy as np
import tensorflow as tf

MEAN, MEAN_SQUARE, VARIANCE = "mean", "mean_square", "variance"

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
        noise = sample_noise(x, seed, sample_index, draw_index, self.draws, self.noise_scale, self.segments)
        return x + noise, None


class NoisyPath(Aggregator):
    """SmoothGrad-IG (App. A.3): (x - x̄)/m Σ_k 1/n Σ_n ∇f(x̄ + k/m (x'_n - x̄)), x'_n = x + eps_n."""

    def __init__(self, steps, samples, noise_scale, baseline):
        self.steps, self.samples = int(steps), int(samples)
        self.draws = self.steps * self.samples
        self.noise_scale = float(noise_scale)
        self.baseline = np.asarray(baseline, dtype=np.float32)

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps  # one noisy input per `steps` points
        noisy = x + sample_noise(x, seed, sample_index, noise_index, self.samples, self.noise_scale, self.segments)
        return _path_point(noisy, tf.cast(self.baseline, x.dtype), step, self.steps), None

    def finish(self, x, reduced):
        return (x - tf.cast(self.baseline, x.dtype)) * reduced


class UniformNoiseBaselines(Aggregator):
    """IG with uniform-noise baselines (SmoothTaylor paper Eq. 3): the mean of N IG maps.

    Baseline n of sample x is uniform noise in [min(x), max(x)]; the draws are the N x m
    path points, each weighted by its own (x - baseline_n).
    """

    def __init__(self, steps, samples):
        self.steps, self.samples = int(steps), int(samples)
        self.draws = self.steps * self.samples

    def points(self, x, sample_index, draw_index, seed):
        noise_index, step = draw_index // self.steps, draw_index % self.steps
        low, high = _sample_min_max(x, self.segments)
        ids = _row_ids(sample_index, noise_index, self.samples)
        unit = _keyed_rows(seed, _UNIFORM_BASELINE, ids, x, _UNIFORM)
        baseline = low + unit * (high - low)
        return _path_point(x, baseline, step, self.steps), x - baseline


class BackgroundBaselines(Aggregator):
    """Expected Gradients (App. A.5): E over x̄ ~ background, alpha ~ U(0, 1) of (x - x̄) ∇f(x̄ + alpha (x - x̄))."""

    def __init__(self, samples, background):
        self.draws = int(samples)
        self.background = background  # a tf.Variable (num_background, *sample_shape)

    def points(self, x, sample_index, draw_index, seed):
        count = tf.shape(self.background, out_type=tf.int64)[0]
        ids = _row_ids(sample_index, draw_index, self.draws)
        # one random 32-bit word per point picks its background row (modulo bias < count / 2^32)
        words = _keyed_rows(seed, _BACKGROUND_INDEX, ids, tf.zeros_like(ids), _WORDS)
        index = tf.math.floormod(tf.cast(words, tf.int64), count)
        baseline = tf.cast(tf.gather(self.background, index), x.dtype)
        alpha = _keyed_rows(seed, _ALPHA, ids, tf.zeros_like(ids, dtype=x.dtype), _UNIFORM)
        return baseline + per_row(alpha, x) * (x - baseline), x - baseline


class TaylorRoots(Aggregator):
    """SmoothTaylor (Goh et al., Eq. 6, 8): 1/R Σ_r (x - z_r) ∇f(z_r), roots z_r = x + eps_r."""

    def __init__(self, samples, noise_scale):
        self.draws = int(samples)
        self.noise_scale = float(noise_scale)

    def points(self, x, sample_index, draw_index, seed):
        noise = sample_noise(x, seed, sample_index, draw_index, self.draws, self.noise_scale, self.segments)
        return x + noise, -noise


def sample_noise(x, seed, sample_index, key, keys_per_sample, noise_scale, segments=None):
    """N(0, sigma^2) noise per row of `x`, sigma = noise_scale * (max - min) of that row, keyed by (seed, i, key).

    `keys_per_sample` is K of the row ids i K + key, which must be consecutive (see `_keyed_rows`).
    With `segments` (sizes along a flat row: one per model input) sigma is per segment.
    """
    low, high = _sample_min_max(x, segments)
    unit = _keyed_rows(seed, _NORMAL, _row_ids(sample_index, key, keys_per_sample), x, _NORMAL_VALUES)
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


def _row_ids(sample_index, key, keys_per_sample):
    """Row g = i K + k of the random stream for sample i, key k (K keys per sample)."""
    return tf.cast(sample_index, tf.int64) * keys_per_sample + tf.cast(key, tf.int64)


# What a stream row holds: standard normals, uniforms in [0, 1), or raw 32-bit words.
_NORMAL_VALUES, _UNIFORM, _WORDS = "normal", "uniform", "words"

# Philox is named explicitly (TF's choice on CPU today), so the streams do not change with TF's
# 'auto_select'. Under jit_compile XLA's Philox runs instead: other, equally valid numbers.
_PHILOX = 1  # TF's RNG_ALG_PHILOX
_PER_BLOCK = 4  # one Philox block (one counter step) gives 4 float32 normals, uniforms or uint32 words

# XLA's Philox lays a call's elements out over the counter differently from TF's kernels, so a
# row drawn inside a longer call would depend on the chunk: under XLA every row is its own call.
_ONE_CALL_PER_ROW = [False]


@contextlib.contextmanager
def one_random_call_per_row(enabled=True):
    """While tracing under XLA (jit_compile): `_keyed_rows` draws each row with its own op."""
    previous = _ONE_CALL_PER_ROW[0]
    _ONE_CALL_PER_ROW[0] = bool(enabled)
    try:
        yield
    finally:
        _ONE_CALL_PER_ROW[0] = previous


def _keyed_rows(seed, stream, ids, like, values):
    """Row `ids[j]` of the Philox stream keyed by (seed, stream), shaped and typed like `like[j]`.

    Row g is the stream's elements from g w on, w = the row's size rounded up to a whole Philox
    block, so a row's numbers depend on (seed, stream, g) only: any chunk of points gets the same
    numbers. `ids` must be non-decreasing with steps of 0 or 1 (consecutive points, repeats for
    points that share a draw): one op then draws rows ids[0] .. ids[0] + len(ids) - 1, a static
    count under XLA, and each point gathers its own.
    """
    row_size = tf.reduce_prod(tf.shape(like)[1:])
    blocks = (row_size + _PER_BLOCK - 1) // _PER_BLOCK
    key = tf.reshape(tf.cast(tf.cast(seed, tf.int64) * 4 + stream, tf.uint64), [1])

    def draw(first_row, num_rows):  # rows first_row .. first_row + num_rows - 1 in one op
        counter = tf.stack([tf.cast(first_row * tf.cast(blocks, tf.int64), tf.uint64), tf.constant(0, tf.uint64)])
        shape = tf.stack([num_rows, blocks * _PER_BLOCK])
        if values == _NORMAL_VALUES:
            op, dtype = tf.raw_ops.StatelessRandomNormalV2, tf.float32
        elif values == _UNIFORM:
            op, dtype = tf.raw_ops.StatelessRandomUniformV2, tf.float32
        else:
            op, dtype = tf.raw_ops.StatelessRandomUniformFullIntV2, tf.uint32
        return op(shape=shape, key=key, counter=counter, alg=_PHILOX, dtype=dtype)[:, :row_size]

    if _ONE_CALL_PER_ROW[0]:
        dtype = tf.uint32 if values == _WORDS else tf.float32
        rows = tf.map_fn(lambda g: draw(g, 1)[0], ids, fn_output_signature=dtype)
    else:
        first = tf.cond(tf.size(ids) > 0, lambda: ids[0], lambda: tf.constant(0, tf.int64))
        rows = tf.gather(draw(first, tf.size(ids)), ids - first)
    if values != _WORDS:
        rows = tf.cast(rows, like.dtype)
    return tf.reshape(rows, tf.shape(like))


def per_row(values, x):
    """`values` (one per row) shaped to broadcast against `x`."""
    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))
