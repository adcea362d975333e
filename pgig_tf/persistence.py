"""Saving an analyzer (settings and fitted state) to one `.npz` file and rebuilding it for a model.

The file holds a JSON header (format, versions, the analyzer's `ANALYZERS` name, the model's
input/output shapes and fingerprint, every constructor setting), one array entry per
array-valued setting (an IG `baseline`, Expected Gradients' background, each pattern) and a
SHA-256 checksum of all entries (`pgig_tf.files.write_npz`). Settings are whatever
`Analyzer.get_config()` returns: every constructor setting as the analyzer holds it at `save`
(assignments after construction and the state that `fit` changes included).

Reading verifies the checksum: a missing, empty, truncated, damaged or foreign file raises
`pgig_tf.files.CorruptFileError`. Files of format version 1 (written before the checksum and
the fingerprint existed) are still read, without verification. The model given to
`load_analyzer` must be the one the analyzer was saved with (same layers, activations and
weights; `pgig_tf.model.fingerprint`), or `allow_other_model=True` loads it with a warning.

Settings of the process rather than the method (`Analyzer._runtime_arguments`: the
`strategy`) are not saved; `load_analyzer(..., strategy=...)` gives the rebuilt analyzer one.

Seeds: a fixed `seed` is saved, so the loaded analyzer's maps are bit-identical to the saved
one's. `seed=None` means "fresh noise at every call" and is saved as None: the loaded analyzer
draws fresh noise too (same settings, same distribution of maps, not the same values); set a
seed before saving to reproduce maps.
"""

import json
import os
import warnings

import numpy as np

from pgig_tf.files import other_kind, read_header, read_npz, unreadable, write_npz
from pgig_tf.model.fingerprint import OtherModelWarning, cached_fingerprints, check_same_model, model_fingerprint
from pgig_tf.patterns.patterns import Patterns

FORMAT = "pgig_tf.analyzer"
FORMAT_VERSION = 2  # 1: no checksum, no model fingerprint (still read)
HEADER_KEY = "__pgig_tf_analyzer__"
_EXPECTED = "a pgig_tf analyzer file (written by analyzer.save)"
_REMEDY = "Save the analyzer again (analyzer.save(path)), or pass the path of an intact copy."


def save_analyzer(analyzer, path):
    """Writes `analyzer`'s settings, fitted state and model fingerprint to `path` (exactly that name), atomically.

    Args:
        analyzer: an analyzer of a class registered in `pgig_tf.analyzers.ANALYZERS`.
        path: the file to write.

    Returns:
        the path, as a string.

    Raises:
        ValueError: the analyzer's class is not registered.
        TypeError: a setting cannot be stored (e.g. an arbitrary Python object).
    """
    from pgig_tf import __version__
    from pgig_tf.analyzers import ANALYZERS

    name = next((key for key, cls in ANALYZERS.items() if cls is type(analyzer)), None)
    if name is None:
        raise ValueError(
            f"only analyzers registered in pgig_tf.analyzers.ANALYZERS can be saved; "
            f"{type(analyzer).__name__} is not one of them"
        )
    arrays = {}
    settings = {
        key: _encode(value, key, arrays)
        for key, value in analyzer.get_config().items()
        if key not in analyzer._runtime_arguments
    }
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pgig_tf_version": __version__,
        "tensorflow_version": _module_version("tensorflow"),
        "keras_version": _module_version("keras"),
        "analyzer": name,
        "model": _model_signature(analyzer.model),
        "model_fingerprint": model_fingerprint(analyzer.model),
        "settings": settings,
    }
    path = os.fspath(path)
    write_npz(path, {**arrays, HEADER_KEY: np.array(json.dumps(header))})
    return path


def load_analyzer(path, model, strict_version=True, strategy=None, allow_other_model=False):
    """The analyzer saved at `path`, rebuilt for `model`; its `analyze` output is bit-identical to the saved one's.

    Args:
        path: a file written by `analyzer.save`.
        model: the model the analyzer was saved with (same layers, activations and weights).
        strict_version: False loads a file of another pgig_tf version, with a warning.
        strategy: a `tf.distribute.Strategy` (not saved with the analyzer) to run it on several devices.
        allow_other_model: load it for a model with other layers, activations or weights, with an
            `OtherModelWarning` naming the differences (the rebuilt analyzer keeps
            `allow_other_model=True` for its patterns).

    Returns:
        the rebuilt analyzer.

    Raises:
        pgig_tf.files.CorruptFileError: the file is missing (`MissingFileError`, also a
            FileNotFoundError), empty, truncated, damaged (checksum), a directory, of another kind
            (e.g. a patterns file) or of an unknown format version.
        pgig_tf.model.fingerprint.OtherModelError: `model` is not the model the analyzer was saved
            with (the message names what differs), unless `allow_other_model`.
        ValueError: another pgig_tf version (unless `strict_version=False`), an unknown analyzer,
            other input/output shapes, or settings that do not fit this model.
    """
    from pgig_tf import __version__
    from pgig_tf.analyzers import ANALYZERS

    path = os.fspath(path)
    header, arrays = _read(path)
    saved_version = header.get("pgig_tf_version")
    if saved_version != __version__:
        message = (
            f"{path!r} was saved by pgig_tf {saved_version}, this is pgig_tf {__version__}: "
            "attributions may differ between versions"
        )
        if strict_version:
            raise ValueError(message + "; pass strict_version=False to load it anyway")
        warnings.warn(message, stacklevel=2)
    name = header.get("analyzer")
    if name not in ANALYZERS:
        raise ValueError(f"{path!r} holds an unknown analyzer {name!r}; known: {', '.join(ANALYZERS)}")
    expected, got = header.get("model"), _model_signature(model)
    if expected != got:
        raise ValueError(
            f"{path!r} was saved for a model with inputs {expected['inputs']} and outputs {expected['outputs']}; "
            f"model '{model.name}' has inputs {got['inputs']} and outputs {got['outputs']}"
        )
    with cached_fingerprints():  # the model's weights are hashed once, for the file's and the patterns' check
        other = check_same_model(
            header.get("model_fingerprint"),
            model,
            f"{path!r} was saved for",
            "in the file",
            allow_other_model,
            "Load it with the model it was saved with, or pass allow_other_model=True to load it anyway.",
        )
        return _rebuild(ANALYZERS[name], path, name, model, header, arrays, strategy, allow_other_model, other)


def _rebuild(cls, path, name, model, header, arrays, strategy, allow_other_model, warned):
    """The analyzer of class `cls` built for `model` with the file's settings (see `load_analyzer`)."""
    settings = {key: _decode(value, arrays) for key, value in header["settings"].items()}
    if strategy is not None:
        settings["strategy"] = strategy
    if allow_other_model and "allow_other_model" in settings:
        settings["allow_other_model"] = True  # the file's patterns were fitted on its model
    try:
        with warnings.catch_warnings():
            if warned:  # said once for the file; the patterns' check would repeat it
                warnings.simplefilter("ignore", OtherModelWarning)
            return cls(model, **settings)
    except TypeError as error:
        raise ValueError(f"{path!r}: the saved settings of {name!r} do not fit this pgig_tf: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path!r}: cannot rebuild the saved {name!r} analyzer for this model: {error}") from error


def _read(path):
    """(header dict, {entry: array}) of an analyzer file, verified; `CorruptFileError` for anything else."""
    from pgig_tf import __version__

    entries, verified = read_npz(path, _EXPECTED, _REMEDY)
    if HEADER_KEY not in entries:
        kind = other_kind(entries, HEADER_KEY)
        problem = f"it is {kind}" if kind else f"it has no {HEADER_KEY!r} entry"
        raise unreadable(path, _EXPECTED, problem, "Pass the path of a file written by analyzer.save.")
    header = read_header(entries, HEADER_KEY, path, _EXPECTED, _REMEDY)
    del entries[HEADER_KEY]
    if header.get("format") != FORMAT:
        raise unreadable(path, _EXPECTED, f"its header names format {header.get('format')!r}", _REMEDY)
    version = header.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise unreadable(
            path,
            _EXPECTED,
            f"it has analyzer file format version {version!r}; this pgig_tf "
            f"({__version__}) reads versions 1 and {FORMAT_VERSION}",
            "Load it with the pgig_tf that wrote it.",
        )
    if version >= 2 and not verified:
        raise unreadable(path, _EXPECTED, "it is damaged: its checksum entry is missing", _REMEDY)
    return header, entries


def _model_signature(model):
    """The model's input and output shapes (batch axis as None), which a loaded analyzer's model must match."""
    return {
        "inputs": [[None if d is None else int(d) for d in t.shape] for t in model.inputs],
        "outputs": [[None if d is None else int(d) for d in t.shape] for t in model.outputs],
    }


def _module_version(name):
    import importlib

    return getattr(importlib.import_module(name), "__version__", None)


# JSON encoding of settings. Plain JSON values stay as they are; anything else becomes an object
# {"__type__": ..., ...}, so that tuples, numpy scalars, arrays and patterns come back as they were.


def _encode(value, name, arrays):
    import tensorflow as tf

    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype != object:
        return {"__type__": "scalar", "value": value.item(), "dtype": value.dtype.name}
    if isinstance(value, Patterns):
        keys = [_store(array, f"{name}/{i}", arrays) for i, array in enumerate(value.values())]
        return {
            "__type__": "patterns",
            "layers": list(value),
            "arrays": keys,
            "kind": value.kind,
            "num_samples": value.num_samples,
            "model_fingerprint": value.model_fingerprint,
        }
    if isinstance(value, (np.dtype, tf.dtypes.DType)):
        return {"__type__": "dtype", "name": np.dtype(getattr(value, "as_numpy_dtype", value)).name}
    if isinstance(value, (np.ndarray, tf.Tensor, tf.Variable)):
        return {"__type__": "array", "key": _store(np.asarray(value), name, arrays)}
    if isinstance(value, tuple):
        return {"__type__": "tuple", "items": [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__type__": "dict", "items": {k: _encode(v, f"{name}/{k}", arrays) for k, v in value.items()}}
    raise TypeError(
        f"cannot save setting {name!r}: expected None, a bool, number, string, numpy/TensorFlow array or dtype, "
        f"tuple, list, dict with string keys or Patterns, got {type(value).__name__}"
    )


def _store(array, key, arrays):
    if array.dtype == object:
        raise TypeError(f"cannot save setting {key!r}: an array of Python objects (dtype object)")
    arrays[key] = array
    return key


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__type__")
    if kind == "scalar":
        return np.dtype(value["dtype"]).type(value["value"])
    if kind == "array":
        return arrays[value["key"]]
    if kind == "tuple":
        return tuple(_decode(v, arrays) for v in value["items"])
    if kind == "dict":
        return {k: _decode(v, arrays) for k, v in value["items"].items()}
    if kind == "dtype":
        return np.dtype(value["name"])
    if kind == "patterns":
        return Patterns(
            {layer: arrays[key] for layer, key in zip(value["layers"], value["arrays"])},
            kind=value["kind"],
            num_samples=value["num_samples"],
            model_fingerprint=value.get("model_fingerprint"),
        )
    raise ValueError(f"unknown setting encoding {kind!r} in an analyzer file")
