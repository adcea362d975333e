"""Data parallelism over several devices with tf.distribute: strategies, batch shards per replica, logical CPUs."""

import contextlib
import warnings

import tensorflow as tf

from pgig_tf.data import shard_sizes
from pgig_tf.validation import check_positive_int


def check_strategy(strategy, name="strategy"):
    """`strategy` if it is a `tf.distribute.Strategy` or None; TypeError otherwise."""
    if strategy is None or isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise TypeError(
        f"{name} must be a tf.distribute.Strategy (e.g. tf.distribute.MirroredStrategy or "
        f"pgig_tf.make_strategy(replicas)) or None, got {type(strategy).__name__}"
    )


def strategy_scope(strategy):
    """`strategy.scope()`, or a no-op for None: variables created in it are mirrored on every replica."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def variables_outside(strategy, variables):
    """Paths (or names) of the Keras/TF `variables` not created under `strategy.scope()` (i.e. not mirrored)."""
    outside = []
    for variable in variables:
        tf_variable = getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) else variable
        if not strategy.extended.variable_created_in_scope(tf_variable):
            outside.append(getattr(variable, "path", None) or variable.name)
    return outside


def check_jit_compile(strategy, model, jit_compile):
    """Raises if XLA cannot run `model` on every replica: it needs the weights mirrored on each device."""
    if strategy is None or not jit_compile or strategy.num_replicas_in_sync == 1:
        return
    outside = variables_outside(strategy, model.variables)
    if outside:
        raise ValueError(
            f"jit_compile=True with a strategy of {strategy.num_replicas_in_sync} replicas needs model "
            f"'{model.name}' built (or loaded) under strategy.scope(): XLA cannot read a variable that lives "
            f"on another device, and {len(outside)} of its variables (e.g. {outside[0]!r}) were created "
            "outside the scope. Build the model inside `with strategy.scope():`, or use jit_compile=False."
        )


def distribute_batch(strategy, tensors):
    """Each tensor of `tensors` split along its batch axis into one contiguous shard per replica.

    Returns (shards, offsets): `shards[i]` is a per-replica value holding replica r's part of
    `tensors[i]`; `offsets` holds the index of replica r's first sample in the whole batch (int32),
    so that a replica knows the global index of each of its samples. Call inside a tf.function.
    """
    replicas = strategy.num_replicas_in_sync
    sizes = shard_sizes(tf.shape(tensors[0])[0], replicas)
    starts = [tf.add_n(sizes[:r]) if r else tf.constant(0) for r in range(replicas)]
    shards = []
    for tensor in tensors:
        pieces = tf.split(tensor, sizes, axis=0)
        # inside a tf.function these values are not placed: each piece is copied to the device
        # of the replica whose ops read it, so a replica receives only its own samples
        shards.append(
            strategy.experimental_distribute_values_from_function(
                lambda context, pieces=pieces: tf.identity(pieces[context.replica_id_in_sync_group])
            )
        )
    offsets = strategy.experimental_distribute_values_from_function(
        lambda context: tf.identity(starts[context.replica_id_in_sync_group])
    )
    return shards, offsets


def run_sharded(strategy, function, tensors):
    """`function(*tensors)`; with a strategy, `function(*shards)` on every replica's contiguous part of the batch.

    `function` runs for its effects (e.g. adding to `replica_sums` variables) and returns
    nothing; a replica whose shard is empty skips it (TF's oneDNN CPU convolution gives an
    empty batch the input's channel count, which would break the layers after it). Call
    inside a tf.function.
    """
    if strategy is None:
        function(*tensors)
        return
    shards, _ = distribute_batch(strategy, list(tensors))

    def replica(*shard):
        tf.cond(tf.shape(shard[0])[0] > 0, lambda: _no_outputs(function, shard), tf.no_op)

    strategy.run(replica, args=tuple(shards))


def _no_outputs(function, arguments):
    function(*arguments)
    return tf.no_op()


@contextlib.contextmanager
def replica_sums(strategy):
    """Variables created in this scope are running sums kept per replica and summed when read.

    With a strategy each replica adds to its own copy (`assign_add` in `strategy.run`, no
    communication per batch); reading outside the replicas (`.numpy()`) returns the SUM of
    the copies, and assigning there spreads the value evenly over them. With None nothing changes.
    """
    if strategy is None:
        yield
        return

    def per_replica_sum(next_creator, **kwargs):
        kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
        kwargs["aggregation"] = tf.VariableAggregation.SUM
        return next_creator(**kwargs)

    # entered after the strategy's scope, so this creator runs first and the strategy's builds the variable
    with strategy.scope(), tf.variable_creator_scope(per_replica_sum):
        yield


def configure_cpu_devices(count):
    """Splits the CPU into `count` logical devices and returns their names; call before TF initialises its devices.

    The logical devices share the machine's cores, so they test multi-device code but add no
    compute.
    """
    count = check_positive_int(count, "count")
    physical = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(physical)
    if current is None or len(current) < count:
        try:
            tf.config.set_logical_device_configuration(physical, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            raise RuntimeError(
                f"{count} logical CPU devices are needed, but TensorFlow has already initialised its devices "
                f"with {have} CPU device{'s' if have != 1 else ''}: logical devices can only be configured "
                "before the first TensorFlow operation or Keras model of the process. Call "
                f"pgig_tf.make_strategy({count}) (or pgig_tf.model.distribute.configure_cpu_devices({count})) at the "
                "start of the program, before building the model."
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")[:count]]


def make_strategy(replicas: int) -> tf.distribute.Strategy:
    """A `tf.distribute.MirroredStrategy` of `replicas` replicas: one per GPU if there are enough, else logical CPUs.

    With at least `replicas` GPUs it uses GPU:0..replicas-1 with TensorFlow's default
    cross-device ops (NCCL all-reduce). Otherwise it splits the CPU into `replicas` logical
    devices (see `configure_cpu_devices`: call this before TensorFlow initialises its devices)
    and reduces on CPU:0 (`tf.distribute.ReductionToOneDevice`; NCCL needs GPUs).

    Args:
        replicas: the number of replicas (devices) to split each batch over.

    Returns:
        The strategy, for `strategy=` of an analyzer, `fit_patterns` or `load_analyzer`.

    Raises:
        ValueError: `replicas` is not a positive int, or TensorFlow has already initialised its
            devices with fewer CPUs than asked.
    """
    replicas = check_positive_int(replicas, "replicas")
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= replicas:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(replicas)])
    if gpus:
        warnings.warn(
            f"make_strategy({replicas}): only {len(gpus)} GPU(s), so the {replicas} replicas run on "
            "logical CPU devices",
            stacklevel=2,
        )
    devices = configure_cpu_devices(replicas) if replicas > 1 else ["/cpu:0"]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
    )


def replica_device():
    """The device the current replica's ops are placed on (the device scope `strategy.run` sets), or None."""
    return tf.no_op().device or None


def mirror_model(model, strategy):
    """A copy of `model` whose weights are mirrored on every replica of `strategy` (cloned under its scope).

    The same layers, names and weights; for models built or loaded outside `strategy.scope()`.
    With None (or a model already built under the scope) `model` itself is returned.
    """
    if strategy is None or not variables_outside(strategy, model.variables):
        return model
    import keras

    with strategy.scope():
        mirrored = keras.models.clone_model(model)
        mirrored.set_weights(model.get_weights())
    return mirrored
