"""Multi-input and multi-output models: `output=` chooses what is explained, attributions come back per input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import set_random_weights
from pgig_tf import ANALYZERS, Patterns, create_analyzer, fit_patterns
from pgig_tf.core.noise import sample_noise

FAST = {
    "integrated_gradients": dict(steps=4),
    "pgig": dict(steps=4),
    "smoothgrad": dict(samples=3, seed=3),
    "smoothgrad_squared": dict(samples=3, seed=3),
    "vargrad": dict(samples=3, seed=3),
    "smoothgrad_ig": dict(steps=2, samples=2, seed=3),
    "expected_gradients": dict(samples=4, seed=3),
    "smooth_taylor": dict(samples=3, seed=3),
    "noise_baseline_ig": dict(steps=2, samples=2, seed=3),
    "random": dict(seed=3),
}
PATTERN_METHODS = ("pattern_net", "pattern_attribution", "pgig")


def trunk_layers():
    return [keras.layers.Dense(5, activation="relu", name="d1"), keras.layers.Dense(4, activation="relu", name="d2")]


def two_in_two_out():
    """Inputs a (4) and b (3), concatenated, a shared ReLU trunk, heads 'h1' (3 units) and 'h2' (2 units)."""
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    d1, d2 = trunk_layers()
    h = d2(d1(keras.layers.Concatenate(name="cat")([a, b])))
    model = keras.Model([a, b], [keras.layers.Dense(3, name="h1")(h), keras.layers.Dense(2, name="h2")(h)])
    return set_random_weights(model, 11)


def single_equivalent(model):
    """The same layers (same weights) on one input of 7 features, explaining only head 'h2'."""
    x = keras.Input((7,), name="x")
    h = model.get_layer("d2")(model.get_layer("d1")(x))
    return keras.Model(x, model.get_layer("h2")(h))


def inputs_with_equal_ranges(n, seed):
    """a, b whose every sample has min -1 and max 1 in each input: per-input and joint noise ranges agree."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.9, 0.9, (n, 4)).astype(np.float32)
    b = rng.uniform(-0.9, 0.9, (n, 3)).astype(np.float32)
    a[:, 0], a[:, 1], b[:, 0], b[:, 2] = -1.0, 1.0, 1.0, -1.0
    return a, b


@pytest.mark.parametrize("method", sorted(set(ANALYZERS) - {"random"}))
def test_two_inputs_and_a_chosen_head_equal_the_single_io_model(method):
    """Every method on (a, b) with output='h2' equals the same method on concat(a, b) of the h2-only model."""
    model = two_in_two_out()
    single = single_equivalent(model)
    a, b = inputs_with_equal_ranges(5, 0)
    x = np.concatenate([a, b], axis=1)
    kwargs, single_kwargs = dict(FAST.get(method, {})), dict(FAST.get(method, {}))
    if method in PATTERN_METHODS:
        patterns = fit_patterns(model, [a, b], verbose=False)
        kwargs["patterns"] = patterns
        single_kwargs["patterns"] = Patterns({k: v for k, v in patterns.items() if k != "h1"})
    multi_analyzer = create_analyzer(method, model, output="h2", **kwargs)
    single_analyzer = create_analyzer(method, single, **single_kwargs)
    if method == "expected_gradients":
        background_a, background_b = inputs_with_equal_ranges(6, 1)
        multi_analyzer.fit([background_a, background_b])
        single_analyzer.fit(np.concatenate([background_a, background_b], axis=1))
    targets = np.array([0, 1, 1, 0, 1])
    result = multi_analyzer.analyze([a, b], targets)
    expected = single_analyzer.analyze(x, targets)
    assert isinstance(result, list) and [r.shape for r in result] == [(5, 4), (5, 3)]
    np.testing.assert_allclose(np.concatenate(result, axis=1), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0  # a comparison of zeros would prove nothing


def test_output_by_index_equals_output_by_name_and_predict_gives_that_output():
    model = two_in_two_out()
    a, b = inputs_with_equal_ranges(3, 2)
    by_name = create_analyzer("integrated_gradients", model, output="h1", steps=3)
    by_index = create_analyzer("integrated_gradients", model, output=0, steps=3)
    for r1, r2 in zip(by_name.analyze([a, b], 2), by_index.analyze([a, b], 2)):
        np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(by_name.predict((a, b)), model.predict([a, b], verbose=0)[0], rtol=1e-6)
    other = create_analyzer("gradient", model, output="h2").predict([a, b])
    np.testing.assert_allclose(other, model.predict([a, b], verbose=0)[1], rtol=1e-6)


def test_structure_follows_the_input_tuple_and_dict():
    model = two_in_two_out()
    a, b = inputs_with_equal_ranges(2, 3)
    analyzer = create_analyzer("gradient", model, output="h2")
    as_list = analyzer.analyze([a, b], 1)
    as_tuple = analyzer.analyze((a, b), 1)
    as_dict = analyzer.analyze({"b": b, "a": a}, 1)
    assert isinstance(as_tuple, tuple) and isinstance(as_dict, dict) and sorted(as_dict) == ["a", "b"]
    np.testing.assert_array_equal(as_dict["a"], as_list[0])
    np.testing.assert_array_equal(as_tuple[1], as_list[1])


def test_integrated_gradients_with_one_baseline_per_input_is_exact_on_a_linear_model():
    """IG of f(a, b) = w·[a, b] + c is (x − x̄) ⊙ w per input (Eq. 1 with a constant gradient)."""
    a_in, b_in = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Dense(2, name="lin")(keras.layers.Concatenate()([a_in, b_in]))
    model = set_random_weights(keras.Model([a_in, b_in], out), 4)
    w = model.get_layer("lin").kernel.numpy()[:, 1]
    a, b = inputs_with_equal_ranges(3, 4)
    base_a, base_b = np.full(4, 0.5, np.float32), np.array([1.0, -2.0, 0.25], np.float32)
    result = create_analyzer("integrated_gradients", model, steps=3, baseline=[base_a, base_b]).analyze([a, b], 1)
    np.testing.assert_allclose(result[0], (a - base_a) * w[:4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result[1], (b - base_b) * w[4:], rtol=1e-5, atol=1e-6)
    by_name = create_analyzer("integrated_gradients", model, steps=3, baseline={"a": base_a, "b": base_b})
    np.testing.assert_allclose(by_name.analyze([a, b], 1)[1], result[1], rtol=1e-6)
    # a scalar baseline applies to every input
    zero = create_analyzer("integrated_gradients", model, steps=3, baseline=0.0).analyze([a, b], 1)
    np.testing.assert_allclose(zero[0], a * w[:4], rtol=1e-5, atol=1e-6)


def test_noise_scale_is_per_input():
    """sigma = noise_scale × (max − min) of each input: the same unit normals, scaled per segment."""
    x = np.concatenate([np.linspace(0, 2, 4)[None], np.linspace(-100, 100, 3)[None]], axis=1).astype(np.float32)
    args = (tf.constant(x), tf.constant(7, tf.int64), tf.constant([0]), tf.constant([2]), 3, 0.1)
    joint = sample_noise(*args).numpy()
    per_input = sample_noise(*args, segments=[4, 3]).numpy()
    unit = joint / (0.1 * 200.0)
    np.testing.assert_allclose(per_input[:, :4], unit[:, :4] * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(per_input[:, 4:], unit[:, 4:] * 0.1 * 200.0, rtol=1e-6)


def test_pattern_fitting_on_a_multi_output_model_matches_the_single_output_model():
    model = two_in_two_out()
    a, b = inputs_with_equal_ranges(40, 5)
    patterns = fit_patterns(model, [a, b], batch_size=16, verbose=False)
    single = fit_patterns(single_equivalent(model), np.concatenate([a, b], axis=1), batch_size=16, verbose=False)
    assert sorted(patterns) == ["d1", "d2", "h1", "h2"] and sorted(single) == ["d1", "d2", "h2"]
    for name in single:
        np.testing.assert_allclose(patterns[name], single[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["dataset_xy", "dataset_dict", "batches", "dict_arrays"])
def test_multi_input_data_forms_fit_the_same_patterns(form):
    model = two_in_two_out()
    a, b = inputs_with_equal_ranges(20, 6)
    y = np.zeros(20, np.float32)
    data = {
        "dataset_xy": tf.data.Dataset.from_tensor_slices(((a, b), y)).batch(8),
        "dataset_dict": tf.data.Dataset.from_tensor_slices({"a": a, "b": b}),
        "batches": [[a[:8], b[:8]], [a[8:], b[8:]]],
        "dict_arrays": {"a": a, "b": b},
    }[form]
    expected = fit_patterns(model, [a, b], verbose=False)
    fitted = fit_patterns(model, data, batch_size=8, verbose=False)
    for name in expected:
        np.testing.assert_allclose(fitted[name], expected[name], rtol=1e-5, atol=1e-6)
    assert fitted.num_samples == 20


def test_dict_outputs_are_chosen_by_key():
    x = keras.Input((3,), name="x")
    model = set_random_weights(
        keras.Model(x, {"score": keras.layers.Dense(2, name="s")(x), "aux": keras.layers.Dense(1, name="t")(x)}), 8
    )
    grad = create_analyzer("gradient", model, output="score").analyze(np.ones((1, 3), np.float32), 1)
    np.testing.assert_allclose(grad[0], model.get_layer("s").kernel.numpy()[:, 1], rtol=1e-6)
    by_layer = create_analyzer("gradient", model, output="s").analyze(np.ones((1, 3), np.float32), 1)
    np.testing.assert_array_equal(by_layer, grad)  # the layer's name works too
    with pytest.raises(ValueError, match=r"output 'nope' is not an output of model .*; its outputs are 'aux', 'score'"):
        create_analyzer("gradient", model, output="nope")


def test_random_control_returns_one_map_per_input():
    model = two_in_two_out()
    a, b = inputs_with_equal_ranges(2, 7)
    result = create_analyzer("random", model, output=1, seed=5).analyze({"a": a, "b": b})
    for i in range(2):  # one stream per sample, keyed by (seed, sample index): input a's values, then b's
        rng = np.random.default_rng([5, i])
        np.testing.assert_array_equal(result["a"][i], rng.random(4, dtype=np.float32))
        np.testing.assert_array_equal(result["b"][i], rng.random(3, dtype=np.float32))


def test_outputs_of_a_nested_model_are_named_by_their_layers():
    x = keras.Input((3,))
    inner = keras.Model(x, [keras.layers.Dense(2, name="p")(x), keras.layers.Dense(2, name="q")(x)], name="inner")
    outer_input = keras.Input((3,))
    model = set_random_weights(keras.Model(outer_input, inner(outer_input), name="outer"), 9)
    grad = create_analyzer("gradient", model, output="q").analyze(np.ones((1, 3), np.float32), 0)
    np.testing.assert_allclose(grad[0], model.get_layer("inner").get_layer("q").kernel.numpy()[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"output 'inner' is not an output of model 'outer'; its outputs are 'p', 'q'"):
        create_analyzer("gradient", model, output="inner")


def test_a_dict_of_arrays_in_any_key_order_fits_the_same_patterns():
    image, vector = keras.Input((4, 4, 1), name="img"), keras.Input((3,), name="vec")
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu", name="c")(image))
    h = keras.layers.Dense(3, activation="relu", name="d")(keras.layers.Concatenate()([h, vector]))
    model = set_random_weights(keras.Model([image, vector], keras.layers.Dense(2, name="out")(h)), 12)
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(16, 4, 4, 1)).astype(np.float32), rng.normal(size=(16, 3)).astype(np.float32)
    expected = fit_patterns(model, [a, b], verbose=False)
    reordered = fit_patterns(model, {"vec": b, "img": a}, verbose=False)  # keys not in input order
    for name in expected:
        np.testing.assert_array_equal(reordered[name], expected[name])
