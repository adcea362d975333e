"""The engine turns only XLA's errors into advice; every other TensorFlow error reaches the caller unchanged."""

import numpy as np
import pytest
import tensorflow as tf

from pgig_tf import create_analyzer

PLACEMENT = "Trying to access resource dense/kernel located in device /job:localhost/replica:0/task:0/device:CPU:1"


def engine_raising(model, error, jit_compile, strategy):
    """The analyzer's engine with its compiled loop replaced by one that raises `error`."""
    engine = create_analyzer("gradient", model)._get_engine()
    engine.jit_compile, engine.strategy = jit_compile, strategy

    def fails(*args):
        raise error

    engine._function_for = lambda shape, dtype: fails
    return engine


@pytest.mark.parametrize(
    "jit_compile, with_strategy, message, advised",
    [
        (True, True, PLACEMENT, True),
        (False, True, PLACEMENT, False),  # without XLA a placement error is not XLA's
        (True, False, PLACEMENT, False),
        (True, True, "indices[0] = 7 is not in [0, 3)", False),
    ],
)
def test_only_a_placement_error_under_xla_with_a_strategy_becomes_advice(
    dense_model, jit_compile, with_strategy, message, advised
):
    error = tf.errors.InvalidArgumentError(None, None, message)
    strategy = tf.distribute.get_strategy() if with_strategy else None
    engine = engine_raising(dense_model, error, jit_compile, strategy)
    x, targets = np.zeros((1, 6), np.float32), np.zeros(1, np.int32)
    if advised:
        with pytest.raises(ValueError, match=r"another replica's device .* strategy\.scope\(\)") as caught:
            engine(x, targets)
        assert PLACEMENT in str(caught.value)
    else:
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            engine(x, targets)
        assert caught.value is error


@pytest.mark.parametrize("jit_compile", [True, False])
def test_an_unimplemented_kernel_is_advice_under_xla_only(dense_model, jit_compile):
    error = tf.errors.UnimplementedError(None, None, "No deterministic GPU implementation of MaxPoolGrad")
    engine = engine_raising(dense_model, error, jit_compile, None)
    x, targets = np.zeros((1, 6), np.float32), np.zeros(1, np.int32)
    if jit_compile:
        with pytest.raises(ValueError, match="XLA cannot compile .* Use jit_compile=False"):
            engine(x, targets)
    else:
        with pytest.raises(tf.errors.UnimplementedError) as caught:
            engine(x, targets)
        assert caught.value is error
