"""The engines evaluate exactly as many gradient chunks as the points need, and output values for any count."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import set_random_weights
from pgig_tf import ConvergenceWarning, create_analyzer


def counting_gradient_calls(analyzer):
    """The analyzer's engine with its gradient step wrapped to count its calls (one per chunk), and the counter."""
    engine = analyzer._get_engine()
    calls = tf.Variable(0, dtype=tf.int64, trainable=False)
    gradients = engine._gradients

    def counted(points, targets):
        calls.assign_add(1)
        return gradients(points, targets)

    engine._gradients = counted
    return calls


@pytest.mark.parametrize(
    "batch_size, chunks", [(2, 6 + 6 + 12 + 24), (4, 3 + 3 + 6 + 12), (5, 3 + 3 + 5 + 10), (48, 1 + 1 + 1 + 1)]
)
def test_auto_steps_evaluate_ceil_of_points_over_batch_chunks_per_level(dense_model, batch_size, chunks):
    # 3 samples that never converge (tolerance 1e-12), right-Riemann levels of 4, 4, 8 and 16 new points:
    # 12, 12, 24 and 48 (sample, point) pairs, in ceil(pairs / batch_size) chunks per level
    x = np.random.default_rng(1).normal(0, 2, (3, 6)).astype(np.float32)
    analyzer = create_analyzer(
        "integrated_gradients", dense_model, steps="auto", tolerance=1e-12, max_steps=32, batch_size=batch_size
    )
    calls = counting_gradient_calls(analyzer)
    with pytest.warns(ConvergenceWarning):
        maps, delta = analyzer.analyze(x, 1, return_convergence_delta=True)
    assert int(calls.numpy()) == chunks
    np.testing.assert_array_equal(analyzer.last_evaluations, [32] * 3)
    # the same maps and completeness gaps as in one chunk per level (f(x) read batch_size samples at a time)
    whole = create_analyzer(
        "integrated_gradients", dense_model, steps="auto", tolerance=1e-12, max_steps=32, batch_size=96
    )
    with pytest.warns(ConvergenceWarning):
        expected_maps, expected_delta = whole.analyze(x, 1, return_convergence_delta=True)
    np.testing.assert_allclose(maps, expected_maps, rtol=1e-5, atol=1e-6 * np.abs(expected_maps).max())
    np.testing.assert_allclose(delta, expected_delta, rtol=1e-4, atol=1e-5 * np.abs(expected_delta).max())


@pytest.mark.parametrize("batch_size, chunks", [(4, 5), (5, 4), (20, 1), (64, 1)])
def test_fixed_steps_evaluate_ceil_of_points_over_batch_chunks(dense_model, batch_size, chunks):
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)  # 2 samples x 10 steps = 20 points
    analyzer = create_analyzer("integrated_gradients", dense_model, steps=10, batch_size=batch_size)
    calls = counting_gradient_calls(analyzer)
    analyzer.analyze(x, 0)
    assert int(calls.numpy()) == chunks


@pytest.mark.parametrize("batch_size", [1, 3, 10, 11])
def test_output_values_has_one_row_per_point_when_points_outnumber_their_values(batch_size):
    # 10 points of 2 values each: every chunk count must follow the number of points, not of values
    model = set_random_weights(keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh")]), 4)
    points = np.random.default_rng(3).normal(size=(10, 2)).astype(np.float32)
    engine = create_analyzer("gradient", model, batch_size=batch_size)._get_engine()
    values = engine.output_values(points)
    np.testing.assert_allclose(values, model(points).numpy(), rtol=1e-6, atol=1e-7)


def test_output_values_of_a_free_size_model_follow_every_input_shape():
    # shapes (4, 6, 1) and (6, 6, 1) differ in their first axis only: each needs its own compiled loop
    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((None, None, 1)),
                keras.layers.Conv2D(2, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        ),
        5,
    )
    engine = create_analyzer("gradient", model, batch_size=2)._get_engine()
    rng = np.random.default_rng(4)
    for shape in [(3, 4, 6, 1), (3, 6, 6, 1), (3, 4, 6, 1)]:
        points = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(engine.output_values(points), model(points).numpy(), rtol=1e-5, atol=1e-6)
