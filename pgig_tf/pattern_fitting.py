"""Fitting PatternNet/PatternAttribution patterns (PGIG paper Eq. 2) in one streaming pass over data."""

import os

import keras
import numpy as np
import tensorflow as tf

from . import layers as L
from .data import iterate_batches
from .graph import consumers, leaf_layers, run_graph
from .patterns import Patterns
from .rules import LayerwiseRule
from .validation import check_inputs, check_positive_int, model_io

KINDS = ("relu", "linear")


class _LayerStatistics:
    """Running sums for one Dense/Conv layer, in float64 variables (two kernels' worth of memory).

    For unit j, with x a layer input (a receptive-field patch for a convolution) and
    y_j = w_j^T x its bias-free pre-activation, over the samples where j is active (E+):
      sum_xy[:, j] = sum x y_j,  sum_x[:, j] = sum x,  active[j] = count;
    and over all samples: sum_y[j] = sum y_j, count = number of samples.
    """

    def __init__(self, layer, use_relu):
        self.layer = layer
        self.use_relu = use_relu
        kernel_shape = tuple(layer.kernel.shape)
        units = kernel_shape[-1]
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
        if self.use_relu:
            mask = tf.cast(pre_activation > 0, z.dtype)
        else:
            mask = tf.ones_like(z)
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

    def pattern(self):
        """Eq. 2: p_j = (E+[x y] - E+[x] E[y]) / (w_j^T (E+[x y] - E+[x] E[y])); 0 for dead units."""
        active = self.active.numpy()
        safe_active = np.where(active > 0, active, 1.0)
        mean_y = self.sum_y.numpy() / max(float(self.count.numpy()), 1.0)
        numerator = (self.sum_xy.numpy() - self.sum_x.numpy() * mean_y) / safe_active
        kernel = np.asarray(self.layer.kernel, dtype=np.float64)
        input_axes = tuple(range(kernel.ndim - 1))
        denominator = np.sum(kernel * numerator, axis=input_axes)
        usable = (active > 0) & (denominator != 0)
        pattern = np.where(usable, numerator / np.where(usable, denominator, 1.0), 0.0)
        return pattern.astype(np.asarray(self.layer.kernel).dtype)


def _non_unit_axes(layer, z):
    axis = L.unit_axis(layer) % len(z.shape)
    return [a for a in range(len(z.shape)) if a != axis]


def relu_fed_layers(model):
    """Names of the Dense/Conv layers whose output passes a plain ReLU (fused, or all consumers ReLU)."""
    feeds = consumers(model)
    names = set()
    for layer in leaf_layers(model):
        if not L.is_kernel_layer(layer):
            continue
        if layer.activation is not None and L.has_fused_relu(layer):
            names.add(layer.name)
        elif _is_identity(layer.activation):
            after = feeds.get(id(layer), [])
            if after and all(L.is_relu_layer(op) for op in after):
                names.add(layer.name)
    return names


def _is_identity(activation):
    return activation is None or activation is keras.activations.linear


def fit_patterns(model, data, kind="relu", batch_size=64, verbose=True, checkpoint=None, checkpoint_every=50):
    """Fits a pattern for every Dense/Conv layer of `model` from `data`, in one pass (Eq. 2).

    kind="relu" uses the two-component estimator (E+ over the samples where a unit is
    active) for layers followed by a ReLU and the linear estimator elsewhere; kind="linear"
    uses the linear estimator everywhere. `data`: a numpy array, a tf.data.Dataset of x or
    (x, y), or an iterable of batches. Returns `Patterns`.

    With `checkpoint` (an .npz path) the running sums are saved every `checkpoint_every`
    batches; a restarted call with the same data skips the batches already counted.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    input_shape, _ = model_io(model)
    kernel_layers = [layer for layer in leaf_layers(model) if L.is_kernel_layer(layer)]
    if not kernel_layers:
        raise ValueError(f"Model '{model.name}' has no Dense or Conv layer to fit patterns for")
    names = [layer.name for layer in kernel_layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Layer names must be unique across nested models to key patterns; repeated: {duplicates}")
    relu_names = relu_fed_layers(model) if kind == "relu" else set()
    statistics = {layer.name: _LayerStatistics(layer, layer.name in relu_names) for layer in kernel_layers}

    LayerwiseRule().check_model(model)  # the same layer support as the pattern rules

    def substitute(layer):
        if layer.name in statistics and statistics[layer.name].layer is layer:
            return lambda x, **kwargs: statistics[layer.name].update(tf.convert_to_tensor(x))
        return L.inference_call(layer)

    signature = [tf.TensorSpec((None,) + tuple(input_shape[1:]), tf.float32)]

    @tf.function(input_signature=signature)
    def accumulate(x):
        run_graph(model, x, substitute)

    batches, total = iterate_batches(data, batch_size, len(input_shape) - 1)
    progress = keras.utils.Progbar(total, unit_name="batch") if verbose else None
    batches_done, num_samples = _restore(checkpoint, statistics, kind) if checkpoint else (0, 0)
    for step, batch in enumerate(batches, start=1):
        if step <= batches_done:
            continue  # counted before a restart
        batch = check_inputs(batch, input_shape, name="data batch")
        accumulate(tf.constant(batch))
        num_samples += batch.shape[0]
        if checkpoint and step % checkpoint_every == 0:
            _save(checkpoint, statistics, kind, step, num_samples)
        if progress is not None:
            progress.update(step)
    if num_samples == 0:
        raise ValueError("data is empty: no sample to fit patterns on")
    arrays = {name: stats.pattern() for name, stats in statistics.items()}
    return Patterns(arrays, kind=kind, num_samples=num_samples)


_SUMS = ("sum_xy", "sum_x", "active", "sum_y", "count")


def _save(path, statistics, kind, batches_done, num_samples):
    """Writes every layer's running sums and the position in the data (atomically)."""
    arrays = {f"{name}/{field}": getattr(stats, field).numpy() for name, stats in statistics.items() for field in _SUMS}
    arrays["__progress__"] = np.array([batches_done, num_samples], np.int64)
    arrays["__kind__"] = np.array(kind)
    temporary = str(path) + ".tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


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
