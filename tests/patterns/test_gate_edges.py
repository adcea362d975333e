"""Eq. 2's E+ holds the samples where a gated unit passes signal: 0 < z < cap, the edges z = 0 and z = cap excluded."""

import keras
import numpy as np
import pytest

import numpy_reference as ref
from pgig_tf import fit_patterns

KERNEL = np.array([[1, 0, 2], [1, -1, 1], [0, 1, -1], [-1, 2, 0]], np.float32)


def integer_data():
    """Small integers: z = x W is exact in float32, and many samples land on z = 0 or z = 6."""
    return np.random.default_rng(9).integers(-3, 4, size=(400, 4)).astype(np.float32)


def gated_model(activation):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation=activation, name="h"),
            keras.layers.Dense(2, name="o"),
        ]
    )
    model.get_layer("h").set_weights([KERNEL, np.zeros(3, np.float32)])
    model.get_layer("o").set_weights([np.ones((3, 2), np.float32), np.zeros(2, np.float32)])
    return model


@pytest.mark.parametrize("activation, cap", [("relu", np.inf), ("relu6", 6.0)])
def test_units_exactly_at_a_gate_edge_are_not_active(activation, cap):
    x = integer_data()
    z = x @ KERNEL
    assert (z == 0).sum(axis=0).min() >= 20  # every unit has samples at z = 0 ...
    if cap != np.inf:
        assert (z == cap).sum(axis=0).min() >= 5  # ... and at z = 6
    patterns = fit_patterns(gated_model(activation), x, verbose=False)["h"]
    expected = ref.patterns_dense(x, KERNEL, kind="relu", cap=cap)
    np.testing.assert_allclose(patterns, expected, rtol=1e-5, atol=1e-6)
    # counting either edge as active moves the patterns by far more than the tolerance above: the comparison can fail
    with_zero = ref.patterns_dense(x, KERNEL, kind="relu", cap=cap, include_edges=(True, False))
    assert np.abs(with_zero - expected).max() > 1e-3
    if cap != np.inf:
        with_cap = ref.patterns_dense(x, KERNEL, kind="relu", cap=cap, include_edges=(False, True))
        assert np.abs(with_cap - expected).max() > 1e-3
