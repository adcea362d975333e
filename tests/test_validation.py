"""Bad inputs get errors that name the argument, the expected and the received value."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from pgig_tf import Patterns, create_analyzer
from pgig_tf.validation import SoftmaxOutputWarning


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
    with pytest.raises(
        ValueError, match=r"Patterns do not fit model 'conv_model'.*layers the model does not have: d1, d2, d3"
    ):
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
        (
            {"baseline": np.zeros(5)},
            ValueError,
            r"baseline of shape \(5,\) does not broadcast to one sample of shape \(6,\)",
        ),
        ({"baseline": np.nan}, ValueError, r"baseline contains NaN or Inf"),
        (
            {"stepz": 3},
            TypeError,
            r"Analyzer 'integrated_gradients' takes no argument stepz; it takes: steps, baseline",
        ),
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


def test_multi_output_model_without_output_lists_the_outputs():
    inputs = keras.Input((3,))
    model = keras.Model(
        inputs, [keras.layers.Dense(2, name="a")(inputs), keras.layers.Dense(1, name="b")(inputs)], name="two_heads"
    )
    with pytest.raises(
        ValueError,
        match=r"Model 'two_heads' has 2 outputs \('a', 'b'\); choose the one to explain "
        r"with output=<name> or output=<index 0..1>",
    ):
        create_analyzer("gradient", model)


def test_unbuilt_model_is_refused_clearly():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no defined input; build it first"):
        create_analyzer("gradient", model)


# --- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32])
def test_other_dtypes_are_cast_to_the_model_dtype(analyzer, dtype):
    x = (np.random.default_rng(0).normal(0, 2, (2, 6))).astype(dtype)
    np.testing.assert_array_equal(analyzer.analyze(x, 1), analyzer.analyze(x.astype(np.float32), 1))


def test_values_beyond_the_model_dtype_are_refused(analyzer):
    x = np.zeros((2, 6))
    x[1, 3] = 1e300
    with pytest.raises(
        ValueError,
        match=r"x has values beyond the range of the model's float32 inputs "
        r"\(largest \|value\| 1e\+300, dtype float64\); rescale the input",
    ):
        analyzer.analyze(x)


@pytest.mark.parametrize("x,dtype", [(np.ones((1, 6), bool), "bool"), (np.ones((1, 6), complex), "complex128")])
def test_boolean_and_complex_inputs_are_refused(analyzer, x, dtype):
    with pytest.raises(TypeError, match=f"x must hold real numbers, got dtype {dtype}"):
        analyzer.analyze(x)


# --- patterns and fit ------------------------------------------------------------------------------


def test_pattern_analyzer_without_patterns(dense_model):
    with pytest.raises(ValueError, match=r"PGIGAnalyzer needs patterns: call analyzer.fit\(data\) or pass patterns="):
        create_analyzer("pgig", dense_model).analyze(np.zeros((1, 6), np.float32))


def test_fit_on_wrong_shaped_data(dense_model):
    with pytest.raises(ValueError, match=r"data batch must have shape \(batch, 6\), got \(4, 5\)"):
        create_analyzer("pgig", dense_model).fit(np.zeros((4, 5), np.float32), verbose=False)
    # a method with nothing to fit still checks an array it is given
    with pytest.raises(ValueError, match=r"data must have shape \(batch, 6\), got \(4, 5\)"):
        create_analyzer("integrated_gradients", dense_model).fit(np.zeros((4, 5), np.float32))


@pytest.mark.parametrize(
    "method,message",
    [
        ("pgig", r"data is empty: it must hold at least one sample to fit patterns on, got none"),
        ("expected_gradients", r"data is empty: Expected Gradients needs background samples, got none"),
    ],
)
def test_fit_on_an_empty_dataset(dense_model, method, message):
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 6), np.float32)).batch(4)
    with pytest.raises(ValueError, match=message):
        create_analyzer(method, dense_model).fit(empty, verbose=False)


def test_fit_on_an_empty_array(dense_model):
    with pytest.raises(ValueError, match=r"data must hold at least one sample, got an array of shape \(0, 6\)"):
        create_analyzer("pattern_attribution", dense_model).fit(np.zeros((0, 6), np.float32), verbose=False)


# --- softmax outputs and non-finite results -----------------------------------------------------------


def softmax_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="h")(inputs)
    return keras.Model(
        inputs,
        [
            keras.layers.Dense(2, activation="softmax", name="probs")(hidden),
            keras.layers.Dense(2, name="logits")(hidden),
        ],
    )


@pytest.mark.parametrize("method", ["gradient", "input_t_gradient", "guided_backprop", "smoothgrad", "vargrad"])
def test_local_gradient_methods_warn_on_a_softmax_output(method):
    with pytest.warns(
        SoftmaxOutputWarning,
        match=r"explains the output of 'probs', a softmax: its gradients "
        r"saturate .* rebuild the last layer with activation=None",
    ):
        create_analyzer(method, softmax_model(), output="probs")


@pytest.mark.parametrize(
    "method,output", [("integrated_gradients", "probs"), ("expected_gradients", "probs"), ("gradient", "logits")]
)
def test_no_softmax_warning_for_path_methods_or_logits(method, output):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SoftmaxOutputWarning)
        create_analyzer(method, softmax_model(), output=output)


def test_softmax_warning_can_be_silenced():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SoftmaxOutputWarning)
        warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
        create_analyzer("gradient", softmax_model(), output="probs")


def test_an_overflowing_model_raises_instead_of_returning_nan():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="exponential", kernel_initializer="ones")(inputs))
    analyzer = create_analyzer("gradient", model)
    with pytest.raises(
        ValueError,
        match=r"GradientAnalyzer's attributions of samples \[1\] contain NaN or Inf "
        r"\(1 values\): the model's output or gradient overflowed",
    ):
        analyzer.analyze(np.array([[0.0], [100.0]], np.float32))


# --- output= and multi-input structure --------------------------------------------------------------


@pytest.mark.parametrize(
    "output,error,message",
    [
        ("probz", ValueError, r"output 'probz' is not an output of model '.*'; its outputs are 'probs', 'logits'"),
        (2, ValueError, r"output index 2 is out of range: model '.*' has 2 outputs \(valid: 0..1, or a name: "),
        (1.0, TypeError, r"output must be an output's name \(str\) or index \(int\), got float 1.0"),
        (True, TypeError, r"output must be an output's name \(str\) or index \(int\), got bool True"),
    ],
)
def test_bad_output(output, error, message):
    with pytest.raises(error, match=message):
        create_analyzer("integrated_gradients", softmax_model(), output=output)


@pytest.fixture
def two_inputs():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    return keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])), name="two_inputs")


@pytest.mark.parametrize(
    "x,error,message",
    [
        (
            np.zeros((2, 5)),
            TypeError,
            r"x must be a list or tuple of 2 arrays \(inputs 'a', 'b'\) or a dict by input name, got ndarray",
        ),
        ([np.zeros((2, 2))], ValueError, r"x must hold 2 arrays \(inputs 'a', 'b'\), got 1"),
        (
            {"a": np.zeros((2, 2)), "c": np.zeros((2, 3))},
            ValueError,
            r"x must be a dict with one entry per model input \('a', 'b'\), got keys \['a', 'c'\] \(missing \['b'\]\) "
            r"\(unknown \['c'\]\)",
        ),
        (
            [np.zeros((2, 2)), np.zeros((2, 4))],
            ValueError,
            r"x\[1\] \(input 'b'\) must have shape \(batch, 3\), got \(2, 4\)",
        ),
        (
            [np.zeros((2, 2)), np.zeros((3, 3))],
            ValueError,
            r"x's inputs must have the same number of samples, got 2 in x\[0\] \(input 'a'\), 3 in x\[1\] \(input 'b'\)",
        ),
        ([np.zeros((2, 2)), np.full((2, 3), np.nan)], ValueError, r"x\[1\] \(input 'b'\) contains NaN or Inf"),
    ],
)
def test_multi_input_structure_errors(two_inputs, x, error, message):
    with pytest.raises(error, match=message):
        create_analyzer("gradient", two_inputs).analyze(x, 0)


def test_multi_input_baseline_errors(two_inputs):
    with pytest.raises(ValueError, match=r"baseline must hold 2 arrays \(inputs 'a', 'b'\), got 3"):
        create_analyzer("integrated_gradients", two_inputs, baseline=[0.0, 0.0, 0.0])
    with pytest.raises(
        ValueError,
        match=r"baseline\[1\] \(input 'b'\) of shape \(2,\) does not broadcast to one "
        r"sample of shape \(3,\)",
    ):
        create_analyzer("integrated_gradients", two_inputs, baseline=[0.0, np.zeros(2)])


def test_multi_input_models_need_fixed_shapes():
    a, b = keras.Input((None, 2), name="a"), keras.Input((3,), name="b")
    pooled = keras.layers.GlobalAveragePooling1D()(a)
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([pooled, b])))
    with pytest.raises(
        ValueError,
        match=r"input\(s\) \['a'\] have an unknown size \(\(None, None, 2\)\); "
        r"multi-input models need fixed input shapes",
    ):
        create_analyzer("gradient", model)


# --- baselines broadcast one way only, and what cannot be a baseline is named ----------------------


@pytest.mark.parametrize("shape", [(5,), (8,), (8, 8, 3), (2, 8, 8, 1)])
def test_a_baseline_that_would_enlarge_a_sample_is_refused(shape):
    import keras

    from pgig_tf import create_analyzer

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match=r"baseline .* one sample (of shape )?\(8, 8, 1\)"):
        create_analyzer("integrated_gradients", model, baseline=np.zeros(shape))


@pytest.mark.parametrize("shape", [(), (1,), (8, 1), (1, 8, 1), (8, 8, 1)])
def test_a_baseline_that_broadcasts_to_one_sample_is_taken(shape):
    import keras

    from pgig_tf import create_analyzer

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    analyzer = create_analyzer("integrated_gradients", model, baseline=np.full(shape, 0.5), steps=2)
    np.testing.assert_array_equal(np.broadcast_to(analyzer.baseline, (8, 8, 1)), 0.5)


def test_free_size_axes_take_only_a_baseline_of_size_one():
    import keras

    from pgig_tf import create_analyzer

    model = keras.Sequential(
        [
            keras.Input((None, None, 2)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    create_analyzer("integrated_gradients", model, baseline=np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=r"axes of free size take only 1"):
        create_analyzer("integrated_gradients", model, baseline=np.zeros((8, 8, 2)))


@pytest.mark.parametrize("baseline, kind", [(None, "NoneType"), ("zero", "str"), ({"a": 1}, "dict")])
def test_what_cannot_be_a_baseline_is_named(dense_model, baseline, kind):
    from pgig_tf import create_analyzer

    with pytest.raises(
        TypeError,
        match=rf"baseline must be a number or an array that broadcasts to one sample "
        rf"\(6,\), got {kind}",
    ):
        create_analyzer("integrated_gradients", dense_model, baseline=baseline)


def test_none_for_x_or_model_is_a_type_error(dense_model):
    from pgig_tf import create_analyzer

    with pytest.raises(TypeError, match=r"x must be a numeric array \(or a tf.data.Dataset to stream\), got None"):
        create_analyzer("gradient", dense_model).analyze(None)
    with pytest.raises(TypeError, match=r"model must be a Keras model \(keras.Model\), got NoneType"):
        create_analyzer("gradient", None)


def test_a_scalar_tensor_selects_like_an_int(dense_model, rng):
    import tensorflow as tf

    from pgig_tf import create_analyzer

    x = rng.normal(size=(3, 6)).astype(np.float32)
    analyzer = create_analyzer("gradient", dense_model)
    np.testing.assert_array_equal(analyzer.analyze(x, tf.constant(2)), analyzer.analyze(x, 2))
    np.testing.assert_array_equal(analyzer.analyze(x, np.int64(1)), analyzer.analyze(x, 1))


def test_nan_weights_are_named_as_the_cause(dense_model, rng):
    from pgig_tf import create_analyzer

    weights = dense_model.get_weights()
    weights[2] = np.full_like(weights[2], np.nan)  # d2's kernel
    dense_model.set_weights(weights)
    with pytest.raises(ValueError, match=r"because the model's weights do: dense_model/d2/kernel hold NaN or Inf"):
        create_analyzer("gradient", dense_model).analyze(rng.normal(size=(2, 6)).astype(np.float32), 0)
