"""The paper's claim, metric by metric: every method's score and rank on each evaluation the library runs, in one table.

Reads the results the library's commands write (their default output folders unless given)
and writes `--out` (default docs/claims.md): one table of value, interval and rank per method
and metric, a short table of value and rank, and in plain words where PGIG is better than,
worse than, or indistinguishable from each other method. Nothing is computed here but
summaries of those results, so every number traces back to the command that made it:

    python scripts/degradation_benchmark.py                  # results/results.json: MoRF AUPC
    python scripts/evaluate.py                               # results/evaluate/: SRG under ROAD, insertion, deletion
    python scripts/roar_benchmark.py                         # results/roar/: ROAR and KAR areas
    python scripts/ground_truth_benchmark.py                 # results/ground_truth/: mass, rank accuracy, distractor mass
    python scripts/sanity_check.py --methods <the 12> --num-images 32 --out results/sanity
    python scripts/axioms.py                                 # results/axioms/axioms.json
    python -m benchmarks.paper_claims --readme README.md     # docs/claims.md and the README's table

Ranks count only clear wins: a method's rank is 1 + the number of methods whose interval lies
entirely on the better side of its own (`statistics.ranks_with_ties`), so methods whose
intervals overlap can share a rank (marked =). "Better" and "worse" below mean the same:
non-overlapping 95% intervals; overlapping ones are "cannot tell".
"""

import argparse
import json
import math
import os

import numpy as np

from pgig_tf.evaluation.statistics import bootstrap_ci, ranks_with_ties
from pgig_tf.names import DEFAULT_METHODS

COMMANDS = {
    "degradation": "python scripts/degradation_benchmark.py",
    "evaluate": "python scripts/evaluate.py",
    "roar": "python scripts/roar_benchmark.py",
    "ground_truth": "python scripts/ground_truth_benchmark.py",
    "sanity": f"python scripts/sanity_check.py --methods {','.join(DEFAULT_METHODS)} --num-images 32 "
    "--out results/sanity",
    "axioms": "python scripts/axioms.py",
}
FILES = {
    "degradation": os.path.join("results", "results.json"),
    "evaluate": os.path.join("results", "evaluate", "results.json"),
    "roar": os.path.join("results", "roar", "results.json"),
    "ground_truth": os.path.join("results", "ground_truth", "results.json"),
    "sanity": os.path.join("results", "sanity", "sanity.json"),
    "axioms": os.path.join("results", "axioms", "axioms.json"),
}
# column -> (source, label, higher is better, what it is)
COLUMNS = {
    "morf_aupc": ("degradation", "MoRF AUPC", False, "area under the most-relevant-first curve, image-mean patches"),
    "srg_road": ("evaluate", "SRG (ROAD)", True, "LeRF − MoRF area under ROAD imputation, per image"),
    "insertion": ("evaluate", "insertion", True, "Petsiuk et al.'s insertion area"),
    "deletion": ("evaluate", "deletion", False, "Petsiuk et al.'s deletion area"),
    "roar_area": ("roar", "ROAR", False, "area of retrained accuracy over the fraction removed"),
    "kar_area": ("roar", "KAR", True, "area of retrained accuracy over the fraction kept-replaced"),
    "mass_accuracy": ("ground_truth", "mass acc.", True, "share of positive relevance on the signal"),
    "rank_accuracy": ("ground_truth", "rank acc.", True, "share of the top-|signal| pixels on the signal"),
    "distractor_mass": ("ground_truth", "distractor", False, "share of positive relevance on the distractor"),
    "randomisation": (
        "sanity",
        "randomised ρ",
        False,
        "Spearman ρ of |map| with the map after all layers are randomised",
    ),
    "axioms": ("axioms", "axioms", True, "of the six IG axioms, how many hold (exactly or approximately)"),
}
AXIOMS = ("completeness", "sensitivity_a", "dummy", "implementation_invariance", "linearity", "symmetry")
HOLDING = ("holds", "holds approximately")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values):
    """(mean, low, high): the mean of a few seeds' values and its two-sided 95% Student t interval."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = T_975.get(len(values) - 1, 1.96) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def roar_area(baseline, values_per_fraction, fractions):
    """Per training seed, the trapezoid of accuracy over t in [0, 1] from (0, baseline) (as `roar_benchmark.area`)."""
    t = np.array([0.0] + [p / 100.0 for p in fractions])
    areas = []
    for seed in range(len(values_per_fraction[0])):
        y = np.array([baseline[seed]] + [values[seed] for values in values_per_fraction])
        areas.append(float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2.0))
    return areas


def cells_from_results(results):
    """{column: {method: (value, low, high)}} from the loaded results of each source (missing sources are left out)."""
    cells = {}
    if "degradation" in results:
        methods = results["degradation"]["methods"]
        cells["morf_aupc"] = {n: (r["aupc"], *r["aupc_ci"]) for n, r in methods.items()}
    if "evaluate" in results:
        methods = results["evaluate"]["methods"]
        for column, key in (("srg_road", "srg_road"), ("insertion", "insertion"), ("deletion", "deletion")):
            cells[column] = {n: (r[key], *r[f"{key}_ci"]) for n, r in methods.items()}
    if "roar" in results:
        roar = results["roar"]
        fractions = roar["settings"]["fractions"]
        baseline = roar["baseline_accuracy"]["values"]
        for kind in ("roar", "kar"):
            cells[f"{kind}_area"] = {
                n: t_interval(roar_area(baseline, [r[kind][str(p)]["values"] for p in fractions], fractions))
                for n, r in roar["methods"].items()
            }
    if "ground_truth" in results:
        methods = results["ground_truth"]["methods"]
        for key in ("mass_accuracy", "rank_accuracy", "distractor_mass"):
            cells[key] = {n: (r[key], *r[f"{key}_ci"]) for n, r in methods.items()}
    if "sanity" in results:
        cells["randomisation"] = {}
        for name, r in results["sanity"]["methods"].items():
            last = np.array([v for v in r["correlations"][-1] if v is not None], dtype=np.float64)
            cells["randomisation"][name] = bootstrap_ci(last) if len(last) >= 2 else (float("nan"),) * 3
    if "axioms" in results:
        per = results["axioms"]["methods"]
        cells["axioms"] = {}
        for name, axioms in per.items():
            held = sum(axioms[a]["verdict"] in HOLDING for a in AXIOMS)
            cells["axioms"][name] = (float(held), float(held), float(held))
    return cells


def rank_cells(cells):
    """{column: {method: (rank, tied)}} with `ranks_with_ties` over each column's intervals (NaN cells left out)."""
    ranked = {}
    for column, values in cells.items():
        names = [n for n, v in values.items() if all(math.isfinite(x) for x in v)]
        if not names:
            continue
        ranking = ranks_with_ties(
            [values[n][0] for n in names], [values[n][1:] for n in names], higher_is_better=COLUMNS[column][2]
        )
        ranked[column] = {n: (int(r), bool(t)) for n, r, t in zip(names, ranking.ranks, ranking.tied)}
    return ranked


def compare(cells, method, other):
    """{column: 'better' | 'worse' | 'cannot tell'} of `method` against `other`, by their intervals."""
    verdicts = {}
    for column, values in cells.items():
        if method not in values or other not in values:
            continue
        (_, low_a, high_a), (_, low_b, high_b) = values[method], values[other]
        if not all(math.isfinite(v) for v in (low_a, high_a, low_b, high_b)):
            continue
        higher = COLUMNS[column][2]
        if low_a > high_b:
            verdicts[column] = "better" if higher else "worse"
        elif high_a < low_b:
            verdicts[column] = "worse" if higher else "better"
        else:
            verdicts[column] = "cannot tell"
    return verdicts


def number(value, column):
    if column == "axioms":
        return f"{int(value)}/6"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def tables(cells, ranked, methods):
    """(full, short): Markdown tables; full cells 'value [low, high] rank', short cells 'value (rank)'."""
    columns = [c for c in COLUMNS if c in cells]
    head = "| method | " + " | ".join(f"{COLUMNS[c][1]} {'↑' if COLUMNS[c][2] else '↓'}" for c in columns) + " |"
    rule = "| --- | " + " | ".join("---" for _ in columns) + " |"
    full, short = [head, rule], [head, rule]
    for name in methods:
        whole, brief = [], []
        for column in columns:
            if name not in cells[column] or name not in ranked.get(column, {}):
                whole.append("–")
                brief.append("–")
                continue
            value, low, high = cells[column][name]
            rank, tied = ranked[column][name]
            mark = f"{rank}{'=' if tied else ''}"
            interval = "" if column == "axioms" else f" [{number(low, column)}, {number(high, column)}]"
            whole.append(f"{number(value, column)}{interval} {mark}")
            brief.append(f"{number(value, column)} ({mark})")
        full.append(f"| {name} | " + " | ".join(whole) + " |")
        short.append(f"| {name} | " + " | ".join(brief) + " |")
    return "\n".join(full), "\n".join(short)


def verdict_sentences(cells, method="pgig", others=("integrated_gradients", "pattern_attribution")):
    """Plain-words lines: against each parent, and against all methods, where `method` wins, loses or cannot tell."""

    def labels(columns):
        return ", ".join(COLUMNS[c][1] for c in columns) or "none"

    lines = []
    for other in others:
        verdicts = compare(cells, method, other)
        groups = {v: [c for c, x in verdicts.items() if x == v] for v in ("better", "worse", "cannot tell")}
        lines.append(
            f"- **{method} against {other}:** better on {labels(groups['better'])}; worse on "
            f"{labels(groups['worse'])}; cannot tell on {labels(groups['cannot tell'])}."
        )
    names = sorted({n for values in cells.values() for n in values} - {method})
    wins, losses = {}, {}
    for other in names:
        for column, verdict in compare(cells, method, other).items():
            if verdict == "better":
                wins.setdefault(column, []).append(other)
            elif verdict == "worse":
                losses.setdefault(column, []).append(other)
    for column in (c for c in COLUMNS if c in cells):
        beaten, beaten_by = wins.get(column, []), losses.get(column, [])
        compared = sum(1 for n in names if n in cells[column])
        lines.append(
            f"- {COLUMNS[column][1]}: {method} is better than {len(beaten)} and worse than {len(beaten_by)} of "
            f"the {compared} others"
            + (f" (worse than {', '.join(beaten_by)})" if beaten_by and len(beaten_by) <= 4 else "")
            + "."
        )
    return lines


def load_results(paths):
    """{source: loaded JSON} for each source whose file exists."""
    results = {}
    for source, path in paths.items():
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                results[source] = json.load(handle)
    return results


def report(results, methods=DEFAULT_METHODS):
    """The Markdown page: the full table, the short table and the verdicts."""
    cells = {
        column: {name: values[name] for name in methods if name in values}
        for column, values in cells_from_results(results).items()
    }  # ranked among the table's methods only (the axioms check more; the ground truth adds its control)
    ranked = rank_cells(cells)
    full, short = tables(cells, ranked, methods)
    missing = [s for s in FILES if s not in results]
    lines = [
        "# The paper's claim, metric by metric",
        "",
        "Every method on every evaluation the library runs, on the embedded digits (the ground-truth columns on "
        "the synthetic signal-plus-distractor images, the axioms on tiny constructed networks). Each cell: the "
        "mean, its 95% interval and the rank (1 is best; a rank counts only methods whose interval lies "
        "entirely on the better side, = marks a tie). ↑ higher is better, ↓ lower is better.",
        "",
        "| column | what it measures | interval | command |",
        "| --- | --- | --- | --- |",
    ]
    interval = {
        "degradation": "bootstrap over images",
        "evaluate": "bootstrap over images",
        "roar": "Student t over training seeds",
        "ground_truth": "bootstrap over images",
        "sanity": "bootstrap over images",
        "axioms": "none (a count)",
    }
    for column, (source, label, _, what) in COLUMNS.items():
        if column in cells:
            lines.append(f"| {label} | {what} | {interval[source]} | `{COMMANDS[source]}` |")
    lines += ["", full, "", "## Short", "", short, "", "## In plain words", ""]
    lines += verdict_sentences(cells)
    if missing:
        lines += ["", f"Not in this table (no results found): {', '.join(missing)}."]
    lines += ["", "Rebuilt from those results by `python -m benchmarks.paper_claims`."]
    return "\n".join(lines) + "\n", short


README_START, README_END = "<!-- claims table: python -m benchmarks.paper_claims -->", "<!-- end of claims table -->"


def replace_between_markers(text, table):
    """`text` with the lines between README_START and README_END replaced by `table`; ValueError without them."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {README_START!r} ... {README_END!r} block")
    return text[: start + len(README_START)] + "\n" + table.strip() + "\n" + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for source, path in FILES.items():
        parser.add_argument(f"--{source.replace('_', '-')}", default=path, help=f"{source} results (default {path})")
    parser.add_argument("--out", default=os.path.join("docs", "claims.md"), help="the page written")
    parser.add_argument("--readme", default=None, help="also put the short table into this page between its markers")
    args = parser.parse_args(argv)
    results = load_results({source: getattr(args, source) for source in FILES})
    page, short = report(results)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(page)
    if args.readme:
        with open(args.readme, encoding="utf-8") as handle:
            text = replace_between_markers(handle.read(), short)
        with open(args.readme, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(short)
    print(f"wrote {args.out}" + (f" and the table in {args.readme}" if args.readme else ""))


if __name__ == "__main__":
    main()
