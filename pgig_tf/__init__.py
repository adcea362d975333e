"""pgig_tf: Pattern-Guided Integrated Gradients and related attribution methods for Keras 3 on TensorFlow.

The public names below are imported on first use (PEP 562), so that `import pgig_tf.cli.x`
(e.g. a command's `--help`) does not load TensorFlow.
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("pgig_tf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_PUBLIC = {
    "ANALYZERS": "pgig_tf.analyzers",
    "Analyzer": "pgig_tf.analyzers",
    "create_analyzer": "pgig_tf.analyzers",
    "GradientAnalyzer": "pgig_tf.analyzers",
    "InputTimesGradientAnalyzer": "pgig_tf.analyzers",
    "GuidedBackpropAnalyzer": "pgig_tf.analyzers",
    "IntegratedGradientsAnalyzer": "pgig_tf.analyzers",
    "PGIGAnalyzer": "pgig_tf.analyzers",
    "PatternAttributionAnalyzer": "pgig_tf.analyzers",
    "PatternNetAnalyzer": "pgig_tf.analyzers",
    "SmoothGradAnalyzer": "pgig_tf.analyzers",
    "SmoothGradSquaredAnalyzer": "pgig_tf.analyzers",
    "VarGradAnalyzer": "pgig_tf.analyzers",
    "SmoothGradIGAnalyzer": "pgig_tf.analyzers",
    "ExpectedGradientsAnalyzer": "pgig_tf.analyzers",
    "SmoothTaylorAnalyzer": "pgig_tf.analyzers",
    "NoiseBaselineIGAnalyzer": "pgig_tf.analyzers",
    "RandomAnalyzer": "pgig_tf.analyzers",
    "AttributionCallback": "pgig_tf.viz.callback",
    "fit_patterns": "pgig_tf.patterns.fitting",
    "Patterns": "pgig_tf.patterns.patterns",
    "SoftmaxOutputWarning": "pgig_tf.validation",
    "ConvergenceWarning": "pgig_tf.validation",
    "CorruptFileError": "pgig_tf.files",
    "OtherModelError": "pgig_tf.model.fingerprint",
    "OtherModelWarning": "pgig_tf.model.fingerprint",
    "register_layer": "pgig_tf.model.layer_support",
    "unregister_layer": "pgig_tf.model.layer_support",
    "register_rule": "pgig_tf.model.layer_support",
    "unregister_rule": "pgig_tf.model.layer_support",
    "load_analyzer": "pgig_tf.persistence",
    "make_strategy": "pgig_tf.model.distribute",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def _check_backend():
    """Raises ImportError unless TensorFlow is installed and Keras runs on it."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "pgig_tf needs TensorFlow >= 2.16. Install it with the package: "
            "pip install 'pgig_tf[cpu]' (CPU only) or 'pgig_tf[gpu]' (CUDA)."
        ) from error
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"pgig_tf needs Keras' TensorFlow backend, but KERAS_BACKEND is {keras.backend.backend()!r}; "
            "set KERAS_BACKEND=tensorflow before importing keras."
        )


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pgig_tf' has no attribute {name!r}")
    _check_backend()
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return __all__
