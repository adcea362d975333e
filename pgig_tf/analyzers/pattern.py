"""PatternNet and PatternAttribution (Kindermans et al., 2018): one backward pass with pattern kernels."""

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.core.aggregators import SinglePoint
from pgig_tf.core.engine import START_VALUE


class PatternNetAnalyzer(Analyzer):
    """PatternNet: the signal estimate, backward kernels replaced by the patterns, started with the output value."""

    fixed_rule = "pattern_net"
    start = START_VALUE
    expects_logits = True

    def _make_aggregator(self):
        return SinglePoint()


class PatternAttributionAnalyzer(Analyzer):
    """PatternAttribution (Eq. 3): backward kernels w * p, started with the selected output's value (§3.4)."""

    fixed_rule = "pattern_attribution"
    start = START_VALUE
    expects_logits = True

    def _make_aggregator(self):
        return SinglePoint()
