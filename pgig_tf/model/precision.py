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


@contextlib.contextmanager
def compute_dtype_scope(model, compute_dtype):
    """While tracing inside this scope, every layer of `model` computes in `compute_dtype`.

    Each leaf layer gets the mixed policy 'mixed_<dtype>' (variables stay float32 and are cast
    when read, inputs are cast on entry), and gets its own policy back on exit, so the user's
    model is unchanged afterwards; a traced graph keeps the precision it was traced with.
    With None nothing changes.
    """
    if compute_dtype is None:
        yield
        return
    layers = leaf_layers(model)
    saved = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            layer.dtype_policy = f"mixed_{compute_dtype}"
        yield
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy
