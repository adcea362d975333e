"""Explains a Keras model's predictions on image files: one PNG grid of heatmaps, methods as columns."""

import argparse
import os

import numpy as np

PREPROCESSING = ("unit", "zero_one", "caffe", "none")


def load_images(paths, height, width, channels, preprocessing):
    """Image files resized (squashed) to the model's input size and preprocessed; (n, H, W, C) float32."""
    import keras

    mode = "grayscale" if channels == 1 else "rgb"
    raw = np.stack(
        [keras.utils.img_to_array(keras.utils.load_img(p, color_mode=mode, target_size=(height, width))) for p in paths]
    ).astype(np.float32)
    if preprocessing == "unit":
        return raw / 127.5 - 1.0
    if preprocessing == "zero_one":
        return raw / 255.0
    if preprocessing == "caffe":
        return keras.applications.vgg16.preprocess_input(raw)
    return raw


def class_probabilities(outputs):
    """(probabilities, computed): the outputs if each row already is a distribution, else their softmax."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if np.all(outputs >= 0) and np.all(outputs <= 1) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs, False
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True), True


def row_titles(paths, outputs, explained=None):
    """Per image: file name, predicted class and its probability (softmax of the outputs unless they are
    probabilities already), and the explained class when `explained` (one per image) is given."""
    outputs = np.asarray(outputs).reshape(len(paths), -1)
    if outputs.shape[1] == 1:  # one output unit: no classes to choose from
        return [f"{os.path.basename(p)}\noutput {o[0]:.3f}" for p, o in zip(paths, outputs)]
    probabilities, computed = class_probabilities(outputs)
    label = "softmax p" if computed else "p"
    titles = []
    for i, path in enumerate(paths):
        predicted = int(np.argmax(outputs[i]))
        title = f"{os.path.basename(path)}\npred {predicted} ({label} {probabilities[i, predicted]:.3f})"
        if explained is not None and int(explained[i]) != predicted:
            title += f"\nexplains {int(explained[i])} ({label} {probabilities[i, int(explained[i])]:.3f})"
        titles.append(title)
    return titles


def main(argv=None):
    from pgig_tf.cli import console
    from pgig_tf.names import ANALYZER_NAMES

    console.prepare()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a Keras model file (.keras or .h5)")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--methods",
        default="gradient,integrated_gradients,guided_backprop,pattern_attribution,pgig",
        help=f"comma-separated, from: {', '.join(ANALYZER_NAMES)}",
    )
    parser.add_argument(
        "--patterns", help="patterns .npz for the pattern methods, from pgig-fit-patterns (without it they are skipped)"
    )
    parser.add_argument(
        "--background",
        help="a .npy of preprocessed inputs: Expected Gradients' background (without it expected_gradients is skipped)",
    )
    parser.add_argument(
        "--preprocessing",
        default="unit",
        choices=PREPROCESSING,
        help="unit: [-1, 1] (default); zero_one: [0, 1]; caffe: VGG16's BGR mean subtraction; none",
    )
    parser.add_argument("--neuron", type=int, default=None, help="output unit to explain (default: the prediction)")
    parser.add_argument("--out", default="results/explain.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [name for name in names if name not in ANALYZER_NAMES]
    if unknown or not names:
        parser.error(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ANALYZER_NAMES)}"
        )

    console.import_tensorflow()
    import keras

    from pgig_tf import Patterns, create_analyzer
    from pgig_tf.analyzers import analyzer_class
    from pgig_tf.files import CorruptFileError
    from pgig_tf.viz.plots import plot_heatmap_grid

    # decided before any work: a method that lacks its input is skipped, never failed on later
    methods = []
    for name in names:
        if analyzer_class(name).rule_needs_patterns() and not args.patterns:
            print(
                f"skipping {name}: it needs patterns; fit them with pgig-fit-patterns --model {args.model} "
                "--dataset DATASET (or pgig_tf.fit_patterns in Python) and pass --patterns FILE.npz"
            )
        elif analyzer_class(name).uses_background and not args.background:
            print(
                f"skipping {name}: it needs background inputs; pass --background FILE.npy "
                "(inputs preprocessed like the images, e.g. training images)"
            )
        else:
            methods.append(name)
    if not methods:
        raise SystemExit("nothing to explain: every method was skipped")

    model = keras.models.load_model(args.model, compile=False)
    _, height, width, channels = model.inputs[0].shape
    x = load_images(args.images, height, width, channels, args.preprocessing)
    try:
        patterns = Patterns.load(args.patterns) if args.patterns else None
    except CorruptFileError as error:
        raise SystemExit(f"--patterns: {error}") from None
    outputs = model.predict(x, verbose=0).reshape(len(x), -1)
    if args.neuron is not None and not 0 <= args.neuron < outputs.shape[1]:
        raise SystemExit(
            f"--neuron must be an output unit of the model, 0 to {outputs.shape[1] - 1} (it has {outputs.shape[1]} "
            f"outputs), got {args.neuron}"
        )
    targets = outputs.argmax(1) if args.neuron is None else np.full(len(x), args.neuron)
    maps = {}
    for name in methods:
        kwargs = {}
        if analyzer_class(name).rule_needs_patterns():
            kwargs["patterns"] = patterns
        if analyzer_class(name).uses_background:
            kwargs["baselines"] = np.load(args.background)
        analyzer = create_analyzer(name, model, **kwargs)
        analyzer.seed = args.seed  # used by the sampling methods only
        maps[name] = analyzer.analyze(x, neuron_selection=targets)
    titles = row_titles(args.images, outputs, None if args.neuron is None else targets)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot_heatmap_grid(x, maps, args.out, row_titles=titles)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
