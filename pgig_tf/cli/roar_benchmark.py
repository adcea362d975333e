"""ROAR and KAR on the embedded digits: retrain the CNN on images whose most or least relevant pixels are replaced."""

import argparse
import json
import os
import time
import warnings

from pgig_tf.names import ANALYZER_NAMES, DEFAULT_METHODS

FULL = {"methods": DEFAULT_METHODS, "fractions": (10, 30, 50, 70, 90), "seeds": 3}
QUICK = {"methods": ("gradient", "pgig", "random"), "fractions": (30, 70), "seeds": 1}
KINDS = ("roar", "kar")
REPLACEMENTS = ("mean", "road")
ROAD_NOISE = 0.02  # ROAD's 0.01 for [0, 1] images, for images in [-1, 1]
EPOCHS = 10  # the embedded digits CNN's
ANALYSIS_SEED = 0  # the analyzers' random draws (noise, baselines, the random control)
PATTERN_IMAGES = None  # patterns fitted on all training digits
NUM_BACKGROUND = 1000  # Expected Gradients' background: the first training digits
IMAGES_PER_BATCH = 50
BATCH_SIZE = 256
CHECKPOINT = "checkpoint.json"
CHECKPOINT_FORMAT = "pgig_tf roar checkpoint 1"
MAPS_KEY = "__pgig_tf_roar_maps__"

DESCRIPTION = """\
ROAR and KAR (Hooker et al., NeurIPS 2019, "A Benchmark for Interpretability Methods in Deep
Neural Networks") on the embedded digits. Every method explains the true class of all 1,797
digits (training and test) with the cached digits CNN (patterns fitted on the training
digits); the maps are stored in --out/maps/. For each fraction t of pixels replaced, a fresh
CNN (the digits CNN's architecture and training: Adam 1e-3, batch 64, --epochs) is trained on
modified training digits and its accuracy measured on equally modified test digits, once per
training seed. ROAR (remove and retrain) replaces the t most relevant pixels of each image
(ranked by the channel-summed attribution, highest first): a good method makes the accuracy
fall fast (lower is better). KAR (keep and retrain) replaces the t least relevant pixels: a
good method keeps the accuracy high (higher is better). Replaced pixels take the training
set's per-channel mean (mean, as in the paper) or ROAD's noisy linear imputation (road, noise
0.02). t = 0 is the baseline: the same trainings on unmodified digits. The area is the
trapezoid of the mean accuracy over t in [0, 1] from the baseline at t = 0 to the largest t.
Every finished training is recorded in --out/checkpoint.json, so a stopped run resumes where
it stopped. Writes results.json and roar.png to --out.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("results", "roar"), help="output folder (default results/roar/)")
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated create_analyzer names (default: the {len(FULL['methods'])} of the degradation "
        "benchmark, random included as the control)",
    )
    parser.add_argument(
        "--fractions",
        default=None,
        help="comma-separated percentages of pixels replaced, each in (0, 100] "
        f"(default {','.join(map(str, FULL['fractions']))})",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help=f"training seeds per cell: 0, 1, ... (default {FULL['seeds']})"
    )
    parser.add_argument(
        "--replacement",
        choices=REPLACEMENTS,
        default="mean",
        help="mean: the training set's per-channel mean (default); road: ROAD's noisy linear imputation",
    )
    parser.add_argument("--absolute", action="store_true", help="rank pixels by |attribution| instead of signed")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"methods {','.join(QUICK['methods'])}; fractions {','.join(map(str, QUICK['fractions']))}; "
        f"{QUICK['seeds']} seed (explicit --methods, --fractions, --seeds win)",
    )
    parser.add_argument(
        "--num-train", type=int, default=None, help="train on the first N training digits (default all)"
    )
    parser.add_argument("--num-test", type=int, default=None, help="test on the first N test digits (default all)")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"),
        help="where the trained digits CNN is cached",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="trainings run at once, each in its own process on one thread (default 2: one per core of a 2-core "
        "CPU; the numbers do not depend on it); 0: one at a time in this process on TensorFlow's default threads "
        "(numbers differ from those of workers at float round-off, so a checkpoint of one is not resumed by the "
        "other)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="discard the checkpoint and the stored maps in --out and start over"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.methods is None:
        args.methods = list(sizes["methods"])
    else:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in args.methods if m not in ANALYZER_NAMES]
        if unknown:
            parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ANALYZER_NAMES)}")
        if not args.methods or len(set(args.methods)) != len(args.methods):
            parser.error("--methods must name at least one method, each once")
    args.fractions = parse_fractions(parser, args.fractions) if args.fractions is not None else list(sizes["fractions"])
    if args.seeds is None:
        args.seeds = sizes["seeds"]
    if args.workers < 0:
        parser.error(f"--workers must be 0 (in this process) or a positive number of processes, got {args.workers}")
    for key in ("seeds", "epochs", "num_train", "num_test"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} must be positive, got {value}")
    return args


def parse_fractions(parser, text):
    """The percentages of --fractions as sorted numbers (ints where whole), or a parser error."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            parser.error(f"--fractions takes comma-separated percentages, got {item!r}")
        if not 0 < value <= 100:
            parser.error(f"--fractions: each percentage must be in (0, 100] (0 is the baseline), got {item}")
        values.append(int(value) if value.is_integer() else value)
    if len(set(values)) != len(values):
        parser.error(f"--fractions lists a percentage twice: {text}")
    return sorted(values)


def fraction_key(percent):
    """The results' key of a percentage: '30', '12.5'."""
    return f"{percent:g}"


def run_settings(args):
    """The settings that decide a run's numbers: a checkpoint of other settings is refused."""
    return {
        "methods": list(args.methods),
        "fractions": list(args.fractions),
        "seeds": list(range(args.seeds)),
        "replacement": args.replacement,
        "road_noise": ROAD_NOISE if args.replacement == "road" else None,
        "absolute": args.absolute,
        "epochs": args.epochs,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "targets": "true label",
        "training_threads": "one per worker process" if args.workers else "TensorFlow's default, in the main process",
    }


def cell_key(method, kind, percent, seed):
    """The checkpoint key of one training: 'pgig/roar/30/0', or 'baseline/0' for the unmodified digits."""
    if method is None:
        return f"baseline/{seed}"
    return f"{method}/{kind}/{fraction_key(percent)}/{seed}"


def expected_cells(settings):
    """Every training of a run, in the order they are run: the baselines, then per method, kind, fraction, seed."""
    keys = [cell_key(None, None, None, seed) for seed in settings["seeds"]]
    for method in settings["methods"]:
        for kind in KINDS:
            for percent in settings["fractions"]:
                keys += [cell_key(method, kind, percent, seed) for seed in settings["seeds"]]
    return keys


def read_checkpoint(path, settings):
    """The checkpoint of an earlier run with these settings (None if there is none); exits if it is unusable."""
    from pgig_tf.files import unreadable

    if not os.path.exists(path):
        return None

    def fail(problem, remedy="--fresh discards it and starts over"):
        return SystemExit(str(unreadable(path, "a pgig-roar-benchmark checkpoint", problem, remedy)))

    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise fail(f"it is not valid JSON, it is damaged or truncated ({error})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise fail(f"it is not a checkpoint of this format ({CHECKPOINT_FORMAT!r})")
    if not all(isinstance(state.get(key), dict) for key in ("settings", "identity", "maps_sha256", "cells")):
        raise fail("it is damaged: an entry is missing")
    if state["settings"] != settings:
        different = sorted(
            key for key in set(settings) | set(state["settings"]) if state["settings"].get(key) != settings.get(key)
        )
        raise fail(
            "it belongs to a run of other settings ("
            + ", ".join(f"{key}: {state['settings'].get(key)!r} there, {settings.get(key)!r} now" for key in different)
            + ")",
            "--fresh discards it, or choose another --out",
        )
    expected = set(expected_cells(settings))
    for key, value in state["cells"].items():
        if key not in expected or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise fail(f"it is damaged: cell {key!r} = {value!r} is not an accuracy of this run")
    return state


def write_checkpoint(path, state):
    from pgig_tf.files import atomic_write

    with atomic_write(path) as handle:
        json.dump(state, handle, indent=1)


def model_identity(model):
    """The SHA-256 of the model's fingerprint (layers, activations, weights) and the versions that compute the numbers."""
    from pgig_tf.cli.degradation_benchmark import versions
    from pgig_tf.model.fingerprint import model_sha256

    found = versions()
    return {
        "model_sha256": model_sha256(model),
        **{key: found[key] for key in ("pgig_tf", "tensorflow", "keras", "numpy")},
    }


def explained_model(args):
    """(model, test accuracy, (x_train, y_train, x_test, y_test)): the cached digits CNN and its data."""
    from pgig_tf.datasets.digits import trained_digits_cnn

    return trained_digits_cnn(args.cache_dir, verbose=not args.quiet)


def make_retrainer(args):
    """The `Retrainer` of the run: the digits CNN's architecture and hyperparameters, --epochs."""
    from pgig_tf.datasets.digits import build_digits_cnn
    from pgig_tf.evaluation.roar import Retrainer

    return Retrainer(build_digits_cnn, epochs=args.epochs, batch_size=64, learning_rate=1e-3)


def maps_identity(method, identity, images_sha):
    """What a stored maps file must have been computed with to be reused."""
    from pgig_tf.cli.degradation_benchmark import method_settings

    return {
        "method": method,
        "method_settings": method_settings(method),
        "seed": ANALYSIS_SEED,
        "targets": "true label",
        "pattern_images": PATTERN_IMAGES,
        "num_background": NUM_BACKGROUND,
        "images_sha256": images_sha,
        **identity,
    }


def read_maps(path, wanted, count):
    """The maps of a maps file written by an earlier run with the same identity, or None if there is none."""
    from pgig_tf.files import CorruptFileError, MissingFileError, read_header, read_npz

    expected = "a pgig-roar-benchmark maps file"
    remedy = "--fresh discards it (the maps are then computed again)"
    try:
        entries, verified = read_npz(path, expected, remedy)
    except MissingFileError:
        return None
    except CorruptFileError as error:
        raise SystemExit(str(error)) from None
    if not verified or MAPS_KEY not in entries or "maps" not in entries:
        raise SystemExit(f"{path!r} cannot be read as {expected}: it has no checksum or no maps. {remedy}")
    try:
        header = read_header(entries, MAPS_KEY, path, expected, remedy)
    except CorruptFileError as error:
        raise SystemExit(str(error)) from None
    if header != wanted:
        different = sorted(key for key in set(header) | set(wanted) if header.get(key) != wanted.get(key))
        raise SystemExit(
            f"{path!r} holds maps computed with other settings or another model (differs in {', '.join(different)}). "
            f"{remedy}"
        )
    maps = entries["maps"]
    if maps.shape[0] != count or maps.dtype.kind != "f":
        raise SystemExit(
            f"{path!r} holds {maps.shape[0]} maps of dtype {maps.dtype}, {count} float maps expected. {remedy}"
        )
    return maps


def compute_maps(analyzer, images, labels):
    """The analyzer's maps of the true labels, float32 (n, H, W, C); draws keyed by each image's index."""
    import numpy as np

    maps = [
        np.asarray(
            analyzer.analyze(images[i : i + IMAGES_PER_BATCH], labels[i : i + IMAGES_PER_BATCH], first_index=i),
            dtype=np.float32,
        )
        for i in range(0, len(images), IMAGES_PER_BATCH)
    ]
    return np.concatenate(maps)


def all_maps(args, model, images, labels, x_train, identity, verbose):
    """name -> maps of all digits, read from --out/maps/ or computed (then stored), and name -> seconds computing."""
    from pgig_tf.analyzers import analyzer_class
    from pgig_tf.cli.degradation_benchmark import build_analyzers, method_settings
    from pgig_tf.files import checksum, write_npz
    from pgig_tf.patterns.fitting import fit_patterns

    folder = os.path.join(args.out, "maps")
    os.makedirs(folder, exist_ok=True)
    images_sha = checksum({"images": images, "labels": labels})
    maps, seconds, patterns = {}, {}, None
    for name in args.methods:
        path = os.path.join(folder, f"{name}.npz")
        wanted = maps_identity(name, identity, images_sha)
        stored = read_maps(path, wanted, len(images))
        if stored is not None:
            maps[name] = stored
            continue
        started = time.perf_counter()
        if patterns is None and analyzer_class(name).rule_needs_patterns(method_settings(name).get("rule")):
            patterns = fit_patterns(model, x_train[:PATTERN_IMAGES], verbose=False)
        analyzer = build_analyzers(
            model, [name], patterns, x_train[:NUM_BACKGROUND], BATCH_SIZE, ANALYSIS_SEED, settings=method_settings
        )[name]
        maps[name] = compute_maps(analyzer, images, labels)
        write_npz(path, {"maps": maps[name], MAPS_KEY: json.dumps(wanted, sort_keys=True)})
        seconds[name] = time.perf_counter() - started
        if verbose:
            print(f"{name}: maps of {len(images)} digits in {seconds[name]:.1f} s, stored in {path}", flush=True)
    return maps, seconds


def summary(values):
    """{"mean", "std", "values"}: std the sample standard deviation over seeds (None for one seed)."""
    import numpy as np

    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def area(baseline, means, fractions):
    """Trapezoid of the mean accuracy over t in [0, 1]: (0, baseline), then (t, mean) for each fraction t."""
    import numpy as np

    t = np.array([0.0] + [p / 100.0 for p in fractions])
    y = np.array([baseline] + list(means))
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2.0)


def build_results(settings, state, model_info):
    """The results of a finished run from its checkpoint's cells."""
    from pgig_tf.cli.degradation_benchmark import versions

    cells = state["cells"]
    baseline = summary([cells[cell_key(None, None, None, seed)] for seed in settings["seeds"]])
    methods = {}
    for name in settings["methods"]:
        methods[name] = {}
        for kind in KINDS:
            methods[name][kind] = {
                fraction_key(p): summary([cells[cell_key(name, kind, p, seed)] for seed in settings["seeds"]])
                for p in settings["fractions"]
            }
        for kind in KINDS:
            means = [methods[name][kind][fraction_key(p)]["mean"] for p in settings["fractions"]]
            methods[name][f"{kind}_area"] = area(baseline["mean"], means, settings["fractions"])
    return {
        "settings": settings,
        "model": model_info,
        "versions": versions(),
        "definitions": {
            "fraction": "the keys of roar and kar: t, the percentage of each image's pixels replaced (of H x W)",
            "ranking": "pixels ranked by the attribution summed over channels"
            + (" (absolute value)" if settings["absolute"] else " (signed)")
            + ", highest first; ties in row-major pixel order",
            "roar": "remove and retrain (Hooker et al., NeurIPS 2019): the top round(t x H x W) pixels of every "
            "training and test digit replaced; test accuracy of a CNN trained anew on them; lower is better",
            "kar": "keep and retrain: the top round((1 - t) x H x W) pixels kept and the other (least relevant) "
            "pixels replaced; higher is better",
            "replacement": "the training digits' per-channel mean"
            if settings["replacement"] == "mean"
            else f"ROAD's noisy linear imputation (Rong et al., ICML 2022), noise {ROAD_NOISE}, seed 0, "
            "keyed by the digit's index (training digits first, then test digits)",
            "baseline_accuracy": "the same trainings (same seeds) on unmodified digits: the point t = 0",
            "std": "sample standard deviation over the training seeds (ddof = 1; null for one seed)",
            "area": "<kind>_area: trapezoid of the mean accuracy over t in [0, 1], from (0, baseline mean) "
            "through (t, mean) for each fraction, up to the largest fraction; ROAR lower is better, KAR higher",
        },
        "baseline_accuracy": baseline,
        "methods": methods,
    }


def plot(results, path):
    """roar.png: one panel per kind, mean accuracy against the percentage replaced, std error bars, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pgig_tf.viz.plots import method_styles

    settings, baseline = results["settings"], results["baseline_accuracy"]
    names = list(results["methods"])
    styles = method_styles(names)
    x = [0] + list(settings["fractions"])
    figure, axes = plt.subplots(1, 2, figsize=(11.5, 4.6), layout="constrained")
    lowest = min(
        [baseline["mean"] - (baseline["std"] or 0.0)]
        + [c["mean"] - (c["std"] or 0.0) for r in results["methods"].values() for k in KINDS for c in r[k].values()]
    )
    bottom = max(0.0, np.floor((lowest - 0.05) * 10.0) / 10.0)  # a tenth below the lowest bar, at least 0
    titles = {
        "roar": "ROAR: most relevant pixels replaced (lower is better)",
        "kar": "KAR: least relevant pixels replaced (higher is better)",
    }
    for axis, kind in zip(axes, KINDS):
        ordered = sorted(names, key=lambda n: results["methods"][n][f"{kind}_area"], reverse=kind == "kar")
        for name in ordered:
            cells = [results["methods"][name][kind][fraction_key(p)] for p in settings["fractions"]]
            means = [baseline["mean"]] + [c["mean"] for c in cells]
            stds = [baseline["std"]] + [c["std"] for c in cells]
            colour, linestyle, marker = styles[name]
            axis.errorbar(
                x,
                means,
                yerr=None if None in stds else stds,
                color=colour,
                ls=linestyle,
                marker=marker or None,
                markersize=4,
                capsize=2,
                lw=1.5,
                label=f"{name} ({results['methods'][name][f'{kind}_area']:.3f})",
            )
        axis.set_title(titles[kind], fontsize=10)
        axis.set_xlabel("pixels replaced (%)")
        axis.set_ylabel("test accuracy of the retrained CNN")
        axis.set_ylim(bottom, 1.005)
        axis.grid(alpha=0.3)
        # at small t every line is near the baseline: the lower left corner stays free
        axis.legend(fontsize=7, title="method (area)", title_fontsize=7, loc="lower left")
    seeds = len(settings["seeds"])
    figure.suptitle(
        f"retrained digits CNN, {settings['replacement']} replacement; mean over {seeds} seed(s)"
        + (", bars: ± 1 std" if seeds > 1 else ""),
        fontsize=11,
    )
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_table(results):
    fractions = [fraction_key(p) for p in results["settings"]["fractions"]]
    baseline = results["baseline_accuracy"]
    print(
        f"baseline accuracy (t = 0): {baseline['mean']:.4f}"
        + (f" ± {baseline['std']:.4f}" if baseline["std"] is not None else "")
    )
    header = "".join(f"{'R' + p:>7}" for p in fractions) + "".join(f"{'K' + p:>7}" for p in fractions)
    print(f"{'method':<21}{'ROAR area':>10}{'KAR area':>10}{header}   (R: ROAR, K: KAR accuracy at t%)")
    rows = sorted(results["methods"].items(), key=lambda item: item[1]["roar_area"])
    for name, r in rows:
        cells = "".join(f"{r['roar'][p]['mean']:>7.3f}" for p in fractions)
        cells += "".join(f"{r['kar'][p]['mean']:>7.3f}" for p in fractions)
        print(f"{name:<21}{r['roar_area']:>10.4f}{r['kar_area']:>10.4f}{cells}")


def main(argv=None):
    from pgig_tf.cli import console

    console.prepare()
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    from pgig_tf.files import LockedError, exclusive_lock

    try:
        with exclusive_lock(os.path.join(args.out, ".lock"), f"the output folder {args.out}"):
            return run(args)
    except LockedError as error:
        raise SystemExit(str(error)) from None


def run(args):
    """One run: resumes from --out/checkpoint.json when it holds part of this run."""
    started = time.perf_counter()
    verbose = not args.quiet
    path = os.path.join(args.out, CHECKPOINT)
    settings = run_settings(args)
    if args.fresh:
        import shutil

        if os.path.exists(path):
            os.remove(path)
            print(f"--fresh: discarded the checkpoint {path}")
        if os.path.isdir(os.path.join(args.out, "maps")):
            shutil.rmtree(os.path.join(args.out, "maps"))
    state = read_checkpoint(path, settings)  # before any work: exits if it is of other settings or damaged

    from pgig_tf.cli import console

    console.import_tensorflow()
    import numpy as np
    import tensorflow as tf

    from pgig_tf.evaluation.roar import channel_means, modified_images
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)  # the softmax output is explained on purpose
    tf.config.experimental.enable_op_determinism()  # the same seed and data train the same CNN
    model, accuracy, (x_train, y_train, x_test, y_test) = explained_model(args)
    identity = model_identity(model)
    if state is not None and state["identity"] != identity:
        different = sorted(key for key in identity if state["identity"].get(key) != identity[key])
        raise SystemExit(
            f"{path!r} was written with another model or library versions (differs in {', '.join(different)}); "
            "--fresh discards it, or choose another --out"
        )
    images, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    maps, _ = all_maps(args, model, images, labels, x_train, identity, verbose)
    from pgig_tf.files import checksum

    maps_sha = {name: checksum({"maps": maps[name]}) for name in args.methods}
    if state is None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "settings": settings,
            "identity": identity,
            "maps_sha256": maps_sha,
            "cells": {},
        }
    elif state["maps_sha256"] != maps_sha:
        raise SystemExit(
            f"{path!r} was written with other maps than those in {os.path.join(args.out, 'maps')}; --fresh discards both"
        )
    cells = state["cells"]
    todo = [key for key in expected_cells(settings) if key not in cells]
    if verbose and cells:
        print(f"resuming: {len(cells)} of {len(cells) + len(todo)} trainings done")

    num_train, num_test = args.num_train or len(x_train), args.num_test or len(x_test)
    train, test = slice(0, min(num_train, len(x_train))), slice(0, min(num_test, len(x_test)))
    # each digit's index among all digits (training digits first) keys its ROAD noise
    train_ids = np.arange(len(x_train))[train]
    test_ids = len(x_train) + np.arange(len(x_test))[test]
    fill = "road" if args.replacement == "road" else channel_means(x_train[train])
    seconds = []

    def record(key, accuracy, took):
        cells[key] = accuracy
        write_checkpoint(path, state)
        seconds.append(took)
        if verbose:
            print(f"{key}: accuracy {accuracy:.4f} ({took:.1f} s)", flush=True)

    def groups():
        """(keys, data) of every training still to do, one group of seeds per cell, images made as needed."""
        seeds = settings["seeds"]
        keys = [cell_key(None, None, None, s) for s in seeds]
        yield keys, (x_train[train], y_train[train], x_test[test], y_test[test])
        for name in args.methods:
            for kind in KINDS:
                for percent in args.fractions:
                    keys = [cell_key(name, kind, percent, s) for s in seeds]
                    if all(key in cells for key in keys):
                        continue
                    t = percent / 100.0
                    options = dict(
                        keep=kind == "kar", fill=fill, absolute=args.absolute, road_noise=ROAD_NOISE, seed=ANALYSIS_SEED
                    )
                    # ROAR: the top t replaced; KAR: the top 1 - t kept, the rest (the least relevant t) replaced
                    fraction = t if kind == "roar" else 1.0 - t
                    train_images = modified_images(
                        x_train[train], maps[name][: len(x_train)][train], fraction, ids=train_ids, **options
                    )
                    test_images = modified_images(
                        x_test[test], maps[name][len(x_train) :][test], fraction, ids=test_ids, **options
                    )
                    yield keys, (train_images, y_train[train], test_images, y_test[test])

    if args.workers == 0:
        retrainer = make_retrainer(args)
        for keys, data in groups():
            for key in (k for k in keys if k not in cells):
                began = time.perf_counter()
                trained = retrainer.accuracy(*data, seed=int(key.rsplit("/", 1)[1]))
                record(key, trained, time.perf_counter() - began)
    else:
        from pgig_tf.datasets.digits import build_digits_cnn
        from pgig_tf.evaluation.training_pool import TrainingPool

        with TrainingPool(
            build_digits_cnn, args.workers, epochs=args.epochs, batch_size=64, learning_rate=1e-3
        ) as pool:
            for keys, data in groups():
                for key in (k for k in keys if k not in cells):
                    pool.submit(key, *data, seed=int(key.rsplit("/", 1)[1]))
                if pool.pending >= 2 * args.workers:  # a bounded queue: images are made as trainings finish
                    for finished in pool.finished(at_most=pool.pending - args.workers):
                        record(*finished)
            for finished in pool.finished():
                record(*finished)

    model_info = {
        "model": "digits_cnn (the cached digits CNN, seed 0, 10 epochs), explaining the true label",
        "test_accuracy": accuracy,
        "dataset": "sklearn load_digits (32x32, [-1, 1])",
        "train_images": int(len(x_train[train])),
        "test_images": int(len(x_test[test])),
    }
    results = build_results(settings, state, model_info)
    from pgig_tf.files import atomic_write

    with atomic_write(os.path.join(args.out, "results.json")) as handle:
        json.dump(results, handle, indent=1)
    plot(results, os.path.join(args.out, "roar.png"))
    if verbose:
        print_table(results)
        timing = (
            f"{len(seconds)} trainings in this run, {np.mean(seconds):.1f} s each" if seconds else "no training needed"
        )
        print(
            f"{timing}; {time.perf_counter() - started:.0f} s in all; wrote {os.path.join(args.out, 'results.json')} "
            f"and roar.png"
        )
    return results


if __name__ == "__main__":
    main()
