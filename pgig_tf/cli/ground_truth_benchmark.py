"""The ground-truth localisation benchmark: do the maps sit on the signal's pixels and avoid the distractor's?"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from pgig_tf.names import DEFAULT_METHODS  # noqa: E402

# The degradation benchmark's methods (random included), then the ground-truth control; from
# pgig_tf.names so that --help does not import Keras.
METHODS = DEFAULT_METHODS + ("ground_truth",)
CONTROL = "ground_truth"
METRICS = {"mass_accuracy": True, "rank_accuracy": True, "distractor_mass": False}  # name -> higher is better
FULL = {"num_train": 6000, "num_test": 1000, "epochs": 8}
QUICK = {"num_train": 3000, "num_test": 200, "epochs": 8}

DESCRIPTION = """\
The PGIG paper's stress test (§3) at image scale, with the true signal's pixels known. Each
32x32 image x = s + d + noise (pgig_tf.datasets.ground_truth) has its class carried only by a
small shape s (square outline, cross, diagonal line or disc); a distractor d of comparable
strength (bars and blocks, often over the shape, plus a smooth field) carries no class
information, so the trained CNN (the embedded digits CNN's architecture, trained once, then
cached) must cancel it. For every method the maps of the true class on held-out images are
scored per image (pgig_tf.evaluation.localization; Arras et al., 2022): relevance mass accuracy
(share of the positive attribution on the signal's pixels), relevance rank accuracy (share of
the |signal| highest pixels on the signal) and distractor mass (share of the positive
attribution on the decoys' pixels; lower is better). Means come with percentile bootstrap 95%
intervals over images (paired: the same resampled images for every method) and ranks that
count only non-overlapping intervals. Controls: ground_truth (the signal mask itself as map:
1 on both accuracies) and random (uniform noise: the mask's area fraction). Patterns are fitted
on training images. Writes results.json, examples.png and scores.png to --out.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", default=os.path.join("results", "ground_truth"), help="output folder (default results/ground_truth/)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, training, noise and bootstrap")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated create_analyzer names and/or ground_truth (default: all 13)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['num_train']} training images and {QUICK['num_test']} test images "
        f"(default {FULL['num_train']} and {FULL['num_test']})",
    )
    parser.add_argument("--num-train", type=int, default=None, help="training images")
    parser.add_argument("--num-test", type=int, default=None, help="held-out images (accuracy)")
    parser.add_argument("--num-images", type=int, default=None, help="held-out images explained (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {FULL['epochs']})")
    parser.add_argument("--num-fit", type=int, default=2000, help="training images the patterns are fitted on")
    parser.add_argument("--num-background", type=int, default=1000, help="background images for Expected Gradients")
    parser.add_argument("--images-per-batch", type=int, default=50, help="images analysed per step (default 50)")
    parser.add_argument("--batch-size", type=int, default=256, help="model evaluations per compiled chunk")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--num-examples", type=int, default=4, help="images shown in examples.png")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"),
        help="where the trained CNN is cached",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key in ("num_train", "num_test", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be positive")
    args.num_images = min(args.num_images or args.num_test, args.num_test)
    if args.num_images < 2:
        parser.error("--num-images must be at least 2 (intervals are bootstrapped over images)")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    return args


def build_method_analyzers(model, methods, patterns, background, batch_size, seed):
    """name -> analyzer for the methods other than the ground-truth control, with the degradation benchmark's settings."""
    from pgig_tf.cli.degradation_benchmark import build_analyzers, method_settings

    return build_analyzers(
        model, [m for m in methods if m != CONTROL], patterns, background, batch_size, seed, settings=method_settings
    )


def compute_maps(analyzer, images, labels, images_per_batch):
    """The analyzer's maps of the true classes, (n, H, W, C), and the seconds they took."""
    started = time.perf_counter()
    maps = [
        np.asarray(analyzer.analyze(images[i : i + images_per_batch], labels[i : i + images_per_batch]))
        for i in range(0, len(images), images_per_batch)
    ]
    return np.concatenate(maps), time.perf_counter() - started


def summarise(scores, resamples, seed):
    """{method: {metric, metric_ci}} with paired bootstrap intervals, plus ranks per metric."""
    from pgig_tf.evaluation.statistics import bootstrap_ci, paired_difference_ci, ranks_with_ties

    names = list(scores)
    summary = {name: {} for name in names}
    ranks = {}
    for metric, higher in METRICS.items():
        means, intervals = [], []
        for name in names:
            mean, low, high = bootstrap_ci(scores[name][metric], resamples=resamples, seed=seed)
            summary[name][metric] = mean
            summary[name][f"{metric}_ci"] = [low, high]
            means.append(mean)
            intervals.append((low, high))
        ranking = ranks_with_ties(means, intervals, higher_is_better=higher)
        ranks[metric] = {name: int(rank) for name, rank in zip(names, ranking.ranks)}
        for name in names:
            summary[name][f"{metric}_rank"] = ranks[metric][name]
    differences = {}
    for a, b in (
        ("pgig", "integrated_gradients"),
        ("pgig", "pattern_attribution"),
        ("integrated_gradients", "pattern_attribution"),
    ):
        if a in scores and b in scores:
            differences[f"{a} - {b}"] = {}
            for metric in METRICS:
                mean, low, high = paired_difference_ci(
                    scores[a][metric], scores[b][metric], resamples=resamples, seed=seed
                )
                differences[f"{a} - {b}"][metric] = mean
                differences[f"{a} - {b}"][f"{metric}_ci"] = [low, high]
    return summary, ranks, differences


def plot_examples(images, signal_masks, distractor_masks, maps, path):
    """Rows: images; columns: the input, then each method's map, the signal outlined green and the distractor magenta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pgig_tf.viz.plots import heatmap_rgb, image_rgb

    names = list(maps)
    rows, cols = len(images), len(names) + 1
    figure, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for i in range(rows):
        panels = [("input", image_rgb(images[i]))] + [(name, heatmap_rgb(maps[name][i])) for name in names]
        for j, (title, picture) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(picture, interpolation="nearest")
            ax.contour(signal_masks[i].astype(float), levels=[0.5], colors="limegreen", linewidths=0.8)
            ax.contour(distractor_masks[i].astype(float), levels=[0.5], colors="magenta", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title.replace("_", "\n", 1), fontsize=6)
    figure.suptitle("signal outlined green, distractor magenta; red positive, blue negative", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_scores(summary, path):
    """One bar chart per metric with the bootstrap 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.0))
    for ax, (metric, higher) in zip(axes, METRICS.items()):
        means = np.array([summary[name][metric] for name in names])
        intervals = np.array([summary[name][f"{metric}_ci"] for name in names])
        errors = np.stack([means - intervals[:, 0], intervals[:, 1] - means])
        colours = [
            "tab:green"
            if name == CONTROL
            else "tab:grey"
            if name == "random"
            else "tab:red"
            if name == "pgig"
            else "tab:blue"
            for name in names
        ]
        ax.bar(range(len(names)), means, yerr=errors, color=colours, capsize=2)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=75, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{metric.replace('_', ' ')} ({'higher' if higher else 'lower'} is better)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_table(results):
    print(f"{'method':<21}" + "".join(f"{m.replace('_', ' '):>27}" for m in METRICS) + f"{'s':>7}")
    rows = sorted(results["methods"].items(), key=lambda item: -item[1]["mass_accuracy"])
    for name, r in rows:
        cells = "".join(f"{r[m]:>9.3f} [{r[m + '_ci'][0]:.3f}, {r[m + '_ci'][1]:.3f}]" for m in METRICS)
        print(f"{name:<21}{cells}{r['seconds']:>7.1f}")


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    from pgig_tf.analyzers import ANALYZERS
    from pgig_tf.datasets.ground_truth import MIN_TEST_ACCURACY, trained_ground_truth_cnn
    from pgig_tf.evaluation.localization import localization_scores
    from pgig_tf.files import atomic_write
    from pgig_tf.patterns.fitting import fit_patterns
    from pgig_tf.validation import SoftmaxOutputWarning

    unknown = [m for m in args.methods if m != CONTROL and m not in ANALYZERS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ANALYZERS)}, {CONTROL}")
    os.makedirs(args.out, exist_ok=True)
    tf.get_logger().setLevel("ERROR")
    tf.config.experimental.enable_op_determinism()  # the same seed trains the same CNN and draws the same noise
    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)  # the softmax output is explained on purpose
    started = time.perf_counter()
    model, accuracy, (train, test) = trained_ground_truth_cnn(
        args.cache_dir,
        seed=args.seed,
        num_train=args.num_train,
        num_test=args.num_test,
        epochs=args.epochs,
        verbose=not args.quiet,
    )
    if accuracy < MIN_TEST_ACCURACY and not args.quiet:
        print(f"warning: test accuracy {accuracy:.3f} is below {MIN_TEST_ACCURACY}: train longer (--epochs)")
    keras.utils.set_random_seed(args.seed)
    patterns = fit_patterns(model, train.images[: args.num_fit], verbose=False)
    analyzers = build_method_analyzers(
        model, args.methods, patterns, train.images[: args.num_background], args.batch_size, args.seed
    )
    n = args.num_images
    images, labels = test.images[:n], test.labels[:n]
    signal_masks, distractor_masks = test.signal_masks[:n], test.distractor_masks[:n]
    scores, seconds, examples = {}, {}, {}
    for name in args.methods:
        if name == CONTROL:
            maps, seconds[name] = signal_masks[..., None].astype(np.float32), 0.0
        else:
            maps, seconds[name] = compute_maps(analyzers[name], images, labels, args.images_per_batch)
        scores[name] = localization_scores(maps, signal_masks, distractor_masks)
        examples[name] = maps[: args.num_examples]
        if not args.quiet:
            print(f"{name}: mass accuracy {scores[name]['mass_accuracy'].mean():.3f} ({seconds[name]:.1f} s)")
    summary, ranks, differences = summarise(scores, args.resamples, args.seed)
    for name in summary:
        summary[name]["seconds"] = seconds[name]
    results = {
        "test_accuracy": accuracy,
        "num_images": n,
        "mask_area_fraction": float(signal_masks.mean()),
        "distractor_area_fraction": float(distractor_masks.mean()),
        "overlap_fraction": float(np.mean(np.any(signal_masks & distractor_masks, axis=(1, 2)))),
        "settings": {
            key: getattr(args, key)
            for key in (
                "seed",
                "methods",
                "quick",
                "num_train",
                "num_test",
                "num_images",
                "epochs",
                "num_fit",
                "num_background",
                "resamples",
            )
        },
        "targets": "the true class (softmax output)",
        "intervals": "percentile bootstrap 95% over images, the same resampled images for every method",
        "ranks": ranks,
        "differences": differences,
        "methods": summary,
    }
    with atomic_write(os.path.join(args.out, "results.json")) as handle:
        json.dump(results, handle, indent=1)
    k = min(args.num_examples, n)
    plot_examples(images[:k], signal_masks[:k], distractor_masks[:k], examples, os.path.join(args.out, "examples.png"))
    plot_scores(summary, os.path.join(args.out, "scores.png"))
    if not args.quiet:
        print_table(results)
        print(
            f"test accuracy {accuracy:.4f}; signal mask area fraction {results['mask_area_fraction']:.4f}; "
            f"{time.perf_counter() - started:.0f} s in all; wrote {args.out}/results.json, examples.png, scores.png"
        )
    return results


if __name__ == "__main__":
    main()
