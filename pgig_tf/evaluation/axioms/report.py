"""Runs every axiom check on every analyzer and writes the results as a dict (axioms.json) and a Markdown table."""

import time

import numpy as np

from pgig_tf.analyzers import ANALYZERS
from pgig_tf.evaluation.axioms import checks as K
from pgig_tf.evaluation.axioms import criteria as C
from pgig_tf.evaluation.axioms import networks as N
from pgig_tf.evaluation.axioms.bench import AxiomBench

SYMBOLS = {C.HOLDS: "✓ holds", C.APPROX: "≈ holds approx.", C.FAILS: "✗ fails", C.NOT_APPLICABLE: "– n/a"}
PGIG_CONSTRUCTION_WORDS = {
    "permute": "permuting the hidden units",
    "rescale": "scaling a layer by c and the next by 1/c",
    "split": "splitting a ReLU unit into two scaled copies",
    "mixing": "inserting an invertible linear layer",
    "relu_identity": "writing x as ReLU(x) − ReLU(−x)",
}


def run_axioms(seed=0, methods=None, quick=False, num_data=512, invariance_seeds=5, progress=None):
    """Checks every property for every analyzer in `methods` (default: all of ANALYZERS); returns a JSON-ready dict.

    quick=True keeps the first two rungs of each completeness ladder and measures symmetry at
    the defaults only (for tests; the verdicts of the full run need the full budgets).
    `invariance_seeds` > 1 repeats PatternAttribution's and PGIG's implementation-invariance
    check on that many seeds from `seed` on (fresh data and networks), for the range of the answer.
    """
    methods = list(ANALYZERS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in ANALYZERS]
    if unknown:
        raise ValueError(f"methods must be names from ANALYZERS ({', '.join(ANALYZERS)}), got {unknown}")
    ladders = {k: v[:2] for k, v in K.COMPLETENESS_LADDERS.items()} if quick else K.COMPLETENESS_LADDERS
    large = {} if quick else K.SYMMETRY_LARGE_BUDGETS
    bench = AxiomBench(seed, num_data=num_data)
    start = time.perf_counter()
    results = {}
    for name in methods:
        results[name] = {
            "completeness": K.completeness(bench, name, ladders),
            "sensitivity_a": K.sensitivity_a(bench, name),
            "dummy": K.dummy(bench, name),
            "implementation_invariance": K.implementation_invariance(bench, name),
            "linearity": K.linearity(bench, name),
            "symmetry": K.symmetry(bench, name, large),
        }
        if progress:
            progress(
                f"{name:>22}: "
                + ", ".join(f"{p} {r['verdict']}" for p, r in results[name].items())
                + f" ({time.perf_counter() - start:.0f} s)"
            )
    report = {
        "settings": {
            "seed": seed,
            "quick": quick,
            "num_data": num_data,
            "num_background": len(bench.background),
            "num_inputs": bench.num_inputs,
            "invariance_seeds": invariance_seeds,
            "tolerances": {"exact": C.EXACT_TOL, "approximate": C.APPROX_TOL, "nonzero": C.NONZERO_TOL},
            "completeness_ladders": {k: [K.budget_label(b) for b in v] for k, v in ladders.items()},
            "symmetry_large_budgets": {k: K.budget_label(v) for k, v in large.items()},
            "constructions": dict(N.CONSTRUCTION_TEXT),
            "linearity_weights": {"a": N.LINEARITY_A, "b": N.LINEARITY_B},
            "plateau_points": list(K.PLATEAU_POINTS),
        },
        "versions": _versions(),
        "properties": dict(K.PROPERTY_TITLES),
        "methods": results,
        "implementation_invariance": {
            "functional_difference": K.equivalence_check(bench),
            "patterns": K.pattern_transformations(bench),
        },
    }
    pattern_methods = [m for m in ("pattern_attribution", "pgig") if m in results]
    if invariance_seeds > 1 and pattern_methods:
        seeds = list(range(seed, seed + invariance_seeds))
        report["implementation_invariance"]["over_seeds"] = {
            "seeds": seeds,
            "methods": K.invariance_over_seeds(seeds, pattern_methods, num_data),
        }
        if progress:
            progress(
                f"implementation invariance of {', '.join(pattern_methods)} over seeds {seeds[0]}-{seeds[-1]} "
                f"({time.perf_counter() - start:.0f} s)"
            )
    if "pgig" in results:
        report["pgig_implementation_invariance"] = pgig_answer(report)
    return report


def _versions():
    import keras
    import tensorflow as tf

    from pgig_tf import __version__

    return {"pgig_tf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}


def fmt(value):
    """A measured number, short: 0, 1.2e-07, 0.34, 1.8."""
    if value == 0:
        return "0"
    if abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:#.2g}".rstrip(".")


def pgig_answer(report):
    """The answer to the PGIG paper's open question (§4.1), from the measured PGIG maps and patterns."""
    per = report["methods"]["pgig"]["implementation_invariance"]["details"]["constructions"]
    patterns = report["implementation_invariance"]["patterns"]
    over = report["implementation_invariance"].get("over_seeds")
    ranges = over["methods"].get("pgig") if over else None

    def measured(c):
        text = fmt(per[c]["value"])
        if ranges:
            values = ranges[c]
            text += f" (seeds {over['seeds'][0]}–{over['seeds'][-1]}: {fmt(min(values))}–{fmt(max(values))})"
        return text

    kept = [c for c in per if per[c]["verdict"] == C.HOLDS]
    broken = [c for c in per if per[c]["verdict"] != C.HOLDS]
    deviations = [patterns[c]["deviation"] for c in kept if patterns.get(c, {}).get("deviation") is not None]
    if not broken:
        answer = (
            "On every rewrite tested PGIG's maps agree between functionally equivalent networks "
            f"(max relative difference {fmt(max(per[c]['value'] for c in per))})."
        )
    else:
        answer = (
            "PGIG is not implementation invariant: between functionally equivalent networks its maps differ by "
            + _join([f"{measured(c)} after {PGIG_CONSTRUCTION_WORDS[c]}" for c in broken])
            + " (max |Δφ| / max |φ|)"
        )
        if kept:
            answer += (
                "; "
                + _join([PGIG_CONSTRUCTION_WORDS[c] for c in kept])
                + f" leave{'s' if len(kept) == 1 else ''} them unchanged (≤ {fmt(max(per[c]['value'] for c in kept))}"
                + (f"; ≤ {fmt(max(max(ranges[c]) for c in kept))} over all seeds" if ranges else "")
                + ")"
            )
        answer += (
            ". Eq. 2 normalises each unit's pattern (wⱼᵀpⱼ = 1) from covariances with that unit's own output, "
            "so per-unit rewrites carry the patterns along (p → p/c when a unit's weights are scaled by c, "
            "so w ⊙ p is unchanged"
            + (f"; the fitted patterns match this prediction to {fmt(max(deviations))}" if deviations else "")
            + "), but a rewrite that mixes units or re-expresses them through other ReLUs changes the per-unit "
            "covariance estimates and with them the backward kernels w ⊙ p"
        )
        if "mixing" in patterns and patterns["mixing"].get("pa_kernel_difference") is not None:
            answer += (
                f" (through the inserted layer, the product of the two w ⊙ p kernels differs from the "
                f"original's by {fmt(patterns['mixing']['pa_kernel_difference'])}, relative)"
            )
        answer += "."
    return {"answer": answer, "constructions": per}


def _join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cell(result):
    text = f"{SYMBOLS[result['verdict']]} ({fmt(result['value'])}"
    if result["budget"] != "defaults":
        text += f" @ {result['budget']}"
    text += ")"
    exchangeable = result["details"].get("exchangeable_data_value")
    if exchangeable is not None:
        text += f"; exch. data: {fmt(exchangeable)}"
    return text


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(report):
    """The method x property table (Markdown)."""
    properties = list(report["properties"])
    header = ["method"] + [report["properties"][p] for p in properties]
    rows = [[f"`{name}`"] + [_cell(r[p]) for p in properties] for name, r in report["methods"].items()]
    return _table(header, rows)


def to_markdown(report):
    """The whole report: main table, PGIG's answer, invariance by rewrite, budgets, criteria and notes."""
    s = report["settings"]
    out = [
        "# Axioms: which method keeps which promise",
        "",
        f"`python scripts/axioms.py --seed {s['seed']}`{' --quick' if s['quick'] else ''} (pgig_tf "
        f"{report['versions']['pgig_tf']}, TensorFlow {report['versions']['tensorflow']}): every analyzer on tiny "
        "constructed ReLU networks where the right answer is known (the properties of Sundararajan et al. "
        f"2017). Cells: verdict (measured number, budget if not the analyzer's defaults). Holds: ≤ {C.EXACT_TOL:g} "
        f"(float32 round-off); holds approx.: ≤ {C.APPROX_TOL:g} where a step/sample budget explains the error; "
        "sensitivity (a) shows the smallest |φⱼ| / |Δf| instead (0 = violated).",
        "",
        main_table(report),
        "",
    ]
    if "pgig_implementation_invariance" in report:
        out += [
            "## Is PGIG implementation invariant? (PGIG paper §4.1)",
            "",
            report["pgig_implementation_invariance"]["answer"],
            "",
        ]
    out += _invariance_section(report)
    out += _budget_sections(report)
    out += _criteria_section(report)
    return "\n".join(out).rstrip() + "\n"


def _invariance_section(report):
    inv = report["implementation_invariance"]
    constructions = list(inv["functional_difference"])
    rows = [
        [f"`{name}`"] + [_short(r["implementation_invariance"]["details"]["constructions"][c]) for c in constructions]
        for name, r in report["methods"].items()
    ]
    pattern_rows = []
    for c in constructions:
        p = inv["patterns"][c]
        deviation = "no per-unit prediction" if p["deviation"] is None else fmt(p["deviation"])
        kernel = fmt(p["pa_kernel_difference"]) if p.get("pa_kernel_difference") is not None else "–"
        pattern_rows.append([c, p["description"], fmt(inv["functional_difference"][c]), deviation, kernel])
    seed_lines = []
    over = inv.get("over_seeds")
    if over:
        seed_rows = [
            [f"`{name}`"] + [f"{fmt(min(v))}–{fmt(max(v))}" for v in per.values()]
            for name, per in over["methods"].items()
        ]
        seed_lines = [
            f"The same check on seeds {over['seeds'][0]}–{over['seeds'][-1]} (fresh data, networks and "
            "patterns each), smallest–largest:",
            "",
            _table(["method"] + constructions, seed_rows),
            "",
        ]
    return [
        "## Implementation invariance by rewrite",
        "",
        "max |φ_A − φ_B| / max |φ_A| between the 4-6-1 ReLU network A and a functionally equivalent rewrite B; "
        f"pattern analyzers fit their patterns on each network from the same {report['settings']['num_data']} "
        "samples.",
        "",
        _table(["method"] + constructions, rows),
        "",
        "The rewrites, how equal their outputs are (max |f_A − f_B| / max |f_A| on data and inputs), whether the "
        "patterns fitted on B are the ones predicted from A's (p → p/c for a unit scaled by c, p → c·p for a unit "
        "whose input is scaled by c, permuted with the units; max |p_B − predicted| / max |p_B|), and "
        "PatternAttribution's effective input-to-hidden backward kernel W ⊙ P against A's:",
        "",
        _table(["rewrite", "what", "output difference", "patterns vs prediction", "W ⊙ P difference"], pattern_rows),
        "",
    ] + seed_lines


def _short(entry):
    return f"{SYMBOLS[entry['verdict']][0]} {fmt(entry['value'])}"


def _budget_sections(report):
    rows = []
    for name, r in report["methods"].items():
        details = r["completeness"]["details"]
        if len(details["errors_by_budget"]) > 1:
            trend = ", ".join(f"{b}: {fmt(e)}" for b, e in details["errors_by_budget"].items())
            rows.append([f"`{name}`", details["reference"], trend])
    out = (
        [
            "## Completeness by budget",
            "",
            "Σ over the explained inputs of |Σᵢ φᵢ − Δf| / Σ |Δf| on a 4-8-6-1 ReLU network with biases; "
            "the reference Δf is the method's own (its baseline, background or noise distribution).",
            "",
            _table(["method", "Δf", "error by budget"], rows),
            "",
        ]
        if rows
        else []
    )
    rows = []
    for name, r in report["methods"].items():
        details = r["symmetry"]["details"]
        trend = ", ".join(f"{b}: {fmt(e)}" for b, e in details["errors_by_budget"].items())
        exchangeable = details.get("exchangeable_data_value")
        rows.append([f"`{name}`", trend, "–" if exchangeable is None else fmt(exchangeable)])
    out += [
        "## Symmetry by budget and data",
        "",
        "max |φ₀ − φ₁| / max |φ| on a network symmetric in x₀, x₁ (hidden units in pairs with swapped "
        "weights), "
        "inputs with x₁ = x₀, baseline 0. The last column fits the patterns (and draws Expected Gradients' "
        "background) from exchangeable data: the data plus its x₀ ↔ x₁ swapped copy.",
        "",
        _table(["method", "error by budget", "exchangeable data"], rows),
        "",
    ]
    return out


def _criteria_section(report):
    s = report["settings"]
    na = [(p, name, r["reason"]) for name, m in report["methods"].items() for p, r in m.items() if "reason" in r]
    lines = [
        "## Criteria and constructions",
        "",
        f"Tolerances (`pgig_tf/axioms/criteria.py`): exact {C.EXACT_TOL:g}, approximate {C.APPROX_TOL:g} (only for "
        f"checks run along a budget ladder), non-zero {C.NONZERO_TOL:g}. Data: {s['num_data']} correlated, "
        f"non-exchangeable Gaussian samples in 4-D (x = zA) fit every pattern; Expected Gradients' background "
        f"is its first {s['num_background']} samples; {s['num_inputs']} held-out samples are explained. Every "
        f"sampling method uses seed {s['seed']}, so two networks get the same noise.",
        "",
        "- **completeness**: Σᵢ φᵢ = Δf on a 4-8-6-1 ReLU network with non-zero biases, along a budget ladder "
        "for the path and sampling methods (the largest budget is judged).",
        f"- **sensitivity (a)**: the IG paper's plateau f(x) = 1 − ReLU(1 − x₀) at x₀ = "
        f"{', '.join(f'{v:g}' for v in s['plateau_points'])} (baseline 0, Δf = 1), and x = ±1.5 eⱼ on the "
        "4-8-6-1 network for every j with f(x) ≠ f(0); φⱼ must be non-zero. Expected Gradients gets the "
        "baseline as its only background sample.",
        "- **sensitivity (b) / dummy**: the 4-8-6-1 network with all weights of x₃ set to 0 (x₃ is correlated "
        "with the other features in the data); φ₃ must be 0.",
        "- **implementation invariance**: the rewrites above; the worst is judged.",
        f"- **linearity**: f = {s['linearity_weights']['a']:g}·f₁ + ({s['linearity_weights']['b']:g})·f₂ built "
        "as one network (both hidden layers side by side, a block-diagonal Dense(2) of the heads, a linear "
        "Dense(1)), against the same combination of the maps of f₁ and f₂ (4-5-1 networks).",
        "- **symmetry preservation**: see above; sampling methods are judged at the large budget.",
        "",
        "Notes:",
        "",
    ]
    lines += [f"- n/a, {report['properties'][p]} of `{name}`: {reason}." for p, name, reason in na]
    lines += [
        "- `random` ignores the model: with a fixed seed it returns the same map for every network, which "
        "passes implementation invariance and sensitivity (a) trivially.",
        "- PatternNet and PatternAttribution start the backward pass with the output value f(x) (§3.4), not "
        "with 1, and their patterns are fitted per network; both matter for completeness and linearity.",
        "- Noise (SmoothGrad family, SmoothTaylor, noise-baseline IG) is drawn independently per feature, so "
        "those methods can be symmetric only in expectation; Expected Gradients additionally needs an "
        "exchangeable background.",
        "- Completeness in the limit: IG's Riemann sum converges to Δf; Expected Gradients and noise-baseline IG "
        "converge to their own Δf in expectation. PGIG (Σᵢ pᵢ·IGᵢ in the linear case, §4.1), SmoothGrad-IG "
        "(multiplier x − x̄ for paths to x + ε) and SmoothTaylor (first-order expansions around x + ε) are not "
        "complete even in the limit: their errors level off as the budget grows.",
    ]
    return lines
