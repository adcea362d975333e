"""A custom layer under the non-plain rules: register how the backward rules should pass it.

Run from the repository root: `python docs/examples/custom_layer.py`.
"""

import keras
import numpy as np
import tensorflow as tf

import pgig_tf


class Scale(keras.layers.Layer):
    """Multiplies every feature by its own learned factor (a layer pgig_tf does not know)."""

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.factor


keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((4,)),
        keras.layers.Dense(6, activation="relu", name="hidden"),
        Scale(name="scale"),
        keras.layers.Dense(1, name="out"),
    ]
)
model.get_layer("scale").set_weights([np.linspace(0.5, 2.0, 6).astype("float32")])
x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
(W1, b1), (s,), (w2, b2) = (model.get_layer(n).get_weights() for n in ("hidden", "scale", "out"))
active = (x @ W1 + b1) > 0  # which hidden ReLUs are open, per sample

# Unknown layers are refused by every rule but the plain gradient, with an error that names them.
try:
    pgig_tf.create_analyzer("guided_backprop", model)
    raise AssertionError("an unknown layer should be refused")
except ValueError as error:
    assert "Scale" in str(error) and "register" in str(error)

# (1) "linear": the layer passes its ordinary gradient (here dy ⊙ s) under every rule.
pgig_tf.register_layer(Scale, "linear")
linear = pgig_tf.create_analyzer("guided_backprop", model).analyze(x, neuron_selection=0)
# Guided Backprop: relu of the incoming gradient (s ⊙ w2), only where the ReLU's input was positive.
expected = (active * np.maximum(s * w2[:, 0], 0.0)) @ W1.T
np.testing.assert_allclose(linear, expected, rtol=1e-5, atol=1e-6)


# (2) A function for full control: here the layer passes the gradient unchanged (as if s were 1).
def transparent(layer, inputs, rule_name):
    """Called in place of layer(inputs) while a rule rewrites the model; returns the forward value."""

    @tf.custom_gradient
    def call(x):
        def grad(dy, variables=None):  # the layer reads its own weight: no gradient for it
            return (dy, [None] * len(variables)) if variables else dy

        return layer(x), grad

    return call(inputs)


pgig_tf.register_layer(Scale, transparent)
transparent_maps = pgig_tf.create_analyzer("guided_backprop", model).analyze(x, neuron_selection=0)
expected = (active * np.maximum(w2[:, 0], 0.0)) @ W1.T
np.testing.assert_allclose(transparent_maps, expected, rtol=1e-5, atol=1e-6)
assert not np.allclose(linear, transparent_maps)  # the two treatments really differ here

pgig_tf.unregister_layer(Scale)  # registrations live in this process only
print("Guided Backprop, Scale as linear:\n", np.round(linear, 3))
print("Guided Backprop, Scale transparent:\n", np.round(transparent_maps, 3))
