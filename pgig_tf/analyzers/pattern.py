"""PatternNet and PatternAttribution (Kindermans et al., 2018): one backward pass with pattern kernels."""

from pgig_tf.core.aggregators import SinglePoint
from pgig_tf.core.engine import START_VALUE
from pgig_tf.analyzers.base import Analyzer


class PatternNetAnalyzer(Analyzer):
    """PatternNet: the signal estimate, backward kernels replaced by the patterns, started with the output value."""

    expects_logits = True

    def __init__(self, model, *, patterns=None, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(model, rule="pattern_net", patterns=patterns, start=START_VALUE, batch_size=batch_size,
                         output=output, compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy)

    def _make_aggregator(self):
        return SinglePoint()


class PatternAttributionAnalyzer(Analyzer):
    """PatternAttribution (Eq. 3): backward kernels w * p, started with the selected output's value (§3.4)."""

    expects_logits = True

    def __init__(self, model, *, patterns=None, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(
            model, rule="pattern_attribution", patterns=patterns, start=START_VALUE, batch_size=batch_size,
            output=output, compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy,
        )

    def _make_aggregator(self):
        return SinglePoint()
