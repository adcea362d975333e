"""Integration rules (method=), the convergence delta and steps="auto" of the path methods, against float64 numpy."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from conftest import set_random_weights
from keras_to_reference import reference_patterns, to_reference
from pgig_tf import ConvergenceWarning, IntegratedGradientsAnalyzer, Patterns, create_analyzer, load_analyzer
from pgig_tf.core.integration import METHODS


def random_patterns(model, seed):
    """Random patterns (not fitted) for every Dense/Conv2D layer: PGIG's rule with arbitrary kernels w * p."""
    rng = np.random.default_rng(seed)
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    return Patterns({layer.name: rng.normal(size=tuple(layer.kernel.shape)).astype(np.float32) for layer in layers})


def relu_net(seed=0, width=8):
    """Dense(width, relu) -> Dense(width, relu) -> Dense(3) on 5 features, random non-zero biases."""
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(width, activation="relu", name="d1"),
            keras.layers.Dense(width, activation="relu", name="d2"),
            keras.layers.Dense(3, name="d3"),
        ]
    )
    return set_random_weights(model, seed)


@pytest.mark.parametrize("method", METHODS)
def test_each_rule_matches_numpy_for_ig_and_pgig(method, conv_model):
    rng = np.random.default_rng(3)
    dense = relu_net()
    patterns = random_patterns(dense, 4)
    cases = [("integrated_gradients", dense, None), ("pgig", dense, patterns)]
    if method in ("riemann_trapezoid", "gausslegendre"):  # unequal weights on a conv net: max-pool routing
        cases.append(("integrated_gradients", conv_model, None))
    for name, model, pats in cases:
        shape = tuple(model.inputs[0].shape[1:])
        x = rng.normal(0, 1.5, (3,) + shape).astype(np.float32)
        baseline = rng.normal(0, 0.5, shape).astype(np.float32)
        targets = np.array([0, 2, 1])
        options = {"patterns": pats} if pats is not None else {}
        analyzer = create_analyzer(name, model, steps=6, method=method, baseline=baseline, batch_size=5, **options)
        ours = analyzer.analyze(x, neuron_selection=targets)
        specs = to_reference(model)
        rule = "pattern_attribution" if pats is not None else "gradient"
        ref_pats = reference_patterns(model, specs, pats) if pats is not None else None
        expected = ref.integrated_gradients(specs, x, targets, baseline, 6, rule, ref_pats, method=method)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5 * scale, err_msg=f"{name} {method}")
        if method != "riemann_right":  # the rules differ by far more than the tolerance on these paths
            right = ref.integrated_gradients(specs, x, targets, baseline, 6, rule, ref_pats)
            assert np.abs(right - expected).max() > 1e-3 * scale, (name, method)
        np.testing.assert_array_equal(analyzer.last_steps, [6, 6, 6])


def power_model(power, width=2):
    """f(x) = Σ_j c_j (w_j·x + b_j)^power / power: along a straight path its gradient is a polynomial of degree power - 1."""
    inputs = keras.Input((4,))
    u = keras.layers.Dense(width, name="u")(inputs)
    h = keras.layers.Lambda(lambda t: t**power / power, name="power")(u)
    outputs = keras.layers.Dense(1, use_bias=False, name="c")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(power)
    model.set_weights(
        [
            rng.uniform(-1.0, 1.0, (4, width)).astype(np.float32),
            np.full(width, 0.5, np.float32),
            rng.uniform(0.5, 1.0, (width, 1)).astype(np.float32),
        ]
    )
    return model


def exact_power_ig(model, x, baseline, power):
    """(x − x̄) ⊙ Σ_j c_j w_j ∫ u_j(α)^(power−1) dα with u_j linear in α: (u1^power − u0^power) / (power (u1 − u0))."""
    w, b, c = [np.asarray(v, np.float64) for v in model.get_weights()]
    x, baseline = x.astype(np.float64), np.broadcast_to(baseline, x.shape).astype(np.float64)
    u0, u1 = baseline @ w + b, x @ w + b
    mean_power = (u1**power - u0**power) / (power * (u1 - u0))
    return (x - baseline) * ((mean_power * c[:, 0]) @ w.T)


def test_gauss_legendre_integrates_a_degree_2m_minus_1_path_integrand_exactly():
    m = 3
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
    baseline = np.float32(-0.4)
    exact_model = power_model(2 * m)  # gradient along the path: degree 2m - 1 = 5
    exact = exact_power_ig(exact_model, x, baseline, 2 * m)
    errors = {}
    for method in ("gausslegendre", "riemann_middle", "riemann_trapezoid"):
        got = create_analyzer("integrated_gradients", exact_model, steps=m, method=method, baseline=baseline)
        errors[method] = np.abs(got.analyze(x, neuron_selection=0) - exact).max() / np.abs(exact).max()
    assert errors["gausslegendre"] < 2e-6  # float32 rounding only
    assert errors["riemann_middle"] > 1e-2 and errors["riemann_trapezoid"] > 1e-2
    beyond_model = power_model(2 * m + 1)  # degree 2m: beyond the rule
    beyond = exact_power_ig(beyond_model, x, baseline, 2 * m + 1)
    got = create_analyzer("integrated_gradients", beyond_model, steps=m, method="gausslegendre", baseline=baseline)
    assert np.abs(got.analyze(x, neuron_selection=0) - beyond).max() / np.abs(beyond).max() > 1e-4


def completeness_gap(model, maps, x, baseline, targets):
    """f(x) − f(x̄) − Σφ in float64 from the model's own predictions."""
    out = model.predict(x, verbose=0).astype(np.float64)
    out_baseline = model.predict(np.broadcast_to(baseline, x.shape).astype(np.float32), verbose=0).astype(np.float64)
    rows = np.arange(len(x))
    return out[rows, targets] - out_baseline[rows, targets] - maps.reshape(len(x), -1).astype(np.float64).sum(1)


@pytest.mark.parametrize("steps", [16, "auto"])
def test_convergence_delta_is_the_completeness_gap(steps):
    model = relu_net(seed=2)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (5, 5)).astype(np.float32)
    baseline = rng.normal(0, 0.3, 5).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0])
    patterns = random_patterns(model, 2)
    for name, options in (("integrated_gradients", {}), ("pgig", {"patterns": patterns})):
        analyzer = create_analyzer(
            name, model, steps=steps, method="riemann_middle", baseline=baseline, max_steps=27, **options
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            maps, delta = analyzer.analyze(x, neuron_selection=targets, return_convergence_delta=True)
        assert delta.shape == (5,) and delta.dtype == np.float32
        expected = completeness_gap(model, maps, x, baseline, targets)
        np.testing.assert_allclose(delta, expected, rtol=0, atol=1e-5 * np.abs(maps).sum(axis=1).max())
        # the same maps as a call without the delta; a dataset gives the same deltas
        np.testing.assert_array_equal(maps, analyzer.analyze(x, neuron_selection=targets))
        if name == "pgig":
            continue
        stream = tf.data.Dataset.from_tensor_slices(x).batch(2)
        stream_maps, stream_delta = analyzer.analyze(stream, neuron_selection=targets, return_convergence_delta=True)
        np.testing.assert_allclose(stream_maps, maps, rtol=0, atol=1e-6 * np.abs(maps).max())
        np.testing.assert_allclose(stream_delta, delta, rtol=0, atol=1e-6 * np.abs(maps).sum(axis=1).max())
        assert analyzer.last_steps.shape == (5,)
        assert np.abs(delta).max() > 0  # a finite rule on a ReLU net leaves a gap


def test_methods_without_a_convergence_delta_say_why(dense_model):
    x = np.ones((2, 6), np.float32)
    for name, reason in (
        ("smoothgrad_ig", "noisy copies"),
        ("noise_baseline_ig", "random baselines"),
        ("gradient", "only Integrated Gradients and PGIG"),
    ):
        with pytest.raises(ValueError, match=reason):
            create_analyzer(name, dense_model).analyze(x, return_convergence_delta=True)


def test_auto_meets_its_tolerance_on_a_relu_net_with_a_known_integral():
    model = relu_net(seed=7, width=16)
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2.0, (6, 5)).astype(np.float32)
    baseline = rng.normal(0, 0.5, 5).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1, 2])
    specs = to_reference(model)
    exact = ref.integrated_gradients_exact(specs, x, targets, baseline)
    f = (
        ref.forward(specs, x)[np.arange(6), targets]
        - ref.forward(specs, np.broadcast_to(baseline, x.shape))[0, targets]
    )
    np.testing.assert_allclose(exact.sum(1), f, rtol=1e-10)  # the exact integral is complete
    kinks = [len(ref.relu_path_breakpoints(specs, x[i], baseline)) - 2 for i in range(6)]
    assert min(kinks) >= 3
    tolerance = 0.01
    for method in ("riemann_right", "gausslegendre"):
        analyzer = IntegratedGradientsAnalyzer(
            model, steps="auto", method=method, tolerance=tolerance, baseline=baseline
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            maps, delta = analyzer.analyze(x, neuron_selection=targets, return_convergence_delta=True)
        error = np.linalg.norm(maps - exact, axis=1) / np.linalg.norm(exact, axis=1)
        converged = analyzer.last_converged
        assert len(caught) == int(not converged.all())  # a sample that hit the cap is always reported
        assert np.all(error[converged] <= tolerance), (method, error, analyzer.last_steps)
        assert np.all(np.abs(delta[converged]) <= tolerance * np.abs(f[converged]) + 1e-6)
        if method == "riemann_right":  # the default converges on every sample (the others may hit the cap)
            assert converged.all() and analyzer.last_steps.max() < 1024
    # 4 points (the first level) alone are far from the integral: the refinement was needed
    coarse = create_analyzer("integrated_gradients", model, steps=4, baseline=baseline)
    coarse_error = np.linalg.norm(coarse.analyze(x, targets) - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert coarse_error.min() > 10 * tolerance


def test_auto_reports_steps_and_evaluations_and_warns_below_the_cap(dense_model):
    x = np.random.default_rng(4).normal(0, 2, (4, 6)).astype(np.float32)
    right = create_analyzer("integrated_gradients", dense_model, steps="auto", tolerance=1e-9, max_steps=32)
    with pytest.warns(ConvergenceWarning, match="4 of 4 samples did not meet tolerance 1e-09"):
        maps = right.analyze(x, 1)
    np.testing.assert_array_equal(right.last_steps, [32] * 4)
    np.testing.assert_array_equal(right.last_evaluations, [32] * 4)  # 4 + 4 + 8 + 16 new points: all reused
    assert not right.last_converged.any()
    fixed = create_analyzer("integrated_gradients", dense_model, steps=32).analyze(x, 1)
    np.testing.assert_allclose(maps, fixed, rtol=0, atol=1e-5 * np.abs(fixed).max())
    gauss = create_analyzer(
        "integrated_gradients", dense_model, steps="auto", method="gausslegendre", tolerance=1e-9, max_steps=32
    )
    with pytest.warns(ConvergenceWarning):
        gauss.analyze(x, 1)
    np.testing.assert_array_equal(gauss.last_evaluations, [4 + 8 + 16 + 32] * 4)  # no reuse


def test_explicit_right_riemann_is_the_default_bit_for_bit(dense_model):
    x = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
    settings = {"steps": 7, "baseline": 0.2}
    default = create_analyzer("integrated_gradients", dense_model, **settings)
    explicit = create_analyzer("integrated_gradients", dense_model, method="riemann_right", **settings)
    np.testing.assert_array_equal(default.analyze(x, 2), explicit.analyze(x, 2))
    assert default.method == "riemann_right" and default.get_config()["method"] == "riemann_right"


def test_noisy_path_methods_take_the_rule():
    # f = (v·x)²/2: its gradient along any straight path is linear in alpha, so the trapezoid and
    # Gauss-Legendre rules are exact (and equal, whatever the random baselines), the right rule is not
    inputs = keras.Input((5,))
    outputs = keras.layers.Lambda(lambda t: t * t / 2)(keras.layers.Dense(1, use_bias=False)(inputs))
    model = set_random_weights(keras.Model(inputs, outputs), 2)
    x = np.random.default_rng(6).normal(size=(3, 5)).astype(np.float32)
    settings = {"steps": 2, "samples": 3, "seed": 4}
    maps = {
        m: create_analyzer("noise_baseline_ig", model, method=m, **settings).analyze(x, 0)
        for m in ("riemann_right", "riemann_trapezoid", "gausslegendre")
    }
    scale = np.abs(maps["gausslegendre"]).max()
    np.testing.assert_allclose(maps["riemann_trapezoid"], maps["gausslegendre"], rtol=0, atol=1e-5 * scale)
    assert np.abs(maps["riemann_right"] - maps["gausslegendre"]).max() > 1e-2 * scale
    # without noise, SmoothGrad-IG is Integrated Gradients with the same (unequally weighted) rule
    smooth = create_analyzer(
        "smoothgrad_ig", model, steps=3, samples=1, noise_scale=0.0, method="gausslegendre", seed=0
    )
    plain = create_analyzer("integrated_gradients", model, steps=3, method="gausslegendre")
    np.testing.assert_allclose(smooth.analyze(x, 0), plain.analyze(x, 0), rtol=1e-6, atol=1e-7)


def test_invalid_settings_raise_clear_errors(dense_model):
    with pytest.raises(ValueError, match="choose one of: riemann_right, riemann_left"):
        create_analyzer("pgig", dense_model, method="simpson")
    with pytest.raises(ValueError, match="choose one of"):
        create_analyzer("noise_baseline_ig", dense_model, method="midpoint")
    with pytest.raises(ValueError, match="needs steps >= 2"):
        create_analyzer("integrated_gradients", dense_model, steps=1, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="steps must be a positive integer, got 'auto'"):
        create_analyzer("smoothgrad_ig", dense_model, steps="auto")
    with pytest.raises(ValueError, match="steps must be a positive integer or 'auto'"):
        create_analyzer("integrated_gradients", dense_model, steps="adaptive")
    with pytest.raises(ValueError, match="tolerance must be a finite number > 0"):
        create_analyzer("integrated_gradients", dense_model, steps="auto", tolerance=0)
    with pytest.raises(ValueError, match="max_steps must be at least 17"):
        create_analyzer("integrated_gradients", dense_model, steps="auto", method="riemann_trapezoid", max_steps=16)


def test_a_saved_auto_analyzer_keeps_its_settings_and_steps(dense_model, tmp_path):
    x = np.random.default_rng(7).normal(size=(3, 6)).astype(np.float32)
    settings = {"steps": "auto", "method": "riemann_left", "tolerance": 0.05, "max_steps": 64}
    analyzer = create_analyzer("pgig", dense_model, patterns=random_patterns(dense_model, 3), **settings)
    expected = analyzer.analyze(x, 1)
    loaded = load_analyzer(analyzer.save(tmp_path / "pgig.npz"), dense_model)
    assert {key: getattr(loaded, key) for key in settings} == settings
    np.testing.assert_array_equal(loaded.analyze(x, 1), expected)
    np.testing.assert_array_equal(loaded.last_steps, analyzer.last_steps)
    assert analyzer.last_steps.min() >= 16 and analyzer.last_steps.max() <= 64


def test_convergence_delta_of_one_analyzer_on_inputs_of_two_sizes():
    """f(x) - f(0) - Σφ on 6 x 6 and then 8 x 8 images of a model with free spatial size (one traced output per size)."""
    model = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="out"),
        ]
    )
    set_random_weights(model, 4)
    analyzer = create_analyzer("integrated_gradients", model, steps=8, baseline=0.0)
    rng = np.random.default_rng(5)
    for size in (6, 8, 6):
        x = rng.normal(0, 1, (3, size, size, 1)).astype(np.float32)
        maps, delta = analyzer.analyze(x, neuron_selection=1, return_convergence_delta=True)
        outputs = model(x).numpy()[:, 1].astype(np.float64) - model(np.zeros_like(x)).numpy()[:, 1]
        expected = outputs - maps.reshape(3, -1).sum(axis=1, dtype=np.float64)
        np.testing.assert_allclose(delta, expected, rtol=0, atol=1e-5 * np.abs(outputs).max())
        assert np.abs(outputs).max() > 0
