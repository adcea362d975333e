"""steps="auto" for Integrated Gradients keeps a sample open while its completeness gap is open, even if its levels agree."""

import keras
import numpy as np
import pytest

from pgig_tf import ConvergenceWarning, Patterns, create_analyzer


def narrow_bump_model():
    """f(x) = x + 100 (relu(x - 0.30) - relu(x - 0.31)) on one feature: slope 1, and 101 on (0.30, 0.31) only.

    From the baseline 0 to x = 1 the path's gradient is 1 except on α ∈ (0.30, 0.31), which holds
    no node k/m of the right Riemann sum for m up to 64 (19/64 < 0.30 < 0.31 < 20/64): every level
    gives the map 1, while f(1) - f(0) = 2.
    """
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(3, activation="relu", name="hinges"),
            keras.layers.Dense(1, name="sum"),
        ]
    )
    model.get_layer("hinges").set_weights([np.ones((1, 3), np.float32), np.array([0.0, -0.30, -0.31], np.float32)])
    model.get_layer("sum").set_weights([np.array([[1.0], [100.0], [-100.0]], np.float32), np.zeros(1, np.float32)])
    return model


def test_agreeing_levels_do_not_stop_a_sample_whose_completeness_gap_is_open():
    model = narrow_bump_model()
    x = np.ones((1, 1), np.float32)
    np.testing.assert_allclose(model(x).numpy() - model(np.zeros_like(x)).numpy(), [[2.0]], rtol=1e-6)
    analyzer = create_analyzer("integrated_gradients", model, steps="auto", tolerance=0.01, max_steps=64)
    with pytest.warns(ConvergenceWarning, match="1 of 1 samples did not meet tolerance 0.01"):
        maps, delta = analyzer.analyze(x, 0, return_convergence_delta=True)
    np.testing.assert_allclose(maps, [[1.0]], rtol=1e-6)  # every level misses the bump
    np.testing.assert_allclose(delta, [1.0], rtol=1e-6)
    # without the completeness check the levels' agreement would have stopped it after 16 points (levels 4, 8, 16), as for PGIG below
    assert analyzer.last_steps.tolist() == [64] and analyzer.last_evaluations.tolist() == [64]
    assert analyzer.last_converged.tolist() == [False]


def test_pgig_has_no_completeness_gap_to_close_and_stops_when_its_levels_agree():
    # PGIG's modified gradient does not integrate to f(x) - f(x̄) (no completeness): only agreement counts
    model = narrow_bump_model()
    patterns = Patterns({"hinges": np.ones((1, 3), np.float32), "sum": np.ones((3, 1), np.float32)})
    analyzer = create_analyzer("pgig", model, patterns=patterns, steps="auto", tolerance=0.01, max_steps=64)
    analyzer.analyze(np.ones((1, 1), np.float32), 0)
    assert analyzer.last_converged.tolist() == [True] and analyzer.last_steps.tolist() == [16]
    assert analyzer.last_evaluations.tolist() == [16]
