"""Every analyzer against the independent numpy reference, and the properties the papers state."""

import keras
import numpy as np
import pytest

import numpy_reference as ref
from conftest import set_random_weights
from keras_to_reference import reference_patterns, to_reference
from pgig_tf import Patterns, create_analyzer, fit_patterns

PATTERN_METHODS = ("pattern_net", "pattern_attribution", "pgig")


def random_patterns(model, seed):
    rng = np.random.default_rng(seed)
    return Patterns(
        {
            layer.name: rng.normal(0.0, 1.0, tuple(layer.kernel.shape)).astype(np.float32)
            for layer in model.layers
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
        }
    )


def reference_method(name, specs, x, targets, ref_patterns, steps, baseline):
    if name == "gradient":
        return ref.gradient(specs, x, targets)
    if name == "input_t_gradient":
        return ref.input_times_gradient(specs, x, targets)
    if name == "guided_backprop":
        return ref.guided_backprop(specs, x, targets)
    if name == "integrated_gradients":
        return ref.integrated_gradients(specs, x, targets, baseline=baseline, steps=steps)
    if name == "pattern_net":
        return ref.pattern_net(specs, x, targets, ref_patterns)
    if name == "pattern_attribution":
        return ref.pattern_attribution(specs, x, targets, ref_patterns)
    if name == "pgig":
        return ref.pgig(specs, x, targets, ref_patterns, baseline=baseline, steps=steps)
    raise KeyError(name)


def image_model(padding, strides, pool, softmax):
    """Conv (+ReLU layer) -> Conv(relu, strides) -> pool -> Flatten -> Dense [-> Softmax]."""
    layers = [
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(3, 3, padding=padding, name="c1"),
        keras.layers.ReLU(name="r1"),
        keras.layers.Conv2D(4, 3, strides=strides, padding=padding, dilation_rate=1, activation="relu", name="c2"),
        pool,
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(5, name="out"),
    ]
    if softmax:
        layers.append(keras.layers.Softmax(name="softmax"))
    return set_random_weights(keras.Sequential(layers), 7)


MODELS = {
    "dense": lambda: set_random_weights(
        keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(5, activation="relu", name="d1"),
                keras.layers.Dense(4, activation="relu", name="d2"),
                keras.layers.Dense(3, name="d3"),
            ]
        ),
        0,
    ),
    "conv_same_maxpool": lambda: image_model("same", 2, keras.layers.MaxPooling2D(2, name="p"), False),
    "conv_valid_avgpool": lambda: image_model("valid", 1, keras.layers.AveragePooling2D(2, name="p"), False),
    "conv_same_softmax": lambda: image_model("same", 1, keras.layers.MaxPooling2D(2, padding="same", name="p"), True),
    "dilated": lambda: set_random_weights(
        keras.Sequential(
            [
                keras.Input((9, 9, 1)),
                keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same", activation="relu", name="c"),
                keras.layers.Flatten(name="f"),
                keras.layers.Dense(3, name="o"),
            ]
        ),
        3,
    ),
}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize(
    "method",
    [
        "gradient",
        "input_t_gradient",
        "guided_backprop",
        "integrated_gradients",
        "pattern_net",
        "pattern_attribution",
        "pgig",
    ],
)
def test_matches_numpy_reference(model_name, method):
    model = MODELS[model_name]()
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (4,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    targets = np.array([0, 2, 1, 2])
    baseline = rng.normal(0, 0.3, x.shape[1:]).astype(np.float32)
    kwargs = {"batch_size": 7}  # a chunk boundary that splits samples' paths
    if method in ("integrated_gradients", "pgig"):
        kwargs.update(steps=6, baseline=baseline)
    patterns = None
    if method in PATTERN_METHODS:
        patterns = random_patterns(model, 11)
        kwargs["patterns"] = patterns
    ours = create_analyzer(method, model, **kwargs).analyze(x, neuron_selection=targets)
    specs = to_reference(model)
    ref_patterns = reference_patterns(model, specs, patterns) if patterns else None
    expected = reference_method(method, specs, x.astype(np.float64), targets, ref_patterns, 6, baseline)
    assert ours.shape == x.shape and ours.dtype == np.float32
    scale = max(np.abs(expected).max(), 1e-6)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5 * scale)
    assert np.abs(expected).max() > 0  # the comparison is not between two zero maps


def test_ig_completeness_improves_with_steps(conv_model):
    x = np.random.default_rng(2).normal(0, 1, (3, 9, 9, 2)).astype(np.float32)
    out = conv_model.predict(x, verbose=0)
    baseline_out = conv_model.predict(np.zeros_like(x), verbose=0)
    gaps = []
    for steps in (2, 16, 256):
        a = create_analyzer("integrated_gradients", conv_model, steps=steps).analyze(x, neuron_selection=1)
        gaps.append(np.abs(a.reshape(3, -1).sum(1) - (out[:, 1] - baseline_out[:, 1])).max())
    assert gaps[2] < gaps[0] / 20
    assert gaps[2] < 2e-2 * np.abs(out[:, 1] - baseline_out[:, 1]).max()


def test_pgig_is_pattern_times_ig_on_a_linear_model():
    """§4.1: for f(x) = w^T x + b, PGIG_i = p_i * IG_i."""
    model = set_random_weights(keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, name="lin")]), 4)
    p = np.random.default_rng(9).normal(0, 1, (5, 1)).astype(np.float32)
    x = np.random.default_rng(8).normal(0, 1, (6, 5)).astype(np.float32)
    ig = create_analyzer("integrated_gradients", model, steps=3, baseline=0.5).analyze(x, 0)
    pgig = create_analyzer("pgig", model, patterns={"lin": p}, steps=3, baseline=0.5).analyze(x, 0)
    np.testing.assert_allclose(pgig, p[:, 0] * ig, rtol=1e-5, atol=1e-6)
    assert np.abs(pgig).min() > 0


def test_pattern_attribution_with_unit_patterns_is_output_times_gradient(dense_model):
    x = np.random.default_rng(3).normal(0, 1, (5, 6)).astype(np.float32)
    ones = Patterns({l.name: np.ones(l.kernel.shape, np.float32) for l in dense_model.layers})
    pa = create_analyzer("pattern_attribution", dense_model, patterns=ones).analyze(x, 2)
    grad = create_analyzer("gradient", dense_model).analyze(x, 2)
    out = dense_model.predict(x, verbose=0)[:, 2]
    np.testing.assert_allclose(pa, out[:, None] * grad, rtol=1e-5, atol=1e-6)
    assert np.abs(pa).max() > 0


def test_pattern_net_with_kernel_as_pattern_is_output_times_gradient(dense_model):
    x = np.random.default_rng(3).normal(0, 1, (5, 6)).astype(np.float32)
    kernels = Patterns({l.name: np.asarray(l.kernel) for l in dense_model.layers})
    pn = create_analyzer("pattern_net", dense_model, patterns=kernels).analyze(x, 1)
    grad = create_analyzer("gradient", dense_model).analyze(x, 1)
    out = dense_model.predict(x, verbose=0)[:, 1]
    np.testing.assert_allclose(pn, out[:, None] * grad, rtol=1e-5, atol=1e-6)


def test_max_activation_selects_the_argmax(dense_model):
    x = np.random.default_rng(6).normal(0, 1, (8, 6)).astype(np.float32)
    argmax = dense_model.predict(x, verbose=0).argmax(1)
    analyzer = create_analyzer("gradient", dense_model)
    np.testing.assert_array_equal(analyzer.analyze(x), analyzer.analyze(x, neuron_selection=argmax))
    assert len(set(argmax.tolist())) > 1  # the samples do pick different outputs


def test_softmax_output_is_explained_through_the_softmax():
    """The paper explains post-softmax probabilities: the gradient must include the softmax Jacobian."""
    logits = set_random_weights(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")]), 2)
    probs = keras.Sequential([logits, keras.layers.Softmax()])
    x = np.random.default_rng(0).normal(0, 1, (2, 4)).astype(np.float32)
    g = create_analyzer("gradient", probs).analyze(x, 0)
    w = np.asarray(logits.layers[0].kernel)
    p = probs.predict(x, verbose=0)
    expected = p[:, :1] * (w[:, 0][None] - p @ w.T)  # d softmax_0 / dx = p0 (w0 - sum_k p_k w_k)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_second_call_does_not_retrace(conv_model):
    x = np.random.default_rng(0).normal(0, 1, (3, 9, 9, 2)).astype(np.float32)
    analyzer = create_analyzer("integrated_gradients", conv_model, steps=5, batch_size=4)
    first = analyzer.analyze(x)
    assert analyzer.tracing_count == 1
    again = analyzer.analyze(x)
    analyzer.analyze(x[:2])  # another batch size: same trace (the batch axis is unknown)
    assert analyzer.tracing_count == 1
    np.testing.assert_array_equal(first, again)


def test_results_do_not_depend_on_batch_size(conv_model):
    x = np.random.default_rng(0).normal(0, 1, (3, 9, 9, 2)).astype(np.float32)
    a = create_analyzer("integrated_gradients", conv_model, steps=7, batch_size=1).analyze(x, 0)
    b = create_analyzer("integrated_gradients", conv_model, steps=7, batch_size=64).analyze(x, 0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", PATTERN_METHODS)
def test_pattern_analyzers_fit_their_own_patterns(conv_model, method):
    data = np.random.default_rng(4).normal(0, 1, (40, 9, 9, 2)).astype(np.float32)
    x = data[:3]
    analyzer = create_analyzer(method, conv_model)
    with pytest.raises(ValueError, match="needs patterns"):
        analyzer.analyze(x)
    fitted = analyzer.fit(data, verbose=False).analyze(x)
    direct = create_analyzer(method, conv_model, patterns=fit_patterns(conv_model, data, verbose=False)).analyze(x)
    np.testing.assert_array_equal(fitted, direct)
    assert np.abs(fitted).max() > 0
