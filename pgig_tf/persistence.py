"""Saving an analyzer (settings and fitted state) to one `.npz` file and rebuilding it for a model.

The file holds a JSON header (format, versions, the analyzer's `ANALYZERS` name, the model's
input/output shapes, every constructor setting) and one array entry per array-valued setting
(an IG `baseline`, Expected Gradients' background, each pattern). Settings are whatever
`Analyzer.get_config()` returns: the concrete class's constructor arguments as they were
passed, with the state that `fit` changes (patterns, background, seed) as it is at `save`.

Settings of the process rather than the method (`Analyzer._runtime_arguments`: the
`strategy`) are not saved; `load_analyzer(..., strategy=...)` gives the rebuilt analyzer one.

Seeds: a fixed `seed` is saved, so the loaded analyzer's maps are bit-identical to the saved
one's. `seed=None` means "fresh noise at every call" and is saved as None: the loaded analyzer
draws fresh noise too (same settings, same distribution of maps, not the same values); set a
seed before saving to reproduce maps.
"""

import json
import os
import pickle
import warnings
import zipfile

import numpy as np

from pgig_tf.files import atomic_write
from pgig_tf.patterns.patterns import Patterns

FORMAT = "pgig_tf.analyzer"
FORMAT_VERSION = 1
HEADER_KEY = "__pgig_tf_analyzer__"
_PATTERNS_META_KEY = "__pgig_tf_meta__"  # the header entry of a `Patterns.save` file


def save_analyzer(analyzer, path):
    """Writes `analyzer`'s settings and fitted state to `path` (exactly that name); returns the path."""
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
        "settings": settings,
    }
    path = os.fspath(path)
    with atomic_write(path, "wb") as file:  # a file object: np.savez would otherwise append ".npz"
        np.savez(file, **arrays, **{HEADER_KEY: np.array(json.dumps(header))})
    return path


def load_analyzer(path, model, strict_version=True, strategy=None):
    """The analyzer saved at `path`, rebuilt for `model`; its `analyze` output is bit-identical to the saved one's.

    `strategy` (a `tf.distribute.Strategy`, not saved with the analyzer) runs it on several devices.

    Raises FileNotFoundError for a missing file and ValueError for a file of another kind, a
    format or pgig_tf version other than this one (`strict_version=False` loads a file of
    another pgig_tf version with a warning), or a model whose inputs, outputs or layers
    differ from the ones the analyzer was saved with.
    """
    from pgig_tf import __version__
    from pgig_tf.analyzers import ANALYZERS

    path = os.fspath(path)
    header, arrays = _read(path)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a pgig_tf analyzer file (format {header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has analyzer file format version {header.get('format_version')!r}; "
            f"this pgig_tf ({__version__}) reads version {FORMAT_VERSION}"
        )
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
    settings = {key: _decode(value, arrays) for key, value in header["settings"].items()}
    if strategy is not None:
        settings["strategy"] = strategy
    try:
        return ANALYZERS[name](model, **settings)
    except TypeError as error:
        raise ValueError(f"{path!r}: the saved settings of {name!r} do not fit this pgig_tf: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path!r}: cannot rebuild the saved {name!r} analyzer for this model: {error}") from error


def _read(path):
    """(header dict, {entry: array}) of an analyzer file, with clear errors for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no analyzer file at {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path!r} is not a pgig_tf analyzer file (written by analyzer.save): it is not an .npz archive ({error})"
        ) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a pgig_tf analyzer file (written by analyzer.save): it holds one .npy array")
    with data:
        if HEADER_KEY not in data.files:
            hint = (
                " It is a patterns file: read it with pgig_tf.Patterns.load."
                if _PATTERNS_META_KEY in data.files
                else ""
            )
            raise ValueError(
                f"{path!r} is not a pgig_tf analyzer file (written by analyzer.save): it has no "
                f"{HEADER_KEY!r} entry.{hint}"
            )
        try:
            header = json.loads(str(data[HEADER_KEY]))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path!r} has an unreadable analyzer header: {error}") from None
        arrays = {key: data[key] for key in data.files if key != HEADER_KEY}
    if not isinstance(header, dict):
        raise ValueError(f"{path!r} has an unreadable analyzer header: expected a JSON object")
    return header, arrays


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
        )
    raise ValueError(f"unknown setting encoding {kind!r} in an analyzer file")
