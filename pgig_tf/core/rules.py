"""Backward rules: how the gradient passes each layer (plain, guided, PatternAttribution, PatternNet).

A rule leaves every forward value as the original model computes it and changes only the
backward pass, through `tf.custom_gradient` on the layer's linear part or its ReLU.
"""

import math

import keras
import tensorflow as tf

from pgig_tf.model import layer_kinds as L
from pgig_tf.model.graph import leaf_operations, run_graph
from pgig_tf.model.layer_support import registered_treatment


class Rule:
    """Base rule: every layer passes its ordinary gradient (the plain input gradient)."""

    name = "gradient"
    needs_patterns = False

    def forward(self, model, x):
        """The model's output on `x`, built so that differentiating it applies this rule."""
        return model(x, training=False)

    def check_model(self, model, exempt=()):
        """Raises ValueError, naming the layer, if the rule cannot rewrite some layer of `model`.

        `exempt`: ids of operations never differentiated (e.g. the Embedding of a token input).
        """


class LayerwiseRule(Rule):
    """A rule that treats kernel layers, ReLU gates and per-channel scalings specially and knows which other layers are safe.

    Its layer support (and `check_model`) is shared by all non-plain rules and by pattern
    fitting. Per layer (see `treatment`): kernel layers are split into linear part, bias and
    activation; ReLU/ReLU6 gates go through `_gate`; BatchNormalization/Rescaling/Normalization through
    `_scale`; pass-through layers and `register_layer(..., "linear")` layers keep their
    ordinary gradient; a registered function replaces the layer's call.
    """

    name = "layerwise"

    def forward(self, model, x):
        return run_graph(model, x, self.substitute)

    @classmethod
    def treatment(cls, layer, subject=None):
        """How this rule passes `layer`: a kind of `model.layer_kinds` or a registered treatment; raises if none.

        `subject` names the rule in errors (default: "the '<name>' rule").
        """
        subject = subject or f"the {cls.name!r} rule"
        registered, registered_position = registered_treatment(layer)
        kind, builtin_position = L.builtin_kind(layer)
        if registered is not None and (builtin_position is None or registered_position <= builtin_position):
            return registered
        if kind == L.SEPARABLE and cls.needs_patterns:
            raise _no_pattern_for_separable(layer, subject)
        if kind is None:
            raise _unsupported(layer, subject)
        return kind

    def substitute(self, layer):
        treatment = self.treatment(layer)
        if callable(treatment):
            return lambda inputs, *args, **kwargs: treatment(layer, inputs, self.name)
        if treatment == L.KERNEL:
            return lambda x, **kwargs: self._kernel_layer(layer, x)
        if treatment == L.SEPARABLE:
            return lambda x, **kwargs: self._separable_layer(layer, x)
        if treatment == L.GATE:
            cap = L.gate_cap(layer)
            return lambda x, **kwargs: self._gate(tf.convert_to_tensor(x), cap, L.inference_call(layer))
        if treatment == L.SCALE:
            return lambda x, **kwargs: self._scale(layer, tf.convert_to_tensor(x))
        if isinstance(layer, keras.layers.Layer):
            return L.inference_call(layer)  # L.PASS or registered "linear"
        return layer  # a keras.ops operation of a functional graph

    def check_model(self, model, exempt=()):
        for operation in leaf_operations(model):
            if id(operation) not in exempt:
                self.treatment(operation)

    def _kernel_layer(self, layer, x):
        x = tf.convert_to_tensor(x)
        z = self._linear(layer, x)
        y = L.add_bias(layer, z)
        return self._activation(layer, y)

    def _separable_layer(self, layer, x):
        return self._activation(layer, L.separable_part(layer, tf.convert_to_tensor(x)))

    def _activation(self, layer, y):
        if layer.activation is None:
            return y
        cap = L.fused_gate_cap(layer)
        if cap is None:
            return layer.activation(y)
        return self._gate(y, cap, layer.activation)

    def _linear(self, layer, x):
        return L.linear_part(layer, x, layer.kernel)

    def _gate(self, x, cap, forward):
        """A ReLU-type gate with cap `cap` (inf: ReLU); `forward` is the original activation."""
        if cap == math.inf:
            return self._relu(x)
        return forward(x)

    def _relu(self, x):
        return tf.nn.relu(x)

    def _scale(self, layer, x):
        """A per-channel affine layer: its ordinary call (gradient s) unless a rule overrides it."""
        return layer(x, training=False)


class GuidedBackpropRule(LayerwiseRule):
    """Guided Backprop: at each ReLU only positive gradient passes, and only where the input was positive."""

    name = "guided_backprop"

    def _relu(self, x):
        return _guided_relu(x)

    def _gate(self, x, cap, forward):
        if cap == math.inf:
            return self._relu(x)
        return _guided_capped(x, cap, forward)


@tf.custom_gradient
def _guided_relu(x):
    y = tf.nn.relu(x)

    def grad(dy):
        # positive gradient only, gated where the input was positive: ReLU's own backward
        # op applied to relu(dy), two fused kernels instead of four elementwise ones
        return tf.raw_ops.ReluGrad(gradients=tf.nn.relu(dy), features=x)

    return y, grad


def _guided_capped(x, cap, forward):
    """Guided backward of min(max(x, 0), cap): relu(dy) where 0 < x < cap, the activation's own gate.

    Guided Backprop is the activation's ordinary backward applied to the positive part of
    the incoming gradient; for ReLU6 that gate is open where its derivative is 1, 0 < x < 6
    (a saturated unit, like an inactive one, passes nothing).
    """

    @tf.custom_gradient
    def gate(inputs):
        outputs = forward(inputs)

        def grad(dy):
            positive = tf.cast(tf.nn.relu(dy), inputs.dtype)
            if cap == 6.0:
                return tf.raw_ops.Relu6Grad(gradients=positive, features=inputs)
            is_open = tf.logical_and(inputs > 0, inputs < tf.cast(cap, inputs.dtype))
            return tf.where(is_open, positive, tf.zeros_like(positive))

        return outputs, grad

    return gate(x)


class _PatternRule(LayerwiseRule):
    """A rule whose backward pass through each Dense/Conv kernel uses a kernel built from patterns."""

    needs_patterns = True

    def __init__(self, patterns, allow_other_model=False):
        self.patterns = patterns
        self.allow_other_model = allow_other_model  # patterns fitted on another model: warn, not raise
        # Patterns live in variables, not graph constants: VGG16's first dense pattern alone
        # is 400 MB, too large to embed in a traced graph.
        self._variables = {
            name: tf.Variable(array, trainable=False, name="pattern") for name, array in patterns.items()
        }

    def check_model(self, model, exempt=()):
        super().check_model(model, exempt)
        self.patterns.check(model, allow_other_model=self.allow_other_model)

    def backward_kernel(self, kernel, pattern):
        raise NotImplementedError

    def backward_scale(self, scale):
        """`backward_kernel` for a one-input neuron y = s x + c, whose Eq. 2 pattern is exactly 1/s."""
        raise NotImplementedError

    def _scale(self, layer, x):
        # BatchNormalization (inference), Rescaling and Normalization are layers of one-input linear neurons
        # y = s x + c. For a one-input neuron Eq. 2 gives p = cov(x, y) / (s cov(x, y)) = 1/s
        # for any data and either estimator (0 if s = 0, like a dead unit), so nothing is
        # fitted: PatternAttribution passes the channel with w * p = 1, PatternNet with
        # p = 1/s. This is exactly what folding the scale into the neighbouring kernel gives:
        # scaling y by s scales Eq. 2's numerator by s and its denominator w^T(...) by s^2,
        # so the folded kernel s w has pattern p / s, and (s w) * (p / s) = w * p while
        # p / s = (1/s) * p. Passing BatchNorm with its forward gradient s instead would
        # multiply each channel's relevance by gamma / sigma, a normalisation constant that a
        # folded twin of the same model does not have (tests/model/test_layer_coverage.py checks both).
        scale = L.diagonal_scale(layer, x)
        backward = tf.stop_gradient(self.backward_scale(scale))

        @tf.custom_gradient
        def scaled(inputs):
            outputs = layer(inputs, training=False)

            def grad(dy, variables=None):
                dx = tf.cast(dy * tf.cast(backward, dy.dtype), inputs.dtype)
                # the layer's own variables (gamma, beta) get no gradient: rules explain inputs
                return (dx, [None] * len(variables)) if variables else dx

            return outputs, grad

        return scaled(x)

    def _linear(self, layer, x):
        kernel = tf.convert_to_tensor(layer.kernel)
        if layer.name not in self._variables:
            raise ValueError(
                f"No pattern for layer {L.describe(layer)}; fit patterns on this model "
                "(fit_patterns or analyzer.fit) or pass patterns that include it."
            )
        pattern = tf.cast(self._variables[layer.name], kernel.dtype)
        return linear_with_backward_kernel(layer, x, kernel, self.backward_kernel(kernel, pattern))


def linear_with_backward_kernel(layer, x, kernel, backward_kernel, forward_dtype=None, backward_dtype=None):
    """The layer's linear part of `x` with `kernel`, differentiated as if its kernel were `backward_kernel` (Eq. 3).

    `forward_dtype` computes the forward value in another dtype than the layer's compute dtype,
    returned in x's dtype; `backward_dtype` does so for the vector-Jacobian product.
    """

    @tf.custom_gradient
    def linear(inputs):
        outputs = L.linear_part(layer, inputs, kernel, dtype=forward_dtype)
        if forward_dtype is not None:
            outputs = tf.cast(outputs, inputs.dtype)

        def grad(dy):
            # The linear map's vector-Jacobian product with the substituted kernel (the gradient
            # with w replaced). The forward value below is unused, so in a compiled graph only
            # the transposed op remains.
            wide = tf.cast(inputs, backward_dtype or inputs.dtype)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(wide)
                substituted = L.linear_part(layer, wide, backward_kernel, dtype=backward_dtype)
            dx = tape.gradient(substituted, wide, output_gradients=tf.cast(dy, substituted.dtype))
            return tf.cast(dx, inputs.dtype)

        return outputs, grad

    return linear(tf.convert_to_tensor(x))


class PatternAttributionRule(_PatternRule):
    """PatternAttribution (Kindermans et al., 2018; PGIG paper Eq. 2-3): kernel w -> w * p backward."""

    name = "pattern_attribution"

    def backward_kernel(self, kernel, pattern):
        return kernel * pattern

    def backward_scale(self, scale):
        return tf.where(tf.equal(scale, 0), tf.zeros_like(scale), tf.ones_like(scale))  # s * (1/s)


class PatternNetRule(_PatternRule):
    """PatternNet: the signal estimator; kernel w -> p in the backward pass."""

    name = "pattern_net"

    def backward_kernel(self, kernel, pattern):
        return pattern

    def backward_scale(self, scale):
        return tf.math.divide_no_nan(tf.ones_like(scale), scale)  # p = 1/s


# Rules by name: what `rule="..."` means. A new rule is a `Rule` subclass, passed as `rule=MyRule`,
# or added here (`RULES["my_rule"] = MyRule`) to be known by name (create_analyzer, CLIs, save/load).
RULES = {
    "gradient": Rule,
    "guided_backprop": GuidedBackpropRule,
    "pattern_attribution": PatternAttributionRule,
    "pattern_net": PatternNetRule,
}


def rule_class(rule):
    """The rule class for `rule`: a name in `RULES` or a `Rule` subclass; ValueError listing the names otherwise."""
    if isinstance(rule, type) and issubclass(rule, Rule):
        return rule
    if isinstance(rule, str) and rule in RULES:
        return RULES[rule]
    raise ValueError(f"rule must be one of {sorted(RULES)} or a pgig_tf.core.rules.Rule subclass, got {rule!r}")


def rule_name(rule):
    """The name under which `rule` (a name or a Rule subclass) is known in `RULES`, or None if it is not."""
    cls = rule_class(rule)
    return next((name for name, known in RULES.items() if known is cls), None)


def make_rule(rule, patterns=None, allow_other_model=False):
    """An instance of `rule` (a name or a Rule subclass); pattern rules need `patterns`.

    `allow_other_model` lets a pattern rule use patterns fitted on another model (`Patterns.check`)
    with a warning instead of an error when it is checked against a model.
    """
    cls = rule_class(rule)
    if cls.needs_patterns:
        if patterns is None:
            raise ValueError(f"rule {cls.name!r} needs patterns: pass patterns=... or call analyzer.fit(data) first")
        return cls(patterns, allow_other_model=allow_other_model)
    return cls()


def check_pattern_support(model, exempt=()):
    """Raises ValueError, naming the layer, if the pattern rules or pattern fitting cannot handle some layer of `model`."""
    for operation in leaf_operations(model):
        if id(operation) not in exempt:
            _PatternRule.treatment(operation, subject=PATTERN_SUBJECT)


PATTERN_SUBJECT = "the pattern rules ('pattern_attribution', 'pattern_net') or pattern fitting"


def _class_path(layer):
    cls = type(layer)
    if isinstance(layer, keras.layers.Layer) and not cls.__module__.startswith("keras."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _unsupported(layer, subject):
    cls = type(layer).__name__
    position = L.builtin_kind(layer)[1]
    if position is None:
        why = f"no rule knows the class {cls}"
    elif isinstance(layer, keras.layers.ReLU) and type(layer).call is keras.layers.ReLU.call:
        why = "a ReLU with a threshold or a negative slope has no guided or pattern rule"
    else:
        why = f"it overrides the call() of the supported Keras layer {type(layer).__mro__[position].__name__}"
    return ValueError(
        f"Layer {L.describe(layer)} is not supported by {subject}: {why}. "
        f"If it is linear, or should pass its ordinary gradient under this rule, register it "
        f'before creating the analyzer: pgig_tf.register_layer({_class_path(layer)}, "linear"); for full '
        f"control register a function fn(layer, inputs, rule_name) -> outputs "
        f"(see help(pgig_tf.register_layer)). Supported without registering: Dense, Conv1D/2D/3D, "
        "DepthwiseConv1D/2D, ReLU/ReLU6/Activation, BatchNormalization, Rescaling, Normalization, pooling, "
        "Add/Subtract/Average/Concatenate/Maximum/Minimum, Flatten, Reshape, Permute, Dropout, "
        "ZeroPadding, Cropping, UpSampling, Softmax, nested Sequential/Functional models. The "
        "plain 'gradient' rule works with any layer."
    )


def _no_pattern_for_separable(layer, subject):
    return ValueError(
        f"Layer {L.describe(layer)} is not supported by {subject}: a separable "
        "convolution has two kernels (depthwise, then pointwise), and a pattern (Eq. 2) is "
        "defined for one linear map followed by its activation. Build it as DepthwiseConv2D "
        "followed by a 1x1 Conv2D (both supported; same function), or use the 'gradient' or "
        "'guided_backprop' rule, which pass it with its ordinary gradient."
    )
