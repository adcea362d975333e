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


def shard_bounds(count, num_shards, index, block=1):
    """(start, stop) of contiguous shard `index` of `num_shards` over `count` items (see `shard_sizes`).

    With `block` > 1 a shard holds whole blocks of `block` items (the last block of all may be
    short): the ceil(count / block) blocks are shared out as `shard_sizes` shares items. A run
    that works in batches of `block` then meets in its shards exactly the batches of one whole
    run, so differently composed batches cannot round its model calls differently.
    """
    blocks = -(-count // block)
    sizes = shard_sizes(blocks, num_shards)
    start = sum(sizes[:index]) * block
    return min(start, count), min(start + sizes[index] * block, count)


def iterate_batches(data, batch_size, sample_ranks, input_names=None):
    """Batches of model inputs from what users pass as data: (iterator of batches, number of batches or None).

    Args:
        data: for a single-input model, a numpy array, a tf.data.Dataset of x or (x, y), or an
            iterable of batches; for several inputs, a list/tuple/dict (by input name) of arrays
            holding all the data, a tf.data.Dataset of inputs or (inputs, y), or an iterable of
            such batches.
        batch_size: samples per batch where the batching is ours (arrays, unbatched datasets).
        sample_ranks: the rank of one sample (without the batch axis) of each model input; an int
            for a single-input model. It tells a batched dataset from an unbatched one.
        input_names: the model's input names (several inputs: dict data is keyed by them).

    Returns:
        (iterator, count): a single-input model's batches are numpy arrays; several inputs'
        batches keep the data's structure (list or dict of arrays). `count` is None when unknown.

    Raises:
        ValueError: the data holds no sample.
        TypeError: the data is of none of the kinds above.
    """
    single = not isinstance(sample_ranks, (list, tuple))
    first_rank = int(sample_ranks) if single else int(sample_ranks[0])
    if isinstance(data, tf.data.Dataset):
        first = _first_input(_inputs_part(data.element_spec), input_names)
        dataset = data if first.shape.rank == first_rank + 1 else data.batch(batch_size)
        cardinality = int(dataset.cardinality())
        read = _single_input if single else _inputs_part
        return (read(element) for element in dataset.as_numpy_iterator()), (cardinality if cardinality >= 0 else None)
    if single and (isinstance(data, (np.ndarray, tf.Tensor)) or _is_array_like(data)):
        array = np.asarray(data)
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValueError(f"data must hold at least one sample, got an array of shape {array.shape}")
        return (array[i : i + batch_size] for i in range(0, array.shape[0], batch_size)), -(
            -array.shape[0] // batch_size
        )
    if not single and is_whole_data(data, sample_ranks, input_names):
        arrays = (
            [np.asarray(data[name]) for name in input_names]
            if isinstance(data, dict)
            else [np.asarray(v) for v in data]
        )
        count = arrays[0].shape[0] if arrays[0].ndim else 0
        if count == 0:
            raise ValueError(f"data must hold at least one sample, got arrays of shapes {[a.shape for a in arrays]}")

        def batches():
            for i in range(0, count, batch_size):
                chunk = [a[i : i + batch_size] for a in arrays]
                yield dict(zip(input_names, chunk)) if isinstance(data, dict) else chunk

        return batches(), -(-count // batch_size)
    try:
        iterator = iter(data)
    except TypeError:
        if single:
            expected = "a numpy array, a tf.data.Dataset of x or (x, y), or an iterable of batches"
        else:
            expected = (
                f"for a model with {len(sample_ranks)} inputs must be a list/tuple/dict of arrays, a "
                "tf.data.Dataset of inputs or (inputs, y), or an iterable of batches"
            )
            raise TypeError(f"data {expected}; got {type(data).__name__}") from None
        raise TypeError(f"data must be {expected}; got {type(data).__name__}") from None
    total = len(data) if hasattr(data, "__len__") else None
    read = _single_input if single else _inputs_part
    return (read(batch) for batch in iterator), total


def is_whole_data(data, sample_ranks, input_names):
    """True if `data` is all of a multi-input model's data in memory: a list/tuple/dict of arrays, one per input."""
    if isinstance(data, dict):
        if set(data) != set(input_names):
            return False
        values = [data[name] for name in input_names]
    elif isinstance(data, (list, tuple)) and len(data) == len(sample_ranks):
        values = list(data)
    else:
        return False
    return all(isinstance(v, (np.ndarray, tf.Tensor)) for v in values) and all(
        np.ndim(v) == rank + 1 for v, rank in zip(values, sample_ranks)
    )


def _inputs_part(element):
    """The inputs of a data element: the element, or its first item when it is (inputs, y[, weights])."""
    if isinstance(element, (tuple, list)) and element and isinstance(element[0], (tuple, list, dict)):
        return element[0]
    return element


def _first_input(structure, input_names):
    """The first model input's part of a (possibly structured) element or spec."""
    if isinstance(structure, dict):
        return (
            structure.get(input_names[0], next(iter(structure.values())))
            if input_names
            else next(iter(structure.values()))
        )
    if isinstance(structure, (list, tuple)):
        return structure[0]
    return structure


def _single_input(element):
    """A single-input model's batch from a data element: x, or x of (x, y[, weights])."""
    if isinstance(element, (tuple, list)):
        element = element[0]
    if isinstance(element, dict):
        raise TypeError("dict-structured batches are not supported; pass the model input array")
    return np.asarray(element)


def _is_array_like(data):
    return isinstance(data, list) and len(data) > 0 and isinstance(data[0], (float, int, list))
