"""Which half of the attribution loop needs float32? bfloat16 forward with a float32 backward pass, measured.

`compute_dtype="bfloat16"` runs the whole loop, forward and backward, in bfloat16. Two variants
keep part of it in float32, for Integrated Gradients and PGIG:

- `bfloat16_forward`: the model stays float32; each Dense/Conv kernel layer computes its linear
  part in bfloat16 and casts it back to float32, while its vector-Jacobian product (the
  backward pass, with the pattern-modified kernel w ⊙ p for PGIG, Eq. 3) runs in float32. All
  tensors between layers, and every other layer, are float32.
- `float32_pattern_backward` (PGIG only): `compute_dtype="bfloat16"`, but the backward pass
  through each kernel layer, where PGIG uses w ⊙ p instead of w, is computed in float32 and cast
  back to bfloat16.

For each variant and float32 and bfloat16: on the trained digits CNN (its held-out digits,
explaining the predicted class), the Spearman rank correlation of each map with its float32
twin, the overlap of their top-10% pixels and the relative L2 distance (as
`benchmarks.bfloat16_study`); on VGG16 (weights=None, 224², random images), the seconds per
image of each, the variants timed in turn in every round (median of `--repeats` rounds), and
the same agreement figures.

    python -m benchmarks.bfloat16_backward [--out results/bfloat16_backward.json]
"""

import argparse
import json
import os
import statistics
import time
import warnings

import numpy as np
import tensorflow as tf

from benchmarks.bfloat16_study import agreement
from pgig_tf.core.rules import LayerwiseRule, PatternAttributionRule, linear_with_backward_kernel

VARIANTS = ("float32", "bfloat16", "bfloat16_forward", "float32_pattern_backward")


class BFloat16ForwardGradient(LayerwiseRule):
    """Plain gradients of a float32 model whose kernel layers compute their forward linear part in bfloat16."""

    name = "gradient_bfloat16_forward"

    def _linear(self, layer, x):
        kernel = tf.convert_to_tensor(layer.kernel)
        return linear_with_backward_kernel(layer, x, kernel, kernel, forward_dtype="bfloat16")


class BFloat16ForwardPatternAttribution(PatternAttributionRule):
    """PatternAttribution's backward (w ⊙ p, in float32) through a forward whose linear parts run in bfloat16."""

    name = "pattern_attribution_bfloat16_forward"

    def _linear(self, layer, x):
        kernel = tf.convert_to_tensor(layer.kernel)
        pattern = tf.cast(self._variables[layer.name], kernel.dtype)
        return linear_with_backward_kernel(
            layer, x, kernel, self.backward_kernel(kernel, pattern), forward_dtype="bfloat16"
        )


class Float32PatternBackward(PatternAttributionRule):
    """PatternAttribution under compute_dtype='bfloat16' with each kernel layer's backward pass in float32."""

    name = "pattern_attribution_float32_backward"

    def _linear(self, layer, x):
        kernel = tf.convert_to_tensor(layer.kernel)
        substitute = self.backward_kernel(tf.cast(kernel, tf.float32), tf.cast(self._variables[layer.name], tf.float32))
        return linear_with_backward_kernel(layer, x, kernel, substitute, backward_dtype="float32")


def make_analyzer(method, variant, model, patterns, steps, batch_size):
    """Integrated Gradients ('integrated_gradients') or PGIG ('pgig') in one precision variant; None if it does not apply."""
    from pgig_tf import create_analyzer

    common = {"steps": steps, "batch_size": batch_size}
    pgig = method == "pgig"
    if variant == "float32":
        return create_analyzer(method, model, **({"patterns": patterns} if pgig else {}), **common)
    if variant == "bfloat16":
        return create_analyzer(
            method, model, compute_dtype="bfloat16", **({"patterns": patterns} if pgig else {}), **common
        )
    if variant == "bfloat16_forward":
        rule = BFloat16ForwardPatternAttribution if pgig else BFloat16ForwardGradient
        return create_analyzer("integrated_gradients", model, rule=rule, patterns=patterns if pgig else None, **common)
    if variant == "float32_pattern_backward" and pgig:
        return create_analyzer(
            "integrated_gradients",
            model,
            rule=Float32PatternBackward,
            patterns=patterns,
            compute_dtype="bfloat16",
            **common,
        )
    return None


def agreement_summary(reference, other):
    rho, overlap, l2 = agreement(reference, other)
    return {
        "spearman_mean": float(np.nanmean(rho)),
        "spearman_min": float(np.nanmin(rho)),
        "top10_overlap_mean": float(np.mean(overlap)),
        "relative_l2_mean": float(np.nanmean(l2)),
    }


def digits_part(methods, cache_dir, steps, batch_size):
    from pgig_tf.datasets.digits import trained_digits_cnn
    from pgig_tf.evaluation.benchmark import predict_batches
    from pgig_tf.patterns.fitting import fit_patterns

    model, _, (x_train, _, x_test, _) = trained_digits_cnn(cache_dir, verbose=False)
    targets = np.argmax(predict_batches(model, x_test), axis=1)
    patterns = fit_patterns(model, x_train, verbose=False)
    result = {"images": len(x_test), "steps": steps}
    for method in methods:
        maps = {}
        for variant in VARIANTS:
            analyzer = make_analyzer(method, variant, model, patterns, steps, batch_size)
            if analyzer is not None:
                maps[variant] = analyzer.analyze(x_test, neuron_selection=targets)
        result[method] = {v: agreement_summary(maps["float32"], maps[v]) for v in maps if v != "float32"}
        for variant, row in result[method].items():
            print(
                f"  digits {method:<21} {variant:<25} ρ {row['spearman_mean']:.4f}  top-10% "
                f"{row['top10_overlap_mean']:.3f}  L2 {row['relative_l2_mean']:.4f}",
                flush=True,
            )
    return result


def vgg16_part(methods, images, steps, batch_size, repeats, seed=0):
    import keras

    from pgig_tf.patterns.fitting import fit_patterns

    model = keras.applications.VGG16(weights=None)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 50, (images + 2, 224, 224, 3)).astype(np.float32)  # caffe-like scale
    x, fit = x[:images], x[images:]
    targets = np.argmax(model.predict(x, verbose=0), axis=1)
    patterns = fit_patterns(model, fit, verbose=False) if "pgig" in methods else None
    result = {"images": images, "steps": steps, "repeats": repeats}
    for method in methods:
        analyzers = {}
        for variant in VARIANTS:
            analyzer = make_analyzer(method, variant, model, patterns, steps, batch_size)
            if analyzer is not None:
                analyzer.analyze(x[:1], neuron_selection=targets[:1])  # tracing
                analyzers[variant] = analyzer
        times = {v: [] for v in analyzers}
        maps = {}
        for _ in range(repeats):  # every variant once per round, so that a drifting CPU affects all alike
            for variant, analyzer in analyzers.items():
                start = time.perf_counter()
                maps[variant] = analyzer.analyze(x, neuron_selection=targets)
                times[variant].append(time.perf_counter() - start)
        seconds = {v: statistics.median(t) / images for v, t in times.items()}
        rows = {}
        for variant in analyzers:
            row = {"seconds_per_image": seconds[variant], "speedup": seconds["float32"] / seconds[variant]}
            if variant != "float32":
                row.update(agreement_summary(maps["float32"], maps[variant]))
            rows[variant] = row
            print(
                f"  VGG16 {method:<21} {variant:<25} {seconds[variant]:.2f} s/image  speed-up {row['speedup']:.2f}"
                + (f"  ρ {row['spearman_mean']:.4f}  L2 {row['relative_l2_mean']:.3f}" if variant != "float32" else ""),
                flush=True,
            )
        result[method] = rows
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="integrated_gradients,pgig")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vgg16-images", type=int, default=2, help="0 skips VGG16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--out", default=os.path.join("results", "bfloat16_backward.json"))
    args = parser.parse_args(argv)
    from pgig_tf.cli import console

    console.prepare()
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    methods = [m for m in args.methods.split(",") if m]
    report = {"tensorflow": tf.__version__, "cpu_count": os.cpu_count()}
    if not args.skip_digits:
        report["digits"] = digits_part(methods, args.cache_dir, args.steps, args.batch_size)
    if args.vgg16_images:
        report["vgg16"] = vgg16_part(methods, args.vgg16_images, args.steps, args.batch_size, args.repeats)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
