"""Integrated Gradients (Sundararajan et al., 2017, Eq. 1): gradients along the straight path from a baseline."""

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.core.aggregators import StraightPath
from pgig_tf.validation import check_positive_int


class PathBaseline:
    """The `baseline` setting of path methods: kept as given (what `get_config` saves), and in the engine's
    layout as `_engine_baseline`, computed when it is set (token ids are embedded then)."""

    @property
    def baseline(self):
        return self._baseline

    @baseline.setter
    def baseline(self, value):
        self._engine_baseline = self._spec.baseline(value)
        self._baseline = value


class IntegratedGradientsAnalyzer(PathBaseline, Analyzer):
    """Integrated Gradients (Sundararajan et al., 2017), right Riemann sum with `steps` points (Eq. 1).

    `rule=` takes any backward rule; rule='pattern_attribution' is PGIG (`PGIGAnalyzer`).

    Args:
        model: the Keras model to explain.
        steps: m, the number of path points x̄ + k/m (x − x̄), k = 1..m.
        baseline: x̄, a scalar or an array broadcastable to one sample (default 0).
        **options: the shared analyzer options (see `Analyzer.__init__`), `rule` and `patterns` included.
    """

    def __init__(self, model, *, steps=25, baseline=0.0, **options):
        super().__init__(model, **options)
        self.steps = check_positive_int(steps, "steps")
        self.baseline = baseline

    def _make_aggregator(self):
        return StraightPath(self.steps, self._engine_baseline)
