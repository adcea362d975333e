"""The sampling family: noise-free limits, exact reductions of the drawn points, seeds, pattern-guided variants."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import set_random_weights
from pgig_tf import create_analyzer
from pgig_tf.core.noise import sample_noise

NOISY = ("smoothgrad", "smoothgrad_squared", "vargrad", "smoothgrad_ig", "smooth_taylor", "noise_baseline_ig")


@pytest.fixture
def x(conv_model):
    return np.random.default_rng(0).normal(0, 1, (3, 9, 9, 2)).astype(np.float32)


def drawn_noise(x, seed, samples, noise_scale):
    """The exact noise the analyzers draw: (samples, n, *shape), via the same counter-based generator."""
    per_sample = [  # sample i's draws 0..samples-1: consecutive stream rows, as the engine draws them
        sample_noise(
            tf.constant(np.repeat(x[i : i + 1], samples, 0)),
            tf.constant(seed, tf.int64),
            tf.fill([samples], i),
            tf.range(samples),
            samples,
            noise_scale,
        ).numpy()
        for i in range(len(x))
    ]
    return np.stack(per_sample, axis=1)


def test_noise_free_limits(conv_model, x):
    grad = create_analyzer("gradient", conv_model).analyze(x, 1)
    ig = create_analyzer("integrated_gradients", conv_model, steps=5).analyze(x, 1)
    kw = dict(samples=4, noise_scale=0.0, seed=1, batch_size=5)
    np.testing.assert_allclose(
        create_analyzer("smoothgrad", conv_model, **kw).analyze(x, 1), grad, rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        create_analyzer("smoothgrad_squared", conv_model, **kw).analyze(x, 1), grad**2, rtol=1e-5, atol=1e-9
    )
    np.testing.assert_allclose(create_analyzer("vargrad", conv_model, **kw).analyze(x, 1), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        create_analyzer("smoothgrad_ig", conv_model, steps=5, **kw).analyze(x, 1), ig, rtol=1e-5, atol=1e-7
    )
    assert np.abs(grad).max() > 0


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_reductions_equal_numpy_over_the_same_draws(conv_model, x, batch_size):
    """SmoothGrad / SmoothGrad² / VarGrad / SmoothTaylor equal numpy reductions of gradients at the drawn points."""
    samples, scale, seed = 7, 0.2, 42
    noise = drawn_noise(x, seed, samples, scale)
    grad = create_analyzer("gradient", conv_model)
    grads = np.stack([grad.analyze(x + noise[s], 2) for s in range(samples)])
    kw = dict(samples=samples, noise_scale=scale, seed=seed, batch_size=batch_size)
    checks = {
        "smoothgrad": grads.mean(0),
        "smoothgrad_squared": (grads**2).mean(0),
        "vargrad": grads.var(0),
        "smooth_taylor": (-noise * grads).mean(0),
    }
    for name, expected in checks.items():
        ours = create_analyzer(name, conv_model, **kw).analyze(x, 2)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max(), err_msg=name)
        assert np.abs(expected).max() > 0


def test_smoothgrad_ig_integrates_from_the_baseline_to_each_drawn_noisy_input(conv_model, x):
    """SmoothGrad-IG = x ⊙ 1/(n m) Σₙ Σₖ ∇f(k/m (x + εₙ)) (baseline 0), with εₙ the drawn noise rows."""
    samples, scale, seed, steps = 3, 0.2, 42, 4
    noise = drawn_noise(x, seed, samples, scale)
    grad = create_analyzer("gradient", conv_model)
    points = [k / steps * (x + noise[n]) for n in range(samples) for k in range(1, steps + 1)]
    expected = x * np.mean([grad.analyze(p, 2) for p in points], axis=0)
    ours = create_analyzer(
        "smoothgrad_ig", conv_model, steps=steps, samples=samples, noise_scale=scale, seed=seed, baseline=0.0
    ).analyze(x, 2)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert np.abs(expected).max() > 0


def test_smooth_taylor_is_exact_on_a_linear_model():
    """Seed 002, Eq. 7: for linear f, Σ_i attribution = f(x) - mean_r f(z_r) exactly."""
    model = set_random_weights(keras.Sequential([keras.Input((6,)), keras.layers.Dense(2, name="lin")]), 3)
    x = np.random.default_rng(1).normal(0, 1, (4, 6)).astype(np.float32)
    samples, scale, seed = 30, 0.5, 7
    attribution = create_analyzer("smooth_taylor", model, samples=samples, noise_scale=scale, seed=seed).analyze(x, 1)
    roots = x + drawn_noise(x, seed, samples, scale)
    f_roots = np.stack([model.predict(r, verbose=0)[:, 1] for r in roots]).mean(0)
    f_x = model.predict(x, verbose=0)[:, 1]
    np.testing.assert_allclose(attribution.sum(1), f_x - f_roots, rtol=1e-4, atol=1e-5)
    assert np.abs(f_x - f_roots).min() > 1e-3


def test_expected_gradients_with_one_baseline_converges_to_ig(dense_model):
    """With a single background sample b, EG is a Monte Carlo estimate of IG(b): within 4 standard errors."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (2, 6)).astype(np.float32)
    b = rng.normal(0, 1, (1, 6)).astype(np.float32)
    ig = create_analyzer("integrated_gradients", dense_model, steps=4000, baseline=b[0]).analyze(x, 0)
    # the integrand's spread along the path, from IG's own points (gradients times (x - b))
    alphas = np.linspace(0, 1, 401, dtype=np.float32)[:, None, None]
    points = (b + alphas * (x - b)).reshape(-1, 6)
    path = create_analyzer("gradient", dense_model, batch_size=1024).analyze(points, 0).reshape(401, 2, 6) * (x - b)
    spread = np.std(path, axis=0)
    errors = []
    for samples in (50, 5000):
        eg = create_analyzer("expected_gradients", dense_model, samples=samples, baselines=b, seed=3).analyze(x, 0)
        bound = 4 * spread / np.sqrt(samples) + 1e-5
        assert np.all(np.abs(eg - ig) <= bound)
        errors.append(np.abs(eg - ig).max())
    assert errors[1] < errors[0]
    assert spread.max() > 0.01  # the bound is not trivially loose around a constant integrand


def test_expected_gradients_draws_from_fitted_background(dense_model):
    data = np.random.default_rng(5).normal(0, 1, (30, 6)).astype(np.float32)
    analyzer = create_analyzer("expected_gradients", dense_model, samples=8, max_background=10, seed=0)
    with pytest.raises(ValueError, match=r"expected_gradients needs background data: call analyzer.fit\(data\)"):
        analyzer.analyze(data[:2])
    analyzer.fit(data, batch_size=4)
    np.testing.assert_array_equal(analyzer.baselines, data[:10])
    same = create_analyzer("expected_gradients", dense_model, samples=8, baselines=data[:10], seed=0)
    np.testing.assert_array_equal(analyzer.analyze(data[:3], 1), same.analyze(data[:3], 1))


@pytest.mark.parametrize("name", NOISY + ("expected_gradients", "random"))
def test_seeds_reproduce_and_differ(dense_model, name):
    x = np.random.default_rng(6).normal(0, 1, (2, 6)).astype(np.float32)
    kw = {"samples": 4} if name != "random" else {}
    if name == "expected_gradients":
        kw["baselines"] = np.random.default_rng(7).normal(0, 1, (5, 6)).astype(np.float32)
    a = create_analyzer(name, dense_model, seed=11, **kw)
    first = a.analyze(x, 0)
    np.testing.assert_array_equal(first, a.analyze(x, 0))
    np.testing.assert_array_equal(first, create_analyzer(name, dense_model, seed=11, **kw).analyze(x, 0))
    assert not np.array_equal(first, create_analyzer(name, dense_model, seed=12, **kw).analyze(x, 0))
    unseeded = create_analyzer(name, dense_model, **kw)
    assert not np.array_equal(unseeded.analyze(x, 0), unseeded.analyze(x, 0))


def test_noise_is_independent_across_samples_of_a_batch(dense_model):
    x = np.repeat(np.random.default_rng(8).normal(0, 1, (1, 6)), 3, axis=0).astype(np.float32)
    out = create_analyzer("smoothgrad", dense_model, samples=3, seed=0).analyze(x, 0)
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    noise = drawn_noise(x, 0, 2, 0.15)
    assert not np.array_equal(noise[0, 0], noise[0, 1]) and not np.array_equal(noise[0, 0], noise[1, 0])


@pytest.mark.slow  # whole runs of the command (or a second process); the default suite has quicker kin
def test_same_seed_is_bit_identical_in_another_process(dense_model, tmp_path):
    weights = tmp_path / "m.weights.h5"
    dense_model.save_weights(weights)
    x = np.random.default_rng(9).normal(0, 1, (2, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    here = create_analyzer("smooth_taylor", dense_model, samples=5, seed=123, batch_size=3).analyze(x, 1)
    script = f"""
import numpy as np, keras
from pgig_tf import create_analyzer
m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
m.load_weights(r"{weights}")
a = create_analyzer("smooth_taylor", m, samples=5, seed=123, batch_size=3).analyze(np.load(r"{tmp_path / "x.npy"}"), 1)
np.save(r"{tmp_path / "other.npy"}", a)
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "other.npy"), here)


@pytest.mark.parametrize("name", NOISY + ("expected_gradients",))
def test_pattern_guided_variant_on_a_linear_model_is_p_times_plain(name):
    model = set_random_weights(keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, name="lin")]), 4)
    p = np.random.default_rng(9).normal(0, 1, (5, 1)).astype(np.float32)
    x = np.random.default_rng(8).normal(0, 1, (3, 5)).astype(np.float32)
    kw = {"samples": 6, "seed": 2}
    if name == "expected_gradients":
        kw["baselines"] = np.random.default_rng(1).normal(0, 1, (4, 5)).astype(np.float32)
    plain = create_analyzer(name, model, **kw).analyze(x, 0)
    guided = create_analyzer(name, model, rule="pattern_attribution", patterns={"lin": p}, **kw).analyze(x, 0)
    power = 2 if name in ("smoothgrad_squared", "vargrad") else 1  # these square the gradient
    np.testing.assert_allclose(guided, p[:, 0] ** power * plain, rtol=1e-4, atol=1e-7)
    assert np.abs(plain).max() > 0


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("smoothgrad", {"samples": 0}, r"samples must be a positive integer, got 0"),
        ("vargrad", {"samples": -3}, r"samples must be a positive integer, got -3"),
        ("smoothgrad", {"noise_scale": -0.1}, r"noise_scale must be a finite number >= 0"),
        ("smooth_taylor", {"noise_scale": float("nan")}, r"noise_scale must be a finite number >= 0"),
        ("smoothgrad_ig", {"noise_scale": "big"}, r"noise_scale must be a finite number >= 0"),
        ("smoothgrad", {"noise_scale": 1e38}, r"noise_scale must be at most 1e\+06, got 1e\+38: .* overflow float32"),
        ("smooth_taylor", {"candidates": (0.1, 2e6)}, r"candidates must be at most 1e\+06, got 2000000.0"),
        ("smoothgrad", {"seed": -1}, r"seed must be None or an integer in \[0, 2\*\*31\)"),
        (
            "expected_gradients",
            {"baselines": np.zeros((2, 5))},
            r"baselines must have shape \(batch, 6\), got \(2, 5\)",
        ),
        ("smoothgrad", {"rule": "pattern_attribution"}, None),
    ],
)
def test_bad_settings(dense_model, name, kwargs, message):
    if message is None:  # a pattern rule without patterns is refused when used
        analyzer = create_analyzer(name, dense_model, **kwargs)
        with pytest.raises(ValueError, match="needs patterns"):
            analyzer.analyze(np.zeros((1, 6), np.float32))
        return
    with pytest.raises(ValueError, match=message):
        create_analyzer(name, dense_model, **kwargs)


@pytest.mark.parametrize("criterion", ["aupc", "total_variation"])
def test_adaptive_smooth_taylor_keeps_the_best_candidate_per_input(criterion):
    from pgig_tf.evaluation.degradation import Degrader, aupc
    from pgig_tf.evaluation.smoothness import autvc

    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                keras.layers.Conv2D(3, 3, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        ),
        5,
        scale=0.3,
    )
    x = np.random.default_rng(3).random((4, 12, 12, 1)).astype(np.float32)
    candidates = (0.05, 0.3, 0.9)
    adaptive = create_analyzer(
        "smooth_taylor",
        model,
        samples=6,
        noise_scale="adaptive",
        candidates=candidates,
        criterion=criterion,
        patch_size=3,
        num_steps=8,
        seed=4,
    )
    chosen = adaptive.analyze(x, 1)
    fixed = np.stack(
        [create_analyzer("smooth_taylor", model, samples=6, noise_scale=c, seed=4).analyze(x, 1) for c in candidates]
    )
    if criterion == "aupc":
        degrader = Degrader(model, patch_size=3, num_steps=8)
        scores = np.stack([aupc(degrader.curves(x, m, [1] * 4)) for m in fixed])
    else:
        scores = np.stack([autvc(m) for m in fixed])
    best = scores.argmin(0)
    np.testing.assert_array_equal(adaptive.chosen_noise_scales, np.array(candidates)[best])
    np.testing.assert_allclose(chosen, fixed[best, np.arange(4)], rtol=1e-6, atol=1e-9)
    assert len(set(best.tolist())) > 1 or criterion == "total_variation"


def test_adaptive_errors(dense_model):
    with pytest.raises(ValueError, match="criterion must be 'aupc' or 'total_variation'"):
        create_analyzer("smooth_taylor", dense_model, noise_scale="adaptive", criterion="ssim")
    with pytest.raises(ValueError, match="noise_scale must be a finite number"):
        create_analyzer("smooth_taylor", dense_model, noise_scale="adaptiv")


@pytest.mark.parametrize("name", NOISY + ("expected_gradients",))
def test_noise_does_not_depend_on_the_chunking(dense_model, name):
    """Every random draw is keyed by (seed, sample, draw): batch sizes 1, 4 and 64 give the same maps."""
    x = np.random.default_rng(10).normal(0, 1, (3, 6)).astype(np.float32)
    kw = {"samples": 3, "seed": 5}
    if name in ("smoothgrad_ig", "noise_baseline_ig"):
        kw["steps"] = 2  # points of one noise draw share it across the path, also across chunk borders
    if name == "expected_gradients":
        kw["baselines"] = np.random.default_rng(11).normal(0, 1, (7, 6)).astype(np.float32)
    maps = [create_analyzer(name, dense_model, batch_size=b, **kw).analyze(x, 0) for b in (1, 4, 64)]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=1e-5, atol=1e-7 * np.abs(maps[0]).max())
    assert np.abs(maps[0]).max() > 0


@pytest.mark.parametrize("name", NOISY + ("expected_gradients", "random"))
def test_pieces_with_their_first_index_get_the_draws_of_one_call(dense_model, name):
    """Contiguous pieces [0, 2) and [2, 5) explained with first_index 0 and 2 give the maps of one call on all 5."""
    x = np.random.default_rng(12).normal(0, 1, (5, 6)).astype(np.float32)
    kw = {"samples": 3} if name != "random" else {}
    if name == "expected_gradients":
        kw["baselines"] = np.random.default_rng(13).normal(0, 1, (7, 6)).astype(np.float32)
    analyzer = create_analyzer(name, dense_model, seed=4, **kw)
    whole = analyzer.analyze(x, 0)
    pieces = np.concatenate([analyzer.analyze(x[:2], 0), analyzer.analyze(x[2:], 0, first_index=2)])
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-7 * np.abs(whole).max())
    # without its first_index the second piece reuses the first samples' draws: other maps
    assert not np.allclose(analyzer.analyze(x[2:], 0), whole[2:], rtol=1e-3, atol=0)


def test_first_index_is_checked(dense_model):
    analyzer = create_analyzer("smoothgrad", dense_model, samples=2, seed=0)
    with pytest.raises(ValueError, match=r"first_index must be a non-negative int below 2\*\*31, got -1"):
        analyzer.analyze(np.zeros((1, 6), np.float32), 0, first_index=-1)
    with pytest.raises(TypeError, match="first_index must be a non-negative int, got float 1.0"):
        analyzer.analyze(np.zeros((1, 6), np.float32), 0, first_index=1.0)


@pytest.mark.parametrize("size,width", [(1, 4), (4, 4), (5, 8), (7, 8), (8, 8)])
def test_stream_rows_are_consecutive_slices_of_one_philox_stream(size, width):
    """Row g of (seed, stream) is TF's Philox normal stream from element g·w (w: the row size rounded up to 4)."""
    from pgig_tf.core.noise import NORMAL, keyed_rows

    like = tf.zeros([3, size])
    rows = keyed_rows(tf.constant(2, tf.int64), 1, tf.constant([4, 5, 5], tf.int64), like, NORMAL).numpy()
    stream = tf.raw_ops.StatelessRandomNormalV2(
        shape=[6 * width],
        key=tf.constant([2 * 4 + 1], tf.uint64),
        counter=tf.constant([0, 0], tf.uint64),
        alg=1,
        dtype=tf.float32,
    ).numpy()
    row = [stream[g * width : g * width + size] for g in (4, 5, 5)]
    np.testing.assert_array_equal(rows, np.stack(row))
    assert np.unique(stream).size == 6 * width


def test_one_random_call_per_row_restores_the_setting_it_found():
    from pgig_tf.core import noise

    assert noise._ONE_CALL_PER_ROW[0] is False
    with noise.one_random_call_per_row(True):
        with noise.one_random_call_per_row(False):
            assert noise._ONE_CALL_PER_ROW[0] is False
        assert noise._ONE_CALL_PER_ROW[0] is True  # the outer setting, not the default
    assert noise._ONE_CALL_PER_ROW[0] is False


def test_keyed_rows_of_one_row_and_of_none():
    """A single id draws that row alone (not row 0); no ids draw nothing."""
    from pgig_tf.core.noise import UNIFORM, keyed_rows

    seed = tf.constant(7, tf.int64)
    both = keyed_rows(seed, 2, tf.constant([3, 4], tf.int64), tf.zeros([2, 6]), UNIFORM).numpy()
    one = keyed_rows(seed, 2, tf.constant([4], tf.int64), tf.zeros([1, 6]), UNIFORM).numpy()
    np.testing.assert_array_equal(one, both[1:])
    none = keyed_rows(seed, 2, tf.zeros([0], tf.int64), tf.zeros([0, 6]), UNIFORM).numpy()
    assert none.shape == (0, 6)
