"""The sampling family: SmoothGrad, SmoothGrad², VarGrad, SmoothGrad-IG, Expected Gradients, SmoothTaylor,
noise-baseline IG, and the random control. Each takes `rule=`, so pattern-guided variants need no new code.

Noise: eps ~ N(0, sigma^2) with sigma = noise_scale * (max - min) of each sample, drawn
independently per sample and per draw; `seed` makes a call reproducible bit for bit.
"""

import numpy as np
import tensorflow as tf

from pgig_tf.analyzers.base import Analyzer
from pgig_tf.analyzers.integrated import PathBaseline, check_path_steps
from pgig_tf.core import aggregators as A
from pgig_tf.core.integration import DEFAULT_METHOD, check_method
from pgig_tf.evaluation.degradation import Degrader, aupc
from pgig_tf.evaluation.smoothness import autvc
from pgig_tf.model.distribute import strategy_scope
from pgig_tf.validation import check_noise_scale, check_positive_int


class _SamplingAnalyzer(Analyzer):
    """Shared settings: `samples` draws per input, `noise_scale`, any backward `rule`, a `seed`."""

    random = True

    def _set_sampling(self, samples, noise_scale):
        self.samples = check_positive_int(samples, "samples")
        self.noise_scale = check_noise_scale(noise_scale)


class SmoothGradAnalyzer(_SamplingAnalyzer):
    """SmoothGrad (Smilkov et al., 2017): the mean of ∇f(x + eps).

    Args:
        model: the Keras model to explain.
        samples: draws of eps per input.
        noise_scale: sigma as a fraction of each sample's (max - min).
        **options: the shared analyzer options (see `Analyzer.__init__`): `rule`, `patterns`, `seed`,
            `batch_size`, `output`, `compute_dtype`, `jit_compile`, `strategy`.
    """

    statistic = A.MEAN
    expects_logits = True

    def __init__(self, model, *, samples=25, noise_scale=0.15, **options):
        super().__init__(model, **options)
        self._set_sampling(samples, noise_scale)

    def _make_aggregator(self):
        return A.GaussianNoise(self.samples, self.noise_scale, self.statistic)


class SmoothGradSquaredAnalyzer(SmoothGradAnalyzer):
    """SmoothGrad² (Hooker et al., 2019; PGIG paper App. A.2): the mean of (∇f(x + eps))²."""

    statistic = A.MEAN_SQUARE


class VarGradAnalyzer(SmoothGradAnalyzer):
    """VarGrad (Adebayo et al., 2018; App. A.4): the variance (1/n) of ∇f(x + eps) over the draws."""

    statistic = A.VARIANCE


class SmoothGradIGAnalyzer(PathBaseline, _SamplingAnalyzer):
    """SmoothGrad-IG (App. A.3): IG's path integral averaged over noisy inputs, times (x - baseline).

    `analyze(..., return_convergence_delta=True)` is refused: each path ends at a noisy copy
    x + eps but its gradient is multiplied by (x - baseline), so the maps do not add up to
    f(x) - f(baseline) even with infinitely many steps and samples.

    Args:
        model: the Keras model to explain.
        steps: path points per noisy input.
        samples: noisy inputs per input.
        noise_scale: sigma as a fraction of each sample's (max - min).
        baseline: the path's start, a scalar or an array that broadcasts to one sample.
        method: the integration rule along each path (see `IntegratedGradientsAnalyzer`; default
            'riemann_right', Eq. 1).
        **options: the shared analyzer options (see `Analyzer.__init__`): `rule`, `patterns`, `seed`,
            `batch_size`, `output`, `compute_dtype`, `jit_compile`, `strategy`.

    Raises:
        ValueError: an unknown method, or steps the rule cannot use (steps="auto" is for
            integrated_gradients and pgig).
    """

    no_delta_reason = (
        "its paths end at noisy copies x + eps while their gradients are multiplied by x - baseline, so its maps "
        "do not add up to f(x) - f(baseline) even in the limit of many steps and samples"
    )

    def __init__(
        self, model, *, steps=25, samples=25, noise_scale=0.15, baseline=0.0, method=DEFAULT_METHOD, **options
    ):
        super().__init__(model, **options)
        self._set_sampling(samples, noise_scale)
        self.method = check_method(method)
        self.steps = check_path_steps(steps, self.method)
        self.baseline = baseline

    def _make_aggregator(self):
        return A.NoisyPath(self.steps, self.samples, self.noise_scale, self._engine_baseline, self.method)


class NoiseBaselineIGAnalyzer(_SamplingAnalyzer):
    """IG with uniform-noise baselines (SmoothTaylor paper Eq. 3): mean of `samples` IG maps, baselines U[min x, max x].

    `analyze(..., return_convergence_delta=True)` is refused: the maps add up to f(x) minus the
    mean of f over the random baselines (in the limit of many steps), and those baselines are
    drawn inside the compiled loop; `integrated_gradients` with the same `steps` and `method`
    measures the integration error of one path.

    Args:
        model: the Keras model to explain.
        steps: path points per baseline.
        samples: baselines per input, each feature uniform on [min x, max x] of the sample.
        method: the integration rule along each path (see `IntegratedGradientsAnalyzer`; default
            'riemann_right', Eq. 1).
        **options: the shared analyzer options (see `Analyzer.__init__`): `rule`, `patterns`, `seed`,
            `batch_size`, `output`, `compute_dtype`, `jit_compile`, `strategy`.

    Raises:
        ValueError: an unknown method, or steps the rule cannot use (steps="auto" is for
            integrated_gradients and pgig).
    """

    no_delta_reason = (
        "its maps add up to f(x) minus the mean of f over random baselines drawn inside the compiled loop; "
        "integrated_gradients with the same steps and method measures the integration error of one path"
    )

    def __init__(self, model, *, steps=50, samples=10, method=DEFAULT_METHOD, **options):
        super().__init__(model, **options)
        self._set_sampling(samples, 0.0)
        self.method = check_method(method)
        self.steps = check_path_steps(steps, self.method)

    def _make_aggregator(self):
        return A.UniformNoiseBaselines(self.steps, self.samples, self.method)


class ExpectedGradientsAnalyzer(_SamplingAnalyzer):
    """Expected Gradients (Erion et al., 2019; App. A.5): baselines drawn from background data, alpha ~ U(0, 1).

    Background: `baselines=` (an array of samples) or `fit(data)`, which keeps up to
    `max_background` samples of `data` (and fits patterns too for a pattern rule).

    Args:
        model: the Keras model to explain.
        samples: (baseline, alpha) draws per input.
        baselines: background samples (n, *sample shape), or None to take them from `fit(data)`.
        max_background: the most samples `fit` keeps.
        **options: the shared analyzer options (see `Analyzer.__init__`): `rule`, `patterns`, `seed`,
            `batch_size`, `output`, `compute_dtype`, `jit_compile`, `strategy`.
    """

    uses_background = True

    def __init__(self, model, *, samples=49, baselines=None, max_background=1000, **options):
        super().__init__(model, **options)
        self._set_sampling(samples, 0.0)
        self.max_background = check_positive_int(max_background, "max_background")
        self.baselines = None
        self._background = None
        if baselines is not None:
            self.set_background(baselines)

    def set_background(self, baselines):
        """Uses `baselines` (n, *sample shape; several inputs: one such array per input) as the background."""
        batch = self._spec.check(baselines, name="baselines")
        self.baselines = self._spec.pack_like(batch.values, batch)
        with strategy_scope(self.strategy):  # mirrored on every replica
            self._background = tf.Variable(batch.engine, trainable=False, name="background")
        self._engine = None
        return self

    def fit(self, data, kind="relu", batch_size=None, verbose=True):
        """Keeps up to `max_background` samples of `data` as background; fits patterns for a pattern rule."""
        super().fit(data, kind=kind, batch_size=batch_size, verbose=verbose)
        batches, _ = self._spec.iterate_batches(data, batch_size or self.batch_size)
        kept, count = [], 0
        for batch in batches:
            values = self._spec.check(batch, name="data batch", embed=False).values
            kept.append([v[: self.max_background - count] for v in values])
            count += len(kept[-1][0])
            if count >= self.max_background:
                break
        if count == 0:
            raise ValueError("data is empty: Expected Gradients needs background samples, got none")
        background = [np.concatenate(piece) for piece in zip(*kept)]
        return self.set_background(background[0] if len(background) == 1 else background)

    def _make_aggregator(self):
        if self._background is None:
            raise ValueError("expected_gradients needs background data: call analyzer.fit(data) or pass baselines=...")
        return A.BackgroundBaselines(self.samples, self._background)


class SmoothTaylorAnalyzer(_SamplingAnalyzer):
    """SmoothTaylor (Goh et al., Eq. 6, 8): 1/R Σ_r (x - z_r) ∇f(z_r), roots z_r = x + eps_r.

    noise_scale="adaptive" is the paper's adaptive noising: every candidate in
    `candidates` is tried (same seed) and each input keeps the map that minimises
    `criterion`, 'aupc' (its degradation curve's area; image models) or 'total_variation'
    (its AUTVC). The chosen scales of the last call are in `chosen_noise_scales`.

    Args:
        model: the Keras model to explain.
        samples: R, the roots per input.
        noise_scale: sigma as a fraction of each sample's (max - min), or "adaptive".
        candidates: the noise scales "adaptive" tries.
        criterion: "aupc" or "total_variation", what "adaptive" minimises.
        patch_size: the patch size of the "aupc" criterion's degradation curve.
        num_steps: the patches that curve perturbs.
        **options: the shared analyzer options (see `Analyzer.__init__`): `rule`, `patterns`, `seed`,
            `batch_size`, `output`, `compute_dtype`, `jit_compile`, `strategy`.
    """

    def __init__(
        self,
        model,
        *,
        samples=150,
        noise_scale=0.5,
        candidates=(0.1, 0.3, 0.5, 0.7, 0.9),
        criterion="aupc",
        patch_size=9,
        num_steps=100,
        **options,
    ):
        adaptive = isinstance(noise_scale, str) and noise_scale == "adaptive"
        super().__init__(model, **options)
        self._set_sampling(samples, 0.0 if adaptive else noise_scale)
        if adaptive:
            self.noise_scale = "adaptive"
        if adaptive and not (self._spec.simple and len(self._spec.output_names) == 1):
            raise ValueError(
                "noise_scale='adaptive' scores candidate maps as images; it needs a single-input, single-output "
                f"model, got {len(self._spec.parts)} input(s) {self._spec.input_names}"
                f"{' (token ids)' if self._spec.embedding_ids else ''} and outputs {self._spec.output_names}"
            )
        self.candidates = tuple(check_noise_scale(c, "candidates") for c in candidates)
        if not self.candidates:
            raise ValueError("candidates must name at least one noise_scale")
        if criterion not in ("aupc", "total_variation"):
            raise ValueError(f"criterion must be 'aupc' or 'total_variation', got {criterion!r}")
        self.criterion = criterion
        self.patch_size, self.num_steps = patch_size, num_steps
        self.chosen_noise_scales = None
        self._candidate_engines = {}
        self._degrader = None

    @property
    def adaptive(self):
        """True when `noise_scale` is "adaptive" (the noise scale is chosen per input among `candidates`)."""
        return isinstance(self.noise_scale, str) and self.noise_scale == "adaptive"

    def _make_aggregator(self):
        return A.TaylorRoots(self.samples, self.noise_scale)

    def _analyze_checked(self, batch, targets, seed, first_index):
        if not self.adaptive:
            return super()._analyze_checked(batch, targets, seed, first_index)
        x = batch.engine
        maps = np.stack(
            [self._candidate_engine(c)(x, targets, seed=seed, first_index=first_index) for c in self.candidates]
        )
        if self.criterion == "aupc":
            if self._degrader is None:  # built once: its compiled function is reused by later calls
                self._degrader = Degrader(self.model, self.patch_size, self.num_steps, batch_size=self.batch_size)
            scores = np.stack([aupc(self._degrader.curves(x, m, targets)) for m in maps])
        else:
            scores = np.stack([autvc(m) for m in maps])
        best = np.argmin(scores, axis=0)
        chosen = np.asarray(self.candidates)[best]
        # a dataset's later batches add their samples' choices
        # a dataset's later batches (after the call's first) add theirs to the call's choices
        continuing = first_index > self._call_first_index
        self.chosen_noise_scales = np.concatenate([self.chosen_noise_scales, chosen]) if continuing else chosen
        return self._finish(maps[best, np.arange(len(x))], batch)

    def _candidate_engine(self, noise_scale):
        rule = self._get_rule()
        if getattr(self, "_candidate_rule", None) is not rule:  # fit() gave new patterns: rebuild the engines
            self._candidate_engines, self._candidate_rule = {}, rule
        if noise_scale not in self._candidate_engines:
            self._candidate_engines[noise_scale] = self._make_engine(A.TaylorRoots(self.samples, noise_scale))
        return self._candidate_engines[noise_scale]


class RandomAnalyzer(Analyzer):
    """The degradation benchmark's control: attributions drawn uniformly from [0, 1), independent of the model."""

    fixed_rule = "gradient"
    random = True

    def _check_x(self, x):
        return self._spec.check(x, embed=False)

    def _analyze_checked(self, batch, targets, seed, first_index):
        # one stream per sample, keyed by (seed, the sample's index in the whole set): a set explained
        # in pieces (dataset batches, shards, resumed runs) gets the maps of one call
        shapes = self._spec.attribution_shapes(batch)
        maps = [np.empty(shape, np.float32) for shape in shapes]
        for i in range(batch.num_samples):
            rng = np.random.default_rng([seed, first_index + i])
            for array in maps:
                array[i] = rng.random(array.shape[1:], dtype=np.float32)
        return self._spec.pack_like(maps, batch)
