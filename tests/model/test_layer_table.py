"""Every layer of the user guide's supported-layers table through the gradient, guided and PatternAttribution rules.

Each table entry names the layers a case below runs; `test_every_table_entry_runs_in_a_case`
parses the table, so it cannot list a layer that no case runs. The references are built here
from Keras' own layers, with no pgig_tf code: the plain gradient by tf.GradientTape; Guided
Backprop with ReLU gates that pass relu(dy) where 0 < x < cap; PatternAttribution with each
kernel w replaced by w ⊙ p in the backward pass only (forward values, and so ReLU gates and
max routing, stay the model's) and per-channel scalings passed with the identity
(docs/methods.md, docs/user-guide.md).
"""

import math
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as kl
from keras.src.ops import numpy as numpy_ops

from pgig_tf import Patterns
from pgig_tf.core.rules import make_rule
from pgig_tf.model import layer_kinds

RULES = ("gradient", "guided_backprop", "pattern_attribution")
TARGET = 1
USER_GUIDE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"

KERNELS = (kl.Dense, kl.Conv1D, kl.Conv2D, kl.Conv3D, kl.DepthwiseConv1D, kl.DepthwiseConv2D)
SEPARABLE = (kl.SeparableConv1D, kl.SeparableConv2D)
SCALES = (kl.BatchNormalization, kl.Rescaling, kl.Normalization)
CAPS = {keras.activations.relu: math.inf, keras.activations.relu6: 6.0}


# --- the cases: a graph of layers, run as a Keras model and, with other layer calls, as the reference


class Case:
    """A graph `graph(apply, x)` over layers made once; `apply(layer, tensor)` calls a layer.

    `flags` name what the case's model has besides its leaf layers: nested Sequential or
    Functional models, a layer from outside Keras, or (given) that it is saved and loaded back.
    """

    def __init__(self, input_shape, graph, scale=1.0, saved=False):
        self.input_shape, self.graph, self.scale = input_shape, graph, scale
        inputs = keras.Input(input_shape)
        self.model = keras.Model(inputs, graph(lambda layer, t: layer(t), inputs))
        nested = [op for op in self.model.operations if isinstance(op, keras.Model)]
        self.flags = {"keras file"} if saved else set()
        if any(isinstance(m, keras.Sequential) for m in nested):
            self.flags.add("nested Sequential")
        if any(not isinstance(m, keras.Sequential) for m in nested):
            self.flags.add("nested Functional")
        if any(not type(op).__module__.startswith("keras.") for op in leaves(self.model)):
            self.flags.add("unknown layer")


def chain(*layers):
    """The graph layers[0] -> ... -> Flatten -> Dense(3)."""
    layers = list(layers) + [kl.Flatten(), kl.Dense(3)]

    def graph(apply, x):
        for layer in layers:
            x = apply(layer, x)
        return x

    return graph


def branches(trunk, heads):
    """trunk, then each head (a function of apply and the trunk's output), flattened, concatenated, Dense(3)."""
    out = kl.Dense(3)

    def graph(apply, x):
        h = apply(trunk, x)
        return apply(out, kl.Concatenate()([kl.Flatten()(head(apply, h)) for head in heads]))

    return graph


def volume_views(layer_1d, layer_2d, layer_3d):
    """Heads that see a (4, 4, 4, c) volume as 1D (64, c), 2D (16, 4, c) and 3D, each through its own layer."""
    return [
        lambda apply, h: apply(layer_1d, kl.Reshape((64, h.shape[-1]))(h)),
        lambda apply, h: apply(layer_2d, kl.Reshape((16, 4, h.shape[-1]))(h)),
        lambda apply, h: apply(layer_3d, h),
    ]


def kernels_case():
    depthwise_2d, conv_2d = kl.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"), kl.Conv2D(3, 2, strides=2)
    conv_1d, causal = kl.Conv1D(3, 3, activation="relu"), kl.Conv1D(2, 3, padding="causal", dilation_rate=2)
    depthwise_1d, conv_3d = kl.DepthwiseConv1D(3, activation="relu"), kl.Conv3D(2, 2, activation="relu")
    dense, out = kl.Dense(8, activation="relu"), kl.Dense(3)

    def graph(apply, x):
        flat_1d, flat_2d = kl.Reshape((64, 2))(x), kl.Reshape((16, 4, 2))(x)
        parts = [
            apply(conv_3d, x),
            apply(depthwise_2d, flat_2d),
            apply(conv_2d, flat_2d),
            apply(causal, apply(conv_1d, flat_1d)),
            apply(depthwise_1d, flat_1d),
        ]
        return apply(out, apply(dense, kl.Concatenate()([kl.Flatten()(p) for p in parts])))

    return Case((4, 4, 4, 2), graph)


def gates_case():
    """Each kind of ReLU/ReLU6 gate after its own Dense; inputs scaled so that pre-activations straddle 0 and 6."""
    width = 6
    gates = [
        (kl.Dense(width), kl.ReLU()),
        (kl.Dense(width), kl.Activation("relu")),
        (kl.Dense(width, activation="relu"), kl.Identity()),
        (kl.Dense(width), kl.ReLU(6.0)),
        (kl.Dense(width), kl.Activation("relu6")),
        (kl.Dense(width, activation="relu6"), kl.Identity()),
    ]
    out = kl.Dense(3)

    def graph(apply, x):
        return apply(out, kl.Concatenate()([apply(gate, apply(dense, x)) for dense, gate in gates]))

    return Case((5,), graph, scale=6.0)


def scales_case():
    normalization = kl.Normalization(mean=[0.2, -0.1, 0.4], variance=[0.5, 2.0, 1.5])
    return Case(
        (6, 6, 2),
        chain(
            kl.Conv2D(3, 3),
            kl.BatchNormalization(),
            kl.ReLU(),
            kl.Rescaling([0.5, -2.0, 3.0], offset=0.1),
            normalization,
            kl.Conv2D(2, 2, activation="relu"),
        ),
    )


def merging_case():
    a, b = kl.Dense(4, activation="relu"), kl.Dense(4)
    out = kl.Dense(3)

    def graph(apply, x):
        u, v = apply(a, x), apply(b, x)
        merged = [m([u, v]) for m in (kl.Add(), kl.Subtract(), kl.Average(), kl.Maximum(), kl.Minimum())]
        return apply(out, kl.Concatenate()(merged))

    return Case((5,), graph)


def pooling_case():
    heads = []
    for pools in (
        (kl.MaxPooling1D(2), kl.MaxPooling2D(2), kl.MaxPooling3D(2)),
        (kl.AveragePooling1D(2), kl.AveragePooling2D(2), kl.AveragePooling3D(2)),
        (kl.GlobalMaxPooling1D(), kl.GlobalMaxPooling2D(), kl.GlobalMaxPooling3D()),
        (kl.GlobalAveragePooling1D(), kl.GlobalAveragePooling2D(), kl.GlobalAveragePooling3D()),
    ):
        heads += volume_views(*pools)
    return Case((4, 4, 4, 2), branches(kl.Conv3D(3, 1, activation="relu"), heads))


def shapes_case():
    heads = []
    for layers in (
        (kl.ZeroPadding1D(1), kl.ZeroPadding2D(1), kl.ZeroPadding3D(1)),
        (kl.Cropping1D(1), kl.Cropping2D(1), kl.Cropping3D(1)),
        (kl.UpSampling1D(2), kl.UpSampling2D(2), kl.UpSampling3D(2)),
        (kl.Permute((2, 1)), kl.Permute((3, 1, 2)), kl.Permute((3, 2, 1, 4))),
    ):
        heads += volume_views(*layers)
    return Case((4, 4, 4, 2), branches(kl.Conv3D(3, 1, activation="relu"), heads))


def dropout_case():
    return Case(
        (4, 4, 4, 2),
        chain(
            kl.Conv3D(2, 1, activation="relu"),
            kl.SpatialDropout3D(0.5),
            kl.Reshape((16, 4, 2)),
            kl.SpatialDropout2D(0.5),
            kl.Reshape((64, 2)),
            kl.SpatialDropout1D(0.5),
            kl.Dropout(0.5),
            kl.GaussianDropout(0.5),
            kl.AlphaDropout(0.5),
            kl.GaussianNoise(1.0),
        ),
    )


def activations_case():
    return Case(
        (5,),
        chain(kl.Dense(4), kl.Activation("tanh"), kl.Dense(4), kl.Activation("sigmoid"), kl.Dense(4), kl.Softmax()),
    )


def misc_case():
    return Case(
        (5,), chain(kl.Dense(4, activation="relu"), kl.RepeatVector(2), kl.Identity(), kl.ActivityRegularization())
    )


def ops_case():
    dense, out = kl.Dense(6, activation="relu"), kl.Dense(3)
    ops = keras.ops

    def graph(apply, x):
        h = apply(dense, x)
        h = ops.concatenate([ops.add(h, x[:, :6]), ops.subtract(h, ops.negative(h))], axis=-1)  # getitem too
        h = ops.transpose(ops.reshape(h, (-1, 3, 4)), (0, 2, 1))
        h = ops.squeeze(ops.expand_dims(ops.stack([h, ops.add(h, h)], axis=1), 1), 1)
        return apply(out, ops.reshape(h, (-1, 24)))

    return Case((8,), graph)


def separable_case():
    conv_2d, conv_1d = kl.SeparableConv2D(3, 3, activation="relu"), kl.SeparableConv1D(3, 3, activation="relu")
    heads = [lambda apply, h: apply(conv_2d, h), lambda apply, h: apply(conv_1d, kl.Reshape((36, 2))(h))]
    return Case((6, 6, 2), branches(kl.Identity(), heads))


def nested_case(saved=False):
    """A nested Sequential and a nested Functional model; the reference calls their layers in order."""
    inner_sequential = keras.Sequential(
        [keras.Input((6, 6, 2)), kl.Conv2D(3, 3, activation="relu"), kl.ZeroPadding2D(1)]
    )
    inputs = keras.Input((6, 6, 3))
    inner_functional = keras.Model(inputs, kl.ReLU()(kl.DepthwiseConv2D(3)(inputs)))
    return Case((6, 6, 2), chain(inner_sequential, inner_functional), saved=saved)


@keras.saving.register_keras_serializable(package="pgig_tf_table_tests")
class Twice(keras.layers.Layer):
    """x -> 2 x: a layer no rule knows."""

    def call(self, x):
        return 2.0 * x


def keras_file_case():
    """The nested case, saved as a .keras file and loaded back before the rules run."""
    return nested_case(saved=True)


def other_layer_case():
    return Case((5,), chain(kl.Dense(4, activation="relu"), Twice()))


CASES = {
    "kernels": kernels_case,
    "gates": gates_case,
    "scales": scales_case,
    "merging": merging_case,
    "pooling": pooling_case,
    "shapes": shapes_case,
    "dropout": dropout_case,
    "activations": activations_case,
    "misc": misc_case,
    "ops": ops_case,
    "separable": separable_case,
    "nested": nested_case,
    "keras_file": keras_file_case,
    "other_layer": other_layer_case,
}


# --- weights, patterns and the references -----------------------------------------------------


def leaves(model):
    """The leaf layers and keras.ops operations of `model`, nested models expanded (Keras' own graph lists)."""
    result = []
    for operation in model.layers if isinstance(model, keras.Sequential) else model.operations:
        if isinstance(operation, keras.Model):
            result += leaves(operation)
        elif not isinstance(operation, kl.InputLayer):
            result.append(operation)
    return result


def set_weights(model, seed):
    """Random kernels and biases; BatchNormalization with gamma of both signs and a positive moving variance."""
    rng = np.random.default_rng(seed)
    for layer in leaves(model):
        if isinstance(layer, kl.BatchNormalization):
            channels = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 1.5, channels) * np.where(np.arange(channels) % 2, -1, 1)
            layer.set_weights(
                [gamma, rng.normal(0, 0.3, channels), rng.normal(0, 0.3, channels), rng.uniform(0.5, 2, channels)]
            )
        elif isinstance(layer, KERNELS + SEPARABLE):
            layer.set_weights([rng.normal(0, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])


def random_patterns(model, seed):
    """A random pattern, shaped like the kernel, for every kernel layer."""
    rng = np.random.default_rng(seed)
    return Patterns(
        {
            layer.name: rng.normal(1.0, 0.5, layer.kernel.shape).astype(np.float32)
            for layer in leaves(model)
            if isinstance(layer, KERNELS)
        }
    )


def twin(layer, input_shape, kernel=None):
    """`layer` rebuilt without its activation: its own weights, or `kernel` and no bias."""
    config = {**layer.get_config(), "activation": None, "name": layer.name + "_twin"}
    if kernel is not None:
        config["use_bias"] = False
    copy = type(layer).from_config(config)
    copy.build(input_shape)
    copy.set_weights(layer.get_weights() if kernel is None else [kernel])
    return copy


def guided_gate(x, cap):
    """A ReLU (cap inf) or ReLU6 whose backward pass is relu(dy) where 0 < x < cap."""

    @tf.custom_gradient
    def gate(u):
        def grad(dy):
            return tf.where(tf.logical_and(u > 0, u < cap), tf.maximum(dy, 0.0), tf.zeros_like(dy))

        return tf.minimum(tf.maximum(u, 0.0), cap), grad

    return gate(x)


def backward_only(value, substitute):
    """`value` forward, the gradient of `substitute` backward."""
    return tf.stop_gradient(value) + (substitute - tf.stop_gradient(substitute))


def reference_apply(rule, patterns):
    """`apply` of the reference: each layer's forward value, with `rule`'s backward pass built by hand."""

    def activate(function, pre):
        if rule == "guided_backprop" and function in CAPS:
            return guided_gate(pre, CAPS[function])
        return function(pre)

    def apply(layer, x):
        if isinstance(layer, keras.Model):  # the nested cases are chains
            for inner in layer.layers:
                if not isinstance(inner, kl.InputLayer):
                    x = apply(inner, x)
            return x
        if isinstance(layer, KERNELS + SEPARABLE):
            pre = twin(layer, x.shape)(x)
            if rule == "pattern_attribution":
                substitute = twin(layer, x.shape, np.asarray(layer.kernel) * patterns[layer.name])(x)
                pre = backward_only(pre, substitute)
            return activate(layer.activation, pre)
        if isinstance(layer, kl.ReLU):
            return activate(keras.activations.relu if layer.max_value is None else keras.activations.relu6, x)
        if isinstance(layer, kl.Activation):
            return activate(layer.activation, x)
        if isinstance(layer, SCALES) and rule == "pattern_attribution":
            return backward_only(layer(x, training=False), x)  # w ⊙ p = s · 1/s = 1
        return layer(x, training=False)

    return apply


def gated(layer):
    """True for a ReLU/ReLU6 gate, standalone or fused into a kernel layer."""
    if isinstance(layer, kl.ReLU):
        return True
    return getattr(layer, "activation", None) in CAPS


def tape_gradient(function, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        output = function(x)[:, TARGET]
    return output.numpy(), tape.gradient(output, x).numpy()


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    case = CASES[request.param]()
    set_weights(case.model, 0)
    if "keras file" in case.flags:
        path = tmp_path_factory.mktemp("table") / "model.keras"
        case.model.save(path)
        case.explained = keras.models.load_model(path)
    else:
        case.explained = case.model
    case.x = (case.scale * np.random.default_rng(1).normal(0, 1, (2, *case.input_shape))).astype(np.float32)
    return case


@pytest.mark.parametrize("rule", RULES)
def test_rule_equals_the_hand_built_reference(case, rule):
    """The input gradient through `rule`'s rewritten model (what every analyzer differentiates) equals the reference's.

    The rules run eagerly here, as `rule.forward` under a tape: the analyzers' compiled loop
    takes seconds to trace each of these models and adds nothing layer-specific.
    """
    model, x = case.explained, case.x
    patterns = random_patterns(model, 2)
    if "unknown layer" in case.flags and rule != "gradient":
        with pytest.raises(ValueError, match=r"\(Twice\).*register_layer\(.*Twice, \"linear\"\)"):
            make_rule(rule, patterns=patterns).check_model(model)
        return
    if any(isinstance(layer, SEPARABLE) for layer in leaves(model)) and rule == "pattern_attribution":
        with pytest.raises(ValueError, match=r"\(SeparableConv[12]D\).*two kernels"):
            make_rule(rule, patterns=patterns).check_model(model)
        return
    rewritten = make_rule(rule, patterns=patterns)
    rewritten.check_model(model)
    value, ours = tape_gradient(lambda v: rewritten.forward(model, v), x)
    reference_value, expected = tape_gradient(lambda v: case.graph(reference_apply(rule, patterns), v), x)
    expected_value = model(x, training=False).numpy()[:, TARGET]
    np.testing.assert_array_equal(value, expected_value)  # the rules leave the forward pass alone
    np.testing.assert_allclose(reference_value, expected_value, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0
    if rule == "pattern_attribution" or (rule == "guided_backprop" and any(gated(layer) for layer in leaves(model))):
        plain = tape_gradient(lambda v: model(v, training=False), x)[1]
        assert not np.allclose(expected, plain, rtol=1e-3, atol=1e-3 * np.abs(plain).max())
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# --- the table ----------------------------------------------------------------------------------


def table_entries():
    """The entries of the first column of the user guide's supported-layers table, one per layer or layer family.

    Items are split at top-level commas; "X1D/2D/3D" becomes X1D, X2D, X3D; "A: B" becomes B;
    a parenthesised list "P (a, b)" becomes "P a", "P b"; other parenthesised remarks and backticks go.
    """
    lines = USER_GUIDE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| layer | gradient |"))
    entries = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cell = line.split("|")[1].replace("`", "").strip()
        for item in re.split(r",\s*(?![^()]*\))", cell):
            item = item.split(": ")[-1].strip()
            listed = re.fullmatch(r"(.*?) \(([^()]*,[^()]*)\)", item)
            if listed:
                entries += [f"{listed.group(1)} {name.strip()}" for name in listed.group(2).split(",")]
                continue
            item = re.sub(r" \((causal too|inference)\)$", "", item)
            family = re.fullmatch(r"(\w+?)(\d)D((?:/\dD)+)", item)
            if family:
                entries += [f"{family.group(1)}{n}D" for n in (family.group(2),) + tuple(family.group(3)[1::3])]
            else:
                entries.append(item)
    return entries


def has(cls, **attributes):
    """A requirement: an operation of exactly class `cls` with these attribute values."""
    return lambda op: type(op) is cls and all(getattr(op, k) == v for k, v in attributes.items())


def fused(activation):
    return lambda op: isinstance(op, KERNELS) and op.activation is activation


def op(name):
    return has(getattr(numpy_ops, name))


# table entry -> requirements, each met by some case: a layer class, a predicate on an operation, or a case flag
TABLE = {
    "Dense": [kl.Dense],
    "Conv1D": [kl.Conv1D, has(kl.Conv1D, padding="causal")],
    "Conv2D": [kl.Conv2D],
    "Conv3D": [kl.Conv3D],
    "DepthwiseConv1D": [kl.DepthwiseConv1D],
    "DepthwiseConv2D": [kl.DepthwiseConv2D],
    "ReLU": [has(kl.ReLU, max_value=None)],
    'Activation("relu")': [has(kl.Activation, activation=keras.activations.relu)],
    "fused relu": [fused(keras.activations.relu)],
    "ReLU(6.)": [has(kl.ReLU, max_value=6.0)],
    'Activation("relu6")': [has(kl.Activation, activation=keras.activations.relu6)],
    "fused relu6": [fused(keras.activations.relu6)],
    "BatchNormalization": [kl.BatchNormalization],
    "Rescaling": [kl.Rescaling],
    "Normalization": [kl.Normalization],
    "Add": [kl.Add],
    "Subtract": [kl.Subtract],
    "Average": [kl.Average],
    "Concatenate": [kl.Concatenate],
    "Maximum": [kl.Maximum],
    "Minimum": [kl.Minimum],
    "pooling": [
        *(kl.MaxPooling1D, kl.MaxPooling2D, kl.MaxPooling3D, kl.AveragePooling1D, kl.AveragePooling2D),
        *(kl.AveragePooling3D, kl.GlobalMaxPooling1D, kl.GlobalMaxPooling2D, kl.GlobalMaxPooling3D),
        *(kl.GlobalAveragePooling1D, kl.GlobalAveragePooling2D, kl.GlobalAveragePooling3D),
    ],
    "ZeroPadding": [kl.ZeroPadding1D, kl.ZeroPadding2D, kl.ZeroPadding3D],
    "Cropping": [kl.Cropping1D, kl.Cropping2D, kl.Cropping3D],
    "Flatten": [kl.Flatten],
    "Reshape": [kl.Reshape],
    "Permute": [kl.Permute],
    "UpSampling": [kl.UpSampling1D, kl.UpSampling2D, kl.UpSampling3D],
    "RepeatVector": [kl.RepeatVector],
    "Dropout variants": [
        *(
            kl.Dropout,
            kl.SpatialDropout1D,
            kl.SpatialDropout2D,
            kl.SpatialDropout3D,
            kl.GaussianDropout,
            kl.AlphaDropout,
        )
    ],
    "GaussianNoise": [kl.GaussianNoise],
    "Identity": [kl.Identity],
    "ActivityRegularization": [kl.ActivityRegularization],
    "Softmax": [kl.Softmax],
    "other Activations": [has(kl.Activation, activation=keras.activations.tanh)],
    **{
        f"linear keras.ops {name}": [op(cls)]
        for name, cls in [
            ("add", "Add"),
            ("subtract", "Subtract"),
            ("negative", "Negative"),
            ("concatenate", "Concatenate"),
            ("stack", "Stack"),
            ("getitem", "GetItem"),
            ("reshape", "Reshape"),
            ("transpose", "Transpose"),
            ("expand_dims", "ExpandDims"),
            ("squeeze", "Squeeze"),
        ]
    },
    "SeparableConv1D": [kl.SeparableConv1D],
    "SeparableConv2D": [kl.SeparableConv2D],
    "nested Sequential/Functional models": ["nested Sequential", "nested Functional"],
    ".keras files loaded back": ["keras file"],
    "any other layer": ["unknown layer"],
}


@pytest.fixture(scope="module")
def every_case():
    """(the operations, the flags) of all cases."""
    built = [CASES[name]() for name in CASES]
    return [op for case in built for op in leaves(case.model)], {flag for case in built for flag in case.flags}


def test_every_table_entry_runs_in_a_case(every_case):
    """The table's entries are exactly TABLE's, and a case runs every layer (and flag) TABLE asks of each entry."""
    assert table_entries() == list(TABLE)
    operations, flags = every_case
    for entry, requirements in TABLE.items():
        for requirement in requirements:
            if isinstance(requirement, str):
                met = requirement in flags
            elif isinstance(requirement, type):
                met = any(type(op) is requirement for op in operations)
            else:
                met = any(requirement(op) for op in operations)
            assert met, f"table entry {entry!r}: no case runs {requirement}"


def test_every_class_the_rules_know_is_a_table_entry(every_case):
    """Every layer class and keras.ops operation layer_kinds supports is named by some table entry (and so runs)."""
    named = {r for requirements in TABLE.values() for r in requirements if isinstance(r, type)}
    operations = every_case[0]
    for requirements in TABLE.values():
        named |= {
            type(op) for r in requirements if callable(r) and not isinstance(r, type) for op in operations if r(op)
        }
    known = set(
        layer_kinds.KERNEL_LAYER_TYPES
        + layer_kinds.SEPARABLE_TYPES
        + layer_kinds.SCALE_TYPES
        + layer_kinds.PASS_THROUGH_TYPES
        + layer_kinds.PASS_THROUGH_OPS
        + (kl.ReLU, kl.Activation)
    ) - {kl.InputLayer}
    assert sorted(c.__name__ for c in known - named) == []
