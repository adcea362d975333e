"""The analyzers and `create_analyzer`, which builds one by its iNNvestigate-style name."""

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.analyzers.gradient import GradientAnalyzer, GuidedBackpropAnalyzer, InputTimesGradientAnalyzer
from pgig_tf.analyzers.integrated import IntegratedGradientsAnalyzer
from pgig_tf.analyzers.pattern import PatternAttributionAnalyzer, PatternNetAnalyzer
from pgig_tf.analyzers.pgig import PGIGAnalyzer
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

# Analyzers by name. A new method is an `Analyzer` subclass; adding it here makes it known by name.
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


def analyzer_class(name: str) -> type:
    """The analyzer class called `name`; ValueError listing the names if there is none."""
    if name not in ANALYZERS:
        raise ValueError(f"Unknown analyzer {name!r}; choose one of: {', '.join(ANALYZERS)}")
    return ANALYZERS[name]


def analyzer_settings(name: str) -> dict:
    """{keyword: default} of every setting the analyzer called `name` takes (see `Analyzer.settings`)."""
    return analyzer_class(name).settings()


def create_analyzer(name: str, model, **kwargs) -> Analyzer:
    """The analyzer called `name` (see `ANALYZERS`) for `model`, with its keyword settings.

    Raises:
        ValueError: `name` is not in `ANALYZERS`.
        TypeError: a keyword the analyzer does not take (the message lists those it takes).
    """
    accepted = analyzer_settings(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Analyzer {name!r} takes no argument {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    return ANALYZERS[name](model, **kwargs)


def build_analyzer(name: str, model, *, patterns=None, background=None, seed=None, **settings) -> Analyzer:
    """`create_analyzer(name, model, **settings)`, given what a run has at hand, each passed only where it is used.

    Args:
        name: a key of `ANALYZERS`.
        model: the Keras model.
        patterns: `Patterns` for an analyzer whose rule needs them (its fixed rule or `settings['rule']`).
        background: background samples for an analyzer that `uses_background` (Expected Gradients).
        seed: the seed of an analyzer that draws random numbers.
        **settings: the analyzer's own settings (see `analyzer_settings(name)`).
    """
    cls = analyzer_class(name)
    if patterns is not None and cls.rule_needs_patterns(settings.get("rule")):
        settings.setdefault("patterns", patterns)
    if seed is not None and cls.random:
        settings.setdefault("seed", seed)
    analyzer = create_analyzer(name, model, **settings)
    if background is not None and cls.uses_background and getattr(analyzer, "baselines", None) is None:
        analyzer.set_background(background)
    return analyzer


__all__ = ["ANALYZERS", "Analyzer", "analyzer_class", "analyzer_settings", "build_analyzer", "create_analyzer"] + [
    cls.__name__ for cls in ANALYZERS.values()
]
