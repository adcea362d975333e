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
        self._rule = None
        self._engine = None
        self._predict_functions = {}
        if patterns is not None or not self.needs_patterns:
            self._get_rule()  # unsupported layers and bad patterns fail here, not at analyze

    def fit(self, data, kind="relu", batch_size=None, verbose=True):
        """Fits patterns on `data` for pattern rules (Eq. 2); other analyzers have nothing to fit."""
        if self.needs_patterns:
            self.patterns = fit_patterns(
                self.model, data, kind=kind, batch_size=batch_size or self.batch_size, verbose=verbose
            )
            self._rule = self._engine = None
        return self

    def analyze(self, x, neuron_selection="max_activation"):
        """Attributions for output `neuron_selection` ('max_activation', an int, or one int per sample)."""
        x = check_inputs(x, self._input_shape)
        targets = self._targets(x, neuron_selection)
        return self._get_engine()(x, targets, seed=self._next_seed())

    def predict(self, x):
        """The model's output on `x` (inference mode), computed `batch_size` samples at a time."""
        return self._predict_checked(check_inputs(x, self._input_shape))

    def _targets(self, x, neuron_selection):
        """One output index per sample of the already checked `x`."""
        return resolve_neurons(neuron_selection, x.shape[0], self._output_width, lambda: self._predict_checked(x))

    def _predict_checked(self, x):
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

    def _get_rule(self):
        """The backward rule, built (and checked against the model) once per set of patterns."""
        if self._rule is None:
            if self.needs_patterns and self.patterns is None:
                raise ValueError(
                    f"{type(self).__name__} needs patterns: call analyzer.fit(data) or pass patterns=..."
                )
            rule = make_rule(self.rule_name, patterns=self.patterns)
            rule.check_model(self.model)
            self._rule = rule
        return self._rule

    def _get_engine(self):
        if self._engine is None:
            self._engine = GradientEngine(
                self.model, self._get_rule(), self._make_aggregator(), start=self.start, batch_size=self.batch_size
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
