"""Fitting PatternNet/PatternAttribution patterns (PGIG paper Eq. 2) in one streaming pass over data."""

import math
import os

import keras
import numpy as np
import tensorflow as tf

from pgig_tf.core.rules import check_pattern_support
from pgig_tf.files import atomic_write
from pgig_tf.model import layer_kinds as L
from pgig_tf.model.distribute import check_strategy, replica_sums, run_sharded
from pgig_tf.model.graph import consumers, leaf_layers, run_graph
from pgig_tf.model.spec import ModelSpec
from pgig_tf.patterns.patterns import Patterns
from pgig_tf.progress import Progress
from pgig_tf.validation import check_positive_int

KINDS = ("relu", "linear")


class _LayerStatistics:
    """Running sums for one Dense/Conv layer, in float64 variables (two kernels' worth of memory).

    For unit j, with x a layer input (a receptive-field patch for a convolution) and
    y_j = w_j^T x its bias-free pre-activation, over the samples where j is active (E+):
      sum_xy[:, j] = sum x y_j,  sum_x[:, j] = sum x,  active[j] = count;
    and over all samples: sum_y[j] = sum y_j, count = number of samples.
    `gate` = (scale layers, cap) says when unit j is active: 0 < v < cap with v the
    pre-activation passed through the scale layers (BatchNorm) between the layer and its
    ReLU/ReLU6; None uses every sample (the linear estimator).
    """

    def __init__(self, layer, gate):
        self.layer = layer
        self.gate = gate
        kernel_shape = tuple(layer.kernel.shape)
        units = int(np.prod(L.unit_shape(layer)))  # output channels
        self.sum_xy = tf.Variable(tf.zeros(kernel_shape, tf.float64), trainable=False)
        self.sum_x = tf.Variable(tf.zeros(kernel_shape, tf.float64), trainable=False)
        self.active = tf.Variable(tf.zeros([units], tf.float64), trainable=False)
        self.sum_y = tf.Variable(tf.zeros([units], tf.float64), trainable=False)
        self.count = tf.Variable(tf.zeros([], tf.float64), trainable=False)

    def update(self, x):
        """Adds one batch of layer inputs; returns the layer's ordinary output."""
        layer = self.layer
        kernel = tf.convert_to_tensor(layer.kernel)
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(kernel)
            z = L.linear_part(layer, x, kernel)
        pre_activation = L.add_bias(layer, z)
        mask = self._active(pre_activation, z)
        # sum over samples (and positions) of x ⊗ g is the kernel gradient of the linear
        # map with output gradient g: it walks every receptive field with the layer's own
        # padding, strides and dilation and lands in the kernel's layout.
        sum_xy = tape.gradient(z, kernel, output_gradients=z * mask)
        sum_x = tape.gradient(z, kernel, output_gradients=mask)
        del tape
        axes = _non_unit_axes(layer, z)
        # Batch sums are float32 on the device; the running totals are float64, so adding a
        # million batches loses no precision.
        self.sum_xy.assign_add(tf.cast(sum_xy, tf.float64))
        self.sum_x.assign_add(tf.cast(sum_x, tf.float64))
        self.active.assign_add(tf.cast(tf.reduce_sum(mask, axis=axes), tf.float64))
        self.sum_y.assign_add(tf.cast(tf.reduce_sum(z, axis=axes), tf.float64))
        self.count.assign_add(tf.cast(tf.size(z) // tf.shape(z)[L.unit_axis(layer)], tf.float64))
        if layer.activation is None:
            return pre_activation
        return layer.activation(pre_activation)

    def _active(self, pre_activation, z):
        """1 where the unit is active (the E+ samples), as z's dtype; all ones without a gate."""
        if self.gate is None:
            return tf.ones_like(z)
        scale_layers, cap = self.gate
        value = pre_activation
        for scale_layer in scale_layers:  # e.g. conv -> BatchNorm -> ReLU: gate on the ReLU's input
            value = scale_layer(value, training=False)
        active = value > 0
        if cap != math.inf:  # ReLU6: a saturated unit passes no signal either
            active = tf.logical_and(active, value < tf.cast(cap, value.dtype))
        return tf.cast(active, z.dtype)

    def pattern(self):
        """Eq. 2: p_j = (E+[x y] - E+[x] E[y]) / (w_j^T (E+[x y] - E+[x] E[y])); 0 for dead units."""
        unit_shape = L.unit_shape(self.layer)  # (in_channels, multiplier) for a depthwise kernel
        active = self.active.numpy().reshape(unit_shape)
        safe_active = np.where(active > 0, active, 1.0)
        mean_y = self.sum_y.numpy().reshape(unit_shape) / max(float(self.count.numpy()), 1.0)
        numerator = (self.sum_xy.numpy() - self.sum_x.numpy() * mean_y) / safe_active
        kernel = np.asarray(self.layer.kernel, dtype=np.float64)
        input_axes = tuple(range(kernel.ndim - len(unit_shape)))
        denominator = np.sum(kernel * numerator, axis=input_axes)
        usable = (active > 0) & (denominator != 0)
        pattern = np.where(usable, numerator / np.where(usable, denominator, 1.0), 0.0)
        return pattern.astype(np.asarray(self.layer.kernel).dtype)


def _non_unit_axes(layer, z):
    axis = L.unit_axis(layer) % len(z.shape)
    return [a for a in range(len(z.shape)) if a != axis]


def relu_fed_layers(model):
    """Names of the kernel layers whose output passes a ReLU or ReLU6 (see `relu_gates`)."""
    return set(relu_gates(model))


def relu_gates(model):
    """{kernel layer name: (scale layers, cap)} for the layers whose output passes a ReLU-type gate.

    A layer is gated if its own activation is ReLU/ReLU6, or if it has no activation and all
    consumers of its output are the same gate (standalone ReLU/ReLU6), possibly after a chain
    of BatchNormalization/Rescaling/Normalization layers that are each the only consumer (conv -> BN -> ReLU).
    Nested models are looked through (`graph.consumers`). cap is inf for ReLU, 6.0 for ReLU6.
    """
    feeds = consumers(model)
    gates = {}
    for layer in leaf_layers(model):
        if not L.is_kernel_layer(layer):
            continue
        cap = L.fused_gate_cap(layer)
        if cap is not None:
            gates[layer.name] = ((), cap)
        elif _is_identity(layer.activation):
            gate = _gate_after(layer, feeds)
            if gate is not None:
                gates[layer.name] = gate
    return gates


def _gate_after(layer, feeds):
    """(scale layers, cap) if `layer`'s output reaches only one kind of ReLU gate, else None."""
    scales = []
    after = feeds.get(id(layer), [])
    while len(after) == 1 and L.builtin_kind(after[0])[0] == L.SCALE:
        scales.append(after[0])
        after = feeds.get(id(after[0]), [])
    caps = {L.gate_cap(op) if L.builtin_kind(op)[0] == L.GATE else None for op in after}
    if len(caps) != 1 or None in caps:
        return None
    return tuple(scales), caps.pop()


def _is_identity(activation):
    return activation is None or activation is keras.activations.linear


def fit_patterns(
    model, data, kind="relu", batch_size=64, verbose=True, checkpoint=None, checkpoint_every=50, strategy=None
):
    """Fits a pattern for every Dense/Conv layer of `model` from `data`, in one pass (Eq. 2).

    kind="relu" uses the two-component estimator (E+ over the samples where a unit is
    active) for layers followed by a ReLU or ReLU6 (fused, standalone, or after BatchNorm; see
    `relu_gates`) and the linear estimator elsewhere; kind="linear"
    uses the linear estimator everywhere. `data`: a numpy array, a tf.data.Dataset of x or
    (x, y), or an iterable of batches (several inputs: a list/tuple/dict of arrays or such
    batches). Models may have several inputs and outputs; token inputs run through their
    Embedding as usual. Returns `Patterns`.

    With `checkpoint` (an .npz path) the running sums are saved every `checkpoint_every`
    batches; a restarted call with the same data skips the batches already counted.

    With `strategy` (a `tf.distribute.Strategy`) each batch is split into one contiguous shard
    per replica; each replica adds its shard's sums to its own float64 running sums, which are
    summed over the replicas when read (`distribute.replica_sums`): the patterns equal one
    device's up to float32 summation order.
    """
    strategy = check_strategy(strategy)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    spec = ModelSpec(model, choose_output=False)  # patterns of every kernel layer, whichever output
    kernel_layers = [layer for layer in leaf_layers(model) if L.is_kernel_layer(layer)]
    if not kernel_layers:
        raise ValueError(f"Model '{model.name}' has no Dense or Conv layer to fit patterns for")
    names = [layer.name for layer in kernel_layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Layer names must be unique across nested models to key patterns; repeated: {duplicates}")
    gates = relu_gates(model) if kind == "relu" else {}
    with replica_sums(strategy):
        statistics = {layer.name: _LayerStatistics(layer, gates.get(layer.name)) for layer in kernel_layers}

    check_pattern_support(model, exempt=spec.embedding_ids)  # the same layer support as the pattern rules

    def substitute(layer):
        if layer.name in statistics and statistics[layer.name].layer is layer:
            return lambda x, **kwargs: statistics[layer.name].update(tf.convert_to_tensor(x))
        return L.inference_call(layer)

    def accumulate_shard(*inputs):
        run_graph(model, spec.pack_inputs(list(inputs)), substitute)

    @tf.function(input_signature=spec.input_signature())
    def accumulate(*inputs):
        run_sharded(strategy, accumulate_shard, inputs)

    batches, total = spec.iterate_batches(data, batch_size)
    batches_done, num_samples = _restore(checkpoint, statistics, kind) if checkpoint else (0, 0)
    progress = Progress(total, "fit_patterns: batch", start=batches_done) if verbose else None
    for step, batch in enumerate(batches, start=1):
        if step <= batches_done:
            continue  # counted before a restart
        batch = spec.check(batch, name="data batch", embed=False)
        accumulate(*[tf.constant(v) for v in batch.values])
        num_samples += batch.num_samples
        if checkpoint and step % checkpoint_every == 0:
            _save(checkpoint, statistics, kind, step, num_samples)
        if progress is not None:
            progress.update(step)
    if progress is not None:
        progress.close()
    if num_samples == 0:
        raise ValueError("data is empty: it must hold at least one sample to fit patterns on, got none")
    arrays = {name: stats.pattern() for name, stats in statistics.items()}
    return Patterns(arrays, kind=kind, num_samples=num_samples)


_SUMS = ("sum_xy", "sum_x", "active", "sum_y", "count")


def _save(path, statistics, kind, batches_done, num_samples):
    """Writes every layer's running sums and the position in the data (atomically)."""
    arrays = {f"{name}/{field}": getattr(stats, field).numpy() for name, stats in statistics.items() for field in _SUMS}
    arrays["__progress__"] = np.array([batches_done, num_samples], np.int64)
    arrays["__kind__"] = np.array(kind)
    with atomic_write(path, "wb") as file:
        np.savez(file, **arrays)


def _restore(path, statistics, kind):
    """Loads the running sums of a checkpoint, if there is one; returns (batches done, samples done)."""
    if not os.path.exists(path):
        return 0, 0
    with np.load(path, allow_pickle=False) as data:
        if str(data["__kind__"]) != kind or any(f"{name}/sum_xy" not in data.files for name in statistics):
            raise ValueError(f"checkpoint {path} belongs to another model or kind; delete it or use another path")
        for name, stats in statistics.items():
            for field in _SUMS:
                getattr(stats, field).assign(data[f"{name}/{field}"])
        batches_done, num_samples = (int(v) for v in data["__progress__"])
    return batches_done, num_samples
