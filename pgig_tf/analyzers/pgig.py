"""Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2020): IG's path with PatternAttribution's backward rule.

PGIG (Eq. 4) is the path aggregator (`core.aggregators.StraightPath`, Eq. 1) times the
PatternAttribution rule (`core.rules.PatternAttributionRule`, kernels w -> w * p, Eq. 3) with
patterns p fitted by Eq. 2 (`patterns.fitting.fit_patterns`); the backward pass starts with 1.0.
"""

from pgig_tf.analyzers.integrated import IntegratedGradientsAnalyzer


class PGIGAnalyzer(IntegratedGradientsAnalyzer):
    """Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2020, Eq. 4).

    Integrated Gradients whose every gradient is PatternAttribution's pattern-modified
    gradient, started with 1.0. On a linear model PGIG_i = p_i * IG_i (§4.1).
    """

    fixed_rule = "pattern_attribution"
