"""Single-point gradient methods: Gradient, Gradient x Input, Guided Backprop."""

from pgig_tf.core.aggregators import SinglePoint
from pgig_tf.analyzers.base import Analyzer


class GradientAnalyzer(Analyzer):
    """The plain input gradient of the selected output (Simonyan et al., 2014)."""

    expects_logits = True

    def __init__(self, model, *, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(model, rule="gradient", batch_size=batch_size, output=output,
                         compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy)

    def _make_aggregator(self):
        return SinglePoint()


class InputTimesGradientAnalyzer(Analyzer):
    """Gradient x Input (Shrikumar et al., 2016): x * df/dx."""

    expects_logits = True

    def __init__(self, model, *, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(model, rule="gradient", batch_size=batch_size, output=output,
                         compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy)

    def _make_aggregator(self):
        return SinglePoint(times_input=True)


class GuidedBackpropAnalyzer(Analyzer):
    """Guided Backprop (Springenberg et al., 2014): at each ReLU only positive gradient where the input was positive."""

    expects_logits = True

    def __init__(self, model, *, batch_size=64, output=None,
                 compute_dtype=None, jit_compile=False, strategy=None):
        super().__init__(model, rule="guided_backprop", batch_size=batch_size, output=output,
                         compute_dtype=compute_dtype, jit_compile=jit_compile, strategy=strategy)

    def _make_aggregator(self):
        return SinglePoint()
