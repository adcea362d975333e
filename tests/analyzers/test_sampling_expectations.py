"""The sampling methods against closed-form expectations over their noise, on polynomial models with known gradients.

No noise here comes from the library: each method's map is compared with its expectation over
the noise distribution that docs/methods.md defines (a function of x, sigma, the baselines and
the number of steps), with a tolerance of 5 standard errors of the compared statistic. The
drawn noise and noise baselines are also checked directly with Kolmogorov-Smirnov tests.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from pgig_tf import create_analyzer
from pgig_tf.core.aggregators import UniformNoiseBaselines
from pgig_tf.core.noise import sample_noise

SAMPLES, FEATURES, DRAWS = 64, 32, 16
NOISE_SCALE = 0.2
SEED = 3
BOUND = 5.0  # standard errors


def power_model(power):
    """f(x) = (1/p) Σᵢ xᵢᵖ, from Multiply([x] * p) and a Dense with kernel 1/p: ∇f(z) = z^(p-1)."""
    inputs = keras.Input((FEATURES,))
    product = keras.layers.Multiply()([inputs] * power)
    dense = keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(1.0 / power))
    return keras.Model(inputs, dense(product))


@pytest.fixture(scope="module")
def x():
    """Samples of different ranges, so a sigma taken from the batch instead of each sample is wrong for most."""
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.25, 2.0, (SAMPLES, 1))
    return (scales * rng.normal(0, 1, (SAMPLES, FEATURES))).astype(np.float32)


def sigma_of(x):
    """sigma = noise_scale * (max - min) of each sample (docs/methods.md), shaped (samples, 1)."""
    x = x.astype(np.float64)
    return NOISE_SCALE * (x.max(1, keepdims=True) - x.min(1, keepdims=True))


def assert_matches_expectation(maps, x, mean, variance, variance_of_sum=None):
    """The map is within 5 standard errors of its expectation in each of three weighted sums over all its values.

    `mean` and `variance` are each map value's expectation and variance over the noise. For weights
    w = c / sqrt(variance) with c = 1, sign(mean) and sign(x), T = Σ w (map - mean) / sqrt(Var[Σ w map])
    is a sum of thousands of independent terms (samples are independent, and so are features unless
    `variance_of_sum(w)` accounts for their correlation; else Var[Σ w map] = Σ w² variance), so T is
    close to N(0, 1), and |T| < 5 for all three fails with probability < 3 · 6e-7 for a correct method.
    The three patterns keep errors of constant sign, of the sign of the map and odd in x from cancelling;
    dividing by the standard deviation lets samples of small range count as much as those of large range.
    """
    mean, variance = np.broadcast_to(mean, x.shape), np.broadcast_to(variance, x.shape)
    if variance_of_sum is None:
        variance_of_sum = lambda w: np.sum(w**2 * variance)  # noqa: E731
    for name, pattern in (("1", np.ones(x.shape)), ("sign(mean)", np.sign(mean)), ("sign(x)", np.sign(x))):
        weights = pattern / np.sqrt(variance)
        t = np.sum(weights * (maps.astype(np.float64) - mean)) / np.sqrt(variance_of_sum(weights))
        assert abs(t) < BOUND, f"weights {name}: the map is {t:.1f} standard errors from its expectation"


def analyze(name, power, x, draws=DRAWS, **kwargs):
    """The map of `name` with `draws` draws on the model f = Σ xᵖ / p, output 0."""
    analyzer = create_analyzer(name, power_model(power), samples=draws, seed=SEED, **kwargs)
    return analyzer.analyze(x, 0)


# Except VarGrad's, each map below is a mean over DRAWS independent draws of a value Y (the gradient
# at one noisy point, one IG map, ...): its mean is E[Y] and its variance Var[Y] / DRAWS.


def test_smoothgrad_is_the_mean_gradient_over_gaussian_noise(x):
    """f = Σ x³/3: ∇f(x + ε) = (x + ε)², E = x² + σ², Var = 4x²σ² + 2σ⁴ (ε ~ N(0, σ²))."""
    s2, x64 = sigma_of(x) ** 2, x.astype(np.float64)
    maps = analyze("smoothgrad", 3, x, noise_scale=NOISE_SCALE)
    assert_matches_expectation(maps, x, x64**2 + s2, (4 * x64**2 * s2 + 2 * s2**2) / DRAWS)


def test_smoothgrad_squared_is_the_mean_squared_gradient(x):
    """f = Σ x²/2: (∇f(x + ε))² = (x + ε)², E = x² + σ², Var = 4x²σ² + 2σ⁴."""
    s2, x64 = sigma_of(x) ** 2, x.astype(np.float64)
    maps = analyze("smoothgrad_squared", 2, x, noise_scale=NOISE_SCALE)
    assert_matches_expectation(maps, x, x64**2 + s2, (4 * x64**2 * s2 + 2 * s2**2) / DRAWS)


def test_vargrad_is_the_population_variance_of_the_gradient(x):
    """f = Σ x²/2: n gradients x + εₖ have population variance (1/n) Σ (εₖ - ε̄)² = σ² χ²ₙ₋₁ / n.

    E = σ² (n - 1)/n, Var = 2 (n - 1) σ⁴ / n² (independent across features). n = 4 keeps the
    n - 1 of a sample variance 18 standard errors away (T's shift: sqrt(values / (2 (n - 1)))).
    """
    s2, n = sigma_of(x) ** 2, 4
    maps = analyze("vargrad", 2, x, draws=n, noise_scale=NOISE_SCALE)
    assert_matches_expectation(maps, x, s2 * (n - 1) / n, 2 * (n - 1) * s2**2 / n**2)


STEPS, BASELINE = 2, 0.5


def rule_moments(method, m):
    """(C, Q) = (Σₖ wₖ αₖ, Σₖ wₖ αₖ²) of an integration rule with m points, from its definition (docs/methods.md)."""
    k = np.arange(1, m + 1, dtype=np.float64)
    weights = np.full(m, 1.0 / m)
    if method == "riemann_right":
        alphas = k / m
    elif method == "riemann_left":
        alphas = (k - 1) / m
    elif method == "riemann_middle":
        alphas = (k - 0.5) / m
    elif method == "riemann_trapezoid":
        alphas, weights = (k - 1) / (m - 1), np.full(m, 1.0 / (m - 1))
        weights[[0, -1]] /= 2
    else:  # Gauss–Legendre on [0, 1]
        nodes, legendre_weights = np.polynomial.legendre.leggauss(m)
        alphas, weights = (1 + nodes) / 2, legendre_weights / 2
    return float(np.sum(weights * alphas)), float(np.sum(weights * alphas**2))


# (rule, points): m = 3 for the rules with unequal weights, where weighting every point alike
# (mean αₖ² = 0.35 for Gauss–Legendre, 0.417 for the trapezoid) misses Q = 1/3 and 0.375
RULES = [
    ("riemann_right", STEPS),
    ("riemann_left", STEPS),
    ("riemann_middle", STEPS),
    ("riemann_trapezoid", 3),
    ("gausslegendre", 3),
]


@pytest.mark.parametrize("method,steps", RULES)
def test_smoothgrad_ig_matches_its_documented_definition(x, method, steps):
    """φ = (x - x̄) Σₖ wₖ 1/n Σₙ ∇f(x̄ + αₖ (x'ₙ - x̄)), x'ₙ = x + εₙ (docs/methods.md), on f = Σ x³/3.

    With d = x - x̄ and u = d + ε ~ N(d, σ²), one noisy input gives
    Y = d · Σₖ wₖ (x̄ + αₖ u)² = d (x̄² + a u + Q u²), a = 2 x̄ C, C = Σ wₖ αₖ, Q = Σ wₖ αₖ², so
    E[Y] = d (x̄² + a d + Q (d² + σ²)) and, from Var u = σ², Var u² = 4d²σ² + 2σ⁴, Cov(u, u²) = 2dσ²,
    Var[Y] = d² (a² σ² + Q² (4d²σ² + 2σ⁴) + 2 a Q 2dσ²).
    """
    c, q = rule_moments(method, steps)
    s2, d = sigma_of(x) ** 2, x.astype(np.float64) - BASELINE
    a = 2 * BASELINE * c
    mean = d * (BASELINE**2 + a * d + q * (d**2 + s2))
    variance = d**2 * (a**2 * s2 + q**2 * (4 * d**2 * s2 + 2 * s2**2) + 2 * a * q * 2 * d * s2)
    maps = analyze("smoothgrad_ig", 3, x, steps=steps, method=method, noise_scale=NOISE_SCALE, baseline=BASELINE)
    assert_matches_expectation(maps, x, mean, variance / DRAWS)


def uniform_moments(low, high, orders):
    """E[wᵏ] for w ~ U[low, high]: (highᵏ⁺¹ - lowᵏ⁺¹) / ((k + 1)(high - low))."""
    return [(high ** (k + 1) - low ** (k + 1)) / ((k + 1) * (high - low)) for k in orders]


@pytest.mark.parametrize("method,steps", RULES)
def test_noise_baseline_ig_averages_ig_over_uniform_baselines(x, method, steps):
    """f = Σ x³/3, baselines b ~ U[min x, max x] per feature: one IG map is Y = w Σₖ wₖ (b + αₖ w)², w = x - b.

    With b = x - w, Y = x² w + (2C - 2) x w² + (1 - 2C + Q) w³ (C = Σ wₖ αₖ, Q = Σ wₖ αₖ²), a
    polynomial in w ~ U[x - max x, x - min x]: E and Var follow from E[wᵏ], k = 1..6.
    """
    c, q = rule_moments(method, steps)
    x64 = x.astype(np.float64)
    low, high = x64.min(1, keepdims=True), x64.max(1, keepdims=True)
    w = dict(zip(range(1, 7), uniform_moments(x64 - high, x64 - low, range(1, 7))))
    a1, a2, a3 = x64**2, (2 * c - 2) * x64, 1 - 2 * c + q
    mean = a1 * w[1] + a2 * w[2] + a3 * w[3]
    second = a1**2 * w[2] + a2**2 * w[4] + a3**2 * w[6] + 2 * a1 * a2 * w[3] + 2 * a1 * a3 * w[4] + 2 * a2 * a3 * w[5]
    maps = analyze("noise_baseline_ig", 3, x, steps=steps, method=method)
    assert_matches_expectation(maps, x, mean, (second - mean**2) / DRAWS)


def test_smooth_taylor_is_the_mean_first_order_term_at_noisy_roots(x):
    """f = Σ x²/2, roots z = x + ε: (x - z) ∇f(z) = -ε (x + ε), E = -σ², Var = x²σ² + 2σ⁴."""
    s2, x64 = sigma_of(x) ** 2, x.astype(np.float64)
    maps = analyze("smooth_taylor", 2, x, noise_scale=NOISE_SCALE)
    assert_matches_expectation(maps, x, -s2, (x64**2 * s2 + 2 * s2**2) / DRAWS)


def test_expected_gradients_averages_over_background_rows_and_alpha(x):
    """f = Σ x²/2: Y = d (b + α d), d = x - b, b a uniformly drawn background row, α ~ U(0, 1).

    E over α: d b + d²/2 = (x² - b²)/2, E over α of Y²: d² (b² + b d + d²/3); both averaged over the
    rows. One draw shares its row and α across the features, so Var[Σ w Y] is that of
    S = P + α Q (P = Σ w d b, Q = Σ w d² within a sample): E_α S = P + Q/2, E_α S² = P² + P Q + Q²/3.
    """
    rng = np.random.default_rng(1)
    # rows of different scales, so that drawing some rows more often than others shifts the expectation
    background = (np.array([[0.2], [0.6], [1.0], [1.5], [2.5]]) * rng.normal(0, 1, (5, FEATURES))).astype(np.float32)
    x64, b = x.astype(np.float64)[:, None], background.astype(np.float64)[None]  # (samples, rows, features)
    d = x64 - b
    mean = ((x64**2 - b**2) / 2).mean(1)
    variance = (d**2 * (b**2 + b * d + d**2 / 3)).mean(1) - mean**2

    def variance_of_sum(weights):
        p, q = np.sum(weights[:, None] * d * b, axis=2), np.sum(weights[:, None] * d**2, axis=2)
        return np.sum((p**2 + p * q + q**2 / 3).mean(1) - (p + q / 2).mean(1) ** 2) / DRAWS

    maps = analyze("expected_gradients", 2, x, baselines=background)
    assert_matches_expectation(maps, x, mean, variance / DRAWS, variance_of_sum)


# --- the drawn noise itself -------------------------------------------------------------------

KS_SAMPLES, KS_FEATURES, KS_P = 50, 2000, 1e-3


@pytest.fixture(scope="module")
def wide_x():
    """100,000 values in rows of different ranges."""
    rng = np.random.default_rng(4)
    return (rng.uniform(0.2, 3.0, (KS_SAMPLES, 1)) * rng.normal(0, 1, (KS_SAMPLES, KS_FEATURES))).astype(np.float32)


def test_noise_over_each_samples_sigma_is_standard_normal(wide_x):
    """ε / σ ~ N(0, 1), σ = noise_scale (max - min) of each sample: KS p > 1e-3 over 100,000 draws.

    The same test rejects a sigma 10% off (KS distance 0.023 against a critical value of
    about 1.95 / sqrt(100,000) = 0.006 at p = 1e-3), which the second assertion confirms.
    """
    noise = sample_noise(
        tf.constant(wide_x), tf.constant(SEED, tf.int64), tf.range(KS_SAMPLES), tf.zeros(KS_SAMPLES, tf.int64), 1, 0.3
    ).numpy()
    sigma = 0.3 * (wide_x.max(1, keepdims=True) - wide_x.min(1, keepdims=True))
    assert stats.kstest((noise / sigma).ravel(), "norm").pvalue > KS_P
    assert stats.kstest((noise / (1.1 * sigma)).ravel(), "norm").pvalue < KS_P


def test_noise_baselines_are_uniform_on_each_samples_range(wide_x):
    """Baselines of noise-baseline IG, (b - min x)/(max x - min x) ~ U(0, 1): KS p > 1e-3 over 100,000 draws.

    With steps = 1 the aggregator's multiplier is x - b, which gives b. A range 10% too wide is rejected.
    """
    aggregator = UniformNoiseBaselines(steps=1, samples=1)
    x = tf.constant(wide_x)
    _, multiplier = aggregator.points(x, tf.range(KS_SAMPLES), tf.zeros(KS_SAMPLES, tf.int32), tf.constant(SEED))
    baselines = wide_x.astype(np.float64) - multiplier.numpy()
    low, high = wide_x.min(1, keepdims=True), wide_x.max(1, keepdims=True)
    unit = ((baselines - low) / (high - low)).ravel()
    assert stats.kstest(unit, "uniform").pvalue > KS_P
    assert stats.kstest(unit, "uniform", args=(0, 1.1)).pvalue < KS_P
    assert unit.min() > -1e-5 and unit.max() < 1 + 1e-5
