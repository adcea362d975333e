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
    """Fig. 2 as line plots, panels (a)-(g): target, signal, distractor, input; IG, PA, PGIG per input dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = arrays["z"]
    panels = [
        ("target y = 1 - ReLU(1 - z)", None),
        ("signal s", "signal"),
        ("distractor d", "distractor"),
        ("input x = s + d", "x"),
        ("Integrated Gradients", "integrated_gradients"),
        ("PatternAttribution", "pattern_attribution"),
        ("Pattern-Guided IG", "pgig"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4), sharex=True, layout="constrained")
    axes = axes.ravel()
    for letter, axis, (title, key) in zip("abcdefg", axes, panels):
        if key is None:
            axis.plot(z, arrays["y"], color="black", lw=1.5)
        else:
            axis.plot(z, arrays[key][:, 0], color="tab:red", lw=1, label="x1 (signal dimension)")
            axis.plot(z, arrays[key][:, 1], color="tab:blue", lw=1, ls="--", label="x2 (distractor dimension)")
        axis.axhline(0, color="grey", lw=0.5)
        axis.axvline(1, color="grey", lw=0.8, ls=":")
        axis.set_title(f"({letter}) {title}", fontsize=13)
        axis.tick_params(labelsize=11)
        axis.tick_params(axis="x", labelbottom=True)
        axis.set_xlabel("z", fontsize=12)
    axes[-1].axis("off")
    handles, labels = axes[1].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="upper left", fontsize=12, frameon=False)
    axes[-1].text(
        0.02,
        0.45,
        "attributions (e)-(g) per input\ndimension, against z\n\ndotted line: z = 1,\nwhere the plateau starts",
        fontsize=12,
        va="top",
        transform=axes[-1].transAxes,
    )
    fig.suptitle("PGIG stress test (after Schwarzenberg & Castle 2020, Fig. 2)", fontsize=14)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    from pgig_tf.cli import console

    console.prepare()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--distractor-mean", type=float, default=0.0, help="mean of eps (default 0)")
    parser.add_argument("--distractor-std", type=float, default=0.5, help="std of eps (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="IG/PGIG steps m (default 25)")
    args = parser.parse_args(argv)
    console.import_tensorflow()
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
