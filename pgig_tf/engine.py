"""The compiled gradient loop: every method's sample points, evaluated in chunks inside one tf.function."""

import numpy as np
import tensorflow as tf

from .aggregators import MEAN_SQUARE, VARIANCE, one_random_call_per_row, per_row
from .precision import check_compute_dtype, compute_dtype_scope

START_ONE = "one"  # backward pass starts with 1.0 (gradients, IG, PGIG)
START_VALUE = "value"  # starts with the selected output's value (PatternNet/PatternAttribution, §3.4)


class GradientEngine:
    """Evaluates `aggregator`'s points for a batch of inputs through `rule`'s rewritten model.

    The n samples x `aggregator.draws` points are flattened into one axis and evaluated
    `batch_size` at a time in a `tf.while_loop`; each chunk's points are built on the device,
    and `multiplier * gradient` is reduced per sample as it goes (a running mean, and M2 for
    the variance), so memory grows with `batch_size` and n, never with the
    number of draws. One trace per input shape and dtype (the batch axis and the seed are
    tensors), reused by every later call.

    compute_dtype='bfloat16' evaluates the model in bfloat16 (points, statistics and the result
    stay float32); jit_compile=True compiles the loop with XLA.
    """

    def __init__(self, model, rule, aggregator, start=START_ONE, batch_size=64, compute_dtype=None,
                 jit_compile=False):
        if start not in (START_ONE, START_VALUE):
            raise ValueError(f"start must be {START_ONE!r} or {START_VALUE!r}, got {start!r}")
        self.model = model
        self.rule = rule
        self.aggregator = aggregator
        self.start = start
        self.batch_size = int(batch_size)
        self.compute_dtype = check_compute_dtype(compute_dtype)
        self.jit_compile = bool(jit_compile)
        self._functions = {}

    def __call__(self, x, targets, seed=0):
        """The attributions (numpy, shaped like `x`) of output `targets[i]` for each sample `x[i]`."""
        function = self._function_for(x.shape[1:], x.dtype)
        seed = tf.constant(seed, dtype=tf.int64)
        try:
            return function(tf.constant(x), tf.constant(targets, dtype=tf.int32), seed).numpy()
        except tf.errors.UnimplementedError as error:
            if not self.jit_compile:
                raise
            # e.g. max-pool gradients have no deterministic XLA kernel once
            # tf.config.experimental.enable_op_determinism() is on
            raise ValueError(
                f"XLA cannot compile this model's gradient loop (jit_compile=True): {error.message.splitlines()[0]} "
                "Use jit_compile=False (the default), which runs the same loop without XLA."
            ) from None

    @property
    def tracing_count(self):
        """How many times the compiled loops have been traced (one per input shape and dtype)."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

    def _function_for(self, sample_shape, dtype):
        key = (tuple(sample_shape), np.dtype(dtype).name)
        if key not in self._functions:
            signature = [
                tf.TensorSpec((None,) + tuple(sample_shape), dtype),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((), tf.int64),
            ]
            self._functions[key] = tf.function(self._attribute, input_signature=signature,
                                               jit_compile=self.jit_compile)
        return self._functions[key]

    def _gradients(self, points, targets):
        """d(seed * output[target]) / d points, one row per point, through the rule's backward pass."""
        # the scope also covers the backward pass: custom gradients read the layers' dtype
        with compute_dtype_scope(self.model, self.compute_dtype):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(points)
                outputs = self.rule.forward(self.model, points)
                outputs = tf.cast(tf.reshape(outputs, [tf.shape(outputs)[0], -1]), points.dtype)
                selected = tf.gather(outputs, targets, axis=1, batch_dims=1)
                if self.start == START_VALUE:
                    selected = selected * tf.stop_gradient(selected)
                objective = tf.reduce_sum(selected)
            return tape.gradient(objective, points, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _attribute(self, x, targets, seed):
        aggregator = self.aggregator
        draws = aggregator.draws
        num_samples = tf.shape(x)[0]
        total = num_samples * draws
        num_chunks = (total + self.batch_size - 1) // self.batch_size
        # running statistics per sample: count, mean, M2 (M2 only used for the variance)
        count = tf.zeros([num_samples], x.dtype)
        mean = tf.zeros_like(x)
        m2 = tf.zeros_like(x)
        for chunk in tf.range(num_chunks):
            # one chunk at a time: parallel iterations would hold several chunks' activations
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            if self.jit_compile:
                # XLA needs a static chunk size: the last chunk is padded with repeats of the
                # last point, which get weight 0 in the merge
                flat = chunk * self.batch_size + tf.range(tf.minimum(self.batch_size, total))
                valid = tf.cast(flat < total, x.dtype)
                flat = tf.minimum(flat, total - 1)
            else:
                flat = tf.range(chunk * self.batch_size, tf.minimum((chunk + 1) * self.batch_size, total))
                valid = None
            sample_index, draw_index = flat // draws, flat % draws
            with one_random_call_per_row(self.jit_compile):
                points, multiplier = aggregator.points(tf.gather(x, sample_index), sample_index, draw_index, seed)
            value = self._gradients(points, tf.gather(targets, sample_index))
            if multiplier is not None:
                value = value * multiplier
            if aggregator.statistic == MEAN_SQUARE:
                value = tf.square(value)
            count, mean, m2 = _merge(count, mean, m2, value, sample_index, num_samples,
                                     with_m2=aggregator.statistic == VARIANCE, valid=valid)
        reduced = m2 / tf.cast(draws, x.dtype) if aggregator.statistic == VARIANCE else mean
        return aggregator.finish(x, reduced)


def _merge(count, mean, m2, value, sample_index, num_samples, with_m2, valid=None):
    """Merges one chunk's values into per-sample running count/mean/M2 (Chan et al.'s parallel update).

    `valid` (1/0 per row, or None for all 1) leaves padding rows out.
    """
    ones = tf.ones_like(sample_index, dtype=value.dtype) if valid is None else valid
    if valid is not None:
        value = value * per_row(valid, value)
    chunk_count = tf.math.unsorted_segment_sum(ones, sample_index, num_samples)
    chunk_sum = tf.math.unsorted_segment_sum(value, sample_index, num_samples)
    new_count = count + chunk_count
    weight = per_row(tf.math.divide_no_nan(chunk_count, new_count), value)
    chunk_mean = chunk_sum / per_row(tf.maximum(chunk_count, 1), value)
    delta = chunk_mean - mean
    new_mean = mean + delta * weight
    if not with_m2:
        return new_count, new_mean, m2
    centred = value - tf.gather(chunk_mean, sample_index)
    if valid is not None:
        centred = centred * per_row(valid, value)
    chunk_m2 = tf.math.unsorted_segment_sum(tf.square(centred), sample_index, num_samples)
    new_m2 = m2 + chunk_m2 + tf.square(delta) * per_row(count, value) * weight
    return new_count, new_mean, new_m2

