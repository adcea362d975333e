"""Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2020): IG's path with PatternAttribution's backward rule.

PGIG (Eq. 4) is the path aggregator (`core.aggregators.StraightPath`, Eq. 1) times the
PatternAttribution rule (`core.rules.PatternAttributionRule`, kernels w -> w * p, Eq. 3) with
patterns p fitted by Eq. 2 (`patterns.fitting.fit_patterns`); the backward pass starts with 1.0.
"""

from pgig_tf.analyzers.integrated import IntegratedGradientsAnalyzer


class PGIGAnalyzer(IntegratedGradientsAnalyzer):
    """Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2020, Eq. 4).

    Integrated Gradients whose every gradient is PatternAttribution's pattern-modified
    gradient, started with 1.0. On a linear model PGIG_i = p_i * IG_i (§4.1). It takes
    Integrated Gradients' settings (`steps`, "auto" included, `baseline`, `method`, `tolerance`,
    `max_steps`). Its convergence delta f(x) - f(x̄) - Σφ does not vanish with many steps: the
    pattern-modified gradients are not the gradient of f, so it measures how far the
    attributions are from adding up to the output's change (on a linear model
    f(x) - f(x̄) - Σ_i p_i IG_i), not an integration error; steps="auto" therefore stops PGIG on
    the change of its maps alone.
    """

    fixed_rule = "pattern_attribution"
