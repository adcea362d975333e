"""pgig-evaluate: a faithfulness table (MoRF, LeRF, SRG, deletion, insertion; intervals and ranks) of attribution methods for an image model."""

import argparse
import json
import math
import os
import time
import warnings

import numpy as np

from pgig_tf.cli.shared import (
    PATTERNS_FORMATS,
    batch_shard,
    check_against_model,
    check_shard_arguments,
    read_images_npz,
)
from pgig_tf.names import DEFAULT_METHODS, PERTURBATION_REPLACEMENTS

EMBEDDED = "digits"
CHECKPOINT = "scores.npz"

DESCRIPTION = """\
How faithful is each attribution method to the model? For every image and method the map is
computed once, its patches ranked, and the model's output for the explained class followed
while patches are replaced most relevant first (MoRF) and least relevant first (LeRF), under
four replacements: the image's mean, each patch's own mean, a Gaussian blur, and ROAD's noisy
linear imputation (Rong et al., ICML 2022). Per image: the MoRF and LeRF areas over the
fraction replaced, SRG = LeRF - MoRF (symmetric relevance gain, Blücher et al., TMLR 2024;
higher is better, 0 for a random ranking), and the deletion and insertion areas of Petsiuk et
al. (BMVC 2018: pixels set to 0, and restored into the blurred image, most relevant first).
Every mean comes with a percentile bootstrap 95% interval over images (the same resampled
images for every method), a rank that counts only non-overlapping intervals (ties marked =),
and paired intervals of each pair's SRG difference. With no arguments: the embedded digits
CNN on its 359 held-out digits, all twelve methods. Writes results.json, results.md and
evaluation.png, and the per-image scores to scores.npz (the checkpoint a restarted run
resumes) in --out.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=EMBEDDED, help="digits (default: the embedded CNN), vgg16, or a .keras model file"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="--model vgg16 only: imagenet (default; needs the internet once), none (random), or a weights file",
    )
    parser.add_argument(
        "--preprocessing",
        default=None,
        choices=["caffe225", "crop224"],
        help="--model vgg16 only: caffe225 (default) or crop224 (see pgig-degradation-benchmark)",
    )
    parser.add_argument(
        "--data",
        default=EMBEDDED,
        help="digits (default: the held-out digits), a TFDS dataset name, or an .npz file holding x (images "
        "preprocessed for the model, (N, H, W, C)) and optionally y (N true classes)",
    )
    parser.add_argument("--split", default=None, help="TFDS split (default validation for imagenet2012, else test)")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--manual-dir", default=None, help="TFDS manual directory (ImageNet's tar files)")
    parser.add_argument(
        "--background-split", default="train", help="TFDS split for fitting patterns and Expected Gradients' baselines"
    )
    parser.add_argument(
        "--background-npz",
        default=None,
        help="an .npz whose x (preprocessed like the data) is used to fit patterns and as Expected Gradients' "
        "background (default: the training digits, or a TFDS dataset's --background-split)",
    )
    parser.add_argument(
        "--num-background",
        type=int,
        default=1000,
        help="background images for Expected Gradients (and for fitting patterns on a TFDS split)",
    )
    parser.add_argument("--patterns", default=None, help="a patterns file (default: fitted on the background images)")
    parser.add_argument(
        "--patterns-format",
        default="npz",
        choices=PATTERNS_FORMATS,
        help="npz (pgig_tf's) or reference (the PatternNet authors' VGG16 file)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated create_analyzer names (default: all {len(DEFAULT_METHODS)}, random included)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="images evaluated, at least 2 (default: all of digits or the .npz; 1000 of a TFDS split)",
    )
    parser.add_argument(
        "--target",
        default="label",
        choices=["label", "prediction"],
        help="the class explained: the true label (default, where the data has labels) or the clean prediction",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the digits CNN, the methods' noise, ROAD, bootstrap")
    parser.add_argument(
        "--out", default=os.path.join("results", "evaluate"), help="output folder (default results/evaluate/)"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="patch side for MoRF/LeRF: default min(H, W) // 8 (4 for the 32x32 digits), 9 from 144 pixels up",
    )
    parser.add_argument(
        "--num-steps",
        type=int,
        default=64,
        help="steps per curve, at most (default 64): ceil(units / steps) patches or pixels change per step, "
        "and every curve runs to the whole image",
    )
    parser.add_argument(
        "--road-noise",
        type=float,
        default=None,
        help="ROAD's noise standard deviation, absolute (default 1%% of the data's value range: 0.02 for "
        "[-1, 1] images (the digits, a .keras model on TFDS), 2.55 for caffe225, 1%% of max - min of an .npz's x)",
    )
    parser.add_argument(
        "--blur-sigma", type=float, default=5.0, help="Gaussian sigma in pixels of the blur replacement (default 5)"
    )
    parser.add_argument(
        "--curves-replacement",
        default="road",
        choices=PERTURBATION_REPLACEMENTS,
        help="the replacement whose mean MoRF and LeRF curves evaluation.png shows (default road)",
    )
    parser.add_argument(
        "--compute-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the precision the methods evaluate the model in (the curves stay float32); bfloat16 keeps the "
        "output layers in float32; it is faster only on hardware with bfloat16 units (a CPU with AMX, a GPU): "
        "on an AVX2 CPU, VGG16 ran ten times slower",
    )
    parser.add_argument("--images-per-batch", type=int, default=32, help="images analysed per step (default 32)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="model evaluations per compiled chunk (default 256 up to 64x64 inputs, else 64)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=1, help="batches between checkpoints (default 1)")
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split the images into N contiguous shards of whole --images-per-batch batches, each evaluated by its "
        "own process with --shard-index (default 1); then --merge",
    )
    parser.add_argument("--shard-index", type=int, default=0, help="the shard this process evaluates, 0 to N-1")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="combine the finished shards' checkpoints in --out into the results (the same per-image scores as "
        "one run)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the checkpoint in --out and start over (without it a restarted run continues, or "
        "only rewrites the results if it is complete)",
    )
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"),
        help="where the embedded model is cached",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)

    for name in ("resamples", "num_steps", "images_per_batch", "checkpoint_every", "num_background"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ("patch_size", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.num_images is not None and args.num_images < 2:
        parser.error(f"--num-images must be at least 2 (intervals are bootstrapped over images), got {args.num_images}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    check_shard_arguments(parser, args)
    if args.merge and args.num_shards < 2:
        parser.error("--merge combines shards: give the run's --num-shards (at least 2)")
    if args.road_noise is not None and not (math.isfinite(args.road_noise) and args.road_noise >= 0):
        parser.error(f"--road-noise must be a finite number >= 0, got {args.road_noise}")
    if not (math.isfinite(args.blur_sigma) and args.blur_sigma > 0):
        parser.error(f"--blur-sigma must be a finite number of pixels > 0, got {args.blur_sigma}")

    if args.model == "vgg16":
        args.preprocessing = args.preprocessing or "caffe225"
        args.weights = args.weights or "imagenet"
    else:
        if args.preprocessing is not None or args.weights is not None:
            parser.error("--preprocessing and --weights apply only to --model vgg16")
        if args.model != EMBEDDED and not os.path.isfile(args.model):
            parser.error(f"--model: no model file {args.model!r} (give digits, vgg16 or a .keras file)")
    args.data_kind = "digits" if args.data == EMBEDDED else "npz" if args.data.endswith(".npz") else "tfds"
    if args.data_kind == "npz" and not os.path.isfile(args.data):
        parser.error(f"--data: no file {args.data!r}")
    if args.data_kind != "tfds":
        for name in ("split", "data_dir", "manual_dir"):
            if getattr(args, name) is not None:
                parser.error(f"--{name.replace('_', '-')} applies only to a TFDS --data")
    elif args.split is None:
        args.split = "validation" if args.data == "imagenet2012" else "test"
    for name in ("background_npz", "patterns"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{name.replace('_', '-')}: no file {path!r}")

    from pgig_tf.names import ANALYZER_NAMES

    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in ANALYZER_NAMES]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ANALYZER_NAMES)}")
    if not args.methods:
        parser.error("--methods names no method")
    if len(set(args.methods)) != len(args.methods):
        parser.error(f"--methods names a method twice: {','.join(args.methods)}")
    return args


# ----------------------------------------------------------------------------------------------
# The user's .npz files


# ----------------------------------------------------------------------------------------------
# Model, data and background


class Inputs:
    """What a run explains: the model, batches of (images, labels or None), their count, background and descriptions."""

    def __init__(self):
        self.model = None
        self.model_info = {}
        self.data_info = {}
        self.num_images = 0  # this shard's images
        self.total_images = 0  # the images of all shards
        self.first_index = 0  # the index of the shard's first image among them
        self.labelled = False
        self.value_range = None
        self.batches = None  # a function returning a fresh iterator of (images, labels or None)
        self.background = None  # a function returning background images or None (called only when needed)
        self.digits = None  # (x_train, y_train, x_test, y_test) when the digits were loaded


def load_model(args, inputs):
    import keras

    from pgig_tf.model.spec import model_io

    if args.model == EMBEDDED:
        from pgig_tf.datasets.digits import trained_digits_cnn

        model, accuracy, inputs.digits = trained_digits_cnn(args.cache_dir, seed=args.seed, verbose=not args.quiet)
        inputs.model_info = {"model": "digits_cnn (embedded)", "test_accuracy": accuracy}
    elif args.model == "vgg16":
        from pgig_tf.datasets import imagenet

        _, size = imagenet.PREPROCESSING[args.preprocessing]
        model = imagenet.build_vgg16(size, None if args.weights == "none" else args.weights)
        inputs.model_info = {"model": "vgg16", "weights": args.weights, "preprocessing": args.preprocessing}
    else:
        try:
            model = keras.models.load_model(args.model, compile=False)
        except Exception as error:  # noqa: BLE001 - whatever Keras makes of a file that is not a model
            raise SystemExit(f"--model: {args.model!r} cannot be loaded as a Keras model: {error}") from None
        inputs.model_info = {"model": args.model}
    try:
        input_shape, width = model_io(model)
    except ValueError as error:
        raise SystemExit(f"--model: {error}") from None
    if len(input_shape) != 4 or None in input_shape[1:]:
        raise SystemExit(
            f"--model: pgig-evaluate needs an image model with a fixed input size (batch, H, W, C); it takes "
            f"{input_shape}"
        )
    inputs.model = model
    inputs.model_info.update(input_shape=list(input_shape[1:]), outputs=int(width))
    return input_shape, width


def load_data(args, inputs, input_shape, width, npz):
    """Sets the batches, count, labels and background of `inputs` for --data (npz: the already read (x, y))."""
    if args.data_kind == "tfds":
        return _tfds_data(args, inputs, input_shape)
    if args.data_kind == "digits":
        if inputs.digits is None:
            from pgig_tf.datasets.digits import load_digits_images

            inputs.digits = load_digits_images(args.seed)
        _, _, x, y = inputs.digits
        check_against_model(x, y, input_shape, width, "--data digits", "the held-out digits", "their labels")
        inputs.data_info = {"data": "held-out digits (sklearn load_digits, 32x32, [-1, 1])", "available": len(x)}
        inputs.value_range = 2.0
    else:
        x, y = npz
        check_against_model(x, y, input_shape, width, f"--data: {args.data!r}")
        inputs.data_info = {"data": args.data, "available": len(x), "labels": y is not None}
        inputs.value_range = float(x.max() - x.min())
    count = min(args.num_images or len(x), len(x))
    start, stop = set_shard(args, inputs, count)
    x = x[start:stop]
    y = None if y is None else y[start:stop]
    step = args.images_per_batch
    inputs.labelled = y is not None
    inputs.batches = lambda: (
        (x[i : i + step], None if y is None else y[i : i + step]) for i in range(0, stop - start, step)
    )
    if args.background_npz is None and (args.data_kind == "digits" or args.model == EMBEDDED):
        if inputs.digits is None:
            from pgig_tf.datasets.digits import load_digits_images

            inputs.digits = load_digits_images(args.seed)
        inputs.background = lambda: inputs.digits[0]
        inputs.data_info["background"] = "the training digits"


def set_shard(args, inputs, count):
    """Sets the total, this shard's count and first index on `inputs`; returns the shard's (start, stop)."""
    from pgig_tf.data import shard_bounds

    batches = -(-count // args.images_per_batch)
    if batches < args.num_shards:
        raise SystemExit(
            f"--num-shards {args.num_shards} is more than the {batches} batches of --images-per-batch "
            f"{args.images_per_batch} in the {count} images evaluated"
        )
    start, stop = shard_bounds(count, *batch_shard(args))
    inputs.total_images, inputs.first_index, inputs.num_images = count, start, stop - start
    return start, stop


def _tfds_data(args, inputs, input_shape):
    from pgig_tf.cli.console import plain_tfds_progress
    from pgig_tf.datasets import imagenet

    plain_tfds_progress()  # preparing a dataset draws bars; a log gets none
    if args.model == "vgg16":
        preprocess = imagenet.PREPROCESSING[args.preprocessing][0]
        inputs.value_range = 255.0 if args.preprocessing == "caffe225" else 2.0
        name = args.preprocessing
    else:
        preprocess = imagenet.unit_preprocessing(*input_shape[1:])
        inputs.value_range, name = 2.0, "unit (squash to the model's input, [-1, 1])"
    source = dict(data_dir=args.data_dir, manual_dir=args.manual_dir, preprocess=preprocess)
    count = args.num_images or 1000
    set_shard(args, inputs, count)
    inputs.labelled = True
    inputs.data_info = {"data": f"{args.data}:{args.split}", "preprocessing": name}
    inputs.batches = lambda: imagenet.iterate_tfds_images(
        args.data,
        args.split,
        batch_size=args.images_per_batch,
        num_images=count,
        shard=batch_shard(args),
        **source,
    )
    if args.background_npz is None:
        inputs.background = lambda: imagenet.load_tfds_images(
            args.data, args.background_split, num_images=args.num_background, **source
        )[0]
        inputs.data_info["background"] = f"{args.num_background} images of {args.data}:{args.background_split}"


def default_patch_size(height, width):
    """min(H, W) // 8 (at least 1): 4 for 32x32 images; 9 (the PGIG paper's) for images of 144 pixels and more."""
    side = min(height, width)
    return 9 if side >= 144 else max(1, side // 8)


def resolve_settings(args, inputs, input_shape):
    """The settings that decide the numbers, defaults filled in (the checkpoint's fingerprint, with the files' hashes)."""
    from pgig_tf.evaluation.faithfulness import units_per_step
    from pgig_tf.files import file_sha256
    from pgig_tf.model.fingerprint import model_sha256

    height, width = input_shape[1:3]
    patch = args.patch_size or default_patch_size(height, width)
    if patch > min(height, width):
        raise SystemExit(f"--patch-size {patch} leaves no whole patch in a {height}x{width} image")
    patches = (height // patch) * (width // patch)
    batch_size = args.batch_size or (256 if height * width <= 64 * 64 else 64)
    road_noise = args.road_noise if args.road_noise is not None else round(0.01 * inputs.value_range, 6)
    settings = {
        "model": args.model,
        "data": args.data,
        "seed": args.seed,
        "methods": args.methods,
        "model_sha256": model_sha256(inputs.model),
        "num_images": inputs.total_images,
        "num_shards": args.num_shards,
        "target": "label" if args.target == "label" and inputs.labelled else "prediction",
        "images_per_batch": args.images_per_batch,
        "batch_size": batch_size,
        "patch_size": patch,
        "patches_per_step": units_per_step(patches, args.num_steps),
        "pixels_per_step": units_per_step(height * width, args.num_steps),
        "num_steps": args.num_steps,
        "road_noise": road_noise,
        "blur_sigma": args.blur_sigma,
        "deletion_value": 0.0,
        "insertion_start": "blur",
    }
    if args.model == "vgg16":
        settings.update(weights=args.weights, preprocessing=args.preprocessing)
        if os.path.isfile(args.weights):
            settings["weights_sha256"] = file_sha256(args.weights)
    elif args.model != EMBEDDED:
        settings["model_sha256"] = file_sha256(args.model)
    if args.data_kind == "npz":
        settings["data_sha256"] = file_sha256(args.data)
    if args.compute_dtype != "float32":
        settings["compute_dtype"] = args.compute_dtype
    if args.data_kind == "tfds":
        settings["split"] = args.split
    needs = needs_of(args.methods)
    if needs["patterns"]:
        if args.patterns:
            settings.update(patterns=args.patterns, patterns_format=args.patterns_format)
            settings["patterns_sha256"] = file_sha256(args.patterns)
        else:
            settings["patterns"] = "fitted on the background images"
    if needs["patterns"] and not args.patterns or needs["background"]:
        if args.background_npz:
            settings.update(background_npz=args.background_npz, background_sha256=file_sha256(args.background_npz))
        elif args.data_kind == "tfds":
            settings["background_split"] = args.background_split
        settings["num_background"] = args.num_background
    return settings


def needs_of(methods):
    """{"patterns": some method's rule needs patterns, "background": some method draws baselines from data}."""
    from pgig_tf.analyzers import analyzer_class

    classes = [analyzer_class(name) for name in methods]
    return {
        "patterns": any(cls.rule_needs_patterns() for cls in classes),
        "background": any(cls.uses_background for cls in classes),
    }


def background_images(args, inputs, input_shape, width):
    """The background images (from --background-npz, the training digits or a TFDS split), or SystemExit if there are none."""
    if args.background_npz is not None:
        x, _ = read_images_npz(args.background_npz, "--background-npz", need_labels=False)
        check_against_model(x, None, input_shape, width, f"--background-npz: {args.background_npz!r}")
        return x
    if inputs.background is None:
        raise SystemExit(
            "pattern methods (without --patterns) and expected_gradients need background images from the model's "
            "training distribution: pass --background-npz FILE (x preprocessed like the data), or --patterns FILE "
            "for the pattern methods, or leave these methods out of --methods"
        )
    return inputs.background()


def build_method_analyzers(args, inputs, settings, input_shape, width):
    """name -> analyzer for --methods, with the degradation benchmark's settings, patterns and background."""
    from pgig_tf.cli.degradation_benchmark import build_analyzers, method_settings

    needs = needs_of(args.methods)
    background = patterns = None
    if needs["background"] or (needs["patterns"] and not args.patterns):
        background = background_images(args, inputs, input_shape, width)
    if needs["patterns"]:
        if args.patterns:
            from pgig_tf.cli.shared import load_patterns

            patterns = load_patterns(args.patterns, inputs.model, args.patterns_format)
        else:
            from pgig_tf.patterns.fitting import fit_patterns

            if not args.quiet:
                print(f"fitting patterns on {len(background)} background images")
            patterns = fit_patterns(inputs.model, background, verbose=False)
    eg_background = None if background is None else background[: args.num_background]

    def run_settings(name):
        precision = {"compute_dtype": "bfloat16"} if args.compute_dtype == "bfloat16" and name != "random" else {}
        return {**method_settings(name), **precision}

    return build_analyzers(
        inputs.model, args.methods, patterns, eg_background, settings["batch_size"], args.seed, settings=run_settings
    )


# ----------------------------------------------------------------------------------------------
# Results


def results_of(state, settings, args):
    """The results.json dictionary of a state."""
    from pgig_tf.cli.degradation_benchmark import versions
    from pgig_tf.evaluation.faithfulness import DEFINITIONS, METRICS, summarise

    summary = summarise(state.scores, resamples=args.resamples, seed=args.seed)
    n = state.num_images
    for name, seconds in state.seconds.items():
        summary["methods"][name]["seconds_per_image"] = {key: value / n for key, value in seconds.items()}
    labelled = state.labels >= 0
    info = state.info
    return {
        "settings": dict(settings, resamples=args.resamples, confidence=0.95),
        "model": info.get("model", {}),
        "data": info.get("data", {}),
        "versions": versions(),
        "num_images": n,
        "accuracy": float(np.mean(state.predictions[labelled] == state.labels[labelled])) if labelled.any() else None,
        "intervals": "percentile bootstrap 95% over images, the same resampled images for every method and metric",
        "ranks_definition": "1 + the number of methods whose interval lies entirely on the better side; tied: "
        "another method has the same rank",
        "metrics": {metric: {"higher_is_better": higher} for metric, higher in METRICS.items()},
        "definitions": DEFINITIONS,
        "methods": summary["methods"],
        "ranks": summary["ranks"],
        "srg_differences": summary["srg_differences"],
        "fractions": info.get("fractions", {}),
        "mean_curves": {m: {c: v.tolist() for c, v in curves.items()} for m, curves in state.mean_curves().items()},
        "per_image": {
            "targets": state.targets.tolist(),
            "predictions": state.predictions.tolist(),
            "labels": state.labels.tolist() if labelled.any() else None,
            "scores": {m: {k: v.tolist() for k, v in scores.items()} for m, scores in state.scores.items()},
        },
    }


def cell(result, metric, digits=3):
    """'0.412 [0.398, 0.425] 2=' : mean, interval and rank (= when tied)."""
    low, high = result[f"{metric}_ci"]
    tie = "=" if result[f"{metric}_tied"] else ""
    return f"{result[metric]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] {result[f'{metric}_rank']}{tie}"


def markdown(results):
    """results.md: the tables of means with intervals and ranks, and the pairwise SRG differences."""
    from pgig_tf.evaluation.faithfulness import METRICS, SRG_METRICS

    s = results["settings"]
    methods = results["methods"]
    names = list(methods)
    headline = list(SRG_METRICS) + ["deletion", "insertion"]
    areas = [m for m in METRICS if m not in headline]

    def label(metric):
        head, _, tail = metric.partition("_")
        return {"srg": "SRG", "morf": "MoRF", "lerf": "LeRF"}.get(head, metric) + (f" {tail}" if tail else "")

    def arrow(metric):
        return "↑" if METRICS[metric] else "↓"

    def table(metrics):
        lines = ["| method | " + " | ".join(f"{label(m)} {arrow(m)}" for m in metrics) + " |"]
        lines.append("| --- | " + " | ".join("---" for _ in metrics) + " |")
        lines += [f"| {name} | " + " | ".join(cell(methods[name], m) for m in metrics) + " |" for name in names]
        return lines

    accuracy = results["accuracy"]
    lines = [
        "# Faithfulness evaluation",
        "",
        f"Model: {results['model'].get('model')}; data: {results['data'].get('data')}; "
        f"{results['num_images']} images; explained class: the {'true label' if s['target'] == 'label' else 'clean prediction'}"
        + (f"; accuracy on these images {accuracy:.3f}" if accuracy is not None else "")
        + ".",
        f"MoRF/LeRF: {s['patch_size']}x{s['patch_size']} patches, {s['patches_per_step']} per step; deletion and "
        f"insertion: {s['pixels_per_step']} pixels per step; ROAD noise {s['road_noise']:g}; blur sigma "
        f"{s['blur_sigma']:g} pixels; seed {s['seed']}.",
        "",
        "Each cell: mean over images [percentile bootstrap 95% interval] and rank (1 is best; ranks count only "
        "non-overlapping intervals, = marks a tie). ↑ higher is better, ↓ lower is better. Areas are over the "
        "fraction of patches (pixels) replaced, in units of the explained class's output (a probability).",
        "",
        "## SRG per replacement, deletion and insertion",
        "",
        *table(headline),
        "",
        "## MoRF and LeRF areas",
        "",
        *table(areas),
        "",
        "## Pairwise SRG differences",
        "",
        "Row minus column, paired bootstrap 95% interval of the mean difference: + the row's SRG is higher "
        "(the interval lies above 0), − lower (below 0), · the interval contains 0.",
    ]
    for replacement, pairs in results["srg_differences"].items():
        lines += ["", f"### {replacement.replace('_', ' ')}", ""]
        lines.append("| | " + " | ".join(str(i + 1) for i in range(len(names))) + " |")
        lines.append("| --- | " + " | ".join("---" for _ in names) + " |")
        for i, a in enumerate(names):
            row = []
            for j, b in enumerate(names):
                if i == j:
                    row.append("")
                    continue
                pair = pairs.get(f"{a} - {b}")
                sign = 1.0
                if pair is None:
                    pair, sign = pairs[f"{b} - {a}"], -1.0
                low, high = (sign * v for v in pair["ci"])
                row.append("+" if min(low, high) > 0 else "−" if max(low, high) < 0 else "·")
            lines.append(f"| {i + 1} {a} | " + " | ".join(row) + " |")
    if "random" in methods:
        holds = [r for r in SRG_METRICS if methods["random"][f"{r}_ci"][0] <= 0 <= methods["random"][f"{r}_ci"][1]]
        lines += [
            "",
            "Control: a random ranking has SRG 0 in expectation; its interval contains 0 under "
            + (", ".join(r[4:].replace("_", " ") for r in holds) or "no replacement")
            + f" ({len(holds)} of {len(SRG_METRICS)}).",
        ]
    return "\n".join(lines) + "\n"


def write_outputs(out, results, curves_replacement):
    from pgig_tf.files import atomic_write
    from pgig_tf.viz.plots import plot_evaluation

    with atomic_write(os.path.join(out, "results.json")) as handle:
        json.dump(results, handle, indent=1)
    with atomic_write(os.path.join(out, "results.md")) as handle:
        handle.write(markdown(results))
    tied = {
        metric: {name: results["methods"][name][f"{metric}_tied"] for name in ranks}
        for metric, ranks in results["ranks"].items()
    }
    curves = results["mean_curves"]
    plot_evaluation(
        results["ranks"],
        tied,
        {name: c[f"morf_{curves_replacement}"] for name, c in curves.items()},
        {name: c[f"lerf_{curves_replacement}"] for name, c in curves.items()},
        results["fractions"][f"morf_{curves_replacement}"],
        os.path.join(out, "evaluation.png"),
        curves_replacement,
        title=f"faithfulness: {results['model'].get('model')} on {results['num_images']} images of "
        f"{results['data'].get('data')}",
    )


def print_table(results):
    from pgig_tf.evaluation.faithfulness import SRG_METRICS

    columns = list(SRG_METRICS) + ["deletion", "insertion"]
    print(f"{'method':<22}" + "".join(f"{c:>31}" for c in columns))
    for name, r in results["methods"].items():
        print(f"{name:<22}" + "".join(f"{cell(r, c):>31}" for c in columns))


# ----------------------------------------------------------------------------------------------


def checkpoint_path(out, num_shards, shard_index):
    """The checkpoint of one run (scores.npz) or of shard K of N (scores-shardKofN.npz) in `out`."""
    if num_shards == 1:
        return os.path.join(out, CHECKPOINT)
    return os.path.join(out, f"scores-shard{shard_index}of{num_shards}.npz")


def main(argv=None):
    from pgig_tf.cli import console
    from pgig_tf.files import LockedError, exclusive_lock

    console.prepare()
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    what = f"the output folder {args.out}" + (f" (shard {args.shard_index})" if args.num_shards > 1 else "")
    lock = os.path.join(args.out, f".lock-shard{'all' if args.merge else args.shard_index}of{args.num_shards}")
    try:
        with exclusive_lock(lock, what):
            return run(args)
    except LockedError as error:
        raise SystemExit(str(error)) from None


def run(args):
    """One run, one shard (--shard-index of --num-shards) or the merge of all shards (--merge)."""
    from pgig_tf.cli import console

    npz = read_images_npz(args.data, "--data") if args.data_kind == "npz" else None
    if args.background_npz is not None:
        read_images_npz(args.background_npz, "--background-npz", need_labels=False)  # fail before any work
    started = time.perf_counter()
    console.import_tensorflow()
    import keras
    import tensorflow as tf

    from pgig_tf.evaluation.faithfulness import EvaluationState, FaithfulnessMetrics, evaluate_batches
    from pgig_tf.files import CorruptFileError
    from pgig_tf.progress import Progress
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)  # the class's probability is explained on purpose
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()  # a resumed run computes the same numbers
    checkpoint = checkpoint_path(args.out, args.num_shards, args.shard_index)
    if args.fresh and os.path.exists(checkpoint):
        os.remove(checkpoint)
        if not args.quiet:
            print(f"--fresh: discarded the checkpoint {checkpoint}")

    inputs = Inputs()
    input_shape, width = load_model(args, inputs)
    load_data(args, inputs, input_shape, width, npz)
    settings = resolve_settings(args, inputs, input_shape)
    fingerprint = dict(settings, shard_index=args.shard_index)
    if args.merge:
        state = merge_shards(args, settings)
    else:
        state = None
        if os.path.exists(checkpoint):
            try:
                state = EvaluationState.load(checkpoint, fingerprint)
            except CorruptFileError as error:
                raise SystemExit(str(error)) from None
            except ValueError as error:
                raise SystemExit(f"{error}.\nUse another --out, or --fresh to discard it and start over.") from None
        metrics = FaithfulnessMetrics(
            inputs.model,
            patch_size=settings["patch_size"],
            patch_step=settings["patches_per_step"],
            pixel_step=settings["pixels_per_step"],
            blur_sigma=settings["blur_sigma"],
            road_noise=settings["road_noise"],
            deletion_value=settings["deletion_value"],
            seed=args.seed,
            batch_size=settings["batch_size"],
        )
        fractions = metrics.fractions((1,) + tuple(input_shape[1:]))
        num_batches = -(-inputs.num_images // args.images_per_batch)
        if state is None:
            info = {
                "model": inputs.model_info,
                "data": inputs.data_info,
                "fractions": {name: f.tolist() for name, f in fractions.items()},
            }
            state = EvaluationState(fingerprint, args.methods, {name: len(f) for name, f in fractions.items()}, info)
        if state.finished:
            if not args.quiet:
                print("already complete (--fresh recomputes): the results are rewritten from the checkpoint")
        else:
            if state.batches_done and not args.quiet:
                print(f"resuming: {state.batches_done} of {num_batches} batches done")
            analyzers = build_method_analyzers(args, inputs, settings, input_shape, width)
            use_labels = settings["target"] == "label"
            batches = ((images, labels, labels if use_labels else None) for images, labels in inputs.batches())
            progress = None if args.quiet else Progress(num_batches, "batch", start=state.batches_done)
            evaluate_batches(
                analyzers,
                metrics,
                batches,
                state,
                checkpoint=checkpoint,
                checkpoint_every=args.checkpoint_every,
                first_index=inputs.first_index,
                progress=progress,
            )
        if args.num_shards > 1:
            if not args.quiet:
                print(
                    f"shard {args.shard_index} of {args.num_shards} done ({state.num_images} images, "
                    f"{time.perf_counter() - started:.0f} s); run again with --merge when all are"
                )
            return None
    if state.num_images < 2:
        raise SystemExit(f"only {state.num_images} image(s) were evaluated; intervals need at least 2")
    results = results_of(state, settings, args)
    write_outputs(args.out, results, args.curves_replacement)
    if not args.quiet:
        print_table(results)
        print(
            f"{state.num_images} images, {len(args.methods)} methods; {time.perf_counter() - started:.0f} s in all "
            f"(this run); wrote {os.path.join(args.out, 'results.json')}, results.md, evaluation.png"
            + ("" if args.merge else f", {CHECKPOINT}")
        )
    return results


def merge_shards(args, settings):
    """--merge: the merged state of every shard's finished checkpoint in --out, checked against these settings."""
    from pgig_tf.evaluation.faithfulness import EvaluationState
    from pgig_tf.files import CorruptFileError

    paths = [checkpoint_path(args.out, args.num_shards, index) for index in range(args.num_shards)]
    missing = [os.path.basename(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"missing shard checkpoints in {args.out}: {', '.join(missing)}")
    shards = []
    for index, path in enumerate(paths):
        try:
            shard = EvaluationState.load(path, dict(settings, shard_index=index))
        except CorruptFileError as error:
            raise SystemExit(str(error)) from None
        except ValueError as error:
            raise SystemExit(f"{error}: merge with the shards' own settings") from None
        if not shard.finished:
            raise SystemExit(
                f"{path} is unfinished ({shard.num_images} images so far): run shard {index} again to complete it"
            )
        shards.append(shard)
    return EvaluationState.merged(shards)


if __name__ == "__main__":
    main()
