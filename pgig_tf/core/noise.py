"""Counter-based random streams: the noise, baselines and draws of sample i, key k, independent of chunking.

The draw of sample `i`, key `k` (of K keys per sample) is row g = i K + k of a Philox stream
keyed by (seed, quantity), so it does not depend on how the points are chunked, and the same
seed gives bit-identical results in every call and process. A chunk's points have consecutive
g (repeats allowed), so one random op draws all their rows.
"""

import contextlib

import tensorflow as tf

# Separate random streams for the different random quantities of one point.
NORMAL_STREAM, UNIFORM_BASELINE_STREAM, BACKGROUND_INDEX_STREAM, ALPHA_STREAM = range(4)


def sample_noise(x, seed, sample_index, key, keys_per_sample, noise_scale, segments=None):
    """N(0, sigma^2) noise per row of `x`, sigma = noise_scale * (max - min) of that row, keyed by (seed, i, key).

    `keys_per_sample` is K of the row ids i K + key, which must be consecutive (see `keyed_rows`).
    With `segments` (sizes along a flat row: one per model input) sigma is per segment.
    """
    low, high = sample_min_max(x, segments)
    unit = keyed_rows(seed, NORMAL_STREAM, row_ids(sample_index, key, keys_per_sample), x, NORMAL)
    return unit * (noise_scale * (high - low))


def sample_min_max(x, segments=None):
    """Per-row min and max of `x`; with `segments` of a flat row, each segment's own, spread over it."""
    if segments is None:
        axes = list(range(1, x.shape.rank))
        return (tf.reduce_min(x, axis=axes, keepdims=True), tf.reduce_max(x, axis=axes, keepdims=True))
    pieces = tf.split(x, segments, axis=1)
    low = tf.stack([tf.reduce_min(p, axis=1) for p in pieces], axis=1)
    high = tf.stack([tf.reduce_max(p, axis=1) for p in pieces], axis=1)
    return tf.repeat(low, segments, axis=1), tf.repeat(high, segments, axis=1)


def row_ids(sample_index, key, keys_per_sample):
    """Row g = i K + k of the random stream for sample i, key k (K keys per sample)."""
    return tf.cast(sample_index, tf.int64) * keys_per_sample + tf.cast(key, tf.int64)


# What a stream row holds: standard normals, uniforms in [0, 1), or raw 32-bit words.
NORMAL, UNIFORM, WORDS = "normal", "uniform", "words"

# Philox is named explicitly (TF's choice on CPU today), so the streams do not change with TF's
# 'auto_select'. Under jit_compile XLA's Philox runs instead: other, equally valid numbers.
_PHILOX = 1  # TF's RNG_ALG_PHILOX
_PER_BLOCK = 4  # one Philox block (one counter step) gives 4 float32 normals, uniforms or uint32 words

# XLA's Philox lays a call's elements out over the counter differently from TF's kernels, so a
# row drawn inside a longer call would depend on the chunk: under XLA every row is its own call.
_ONE_CALL_PER_ROW = [False]


@contextlib.contextmanager
def one_random_call_per_row(enabled=True):
    """While tracing under XLA (jit_compile): `keyed_rows` draws each row with its own op."""
    previous = _ONE_CALL_PER_ROW[0]
    _ONE_CALL_PER_ROW[0] = bool(enabled)
    try:
        yield
    finally:
        _ONE_CALL_PER_ROW[0] = previous


def keyed_rows(seed, stream, ids, like, values):
    """Row `ids[j]` of the Philox stream keyed by (seed, stream), shaped and typed like `like[j]`.

    Row g is the stream's elements from g w on, w = the row's size rounded up to a whole Philox
    block, so a row's numbers depend on (seed, stream, g) only: any chunk of points gets the same
    numbers. `ids` must be non-decreasing with steps of 0 or 1 (consecutive points, repeats for
    points that share a draw): one op then draws rows ids[0] .. ids[0] + len(ids) - 1, a static
    count under XLA, and each point gathers its own.
    """
    row_size = tf.reduce_prod(tf.shape(like)[1:])
    blocks = (row_size + _PER_BLOCK - 1) // _PER_BLOCK
    key = tf.reshape(tf.cast(tf.cast(seed, tf.int64) * 4 + stream, tf.uint64), [1])

    def draw(first_row, num_rows):  # rows first_row .. first_row + num_rows - 1 in one op
        counter = tf.stack([tf.cast(first_row * tf.cast(blocks, tf.int64), tf.uint64), tf.constant(0, tf.uint64)])
        shape = tf.stack([num_rows, blocks * _PER_BLOCK])
        if values == NORMAL:
            op, dtype = tf.raw_ops.StatelessRandomNormalV2, tf.float32
        elif values == UNIFORM:
            op, dtype = tf.raw_ops.StatelessRandomUniformV2, tf.float32
        else:
            op, dtype = tf.raw_ops.StatelessRandomUniformFullIntV2, tf.uint32
        return op(shape=shape, key=key, counter=counter, alg=_PHILOX, dtype=dtype)[:, :row_size]

    if _ONE_CALL_PER_ROW[0]:
        dtype = tf.uint32 if values == WORDS else tf.float32
        rows = tf.map_fn(lambda g: draw(g, 1)[0], ids, fn_output_signature=dtype)
    else:
        first = tf.cond(tf.size(ids) > 0, lambda: ids[0], lambda: tf.constant(0, tf.int64))
        rows = tf.gather(draw(first, tf.size(ids)), ids - first)
    if values != WORDS:
        rows = tf.cast(rows, like.dtype)
    return tf.reshape(rows, tf.shape(like))
