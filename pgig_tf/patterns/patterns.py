"""`Patterns`: a mapping from layer name to a pattern array shaped like that layer's kernel."""

import json
import os
from collections.abc import Mapping

import numpy as np

from pgig_tf.files import atomic_write
from pgig_tf.model import layer_kinds as L
from pgig_tf.model.graph import leaf_layers

_META_KEY = "__pgig_tf_meta__"


class Patterns(Mapping):
    """Layer name -> pattern array (the layer's kernel shape), plus how the patterns were fitted.

    `Patterns({"dense": array, ...})` wraps hand-made patterns; `fit_patterns` returns fitted ones.
    """

    def __init__(self, arrays, kind=None, num_samples=None):
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
        """Writes the patterns (and how they were fitted) to an `.npz` file."""
        meta = json.dumps({"kind": self.kind, "num_samples": self.num_samples})
        if _META_KEY in self._arrays:
            raise ValueError(f"a layer may not be called {_META_KEY!r}")
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"  # as np.savez names it
        with atomic_write(path, "wb") as file:
            np.savez(file, **self._arrays, **{_META_KEY: np.array(meta)})

    @classmethod
    def load(cls, path):
        """Reads patterns written by `save` (or any `.npz` of layer name -> array)."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != _META_KEY}
            meta = json.loads(str(data[_META_KEY])) if _META_KEY in data.files else {}
        return cls(arrays, kind=meta.get("kind"), num_samples=meta.get("num_samples"))

    def check(self, model):
        """Raises ValueError unless there is a pattern of the kernel's shape for every Dense/Conv layer."""
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
