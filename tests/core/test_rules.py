"""The rewritten graph: forward outputs equal the original model's; unsupported layers fail loudly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import set_random_weights
from pgig_tf import Patterns, create_analyzer
from pgig_tf.core.rules import make_rule


def nested_model():
    """A Functional model holding a nested Sequential block, with a standalone Activation('relu')."""
    block = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="b_conv"),
            keras.layers.Activation("relu", name="b_relu"),
            keras.layers.MaxPooling2D(name="b_pool"),
        ],
        name="block",
    )
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.ZeroPadding2D(1, name="pad")(inputs)
    h = keras.layers.Cropping2D(1, name="crop")(h)
    h = block(h)
    h = keras.layers.Dropout(0.5, name="drop")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(6, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    return set_random_weights(keras.Model(inputs, outputs), 3)


def patterns_for(model, seed=0):
    rng = np.random.default_rng(seed)
    names = {}

    def visit(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
                names[layer.name] = rng.normal(0, 1, tuple(layer.kernel.shape)).astype(np.float32)

    visit(model)
    return Patterns(names)


@pytest.mark.parametrize("rule", ["gradient", "guided_backprop", "pattern_attribution", "pattern_net"])
def test_forward_output_equals_the_original_model(rule):
    model = nested_model()
    x = tf.constant(np.random.default_rng(0).normal(0, 1, (5, 8, 8, 3)).astype(np.float32))
    rewritten = make_rule(rule, patterns=patterns_for(model)).forward(model, x)
    np.testing.assert_array_equal(rewritten.numpy(), model(x, training=False).numpy())


def test_pattern_rule_reaches_layers_inside_a_nested_model():
    model = nested_model()
    x = np.random.default_rng(1).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    patterns = patterns_for(model)
    base = create_analyzer("pattern_attribution", model, patterns=patterns).analyze(x, 0)
    changed = dict(patterns)
    changed["b_conv"] = changed["b_conv"] * 2.0  # only the nested conv's pattern differs
    other = create_analyzer("pattern_attribution", model, patterns=changed).analyze(x, 0)
    # the nested conv is the first kernel layer: its backward map is linear in its pattern
    np.testing.assert_allclose(other, 2.0 * base, rtol=1e-5, atol=1e-7)


def test_guided_rule_gates_the_standalone_activation_relu():
    model = nested_model()
    x = np.random.default_rng(2).normal(0, 1, (3, 8, 8, 3)).astype(np.float32)
    guided = create_analyzer("guided_backprop", model).analyze(x, 1)
    plain = create_analyzer("gradient", model).analyze(x, 1)
    assert not np.allclose(guided, plain)


class Scale(keras.layers.Layer):
    """A custom layer no rule knows."""

    def call(self, x):
        return 2.0 * x


def test_unsupported_layer_names_the_layer_and_class():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="d")(inputs)
    outputs = Scale(name="my_scale")(h)
    model = keras.Model(inputs, outputs)
    x = np.ones((2, 4), np.float32)
    assert create_analyzer("gradient", model).analyze(x, 0).shape == (2, 4)  # plain gradient works
    with pytest.raises(ValueError, match=r"Layer 'my_scale' \(Scale\) is not supported by the 'guided_backprop' rule"):
        create_analyzer("guided_backprop", model)
    with pytest.raises(ValueError, match=r"'my_scale' \(Scale\).*'pattern_attribution'"):
        create_analyzer("pattern_attribution", model, patterns={"d": np.ones((4, 3), np.float32)})


def test_pattern_fitting_rejects_an_unknown_layer_and_says_how_to_register_it():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d"), Scale(name="sc"), keras.layers.Dense(2, name="o")]
    )
    with pytest.raises(
        ValueError, match=r"'sc' \(Scale\).*pattern fitting.*pgig_tf\.register_layer\(Scale, \"linear\"\)"
    ):
        create_analyzer("pgig", model).fit(np.ones((4, 4), np.float32), verbose=False)


def test_conv1d_equals_the_same_conv2d():
    """Conv1D gets the same patterns and attributions as the equivalent height-1 Conv2D."""
    rng = np.random.default_rng(0)
    k1, b1 = rng.normal(0, 0.5, (3, 2, 4)).astype(np.float32), rng.normal(0, 0.5, 4).astype(np.float32)
    k2, b2 = rng.normal(0, 0.5, (5 * 4, 3)).astype(np.float32), rng.normal(0, 0.5, 3).astype(np.float32)
    one_d = keras.Sequential(
        [
            keras.Input((9, 2)),
            keras.layers.Conv1D(4, 3, strides=2, padding="same", activation="relu", name="c"),
            keras.layers.Flatten(name="f"),
            keras.layers.Dense(3, name="o"),
        ]
    )
    two_d = keras.Sequential(
        [
            keras.Input((1, 9, 2)),
            keras.layers.Conv2D(4, (1, 3), strides=(1, 2), padding="same", activation="relu", name="c"),
            keras.layers.Flatten(name="f"),
            keras.layers.Dense(3, name="o"),
        ]
    )
    one_d.set_weights([k1, b1, k2, b2])
    two_d.set_weights([k1[None], b1, k2, b2])
    data = rng.normal(0, 1, (40, 9, 2)).astype(np.float32)
    from pgig_tf import fit_patterns

    p1 = fit_patterns(one_d, data, verbose=False)
    p2 = fit_patterns(two_d, data[:, None], verbose=False)
    np.testing.assert_allclose(p1["c"], p2["c"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p1["o"], p2["o"], rtol=1e-4, atol=1e-6)
    a1 = create_analyzer("pgig", one_d, patterns=p1, steps=4).analyze(data[:3], 1)
    a2 = create_analyzer("pgig", two_d, patterns=p2, steps=4).analyze(data[:3, None], 1)
    np.testing.assert_allclose(a1, a2[:, 0], rtol=1e-4, atol=1e-6)
    assert np.abs(a1).max() > 0
