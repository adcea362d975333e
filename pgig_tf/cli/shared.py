"""What several commands share: reading a patterns file (pgig_tf's format or the PatternNet authors') and the user's image .npz files."""

import numpy as np

PATTERNS_FORMATS = ("npz", "reference")


def check_shard_arguments(parser, args):
    """Stops with a usage error for --num-shards < 1, --shard-index outside [0, N), or --merge with --fresh."""
    if args.num_shards < 1:
        parser.error(f"--num-shards must be a positive integer, got {args.num_shards}")
    if not 0 <= args.shard_index < args.num_shards:
        parser.error(f"--shard-index must be in [0, {args.num_shards}), got {args.shard_index}")
    if args.merge and args.fresh:
        parser.error("--fresh discards a shard's checkpoint; --merge only reads the shards' checkpoints")


def batch_shard(args):
    """(num_shards, shard_index, images_per_batch): this process's shard, made of whole batches.

    The arguments of `data.shard_bounds` after the count (and the `shard` of
    `datasets.imagenet.tfds_image_dataset`): a shard then meets exactly the batches of one
    whole run, so its model calls round as one run's do.
    """
    return args.num_shards, args.shard_index, args.images_per_batch


def load_patterns(path, model, file_format="npz"):
    """The `Patterns` in the --patterns file at `path`, checked against `model`; SystemExit with one line otherwise.

    Args:
        path: the patterns file.
        model: the Keras model the patterns are for (the reference format needs it to name layers).
        file_format: "npz" (written by `Patterns.save` or `pgig-fit-patterns`) or "reference"
            (the PatternNet authors' VGG16 file, keys A_0..A_15).

    Returns:
        A `pgig_tf.Patterns` that fits `model`.

    Raises:
        ValueError: an unknown `file_format`.
        SystemExit: the file cannot be read, or its patterns do not fit `model` (naming the file;
            for a file in the authors' layout read as npz, saying to pass --patterns-format reference).
    """
    import re

    from pgig_tf.files import CorruptFileError
    from pgig_tf.patterns.patterns import Patterns

    if file_format not in PATTERNS_FORMATS:
        raise ValueError(f"file_format must be one of {PATTERNS_FORMATS}, got {file_format!r}")
    try:
        if file_format == "reference":
            from pgig_tf.patterns.reference import load_reference_vgg16_patterns

            return load_reference_vgg16_patterns(path, model)
        patterns = Patterns.load(path)
        names = list(patterns)
        layers = {layer.name for layer in model.layers}
        if names and all(re.fullmatch(r"A_\d+", n) for n in names) and not layers & set(names):
            raise SystemExit(
                f"--patterns {path!r} holds arrays {names[0]}..{names[-1]}, the PatternNet authors' layout: "
                "pass --patterns-format reference"
            )
        patterns.check(model)
        return patterns
    except CorruptFileError as error:
        raise SystemExit(f"--patterns: {error}") from None
    except ValueError as error:
        raise SystemExit(f"--patterns {path!r} does not fit the model: {error}") from None


def read_images_npz(path, option, need_labels=True):
    """(x float32 (N, H, W, C), y int64 (N,) or None) of an .npz given to `option`; SystemExit naming file and key otherwise.

    Checks everything that does not need the model: the file is an .npz, `x` is there and holds
    finite real numbers shaped (N, H, W, C) with N >= 2, and `y` (read if `need_labels`) holds
    N non-negative integer classes.
    """
    from pgig_tf.files import CorruptFileError, read_npz

    expected = "an image file (.npz with x: images (N, H, W, C), optional y: N classes)"
    try:
        entries, _ = read_npz(path, expected, "Write it with numpy.savez(path, x=images, y=labels).")
    except CorruptFileError as error:
        raise SystemExit(f"{option}: {error}") from None

    def fail(message):
        return SystemExit(f"{option}: {path!r}: {message}")

    if "x" not in entries:
        raise fail(f"no array 'x' (the images); the file holds {sorted(entries) or 'no arrays'}")
    x = entries["x"]
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise fail(f"'x' must hold real numbers (images preprocessed for the model), got dtype {x.dtype}")
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3:
            hint = " (one colour image? save x[None]; grey images without a channel axis? save x[..., None])"
        raise fail(f"'x' must have shape (N, H, W, C), got {x.shape}{hint}")
    if len(x) < 2:
        raise fail(f"'x' holds {len(x)} image(s); at least 2 are needed (intervals are bootstrapped over images)")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    bad = ~np.isfinite(x32)
    if bad.any():
        images = np.unique(np.nonzero(bad)[0])
        raise fail(
            f"'x' holds {int(bad.sum())} NaN, Inf or float32-overflowing value(s), in images {images[:10].tolist()}"
        )
    if not need_labels or "y" not in entries:
        return x32, None
    y = entries["y"]
    if y.ndim != 1:
        hint = " (one-hot labels? save y.argmax(axis=1))" if y.ndim == 2 and len(y) == len(x) else ""
        raise fail(f"'y' must hold one class index per image, shape ({len(x)},), got {y.shape}{hint}")
    if len(y) != len(x):
        raise fail(f"'y' holds {len(y)} labels for the {len(x)} images of 'x'")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise fail(f"'y' must hold integer class indices, got dtype {y.dtype} (save y.astype(int))")
    if (y < 0).any():
        raise fail(f"'y' holds negative classes, e.g. {int(y[y < 0][0])} at image {int(np.flatnonzero(y < 0)[0])}")
    return x32, y.astype(np.int64)


def check_against_model(x, y, input_shape, width, where, x_name="'x'", y_name="'y'"):
    """SystemExit saying `where` if images `x` do not fit the model's `input_shape` or labels `y` its `width` outputs."""
    expected = tuple(input_shape[1:])
    if x.shape[1:] != expected:
        raise SystemExit(f"{where}: {x_name} holds images of shape {x.shape[1:]}; the model takes {expected}")
    if y is not None and (y >= width).any():
        first = int(np.flatnonzero(y >= width)[0])
        raise SystemExit(
            f"{where}: {y_name} holds class {int(y[first])} (image {first}), but the model has {width} "
            f"outputs (classes 0..{width - 1})"
        )
