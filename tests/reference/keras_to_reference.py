"""Translates a small Keras model into the numpy reference's layer specs (for cross-checking)."""

import keras
import numpy as np

import numpy_reference as ref


def _activation(layer):
    if layer.activation is keras.activations.relu:
        return "relu"
    if layer.activation is keras.activations.linear or layer.activation is None:
        return "linear"
    raise ValueError(f"no reference for activation of {layer.name}")


def to_reference(model):
    """The list of reference layer specs equivalent to a Sequential/Functional chain `model`."""
    specs = []
    for layer in model.layers:
        weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dense):
            specs.append(ref.Dense(weights[0], weights[1], _activation(layer)))
        elif isinstance(layer, keras.layers.Conv2D):
            specs.append(
                ref.Conv2D(
                    weights[0],
                    weights[1],
                    tuple(layer.strides),
                    layer.padding,
                    tuple(layer.dilation_rate),
                    _activation(layer),
                )
            )
        elif isinstance(layer, keras.layers.ReLU):
            specs.append(ref.ReLU())
        elif isinstance(layer, keras.layers.MaxPooling2D):
            specs.append(ref.MaxPool2D(tuple(layer.pool_size), tuple(layer.strides), layer.padding))
        elif isinstance(layer, keras.layers.AveragePooling2D):
            specs.append(ref.AvgPool2D(tuple(layer.pool_size), tuple(layer.strides), layer.padding))
        elif isinstance(layer, keras.layers.Flatten):
            specs.append(ref.Flatten())
        elif isinstance(layer, keras.layers.Softmax):
            specs.append(ref.Softmax())
        else:
            raise ValueError(f"no reference for layer {layer.name} ({type(layer).__name__})")
    return specs


def reference_patterns(model, specs, patterns):
    """The pgig_tf Patterns mapping as the reference's list, one per Dense/Conv2D in order."""
    names = [l.name for l in model.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))]
    return [np.asarray(patterns[n], np.float64) for n in names]
