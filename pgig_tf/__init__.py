"""pgig_tf: Pattern-Guided Integrated Gradients and related attribution methods for Keras 3 on TensorFlow."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:
    import tensorflow  # noqa: E402,F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "pgig_tf needs TensorFlow >= 2.16. Install it with the package: "
        "pip install 'pgig_tf[cpu]' (CPU only) or 'pgig_tf[gpu]' (CUDA)."
    ) from error

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"pgig_tf needs Keras' TensorFlow backend, but KERAS_BACKEND is {keras.backend.backend()!r}; "
        "set KERAS_BACKEND=tensorflow before importing keras."
    )

from pgig_tf.analyzers import (  # noqa: E402
    ANALYZERS,
    Analyzer,
    ExpectedGradientsAnalyzer,
    NoiseBaselineIGAnalyzer,
    RandomAnalyzer,
    SmoothGradAnalyzer,
    SmoothGradIGAnalyzer,
    SmoothGradSquaredAnalyzer,
    SmoothTaylorAnalyzer,
    VarGradAnalyzer,
    GradientAnalyzer,
    GuidedBackpropAnalyzer,
    InputTimesGradientAnalyzer,
    IntegratedGradientsAnalyzer,
    PatternAttributionAnalyzer,
    PatternNetAnalyzer,
    PGIGAnalyzer,
    create_analyzer,
)
from pgig_tf.viz.callback import AttributionCallback  # noqa: E402
from pgig_tf.patterns.fitting import fit_patterns  # noqa: E402
from pgig_tf.patterns.patterns import Patterns  # noqa: E402
from pgig_tf.validation import SoftmaxOutputWarning  # noqa: E402
from pgig_tf.model.layer_support import register_rule, unregister_rule  # noqa: E402
from pgig_tf.persistence import load_analyzer  # noqa: E402
from pgig_tf.model.distribute import make_strategy  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ANALYZERS",
    "Analyzer",
    "AttributionCallback",
    "ExpectedGradientsAnalyzer",
    "NoiseBaselineIGAnalyzer",
    "RandomAnalyzer",
    "SmoothGradAnalyzer",
    "SmoothGradIGAnalyzer",
    "SmoothGradSquaredAnalyzer",
    "SmoothTaylorAnalyzer",
    "VarGradAnalyzer",
    "GradientAnalyzer",
    "GuidedBackpropAnalyzer",
    "InputTimesGradientAnalyzer",
    "IntegratedGradientsAnalyzer",
    "PGIGAnalyzer",
    "PatternAttributionAnalyzer",
    "PatternNetAnalyzer",
    "Patterns",
    "SoftmaxOutputWarning",
    "create_analyzer",
    "fit_patterns",
    "load_analyzer",
    "make_strategy",
    "register_rule",
    "unregister_rule",
]
