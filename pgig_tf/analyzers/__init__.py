"""The analyzers and `create_analyzer`, which builds one by its iNNvestigate-style name."""

import inspect

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.analyzers.gradient import GradientAnalyzer, GuidedBackpropAnalyzer, InputTimesGradientAnalyzer
from pgig_tf.analyzers.integrated import IntegratedGradientsAnalyzer, PGIGAnalyzer
from pgig_tf.analyzers.pattern import PatternAttributionAnalyzer, PatternNetAnalyzer
from pgig_tf.analyzers.sampling import (
    ExpectedGradientsAnalyzer,
    NoiseBaselineIGAnalyzer,
    RandomAnalyzer,
    SmoothGradAnalyzer,
    SmoothGradIGAnalyzer,
    SmoothGradSquaredAnalyzer,
    SmoothTaylorAnalyzer,
    VarGradAnalyzer,
)

ANALYZERS = {
    "gradient": GradientAnalyzer,
    "input_t_gradient": InputTimesGradientAnalyzer,
    "integrated_gradients": IntegratedGradientsAnalyzer,
    "guided_backprop": GuidedBackpropAnalyzer,
    "pattern_net": PatternNetAnalyzer,
    "pattern_attribution": PatternAttributionAnalyzer,
    "pgig": PGIGAnalyzer,
    "smoothgrad": SmoothGradAnalyzer,
    "smoothgrad_squared": SmoothGradSquaredAnalyzer,
    "vargrad": VarGradAnalyzer,
    "smoothgrad_ig": SmoothGradIGAnalyzer,
    "expected_gradients": ExpectedGradientsAnalyzer,
    "smooth_taylor": SmoothTaylorAnalyzer,
    "noise_baseline_ig": NoiseBaselineIGAnalyzer,
    "random": RandomAnalyzer,
}


# The analyzers whose rule is a pattern rule by construction (they take `patterns=`).
PATTERN_ANALYZERS = ("pattern_net", "pattern_attribution", "pgig")


def analyzer_settings(name):
    """{keyword: default} of the constructor of the analyzer called `name` (inspect.Parameter.empty if required)."""
    if name not in ANALYZERS:
        raise ValueError(f"Unknown analyzer {name!r}; choose one of: {', '.join(ANALYZERS)}")
    parameters = inspect.signature(ANALYZERS[name].__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in ("self", "model")}


def create_analyzer(name, model, **kwargs):
    """The analyzer called `name` (see `ANALYZERS`) for `model`, with its keyword settings."""
    accepted = analyzer_settings(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Analyzer {name!r} takes no argument {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    return ANALYZERS[name](model, **kwargs)


__all__ = ["ANALYZERS", "PATTERN_ANALYZERS", "Analyzer", "analyzer_settings", "create_analyzer"] + [cls.__name__ for cls in ANALYZERS.values()]
