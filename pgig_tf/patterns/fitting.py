"""Fitting PatternNet/PatternAttribution patterns (PGIG paper Eq. 2) in one streaming pass over data."""

import hashlib
import json
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from pgig_tf.core.rules import check_pattern_support
from pgig_tf.files import other_kind, read_header, read_npz, unreadable, write_npz
from pgig_tf.model import layer_kinds as L
from pgig_tf.model.distribute import check_strategy, replica_sums, run_sharded
from pgig_tf.model.fingerprint import cached_fingerprints, check_same_model, model_fingerprint
from pgig_tf.model.graph import consumers, leaf_layers, run_graph
from pgig_tf.model.spec import ModelSpec
from pgig_tf.patterns.patterns import Patterns
from pgig_tf.progress import Progress
from pgig_tf.validation import check_positive_int, user_stacklevel

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

    def sums(self):
        """The running sums of Eq. 2 by name, as float64 arrays."""
        names = ("sum_xy", "sum_x", "active", "sum_y", "count")
        return {name: getattr(self, name).numpy() for name in names}

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
    batches, with the number of samples counted, the model's fingerprint and a SHA-256 of the
    samples counted. A restarted call with the same model, kind and data skips exactly the
    samples already counted, whatever its batch size (a batch that straddles that point is
    split), and gives the patterns of an uninterrupted fit up to float32 summation order. The
    samples it skips are hashed again: a checkpoint of another model or kind, or data whose
    first samples differ from the ones counted, or that holds fewer, is refused (ValueError;
    OtherModelError for another model) before anything is added. A damaged checkpoint raises
    `pgig_tf.files.CorruptFileError`: delete it to start afresh. (A checkpoint of an earlier
    pgig_tf, without fingerprints, is resumed after its sample count with a warning.)

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
    progress = Progress(total, "fit_patterns: batch") if verbose else None
    checkpoint = os.fspath(checkpoint) if checkpoint else None
    with cached_fingerprints():  # the weights are hashed once; the patterns and the checkpoint carry the fingerprint
        fingerprint = model_fingerprint(model)
        state = _restore(checkpoint, statistics, kind, model) if checkpoint else None
    skip = state["num_samples"] if state else 0  # samples counted before a restart
    hashes = _DataHash() if checkpoint else None
    num_samples = largest_batch = 0
    for step, batch in enumerate(batches, start=1):
        values = spec.check(batch, name="data batch", embed=False).values
        count = len(values[0])
        largest_batch = max(largest_batch, count)  # the data's batch size (batch_size applies to arrays only)
        if num_samples < skip:  # counted before the restart: only hashed, to compare with the checkpoint's
            head = min(count, skip - num_samples)
            hashes.update([v[:head] for v in values])
            num_samples += head
            if num_samples == skip:
                _check_data(checkpoint, state, hashes)
            values, count = [v[head:] for v in values], count - head
            if count == 0:
                continue
        accumulate(*[tf.constant(v) for v in values])
        num_samples += count
        if hashes is not None:
            hashes.update(values)
            if step % checkpoint_every == 0:
                _save(checkpoint, statistics, kind, fingerprint, largest_batch, step, num_samples, hashes)
        if progress is not None:
            progress.update(step)
    if progress is not None:
        progress.close()
    if num_samples < skip:
        raise ValueError(
            f"checkpoint {checkpoint!r} has counted {skip} samples, but this data holds only {num_samples}: it is "
            "other data than the checkpoint's; delete the checkpoint or use another path to fit on it"
        )
    if num_samples == 0:
        raise ValueError("data is empty: it must hold at least one sample to fit patterns on, got none")
    for name, stats in statistics.items():
        overflowed = [key for key, value in stats.sums().items() if not np.all(np.isfinite(value))]
        if overflowed:
            raise ValueError(
                f"fitting patterns on this data overflowed at layer {name!r}: its float32 inputs or outputs reached "
                f"Inf or NaN, so the sums {overflowed} of Eq. 2 are not finite. The data's largest |value| is too "
                "large for the model (or the model's weights hold NaN/Inf): scale the data as it was for training"
            )
    arrays = {name: stats.pattern() for name, stats in statistics.items()}
    return Patterns(arrays, kind=kind, num_samples=num_samples, model_fingerprint=fingerprint)


_SUMS = ("sum_xy", "sum_x", "active", "sum_y", "count")
_CHECKPOINT_KEY = "__pgig_tf_checkpoint__"
_CHECKPOINT_FORMAT = "pgig_tf.fit_checkpoint"
_CHECKPOINT_VERSION = 2  # 1: the sums with "__progress__" and "__kind__" entries, no header or checksum
_EXPECTED = "a fit_patterns checkpoint"
_REMEDY = "Delete it to start the fit afresh, or pass another checkpoint path."


class _DataHash:
    """SHA-256 of the samples counted so far, one hash per model input, independent of how they were batched."""

    def __init__(self):
        self._inputs = None

    def update(self, values):
        if self._inputs is None:
            self._inputs = []
            for v in values:  # each input's dtype and sample shape first
                digest = hashlib.sha256(json.dumps([v.dtype.str, list(v.shape[1:])]).encode() + b"\n")
                self._inputs.append(digest)
        for digest, v in zip(self._inputs, values):
            digest.update(np.ascontiguousarray(v).reshape(-1).view(np.uint8))

    def hexdigest(self):
        if self._inputs is None:
            return None
        return hashlib.sha256("".join(d.hexdigest() for d in self._inputs).encode()).hexdigest()


def _save(path, statistics, kind, fingerprint, batch_size, batches_done, num_samples, hashes):
    """Writes every layer's running sums and what they were counted on (atomically, with a checksum)."""
    arrays = {f"{name}/{field}": getattr(stats, field).numpy() for name, stats in statistics.items() for field in _SUMS}
    header = {
        "format": _CHECKPOINT_FORMAT,
        "format_version": _CHECKPOINT_VERSION,
        "kind": kind,
        "batch_size": batch_size,
        "batches_done": batches_done,
        "num_samples": num_samples,
        "data_sha256": hashes.hexdigest(),
        "model_fingerprint": fingerprint,
    }
    arrays[_CHECKPOINT_KEY] = np.array(json.dumps(header))
    write_npz(path, arrays)


def _restore(path, statistics, kind, model):
    """Loads the running sums of the checkpoint at `path` after checking that it belongs to this fit.

    Returns:
        None if there is no checkpoint yet, else its header (`num_samples`: the samples counted,
        `data_sha256`: their hash, None for a checkpoint of format version 1).
    """
    if not os.path.lexists(path):
        return None
    entries, verified = read_npz(path, _EXPECTED, _REMEDY)
    if _CHECKPOINT_KEY in entries:
        header = read_header(entries, _CHECKPOINT_KEY, path, _EXPECTED, _REMEDY)
        if header.get("format") != _CHECKPOINT_FORMAT or header.get("format_version") != _CHECKPOINT_VERSION:
            raise unreadable(
                path,
                _EXPECTED,
                f"it has format {header.get('format')!r} version "
                f"{header.get('format_version')!r}; this pgig_tf reads version {_CHECKPOINT_VERSION}",
                _REMEDY,
            )
        if not verified:
            raise unreadable(path, _EXPECTED, "it is damaged: its checksum entry is missing", _REMEDY)
    elif "__progress__" in entries and "__kind__" in entries:  # format version 1
        progress = entries["__progress__"]
        if progress.shape != (2,):
            raise unreadable(path, _EXPECTED, "its '__progress__' entry is not (batches, samples)", _REMEDY)
        header = {
            "kind": str(entries["__kind__"]),
            "batches_done": int(progress[0]),
            "num_samples": int(progress[1]),
            "data_sha256": None,
            "model_fingerprint": None,
        }
    else:
        kind_found = other_kind(entries, _CHECKPOINT_KEY)
        problem = f"it is {kind_found}" if kind_found else "it has no checkpoint header"
        raise unreadable(path, _EXPECTED, problem, _REMEDY)
    if header.get("kind") != kind:
        raise ValueError(
            f"checkpoint {path!r} belongs to another model or kind: it was written with kind={header.get('kind')!r}, "
            f"this fit has kind={kind!r}; delete it or use another path"
        )
    check_same_model(
        header.get("model_fingerprint"),
        model,
        f"checkpoint {path!r} was written for",
        "in the checkpoint",
        False,
        "Delete it or use another checkpoint path to fit this model.",
    )
    missing = sorted(f"{name}/{field}" for name in statistics for field in _SUMS if f"{name}/{field}" not in entries)
    if missing:
        raise ValueError(
            f"checkpoint {path!r} belongs to another model or kind: it has no {', '.join(missing[:5])}; "
            "delete it or use another path"
        )
    for name, stats in statistics.items():
        for field in _SUMS:
            variable = getattr(stats, field)
            saved = entries[f"{name}/{field}"]
            if tuple(saved.shape) != tuple(variable.shape):
                raise ValueError(
                    f"checkpoint {path!r} belongs to another model or kind: {name}/{field} has shape "
                    f"{saved.shape}, this model's {tuple(variable.shape)}; delete it or use another path"
                )
            variable.assign(saved)
    if header["data_sha256"] is None:
        warnings.warn(
            f"checkpoint {path!r} was written by an earlier pgig_tf without a model or data fingerprint: resuming "
            f"after its {header['num_samples']} samples without checking that the model and data are the same",
            stacklevel=user_stacklevel(),
        )
    return header


def _check_data(path, state, hashes):
    """Raises ValueError unless the samples just skipped are the ones the checkpoint counted."""
    expected = state["data_sha256"]
    if expected is not None and hashes.hexdigest() != expected:
        raise ValueError(
            f"checkpoint {path!r} was written for other data: the first {state['num_samples']} samples of this data "
            f"differ from the {state['num_samples']} it has counted (SHA-256 {hashes.hexdigest()[:12]}... here, "
            f"{expected[:12]}... in the checkpoint); resume it with the same data in the same order, or delete it "
            "to fit on this data"
        )
