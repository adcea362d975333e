"""Single-point gradient methods: Gradient, Gradient x Input, Guided Backprop."""

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.core.aggregators import SinglePoint


class GradientAnalyzer(Analyzer):
    """The plain input gradient of the selected output (Simonyan et al., 2014)."""

    fixed_rule = "gradient"
    expects_logits = True

    def _make_aggregator(self):
        return SinglePoint()


class InputTimesGradientAnalyzer(Analyzer):
    """Gradient x Input (Shrikumar et al., 2016): x * df/dx."""

    fixed_rule = "gradient"
    expects_logits = True

    def _make_aggregator(self):
        return SinglePoint(times_input=True)


class GuidedBackpropAnalyzer(Analyzer):
    """Guided Backprop (Springenberg et al., 2014): at each ReLU only positive gradient where the input was positive."""

    fixed_rule = "guided_backprop"
    expects_logits = True

    def _make_aggregator(self):
        return SinglePoint()
