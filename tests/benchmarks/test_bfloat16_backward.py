"""The bfloat16 variants of benchmarks/bfloat16_backward.py: which part of the loop each runs in float32."""

import keras
import numpy as np

from benchmarks.bfloat16_backward import make_analyzer
from conftest import set_random_weights
from pgig_tf import Patterns


def linear_model_inputs_and_patterns(seed):
    """Two Dense layers without activation (the gradient is the product of the kernels, whatever the forward
    values), 4 inputs and random patterns drawn with `seed`."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="a"), keras.layers.Dense(3, name="b")])
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (4, 6)).astype(np.float32)
    patterns = Patterns(
        {"a": rng.normal(0, 1, (6, 5)).astype(np.float32), "b": rng.normal(0, 1, (5, 3)).astype(np.float32)}
    )
    return set_random_weights(model, 3), x, patterns


def test_the_bfloat16_forward_variant_keeps_the_backward_pass_in_float32():
    """On a linear model the gradient does not depend on the forward pass: a float32 backward gives float32's maps."""
    model, x, patterns = linear_model_inputs_and_patterns(4)
    for method in ("integrated_gradients", "pgig"):
        maps = {
            variant: make_analyzer(method, variant, model, patterns, steps=4, batch_size=64).analyze(
                x, neuron_selection=1
            )
            for variant in ("float32", "bfloat16", "bfloat16_forward")
        }
        np.testing.assert_allclose(maps["bfloat16_forward"], maps["float32"], rtol=1e-6, atol=1e-7, err_msg=method)
        error = np.abs(maps["bfloat16"] - maps["float32"]).max() / np.abs(maps["float32"]).max()
        assert 1e-4 < error < 3e-2, (method, error)  # bfloat16 through and through: its 8-bit rounding


def test_float32_pattern_backward_applies_only_to_pgig_and_rounds_only_between_layers():
    model, x, patterns = linear_model_inputs_and_patterns(5)
    assert make_analyzer("integrated_gradients", "float32_pattern_backward", model, patterns, 4, 64) is None
    ours = make_analyzer("pgig", "float32_pattern_backward", model, patterns, 4, 64).analyze(x, neuron_selection=1)
    exact = make_analyzer("pgig", "float32", model, patterns, 4, 64).analyze(x, neuron_selection=1)
    np.testing.assert_allclose(ours, exact, rtol=2e-2, atol=2e-2 * np.abs(exact).max())
