"""Runs the model-randomisation sanity check (Adebayo et al., 2018) for several pgig_tf methods; writes a PNG and JSON."""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

DEFAULT_METHODS = "gradient,integrated_gradients,guided_backprop,pattern_attribution,pgig"

DESCRIPTION = """\
Model-randomisation sanity check: the weighted layers of a copy of the model are re-drawn at
random from the output layer down (cascading), and each method's maps are compared with those
of the trained model by Spearman rank correlation (of |maps|, and signed). A method whose maps
stay similar does not depend on what the model learned. Pattern methods (pattern_net,
pattern_attribution, pgig, and any method with rule pattern_*) have their patterns re-fitted on
every randomised model (analyzer.fit(data)), since the patterns change with the weights.
Without --model it uses the degradation benchmark's digits CNN (trained once, cached) on
scikit-learn's 8x8 digits upsampled to 32x32 (scaled to [-1, 1]); the check runs on held-out
images.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a Keras model file (.keras); needs --data")
    parser.add_argument(
        "--data",
        help="a .npy array of inputs for --model: the first --num-images are explained; pattern methods "
        "(and expected_gradients) are fitted on up to --fit-samples of it",
    )
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated create_analyzer names (default: {DEFAULT_METHODS})"
    )
    parser.add_argument("--num-images", type=int, default=8, help="inputs explained (default 8)")
    parser.add_argument(
        "--fit-samples",
        type=int,
        default=512,
        help="samples for fitting patterns on each randomised model (default 512)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="training epochs of the default model (default 10, the degradation benchmark's; cached)",
    )
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"),
        help="where the default model is cached (shared with the degradation benchmark)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the weight draws, of the default model and of sampling methods"
    )
    parser.add_argument(
        "--mode",
        choices=("cascading", "independent"),
        default="cascading",
        help="randomise the top j layers (cascading, default) or only the j-th (independent)",
    )
    parser.add_argument(
        "--signed",
        action="store_true",
        help="plot the correlation of signed maps instead of |maps| (both are in the JSON)",
    )
    parser.add_argument("--out", default="results", help="output directory (default results/)")
    args = parser.parse_args(argv)
    if args.model and not args.data:
        parser.error("--model needs --data (the inputs to explain and the fitting data)")
    if args.data and not args.model:
        parser.error("--data is only used with --model")
    if args.num_images < 1:
        parser.error("--num-images must be at least 1")
    return args


def make_factory(name, fit_data, seed):
    """analyzer_factory for method `name`: builds it on the given model and fits it on `fit_data`.

    `fit` is a no-op for methods with nothing to fit; pattern methods re-fit their patterns on each
    (randomised) model, expected_gradients takes its background from `fit_data`.
    """
    from pgig_tf import ANALYZERS, create_analyzer

    kwargs = {"seed": seed} if ANALYZERS[name].random else {}  # same noise at every step

    def factory(model):
        return create_analyzer(name, model, **kwargs).fit(fit_data, verbose=False)

    return factory


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one analyzer per step traces its own function; not a problem here
    # the paper explains the softmax output on purpose (§5); the warning would repeat per method
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)

    from pgig_tf import ANALYZERS
    from pgig_tf.evaluation.sanity import cascading_randomization, plot_randomization

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ANALYZERS]
    if unknown or not methods:
        raise SystemExit(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(ANALYZERS)}"
        )
    start = time.time()
    settings = {"seed": args.seed, "num_images": args.num_images, "mode": args.mode}
    if args.model:
        model = keras.models.load_model(args.model, compile=False)
        data = np.load(args.data).astype("float32")
        x, fit_data = data[: args.num_images], data[: args.fit_samples]
        settings.update(model=args.model, data=args.data)
    else:
        from pgig_tf.datasets.digits import trained_digits_cnn

        model, accuracy, (x_train, _, x_test, _) = trained_digits_cnn(
            args.cache_dir, seed=args.seed, epochs=args.epochs, verbose=False
        )
        print(f"default model: the benchmark's digits CNN, {args.epochs} epochs, held-out accuracy {accuracy:.3f}")
        x, fit_data = x_test[: args.num_images], x_train[: args.fit_samples]
        settings.update(model="digits_cnn (default)", epochs=args.epochs, test_accuracy=accuracy)
    settings["fit_samples"] = int(len(fit_data))

    results = {}
    for name in methods:
        t0 = time.time()
        results[name] = cascading_randomization(
            model,
            make_factory(name, fit_data, args.seed),
            x,
            seed=args.seed,
            absolute=not args.signed,
            mode=args.mode,
        )
        print(f"  {name}: {time.time() - t0:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    summary = {"settings": settings, "methods": {name: r.to_dict() for name, r in results.items()}}
    with open(os.path.join(args.out, "sanity.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_randomization(
        results,
        os.path.join(args.out, "sanity.png"),
        title=f"Model-randomisation sanity check ({len(x)} inputs, seed {args.seed})",
    )

    layers = next(iter(results.values())).layers
    print(f"layers randomised, top first: {', '.join(layers)}")
    print(f"mean Spearman correlation with the original maps, all layers randomised ({len(x)} inputs):")
    columns = ["signed"] if args.signed else ["|map|", "signed"]
    print(f"{'method':24s}" + "".join(f"{c:>8s}" for c in columns))
    for name, r in results.items():
        values = [r.signed_mean[-1]] if args.signed else [r.mean[-1], r.signed_mean[-1]]
        print(f"{name:24s}" + "".join(f"{v:8.3f}" for v in values))
    print(f"wrote {args.out}/sanity.json and {args.out}/sanity.png in {time.time() - start:.1f} s")
    return summary


if __name__ == "__main__":
    main()
