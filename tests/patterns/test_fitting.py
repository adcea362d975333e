"""Patterns (Eq. 2) against the numpy reference, on Dense and Conv layers, and the fitting API."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from conftest import set_random_weights
from keras_to_reference import to_reference
from pgig_tf import Patterns, fit_patterns
from pgig_tf.patterns.fitting import relu_fed_layers


def assert_patterns_close(ours, expected, name):
    expected = np.asarray(expected)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(ours[name], expected, rtol=0, atol=1e-4 * scale, err_msg=name)


@pytest.mark.parametrize("kind", ["relu", "linear"])
@pytest.mark.parametrize("padding,strides,dilation", [("same", 1, 1), ("valid", 2, 1), ("same", 2, 1), ("valid", 1, 2)])
def test_conv_patterns_match_reference(kind, padding, strides, dilation):
    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((7, 7, 2)),
                keras.layers.Conv2D(3, 3, padding=padding, strides=strides, dilation_rate=dilation, name="c1"),
                keras.layers.ReLU(name="r1"),
                keras.layers.Conv2D(4, 2, activation="relu", name="c2"),
                keras.layers.Flatten(name="f"),
                keras.layers.Dense(3, name="out"),
            ]
        ),
        21,
        scale=0.4,
    )
    data = np.random.default_rng(0).normal(0.3, 1.0, (50, 7, 7, 2)).astype(np.float32)
    ours = fit_patterns(model, data, kind=kind, batch_size=16, verbose=False)
    specs = to_reference(model)
    expected = ref.compute_patterns(specs, data.astype(np.float64), kind=kind)
    for name, pattern in zip(["c1", "c2", "out"], expected):
        assert_patterns_close(ours, pattern, name)
    assert ours.kind == kind and ours.num_samples == 50


def test_dense_patterns_match_reference_with_dead_unit():
    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3, activation="relu", name="h"),
                keras.layers.Dense(2, name="o"),
            ]
        ),
        5,
    )
    kernel, bias = model.layers[0].get_weights()
    bias[1] = -100.0  # unit 1 is never active: its pattern must be exactly 0
    model.layers[0].set_weights([kernel, bias])
    data = np.random.default_rng(1).normal(0, 1, (300, 4)).astype(np.float32)
    ours = fit_patterns(model, data, verbose=False)
    expected = ref.compute_patterns(to_reference(model), data.astype(np.float64))
    assert_patterns_close(ours, expected[0], "h")
    assert_patterns_close(ours, expected[1], "o")
    assert np.all(ours["h"][:, 1] == 0.0)
    assert np.all(np.isfinite(ours["o"]))


def test_linear_estimator_is_cov_over_w_cov():
    """kind='linear': p = cov(x, y) / (w^T cov(x, y)) for every unit (direct numpy)."""
    model = set_random_weights(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]), 6)
    x = np.random.default_rng(2).normal(0, 1, (500, 3))
    w = np.asarray(model.layers[0].kernel, np.float64)
    y = x @ w
    cov = ((x - x.mean(0)).T @ (y - y.mean(0))) / len(x)
    expected = cov / np.sum(w * cov, axis=0)
    ours = fit_patterns(model, x.astype(np.float32), kind="linear", verbose=False)
    np.testing.assert_allclose(ours["d"], expected, rtol=1e-4)
    np.testing.assert_allclose(np.sum(w * ours["d"], axis=0), 1.0, rtol=1e-5)  # w^T p = 1


def test_data_forms_give_the_same_patterns(conv_model):
    data = np.random.default_rng(3).normal(0, 1, (30, 9, 9, 2)).astype(np.float32)
    from_array = fit_patterns(conv_model, data, batch_size=8, verbose=False)
    labels = np.zeros(30)
    from_xy_dataset = fit_patterns(conv_model, tf.data.Dataset.from_tensor_slices((data, labels)), verbose=False)
    from_batched = fit_patterns(conv_model, tf.data.Dataset.from_tensor_slices(data).batch(7), verbose=False)
    from_list = fit_patterns(conv_model, [data[:10], data[10:]], verbose=False)
    for other in (from_xy_dataset, from_batched, from_list):
        for name in from_array:
            np.testing.assert_allclose(other[name], from_array[name], rtol=1e-4, atol=1e-6)


def test_accumulation_keeps_precision_over_a_million_samples():
    """1e6 samples in 500 batches match a float64 computation over all of them."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu", name="d")])
    model.layers[0].set_weights(
        [np.array([[1.0, -0.5], [0.5, 1.0], [-0.3, 0.8]], np.float32), np.array([0.2, -0.1], np.float32)]
    )
    rng = np.random.default_rng(0)
    mixing = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]], np.float32)
    batches = [(rng.normal(0, 1, (2000, 3)) @ mixing + 2.0).astype(np.float32) for _ in range(500)]
    ours = fit_patterns(model, iter(batches), verbose=False)
    assert ours.num_samples == 1_000_000
    expected = ref.patterns_dense(
        np.concatenate(batches).astype(np.float64),
        np.asarray(model.layers[0].kernel, np.float64),
        np.asarray(model.layers[0].bias, np.float64),
        kind="relu",
    )
    np.testing.assert_allclose(ours["d"], expected, rtol=2e-4, atol=1e-6)


def test_relu_detection(conv_model):
    assert relu_fed_layers(conv_model) == {"c1", "c2"}  # c1 via a ReLU layer, c2 fused; out is linear


def test_save_and_load_round_trip(tmp_path, conv_model):
    data = np.random.default_rng(3).normal(0, 1, (20, 9, 9, 2)).astype(np.float32)
    patterns = fit_patterns(conv_model, data, verbose=False)
    path = tmp_path / "p.npz"
    patterns.save(path)
    loaded = Patterns.load(path)
    assert set(loaded) == set(patterns) and loaded.kind == "relu" and loaded.num_samples == 20
    for name in patterns:
        np.testing.assert_array_equal(loaded[name], patterns[name])


def test_fit_errors(conv_model):
    with pytest.raises(ValueError, match="kind must be one of"):
        fit_patterns(conv_model, np.zeros((2, 9, 9, 2)), kind="two")
    with pytest.raises(ValueError, match=r"data batch must have shape \(batch, 9, 9, 2\), got \(2, 8, 8, 2\)"):
        fit_patterns(conv_model, np.zeros((2, 8, 8, 2), np.float32), verbose=False)
    with pytest.raises(ValueError, match="at least one sample"):
        fit_patterns(conv_model, np.zeros((0, 9, 9, 2), np.float32), verbose=False)
    with pytest.raises(ValueError, match="data is empty"):
        fit_patterns(conv_model, [], verbose=False)


def test_fitting_resumes_from_a_checkpoint(tmp_path, conv_model):
    data = np.random.default_rng(5).normal(0, 1, (50, 9, 9, 2)).astype(np.float32)
    path = tmp_path / "fit.npz"

    def killed_after(count):
        for index, start in enumerate(range(0, 50, 5)):
            if index == count:
                raise KeyboardInterrupt("killed")
            yield data[start : start + 5]

    with pytest.raises(KeyboardInterrupt):
        fit_patterns(conv_model, killed_after(7), verbose=False, checkpoint=path, checkpoint_every=3)
    resumed = fit_patterns(
        conv_model, (data[i : i + 5] for i in range(0, 50, 5)), verbose=False, checkpoint=path, checkpoint_every=3
    )
    whole = fit_patterns(conv_model, data, batch_size=5, verbose=False)
    assert resumed.num_samples == 50
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="belongs to another model or kind"):
        fit_patterns(conv_model, data, kind="linear", verbose=False, checkpoint=path)


def test_data_that_overflows_float32_is_named_not_reported_as_a_nan_pattern(dense_model):
    data = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32) * np.float32(1e30)
    with pytest.raises(
        ValueError, match=r"fitting patterns on this data overflowed at layer 'd1'.*\['sum_xy'\].*scale"
    ):
        fit_patterns(dense_model, data, verbose=False)
    fit_patterns(dense_model, data / np.float32(1e30), verbose=False)  # the same data, scaled, fits


def test_kernel_layers_of_nested_models_need_unique_names():
    inner = [
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu", name="d")], name=n) for n in "ab"
    ]
    model = keras.Sequential([keras.Input((4,)), *inner, keras.layers.Dense(2, name="out")])
    data = np.random.default_rng(0).normal(0, 1, (8, 4)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"Layer names must be unique across nested models to key patterns; repeated: \['d'\]"
    ):
        fit_patterns(model, data, verbose=False)


def test_verbose_fit_reports_its_batches(capsys):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="h"), keras.layers.Dense(2, name="out")]
    )
    data = np.random.default_rng(1).normal(0, 1, (10, 4)).astype(np.float32)
    fit_patterns(model, data, batch_size=4, verbose=True)
    assert "fit_patterns: batch 3/3" in capsys.readouterr().out
    fit_patterns(model, data, batch_size=4, verbose=False)
    assert capsys.readouterr().out == ""


def test_only_a_linear_kernel_layer_takes_the_relu_after_it_as_its_gate():
    from pgig_tf.patterns.fitting import relu_gates

    layers = [
        keras.layers.Dense(3, name="lin"),
        keras.layers.ReLU(),
        keras.layers.Dense(3, activation="tanh", name="t"),
    ]
    model = keras.Sequential([keras.Input((4,)), *layers, keras.layers.ReLU(), keras.layers.Dense(2, name="out")])
    assert relu_gates(model) == {"lin": ((), float("inf"))}  # tanh's output, not its input, meets the ReLU


def test_a_unit_whose_output_never_varies_gets_a_zero_pattern():
    """A live unit with zero weights (y = relu(b) > 0 constant): cov(x, y) = 0 and w^T cov = 0, so p = 0, not 0/0."""
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="h"), keras.layers.Dense(2, name="out")]
    )
    set_random_weights(model, 2)
    kernel, bias = model.get_layer("h").get_weights()
    kernel[:, 1], bias[1] = 0.0, 0.7
    model.get_layer("h").set_weights([kernel, bias])
    data = np.random.default_rng(3).normal(0, 1, (64, 4)).astype(np.float32)
    pattern = fit_patterns(model, data, verbose=False)["h"]
    assert np.all(np.isfinite(pattern))
    np.testing.assert_array_equal(pattern[:, 1], 0.0)
    assert np.abs(pattern[:, [0, 2]]).max() > 0
