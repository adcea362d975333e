"""Bad inputs get errors that name the argument, the expected and the received value."""

import keras
import numpy as np
import pytest

from pgig_tf import Patterns, create_analyzer


@pytest.fixture
def analyzer(dense_model):
    return create_analyzer("integrated_gradients", dense_model, steps=3)


def test_wrong_shape(analyzer):
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\), got \(2, 5\)"):
        analyzer.analyze(np.zeros((2, 5), np.float32))


def test_missing_batch_axis_hints_at_it(analyzer):
    with pytest.raises(ValueError, match=r"got \(6,\) \(a single sample needs a batch axis"):
        analyzer.analyze(np.zeros(6, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(analyzer, bad):
    x = np.zeros((3, 6), np.float32)
    x[2, 4] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(1 values, in samples \[2\]\)"):
        analyzer.analyze(x)


def test_empty_batch(analyzer):
    with pytest.raises(ValueError, match="x is an empty batch"):
        analyzer.analyze(np.zeros((0, 6), np.float32))


def test_non_numeric_input(analyzer):
    with pytest.raises(TypeError, match="x must hold real numbers, got dtype"):
        analyzer.analyze(np.array([["a"] * 6]))


def test_integer_input_is_cast(analyzer):
    x = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(analyzer.analyze(x, 0), analyzer.analyze(x.astype(np.float32), 0))


@pytest.mark.parametrize(
    "selection,message",
    [
        (3, r"neuron_selection 3 is out of range: the model output has 3 units \(valid: 0..2\)"),
        (-1, r"neuron_selection -1 is out of range"),
        ([0, 1, 2], r"neuron_selection has 3 indices but x has 2 samples"),
        ("argmax", r"neuron_selection must be 'max_activation', an int or one int per sample"),
        ([0.5, 1.0], r"neuron_selection must be 'max_activation', an int or a 1-D array of ints"),
    ],
)
def test_bad_neuron_selection(analyzer, selection, message):
    with pytest.raises(ValueError, match=message):
        analyzer.analyze(np.zeros((2, 6), np.float32), neuron_selection=selection)


def test_missing_pattern(dense_model):
    patterns = Patterns({"d1": np.ones((6, 5), np.float32), "d2": np.ones((5, 4), np.float32)})
    with pytest.raises(ValueError, match=r"no pattern for 'd3' \(Dense\)"):
        create_analyzer("pgig", dense_model, patterns=patterns)


def test_misshaped_pattern(dense_model):
    patterns = {"d1": np.ones((6, 5), np.float32), "d2": np.ones((4, 5), np.float32), "d3": np.ones((4, 3), np.float32)}
    with pytest.raises(ValueError, match=r"'d2' \(Dense\): pattern \(4, 5\), kernel \(5, 4\)"):
        create_analyzer("pattern_attribution", dense_model, patterns=patterns)


def test_patterns_from_another_model(dense_model, conv_model):
    patterns = {l.name: np.ones(l.kernel.shape, np.float32) for l in dense_model.layers}
    with pytest.raises(ValueError, match=r"Patterns do not fit model 'conv_model'.*layers the model does not have: d1, d2, d3"):
        create_analyzer("pattern_net", conv_model, patterns=patterns)


def test_nan_pattern():
    with pytest.raises(ValueError, match="pattern for layer 'd' contains NaN or Inf"):
        Patterns({"d": np.array([[np.nan]], np.float32)})


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"steps": 0}, ValueError, r"steps must be a positive integer, got 0"),
        ({"steps": 2.5}, ValueError, r"steps must be a positive integer, got 2.5"),
        ({"batch_size": -1}, ValueError, r"batch_size must be a positive integer, got -1"),
        ({"baseline": np.zeros(5)}, ValueError, r"baseline of shape \(5,\) does not broadcast to one sample of shape \(6,\)"),
        ({"baseline": np.nan}, ValueError, r"baseline contains NaN or Inf"),
        ({"stepz": 3}, TypeError, r"Analyzer 'integrated_gradients' takes no argument stepz; it takes: steps, baseline"),
    ],
)
def test_bad_settings(dense_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        create_analyzer("integrated_gradients", dense_model, **kwargs)


def test_unknown_analyzer_lists_the_names(dense_model):
    with pytest.raises(ValueError, match=r"Unknown analyzer 'lrp'; choose one of: gradient, input_t_gradient"):
        create_analyzer("lrp", dense_model)


def test_unknown_rule(dense_model):
    with pytest.raises(ValueError, match=r"rule must be one of \['gradient', 'guided_backprop'"):
        create_analyzer("integrated_gradients", dense_model, rule="lrp")


def test_multi_output_model_is_refused_clearly():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)])
    with pytest.raises(ValueError, match="has 1 inputs and 2 outputs; only single-input, single-output"):
        create_analyzer("gradient", model)


def test_unbuilt_model_is_refused_clearly():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no defined input; build it first"):
        create_analyzer("gradient", model)
