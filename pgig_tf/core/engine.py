"""The compiled gradient loop: every method's sample points, evaluated in chunks inside one tf.function."""

import numpy as np
import tensorflow as tf

from pgig_tf.core.aggregators import MEAN_SQUARE, VARIANCE, RefinedPath, per_row
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
            result = function(tf.constant(x), tf.constant(targets, dtype=tf.int32), seed, first_index)
            return tf.nest.map_structure(lambda tensor: tensor.numpy(), result)
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
            return tf.cond(tf.shape(x)[0] > 0, lambda: loop(x, targets, offset), lambda: self._empty_result(x))

        results = strategy.run(replica, args=(x_shards, target_shards, offsets))
        return tf.nest.map_structure(lambda values: strategy.gather(values, axis=0), results)

    def _empty_result(self, x):
        """What `_attribute` returns for no samples (a replica's empty shard)."""
        return tf.zeros_like(x)

    def output_values(self, points):
        """The explained output (numpy, one row per point, flattened) of the engine's points, e.g. f(x) and f(x̄).

        Evaluated `batch_size` points at a time through the rule's forward pass (which computes the
        model's values) in the engine's compute dtype, on the default device.
        """
        key = ("outputs", tuple(points.shape[1:]), np.dtype(points.dtype).name)
        if key not in self._functions:
            signature = [tf.TensorSpec((None,) + tuple(points.shape[1:]), points.dtype)]
            self._functions[key] = tf.function(self._output_values, input_signature=signature)
        return self._functions[key](tf.constant(points)).numpy()

    def _output_values(self, points):
        count = tf.shape(points)[0]
        values = tf.TensorArray(points.dtype, size=(count + self.batch_size - 1) // self.batch_size, infer_shape=False)
        for chunk in tf.range(values.size()):
            values = values.write(chunk, self._forward(points[chunk * self.batch_size : (chunk + 1) * self.batch_size]))
        return values.concat()

    def _forward(self, points):
        """The explained output on `points`, flattened to one row per point, in the points' dtype."""
        with compute_dtype_scope(self.model, self.compute_dtype):
            outputs = self.rule.forward(self.model, points)
            return tf.cast(tf.reshape(outputs, [tf.shape(outputs)[0], -1]), points.dtype)

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


class RefiningEngine(GradientEngine):
    """steps="auto": a `RefinedPath` aggregator's levels, evaluated until each sample converges, in one compiled call.

    Level by level (a `tf.while_loop`), only the samples that have not converged are evaluated,
    and only at the level's new nodes (`core.integration.refinement_levels`), through the same
    chunked loop as `GradientEngine` (`batch_size` points at a time, across samples). After a
    level, a sample's map φ = (x - x̄) ⊙ S is compared with the previous level's: it has
    converged when ||φ - φ_prev||₂ <= tolerance ||φ||₂ held for `aggregator.agreements` (default
    `core.integration.AUTO_AGREEMENTS`, 2) successive levels and, with `check_completeness`, |f(x) - f(x̄) - Σφ| <= tolerance |f(x) - f(x̄)|;
    converged samples keep their map. A sample still open after the last level keeps that
    level's map.

    A call returns a dict of per-sample arrays: 'maps', 'steps' (the points of the rule its map
    uses), 'evaluations' (gradient evaluations spent on it), 'converged' (1 if it met the
    tolerance, else 0) and 'delta' (f(x) - f(x̄) - Σφ).
    """

    def __init__(self, model, rule, aggregator, **options):
        if not isinstance(aggregator, RefinedPath):
            raise TypeError(f"RefiningEngine needs a RefinedPath aggregator, got {type(aggregator).__name__}")
        super().__init__(model, rule, aggregator, **options)

    def _empty_result(self, x):
        count = tf.zeros([0], tf.int32)
        return {
            "maps": tf.zeros_like(x),
            "steps": count,
            "evaluations": count,
            "converged": count,
            "delta": tf.zeros([0], x.dtype),
        }

    def _selected_values(self, x, targets):
        """f(x_i)[targets_i] for every sample, `batch_size` samples at a time."""
        count = tf.shape(x)[0]
        values = tf.zeros([count], x.dtype)
        for chunk in tf.range((count + self.batch_size - 1) // self.batch_size):
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            # a fixed chunk size (the last chunk repeats its last sample), which XLA needs
            rows = tf.minimum(chunk * self.batch_size + tf.range(tf.minimum(self.batch_size, count)), count - 1)
            outputs = self._forward(tf.gather(x, rows))
            selected = tf.gather(outputs, tf.gather(targets, rows), axis=1, batch_dims=1)
            values = tf.tensor_scatter_nd_update(values, rows[:, None], selected)
        return values

    def _attribute(self, x, targets, seed, offset=None):
        aggregator = self.aggregator
        dtype = x.dtype
        levels = aggregator.levels
        sizes = [len(level.alphas) for level in levels]
        alphas = tf.constant(np.concatenate([level.alphas for level in levels]), dtype)
        weights = tf.constant(np.concatenate([level.weights for level in levels]), dtype)
        starts = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int32)
        counts = tf.constant(sizes, tf.int32)
        level_steps = tf.constant([level.steps for level in levels], tf.int32)
        carries = tf.constant([level.carry for level in levels], dtype)
        tolerance = tf.constant(aggregator.tolerance, dtype)
        baseline = tf.cast(aggregator.baseline, dtype)
        num_samples = tf.shape(x)[0]
        axes = list(range(1, x.shape.rank))

        def rows_of(flags):  # a per-sample flag shaped to broadcast against x
            return tf.reshape(flags, [-1] + [1] * (x.shape.rank - 1))

        # f(x) - f(x̄) of each sample's explained output, for the completeness gap
        baseline_row = tf.broadcast_to(baseline, tf.shape(x[:1]))
        baseline_value = tf.gather(self._forward(baseline_row)[0], targets)
        difference = self._selected_values(x, targets) - baseline_value

        estimate = tf.zeros_like(x)  # S = Σ_k w_k gradient(point k) of each sample's last level
        active = tf.ones([num_samples], tf.bool)
        converged = tf.zeros([num_samples], tf.bool)
        steps = tf.zeros([num_samples], tf.int32)
        evaluations = tf.zeros([num_samples], tf.int32)
        calm = tf.zeros([num_samples], tf.int32)  # successive refinements that changed the map by <= tolerance
        level = tf.constant(0)
        while tf.logical_and(level < len(levels), tf.reduce_any(active)):
            count, start = counts[level], starts[level]
            # the open samples first, in order: the r-th point row of this level belongs to order[r // count]
            order = tf.argsort(tf.cast(tf.logical_not(active), tf.int32), stable=True)
            total = tf.reduce_sum(tf.cast(active, tf.int32)) * count
            level_sum = tf.zeros_like(x)
            chunk = tf.constant(0)
            # a while loop, not a for over tf.range: XLA cannot compile a range of data-dependent length
            while chunk * self.batch_size < total:
                tf.autograph.experimental.set_loop_options(parallel_iterations=1)
                level_sum += self._refine_chunk(
                    x, targets, baseline, order, chunk, total, count, start, alphas, weights
                )
                chunk += 1
            refined = tf.where(rows_of(active), carries[level] * estimate + level_sum, estimate)
            maps, previous = (x - baseline) * refined, (x - baseline) * estimate
            change = tf.norm(tf.reshape(maps - previous, [num_samples, -1]), axis=1)
            size = tf.norm(tf.reshape(maps, [num_samples, -1]), axis=1)
            calm = tf.where(tf.logical_and(level > 0, change <= tolerance * size), calm + 1, 0)
            done = calm >= aggregator.agreements
            if aggregator.check_completeness:
                gap = tf.abs(difference - tf.reduce_sum(maps, axis=axes))
                done = tf.logical_and(done, gap <= tolerance * tf.abs(difference))
            done = tf.logical_and(done, active)
            steps = tf.where(active, level_steps[level], steps)
            evaluations = tf.where(active, evaluations + count, evaluations)
            converged = tf.logical_or(converged, done)
            active = tf.logical_and(active, tf.logical_not(done))
            estimate = refined
            level += 1
        maps = aggregator.finish(x, estimate)
        return {
            "maps": maps,
            "steps": steps,
            "evaluations": evaluations,
            "converged": tf.cast(converged, tf.int32),
            "delta": difference - tf.reduce_sum(maps, axis=axes),
        }

    def _refine_chunk(self, x, targets, baseline, order, chunk, total, count, start, alphas, weights):
        """Σ w_k gradient(point k) per sample over one chunk of a level's `total` (open sample, new node) pairs.

        Pair r is node `start + r % count` of sample `order[r // count]`.
        """
        if self.jit_compile:  # static chunk size (`total` depends on the data): padding repeats the last pair, weight 0
            flat = chunk * self.batch_size + tf.range(self.batch_size)
            valid = tf.cast(flat < total, x.dtype)
            flat = tf.minimum(flat, total - 1)
        else:
            flat = tf.range(chunk * self.batch_size, tf.minimum((chunk + 1) * self.batch_size, total))
            valid = None
        sample_index = tf.gather(order, flat // count)
        node = start + flat % count
        rows = tf.gather(x, sample_index)
        points = baseline + per_row(tf.gather(alphas, node), rows) * (rows - baseline)
        weight = tf.gather(weights, node)
        if valid is not None:
            weight = weight * valid
        value = self._gradients(points, tf.gather(targets, sample_index)) * per_row(weight, rows)
        return tf.math.unsorted_segment_sum(value, sample_index, tf.shape(x)[0])
