"""A custom backward rule: DeconvNet (Zeiler & Fergus, 2014), where each ReLU passes the positive part of its incoming gradient.

Run from the repository root: `python docs/examples/custom_rule.py`.
"""

import keras
import numpy as np
import tensorflow as tf

import pgig_tf
from pgig_tf.core.rules import RULES, LayerwiseRule


class DeconvNetRule(LayerwiseRule):
    """At every ReLU the backward pass is relu(dy), whatever the sign of the ReLU's input."""

    name = "deconvnet"  # how errors and `rule_name` refer to the rule
    needs_patterns = False  # no fitted patterns needed

    def _relu(self, x):
        # Called for ReLU layers, Activation("relu") and fused activation="relu" alike.
        @tf.custom_gradient
        def relu(inputs):
            return tf.nn.relu(inputs), lambda dy: tf.nn.relu(dy)

        return relu(x)


# A tiny model y = w2 · relu(W1ᵀ x + b1) + b2 with random weights.
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
(W1, b1), (w2, b2) = model.layers[0].get_weights(), model.layers[1].get_weights()

# Independent formula: with relu(dy) at the ReLU the input gradient no longer depends on x:
# g = W1 · relu(w2), so Integrated Gradients (baseline 0) gives x ⊙ g and SmoothGrad gives g.
g = W1 @ np.maximum(w2[:, 0], 0.0)

# 1. Pass the class to any analyzer that takes rule=.
ig = pgig_tf.create_analyzer("integrated_gradients", model, rule=DeconvNetRule, steps=8)
np.testing.assert_allclose(ig.analyze(x, neuron_selection=0), x * g, rtol=1e-5, atol=1e-6)

# 2. Or register it by name, so that rule="deconvnet" works everywhere (save/load included).
RULES["deconvnet"] = DeconvNetRule
smooth = pgig_tf.create_analyzer("smoothgrad", model, rule="deconvnet", samples=4, seed=0)
np.testing.assert_allclose(smooth.analyze(x, neuron_selection=0), np.tile(g, (3, 1)), rtol=1e-5, atol=1e-6)

print("DeconvNet input gradient:", np.round(g, 4))
