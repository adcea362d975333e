"""Path methods: Integrated Gradients (Eq. 1) and Pattern-Guided Integrated Gradients (Eq. 4)."""

from pgig_tf.core.aggregators import StraightPath
from pgig_tf.validation import check_positive_int
from pgig_tf.analyzers.base import Analyzer


class IntegratedGradientsAnalyzer(Analyzer):
    """Integrated Gradients (Sundararajan et al., 2017), right Riemann sum with `steps` points (Eq. 1).

    `rule=` takes any backward rule; rule='pattern_attribution' is PGIG.
    """

    def __init__(self, model, *, steps=25, baseline=0.0, rule="gradient", patterns=None, batch_size=64,
                 output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(model, rule=rule, patterns=patterns, batch_size=batch_size, output=output,
                         compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy)
        self.steps = check_positive_int(steps, "steps")
        self.baseline = self._spec.baseline(baseline)

    def _make_aggregator(self):
        return StraightPath(self.steps, self.baseline)


class PGIGAnalyzer(IntegratedGradientsAnalyzer):
    """Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2020, Eq. 4).

    Integrated Gradients whose every gradient is PatternAttribution's pattern-modified
    gradient, started with 1.0. On a linear model PGIG_i = p_i * IG_i (§4.1).
    """

    def __init__(self, model, *, patterns=None, steps=25, baseline=0.0, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(
            model, steps=steps, baseline=baseline, rule="pattern_attribution", patterns=patterns,
            batch_size=batch_size, output=output, compute_dtype=compute_dtype, jit_compile=jit_compile,
            strategy=strategy,
        )
