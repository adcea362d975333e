"""`Patterns`: a mapping from layer name to a pattern array shaped like that layer's kernel."""

import json
import os
from collections.abc import Mapping

import numpy as np

from pgig_tf.files import other_kind, read_header, read_npz, unreadable, write_npz
from pgig_tf.model import layer_kinds as L
from pgig_tf.model.fingerprint import check_same_model
from pgig_tf.model.graph import leaf_layers

_META_KEY = "__pgig_tf_meta__"
FORMAT = "pgig_tf.patterns"
# Version 1 (no "format" entry in the header, no checksum) is still read, unverified; version 2
# adds the format name, the model fingerprint and a SHA-256 checksum of every entry.
FORMAT_VERSION = 2
_EXPECTED = "a pgig_tf patterns file (written by Patterns.save, or an .npz of layer name -> pattern array)"
_REMEDY = "Fit the patterns again (fit_patterns(model, data)) and save them, or pass the path of an intact copy."


class Patterns(Mapping):
    """Layer name -> pattern array (the layer's kernel shape), plus how the patterns were fitted.

    `Patterns({"dense": array, ...})` wraps hand-made patterns; `fit_patterns` returns fitted ones,
    which carry the `model_fingerprint` of the model they were fitted on (`pgig_tf.model.fingerprint`):
    `check(model)` and the analyzers refuse them for a model with other layers or weights
    unless `allow_other_model=True`. Patterns without a fingerprint are checked by shape only.
    """

    def __init__(self, arrays, kind=None, num_samples=None, model_fingerprint=None):
        if not isinstance(arrays, Mapping):
            raise TypeError(f"Patterns takes a mapping of layer name -> array, got {type(arrays).__name__}")
        self._arrays = {}
        for name, value in arrays.items():
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"pattern for layer '{name}' must be a float array, got dtype {array.dtype}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"pattern for layer '{name}' contains NaN or Inf")
            self._arrays[str(name)] = array
        self.kind = kind
        self.num_samples = num_samples
        self.model_fingerprint = model_fingerprint

    def __getitem__(self, name):
        return self._arrays[name]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __repr__(self):
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self._arrays.items())
        return f"Patterns(kind={self.kind!r}, {{{shapes}}})"

    def save(self, path):
        """Writes the patterns, how they were fitted and the model's fingerprint to an `.npz` file (atomically).

        The file holds one entry per layer (so `numpy.load` reads it too), a JSON header (format
        name and version, pgig_tf version, kind, number of samples, model fingerprint) and a
        SHA-256 checksum of all entries, which `load` verifies.

        Args:
            path: the file; ".npz" is appended if the name does not end with it (as `np.savez` does).

        Returns:
            the path written.
        """
        from pgig_tf import __version__

        if _META_KEY in self._arrays:
            raise ValueError(f"a layer may not be called {_META_KEY!r}")
        meta = json.dumps(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "pgig_tf_version": __version__,
                "kind": self.kind,
                "num_samples": self.num_samples,
                "model_fingerprint": self.model_fingerprint,
            }
        )
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"  # as np.savez names it
        write_npz(path, {**self._arrays, _META_KEY: np.array(meta)})
        return path

    @classmethod
    def load(cls, path):
        """Reads patterns written by `save` (or any `.npz` of layer name -> float array), verifying the file.

        Files written by `save` since format version 2 carry a SHA-256 checksum, verified here;
        files of format version 1 (written before the checksum existed) and plain `.npz` files
        have none and are read unverified (the archive's own CRC-32 still catches most damage).

        Args:
            path: the file.

        Returns:
            the `Patterns`, with the fingerprint of the model they were fitted on if the file has one.

        Raises:
            pgig_tf.files.CorruptFileError: the file is missing (`MissingFileError`, also a
                FileNotFoundError), empty, truncated, damaged, a directory, not an `.npz` of float
                arrays, another kind of pgig_tf file, or of a newer format version.
        """
        entries, verified = read_npz(path, _EXPECTED, _REMEDY)
        path = os.fspath(path)
        kind = other_kind(entries, _META_KEY)
        if kind is not None:
            raise unreadable(path, _EXPECTED, f"it is {kind}", "Pass the path of a patterns file instead.")
        meta = {}
        if _META_KEY in entries:
            meta = read_header(entries, _META_KEY, path, _EXPECTED, _REMEDY)
            del entries[_META_KEY]
            version = meta.get("format_version", 1) if "format" in meta else 1
            if "format" in meta and meta["format"] != FORMAT:
                raise unreadable(path, _EXPECTED, f"its header names format {meta['format']!r}", _REMEDY)
            if version not in (1, FORMAT_VERSION):
                raise unreadable(
                    path,
                    _EXPECTED,
                    f"it has patterns format version {version!r}; this pgig_tf reads versions 1 and {FORMAT_VERSION}",
                    "Read it with the pgig_tf that wrote it.",
                )
            if version >= 2 and not verified:
                raise unreadable(path, _EXPECTED, "it is damaged: its checksum entry is missing", _REMEDY)
        elif not entries:
            raise unreadable(path, _EXPECTED, "it is an .npz archive with no arrays", _REMEDY)
        try:
            return cls(
                entries,
                kind=meta.get("kind"),
                num_samples=meta.get("num_samples"),
                model_fingerprint=meta.get("model_fingerprint"),
            )
        except (TypeError, ValueError) as error:
            raise unreadable(path, _EXPECTED, f"it does not hold pattern arrays ({error})", _REMEDY) from None

    def check(self, model, allow_other_model=False):
        """Checks that the patterns fit `model`: shapes always, and the model itself if they have a fingerprint.

        Args:
            model: the Keras model the patterns are to be used with.
            allow_other_model: with a fingerprint from another model (other layers, activations or
                weights), warn (`OtherModelWarning`) instead of raising.

        Raises:
            ValueError: a Dense/Conv layer has no pattern or one of another shape than its kernel,
                or there are patterns for layers the model does not have.
            pgig_tf.model.fingerprint.OtherModelError: the patterns were fitted on another model
                (the message names what differs) and `allow_other_model` is False.
        """
        kernel_layers = [layer for layer in leaf_layers(model) if L.is_kernel_layer(layer)]
        missing = [L.describe(layer) for layer in kernel_layers if layer.name not in self._arrays]
        wrong = [
            f"{L.describe(layer)}: pattern {self._arrays[layer.name].shape}, kernel {tuple(layer.kernel.shape)}"
            for layer in kernel_layers
            if layer.name in self._arrays and self._arrays[layer.name].shape != tuple(layer.kernel.shape)
        ]
        extra = sorted(set(self._arrays) - {layer.name for layer in kernel_layers})
        problems = []
        if missing:
            problems.append("no pattern for " + ", ".join(missing))
        if wrong:
            problems.append("pattern shape differs from the kernel for " + "; ".join(wrong))
        if extra:
            problems.append("patterns for layers the model does not have: " + ", ".join(extra))
        if problems:
            raise ValueError(
                f"Patterns do not fit model '{model.name}': "
                + ". ".join(problems)
                + ". Were they fitted on another model? Refit with fit_patterns(model, data)."
            )
        check_same_model(
            self.model_fingerprint,
            model,
            "the patterns were fitted on",
            "at fit time",
            allow_other_model,
            "Refit them on this model with fit_patterns(model, data), or pass allow_other_model=True "
            "to use them anyway.",
        )
