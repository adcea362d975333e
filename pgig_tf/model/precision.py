"""Running a float32 model in bfloat16 for speed (AMX / AVX512-BF16 CPUs, recent GPUs), without touching the model."""

import contextlib

from pgig_tf.model.graph import leaf_layers

# None: the model's own precision. float16 is left out on purpose: without loss scaling, small
# gradients underflow to exact zeros.
COMPUTE_DTYPES = (None, "bfloat16")


def check_compute_dtype(compute_dtype, name="compute_dtype"):
    """None (the model's own precision) or 'bfloat16'."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"{name} must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    return compute_dtype


def output_layers(model):
    """The leaf layers that compute the model's outputs (looking through nested models)."""
    from pgig_tf.model.spec import producing_layer

    try:
        outputs = list(model.outputs or [])
    except (AttributeError, ValueError):  # a Sequential never built on an input has no output tensors yet
        outputs = []
    return [producing_layer(tensor) for tensor in outputs]


@contextlib.contextmanager
def compute_dtype_scope(model, compute_dtype, keep_output_layers=True):
    """While tracing inside this scope, every layer of `model` but its output layers computes in `compute_dtype`.

    Each leaf layer gets the mixed policy 'mixed_<dtype>' (variables stay float32 and are cast
    when read, inputs are cast on entry), and gets its own policy back on exit, so the user's
    model is unchanged afterwards; a traced graph keeps the precision it was traced with.
    The layers that compute the model's outputs stay float32, as mixed-precision training
    keeps its softmax: in bfloat16 (8 significant bits) a confident probability p rounds to 1
    and the factor p(1 - p) of its gradient to 0 or to noise, so single-point gradients of a
    softmax output would lose their ranking (`benchmarks/bfloat16_study.py` measured Spearman
    0.71 against 0.996 with the output layer in float32, on the digits CNN). With None nothing
    changes; `keep_output_layers=False` puts the output layers in `compute_dtype` too.
    """
    if compute_dtype is None:
        yield
        return
    kept = {id(layer) for layer in output_layers(model)} if keep_output_layers else set()
    layers = leaf_layers(model)
    saved = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            if id(layer) not in kept:
                layer.dtype_policy = f"mixed_{compute_dtype}"
        yield
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy
