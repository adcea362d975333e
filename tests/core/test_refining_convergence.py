"""steps="auto" stops a sample after exactly `agreements` successive refinements within tolerance, counted from its second level."""

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import ConvergenceWarning, create_analyzer

# right-Riemann levels of 4, 8, 16 and 32 points for max_steps=32; the default 2 agreements need
# levels 0 -> 1 and 1 -> 2 to agree, so a sample that agrees from the start stops at 16 points
LEVELS = [4, 8, 16, 32]


def linear_model():
    """Dense(3) without activation on 6 features: every level's Riemann sum is exact."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="linear")])
    return set_random_weights(model, 2)


def test_a_model_exact_at_every_level_stops_after_two_agreeing_refinements():
    x = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
    analyzer = create_analyzer("integrated_gradients", linear_model(), steps="auto", tolerance=1e-4, max_steps=32)
    maps, delta = analyzer.analyze(x, 1, return_convergence_delta=True)
    # the first level is compared with nothing: its own agreement does not count
    assert analyzer.last_steps.tolist() == [LEVELS[2]] * 3
    assert analyzer.last_evaluations.tolist() == [LEVELS[2]] * 3
    assert analyzer.last_converged.tolist() == [True] * 3
    kernel = analyzer.model.get_layer("linear").get_weights()[0]
    np.testing.assert_allclose(maps, x * kernel[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


def test_a_sample_at_its_baseline_has_a_zero_map_and_converges_like_any_other():
    # a zero map changes by 0 <= tolerance x 0 and closes the completeness gap 0 <= tolerance x 0:
    # the edges count as agreement, and the count still starts at the second level
    model = set_random_weights(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]), 3
    )
    rng = np.random.default_rng(6)
    x = np.stack([np.zeros(6, np.float32), rng.normal(size=6).astype(np.float32)])
    analyzer = create_analyzer("integrated_gradients", model, steps="auto", tolerance=1e-12, max_steps=32)
    with pytest.warns(ConvergenceWarning, match="1 of 2 samples"):
        maps, delta = analyzer.analyze(x, 0, return_convergence_delta=True)
    np.testing.assert_array_equal(maps[0], 0.0)
    assert float(delta[0]) == 0.0
    assert analyzer.last_converged.tolist() == [True, False]  # the other sample cannot meet tolerance 1e-12
    assert analyzer.last_steps.tolist() == [LEVELS[2], LEVELS[3]]
    assert analyzer.last_evaluations.tolist() == [LEVELS[2], LEVELS[3]]


def test_agreeing_zero_maps_do_not_stop_integrated_gradients_while_completeness_fails():
    # f(x) = 100 (relu(x - 0.30) - relu(x - 0.31)): f(1) - f(0) = 1, but no right-Riemann node k/m
    # (m <= 16) lies in (0.30, 0.31), so every level's map is 0 and the levels agree from the start
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    model.layers[0].set_weights([np.ones((1, 2), np.float32), np.array([-0.30, -0.31], np.float32)])
    model.layers[1].set_weights([np.array([[100.0], [-100.0]], np.float32), np.zeros(1, np.float32)])
    analyzer = create_analyzer("integrated_gradients", model, steps="auto", tolerance=0.01, max_steps=16)
    with pytest.warns(ConvergenceWarning, match="1 of 1 samples did not meet tolerance 0.01"):
        maps, delta = analyzer.analyze(np.ones((1, 1), np.float32), 0, return_convergence_delta=True)
    np.testing.assert_array_equal(maps, [[0.0]])
    np.testing.assert_allclose(delta, [1.0], rtol=1e-5)
    assert analyzer.last_converged.tolist() == [False] and analyzer.last_steps.tolist() == [16]
