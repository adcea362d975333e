"""What several commands share: reading a patterns file in pgig_tf's format or the PatternNet authors'."""

PATTERNS_FORMATS = ("npz", "reference")


def load_patterns(path, model, file_format="npz"):
    """The `Patterns` in the file at `path`, for `model`.

    Args:
        path: the patterns file.
        model: the Keras model the patterns are for (the reference format needs it to name layers).
        file_format: "npz" (written by `Patterns.save` or `pgig-fit-patterns`) or "reference"
            (the PatternNet authors' VGG16 file, keys A_0..A_15).

    Returns:
        A `pgig_tf.Patterns`.

    Raises:
        ValueError: an unknown `file_format`; the readers' errors for a file that cannot be used.
    """
    if file_format not in PATTERNS_FORMATS:
        raise ValueError(f"file_format must be one of {PATTERNS_FORMATS}, got {file_format!r}")
    if file_format == "reference":
        from pgig_tf.patterns.reference import load_reference_vgg16_patterns

        return load_reference_vgg16_patterns(path, model)
    from pgig_tf.patterns.patterns import Patterns

    return Patterns.load(path)
