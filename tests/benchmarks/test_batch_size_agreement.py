"""Maps at other batch sizes: the relative difference measured, the bound on models without max pooling, logits copies."""

import keras
import numpy as np
import pytest

from benchmarks.batch_size_agreement import agreement, main, relative_difference, without_softmax
from pgig_tf.analyzers import ANALYZERS
from pgig_tf.patterns.fitting import fit_patterns


def test_relative_difference_is_per_sample_over_its_largest_value():
    reference = np.array([[1.0, -2.0], [0.5, 0.25], [0.0, 0.0]])
    maps = np.array([[1.0, -1.5], [0.5, 0.3], [0.0, 0.0]])
    # sample 0: 0.5 / 2 = 0.25; sample 1: 0.05 / 0.5 = 0.1; sample 2: both zero
    assert relative_difference(maps, reference) == pytest.approx(0.25, rel=1e-12)
    assert relative_difference(reference, reference) == 0.0
    assert relative_difference(maps + np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1e-9]]), reference) == np.inf


def test_the_same_batch_size_gives_the_same_maps_for_the_seeded_background_and_pattern_methods(dense_model):
    """A seed, patterns and background reach the analyzers that use them: at the reference size, no difference."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=(30, 6)).astype(np.float32)
    patterns = fit_patterns(dense_model, data, verbose=False)
    methods = ["smoothgrad", "noise_baseline_ig", "expected_gradients", "pgig"]
    rows = agreement(dense_model, data[:4], methods, (64,), 64, patterns, data[4:])
    assert rows == {name: {64: 0.0} for name in methods}


def test_every_method_agrees_to_two_millionths_across_batch_sizes_without_max_pooling(dense_model):
    """The bound the user guide states for models without max pooling (batch sizes 1 and 7 against 64)."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 6)).astype(np.float32)
    patterns = fit_patterns(dense_model, data, verbose=False)
    methods = [name for name in ANALYZERS if name != "random"]
    rows = agreement(dense_model, data[:5], methods, (1, 7), 64, patterns, data[5:25])
    assert set(rows) == set(methods)
    worst = {name: max(row.values()) for name, row in rows.items()}
    assert max(worst.values()) <= 2e-6, worst


def test_without_softmax_outputs_the_logits_of_the_same_weights():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    logits = without_softmax(model)
    assert logits.layers[-1].activation is keras.activations.linear
    np.testing.assert_allclose(keras.ops.softmax(logits(x)).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
    assert model.layers[-1].activation is keras.activations.softmax  # the original is left as it was


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-sizes", "1,x"], "comma-separated integers"),
        (["--batch-sizes", "0"], "positive integers"),
        (["--reference-batch-size", "0"], "positive integers"),
        (["--images", "0"], "--images must be at least 1"),
        (["--methods", "nope"], "unknown methods nope"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--cache-dir", str(tmp_path), "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
