"""`AxiomBench`: the data, constructed models, pattern fits and analyzer settings every axiom check shares."""

import inspect

import numpy as np

from pgig_tf.analyzers import analyzer_class, analyzer_settings, build_analyzer
from pgig_tf.evaluation.axioms import networks as N
from pgig_tf.patterns.fitting import fit_patterns


def default_setting(name, key):
    """An analyzer's default keyword value (e.g. its `steps`, `samples`, `noise_scale`), or None."""
    default = analyzer_settings(name).get(key)
    return None if default is inspect.Parameter.empty else default


class AxiomBench:
    """Seeded data and models; analyzers built with one seed, patterns fitted once per (model, data).

    `data` (num_data x 4, correlated and non-exchangeable) fits every pattern and, its first
    `num_background` rows, is Expected Gradients' background; `inputs` are held-out rows
    drawn from the same distribution. Sampling analyzers get `seed`, so every call with the
    same settings gives the same noise for every network (equivalent networks, f1/f2/f).
    """

    def __init__(self, seed=0, num_data=512, num_background=32, num_inputs=4, batch_size=1024):
        if num_inputs < 1 or num_background < 1 or num_data < num_background:
            raise ValueError(
                f"need num_inputs >= 1 and 1 <= num_background <= num_data, got num_inputs={num_inputs}, "
                f"num_background={num_background}, num_data={num_data}"
            )
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.data = N.make_data(self.seed, num_data)
        self.background = self.data[:num_background]
        self.pool = N.make_data(self.seed, 64, stream=1)  # held-out candidates for the explained inputs
        self.inputs = self.pool[:num_inputs]
        self.num_inputs = num_inputs
        self._models = {}
        self._patterns = {}

    def model(self, spec, name):
        """The Keras model of `spec`, built once per `name` (a name stands for one construction)."""
        if name not in self._models:
            self._models[name] = N.build(spec, name)
        return self._models[name]

    def patterns(self, model, data=None, data_key="data"):
        """Patterns of `model` fitted (Eq. 2, kind 'relu') on `data` (default: the bench's data), cached."""
        key = (model.name, data_key)
        if key not in self._patterns:
            self._patterns[key] = fit_patterns(
                model, self.data if data is None else data, kind="relu", batch_size=self.batch_size, verbose=False
            )
        return self._patterns[key]

    def attribute(self, name, model, x, budget=None, background=None, pattern_data=None, data_key="data"):
        """The map of analyzer `name` for output 0 of `model` at `x` (float64).

        `budget` overrides settings (steps, samples); `background` is Expected Gradients'
        baseline set (default: the bench's); pattern analyzers fit on `pattern_data`.
        """
        patterns = self.patterns(model, pattern_data, data_key) if analyzer_class(name).rule_needs_patterns() else None
        settings = {"batch_size": self.batch_size, **(budget or {})}
        analyzer = build_analyzer(
            name,
            model,
            patterns=patterns,
            seed=self.seed,
            background=self.background if background is None else background,
            **settings,
        )
        return analyzer.analyze(np.asarray(x, np.float32), neuron_selection=0).astype(np.float64)
