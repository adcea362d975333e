"""The analyzer base class: a backward rule times an aggregator, with iNNvestigate's fit/analyze API."""

import inspect
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from pgig_tf.core.engine import START_ONE, GradientEngine
from pgig_tf.core.rules import make_rule, rule_class, rule_name
from pgig_tf.model.distribute import check_jit_compile, check_strategy, strategy_scope
from pgig_tf.model.fingerprint import cached_fingerprints
from pgig_tf.model.precision import check_compute_dtype
from pgig_tf.model.spec import ModelSpec, SpecRule
from pgig_tf.patterns.fitting import fit_patterns
from pgig_tf.patterns.patterns import Patterns
from pgig_tf.validation import (
    SoftmaxOutputWarning,
    check_finite_attributions,
    check_first_index,
    check_positive_int,
    check_seed,
    resolve_neurons,
    softmax_output_message,
    user_stacklevel,
)


class Analyzer:
    """Explains a Keras model's output: `analyze(x, neuron_selection)` -> array shaped like `x`.

    Subclasses choose the aggregator (`_make_aggregator`) and declare what they are as class
    attributes (`fixed_rule`, `start`, `uses_background`, `random`); the others take the rule
    as `rule=` ('gradient', 'guided_backprop', 'pattern_attribution', 'pattern_net', or a
    `core.rules.Rule` subclass). Pattern rules take `patterns=`
    or fit their own with `fit(data)`. `output=` (a name or index) chooses the explained output
    of a multi-output model; a multi-input model takes and returns one array per input; token
    inputs (ids into an Embedding) are explained on the embedded vectors, one score per token.
    Speed options: `compute_dtype='bfloat16'` runs the model in bfloat16 inside the compiled
    loop (several times faster on CPUs with AMX/AVX512-BF16; the model is not changed; maps
    differ from float32 by a few percent in relative L2 on a trained digits CNN and by tens of
    percent on a random-weight VGG16, see the speed options in the user guide),
    `jit_compile=True` compiles the loop with XLA.

    Several devices: `strategy=` (a `tf.distribute.Strategy`, e.g. `pgig_tf.make_strategy(2)` or
    `tf.distribute.MirroredStrategy()`) splits each `analyze` call's samples into one contiguous
    shard per replica, evaluated in parallel in one compiled call, with the same results as one
    device (random draws included), and `fit` splits each batch of `fit_patterns` the same way.
    The model may be built outside `strategy.scope()` (it works: every replica reads the weights
    from the device they live on); on several GPUs build or load it under `strategy.scope()`
    so that each GPU holds its own copy, which `jit_compile=True` requires. The strategy is not
    saved by `save` (pass `strategy=` to `load_analyzer`).
    """

    # What the class declares, so that callers ask the class instead of testing its name.
    fixed_rule = None  # the rule the method is defined with (PGIG: 'pattern_attribution'); None: it takes rule=
    start = START_ONE  # where the backward pass starts: 1.0, or the output's value (START_VALUE, PGIG paper §3.4)
    uses_background = False  # fit(data) keeps background samples that the method draws baselines from
    random = False  # the method draws random numbers: it takes seed=
    # True for the methods that take the gradient at (or near) the input itself, which a softmax
    # output saturates; they warn (SoftmaxOutputWarning) when the explained output is a softmax.
    expects_logits = False

    # analyze(..., return_convergence_delta=True) is defined (path integrals from a fixed baseline);
    # `no_delta_reason` says why a class has none.
    has_convergence_delta = False
    no_delta_reason = "only Integrated Gradients and PGIG, path integrals from a fixed baseline, have one"

    # Settings of this process's devices, not of the method: `save` leaves them out.
    _runtime_arguments = ("strategy",)

    def __new__(cls, *args, **kwargs):
        # Records the concrete class's constructor arguments (defaults filled in) before __init__
        # runs, so that save() round-trips every setting, new ones included, with no per-class code.
        self = super().__new__(cls)
        self._constructor_arguments = _bound_arguments(cls, args, kwargs)
        return self

    def __init__(self, model, **options):
        """Takes the options every analyzer shares; subclasses add their own settings and pass the rest here.

        Args:
            model: the Keras model to explain.
            **options: `batch_size` (gradient evaluations per compiled chunk, default 64), `output`
                (name or index of the explained output of a multi-output model), `compute_dtype`
                (None or 'bfloat16'), `jit_compile` (bool), `strategy` (a tf.distribute.Strategy);
                `rule` (a name in `core.rules.RULES` or a Rule subclass; default 'gradient') where
                the class has no `fixed_rule`; `patterns` where the rule may need them, with
                `allow_other_model` (default False: patterns fitted on a model with other layers or
                weights raise `OtherModelError`; True: they are used with an `OtherModelWarning`);
                `seed` for random methods.

        Raises:
            TypeError: an option this analyzer does not take, or a missing/None model.
            ValueError: an invalid setting, or a layer the rule cannot handle.
        """
        accepted = type(self)._options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} takes no argument {', '.join(unknown)}; it takes: {', '.join(type(self).settings())}"
            )
        options = {**accepted, **options}
        self.model = model
        self.seed = check_seed(options.get("seed"))
        self.output = options["output"]
        self.compute_dtype = check_compute_dtype(options["compute_dtype"])
        self.jit_compile = bool(options["jit_compile"])
        self.strategy = check_strategy(options["strategy"])
        check_jit_compile(self.strategy, model, self.jit_compile)
        self._spec = ModelSpec(model, self.output)
        self._spec_rule = None
        self._warn_if_softmax()
        self.batch_size = check_positive_int(options["batch_size"], "batch_size")
        self.rule_name = self.fixed_rule or options.get("rule", "gradient")
        self.needs_patterns = rule_class(self.rule_name).needs_patterns
        self.allow_other_model = bool(options.get("allow_other_model", False))
        patterns = options.get("patterns")
        if patterns is not None and not isinstance(patterns, Patterns):
            patterns = Patterns(patterns)
        self.patterns = patterns
        self._rule = None
        self._engine = None
        self._call_first_index = 0  # the first_index of the current analyze call
        if patterns is not None or not self.needs_patterns:
            self._get_rule()  # unsupported layers and bad patterns fail here, not at analyze

    @classmethod
    def _options(cls):
        """{option: default} of the shared options this class takes (see `__init__`)."""
        options = {}
        if cls.fixed_rule is None:
            options["rule"] = "gradient"
        if cls.fixed_rule is None or rule_class(cls.fixed_rule).needs_patterns:
            options["patterns"] = None
            options["allow_other_model"] = False
        if cls.random:
            options["seed"] = None
        options.update(batch_size=64, output=None, compute_dtype=None, jit_compile=False, strategy=None)
        return options

    @classmethod
    def settings(cls):
        """{keyword: default} of every setting the class's constructor takes (its own, then the shared options)."""
        own = {}
        for klass in cls.__mro__:
            if klass is Analyzer:
                break
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            parameters = inspect.signature(init).parameters.values()
            for p in parameters:
                if p.name not in ("self", "model") and p.kind is not inspect.Parameter.VAR_KEYWORD:
                    own.setdefault(p.name, p.default)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                break
        return {**own, **cls._options()}

    @classmethod
    def rule_needs_patterns(cls, rule=None):
        """Whether the class's backward rule (its `fixed_rule`, else `rule`, default 'gradient') needs patterns."""
        return rule_class(cls.fixed_rule or rule or "gradient").needs_patterns

    def fit(self, data, kind: str = "relu", batch_size: int | None = None, verbose: bool = True) -> "Analyzer":
        """Fits what the method needs from data: patterns for a pattern rule (PGIG paper Eq. 2).

        Other analyzers have nothing to fit (Expected Gradients keeps background samples); they
        still check that `data` fits the model.

        Args:
            data: training inputs: an array (a list/tuple/dict of arrays for several inputs), a
                tf.data.Dataset of x or (x, y), or an iterable of batches.
            kind: the pattern estimator, 'relu' (two-component, for layers followed by a ReLU) or
                'linear' (everywhere).
            batch_size: samples per batch (default: the analyzer's `batch_size`).
            verbose: print progress.

        Returns:
            The analyzer itself, so that `Analyzer(model).fit(data).analyze(x)` reads as one line.

        Raises:
            ValueError, TypeError: the data does not fit the model, or a layer cannot have patterns.
        """
        if self.needs_patterns:
            with cached_fingerprints():  # the model's weights are hashed once, for the patterns and their check
                self.patterns = fit_patterns(
                    self.model,
                    data,
                    kind=kind,
                    batch_size=batch_size or self.batch_size,
                    verbose=verbose,
                    strategy=self.strategy,
                )
                self._rule = self._engine = None
                self._get_rule()  # built (and checked) here, not in the next analyze call
        elif self._spec.is_array_data(data):
            self._spec.check(data, name="data", embed=False)  # nothing to fit, but wrong data is still an error
        return self

    def analyze(self, x, neuron_selection="max_activation", return_convergence_delta=False, *, first_index: int = 0):
        """Attributions for output `neuron_selection` ('max_activation', an int, or one int per sample).

        Args:
            x: an array for a single-input model, or a list/tuple/dict by input name of arrays, one
                per input; or a `tf.data.Dataset` (batched or not; `(x, y)` elements give `x`) or a
                `keras.utils.PyDataset`, explained one batch at a time (memory bounded by the
                batch, but for the maps returned), with the same random draws as one call.
            neuron_selection: 'max_activation' (the argmax of the explained output), an int, or one
                int per sample.
            return_convergence_delta: also return the completeness gap of each sample,
                f(x) − f(x̄) − Σᵢ φᵢ with f the explained output (Integrated Gradients and PGIG only).
            first_index: the index of x's first sample in a larger set explained in pieces. Random
                draws (noise, baselines, background samples) are keyed by the seed and each
                sample's index, so pieces explained with their first_index get exactly the draws
                of one call on the whole set (contiguous shards, resumed runs).

        Returns:
            The attributions, shaped and structured like `x` (a dataset gives the maps of all its
            samples, stacked in order). A token input (ids into an Embedding layer) gets one score
            per token: the attribution on its embedded vectors summed over the embedding axis.
            With `return_convergence_delta`: (attributions, delta), delta one number per sample.

        Raises:
            TypeError, ValueError: `x` or `neuron_selection` does not fit the model, or the result
                overflowed (NaN/Inf).
            ValueError: `return_convergence_delta` for a method without a convergence delta.
        """
        first_index = check_first_index(first_index)
        self._call_first_index = first_index  # batches of a stream after this index continue this call
        if return_convergence_delta and not self.has_convergence_delta:
            raise ValueError(f"{type(self).__name__} has no convergence delta: {self.no_delta_reason}")
        if _is_stream(x):
            return self._analyze_stream(x, neuron_selection, return_convergence_delta, first_index)
        batch = self._check_x(x)
        targets = self._targets(batch, neuron_selection)
        if return_convergence_delta:
            return self._analyze_with_delta(batch, targets, self._next_seed(), first_index)
        return self._analyze_checked(batch, targets, self._next_seed(), first_index)

    def _check_x(self, x):
        """The checked `Batch` of the user's `x`."""
        return self._spec.check(x)

    def _analyze_checked(self, batch, targets, seed, first_index):
        """The maps of a checked batch; `first_index`: the index of its first sample in the stream."""
        result = self._get_engine()(batch.engine, targets, seed=seed, first_index=first_index)
        return self._finish(result, batch)

    def _analyze_with_delta(self, batch, targets, seed, first_index):
        """(maps, completeness gap per sample) of a checked batch; only where `has_convergence_delta`."""
        raise NotImplementedError

    def _analyze_stream(self, data, neuron_selection, with_delta=False, first_index=0):
        """`analyze` over a dataset, one batch at a time, with the random draws of one call."""
        per_sample = not isinstance(neuron_selection, (str, numbers.Integral)) and np.ndim(neuron_selection) > 0
        selection = np.asarray(neuron_selection) if per_sample else neuron_selection
        if isinstance(data, tf.data.Dataset):
            batches, _ = self._spec.iterate_batches(data, self.batch_size)
        else:  # keras.utils.PyDataset: indexable batches of x or (x, y[, weights])
            batches = (data[i] for i in range(len(data)))
            batches = (b[0] if isinstance(b, tuple) else b for b in batches)
        seed = self._next_seed()
        pieces, deltas, first = [], [], 0
        for raw in batches:
            batch = self._check_x(raw)
            count = batch.num_samples
            if per_sample and first + count > len(selection):
                raise ValueError(f"neuron_selection has {len(selection)} indices but x has more samples")
            targets = self._targets(batch, selection[first : first + count] if per_sample else selection)
            if with_delta:
                maps, delta = self._analyze_with_delta(batch, targets, seed, first_index + first)
                pieces.append(maps)
                deltas.append(delta)
            else:
                pieces.append(self._analyze_checked(batch, targets, seed, first_index + first))
            first += count
        if not pieces:
            raise ValueError("x is an empty dataset: it yielded no batch")
        if per_sample and first != len(selection):
            raise ValueError(f"neuron_selection has {len(selection)} indices but x has {first} samples")
        return (_stack(pieces), np.concatenate(deltas)) if with_delta else _stack(pieces)

    def predict(self, x) -> np.ndarray:
        """The explained output on `x` (inference mode), computed `batch_size` samples at a time.

        Args:
            x: inputs as for `analyze` (arrays only).

        Returns:
            The chosen output, one row per sample.
        """
        return self._predict_checked(self._spec.check(x, embed=False))

    def _targets(self, batch, neuron_selection):
        """One output index per sample of the already checked `batch` (a `model_spec.Batch`)."""
        return resolve_neurons(
            neuron_selection, batch.num_samples, self._spec.output_width, lambda: self._predict_checked(batch)
        )

    def _predict_checked(self, batch):
        return self._spec.predict(batch, self.batch_size)

    def _finish(self, result, batch):
        """The engine's result, checked for NaN/Inf, in the structure of the user's input."""
        return self._spec.restore(check_finite_attributions(result, type(self).__name__, self.model), batch)

    def _warn_if_softmax(self):
        layer = self._spec.softmax_layer() if self.expects_logits else None
        if layer is not None:
            warnings.warn(
                softmax_output_message(type(self).__name__, layer.name),
                SoftmaxOutputWarning,
                stacklevel=user_stacklevel(),
            )

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
                raise ValueError(f"{type(self).__name__} needs patterns: call analyzer.fit(data) or pass patterns=...")
            with strategy_scope(self.strategy):  # pattern variables mirrored on every replica
                rule = make_rule(self.rule_name, patterns=self.patterns, allow_other_model=self.allow_other_model)
            self._spec.check_rule(rule)
            self._rule = rule
        return self._rule

    def _engine_rule(self):
        """The rule as the engine calls it: through the model spec (inputs, embeddings, chosen output)."""
        rule = self._get_rule()
        if self._spec_rule is None or self._spec_rule.rule is not rule:
            self._spec_rule = SpecRule(rule, self._spec)
        return self._spec_rule

    def _make_engine(self, aggregator, engine_class=GradientEngine):
        """An `engine_class` (a GradientEngine) for `aggregator` (told the input segments, for per-input noise ranges)."""
        aggregator.segments = self._spec.segments
        return engine_class(
            self.model,
            self._engine_rule(),
            aggregator,
            start=self.start,
            batch_size=self.batch_size,
            compute_dtype=self.compute_dtype,
            jit_compile=self.jit_compile,
            strategy=self.strategy,
        )

    def _get_engine(self):
        if self._engine is None:
            self._engine = self._make_engine(self._make_aggregator())
        return self._engine

    def get_config(self):
        """Every constructor setting but `model`, as it is now.

        A setting that the instance holds as an attribute (or property) of the same name is that
        attribute's current value, so assignments after construction (`analyzer.steps = 50`) and
        fitted state (`patterns`, Expected Gradients' `baselines`) are included; any other setting
        is the constructor argument as passed (defaults filled in). A rule given as a class is
        replaced by its name.

        Returns:
            {setting: value}.

        Raises:
            ValueError: the instance was not built through its constructor, or its rule is a class
                not known by name.
        """
        if self._constructor_arguments is None:
            raise ValueError(f"{type(self).__name__} was not built through its constructor; its settings are unknown")
        config = dict(self._constructor_arguments)
        properties = {
            name for klass in type(self).__mro__ for name, value in vars(klass).items() if isinstance(value, property)
        }
        for name in config:
            if name in vars(self) or name in properties:
                config[name] = getattr(self, name)
        if not isinstance(config.get("rule", ""), str):
            name = rule_name(config["rule"])
            if name is None:
                raise ValueError(
                    f"rule {config['rule'].__name__} is not known by name, so it cannot be saved; register it "
                    f"first: pgig_tf.core.rules.RULES['my_rule'] = {config['rule'].__name__}"
                )
            config["rule"] = name
        return config

    def save(self, path) -> str:
        """Writes the settings and fitted state to one `.npz` file; `pgig_tf.load_analyzer(path, model)` rebuilds it.

        Args:
            path: the file to write (exactly that name; written atomically).

        Returns:
            The path written.

        Raises:
            ValueError: the analyzer or its rule is not registered by name (`ANALYZERS`, `RULES`).
        """
        from pgig_tf.persistence import save_analyzer

        return save_analyzer(self, path)

    def set_patterns(self, patterns) -> "Analyzer":
        """Uses `patterns` from now on.

        With the same layers, shapes and dtypes as the current ones they are written into the
        compiled loop's variables (no retrace, e.g. refitting during training).

        Args:
            patterns: a `Patterns` or a mapping of layer name to pattern array.

        Returns:
            The analyzer itself.

        Raises:
            ValueError: the patterns do not fit the model.
            pgig_tf.OtherModelError: they were fitted on another model (other layers, activations or
                weights) and the analyzer was not built with `allow_other_model=True`.
        """
        if not isinstance(patterns, Patterns):
            patterns = Patterns(patterns)
        if not self.needs_patterns:
            self.patterns = patterns  # unused by this rule; kept like the constructor keeps it
            return self
        variables = getattr(self._rule, "_variables", None)
        if (
            variables is not None
            and set(variables) == set(patterns)
            and all(
                tuple(v.shape) == patterns[k].shape and v.dtype.as_numpy_dtype == patterns[k].dtype
                for k, v in variables.items()
            )
        ):
            patterns.check(self.model, allow_other_model=self.allow_other_model)
            for name, variable in variables.items():
                variable.assign(patterns[name])
            self._rule.patterns = patterns
        else:
            self._rule = self._engine = None
        self.patterns = patterns
        self._get_rule()  # patterns that do not fit the model fail here
        return self


def _is_stream(x):
    """True for data that `analyze` explains batch by batch: a tf.data.Dataset or a keras.utils.PyDataset."""
    return isinstance(x, (tf.data.Dataset, keras.utils.PyDataset))


def _stack(pieces):
    """The maps of consecutive batches as one result: arrays concatenated, lists/dicts per input."""
    first = pieces[0]
    if isinstance(first, dict):
        return {key: np.concatenate([p[key] for p in pieces]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(np.concatenate([p[i] for p in pieces]) for i in range(len(first)))
    return np.concatenate(pieces)


def _bound_arguments(cls, args, kwargs):
    """{name: value} of `cls(model, *args, **kwargs)`'s arguments with defaults, without `model`; None if they do not bind."""
    signature = inspect.signature(cls.__init__)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return None  # __init__ raises the same error; copy and pickle call __new__ without arguments
    bound.apply_defaults()
    arguments = cls.settings()
    for name, value in list(bound.arguments.items())[1:]:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = tuple(value)
        elif name != "model":
            arguments[name] = value
    return arguments
