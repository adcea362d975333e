"""The image degradation benchmark (PGIG paper §5-6, Fig. 3): MoRF AUPC, LeRF and SRG with 95% CIs, AUTVC; results.json, curves.png, heatmaps.png.

With no arguments it runs offline on the embedded default: a small VGG-style CNN trained
(once, then cached) on scikit-learn's handwritten digits. `--model vgg16 --dataset
imagenet2012 --manual-dir DIR` runs the paper's setting on TFDS ImageNet.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

from pgig_tf.cli.shared import batch_shard
from pgig_tf.files import atomic_write

EMBEDDED = "digits"
REPLACEMENTS = ("patch_mean", "image_mean", "blur", "road")


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
        help="patch_mean, image_mean, blur, road (ROAD's noisy linear imputation, Rong et al. 2022) or a "
        "number (default image_mean for digits, patch_mean otherwise)",
    )
    parser.add_argument(
        "--road-noise",
        type=float,
        default=None,
        help="--replacement road: the imputation noise's standard deviation, absolute (default 1%% of the "
        "input range: 0.02 for inputs in [-1, 1], 2.55 for VGG16's 0-255 inputs)",
    )
    parser.add_argument(
        "--blur-sigma", type=float, default=None, help="--replacement blur: Gaussian sigma in pixels (default 5)"
    )
    parser.add_argument("--absolute", action="store_true", help="rank patches by |attribution| instead of signed")
    parser.add_argument("--true-label", action="store_true", help="follow the true label, not the clean prediction")
    parser.add_argument("--model", default=EMBEDDED, help="digits (default), vgg16, or a .keras model file")
    parser.add_argument(
        "--dataset",
        default=EMBEDDED,
        help="digits (default), imagenet2012, any TFDS image dataset, or an .npz file of your images (x: (N, H, "
        "W, C) already preprocessed for the model; optional y: their classes)",
    )
    parser.add_argument(
        "--background-npz",
        default=None,
        help="with an .npz --dataset: training images (.npz with x) for fitting patterns and Expected Gradients' "
        "baselines (default: the training digits for the digits CNN)",
    )
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
        "--pattern-images",
        type=int,
        default=None,
        help="fit the patterns on the first N training images only (default: all of them)",
    )
    parser.add_argument(
        "--compute-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the precision the methods evaluate the model in (the curves stay float32); bfloat16 keeps the "
        "output layers in float32 and, on the digits CNN, changed no method's AUPC or SRG beyond its paired "
        "interval; it is faster only on hardware with bfloat16 units (a CPU with AMX, a GPU): on an AVX2 CPU, "
        "VGG16 ran ten times slower (see the docs' speed options)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="override one method's setting, e.g. smooth_taylor.noise_scale=0.1 or "
        "smooth_taylor.noise_scale=adaptive (VALUE is read as JSON if it can be, else as text; repeatable)",
    )
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
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split the images into N contiguous shards of whole --images-per-batch batches (default 1)",
    )
    parser.add_argument("--shard-index", type=int, default=0, help="the shard this process runs, 0 to N-1")
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
    for name in (
        "num_images",
        "images_per_batch",
        "batch_size",
        "patch_size",
        "num_steps",
        "num_background",
        "pattern_images",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.replicas < 1:
        parser.error(f"--replicas must be a positive integer, got {args.replicas}")
    from pgig_tf.cli.shared import check_shard_arguments

    check_shard_arguments(parser, args)
    if args.model == "vgg16":
        args.preprocessing = args.preprocessing or "caffe225"
        args.weights = args.weights or "imagenet"
    elif args.preprocessing is not None or args.weights is not None:
        parser.error("--preprocessing and --weights apply only to --model vgg16")
    args.npz = args.dataset.endswith(".npz")
    if args.dataset != EMBEDDED and not args.npz and args.model == EMBEDDED:
        parser.error("--dataset other than digits or an .npz file needs --model vgg16 or a .keras model file")
    if args.npz and not os.path.isfile(args.dataset):
        parser.error(f"--dataset {args.dataset!r}: there is no such file")
    if args.background_npz is not None and not args.npz:
        parser.error("--background-npz applies only to an .npz --dataset")
    if args.background_npz is not None and not os.path.isfile(args.background_npz):
        parser.error(f"--background-npz {args.background_npz!r}: there is no such file")
    if args.split is None and args.dataset != EMBEDDED and not args.npz:
        args.split = "validation" if args.dataset == "imagenet2012" else "test"
    embedded = args.model == EMBEDDED
    args.batch_size = args.batch_size or (256 if embedded else 64)
    args.patch_size = args.patch_size or (4 if embedded else 9)
    args.num_steps = args.num_steps or (64 if embedded else 100)
    args.replacement = args.replacement or ("image_mean" if embedded else "patch_mean")
    try:
        args.replacement = float(args.replacement)
    except ValueError:
        if args.replacement not in REPLACEMENTS:
            parser.error(
                f"--replacement must be one of {', '.join(REPLACEMENTS)} or a number, got {args.replacement!r}"
            )
    else:
        if not np.isfinite(args.replacement):
            parser.error(f"--replacement must be a finite number, got {args.replacement}")
    if args.road_noise is not None and args.replacement != "road":
        parser.error("--road-noise applies only to --replacement road")
    if args.blur_sigma is not None and args.replacement != "blur":
        parser.error("--blur-sigma applies only to --replacement blur")
    if args.replacement == "road" and args.road_noise is None:
        args.road_noise = 2.55 if args.model == "vgg16" else 0.02
    if args.road_noise is not None and not (np.isfinite(args.road_noise) and args.road_noise >= 0):
        parser.error(f"--road-noise must be a finite number >= 0, got {args.road_noise}")
    if args.replacement == "blur" and args.blur_sigma is None:
        args.blur_sigma = 5.0
    if args.blur_sigma is not None and not (np.isfinite(args.blur_sigma) and args.blur_sigma > 0):
        parser.error(f"--blur-sigma must be a finite number > 0, got {args.blur_sigma}")
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be a positive integer, got {args.checkpoint_every}")
    if args.patterns is not None and not os.path.isfile(args.patterns):
        parser.error(f"--patterns {args.patterns!r}: there is no such file")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from pgig_tf.names import ANALYZER_NAMES

    unknown = [m for m in args.methods if m not in ANALYZER_NAMES]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(ANALYZER_NAMES)}")
    if args.pattern_images is not None and args.patterns is not None:
        parser.error("--pattern-images limits the patterns fitted here; it does not apply to a --patterns file")
    args.overrides = {}
    for item in args.set:
        key, equals, text = item.partition("=")
        method, dot, option = key.partition(".")
        if not (equals and dot and method and option):
            parser.error(f"--set takes METHOD.OPTION=VALUE, got {item!r}")
        if method not in args.methods:
            parser.error(f"--set {item!r}: {method!r} is not among --methods")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        args.overrides.setdefault(method, {})[option] = value
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
    """What a run explains: the model, its evaluation images (as batches of one shard), patterns, background.

    num_images: the shard's images; total_images: the images of all shards.
    """

    def __init__(self, model, accuracy, batches, num_images, patterns, background, description, total_images):
        self.model, self.accuracy, self.batches, self.num_images = model, accuracy, batches, num_images
        self.total_images = total_images
        self.patterns, self.background, self.description = patterns, background, description


def _array_batches(images, labels, args):
    """The shard's images (`cli.shared.batch_shard`, see `data.shard_bounds`) in batches."""
    from pgig_tf.data import shard_bounds

    start, stop = shard_bounds(len(images), *batch_shard(args))
    images, labels = images[start:stop], labels[start:stop]
    step = args.images_per_batch
    return (((images[i : i + step], labels[i : i + step]) for i in range(0, len(images), step)), len(images))


def digits_setting(args, model=None, strategy=None):
    """The embedded default: the cached digits CNN (or `model`) on held-out digits; patterns fitted on the rest."""
    from pgig_tf.datasets.digits import load_digits_images, trained_digits_cnn
    from pgig_tf.evaluation.benchmark import predict_batches
    from pgig_tf.model.distribute import mirror_model

    if model is None:
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
    patterns = run_patterns(args, model, x_train, strategy, verbose=False)
    batches, num_images = _array_batches(x_test[:count], y_test[:count], args)
    description = {
        "model": name,
        "dataset": "sklearn load_digits (32x32, [-1, 1])",
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
    }
    return Setting(model, accuracy, batches, num_images, patterns, x_train[: args.num_background], description, count)


def run_patterns(args, model, training_images, strategy=None, verbose=False):
    """The run's patterns: read from --patterns, else fitted on the first --pattern-images training images
    when a method needs them, else None."""
    from pgig_tf.cli.shared import load_patterns
    from pgig_tf.patterns.fitting import fit_patterns

    if args.patterns:
        return load_patterns(args.patterns, model, args.patterns_format)
    if needs_patterns(args):
        return fit_patterns(model, training_images[: args.pattern_images], verbose=verbose, strategy=strategy)
    return None


def run_settings(args, name):
    """The settings of method `name` in this run: `method_settings`, --compute-dtype, then the --set overrides."""
    precision = {"compute_dtype": "bfloat16"} if args.compute_dtype == "bfloat16" and name != "random" else {}
    return {**method_settings(name), **precision, **args.overrides.get(name, {})}


def needs_patterns(args):
    """Whether any of the run's methods uses patterns (its fixed rule, or a pattern rule set with --set)."""
    from pgig_tf.analyzers import analyzer_class

    return any(analyzer_class(name).rule_needs_patterns(run_settings(args, name).get("rule")) for name in args.methods)


def tfds_setting(args, strategy=None):
    """VGG16 (or a .keras model) on a TFDS image dataset, streamed in batches of this shard's images."""
    import keras

    from pgig_tf.datasets import imagenet
    from pgig_tf.model.distribute import mirror_model

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
    patterns = run_patterns(args, model, background, strategy, verbose=not args.quiet)
    batches = (
        (images, labels)
        for images, labels in imagenet.iterate_tfds_images(
            args.dataset,
            args.split,
            batch_size=args.images_per_batch,
            num_images=num_images,
            shard=batch_shard(args),
            **source,
        )
    )
    from pgig_tf.data import shard_bounds

    start, stop = shard_bounds(num_images, *batch_shard(args))
    shard_count = stop - start
    description = {
        "model": args.model,
        "dataset": f"{args.dataset}:{args.split}",
        "preprocessing": preprocess_name,
        "weights": args.weights if args.model == "vgg16" else args.model,
    }
    return Setting(model, None, batches, shard_count, patterns, background, description, num_images)


def npz_setting(args, strategy=None):
    """The digits CNN or a .keras model on the user's images from an .npz (x, optional y), in batches of this shard."""
    from pgig_tf.cli.shared import check_against_model, read_images_npz
    from pgig_tf.data import shard_bounds
    from pgig_tf.evaluation.benchmark import predict_batches
    from pgig_tf.model.distribute import mirror_model
    from pgig_tf.model.spec import model_io

    x, y = read_images_npz(args.dataset, "--dataset")
    background = None
    if args.model == EMBEDDED:
        from pgig_tf.datasets.digits import trained_digits_cnn

        model, _, (background, _, _, _) = trained_digits_cnn(args.cache_dir, seed=args.seed, verbose=not args.quiet)
    else:
        import keras

        model = keras.models.load_model(args.model, compile=False)
    input_shape, width = model_io(model)
    check_against_model(x, y, input_shape, width, f"--dataset: {args.dataset!r}")
    if args.background_npz is not None:
        background, _ = read_images_npz(args.background_npz, "--background-npz", need_labels=False)
        check_against_model(background, None, input_shape, width, f"--background-npz: {args.background_npz!r}")
    if args.true_label and y is None:
        raise SystemExit(f"--true-label: {args.dataset!r} holds no 'y' (the images' classes)")
    from pgig_tf.analyzers import analyzer_class

    uses_background = any(analyzer_class(name).uses_background for name in args.methods)
    if background is None and ((needs_patterns(args) and not args.patterns) or uses_background):
        raise SystemExit(
            "pattern methods and expected_gradients need training images: give --background-npz FILE (or --patterns "
            "FILE for the pattern methods)"
        )
    accuracy = None if y is None else float(np.mean(predict_batches(model, x).reshape(len(x), -1).argmax(1) == y))
    model = mirror_model(model, strategy)
    patterns = run_patterns(args, model, background, strategy, verbose=False)
    count = min(args.num_images or len(x), len(x))
    start, stop = shard_bounds(count, *batch_shard(args))
    step = args.images_per_batch
    labels = y[start:stop] if y is not None else None
    batches = (
        (x[start:stop][i : i + step], None if labels is None else labels[i : i + step])
        for i in range(0, stop - start, step)
    )
    description = {"model": args.model, "dataset": f"{args.dataset} ({len(x)} images)", "evaluated_images": count}
    kept = None if background is None else background[: args.num_background]
    return Setting(model, accuracy, batches, stop - start, patterns, kept, description, count)


def load_setting(args, strategy=None):
    if args.npz:
        return npz_setting(args, strategy)
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
        "road_noise",
        "blur_sigma",
        "absolute",
        "true_label",
        "model",
        "dataset",
    ]
    if args.dataset != EMBEDDED and not args.npz:
        keys += ["split", "background_split"]  # the background split gives the patterns and EG's baselines
    if args.background_npz is not None:
        keys.append("background_npz")
    if args.pattern_images is not None:
        keys.append("pattern_images")
    if args.overrides:
        keys.append("overrides")
    if args.compute_dtype != "float32":
        keys.append("compute_dtype")
    if args.model == "vgg16":
        keys += ["preprocessing", "weights"]
    keys.append("patterns")
    if args.patterns:
        keys.append("patterns_format")
    keys += ["num_shards", "num_background"]
    skip = {"road_noise": args.replacement != "road", "blur_sigma": args.replacement != "blur"}
    return {key: getattr(args, key) for key in keys if not skip.get(key)}


def run_identity(model, patterns, background=None):
    """What a resumed or merged run must share beyond its settings: the model's weights, the patterns, the
    background images, the versions.

    SHA-256s of the model's fingerprint (`model.fingerprint`: layers, activations, weights), of
    the patterns' arrays and of the background images (Expected Gradients' baselines), and the
    library versions that compute the numbers.
    """
    from pgig_tf.files import checksum
    from pgig_tf.model.fingerprint import model_sha256

    model_sha = model_sha256(model)
    arrays = {name: np.asarray(patterns[name]) for name in patterns} if patterns is not None else {}
    found = versions()
    return {
        "model_sha256": model_sha,
        "patterns_sha256": checksum(arrays),
        "background_sha256": checksum({} if background is None else {"background": np.asarray(background)}),
        **{key: found[key] for key in ("pgig_tf", "tensorflow", "keras", "numpy")},
    }


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
    """Writes results.json, curves.png and (when the examples exist) heatmaps.png; returns the results."""
    from pgig_tf.evaluation.benchmark import AREA_KEYS, CONFIDENCE, RESAMPLES, pairwise_differences
    from pgig_tf.viz.plots import plot_degradation_curves, plot_heatmap_grid

    methods = {name: t.summary() for name, t in totals.items()}
    with_lerf = all(t.lerf for t in totals.values())
    results = {
        "settings": fingerprint,
        "model": model_info,
        "versions": versions(),
        "num_images": next(iter(methods.values()))["num_images"],
        "aupc_definition": "MoRF (most relevant first): trapezoid over k = 0..K with unit spacing of the mean "
        "curve (probability x patches); lower is better",
        "lerf_auc_definition": "LeRF (least relevant first, the exact reverse order), same area; higher is better",
        "srg_definition": "symmetric relevance gain lerf_auc - aupc (Blücher et al., TMLR 2024); higher is better, "
        "0 in expectation for a random ranking",
        "ci_definition": f"<key>_ci: {CONFIDENCE:.0%} percentile bootstrap interval of the mean over images "
        f"({RESAMPLES} resamples, seed 0); pairwise: the paired difference of every two methods",
        "autvc_definition": "trapezoid over scales 1, 2, 4, 8 (those that fit) of the total variation of the "
        "channel-summed map divided by its max |value|",
        "methods": methods,
    }
    if len(totals) > 1 and results["num_images"] > 1:
        keys = AREA_KEYS if with_lerf else AREA_KEYS[:1]
        results["pairwise"] = {key: pairwise_differences(totals, key) for key in keys}
    with atomic_write(os.path.join(out, "results.json")) as handle:
        json.dump(results, handle, indent=1)
    plot_degradation_curves(
        methods,
        os.path.join(out, "curves.png"),
        title=f"image degradation, {model_info.get('model', '')}",
    )
    if os.path.exists(examples_path):
        with np.load(examples_path) as data:
            images = data["__images__"]
            maps = {name: data[name] for name in totals if name in data.files}
            titles = example_row_titles({key: data[key] for key in data.files if key.startswith("__")})
        plot_heatmap_grid(images, maps, os.path.join(out, "heatmaps.png"), row_titles=titles)
    return results


def format_interval(interval):
    return "n/a" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def print_table(results):
    """The methods by AUPC (lowest first) with the 95% intervals of AUPC and SRG, AUTVC and seconds per image."""
    rows = sorted(results["methods"].items(), key=lambda item: item[1]["aupc"])
    print(f"{'method':<22}{'AUPC':>8} {'95% CI':<16}{'SRG':>8} {'95% CI':<16}{'AUTVC':>7}{'s/image':>9}")
    for name, r in rows:
        srg = f"{r['srg']:>8.2f} {format_interval(r.get('srg_ci')):<16}" if "srg" in r else f"{'':>8} {'':<16}"
        print(
            f"{name:<22}{r['aupc']:>8.2f} {format_interval(r.get('aupc_ci')):<16}{srg}"
            f"{r['autvc']:>7.3f}{r['seconds_per_image']:>9.4f}"
        )


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
    """The checkpoint of an earlier run with these settings, or None; exits before any work if it is unusable."""
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
    written = ["results.json", "curves.png"] + (["heatmaps.png"] if os.path.exists(examples_path) else [])
    print(
        f"{accuracy}{summary}; {time.perf_counter() - started:.0f} s in all (this run); "
        f"wrote {', '.join(os.path.join(args.out, name) for name in written)}"
    )


def merge(args, info_path, examples_path):
    """--merge: checks that every shard's checkpoint is there and complete, then writes the results of all."""
    from pgig_tf.evaluation.benchmark import merge_states, state_path

    paths = [state_path(args.out, index, args.num_shards) for index in range(args.num_shards)]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise SystemExit(f"missing shard checkpoints in {args.out}: {', '.join(missing)}")
    try:
        fingerprint, totals = merge_states(paths)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print_table(write_results(args.out, fingerprint, totals, read_model_info(info_path), examples_path))


def curve_makers(args, model):
    """(MoRF, LeRF) `PerturbationCurves` of the run: patches of --patch-size, K = --num-steps, --replacement."""
    from pgig_tf.evaluation.perturbation import DEFAULT_BLUR_SIGMA, PerturbationCurves

    replacement = "own_patch_mean" if args.replacement == "patch_mean" else args.replacement
    options = dict(
        patch_size=args.patch_size,
        num_steps=args.num_steps,
        absolute=args.absolute,
        blur_sigma=args.blur_sigma or DEFAULT_BLUR_SIGMA,
        road_noise=args.road_noise or 0.0,
        seed=args.seed,
        batch_size=args.batch_size,
        images_per_call=args.images_per_batch,
    )
    return tuple(PerturbationCurves(model, order, replacement, **options) for order in ("morf", "lerf"))


def main(argv=None):
    from pgig_tf.cli import console

    console.prepare()
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    console.import_tensorflow()
    from pgig_tf.evaluation.benchmark import state_path
    from pgig_tf.files import LockedError, exclusive_lock

    info_path = os.path.join(args.out, "model_info.json")
    examples_path = os.path.join(args.out, "examples.npz")
    what = f"the output folder {args.out}" + (f" (shard {args.shard_index})" if args.num_shards > 1 else "")
    lock = os.path.join(args.out, f".lock-shard{'all' if args.merge else args.shard_index}of{args.num_shards}")
    try:
        with exclusive_lock(lock, what):
            if args.merge:
                merge(args, info_path, examples_path)
            else:
                run(args, state_path(args.out, args.shard_index, args.num_shards), info_path, examples_path)
    except LockedError as error:
        raise SystemExit(str(error)) from None


def run(args, checkpoint, info_path, examples_path):
    """One run (or one shard): resumes from `checkpoint` when it holds part of this run."""
    started = time.perf_counter()
    fingerprint = fingerprint_of(args)
    if args.fresh:
        removed = discard_checkpoint(checkpoint)
        if args.shard_index == 0 and os.path.exists(examples_path):
            os.remove(examples_path)
        if removed:
            print(f"--fresh: discarded the checkpoint {checkpoint}")
    previous = previous_state(checkpoint, fingerprint)
    done_before = previous["batches_done"] if previous is not None else 0
    known_total = previous["num_batches"] if previous is not None else None
    if known_total is not None and done_before >= known_total:
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
    if done_before:
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
    with atomic_write(info_path) as handle:
        json.dump(model_info, handle, indent=1)
    num_batches = -(-setting.num_images // args.images_per_batch)
    morf, lerf = curve_makers(args, setting.model)

    def settings(name):
        return run_settings(args, name)

    try:
        analyzers = build_analyzers(
            setting.model,
            args.methods,
            setting.patterns,
            setting.background,
            args.batch_size,
            args.seed,
            settings=settings,
            strategy=strategy,
        )
    except (TypeError, ValueError) as error:
        if not args.overrides:
            raise
        raise SystemExit(f"a --set value does not fit its method: {error}") from None
    from pgig_tf.data import shard_bounds
    from pgig_tf.evaluation.benchmark import run_benchmark

    batches = ((images, labels if args.true_label else None, labels) for images, labels in setting.batches)
    try:
        state, _ = run_benchmark(
            analyzers,
            morf,
            batches,
            num_batches,
            checkpoint,
            fingerprint,
            checkpoint_every=args.checkpoint_every,
            lerf=lerf,
            first_index=shard_bounds(setting.total_images, *batch_shard(args))[0],
            identity=run_identity(setting.model, setting.patterns, setting.background),
            keep_examples=6 if args.shard_index == 0 else 0,
            examples_path=examples_path if args.shard_index == 0 else None,
            verbose=not args.quiet,
        )
    except ValueError as error:
        if "Use another --out" not in str(error):
            raise
        raise SystemExit(str(error)) from None
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
