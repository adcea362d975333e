"""The compiled gradient loop: every method's sample points, evaluated in chunks inside one tf.function."""

import numpy as np
import tensorflow as tf

from pgig_tf.core.aggregators import MEAN_SQUARE, VARIANCE, per_row
from pgig_tf.core.noise import one_random_call_per_row
from pgig_tf.model.distribute import check_jit_compile, check_strategy, distribute_batch, replica_device
from pgig_tf.model.precision import check_compute_dtype, compute_dtype_scope

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

    strategy (a `tf.distribute.Strategy`, typically `MirroredStrategy`): each call splits the n
    samples into contiguous shards, one per replica (sizes differ by at most one; a replica may
    get none), runs the chunked loop on every replica inside the same compiled call and
    concatenates the shards in order (`strategy.gather`). Replicas pass the samples' indices in
    the whole call to the aggregator, so random draws and results equal one device's. The
    model may be built outside `strategy.scope()` (every replica then reads the weights from
    the one device that holds them); built under `strategy.scope()` its weights are mirrored,
    one copy per device, which several GPUs want and jit_compile=True needs.
    """

    def __init__(
        self,
        model,
        rule,
        aggregator,
        start=START_ONE,
        batch_size=64,
        compute_dtype=None,
        jit_compile=False,
        strategy=None,
    ):
        if start not in (START_ONE, START_VALUE):
            raise ValueError(f"start must be {START_ONE!r} or {START_VALUE!r}, got {start!r}")
        self.model = model
        self.rule = rule
        self.aggregator = aggregator
        self.start = start
        self.batch_size = int(batch_size)
        self.compute_dtype = check_compute_dtype(compute_dtype)
        self.jit_compile = bool(jit_compile)
        self.strategy = check_strategy(strategy)
        check_jit_compile(self.strategy, model, self.jit_compile)
        self._functions = {}

    def __call__(self, x, targets, seed=0, first_index=0):
        """The attributions (numpy, shaped like `x`) of output `targets[i]` for each sample `x[i]`.

        `first_index` is the index of `x[0]` in a longer stream of samples: random draws are keyed
        by the sample's index in the stream, so a stream explained in pieces gets the same noise
        as in one call.
        """
        function = self._function_for(x.shape[1:], x.dtype)
        seed = tf.constant(seed, dtype=tf.int64)
        first_index = tf.constant(first_index, dtype=tf.int32)
        try:
            return function(tf.constant(x), tf.constant(targets, dtype=tf.int32), seed, first_index).numpy()
        except tf.errors.InvalidArgumentError as error:
            if not (self.jit_compile and self.strategy is not None and "located in device" in error.message):
                raise
            raise ValueError(
                "XLA cannot read a variable that lives on another replica's device (jit_compile=True with a "
                f"strategy): {error.message.splitlines()[0]} Create the model (and the analyzer) under "
                "strategy.scope(), or use jit_compile=False."
            ) from None
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
        """How many times the compiled loops have been traced (one per input shape and dtype).

        With a strategy, one trace builds the loop of every replica (with jit_compile, each
        replica's XLA function is traced inside it, once per replica).
        """
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

    def _function_for(self, sample_shape, dtype):
        key = (tuple(sample_shape), np.dtype(dtype).name)
        if key not in self._functions:
            signature = [
                tf.TensorSpec((None,) + tuple(sample_shape), dtype),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((), tf.int64),
                tf.TensorSpec((), tf.int32),
            ]
            if self.strategy is None:
                self._functions[key] = tf.function(
                    self._attribute, input_signature=signature, jit_compile=self.jit_compile
                )
            else:
                # XLA compiles each replica's loop on its device; a cluster cannot span devices
                shard = tf.function(self._attribute, jit_compile=True) if self.jit_compile else self._attribute

                def distributed(x, targets, seed, first_index):
                    return self._attribute_distributed(x, targets, seed, first_index, shard)

                self._functions[key] = tf.function(distributed, input_signature=signature)
        return self._functions[key]

    def _attribute_distributed(self, x, targets, seed, first_index, shard):
        """`shard` (the chunked loop) on every replica's contiguous part of the batch, concatenated in order."""
        strategy = self.strategy
        (x_shards, target_shards), offsets = distribute_batch(strategy, [x, targets])

        def loop(x, targets, offset):
            offset = offset + first_index
            if not self.jit_compile:
                return shard(x, targets, seed, offset)
            # the call of an XLA function is placed explicitly, else it may run on the first device
            with tf.device(replica_device()):
                return shard(x, targets, seed, offset)

        def replica(x, targets, offset):
            # a replica without samples skips the loop (XLA cannot even compile it for 0 samples)
            return tf.cond(tf.shape(x)[0] > 0, lambda: loop(x, targets, offset), lambda: tf.zeros_like(x))

        return strategy.gather(strategy.run(replica, args=(x_shards, target_shards, offsets)), axis=0)

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

    def _attribute(self, x, targets, seed, offset=None):
        """The attributions of `x`; `offset` (the index of x[0] in the stream: a replica's first sample,
        or a piece's) shifts the sample indices the aggregator sees, so each sample gets its own noise."""
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
            sample_index, draw_index = flat // draws, flat % draws  # within this call's (or shard's) x
            global_index = sample_index if offset is None else sample_index + offset
            with one_random_call_per_row(self.jit_compile):
                points, multiplier = aggregator.points(tf.gather(x, sample_index), global_index, draw_index, seed)
            value = self._gradients(points, tf.gather(targets, sample_index))
            if multiplier is not None:
                value = value * multiplier
            if aggregator.statistic == MEAN_SQUARE:
                value = tf.square(value)
            count, mean, m2 = _merge(
                count, mean, m2, value, sample_index, num_samples, with_m2=aggregator.statistic == VARIANCE, valid=valid
            )
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
