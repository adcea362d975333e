"""What each Keras layer is to the backward rules: kernel layers split into linear part, bias and activation; ReLUs; pass-through layers."""

import keras
from keras import layers as kl
from keras import ops

# Layers whose kernel the pattern rules replace. Conv3D falls out of the same code.
KERNEL_LAYER_TYPES = (kl.Dense, kl.Conv1D, kl.Conv2D, kl.Conv3D)

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
)


def is_kernel_layer(layer):
    """True for the Dense/Conv layers whose kernel a pattern rule substitutes."""
    return isinstance(layer, KERNEL_LAYER_TYPES)


def is_relu_function(fn):
    """True if `fn` is Keras' plain ReLU activation (no threshold, cap or leak)."""
    return fn is keras.activations.relu


def is_relu_layer(layer):
    """True for a standalone plain ReLU: `ReLU()` with default settings or `Activation('relu')`."""
    if isinstance(layer, kl.ReLU):
        return (
            layer.max_value is None
            and float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
        )
    if isinstance(layer, kl.Activation):
        return is_relu_function(layer.activation)
    return False


def is_activation_layer(layer):
    """True for an `Activation` layer of any function (passed with its ordinary gradient unless ReLU)."""
    return isinstance(layer, kl.Activation)


def kernel_of(layer):
    """The kernel tensor of a Dense/Conv layer (the effective one, e.g. with LoRA merged)."""
    return layer.kernel


def linear_part(layer, x, kernel):
    """The layer's bias-free linear map applied to `x` with the given kernel (w^T x of Eq. 2)."""
    if isinstance(layer, kl.Dense):
        return ops.matmul(x, kernel)
    return layer.convolution_op(x, kernel)


def add_bias(layer, z):
    """Adds the layer's bias to its linear output exactly as the layer's own `call` does."""
    if isinstance(layer, kl.Dense):
        return z if layer.bias is None else ops.add(z, layer.bias)
    if not layer.use_bias:
        return z
    if layer.data_format == "channels_last":
        shape = (1,) * (layer.rank + 1) + (layer.filters,)
    else:
        shape = (1, layer.filters) + (1,) * layer.rank
    return ops.add(z, ops.reshape(layer.bias, shape))


def unit_axis(layer):
    """The axis of the layer's output that indexes its units (output channels)."""
    if isinstance(layer, kl.Dense) or layer.data_format == "channels_last":
        return -1
    return 1


def has_fused_relu(layer):
    """True if the kernel layer applies a plain ReLU as its own activation."""
    return is_relu_function(layer.activation)


def describe(layer):
    """`'name' (Class)`, for error messages."""
    return f"'{layer.name}' ({type(layer).__name__})"


def inference_call(layer):
    """Calls `layer` in inference mode (Keras drops `training` for layers that take none)."""
    return lambda *args, **kwargs: layer(*args, **{**kwargs, "training": False})
