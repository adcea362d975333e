"""Guided Backprop's gate through a capped ReLU is open exactly where the activation's derivative is 1: 0 < x < cap."""

import keras
import numpy as np
import pytest

from pgig_tf import create_analyzer


@pytest.mark.parametrize("cap", [3.0, 6.0])  # 6 takes ReLU6's own gradient kernel, 3 the general gate
def test_the_guided_gate_of_a_capped_relu_is_closed_at_both_edges(cap):
    model = keras.Sequential([keras.Input((5,)), keras.layers.ReLU(max_value=cap), keras.layers.Dense(1)])
    model.layers[-1].set_weights([np.ones((5, 1), np.float32), np.zeros(1, np.float32)])
    x = np.array([[0.0, cap, cap / 2, -1.0, cap + 1.0]], np.float32)
    maps = create_analyzer("guided_backprop", model).analyze(x, 0)
    np.testing.assert_array_equal(maps, [[0.0, 0.0, 1.0, 0.0, 0.0]])
