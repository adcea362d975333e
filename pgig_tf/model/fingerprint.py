"""A model's fingerprint (each layer's name, class, kernel shape, activation and a SHA-256 of its weights) and what differs between two.

Patterns, saved analyzers and pattern-fitting checkpoints carry the fingerprint of the model they
were made for, so that applying them to another model (other layers, other weights) is refused
unless it is asked for (`allow_other_model=True`), and the refusal names what differs.

Cost: the fingerprint copies every weight out of TensorFlow and hashes it (SHA-256): VGG16's
553 MB took 0.95 s on a 2-core CPU (3.4 s the first time in a process). So it is computed when
patterns are fitted, saved, loaded or handed to an analyzer, never per `analyze` call; inside
`cached_fingerprints()` a model is hashed at most once.
"""

import contextlib
import hashlib
import json
import warnings

import keras
import numpy as np

from pgig_tf.model import layer_kinds as L
from pgig_tf.model.graph import leaf_layers
from pgig_tf.validation import user_stacklevel

FINGERPRINT_VERSION = 1
_MAX_LISTED = 8  # differences named in one message

_cache = None  # {id(model): (model, fingerprint)} inside cached_fingerprints(), else None


class OtherModelError(ValueError):
    """Patterns, an analyzer file or a checkpoint made for one model were applied to another."""


class OtherModelWarning(UserWarning):
    """Patterns or an analyzer made for another model are used, as asked for with `allow_other_model=True`."""


def model_fingerprint(model):
    """The fingerprint of `model`: a JSON-ready dict with one entry per leaf layer (nested models expanded).

    Each entry has the layer's `name`, `class`, its `kernel` shape (Dense/Conv layers), its
    `activation` (layers that have one; a ReLU layer's parameters) and `weights`: the SHA-256 of
    its weights' dtypes, shapes and bytes (layers with weights). Input layers are left out.

    Args:
        model: a Keras model.

    Returns:
        {"version": 1, "layers": [entry, ...]} in graph order.
    """
    if _cache is not None and id(model) in _cache:
        return _cache[id(model)][1]
    layers = []
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        entry = {"name": layer.name, "class": type(layer).__name__}
        if L.is_kernel_layer(layer):
            entry["kernel"] = [int(d) for d in layer.kernel.shape]
        activation = _activation(layer)
        if activation is not None:
            entry["activation"] = activation
        if layer.weights:
            entry["weights"] = _weights_sha256(layer)
        layers.append(entry)
    fingerprint = {"version": FINGERPRINT_VERSION, "layers": layers}
    if _cache is not None:
        _cache[id(model)] = (model, fingerprint)  # the model is kept, so that its id is not reused
    return fingerprint


def model_sha256(model):
    """One SHA-256 of `model_fingerprint(model)`: equal for two models exactly when their fingerprints are."""
    return hashlib.sha256(json.dumps(model_fingerprint(model), sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def cached_fingerprints():
    """Within the block each model's fingerprint is computed once (its weights must not change meanwhile)."""
    global _cache
    outer = _cache
    if outer is None:
        _cache = {}
    try:
        yield
    finally:
        _cache = outer


def fingerprint_differences(saved, current, there="in the file"):
    """What differs between the fingerprint `saved` (described as `there`) and `current` ("here").

    Args:
        saved: the fingerprint that came with the patterns, file or checkpoint.
        current: the fingerprint of the model at hand.
        there: how messages name where `saved` comes from, e.g. "in the file".

    Returns:
        a list of sentences such as "activation of 'c1' is relu here, linear in the file" or
        "layer 'd1' weights differ"; empty when the models are the same.
    """
    if saved == current:
        return []
    if not isinstance(saved, dict) or saved.get("version") != FINGERPRINT_VERSION:
        version = saved.get("version") if isinstance(saved, dict) else None
        return [
            f"the model fingerprint {there} is of version {version!r}, this pgig_tf compares version "
            f"{FINGERPRINT_VERSION} only"
        ]
    old, new = _by_name(saved["layers"]), _by_name(current["layers"])
    differences = []
    for key, layer in new.items():
        if key not in old:
            differences.append(f"layer '{key}' ({layer['class']}) is here, not {there}")
            continue
        before = old[key]
        if before.get("class") != layer["class"]:
            differences.append(f"layer '{key}' is a {layer['class']} here, a {before.get('class')} {there}")
            continue
        if before.get("kernel") != layer.get("kernel"):
            differences.append(
                f"kernel of '{key}' has shape {_shape(layer.get('kernel'))} here, "
                f"{_shape(before.get('kernel'))} {there}"
            )
            continue
        if before.get("activation") != layer.get("activation"):
            differences.append(
                f"activation of '{key}' is {layer.get('activation')} here, {before.get('activation')} {there}"
            )
        if before.get("weights") != layer.get("weights"):
            differences.append(f"layer '{key}' weights differ")
    differences += [
        f"layer '{key}' ({layer.get('class')}) is {there}, not here" for key, layer in old.items() if key not in new
    ]
    return differences  # empty also for the same layers listed in another order (e.g. a nested copy)


def check_same_model(saved, model, subject, there, allow_other_model, remedy):
    """Raises `OtherModelError` (or warns, with `allow_other_model`) if `model` is not the one `saved` describes.

    The warning names the first caller outside pgig_tf.

    Args:
        saved: the stored fingerprint, or None (nothing to check: accepted).
        model: the model at hand.
        subject: the start of the message, completed by "another model than 'name'", e.g. "the patterns
            were fitted on" or "'a.npz' was saved for".
        there: how to name where `saved` comes from, e.g. "at fit time".
        allow_other_model: warn (`OtherModelWarning`) instead of raising.
        remedy: what to do, ending the error message (it should mention `allow_other_model=True`).

    Returns:
        the list of differences (empty if the models are the same).
    """
    if saved is None:
        return []
    differences = fingerprint_differences(saved, model_fingerprint(model), there)
    if not differences:
        return []
    listed = "; ".join(differences[:_MAX_LISTED])
    if len(differences) > _MAX_LISTED:
        listed += f"; and {len(differences) - _MAX_LISTED} more"
    message = f"{subject} another model than '{model.name}': {listed}"
    if allow_other_model:
        warnings.warn(
            message + " (used anyway: allow_other_model=True)", OtherModelWarning, stacklevel=user_stacklevel()
        )
        return differences
    raise OtherModelError(f"{message}. {remedy}")


def _activation(layer):
    if isinstance(layer, keras.layers.ReLU):
        slope, threshold = float(layer.negative_slope), float(layer.threshold)
        parts = [] if layer.max_value is None else [f"max_value={float(layer.max_value):g}"]
        parts += [f"negative_slope={slope:g}"] if slope else []
        parts += [f"threshold={threshold:g}"] if threshold else []
        return "relu" + (f"({', '.join(parts)})" if parts else "")
    if not hasattr(layer, "activation"):
        return None
    function = layer.activation
    if function is None:
        return "linear"
    return getattr(function, "__name__", type(function).__name__)


def _weights_sha256(layer):
    digest = hashlib.sha256()
    for weight in layer.weights:
        array = np.ascontiguousarray(weight.numpy())
        digest.update(json.dumps([array.dtype.str, list(array.shape)]).encode() + b"\n")
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _by_name(layers):
    """{name: entry}; a name that occurs again (possible across nested models) is keyed "name#2", ..."""
    result = {}
    for entry in layers:
        key, count = entry["name"], 1
        while key in result:
            count += 1
            key = f"{entry['name']}#{count}"
        result[key] = entry
    return result


def _shape(shape):
    return "none" if shape is None else str(tuple(shape))
