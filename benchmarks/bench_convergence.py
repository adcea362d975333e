"""Convergence of the path methods' integration rules: error against a 2,048-point reference per gradient evaluation.

For Integrated Gradients and PGIG, every rule of `pgig_tf.core.integration` (right, left,
middle and trapezoid Riemann sums, Gauss–Legendre) at m = 4, 8, ..., 1024 points is compared
with a reference map: the middle Riemann sum at 2,048 points (its nodes (k − 1/2)/2048 are
nodes of none of the tested grids). A second reference, Gauss–Legendre at 2,048 points, bounds
the reference's own error (their relative difference is printed). The error of a map is its
relative L2 distance to the reference, ||φ − φ_ref||₂ / ||φ_ref||₂, per image; the tables give
its mean (and max) over the images, the evaluations each rule needs for a mean (and a max)
error of at most 1%, the seconds per image at that number of evaluations, and steps="auto"
(tolerance 0.01 by default): its mean and max evaluations, mean and max error and seconds per
image (seconds: the median of `--repeats` calls), also when stopped after one refinement within
the tolerance instead of two. Last, the overhead of steps="auto" over a fixed-steps run with the same evaluations
(right Riemann, a tolerance no sample meets, so that every sample runs all levels up to
`--overhead-steps`).

The default model is the embedded digits CNN (`pgig_tf.datasets.digits.trained_digits_cnn`,
trained once and cached) on its first `--images` held-out digits, explaining the predicted
class's probability; PGIG's patterns are fitted on its training digits. `--model vgg16` builds
Keras' VGG16 with weights=None at 224² (random weights) on random images with a caffe-like
scale (patterns fitted on `--fit-images` other random images); on a 2-core CPU one 1,024-point
reference alone takes 3.5 (with AMX) to 14 minutes (AVX2 only) per image there, so use few
images, `--reference-steps 1024`, `--grid` up to 256 and `--auto-rules` to run steps="auto" with
one rule only.

Run from the repository root: `python -m benchmarks.bench_convergence` (writes
results/bench_convergence_<model>.json).
"""

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import numpy as np

from pgig_tf.core.integration import METHODS as RULES

REFERENCE_RULE = "riemann_middle"
CHECK_RULE = "gausslegendre"
TARGET_ERROR = 0.01
WARM_UP = [True]  # a traced call on one image before each timed call (--no-warm-up: the time includes tracing)


def load_model_and_data(name, cache_dir, images, fit_images, seed=0):
    """(model, x to explain, data to fit patterns on) for `name` ('digits' or 'vgg16')."""
    if name == "digits":
        from pgig_tf.datasets.digits import trained_digits_cnn

        model, _, (x_train, _, x_test, _) = trained_digits_cnn(cache_dir, verbose=False)
        return model, x_test[:images], x_train
    if name == "vgg16":
        import keras

        model = keras.applications.VGG16(weights=None)
        rng = np.random.default_rng(seed)
        # caffe-preprocessed images have pixel values of tens around 0
        x = rng.normal(0, 50, (images + fit_images, 224, 224, 3)).astype(np.float32)
        return model, x[:images], x[images:]
    raise ValueError(f"unknown model {name!r}: digits or vgg16")


def relative_errors(maps, reference):
    """||φ − φ_ref||₂ / ||φ_ref||₂ per image."""
    difference = (maps - reference).reshape(len(maps), -1)
    return np.linalg.norm(difference, axis=1) / np.linalg.norm(reference.reshape(len(maps), -1), axis=1)


def timed_maps(make_analyzer, x, targets, agreements=None):
    """(maps, seconds per image of one call, analyzer): a warm-up call on the first image (tracing), then the call.

    `agreements` sets a steps="auto" analyzer's `auto_agreements` (the refinements within the tolerance that stop it).
    """
    analyzer = make_analyzer()
    if agreements is not None:
        analyzer.auto_agreements = agreements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of steps="auto": reported in the table instead
        if WARM_UP[0]:
            analyzer.analyze(x[:1], neuron_selection=targets[:1])
        start = time.perf_counter()
        maps = analyzer.analyze(x, neuron_selection=targets)
        seconds = time.perf_counter() - start
    return maps, seconds / len(x), analyzer


def median_seconds_per_image(analyzer, x, targets, repeats):
    """Median seconds per image of `repeats` calls of an analyzer that has been called before (traced)."""
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            start = time.perf_counter()
            analyzer.analyze(x, neuron_selection=targets)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(x)


def auto_record(analyzer, maps, reference, seconds):
    """What a steps="auto" run cost and how far it is from the reference."""
    errors = relative_errors(maps, reference)
    return {
        "mean_evaluations": float(analyzer.last_evaluations.mean()),
        "max_evaluations": int(analyzer.last_evaluations.max()),
        "mean_steps": float(analyzer.last_steps.mean()),
        "converged": float(analyzer.last_converged.mean()),
        "mean_error": float(errors.mean()),
        "max_error": float(errors.max()),
        "seconds_per_image": seconds,
    }


def first_reaching(grid, errors, target):
    """The smallest m of `grid` whose error is at most `target`, or None."""
    return next((m for m in grid if errors[m] <= target), None)


def run_method(model, method, x, targets, grid, args, patterns):
    """The convergence record of `method` ('integrated_gradients' or 'pgig')."""
    from pgig_tf import create_analyzer

    def analyzer_for(**settings):
        extra = {"patterns": patterns} if method == "pgig" else {}
        return lambda: create_analyzer(method, model, batch_size=args.batch_size, **extra, **settings)

    reference, reference_seconds, _ = timed_maps(
        analyzer_for(steps=args.reference_steps, method=REFERENCE_RULE), x, targets
    )
    record = {"reference_seconds_per_image": reference_seconds}
    if not args.skip_reference_check:
        check, _, _ = timed_maps(analyzer_for(steps=args.reference_steps, method=CHECK_RULE), x, targets)
        difference = relative_errors(check, reference)
        record["reference_check"] = {"mean": float(difference.mean()), "max": float(difference.max())}
    rules = {}
    for rule in args.rules:
        errors, seconds = {}, {}
        for m in grid:
            if rule == "riemann_trapezoid" and m < 2:
                continue
            maps, seconds[m], _ = timed_maps(analyzer_for(steps=m, method=rule), x, targets)
            errors[m] = relative_errors(maps, reference)
        mean = {m: float(e.mean()) for m, e in errors.items()}
        worst = {m: float(e.max()) for m, e in errors.items()}
        needed_mean = first_reaching(sorted(mean), mean, TARGET_ERROR)
        needed_all = first_reaching(sorted(worst), worst, TARGET_ERROR)
        # seconds per image: the median of repeated calls (the grid's single calls only give the errors);
        # without warm-up, the single calls' seconds (tracing included)
        fixed_seconds = seconds.get(needed_mean)
        if WARM_UP[0] and needed_mean is not None:
            fixed = analyzer_for(steps=needed_mean, method=rule)()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fixed.analyze(x[:1], neuron_selection=targets[:1])  # tracing
            fixed_seconds = median_seconds_per_image(fixed, x, targets, args.repeats)
        rules[rule] = {
            "mean_error": {str(m): v for m, v in mean.items()},
            "max_error": {str(m): v for m, v in worst.items()},
            "seconds_per_image_single_call": {str(m): v for m, v in seconds.items()},
            "evaluations_for_mean_error_1pct": needed_mean,
            "evaluations_for_max_error_1pct": needed_all,
            "seconds_per_image_at_mean_error_1pct": fixed_seconds,
        }
        if rule in args.auto_rules:
            auto_settings = {"steps": "auto", "method": rule, "tolerance": args.tolerance, "max_steps": args.max_steps}
            auto_maps, auto_seconds, auto = timed_maps(analyzer_for(**auto_settings), x, targets)
            if WARM_UP[0]:
                auto_seconds = median_seconds_per_image(auto, x, targets, args.repeats)
            rules[rule]["auto"] = {
                "tolerance": args.tolerance,
                "max_steps": args.max_steps,
                "agreements": auto.auto_agreements,
                **auto_record(auto, auto_maps, reference, auto_seconds),
            }
            if not args.skip_agreement_study:  # the same, stopping after one refinement within the tolerance
                one_maps, one_seconds, one = timed_maps(analyzer_for(**auto_settings), x, targets, agreements=1)
                rules[rule]["auto_one_agreement"] = auto_record(one, one_maps, reference, one_seconds)
        errors_text = ", ".join(f"{m}: {100 * v:.2f}%" for m, v in mean.items())
        print(f"  {method} {rule}: mean error {errors_text}", flush=True)
    record["rules"] = rules
    return record


def auto_overhead(model, x, targets, steps, batch_size, repeats):
    """Seconds of steps="auto" (right Riemann, every sample to `steps` points) against fixed `steps`, same evaluations."""
    from pgig_tf import create_analyzer

    auto = create_analyzer(
        "integrated_gradients", model, steps="auto", tolerance=1e-12, max_steps=steps, batch_size=batch_size
    )
    fixed = create_analyzer("integrated_gradients", model, steps=steps, batch_size=batch_size)
    times = {"auto": [], "fixed": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for analyzer in (auto, fixed):
            analyzer.analyze(x[:1], neuron_selection=targets[:1])  # tracing
        for _ in range(repeats):  # alternating, so that both see the same load
            for name, analyzer in (("auto", auto), ("fixed", fixed)):
                start = time.perf_counter()
                analyzer.analyze(x, neuron_selection=targets)
                times[name].append(time.perf_counter() - start)
    assert int(auto.last_evaluations.min()) == steps  # every sample ran all levels: the same evaluations
    auto_seconds, fixed_seconds = statistics.median(times["auto"]), statistics.median(times["fixed"])
    return {
        "steps": steps,
        "images": len(x),
        "auto_seconds": auto_seconds,
        "fixed_seconds": fixed_seconds,
        "ratio": auto_seconds / fixed_seconds,
        "repeats": repeats,
    }


def print_tables(report):
    grid = report["grid"]
    for method, record in report["methods"].items():
        print(f"\n{method}: mean relative L2 error to {REFERENCE_RULE} at {report['reference_steps']} points")
        check = record.get("reference_check")
        if check:
            print(
                f"(reference check: {CHECK_RULE} at {report['reference_steps']} differs by "
                f"{100 * check['mean']:.3f}% mean, {100 * check['max']:.3f}% max)"
            )
        print("| rule | " + " | ".join(f"m={m}" for m in grid) + " |")
        print("| --- |" + " ---: |" * len(grid))
        for rule, data in record["rules"].items():
            cells = [f"{100 * data['mean_error'][str(m)]:.2f}%" if str(m) in data["mean_error"] else "" for m in grid]
            print(f"| {rule} | " + " | ".join(cells) + " |")
        print(
            f"\n{method}: evaluations for 1% error (mean / every image), seconds per image there; "
            f'steps="auto" (tolerance {report["tolerance"]})'
        )
        print(
            "| rule | evals, mean err <= 1% | evals, max err <= 1% | s/image at mean 1% "
            "| auto evals mean (max) | auto err mean (max) | auto converged | auto s/image |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for rule, data in record["rules"].items():
            auto = data.get("auto")
            seconds = data["seconds_per_image_at_mean_error_1pct"]
            auto_cells = (
                "| | | | |"
                if auto is None
                else f"| {auto['mean_evaluations']:.0f} ({auto['max_evaluations']}) "
                f"| {100 * auto['mean_error']:.2f}% ({100 * auto['max_error']:.2f}%) "
                f"| {100 * auto['converged']:.0f}% | {auto['seconds_per_image']:.3f} |"
            )
            print(
                f"| {rule} | {data['evaluations_for_mean_error_1pct'] or '> ' + str(grid[-1])} "
                f"| {data['evaluations_for_max_error_1pct'] or '> ' + str(grid[-1])} "
                f"| {'' if seconds is None else f'{seconds:.3f}'} " + auto_cells
            )
        if any("auto_one_agreement" in data for data in record["rules"].values()):
            print(f'\n{method}: steps="auto" stopped after one refinement within the tolerance (default: two)')
            print("| rule | evals mean (max) | err mean (max) | converged |")
            print("| --- | ---: | ---: | ---: |")
            for rule, data in record["rules"].items():
                one = data.get("auto_one_agreement")
                if one is None:
                    continue
                print(
                    f"| {rule} | {one['mean_evaluations']:.0f} ({one['max_evaluations']}) "
                    f"| {100 * one['mean_error']:.2f}% ({100 * one['max_error']:.2f}%) | {100 * one['converged']:.0f}% |"
                )
    overhead = report.get("overhead")
    if overhead:
        print(
            f'\nsteps="auto" overhead: {overhead["auto_seconds"]:.3f} s against {overhead["fixed_seconds"]:.3f} s '
            f"for fixed steps={overhead['steps']} ({overhead['images']} images, same evaluations): "
            f"ratio {overhead['ratio']:.3f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits", choices=["digits", "vgg16"])
    parser.add_argument("--images", type=int, default=32, help="images explained (digits: the first held-out ones)")
    parser.add_argument("--fit-images", type=int, default=8, help="vgg16: random images the patterns are fitted on")
    parser.add_argument("--methods", default="integrated_gradients,pgig")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--grid", default="4,8,16,32,64,128,256,512,1024", help="the points m of each rule")
    parser.add_argument("--reference-steps", type=int, default=2048)
    parser.add_argument("--skip-reference-check", action="store_true", help=f"skip the second reference ({CHECK_RULE})")
    parser.add_argument(
        "--auto-rules", default=None, help='the rules steps="auto" is run with (default: every rule; "" for none)'
    )
    parser.add_argument("--tolerance", type=float, default=0.01, help='steps="auto" tolerance')
    parser.add_argument("--max-steps", type=int, default=1024, help='steps="auto" max_steps')
    parser.add_argument("--overhead-steps", type=int, default=256, help="0 skips the overhead measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) of each timing")
    parser.add_argument(
        "--skip-agreement-study",
        action="store_true",
        help='skip steps="auto" stopped after one refinement within the tolerance (the default needs two)',
    )
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="no warm-up call before the single timed calls (with 1 image it would double their cost); "
        "their seconds then include tracing",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--out", default=None, help="JSON output (default results/bench_convergence_<model>.json)")
    args = parser.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    args.auto_rules = args.rules if args.auto_rules is None else [r for r in args.auto_rules.split(",") if r]
    if not set(args.auto_rules) <= set(args.rules):
        parser.error(f"--auto-rules {sorted(set(args.auto_rules) - set(args.rules))} are not in --rules {args.rules}")
    WARM_UP[0] = not args.no_warm_up
    grid = [int(m) for m in args.grid.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]

    import tensorflow as tf

    from pgig_tf import fit_patterns

    started = time.perf_counter()
    model, x, fit_data = load_model_and_data(args.model, args.cache_dir, args.images, args.fit_images)
    targets = np.argmax(model.predict(x, verbose=0, batch_size=args.batch_size), axis=1)
    patterns = None
    if "pgig" in methods:
        patterns = fit_patterns(model, fit_data, batch_size=args.batch_size, verbose=False)
    report = {
        "model": args.model,
        "images": len(x),
        "grid": grid,
        "reference_rule": REFERENCE_RULE,
        "reference_steps": args.reference_steps,
        "tolerance": args.tolerance,
        "batch_size": args.batch_size,
        "warm_up": not args.no_warm_up,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "methods": {},
    }
    for method in methods:
        print(f"{method}: reference and {len(args.rules)} rules x {len(grid)} steps", flush=True)
        report["methods"][method] = run_method(model, method, x, targets, grid, args, patterns)
    if args.overhead_steps:
        report["overhead"] = auto_overhead(model, x, targets, args.overhead_steps, args.batch_size, args.repeats)
    report["seconds"] = time.perf_counter() - started
    print_tables(report)
    out = args.out or os.path.join("results", f"bench_convergence_{args.model}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
