"""The embedded digits CNN: trained under op determinism from every entry point, the process's setting kept."""

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework import config

from pgig_tf.datasets import digits


@pytest.fixture
def determinism_off():
    """Op determinism off for the test (the commands' tests may have turned it on), then as it was."""
    before = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if before:
        tf.config.experimental.enable_op_determinism()


def test_op_determinism_is_on_inside_and_off_again_after(determinism_off):
    with digits.op_determinism():
        assert config.is_op_determinism_enabled()
    assert not config.is_op_determinism_enabled()


def test_op_determinism_already_on_stays_on(determinism_off):
    tf.config.experimental.enable_op_determinism()
    with digits.op_determinism():
        assert config.is_op_determinism_enabled()
    assert config.is_op_determinism_enabled()


def test_the_cnn_trains_under_op_determinism_and_is_cached(tmp_path, monkeypatch, determinism_off):
    """Whichever entry point trains it first (a command, which enables op determinism, or a script), the same CNN."""
    seen = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: seen.append(config.is_op_determinism_enabled()))
    model, accuracy, _ = digits.trained_digits_cnn(str(tmp_path), epochs=1, verbose=False)
    assert seen == [True] and not config.is_op_determinism_enabled()
    assert (tmp_path / "digits_cnn_seed0_epochs1.keras").exists() and 0.0 <= accuracy <= 1.0
    again, cached_accuracy, _ = digits.trained_digits_cnn(str(tmp_path), epochs=1, verbose=False)
    assert seen == [True] and cached_accuracy == accuracy  # read from the cache, not trained again
