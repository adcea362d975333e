"""The degradation benchmark under each protocol choice it depends on: replacement, ranking, pattern data, SmoothTaylor's noise.

Runs `pgig-degradation-benchmark` on the embedded digits default once per variant (into
`--out`/<variant>/, resumable like any run) and writes `--out`/summary.md and summary.json:
per variant, each method's MoRF AUPC, LeRF area and SRG with their 95% bootstrap intervals,
and the methods' ranks by AUPC and by SRG counting only clear wins (non-overlapping
intervals, `statistics.ranks_with_ties`).

    python -m benchmarks.protocol_study [--out results/protocols] [--road-images 96]

Variants:
- replacement: image_mean (the default), patch_mean (each patch's own mean), blur (sigma 2
  pixels), road (ROAD's noisy linear imputation, noise 0.02; on the first --road-images
  digits, since it imputes every curve point on the host);
- ranking: signed (the default) or absolute;
- patterns fitted on the first 100 or 300 training digits (all 1,438 in the default run),
  PGIG and PatternAttribution only;
- SmoothTaylor's noise_scale 0.05, 0.1, 0.2 (0.5 in the default run) and "adaptive" (the
  SmoothTaylor paper's choice per image among 0.05-0.5 by the lowest AUPC: the metric it
  is scored on, so it favours itself on MoRF), SmoothTaylor only.
"""

import argparse
import json
import os

import numpy as np

ADAPTIVE = "smooth_taylor.candidates=[0.05, 0.1, 0.2, 0.3, 0.5]"


def variants(road_images):
    """name -> (what it tests, extra arguments of the benchmark, methods or None for all)."""
    st = "smooth_taylor"
    return {
        "default": ("image mean, signed ranking, patterns on 1,438 digits, SmoothTaylor 0.5", [], None),
        "patch_mean": ("replacement: each patch's own mean", ["--replacement", "patch_mean"], None),
        "blur": ("replacement: Gaussian blur, sigma 2 px", ["--replacement", "blur", "--blur-sigma", "2"], None),
        "road": (
            f"replacement: ROAD imputation, noise 0.02 (first {road_images} digits)",
            ["--replacement", "road", "--num-images", str(road_images)],
            None,
        ),
        "absolute": ("ranking by |attribution|", ["--absolute"], None),
        "patterns_100": ("patterns fitted on 100 digits", ["--pattern-images", "100"], ["pgig", "pattern_attribution"]),
        "patterns_300": ("patterns fitted on 300 digits", ["--pattern-images", "300"], ["pgig", "pattern_attribution"]),
        **{
            f"smooth_taylor_{scale}": (
                f"SmoothTaylor noise_scale {scale}",
                ["--set", f"{st}.noise_scale={scale}"],
                [st],
            )
            for scale in ("0.05", "0.1", "0.2")
        },
        "smooth_taylor_adaptive": (
            "SmoothTaylor adaptive (per image, lowest AUPC of 0.05-0.5)",
            [
                "--set",
                f"{st}.noise_scale=adaptive",
                "--set",
                ADAPTIVE,
                "--set",
                f"{st}.patch_size=4",
                "--set",
                f"{st}.num_steps=64",
            ],
            [st],
        ),
    }


def run_variant(out, extra, methods, cache_dir):
    from pgig_tf.cli import degradation_benchmark

    arguments = ["--out", out, "--quiet", "--cache-dir", cache_dir, *extra]
    if methods is not None:
        arguments += ["--methods", ",".join(methods)]
    degradation_benchmark.main(arguments)
    with open(os.path.join(out, "results.json")) as handle:
        return json.load(handle)


def ranks(methods, key, higher_is_better):
    """name -> rank (1 = best) counting only clear wins, by `key` with its interval."""
    from pgig_tf.evaluation.statistics import ranks_with_ties

    names = sorted(methods)
    if len(names) < 2:
        return {name: 1 for name in names}
    means = np.array([methods[name][key] for name in names])
    intervals = np.array([methods[name][f"{key}_ci"] for name in names])
    ranking = ranks_with_ties(means, intervals, higher_is_better=higher_is_better)
    return dict(zip(names, ranking.ranks.tolist()))


def table(results):
    """A Markdown table of one variant: methods by SRG (best first) with AUPC, LeRF, SRG, intervals and ranks."""
    methods = results["methods"]
    by_aupc, by_srg = ranks(methods, "aupc", False), ranks(methods, "srg", True)
    lines = [
        "| method | AUPC (MoRF) ↓ | LeRF ↑ | SRG ↑ | rank AUPC | rank SRG |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in sorted(methods.items(), key=lambda item: -item[1]["srg"]):
        cells = [
            f"{r[key]:.2f} [{r[key + '_ci'][0]:.2f}, {r[key + '_ci'][1]:.2f}]" for key in ("aupc", "lerf_auc", "srg")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {by_aupc[name]} | {by_srg[name]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("results", "protocols"))
    parser.add_argument("--road-images", type=int, default=96, help="held-out digits of the ROAD variant")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--only", default=None, help="comma-separated variants to run (default: all)")
    args = parser.parse_args(argv)
    chosen = variants(args.road_images)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    summary, sections = {}, []
    for name, (what, extra, methods) in chosen.items():
        print(f"== {name}: {what}", flush=True)
        results = run_variant(os.path.join(args.out, name), extra, methods, args.cache_dir)
        summary[name] = {
            "what": what,
            "arguments": extra + (["--methods", ",".join(methods)] if methods else []),
            "num_images": results["num_images"],
            "methods": {
                m: {key: r[key] for key in ("aupc", "aupc_ci", "lerf_auc", "lerf_auc_ci", "srg", "srg_ci")}
                for m, r in results["methods"].items()
            },
        }
        command = " ".join(["pgig-degradation-benchmark", *summary[name]["arguments"]])
        sections.append(f"### {name}: {what}\n\n`{command}` ({results['num_images']} images)\n\n{table(results)}\n")
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as handle:
        handle.write("\n".join(sections))
    print(f"wrote {os.path.join(args.out, 'summary.md')} and summary.json")


if __name__ == "__main__":
    main()
