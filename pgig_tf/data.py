"""Turning what users pass as data (arrays, tf.data datasets, iterables of batches) into float batches, and shards."""

import numpy as np
import tensorflow as tf


def shard_sizes(count, num_shards):
    """Sizes of `num_shards` contiguous shards of `count` items (ints or scalar tensors); they differ by at most one.

    The one meaning of "shard" in pgig_tf, for devices and benchmark runs alike: shard r holds a
    contiguous block of items, the first count % num_shards shards one item more; with fewer
    items than shards the last ones are empty.
    """
    return [(count + num_shards - 1 - r) // num_shards for r in range(num_shards)]


def shard_bounds(count, num_shards, index):
    """(start, stop) of contiguous shard `index` of `num_shards` over `count` items (see `shard_sizes`)."""
    sizes = shard_sizes(count, num_shards)
    start = sum(sizes[:index])
    return start, start + sizes[index]


def iterate_batches(data, batch_size, sample_rank):
    """Batches of model inputs from an array, a tf.data.Dataset of x or (x, y), or an iterable of batches.

    `sample_rank` is the rank of one sample (the model input's rank less the batch axis); it
    tells a batched dataset from an unbatched one. Returns (iterator of numpy arrays, number of
    batches or None when unknown).
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, (tuple, list)):
            spec = spec[0]
        batched = spec.shape.rank == sample_rank + 1
        dataset = data if batched else data.batch(batch_size)
        cardinality = int(dataset.cardinality())
        total = cardinality if cardinality >= 0 else None
        return (_inputs_of(element) for element in dataset.as_numpy_iterator()), total
    if isinstance(data, (np.ndarray, tf.Tensor)) or _is_array_like(data):
        array = np.asarray(data)
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValueError(f"data must hold at least one sample, got an array of shape {array.shape}")
        total = -(-array.shape[0] // batch_size)
        return (array[i : i + batch_size] for i in range(0, array.shape[0], batch_size)), total
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            "data must be a numpy array, a tf.data.Dataset of x or (x, y), or an iterable of batches; "
            f"got {type(data).__name__}"
        ) from None
    total = len(data) if hasattr(data, "__len__") else None
    return (_inputs_of(batch) for batch in iterator), total


def _inputs_of(element):
    if isinstance(element, (tuple, list)):
        element = element[0]
    if isinstance(element, dict):
        raise TypeError("dict-structured batches are not supported; pass the model input array")
    return np.asarray(element)


def _is_array_like(data):
    return isinstance(data, list) and len(data) > 0 and isinstance(data[0], (float, int, list))
