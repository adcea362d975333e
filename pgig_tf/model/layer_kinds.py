"""What each Keras layer is to the backward rules: kernel layers (linear part, bias, activation), ReLU gates, per-channel scalings, pass-through layers."""

import math

import keras
from keras import layers as kl
from keras import ops

# Layers whose kernel the pattern rules replace. Conv3D falls out of the same code; a
# depthwise convolution is a kernel layer whose unit (c, m) sees input channel c only.
KERNEL_LAYER_TYPES = (kl.Dense, kl.Conv1D, kl.Conv2D, kl.Conv3D, kl.DepthwiseConv1D, kl.DepthwiseConv2D)
DEPTHWISE_TYPES = (kl.DepthwiseConv1D, kl.DepthwiseConv2D)

# Two kernels in one layer (depthwise, then pointwise): the plain and guided rules pass it,
# pattern rules cannot (a pattern is keyed by layer and shaped like its one kernel).
SEPARABLE_TYPES = (kl.SeparableConv1D, kl.SeparableConv2D)

# Per-channel affine maps y = s * x + c in inference mode: each channel is a linear neuron
# with one input. See `diagonal_scale` and the pattern rules for how they are treated.
SCALE_TYPES = (kl.BatchNormalization, kl.Rescaling, kl.Normalization)

# Layers that every rule passes with their ordinary gradient: they have no kernel and no
# ReLU gate. Max-pooling routes the gradient to the forward pass's maxima, as PatternNet does.
PASS_THROUGH_TYPES = (
    kl.InputLayer,
    kl.Flatten,
    kl.Reshape,
    kl.Permute,
    kl.Dropout,
    kl.SpatialDropout1D,
    kl.SpatialDropout2D,
    kl.SpatialDropout3D,
    kl.GaussianNoise,
    kl.GaussianDropout,
    kl.AlphaDropout,
    kl.ZeroPadding1D,
    kl.ZeroPadding2D,
    kl.ZeroPadding3D,
    kl.Cropping1D,
    kl.Cropping2D,
    kl.Cropping3D,
    kl.MaxPooling1D,
    kl.MaxPooling2D,
    kl.MaxPooling3D,
    kl.AveragePooling1D,
    kl.AveragePooling2D,
    kl.AveragePooling3D,
    kl.GlobalMaxPooling1D,
    kl.GlobalMaxPooling2D,
    kl.GlobalMaxPooling3D,
    kl.GlobalAveragePooling1D,
    kl.GlobalAveragePooling2D,
    kl.GlobalAveragePooling3D,
    kl.Softmax,
    kl.Identity,
    kl.ActivityRegularization,
    kl.UpSampling1D,
    kl.UpSampling2D,
    kl.UpSampling3D,
    kl.RepeatVector,
    # merging layers: linear in their inputs (Add, Subtract, Average, Concatenate) or routing
    # the gradient to the selected input (Maximum, Minimum), like max-pooling
    kl.Add,
    kl.Subtract,
    kl.Average,
    kl.Concatenate,
    kl.Maximum,
    kl.Minimum,
)


def _keras_ops(*names):
    """Keras operation classes (nodes of a functional graph built with `keras.ops`) that exist here."""
    from keras.src.ops import numpy as numpy_ops

    return tuple(getattr(numpy_ops, name) for name in names if hasattr(numpy_ops, name))


# `keras.ops` calls in a functional graph that are linear in every tensor argument.
PASS_THROUGH_OPS = _keras_ops(
    "Add", "Subtract", "Negative", "Concatenate", "Stack", "GetItem", "Reshape", "Transpose", "ExpandDims", "Squeeze"
)

KERNEL, SEPARABLE, GATE, SCALE, PASS = "kernel", "separable", "gate", "scale", "pass"
_KIND_OF_CLASS = {
    **{cls: PASS for cls in PASS_THROUGH_OPS},
    **{cls: PASS for cls in PASS_THROUGH_TYPES},
    **{cls: SCALE for cls in SCALE_TYPES},
    **{cls: SEPARABLE for cls in SEPARABLE_TYPES},
    kl.ReLU: GATE,
    kl.Activation: GATE,  # or PASS: decided by its function below
    **{cls: KERNEL for cls in KERNEL_LAYER_TYPES},
}


def builtin_kind(layer):
    """(kind, MRO position) of the nearest built-in class of `layer`, or (None, position/None).

    kind is KERNEL, SEPARABLE, GATE, SCALE or PASS; None if the class is unknown, if a
    subclass overrides the built-in `call` (its forward is no longer the one we rewrite), or
    for ReLU layers with a threshold or a negative slope.
    """
    for position, cls in enumerate(type(layer).__mro__):
        kind = _KIND_OF_CLASS.get(cls)
        if kind is None:
            continue
        if getattr(type(layer), "call", None) is not getattr(cls, "call", None):
            return None, position
        if kind == GATE and gate_cap(layer) is None:
            kind = PASS if isinstance(layer, kl.Activation) else None
        return kind, position
    return None, None


def is_kernel_layer(layer):
    """True for the Dense/Conv/DepthwiseConv layers whose kernel a pattern rule substitutes."""
    return builtin_kind(layer)[0] == KERNEL


def is_depthwise(layer):
    """True for DepthwiseConv1D/2D (kernel (*window, in_channels, depth_multiplier))."""
    return isinstance(layer, DEPTHWISE_TYPES)


def activation_cap(fn):
    """The cap of a ReLU-type activation function: inf for `relu`, 6.0 for `relu6`, else None."""
    if fn is keras.activations.relu:
        return math.inf
    if fn is keras.activations.relu6:
        return 6.0
    return None


def gate_cap(layer):
    """The cap of a standalone ReLU gate (inf: plain ReLU; 6.0: ReLU6), or None if `layer` is none.

    Gates are `ReLU(max_value=None or m)` without threshold or leak and `Activation('relu')`
    or `Activation('relu6')`; the unit passes its input where 0 < x < cap.
    """
    if isinstance(layer, kl.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        return math.inf if layer.max_value is None else float(layer.max_value)
    if isinstance(layer, kl.Activation):
        return activation_cap(layer.activation)
    return None


def fused_gate_cap(layer):
    """The cap of a kernel layer's own ReLU-type activation, or None (no activation or another one)."""
    return None if layer.activation is None else activation_cap(layer.activation)


def linear_part(layer, x, kernel, dtype=None):
    """The layer's bias-free linear map applied to `x` with the given kernel (w^T x of Eq. 2).

    Computed in `dtype`, by default the layer's compute dtype, as its own `call` would be (a
    no-op cast in float32).
    """
    dtype = dtype or layer.compute_dtype
    x, kernel = ops.cast(x, dtype), ops.cast(kernel, dtype)
    if isinstance(layer, kl.Dense):
        return ops.matmul(x, kernel)
    if is_depthwise(layer):
        return ops.depthwise_conv(
            x,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if layer.padding == "causal":  # Conv1D: left-pad, then a 'valid' convolution, as its call does
        x = ops.pad(x, layer._compute_causal_padding())
        return ops.conv(
            x,
            kernel,
            strides=list(layer.strides),
            padding="valid",
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    return layer.convolution_op(x, kernel)


def add_bias(layer, z):
    """Adds the layer's bias to its linear output exactly as the layer's own `call` does."""
    if getattr(layer, "bias", None) is None:
        return z
    bias = ops.cast(layer.bias, z.dtype)
    if isinstance(layer, kl.Dense):
        return ops.add(z, bias)
    channels = bias.shape[0]  # filters; in_channels * depth_multiplier for a depthwise conv
    if layer.data_format == "channels_last":
        shape = (1,) * (layer.rank + 1) + (channels,)
    else:
        shape = (1, channels) + (1,) * layer.rank
    return ops.add(z, ops.reshape(bias, shape))


def unit_axis(layer):
    """The axis of the layer's output that indexes its units (output channels)."""
    if isinstance(layer, kl.Dense) or layer.data_format == "channels_last":
        return -1
    return 1


def separable_part(layer, x):
    """A SeparableConv layer's output before its activation, computed as its own `call` does."""
    dtype = layer.compute_dtype
    z = ops.separable_conv(
        ops.cast(x, dtype),
        ops.cast(layer.depthwise_kernel, dtype),
        ops.cast(layer.pointwise_kernel, dtype),
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    return add_bias(layer, z)


def unit_shape(layer):
    """The kernel axes that index the layer's units: (filters,), or (in_channels, multiplier) if depthwise."""
    kernel_shape = tuple(layer.kernel.shape)
    return kernel_shape[-2:] if is_depthwise(layer) else kernel_shape[-1:]


def diagonal_scale(layer, x):
    """s of a per-channel affine layer y = s * x + c (inference mode), broadcastable to `x`, in x's dtype.

    BatchNormalization: s = gamma / sqrt(moving_variance + epsilon) along its axis;
    Rescaling: its `scale`; Normalization: 1 / max(sqrt(variance), epsilon) (the inverse if `invert`).
    """
    if isinstance(layer, kl.BatchNormalization):
        variance = ops.cast(layer.moving_variance, "float32")
        scale = ops.rsqrt(variance + layer.epsilon)
        if layer.scale:
            scale = ops.cast(layer.gamma, "float32") * scale
        shape = [1] * len(x.shape)
        shape[layer.axis] = -1
        return ops.cast(ops.reshape(scale, shape), x.dtype)
    if isinstance(layer, kl.Normalization):
        deviation = ops.maximum(ops.sqrt(ops.cast(layer.variance, "float32")), keras.config.epsilon())
        return ops.cast(deviation if layer.invert else 1.0 / deviation, x.dtype)
    scale = ops.cast(layer.scale, x.dtype)  # Rescaling broadcasts its scale as numpy does
    if len(scale.shape) > 0 and keras.config.image_data_format() == "channels_first":
        scale = ops.reshape(scale, tuple(scale.shape) + (1,) * (3 - len(scale.shape)))
    return scale


def describe(layer):
    """`'name' (Class)`, for error messages."""
    return f"'{layer.name}' ({type(layer).__name__})"


def inference_call(layer):
    """Calls `layer` in inference mode (Keras drops `training` for layers that take none)."""
    return lambda *args, **kwargs: layer(*args, **{**kwargs, "training": False})
