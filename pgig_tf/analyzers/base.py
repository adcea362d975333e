"""The analyzer base class: a backward rule times an aggregator, with iNNvestigate's fit/analyze API."""

import numpy as np
import tensorflow as tf

from ..engine import START_ONE, GradientEngine
from ..pattern_fitting import fit_patterns
from ..patterns import Patterns
from ..rules import make_rule, rule_class
from ..validation import check_inputs, check_positive_int, check_seed, model_io, resolve_neurons


class Analyzer:
    """Explains a Keras model's output: `analyze(x, neuron_selection)` -> array shaped like `x`.

    Subclasses choose the aggregator (`_make_aggregator`); the rule ('gradient',
    'guided_backprop', 'pattern_attribution', 'pattern_net') and where the backward pass
    starts (1.0 or the output value) are constructor settings. Pattern rules take `patterns=`
    or fit their own with `fit(data)`.
    """

    def __init__(self, model, *, rule="gradient", patterns=None, start=START_ONE, batch_size=64, seed=None):
        self.model = model
        self.seed = check_seed(seed)
        self._input_shape, self._output_width = model_io(model)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.start = start
        self.rule_name = rule
        self.needs_patterns = rule_class(rule).needs_patterns
        if patterns is not None and not isinstance(patterns, Patterns):
            patterns = Patterns(patterns)
        self.patterns = patterns
        self._engine = None
        self._predict_functions = {}
        if patterns is not None or not self.needs_patterns:
            self._build_rule().check_model(model)  # unsupported layers and bad patterns fail here

    def fit(self, data, kind="relu", batch_size=None, verbose=True):
        """Fits patterns on `data` for pattern rules (Eq. 2); other analyzers have nothing to fit."""
        if self.needs_patterns:
            self.patterns = fit_patterns(
                self.model, data, kind=kind, batch_size=batch_size or self.batch_size, verbose=verbose
            )
            self._engine = None
        return self

    def analyze(self, x, neuron_selection="max_activation"):
        """Attributions for output `neuron_selection` ('max_activation', an int, or one int per sample)."""
        x = check_inputs(x, self._input_shape)
        targets = resolve_neurons(
            neuron_selection, x.shape[0], self._output_width, lambda: self.predict(x)
        )
        return self._get_engine()(x, targets, seed=self._next_seed())

    def predict(self, x):
        """The model's output on `x` (inference mode), computed `batch_size` samples at a time."""
        x = check_inputs(x, self._input_shape)
        function = self._predict_function(x.shape[1:])
        outputs = [
            function(tf.constant(x[i : i + self.batch_size])).numpy()
            for i in range(0, x.shape[0], self.batch_size)
        ]
        return np.concatenate(outputs)

    @property
    def tracing_count(self):
        """Number of traces of the compiled gradient loop so far (stays 1 per input shape)."""
        return 0 if self._engine is None else self._engine.tracing_count

    def _make_aggregator(self):
        raise NotImplementedError

    def _next_seed(self):
        """The seed of the next call: the fixed `seed`, or fresh entropy when it is None."""
        if self.seed is not None:
            return self.seed
        return int(np.random.default_rng().integers(0, 2**31 - 1))

    def _build_rule(self):
        if self.needs_patterns and self.patterns is None:
            raise ValueError(
                f"{type(self).__name__} needs patterns: call analyzer.fit(data) or pass patterns=..."
            )
        return make_rule(self.rule_name, patterns=self.patterns)

    def _get_engine(self):
        if self._engine is None:
            rule = self._build_rule()
            rule.check_model(self.model)
            self._engine = GradientEngine(
                self.model, rule, self._make_aggregator(), start=self.start, batch_size=self.batch_size
            )
        return self._engine

    def _predict_function(self, sample_shape):
        key = tuple(sample_shape)
        if key not in self._predict_functions:
            signature = [tf.TensorSpec((None,) + key, tf.float32)]
            self._predict_functions[key] = tf.function(
                lambda x: self.model(x, training=False), input_signature=signature
            )
        return self._predict_functions[key]
