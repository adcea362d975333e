"""The PatternNet authors' pattern file layout (A_0..A_n, channels-first): reading it into `Patterns` and writing it back."""

import keras
import numpy as np

from pgig_tf.model import layer_kinds as L
from pgig_tf.model.graph import consumers, leaf_layers
from pgig_tf.patterns.patterns import Patterns


def load_reference_vgg16_patterns(path, model):
    """Reads `imagenet_224_vgg_16.patterns.A_only.npz` (keys A_0..A_15) as `Patterns` for `model`.

    The file's arrays are in the PatternNet authors' layout (see `from_reference_layout`); they
    were computed with the two-component ("relu") estimator on the Caffe VGG16 weights that
    Keras' 'imagenet' weights come from. Works for `build_vgg16` at 224 and 225 alike.

    Raises:
        CorruptFileError: the file is missing (`MissingFileError`), empty, truncated, damaged or
            not an `.npz` archive (the message names the file and what to do).
        ValueError: its arrays do not fit `model` (count, keys or shapes).
    """
    from pgig_tf.files import read_npz

    arrays, _ = read_npz(
        path,
        "the PatternNet authors' VGG16 patterns (imagenet_224_vgg_16.patterns.A_only.npz, arrays A_0..A_15)",
        "Download it again, or fit patterns with pgig-fit-patterns.",
    )
    return from_reference_layout(arrays, model)


def from_reference_layout(arrays, model):
    """`Patterns` keyed by `model`'s Dense/Conv layer names from reference-layout arrays A_0..A_{n-1}.

    `arrays` maps "A_i" to the i-th Dense/Conv layer's pattern in graph order. Convolutions are
    stored (out, in, *kernel) and become Keras' (*kernel, in, out); dense layers are stored
    (in, out) as Keras, except that a Dense fed by a Flatten of a (H, W, C) map has its rows in
    the reference's (C, H, W) flatten order, which are permuted to Keras' (H, W, C) order.
    Raises ValueError when the count, keys or shapes do not fit the model.
    """
    targets = _kernel_targets(model)
    arrays = _ordered_reference_arrays(arrays, len(targets))
    result = {}
    for i, (layer, chw) in enumerate(targets):
        array = np.asarray(arrays[i])
        expected = _reference_shape(layer, chw)
        if array.shape != expected:
            raise ValueError(
                f"A_{i} has shape {array.shape}, but {L.describe(layer)} with kernel "
                f"{tuple(layer.kernel.shape)} needs {expected} in the reference layout"
            )
        result[layer.name] = _from_reference(array, layer, chw)
    return Patterns(result, kind="relu")


def to_reference_layout(patterns, model):
    """The inverse of `from_reference_layout`: {"A_i": array} for `np.savez(path, **...)`."""
    targets = _kernel_targets(model)
    missing = [layer.name for layer, _ in targets if layer.name not in patterns]
    if missing:
        raise ValueError(f"no pattern for layer(s) {missing} of model '{model.name}'")
    result = {}
    for i, (layer, chw) in enumerate(targets):
        array = np.asarray(patterns[layer.name])
        if array.shape != tuple(layer.kernel.shape):
            raise ValueError(
                f"pattern for {L.describe(layer)} has shape {array.shape}, kernel {tuple(layer.kernel.shape)}"
            )
        result[f"A_{i}"] = _to_reference(array, layer, chw)
    return result


def _kernel_targets(model):
    """[(Dense/Conv layer, (C, H, W) of the Flatten feeding it, or None)] in graph order."""
    flattened = {}  # id(Dense) -> (C, H, W)
    consumer_map = consumers(model)
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.Flatten):
            shape = tuple(layer.input.shape[1:])
            if len(shape) != 3:
                continue
            # Keras flattens in (H, W, C) order whatever the data format.
            if layer.data_format == "channels_first":
                channels, height, width = shape
            else:
                height, width, channels = shape
            pending = list(consumer_map.get(id(layer), []))
            while pending:  # look through Dropout between Flatten and Dense
                nxt = pending.pop()
                if isinstance(nxt, keras.layers.Dropout):
                    pending.extend(consumer_map.get(id(nxt), []))
                elif isinstance(nxt, keras.layers.Dense):
                    flattened[id(nxt)] = (channels, height, width)
    targets = [(layer, flattened.get(id(layer))) for layer in leaf_layers(model) if L.is_kernel_layer(layer)]
    if not targets:
        raise ValueError(f"model '{model.name}' has no Dense/Conv layers")
    return targets


def _ordered_reference_arrays(arrays, count):
    keys = list(arrays.keys())
    expected = [f"A_{i}" for i in range(count)]
    if sorted(keys) != sorted(expected):
        raise ValueError(
            f"reference patterns need keys A_0..A_{count - 1} (one per Dense/Conv layer of the model, "
            f"{count} layers), got {len(keys)} keys: {sorted(keys, key=_key_order)}"
        )
    return [arrays[key] for key in expected]


def _key_order(key):
    prefix, _, number = key.partition("_")
    return (prefix, int(number)) if number.isdigit() else (key, -1)


def _reference_shape(layer, chw):
    kernel = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return kernel
    return kernel[-1:] + kernel[-2:-1] + kernel[:-2]  # (out, in, *spatial)


def _from_reference(array, layer, chw):
    if isinstance(layer, keras.layers.Dense):
        if chw is None:
            return array
        channels, height, width = chw
        rows = array.reshape(channels, height, width, -1).transpose(1, 2, 0, 3)
        return np.ascontiguousarray(rows.reshape(channels * height * width, -1))
    spatial = array.ndim - 2
    return np.ascontiguousarray(array.transpose(*range(2, 2 + spatial), 1, 0))


def _to_reference(array, layer, chw):
    if isinstance(layer, keras.layers.Dense):
        if chw is None:
            return array
        channels, height, width = chw
        rows = array.reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
        return np.ascontiguousarray(rows.reshape(channels * height * width, -1))
    spatial = array.ndim - 2
    return np.ascontiguousarray(array.transpose(spatial + 1, spatial, *range(spatial)))
