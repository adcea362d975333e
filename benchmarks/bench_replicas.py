"""Data parallelism: IG, PGIG, SmoothGrad `analyze` and `fit_patterns` per image, 1 device vs N replicas.

The N replicas are a `tf.distribute.MirroredStrategy` from `pgig_tf.make_strategy(N)`: N GPUs
if there are enough, else N logical CPU devices, which share the machine's cores, so on a CPU
this measures the strategy's overhead, not a speed-up. The replicated analyzers explain a copy
of the model whose weights are mirrored on every replica (`pgig_tf.model.distribute.mirror_model`),
as a multi-GPU run would; each row also reports the largest difference between the two maps
(relative to the largest |value|).

The default model is the embedded digits CNN (`pgig_tf.datasets.digits`); `--model vgg16` uses
Keras' VGG16 with random weights. Run from the repository root: `python -m benchmarks.bench_replicas`.
"""

import argparse
import os
import warnings

import numpy as np

# ~25 gradient evaluations per image each, as in bench_speed
METHODS = {"integrated_gradients": {"steps": 25}, "pgig": {"steps": 25}, "smoothgrad": {"samples": 25, "seed": 0}}


def time_methods(models, images, patterns, batch_size, repeats, strategies):
    """{method: {"one_device", "replicas" (s/image), "speedup", "max_relative_difference"}}."""
    from benchmarks.bench_speed import median_time
    from pgig_tf.analyzers import create_analyzer

    rows = {}
    for name, settings in METHODS.items():
        extra = {"patterns": patterns} if name == "pgig" else {}
        row, maps = {}, {}
        for key, model, strategy in zip(("one_device", "replicas"), models, strategies):
            analyzer = create_analyzer(name, model, batch_size=batch_size, strategy=strategy, **settings, **extra)
            seconds = median_time(lambda a=analyzer: a.analyze(images, neuron_selection=0), repeats)
            row[key] = seconds / len(images)
            maps[key] = analyzer.analyze(images, neuron_selection=0)
        row["speedup"] = row["one_device"] / row["replicas"]
        row["max_relative_difference"] = float(
            np.max(np.abs(maps["replicas"] - maps["one_device"])) / np.max(np.abs(maps["one_device"]))
        )
        rows[name] = row
        print(
            f"{name:<22}{row['one_device']:>12.4f}{row['replicas']:>12.4f}{row['speedup']:>9.2f}"
            f"{row['max_relative_difference']:>12.1e}"
        )
    return rows


def fit_section(models, data, batch_size, strategies):
    """fit_patterns per image on one device and on the replicas, and the largest difference of the patterns."""
    from benchmarks.bench_speed import fit_time

    row, fitted = {}, {}
    for key, model, strategy in zip(("one_device", "replicas"), models, strategies):
        row[key], fitted[key] = fit_time(model, data, batch_size, strategy)
    row["speedup"] = row["one_device"] / row["replicas"]
    row["max_relative_difference"] = max(
        float(np.max(np.abs(fitted["replicas"][k] - p)) / max(np.max(np.abs(p)), 1e-30))
        for k, p in fitted["one_device"].items()
    )
    row["batch_size"], row["images"] = batch_size, len(data)
    print(
        f"{'fit_patterns':<22}{row['one_device']:>12.4f}{row['replicas']:>12.4f}{row['speedup']:>9.2f}"
        f"{row['max_relative_difference']:>12.1e}"
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="digits",
        help="digits (the embedded CNN, the default), vgg16 (weights=None, 224x224), or a .keras file",
    )
    parser.add_argument("--replicas", type=int, default=2, help="replicas of the distributed runs (default 2)")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per analyze call (default 2 per replica: every replica gets whole images)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="the analyzers' batch size")
    parser.add_argument(
        "--fit-images", type=int, default=None, help="images of the fit_patterns timing (default 4 batches)"
    )
    parser.add_argument("--fit-batch-size", type=int, default=16, help="fit_patterns' batch size (split over replicas)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--out", default="results/bench_replicas.json")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error(f"--replicas must be at least 2 (1 device is the baseline), got {args.replicas}")

    from pgig_tf.model.distribute import make_strategy, mirror_model

    strategy = make_strategy(args.replicas)  # before TF initialises its devices
    import tensorflow as tf

    from benchmarks.bench_speed import inputs_for, load_model, machine_info, write_report
    from pgig_tf.patterns.patterns import Patterns
    from pgig_tf.validation import SoftmaxOutputWarning

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    model = load_model(args.model, args.cache_dir)
    mirrored = mirror_model(model, strategy)
    models, strategies = (model, mirrored), (None, strategy)
    patterns = Patterns(
        {
            l.name: np.random.default_rng(0).normal(0, 1, l.kernel.shape).astype(np.float32)
            for l in model.layers
            if hasattr(l, "kernel")
        }
    )
    images = inputs_for(model, args.images or 2 * args.replicas, seed=1)
    report = {
        "model": args.model,
        "replicas": args.replicas,
        "devices": list(strategy.extended.worker_devices),
        "images": len(images),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "settings": METHODS,
        "machine": machine_info(),
    }
    print(
        f"{args.model}: {len(images)} images per call, 1 device vs {args.replicas} replicas on "
        f"{', '.join(d.split('/')[-1] for d in strategy.extended.worker_devices)}; seconds per image"
    )
    print(f"{'':<22}{'1 device':>12}{f'{args.replicas} replicas':>12}{'speedup':>9}{'max diff':>12}")
    report["methods"] = time_methods(models, images, patterns, args.batch_size, args.repeats, strategies)
    write_report(args.out, report)
    if not args.skip_fit:
        data = inputs_for(model, args.fit_images or 4 * args.fit_batch_size, seed=4)
        report["fit_patterns"] = fit_section(models, data, args.fit_batch_size, strategies)
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
