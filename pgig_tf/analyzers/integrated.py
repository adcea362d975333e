"""Integrated Gradients (Sundararajan et al., 2017, Eq. 1): gradients along the straight path from a baseline."""

import warnings

import numpy as np

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.core.aggregators import RefinedPath, StraightPath
from pgig_tf.core.engine import GradientEngine, RefiningEngine
from pgig_tf.core.integration import (
    AUTO_AGREEMENTS,
    DEFAULT_METHOD,
    check_method,
    check_steps,
    level_steps,
    refinement_levels,
)
from pgig_tf.core.rules import Rule, rule_class
from pgig_tf.validation import ConvergenceWarning, check_positive_int, check_tolerance, user_stacklevel

AUTO = "auto"


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


def check_path_steps(steps, method, allow_auto=False):
    """`steps` (a positive int the rule `method` can use, or "auto" where `allow_auto`), else a ValueError."""
    if isinstance(steps, str):
        if steps == AUTO and allow_auto:
            return AUTO
        choices = "a positive integer or 'auto'" if allow_auto else "a positive integer"
        raise ValueError(f"steps must be {choices}, got {steps!r}")
    return check_steps(method, check_positive_int(steps, "steps"))


class IntegratedGradientsAnalyzer(PathBaseline, Analyzer):
    """Integrated Gradients (Sundararajan et al., 2017): (x − x̄) ⊙ Σ_k w_k ∇f(x̄ + alpha_k (x − x̄)).

    The default rule is the right Riemann sum with m = `steps` points (PGIG paper Eq. 1):
    alpha_k = k/m, w_k = 1/m; `method=` chooses another (`core.integration`). `rule=` takes any
    backward rule; rule='pattern_attribution' is PGIG (`PGIGAnalyzer`).

    `analyze(x, return_convergence_delta=True)` also returns, per sample, the completeness gap
    delta = f(x) − f(x̄) − Σᵢ φᵢ (Sundararajan et al., 2017, Prop. 1: 0 in the limit of many
    points for the plain gradient), with f the explained output.

    steps="auto" refines each sample's integral (the rule at `core.integration.AUTO_START` points,
    then ×2 — ×3 for riemann_middle — reusing every point evaluated before, except for
    gausslegendre, whose nodes do not nest) until the map changes by at most `tolerance`
    (relative L2) from one level to the next and, for the plain gradient, |delta| is at most
    `tolerance` |f(x) − f(x̄)|; at most `max_steps` points. All levels run inside one compiled
    call. After each `analyze`, `last_steps` holds the points of the rule each sample's map used,
    `last_evaluations` the gradient evaluations spent on it, and (steps="auto") `last_converged`
    whether it met the tolerance; samples that did not raise a `ConvergenceWarning`.

    Args:
        model: the Keras model to explain.
        steps: m, the number of path points, or "auto".
        baseline: x̄, a scalar or an array broadcastable to one sample (default 0).
        method: the integration rule: 'riemann_right' (default), 'riemann_left', 'riemann_middle',
            'riemann_trapezoid' (steps >= 2) or 'gausslegendre'.
        tolerance: the relative tolerance of steps="auto".
        max_steps: the most points steps="auto" uses per sample.
        **options: the shared analyzer options (see `Analyzer.__init__`), `rule` and `patterns` included.

    Raises:
        ValueError: an unknown method (the message lists them), or steps, tolerance or max_steps
            the rule cannot use.
    """

    has_convergence_delta = True
    # steps="auto" stops a sample after this many successive refinements within the tolerance
    auto_agreements = AUTO_AGREEMENTS

    def __init__(
        self,
        model,
        *,
        steps=25,
        baseline=0.0,
        method=DEFAULT_METHOD,
        tolerance=0.01,
        max_steps=1024,
        **options,
    ):
        super().__init__(model, **options)
        self.method = check_method(method)
        self.steps = check_path_steps(steps, self.method, allow_auto=True)
        self.tolerance = check_tolerance(tolerance)
        self.max_steps = check_positive_int(max_steps, "max_steps")
        if self.steps == AUTO:
            level_steps(self.method, self.max_steps)  # a max_steps too small for the stopping test fails here
        self.baseline = baseline
        self.last_steps = self.last_evaluations = self.last_converged = None

    def _make_aggregator(self):
        if self.steps == AUTO:
            levels = refinement_levels(self.method, self.max_steps)
            # the gap closes in the limit only for the true gradient (completeness, Prop. 1)
            complete = rule_class(self.rule_name) is Rule
            return RefinedPath(
                levels,
                self._engine_baseline,
                self.tolerance,
                check_completeness=complete,
                agreements=self.auto_agreements,
            )
        return StraightPath(self.steps, self._engine_baseline, self.method)

    def _get_engine(self):
        if self._engine is None:
            aggregator = self._make_aggregator()
            engine_class = RefiningEngine if isinstance(aggregator, RefinedPath) else GradientEngine
            self._engine = self._make_engine(aggregator, engine_class)
        return self._engine

    def _analyze_checked(self, batch, targets, seed, first_index):
        return self._path_result(batch, targets, seed, first_index, with_delta=False)[0]

    def _analyze_with_delta(self, batch, targets, seed, first_index):
        return self._path_result(batch, targets, seed, first_index, with_delta=True)

    def _path_result(self, batch, targets, seed, first_index, with_delta):
        """(maps in the user's structure, delta per sample or None); records `last_steps` and the rest."""
        engine = self._get_engine()
        result = engine(batch.engine, targets, seed=seed, first_index=first_index)
        if isinstance(result, dict):  # steps="auto"
            maps, delta = result["maps"], result["delta"]
            steps, evaluations, converged = result["steps"], result["evaluations"], result["converged"].astype(bool)
        else:
            maps = result
            steps = evaluations = np.full(len(targets), self.steps, dtype=np.int32)
            converged = None
            delta = self._completeness_gap(engine, batch.engine, targets, maps) if with_delta else None
        self._record(first_index, steps, evaluations, converged)
        maps = self._finish(maps, batch)
        if converged is not None and not converged.all():
            warnings.warn(
                f"{type(self).__name__} with steps='auto': {int((~converged).sum())} of {len(converged)} samples "
                f"did not meet tolerance {self.tolerance} within max_steps={self.max_steps} ({self.method}); "
                "their maps use the last level. analyzer.last_converged marks them.",
                ConvergenceWarning,
                stacklevel=user_stacklevel(),
            )
        return maps, delta

    def _completeness_gap(self, engine, x, targets, maps):
        """f(x) − f(x̄) − Σφ per sample, f the explained output at each sample's target."""
        rows = np.arange(len(targets))
        baseline = np.broadcast_to(np.asarray(self._engine_baseline, x.dtype), x.shape[1:])[None]
        difference = engine.output_values(x)[rows, targets] - engine.output_values(baseline)[0, targets]
        return (difference - maps.reshape(len(maps), -1).sum(axis=1, dtype=np.float64)).astype(maps.dtype)

    def _record(self, first_index, steps, evaluations, converged):
        """Keeps this call's per-sample steps; a dataset's later batches (after the call's first) add theirs."""
        values = {"last_steps": steps, "last_evaluations": evaluations, "last_converged": converged}
        for name, value in values.items():
            previous = getattr(self, name)
            if first_index > self._call_first_index and previous is not None and value is not None:
                value = np.concatenate([previous, value])
            setattr(self, name, value)
