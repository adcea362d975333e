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


def test_rule_name_is_the_registered_name_of_a_rule_or_none():
    from pgig_tf.core.rules import GuidedBackpropRule, Rule, rule_name

    class Custom(Rule):
        name = "custom"

    assert rule_name("pattern_attribution") == "pattern_attribution"
    assert rule_name(GuidedBackpropRule) == "guided_backprop"
    assert rule_name(Custom) is None


def test_unsupported_layer_messages_name_the_class_to_register_and_why():
    """A Keras layer is named by its full import path, a user's class by its name; a ReLU subclass is told apart from a leaky ReLU."""

    class ClippedReLU(keras.layers.ReLU):
        def call(self, inputs):
            return tf.minimum(super().call(inputs), 1.0)

    cases = {
        keras.layers.LeakyReLU(name="leaky"): (
            f"pgig_tf.register_layer({keras.layers.LeakyReLU.__module__}.LeakyReLU, ",
            "no rule knows the class LeakyReLU",
        ),
        keras.layers.ReLU(negative_slope=0.1, name="slope"): (
            f"pgig_tf.register_layer({keras.layers.ReLU.__module__}.ReLU, ",
            "a ReLU with a threshold or a negative slope has no guided or pattern rule",
        ),
        ClippedReLU(name="clip"): (
            "pgig_tf.register_layer(ClippedReLU, ",
            "it overrides the call() of the supported Keras layer ReLU",
        ),
    }
    for layer, (registration, why) in cases.items():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="d"), layer])
        with pytest.raises(ValueError) as raised:
            create_analyzer("guided_backprop", model)
        assert registration in str(raised.value) and why in str(raised.value), str(raised.value)


def test_guided_backprop_through_a_relu_with_any_cap_opens_where_0_lt_z_lt_cap():
    """ReLU(max_value=3): the positive gradient passes where 0 < z < 3 (the same gate as ReLU6's, at another cap)."""
    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, name="h"),
                keras.layers.ReLU(max_value=3.0, name="g"),
                keras.layers.Dense(2, name="out"),
            ]
        ),
        5,
        scale=2.0,
    )
    x = np.random.default_rng(6).normal(0, 1.5, (16, 4)).astype(np.float32)
    w1, b1 = (np.asarray(v, np.float64) for v in model.get_layer("h").weights)
    w2 = np.asarray(model.get_layer("out").kernel, np.float64)
    z = x.astype(np.float64) @ w1 + b1
    is_open = (z > 0) & (z < 3)
    assert is_open.any() and (z >= 3).any() and (z <= 0).any()  # every region of the gate is reached
    expected = (np.maximum(w2[:, 1], 0) * is_open) @ w1.T
    ours = create_analyzer("guided_backprop", model).analyze(x, 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_pattern_rules_pass_a_zero_scale_channel_as_a_dead_unit():
    """Rescaling s = (0, 1, 2.5): PatternAttribution passes w p = 1 where s != 0 and 0 where s = 0, PatternNet 1/s (0 for 0)."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="d"),
            keras.layers.Rescaling([0.0, 1.0, 2.5], name="s"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    set_random_weights(model, 7)
    ones = Patterns({"d": np.ones((4, 3), np.float32), "out": np.ones((3, 1), np.float32)})
    x = np.random.default_rng(8).normal(0, 1, (2, 4)).astype(np.float32)
    w_d = np.asarray(model.get_layer("d").kernel, np.float64)
    w_out = np.asarray(model.get_layer("out").kernel, np.float64)[:, 0]
    attribution = make_rule("pattern_attribution", patterns=ones)
    net = make_rule("pattern_net", patterns=ones)
    for rule, expected in (
        (attribution, w_d @ (np.array([0.0, 1.0, 1.0]) * w_out)),  # (w ⊙ 1) at both kernels
        (net, np.ones((4, 3)) @ np.array([0.0, 1.0, 0.4])),  # p = 1 at both kernels
    ):
        v = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(v)
            out = tf.reduce_sum(rule.forward(model, v)[:, 0])
        np.testing.assert_allclose(tape.gradient(out, v).numpy(), np.tile(expected, (2, 1)), rtol=1e-5, atol=1e-6)
