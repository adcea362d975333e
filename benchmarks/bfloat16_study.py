"""Does bfloat16 change what a user concludes? Maps, rankings and benchmark outcomes, float32 against bfloat16.

`compute_dtype="bfloat16"` evaluates the model inside the attribution loop in bfloat16 (the
degradation curves themselves stay float32). This study measures what that changes for the
twelve methods of the degradation benchmark, on two trained models:

- the embedded digits CNN, its 359 held-out digits: per image, the Spearman rank correlation of
  the channel-summed map with its float32 twin, the overlap of their top-10% pixels (signed
  ranking, as the benchmark ranks) and the relative L2 distance; seconds per image of both;
  and the degradation benchmark's outcome (`pgig-degradation-benchmark` run twice, the second
  time with `--set <method>.compute_dtype=bfloat16` for every method): AUPC and SRG with their
  95% intervals, the paired per-image interval of the bfloat16 − float32 difference, and the
  ranks by both (clear wins only);
- the ground-truth benchmark's CNN (`pgig_tf.datasets.ground_truth`, trained once and cached):
  the same map agreement and the relevance mass and rank accuracies of both precisions.

    python -m benchmarks.bfloat16_study [--out results/bfloat16] [--gt-images 500]
    python -m benchmarks.bfloat16_study --variant all_bfloat16 --out results/bfloat16_all

The library keeps the model's output layers in float32 (`model.precision.compute_dtype_scope`);
`--variant all_bfloat16` measures what that saves by running every layer in bfloat16.

Writes `--out`/summary.json and summary.md.
"""

import argparse
import json
import os
import time
import warnings

import numpy as np

from pgig_tf.names import DEFAULT_METHODS

TOP_SHARE = 0.10


def agreement(reference, other):
    """Per image: (Spearman ρ, top-10% overlap, relative L2) of channel-summed maps `other` against `reference`."""
    from scipy.stats import rankdata

    a = np.asarray(reference, np.float64).reshape(len(reference), -1, reference.shape[-1]).sum(-1)
    b = np.asarray(other, np.float64).reshape(len(other), -1, other.shape[-1]).sum(-1)
    k = max(1, int(round(TOP_SHARE * a.shape[1])))
    rho, overlap, l2 = [], [], []
    for x, y in zip(a, b):
        rx, ry = rankdata(x), rankdata(y)
        rho.append(float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else float("nan"))
        top_x = set(np.argsort(-x, kind="stable")[:k].tolist())
        top_y = set(np.argsort(-y, kind="stable")[:k].tolist())
        overlap.append(len(top_x & top_y) / k)
        norm = np.linalg.norm(x)
        l2.append(float(np.linalg.norm(x - y) / norm) if norm > 0 else float("nan"))
    return np.array(rho), np.array(overlap), np.array(l2)


def timed_maps(analyzer, images, targets, batch):
    """(maps, seconds per image) of `analyzer` on `images`, after one traced call."""
    analyzer.analyze(images[:1], neuron_selection=targets[:1])
    began = time.perf_counter()
    maps = np.concatenate(
        [
            analyzer.analyze(images[i : i + batch], neuron_selection=targets[i : i + batch], first_index=i)
            for i in range(0, len(images), batch)
        ]
    )
    return maps, (time.perf_counter() - began) / len(images)


def compare_maps(model, methods, images, targets, patterns, background, batch_size=256, images_per_batch=32):
    """{method: agreement summary and both precisions' seconds per image}, and {method: {dtype: maps}}."""
    from pgig_tf.cli.degradation_benchmark import build_analyzers, method_settings
    from pgig_tf.evaluation.statistics import bootstrap_ci

    rows, maps = {}, {}
    for name in methods:
        maps[name] = {}
        seconds = {}
        for dtype in ("float32", "bfloat16"):
            extra = {} if dtype == "float32" else {"compute_dtype": "bfloat16"}
            analyzer = build_analyzers(
                model,
                [name],
                patterns,
                background,
                batch_size,
                0,
                settings=lambda n, extra=extra: {**method_settings(n), **extra},
            )[name]
            maps[name][dtype], seconds[dtype] = timed_maps(analyzer, images, targets, images_per_batch)
        rho, overlap, l2 = agreement(maps[name]["float32"], maps[name]["bfloat16"])
        row = {"seconds_per_image": seconds, "speedup": seconds["float32"] / seconds["bfloat16"]}
        for key, values in (("spearman", rho), ("top10_overlap", overlap), ("relative_l2", l2)):
            finite = values[np.isfinite(values)]
            mean, low, high = bootstrap_ci(finite) if len(finite) >= 2 else (float("nan"),) * 3
            row[key] = {"mean": mean, "ci": [low, high], "min": float(finite.min()) if len(finite) else None}
        rows[name] = row
        print(
            f"  {name:<22} ρ {row['spearman']['mean']:.4f} (min {row['spearman']['min']:.3f})  top-10% "
            f"{row['top10_overlap']['mean']:.3f}  L2 {row['relative_l2']['mean']:.3f}  speed-up {row['speedup']:.2f}",
            flush=True,
        )
    return rows, maps


def digits_part(out, methods, cache_dir):
    """Map agreement on the digits CNN, and the degradation benchmark float32 vs bfloat16."""
    from pgig_tf.cli import degradation_benchmark
    from pgig_tf.datasets.digits import trained_digits_cnn
    from pgig_tf.evaluation.benchmark import predict_batches, read_state, state_path
    from pgig_tf.evaluation.statistics import paired_difference_ci, ranks_with_ties
    from pgig_tf.patterns.fitting import fit_patterns

    model, _, (x_train, _, x_test, _) = trained_digits_cnn(cache_dir, verbose=False)
    targets = np.argmax(predict_batches(model, x_test), axis=1)  # the benchmark explains the prediction
    patterns = fit_patterns(model, x_train, verbose=False)  # as the benchmark fits them
    print("digits CNN: maps, float32 against bfloat16", flush=True)
    rows, _ = compare_maps(model, methods, x_test, targets, patterns, x_train[:1000])
    runs = {}
    for dtype in ("float32", "bfloat16"):
        folder = os.path.join(out, f"benchmark_{dtype}")
        extra = [] if dtype == "float32" else [f"--set={m}.compute_dtype=bfloat16" for m in methods]
        print(f"degradation benchmark, {dtype}", flush=True)
        began = time.perf_counter()
        degradation_benchmark.main(
            ["--out", folder, "--cache-dir", cache_dir, "--quiet", "--methods", ",".join(methods), *extra]
        )
        with open(os.path.join(folder, "results.json")) as handle:
            runs[dtype] = {"results": json.load(handle), "seconds": time.perf_counter() - began}
        runs[dtype]["totals"] = read_state(state_path(folder, 0, 1))["totals"]
    outcome = {}
    for key, higher in (("aupc", False), ("srg", True)):
        ranks = {}
        for dtype in runs:
            methods_results = runs[dtype]["results"]["methods"]
            ranking = ranks_with_ties(
                [methods_results[m][key] for m in methods],
                [methods_results[m][f"{key}_ci"] for m in methods],
                higher_is_better=higher,
            )
            ranks[dtype] = dict(zip(methods, ranking.ranks.tolist()))
        for name in methods:

            def per_image(dtype, name=name, key=key):
                totals = runs[dtype]["totals"][name]  # a MethodTotals: per-image areas of both orders
                aupc = np.asarray(totals.aupc_values, np.float64)
                return aupc if key == "aupc" else np.asarray(totals.lerf_values, np.float64) - aupc

            mean, low, high = paired_difference_ci(per_image("bfloat16"), per_image("float32"))
            entry = outcome.setdefault(name, {})
            for dtype in runs:
                r = runs[dtype]["results"]["methods"][name]
                entry[f"{key}_{dtype}"] = r[key]
                entry[f"{key}_{dtype}_ci"] = r[f"{key}_ci"]
                entry[f"{key}_rank_{dtype}"] = ranks[dtype][name]
            entry[f"{key}_difference"] = {"mean": mean, "ci": [low, high], "excludes_zero": bool(low > 0 or high < 0)}
    seconds = {dtype: runs[dtype]["seconds"] for dtype in runs}
    return {"maps": rows, "benchmark": outcome, "benchmark_seconds": seconds}


def ground_truth_part(methods, cache_dir, num_images):
    """Map agreement and mass/rank accuracy, float32 against bfloat16, on the ground-truth CNN."""
    from pgig_tf.datasets.ground_truth import trained_ground_truth_cnn
    from pgig_tf.evaluation.localization import localization_scores
    from pgig_tf.evaluation.statistics import bootstrap_ci
    from pgig_tf.patterns.fitting import fit_patterns

    model, _, (train, test) = trained_ground_truth_cnn(cache_dir, verbose=False)
    x_train = train.images
    images, labels = test.images[:num_images], test.labels[:num_images]
    signal, distractor = test.signal_masks[:num_images], test.distractor_masks[:num_images]
    patterns = fit_patterns(model, x_train[:2000], verbose=False)  # as the ground-truth benchmark fits them
    print(f"ground-truth CNN ({len(images)} images): maps, float32 against bfloat16", flush=True)
    rows, maps = compare_maps(model, methods, images, labels, patterns, x_train[:1000], images_per_batch=50)
    for name in methods:
        for dtype in ("float32", "bfloat16"):
            scores = localization_scores(maps[name][dtype], signal, distractor)
            for key in ("mass_accuracy", "rank_accuracy"):
                mean, low, high = bootstrap_ci(np.asarray(scores[key]))
                rows[name][f"{key}_{dtype}"] = {"mean": mean, "ci": [low, high]}
    return {"maps": rows}


def markdown(summary):
    """summary.md: the tables of both parts."""
    lines = ["# float32 against bfloat16", ""]
    for part, title in (("digits", "Digits CNN, 359 held-out digits"), ("ground_truth", "Ground-truth CNN")):
        if part not in summary:
            continue
        lines += [f"## {title}", "", "| method | Spearman ρ (min) | top-10% overlap | relative L2 | speed-up |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for name, row in summary[part]["maps"].items():
            lines.append(
                f"| {name} | {row['spearman']['mean']:.4f} ({row['spearman']['min']:.3f}) | "
                f"{row['top10_overlap']['mean']:.3f} | {row['relative_l2']['mean']:.3f} | {row['speedup']:.2f} |"
            )
        lines.append("")
    if "digits" in summary:
        lines += [
            "## The degradation benchmark's outcome",
            "",
            "| method | AUPC float32 | AUPC bfloat16 | difference [95% CI] | rank | SRG float32 | SRG bfloat16 | "
            "difference [95% CI] | rank |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, e in summary["digits"]["benchmark"].items():
            cells = []
            for key in ("aupc", "srg"):
                d = e[f"{key}_difference"]
                cells += [
                    f"{e[f'{key}_float32']:.2f}",
                    f"{e[f'{key}_bfloat16']:.2f}",
                    f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]",
                    f"{e[f'{key}_rank_float32']} → {e[f'{key}_rank_bfloat16']}",
                ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if "ground_truth" in summary:
        lines += [
            "## Ground-truth accuracies",
            "",
            "| method | mass float32 | mass bfloat16 | rank float32 | rank bfloat16 |",
        ]
        lines.append("| --- | --- | --- | --- | --- |")
        for name, row in summary["ground_truth"]["maps"].items():
            cells = [
                f"{row[f'{k}_{d}']['mean']:.3f}"
                for k in ("mass_accuracy", "rank_accuracy")
                for d in ("float32", "bfloat16")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def every_layer_in_bfloat16():
    """Makes the engine run every layer, the output layers too, in the compute dtype (the study's variant)."""
    import functools

    import pgig_tf.core.engine as engine
    from pgig_tf.model.precision import compute_dtype_scope

    engine.compute_dtype_scope = functools.partial(compute_dtype_scope, keep_output_layers=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("results", "bfloat16"))
    parser.add_argument("--methods", default=",".join(m for m in DEFAULT_METHODS if m != "random"))
    parser.add_argument("--gt-images", type=int, default=500, help="held-out images of the ground-truth CNN")
    parser.add_argument(
        "--variant",
        default="output_float32",
        choices=["output_float32", "all_bfloat16"],
        help="output_float32: the library's bfloat16 (output layers in float32); all_bfloat16: every layer",
    )
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-ground-truth", action="store_true")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    args = parser.parse_args(argv)
    from pgig_tf.cli import console

    console.prepare()
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    methods = [m for m in args.methods.split(",") if m]
    if args.variant == "all_bfloat16":
        every_layer_in_bfloat16()
    os.makedirs(args.out, exist_ok=True)
    summary = {"methods": methods, "variant": args.variant}
    if not args.skip_digits:
        summary["digits"] = digits_part(args.out, methods, args.cache_dir)
    if not args.skip_ground_truth:
        summary["ground_truth"] = ground_truth_part(methods, args.cache_dir, args.gt_images)
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    page = markdown(summary)
    with open(os.path.join(args.out, "summary.md"), "w") as handle:
        handle.write(page)
    print(page)


if __name__ == "__main__":
    main()
