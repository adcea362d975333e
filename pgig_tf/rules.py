"""Backward rules: how the gradient passes each layer (plain, guided, PatternAttribution, PatternNet).

A rule leaves every forward value as the original model computes it and changes only the
backward pass, through `tf.custom_gradient` on the layer's linear part or its ReLU.
"""

import tensorflow as tf

from . import layers as L
from .graph import leaf_layers, run_graph


class Rule:
    """Base rule: every layer passes its ordinary gradient (the plain input gradient)."""

    name = "gradient"
    needs_patterns = False

    def forward(self, model, x):
        """The model's output on `x`, built so that differentiating it applies this rule."""
        return model(x, training=False)

    def check_model(self, model):
        """Raises ValueError, naming the layer, if the rule cannot rewrite some layer of `model`."""


class LayerwiseRule(Rule):
    """A rule that treats kernel layers and ReLUs specially and knows which other layers are safe.

    Its layer support (and `check_model`) is shared by all non-plain rules and by pattern fitting.
    """

    def forward(self, model, x):
        return run_graph(model, x, self.substitute)

    def substitute(self, layer):
        if L.is_kernel_layer(layer):
            return lambda x, **kwargs: self._kernel_layer(layer, x)
        if L.is_relu_layer(layer):
            return lambda x, **kwargs: self._relu(x)
        if isinstance(layer, L.PASS_THROUGH_TYPES) or L.is_activation_layer(layer):
            return L.inference_call(layer)
        raise _unsupported(layer, self.name)

    def check_model(self, model):
        for layer in leaf_layers(model):
            self.substitute(layer)

    def _kernel_layer(self, layer, x):
        x = tf.convert_to_tensor(x)
        z = self._linear(layer, x)
        y = L.add_bias(layer, z)
        if layer.activation is None:
            return y
        if L.has_fused_relu(layer):
            return self._relu(y)
        return layer.activation(y)

    def _linear(self, layer, x):
        return L.linear_part(layer, x, layer.kernel)

    def _relu(self, x):
        return tf.nn.relu(x)


class GuidedBackpropRule(LayerwiseRule):
    """Guided Backprop: at each ReLU only positive gradient passes, and only where the input was positive."""

    name = "guided_backprop"

    def _relu(self, x):
        return _guided_relu(x)


@tf.custom_gradient
def _guided_relu(x):
    y = tf.nn.relu(x)

    def grad(dy):
        # positive gradient only, gated where the input was positive: ReLU's own backward
        # op applied to relu(dy), two fused kernels instead of four elementwise ones
        return tf.raw_ops.ReluGrad(gradients=tf.nn.relu(dy), features=x)

    return y, grad


class _PatternRule(LayerwiseRule):
    """A rule whose backward pass through each Dense/Conv kernel uses a kernel built from patterns."""

    needs_patterns = True

    def __init__(self, patterns):
        self.patterns = patterns
        # Patterns live in variables, not graph constants: VGG16's first dense pattern alone
        # is 400 MB, too large to embed in a traced graph.
        self._variables = {
            name: tf.Variable(array, trainable=False, name="pattern")
            for name, array in patterns.items()
        }

    def check_model(self, model):
        super().check_model(model)
        self.patterns.check(model)

    def backward_kernel(self, kernel, pattern):
        raise NotImplementedError

    def _linear(self, layer, x):
        kernel = tf.convert_to_tensor(layer.kernel)
        if layer.name not in self._variables:
            raise ValueError(
                f"No pattern for layer {L.describe(layer)}; fit patterns on this model "
                "(fit_patterns or analyzer.fit) or pass patterns that include it."
            )
        pattern = tf.cast(self._variables[layer.name], kernel.dtype)
        substitute_kernel = self.backward_kernel(kernel, pattern)

        @tf.custom_gradient
        def linear(inputs):
            outputs = L.linear_part(layer, inputs, kernel)

            def grad(dy):
                # The linear map's vector-Jacobian product with the substituted kernel
                # (Eq. 3: the gradient with w replaced). The forward value below is unused,
                # so in a compiled graph only the transposed op remains.
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(inputs)
                    substituted = L.linear_part(layer, inputs, substitute_kernel)
                return tape.gradient(substituted, inputs, output_gradients=dy)

            return outputs, grad

        return linear(x)


class PatternAttributionRule(_PatternRule):
    """PatternAttribution (Kindermans et al., 2018; PGIG paper Eq. 2-3): kernel w -> w * p backward."""

    name = "pattern_attribution"

    def backward_kernel(self, kernel, pattern):
        return kernel * pattern


class PatternNetRule(_PatternRule):
    """PatternNet: the signal estimator; kernel w -> p in the backward pass."""

    name = "pattern_net"

    def backward_kernel(self, kernel, pattern):
        return pattern


RULES = {
    "gradient": Rule,
    "guided_backprop": GuidedBackpropRule,
    "pattern_attribution": PatternAttributionRule,
    "pattern_net": PatternNetRule,
}


def rule_class(name):
    """The rule class called `name`, or a ValueError listing the valid names."""
    if name not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {name!r}")
    return RULES[name]


def make_rule(name, patterns=None):
    """The rule called `name`; pattern rules need `patterns`."""
    cls = rule_class(name)
    if cls.needs_patterns:
        if patterns is None:
            raise ValueError(
                f"rule {name!r} needs patterns: pass patterns=... or call analyzer.fit(data) first"
            )
        return cls(patterns)
    return cls()


def _unsupported(layer, rule_name):
    return ValueError(
        f"Layer {L.describe(layer)} is not supported by the {rule_name!r} rule: it has no rule for "
        "this layer type. Supported: Dense, Conv1D/2D/3D, ReLU/Activation, pooling, Flatten, "
        "Reshape, Dropout, ZeroPadding, Cropping, Softmax. The plain 'gradient' rule works "
        "with any layer."
    )
