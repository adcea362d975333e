"""The image degradation benchmark (PGIG paper §5-6, Fig. 3) with AUPC/AUTVC: results.json, curves.png, heatmaps.png.

With no arguments it runs offline on the embedded default: a small VGG-style CNN trained
(once, then cached) on scikit-learn's handwritten digits. `--model vgg16 --dataset
imagenet2012 --manual-dir DIR` runs the paper's setting on TFDS ImageNet.
"""

import argparse
import glob
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

EMBEDDED = "digits"


def parse_args(argv=None):
    from pgig_tf.names import DEFAULT_METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="output folder (default results/)")
    parser.add_argument("--seed", type=int, default=0, help="seeds training, noise and the random control")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated create_analyzer names")
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="images to evaluate (default: all 359 held-out digits; 1000 for a TFDS dataset)",
    )
    parser.add_argument("--images-per-batch", type=int, default=32, help="images analysed per step (default 32)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="model evaluations per compiled chunk (default 256 for digits, 64 otherwise: "
        "the fastest per evaluation in benchmarks/bench_speed.py)",
    )
    parser.add_argument("--patch-size", type=int, default=None, help="patch side (default 4 for digits, 9 otherwise)")
    parser.add_argument(
        "--num-steps", type=int, default=None, help="patches perturbed, K (default: all 64 for digits, 100 otherwise)"
    )
    parser.add_argument(
        "--replacement",
        default=None,
        help="patch_mean, image_mean or a number (default image_mean for digits, patch_mean otherwise)",
    )
    parser.add_argument("--absolute", action="store_true", help="rank patches by |attribution| instead of signed")
    parser.add_argument("--true-label", action="store_true", help="follow the true label, not the clean prediction")
    parser.add_argument("--model", default=EMBEDDED, help="digits (default), vgg16, or a .keras model file")
    parser.add_argument("--dataset", default=EMBEDDED, help="digits (default), imagenet2012 or any TFDS image dataset")
    parser.add_argument("--split", default=None, help="TFDS split to evaluate (default validation, else test)")
    parser.add_argument("--background-split", default="train", help="TFDS split for patterns fitting/EG background")
    parser.add_argument("--num-background", type=int, default=1000, help="background images for Expected Gradients")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--manual-dir", default=None, help="TFDS manual directory (ImageNet's tar files)")
    parser.add_argument(
        "--preprocessing",
        default=None,
        choices=["caffe225", "crop224"],
        help="--model vgg16 only: caffe225 (reference code, default) or crop224 (paper text)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="--model vgg16 only: imagenet (default; needs the internet once), none (random), or a local weights file",
    )
    parser.add_argument("--patterns", default=None, help="patterns file (default: fitted on the training data)")
    parser.add_argument(
        "--patterns-format",
        default="npz",
        choices=["npz", "reference"],
        help="npz (pgig_tf's) or reference (the PatternNet authors' VGG16 A_0..A_15 file)",
    )
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"),
        help="where the embedded model is cached",
    )
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--shard-index", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=2, help="batches between checkpoints")
    parser.add_argument("--merge", action="store_true", help="combine the shard checkpoints in --out into results")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard this run's checkpoint in --out and start over (a run restarted without it "
        "continues from the checkpoint, or only rewrites the results if it is complete)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="devices to split each batch over (tf.distribute.MirroredStrategy): GPUs if there are "
        "enough, else logical CPU devices; 1 (default) runs on one device",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be a positive integer, got {args.replicas}")
    if not 0 <= args.shard_index < args.num_shards:
        parser.error(f"--shard-index must be in [0, {args.num_shards}), got {args.shard_index}")
    if args.fresh and args.merge:
        parser.error("--fresh discards a run's checkpoint; --merge only reads the shards' checkpoints")
    if args.model == "vgg16":
        args.preprocessing = args.preprocessing or "caffe225"
        args.weights = args.weights or "imagenet"
    elif args.preprocessing is not None or args.weights is not None:
        parser.error("--preprocessing and --weights apply only to --model vgg16")
    if args.dataset != EMBEDDED and args.model == EMBEDDED:
        parser.error("--dataset other than digits needs --model vgg16 or a .keras model file")
    if args.split is None and args.dataset != EMBEDDED:
        args.split = "validation" if args.dataset == "imagenet2012" else "test"
    embedded = args.model == EMBEDDED
    args.batch_size = args.batch_size or (256 if embedded else 64)
    args.patch_size = args.patch_size or (4 if embedded else 9)
    args.num_steps = args.num_steps or (64 if embedded else 100)
    args.replacement = args.replacement or ("image_mean" if embedded else "patch_mean")
    try:
        args.replacement = float(args.replacement)
    except ValueError:
        pass
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    return args


def method_settings(name):
    """The paper's hyperparameters (App. A) and the SmoothTaylor paper's for SmoothTaylor."""
    return {
        "integrated_gradients": {"steps": 25, "baseline": 0.0},
        "pgig": {"steps": 25, "baseline": 0.0},
        "smoothgrad_squared": {"samples": 25, "noise_scale": 0.15},
        "vargrad": {"samples": 25, "noise_scale": 0.15},
        "smoothgrad": {"samples": 25, "noise_scale": 0.15},
        "smoothgrad_ig": {"steps": 25, "samples": 25, "noise_scale": 0.15},
        "expected_gradients": {"samples": 49},
        "smooth_taylor": {"samples": 150, "noise_scale": 0.5},
        "noise_baseline_ig": {"steps": 50, "samples": 10},
    }.get(name, {})


def build_analyzers(model, methods, patterns, background, batch_size, seed, settings=method_settings, strategy=None):
    """name -> analyzer for `methods`, with `settings(name)`, patterns, background and seed where they apply."""
    from pgig_tf.analyzers import ANALYZERS, build_analyzer

    analyzers = {}
    for name in methods:
        if name not in ANALYZERS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(ANALYZERS)}")
        analyzers[name] = build_analyzer(
            name,
            model,
            patterns=patterns,
            background=background,
            seed=seed,
            batch_size=batch_size,
            strategy=strategy,
            **settings(name),
        )
    return analyzers


class Setting:
    """What a run explains: the model, its evaluation images (as batches of one shard), patterns, background."""

    def __init__(self, model, accuracy, batches, num_images, patterns, background, description):
        self.model, self.accuracy, self.batches, self.num_images = model, accuracy, batches, num_images
        self.patterns, self.background, self.description = patterns, background, description


def _array_batches(images, labels, args):
    """The shard's images (contiguous shard shard_index of num_shards, see `data.shard_bounds`) in batches."""
    from pgig_tf.data import shard_bounds

    start, stop = shard_bounds(len(images), args.num_shards, args.shard_index)
    images, labels = images[start:stop], labels[start:stop]
    step = args.images_per_batch
    return (((images[i : i + step], labels[i : i + step]) for i in range(0, len(images), step)), len(images))


def digits_setting(args, model=None, strategy=None):
    """The embedded default: the cached digits CNN (or `model`) on held-out digits; patterns fitted on the rest."""
    from pgig_tf.cli.shared import load_patterns
    from pgig_tf.datasets.digits import load_digits_images, trained_digits_cnn
    from pgig_tf.evaluation.benchmark import predict_batches
    from pgig_tf.model.distribute import mirror_model
    from pgig_tf.patterns.fitting import fit_patterns

    if model is None:
        from pgig_tf.cli.console import without_notices

        # training (first run only) under op determinism makes tf.data print an internal notice
        with without_notices():
            model, accuracy, (x_train, y_train, x_test, y_test) = trained_digits_cnn(
                args.cache_dir, seed=args.seed, verbose=not args.quiet
            )
        name = "digits_cnn"
    else:
        x_train, y_train, x_test, y_test = load_digits_images(args.seed)
        accuracy = float(np.mean(predict_batches(model, x_test).argmax(1) == y_test))
        name = args.model
    count = min(args.num_images or len(x_test), len(x_test))
    model = mirror_model(model, strategy)
    patterns = (
        load_patterns(args.patterns, model, args.patterns_format)
        if args.patterns
        else fit_patterns(model, x_train, verbose=False, strategy=strategy)
    )
    batches, num_images = _array_batches(x_test[:count], y_test[:count], args)
    description = {
        "model": name,
        "dataset": "sklearn load_digits (32x32, [-1, 1])",
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
    }
    return Setting(model, accuracy, batches, num_images, patterns, x_train[: args.num_background], description)


def tfds_setting(args, strategy=None):
    """VGG16 (or a .keras model) on a TFDS image dataset, streamed in batches of this shard's images."""
    import keras

    from pgig_tf.cli.shared import load_patterns
    from pgig_tf.datasets import imagenet
    from pgig_tf.model.distribute import mirror_model
    from pgig_tf.patterns.fitting import fit_patterns

    if args.model == "vgg16":
        preprocess, size = imagenet.PREPROCESSING[args.preprocessing]
        weights = None if args.weights == "none" else args.weights
        model = imagenet.build_vgg16(input_size=size, weights=weights)
        preprocess_name = args.preprocessing
    else:
        model = keras.models.load_model(args.model, compile=False)
        _, height, width, channels = model.inputs[0].shape
        preprocess, preprocess_name = imagenet.unit_preprocessing(height, width, channels), "unit (squash, [-1, 1])"
    model = mirror_model(model, strategy)  # weights on every replica's device
    source = dict(data_dir=args.data_dir, manual_dir=args.manual_dir, preprocess=preprocess)
    num_images = args.num_images or 1000
    background, _ = imagenet.load_tfds_images(
        args.dataset, args.background_split, num_images=args.num_background, **source
    )
    patterns = (
        load_patterns(args.patterns, model, args.patterns_format)
        if args.patterns
        else fit_patterns(model, background, verbose=not args.quiet, strategy=strategy)
    )
    batches = (
        (images, labels)
        for images, labels in imagenet.iterate_tfds_images(
            args.dataset,
            args.split,
            batch_size=args.images_per_batch,
            num_images=num_images,
            shard=(args.num_shards, args.shard_index),
            **source,
        )
    )
    from pgig_tf.data import shard_bounds

    start, stop = shard_bounds(num_images, args.num_shards, args.shard_index)
    shard_count = stop - start
    description = {
        "model": args.model,
        "dataset": f"{args.dataset}:{args.split}",
        "preprocessing": preprocess_name,
        "weights": args.weights if args.model == "vgg16" else args.model,
    }
    return Setting(model, None, batches, shard_count, patterns, background, description)


def load_setting(args, strategy=None):
    if args.dataset == EMBEDDED:
        if args.model == EMBEDDED:
            return digits_setting(args, strategy=strategy)
        import keras

        return digits_setting(args, keras.models.load_model(args.model, compile=False), strategy)
    if args.model == EMBEDDED:
        raise SystemExit("--dataset other than digits needs --model vgg16 or a .keras model file")
    from pgig_tf.cli.console import plain_tfds_progress

    plain_tfds_progress()  # preparing a dataset draws bars; a log gets none
    if args.split is None:
        args.split = "validation" if args.dataset == "imagenet2012" else "test"
    return tfds_setting(args, strategy)


def fingerprint_of(args):
    """The settings that decide a run's numbers (its checkpoint's identity); only those that apply to the run."""
    keys = [
        "seed",
        "methods",
        "num_images",
        "images_per_batch",
        "batch_size",
        "patch_size",
        "num_steps",
        "replacement",
        "absolute",
        "true_label",
        "model",
        "dataset",
    ]
    if args.dataset != EMBEDDED:
        keys.append("split")
    if args.model == "vgg16":
        keys += ["preprocessing", "weights"]
    keys.append("patterns")
    if args.patterns:
        keys.append("patterns_format")
    keys += ["num_shards", "num_background"]
    return {key: getattr(args, key) for key in keys}


def versions():
    import keras
    import tensorflow as tf

    from pgig_tf import __version__

    return {
        "pgig_tf": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def example_row_titles(data):
    """Row titles of the example heatmaps: the true class (when known) and the predicted class of each image."""
    if "__predictions__" not in data:
        return None
    predicted = data["__predictions__"]
    labels = data["__labels__"] if "__labels__" in data else [None] * len(predicted)
    return [
        (f"true {int(label)}\n" if label is not None else "") + f"predicted {int(p)}"
        for label, p in zip(labels, predicted)
    ]


def write_results(out, fingerprint, totals, model_info, examples_path):
    from pgig_tf.viz.plots import plot_degradation_curves, plot_heatmap_grid

    methods = {name: t.summary() for name, t in totals.items()}
    results = {
        "settings": fingerprint,
        "model": model_info,
        "versions": versions(),
        "num_images": next(iter(methods.values()))["num_images"],
        "aupc_definition": "trapezoid over k = 0..K with unit spacing of the mean curve (probability x patches)",
        "autvc_definition": "trapezoid over scales 1, 2, 4, 8 (those that fit) of the total variation of the "
        "channel-summed map divided by its max |value|",
        "methods": methods,
    }
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    plot_degradation_curves(
        methods,
        os.path.join(out, "curves.png"),
        title=f"image degradation, {model_info.get('model', '')} (steeper is better)",
    )
    if os.path.exists(examples_path):
        with np.load(examples_path) as data:
            images = data["__images__"]
            maps = {name: data[name] for name in totals if name in data.files}
            titles = example_row_titles({key: data[key] for key in data.files if key.startswith("__")})
        plot_heatmap_grid(images, maps, os.path.join(out, "heatmaps.png"), row_titles=titles)
    return results


def print_table(results):
    rows = sorted(results["methods"].items(), key=lambda item: item[1]["aupc"])
    print(f"{'method':<22}{'AUPC':>9}{'AUTVC':>9}{'s/image':>10}")
    for name, r in rows:
        print(f"{name:<22}{r['aupc']:>9.3f}{r['autvc']:>9.3f}{r['seconds_per_image']:>10.4f}")


def discard_checkpoint(path):
    """--fresh: removes this run's checkpoint; returns True if there was one."""
    if not os.path.exists(path):
        return False
    os.remove(path)
    return True


def read_model_info(path):
    """model_info.json of an earlier run ({} if it is gone)."""
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def previous_state(path, fingerprint):
    """The checkpoint of an earlier run with these settings, or None; exits before any work if its settings differ."""
    from pgig_tf.evaluation.benchmark import load_state

    try:
        return load_state(path, fingerprint)
    except ValueError as error:
        raise SystemExit(f"{error}\n(--fresh discards it and starts over)") from None


def finish(args, fingerprint, totals, model_info, examples_path, started, summary):
    """Writes results.json and the figures (one shard: only says it is done), printing what this run did."""
    if args.num_shards > 1:
        print(f"shard {args.shard_index} of {args.num_shards} done ({summary}); run again with --merge when all are")
        return
    results = write_results(args.out, fingerprint, totals, model_info, examples_path)
    print_table(results)
    accuracy = model_info.get("test_accuracy")
    accuracy = "test accuracy " + (f"{accuracy:.3f}; " if isinstance(accuracy, float) else "not measured; ")
    print(
        f"{accuracy}{summary}; {time.perf_counter() - started:.0f} s in all (this run); "
        f"wrote {os.path.join(args.out, 'results.json')}, curves.png, heatmaps.png"
    )


def main(argv=None):
    from pgig_tf.cli import console

    console.prepare()
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    console.import_tensorflow()
    from pgig_tf.evaluation.benchmark import merge_states, run_benchmark, state_path

    info_path = os.path.join(args.out, "model_info.json")
    examples_path = os.path.join(args.out, "examples.npz")
    if args.merge:
        paths = sorted(glob.glob(os.path.join(args.out, f"state-shard*of{args.num_shards}.json")))
        if len(paths) != args.num_shards:
            raise SystemExit(f"found {len(paths)} of {args.num_shards} shard checkpoints in {args.out}")
        fingerprint, totals = merge_states(paths)
        with open(info_path) as handle:
            model_info = json.load(handle)
        print_table(write_results(args.out, fingerprint, totals, model_info, examples_path))
        return

    fingerprint = fingerprint_of(args)
    checkpoint = state_path(args.out, args.shard_index, args.num_shards)
    if args.fresh and discard_checkpoint(checkpoint):
        print(f"--fresh: discarded the checkpoint {checkpoint}")
    previous = previous_state(checkpoint, fingerprint)
    done_before = previous["batches_done"] if previous is not None else 0
    known_total = previous.get("num_batches") if previous is not None else None  # recorded since --fresh exists
    if known_total and done_before >= known_total:
        # nothing left to compute: no model, patterns or analyzers are built
        print("already complete (use --fresh to recompute)")
        finish(
            args,
            fingerprint,
            previous["totals"],
            read_model_info(info_path),
            examples_path,
            started,
            f"nothing recomputed: all {known_total} batches and their s/image come from an earlier run",
        )
        return
    if known_total and done_before:
        print(f"resuming: {done_before} of {known_total} batches done")

    from pgig_tf.model.distribute import make_strategy

    # first: logical CPU devices (if there are not enough GPUs) must exist before TF initialises
    strategy = make_strategy(args.replicas) if args.replicas > 1 else None
    import keras
    import tensorflow as tf

    # the paper explains the softmax output on purpose (§5); the warning would repeat per method
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    setting = load_setting(args, strategy)
    model_info = dict(setting.description, test_accuracy=setting.accuracy, replicas=args.replicas)
    with open(info_path, "w") as handle:
        json.dump(model_info, handle, indent=1)
    num_batches = -(-setting.num_images // args.images_per_batch)
    if not known_total and done_before >= num_batches:  # a checkpoint that does not record num_batches
        print("already complete (use --fresh to recompute)")
        finish(
            args,
            fingerprint,
            previous["totals"],
            model_info,
            examples_path,
            started,
            f"nothing recomputed: all {num_batches} batches and their s/image come from an earlier run",
        )
        return
    if not known_total and done_before:
        print(f"resuming: {done_before} of {num_batches} batches done")
    from pgig_tf.evaluation.degradation import Degrader

    degrader = Degrader(
        setting.model, args.patch_size, args.num_steps, args.replacement, args.absolute, args.batch_size
    )
    analyzers = build_analyzers(
        setting.model, args.methods, setting.patterns, setting.background, args.batch_size, args.seed, strategy=strategy
    )
    batches = ((images, labels if args.true_label else None, labels) for images, labels in setting.batches)
    state, examples = run_benchmark(
        analyzers,
        degrader,
        batches,
        num_batches,
        checkpoint,
        fingerprint,
        checkpoint_every=args.checkpoint_every,
        keep_examples=6 if args.shard_index == 0 else 0,
        batch_seed=lambda index: (args.seed * 1_000_003 + index * 7919 + args.shard_index * 104_729) % (2**31 - 1),
        verbose=not args.quiet,
    )
    if examples:
        np.savez(examples_path, **examples)
    computed = num_batches - done_before
    if done_before:
        summary = (
            f"this run computed the last {computed} of {num_batches} batches; s/image covers all of them, "
            "the earlier run's included"
        )
    else:
        summary = f"this run computed all {num_batches} batches"
    finish(args, fingerprint, state["totals"], model_info, examples_path, started, summary)


if __name__ == "__main__":
    main()
