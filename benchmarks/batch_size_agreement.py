"""How far each method's maps move when only `batch_size` changes (the chunking of the gradient evaluations).

Every method's gradient evaluations run in chunks of `batch_size` points. The same seed draws
the same noise at every batch size, so the maps can differ only through float32 rounding: the
order of the sums, and the model's own layers, whose CPU kernels may round a sample differently
depending on the batch it sits in. Max pooling can turn such a rounding into another winner of
a near-tie, which moves one path point's gradient to other pixels. This benchmark measures, per
method, the largest difference between the maps at each batch size and at a reference batch
size, relative to the largest |value| of each image's reference map.

The model is the embedded digits CNN (`pgig_tf.datasets.digits`), by default explaining its
logits (a copy whose last layer has no softmax); `--explain softmax` explains its softmax
output, where the gradients of confidently classified digits are dominated by rounding. Run from
the repository root: `python -m benchmarks.batch_size_agreement`.
"""

import argparse
import os
import warnings

import numpy as np


def relative_difference(maps, reference):
    """max over samples of max|maps − reference| / max|reference| (per sample; 0 where both are zero)."""
    maps, reference = np.asarray(maps, np.float64), np.asarray(reference, np.float64)
    difference = np.abs(maps - reference).reshape(len(reference), -1).max(axis=1)
    scale = np.abs(reference).reshape(len(reference), -1).max(axis=1)
    ratios = np.divide(difference, scale, out=np.where(difference > 0, np.inf, 0.0), where=scale > 0)
    return float(ratios.max())


def agreement(model, images, methods, batch_sizes, reference_batch_size, patterns=None, background=None, seed=0):
    """{method: {batch_size: relative difference to the reference batch size's maps}}.

    Each analyzer gets `seed`, `patterns` and `background` where it uses them
    (`pgig_tf.analyzers.build_analyzer`), so every batch size draws the same noise.
    """
    from pgig_tf.analyzers import build_analyzer

    def maps(name, batch_size):
        analyzer = build_analyzer(
            name, model, patterns=patterns, background=background, seed=seed, batch_size=batch_size
        )
        return analyzer.analyze(images)

    rows = {}
    for name in methods:
        reference = maps(name, reference_batch_size)
        rows[name] = {size: relative_difference(maps(name, size), reference) for size in batch_sizes}
    return rows


def without_softmax(model):
    """A copy of a Sequential model whose last layer's activation is linear (same weights): it outputs logits."""
    import keras

    config = model.get_config()
    config["layers"][-1]["config"]["activation"] = "linear"
    copy = keras.Sequential.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--explain", choices=["logits", "softmax"], default="logits")
    parser.add_argument("--images", type=int, default=16, help="held-out digits explained (default 16)")
    parser.add_argument("--batch-sizes", default="1,3,7,1000", help="comma-separated batch sizes compared")
    parser.add_argument("--reference-batch-size", type=int, default=64, help="default 64, the analyzers' default")
    parser.add_argument("--methods", default=None, help="comma-separated names (default: every method but random)")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--out", default="results/batch_size_agreement.json")
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not batch_sizes or min(batch_sizes + [args.reference_batch_size]) < 1:
        parser.error("--batch-sizes and --reference-batch-size must be positive integers")
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")

    import tensorflow as tf

    from benchmarks.bench_speed import machine_info, write_report
    from pgig_tf.analyzers import ANALYZERS, analyzer_class
    from pgig_tf.datasets.digits import load_digits_images, trained_digits_cnn
    from pgig_tf.patterns.fitting import fit_patterns
    from pgig_tf.validation import SoftmaxOutputWarning

    methods = args.methods.split(",") if args.methods else [name for name in ANALYZERS if name != "random"]
    unknown = [name for name in methods if name not in ANALYZERS]
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}; known: {', '.join(ANALYZERS)}")
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    model = trained_digits_cnn(args.cache_dir, verbose=False)[0]
    if args.explain == "logits":
        model = without_softmax(model)
    x_train, _, x_test, _ = load_digits_images()
    needs_patterns = any(analyzer_class(name).rule_needs_patterns() for name in methods)
    patterns = fit_patterns(model, x_train, verbose=False) if needs_patterns else None
    rows = agreement(
        model, x_test[: args.images], methods, batch_sizes, args.reference_batch_size, patterns, x_train[:100]
    )
    print(
        f"digits CNN ({args.explain}), {args.images} held-out digits: largest |difference| to batch_size "
        f"{args.reference_batch_size}, relative to each map's largest |value|"
    )
    print(f"{'method':<22}" + "".join(f"{f'bs {size}':>11}" for size in batch_sizes))
    for name, row in rows.items():
        print(f"{name:<22}" + "".join(f"{row[size]:>11.1e}" for size in batch_sizes))
    report = {
        "explain": args.explain,
        "images": args.images,
        "reference_batch_size": args.reference_batch_size,
        "methods": {name: {str(size): value for size, value in row.items()} for name, row in rows.items()},
        "machine": machine_info(),
    }
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
