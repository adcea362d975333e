"""The stress test of PGIG paper §3 / Fig. 2: fits patterns, runs IG, PA and PGIG, writes a PNG and JSON."""

import argparse
import json
import os

import numpy as np


def run(mean=0.0, std=0.5, seed=0, steps=25):
    """Runs the stress test; returns (inputs and attributions, summary dict)."""
    from pgig_tf import create_analyzer, fit_patterns
    from pgig_tf.datasets.stress_test import stress_data, stress_model

    z, signal, distractor, x, y = stress_data(mean=mean, std=std, seed=seed)
    model = stress_model()
    patterns = fit_patterns(model, x, kind="relu", verbose=False)
    maps = {
        "integrated_gradients": create_analyzer("integrated_gradients", model, steps=steps),
        "pattern_attribution": create_analyzer("pattern_attribution", model, patterns=patterns),
        "pgig": create_analyzer("pgig", model, patterns=patterns, steps=steps),
    }
    maps = {name: analyzer.analyze(x, neuron_selection=0) for name, analyzer in maps.items()}
    plateau = z > 1
    summary = {
        "settings": {
            "distractor_mean": mean,
            "distractor_std": std,
            "seed": seed,
            "steps": steps,
            "num_samples": int(len(z)),
        },
        "patterns": {name: patterns[name].ravel().tolist() for name in patterns},
        "max_abs_output_error": float(np.max(np.abs(model.predict(x, verbose=0)[:, 0] - y))),
        "methods": {
            name: {
                "mean_abs_distractor_dim_x2": float(np.mean(np.abs(a[:, 1]))),
                "mean_abs_signal_dim_x1": float(np.mean(np.abs(a[:, 0]))),
                "mean_abs_x1_on_plateau": float(np.mean(np.abs(a[plateau, 0]))),
                "max_abs_on_plateau": float(np.max(np.abs(a[plateau]))),
            }
            for name, a in maps.items()
        },
    }
    arrays = {"z": z, "y": y, "signal": signal, "distractor": distractor, "x": x, **maps}
    return arrays, summary


def plot(arrays, path):
    """Fig. 2 as line plots: target, signal, distractor, input; then IG, PA, PGIG per input dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = arrays["z"]
    panels = [
        ("(a) target y = 1 - ReLU(1 - z)", None),
        ("(b) signal s", "signal"),
        ("(b) distractor d", "distractor"),
        ("(b) input x = s + d", "x"),
        ("(d) Integrated Gradients", "integrated_gradients"),
        ("(d) PatternAttribution", "pattern_attribution"),
        ("(d) Pattern-Guided IG", "pgig"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    axes = axes.ravel()
    for axis, (title, key) in zip(axes, panels):
        if key is None:
            axis.plot(z, arrays["y"], color="black")
        else:
            axis.plot(z, arrays[key][:, 0], color="tab:red", lw=1, label="x1 (signal dim)")
            axis.plot(z, arrays[key][:, 1], color="tab:blue", lw=1, ls="--", label="x2 (distractor dim)")
        axis.axhline(0, color="grey", lw=0.5)
        axis.axvline(1, color="grey", lw=0.5, ls=":")
        axis.set_title(title)
        axis.set_xlabel("z")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[-1].axis("off")
    axes[-1].text(
        0,
        0.5,
        "dotted line: z = 1,\nthe plateau starts\n\nred: signal dimension x1\nblue: distractor dimension x2",
        fontsize=10,
        va="center",
    )
    fig.suptitle("PGIG stress test (Schwarzenberg & Castle 2020, Fig. 2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--distractor-mean", type=float, default=0.0, help="mean of eps (default 0)")
    parser.add_argument("--distractor-std", type=float, default=0.5, help="std of eps (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="IG/PGIG steps m (default 25)")
    args = parser.parse_args(argv)
    arrays, summary = run(args.distractor_mean, args.distractor_std, args.seed, args.steps)
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "stress_test.png")
    plot(arrays, png)
    with open(os.path.join(args.out, "stress_test.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print("fitted patterns:", json.dumps(summary["patterns"]))
    for name, numbers in summary["methods"].items():
        print(
            f"{name:>22}: mean |x2 attribution| {numbers['mean_abs_distractor_dim_x2']:.4f}, "
            f"mean |x1| on plateau z>1 {numbers['mean_abs_x1_on_plateau']:.4f}"
        )
    print(f"wrote {png} and {os.path.join(args.out, 'stress_test.json')}")


if __name__ == "__main__":
    main()
