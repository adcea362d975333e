"""The properties of Integrated Gradients' axioms (Sundararajan et al., 2017), each measured for one analyzer on a constructed model.

Each check returns a dict: `verdict` (see `criteria`), `value` (the measured number the
verdict is based on), `metric` (what the number is), `budget` (steps/samples used) and
per-case `details`.
"""

import numpy as np

from pgig_tf.analyzers import analyzer_class
from pgig_tf.evaluation.axioms import criteria as C
from pgig_tf.evaluation.axioms import networks as N
from pgig_tf.evaluation.axioms.bench import AxiomBench, default_setting

PROPERTIES = ("completeness", "sensitivity_a", "dummy", "implementation_invariance", "linearity", "symmetry")
PROPERTY_TITLES = {
    "completeness": "completeness",
    "sensitivity_a": "sensitivity (a)",
    "dummy": "sensitivity (b) / dummy",
    "implementation_invariance": "implementation invariance",
    "linearity": "linearity",
    "symmetry": "symmetry preservation",
}

# Completeness can only hold in the limit for these: measured along a budget ladder (largest last).
COMPLETENESS_LADDERS = {
    "integrated_gradients": [{"steps": m} for m in (4, 16, 64, 256, 1024)],
    "pgig": [{"steps": m} for m in (4, 16, 64, 256, 1024)],
    "smoothgrad_ig": [{"steps": n, "samples": n} for n in (4, 8, 16, 32, 64)],
    "noise_baseline_ig": [{"steps": 32, "samples": n} for n in (4, 16, 64, 256, 1024)],
    "expected_gradients": [{"samples": n} for n in (16, 64, 256, 1024, 4096, 16384)],
    "smooth_taylor": [{"samples": n} for n in (16, 64, 256, 1024, 4096)],
}
# Noise is drawn independently per feature, so sampling methods can only be symmetric in
# expectation: symmetry is measured at the default budget and at this one (the verdict's).
# The path's steps do not affect symmetry (every path point has x0 = x1), so m is small there.
SYMMETRY_LARGE_BUDGETS = {
    "smoothgrad": {"samples": 4096},
    "smoothgrad_squared": {"samples": 4096},
    "vargrad": {"samples": 4096},
    "smoothgrad_ig": {"steps": 8, "samples": 4096},
    "noise_baseline_ig": {"steps": 8, "samples": 4096},
    "expected_gradients": {"samples": 4096},
    "smooth_taylor": {"samples": 4096},
}
NOT_APPLICABLE_REASONS = {
    ("completeness", "smoothgrad_squared"): "maps are mean squared gradients, (∂f/∂x)², not a decomposition of Δf",
    ("completeness", "vargrad"): "maps are gradient variances, (∂f/∂x)², not a decomposition of Δf",
    ("completeness", "pattern_net"): "PatternNet estimates the signal in input space, it is not an attribution "
    "(Kindermans et al., 2018); PatternAttribution is its attribution",
}
PLATEAU_POINTS = (1.5, 2.0, 3.0)  # x0 on the plateau of 1 - ReLU(1 - x0); baseline 0
ONE_FEATURE_STEP = 1.5  # sensitivity (a), generic case: x = ±1.5 e_j against baseline 0
MONTE_CARLO_DRAWS = 2**17  # per input, for the references of noise-baseline IG and SmoothTaylor
SYMMETRIC_PAIR = (0, 1)


def budget_label(budget):
    """'m=256', 'n=1024', 'm=25, n=256' or 'defaults'."""
    if not budget:
        return "defaults"
    parts = []
    if "steps" in budget:
        parts.append(f"m={budget['steps']}")
    if "samples" in budget:
        parts.append(f"n={budget['samples']}")
    return ", ".join(parts)


def _result(property_name, name, value, verdict, metric, budget=None, **details):
    result = {
        "verdict": verdict,
        "value": float(value),
        "metric": metric,
        "budget": budget_label(budget),
        "details": details,
    }
    reason = NOT_APPLICABLE_REASONS.get((property_name, name))
    if reason:
        result["verdict"], result["reason"] = C.NOT_APPLICABLE, reason
    return result


def _relative_max(difference, scale):
    """max |difference| / max |scale| (0 when both are 0)."""
    top = float(np.max(np.abs(difference)))
    bottom = float(np.max(np.abs(scale)))
    if bottom == 0.0:
        return 0.0 if top == 0.0 else float("inf")
    return top / bottom


def _output(spec, x):
    return N.forward(spec, x)[:, 0]


# --- completeness ----------------------------------------------------------------------------


def completeness_inputs(bench, spec):
    """The first held-out inputs whose |f(x) - f(0)| is at least a quarter of f's spread over the data."""
    gap = np.abs(_output(spec, bench.pool) - _output(spec, np.zeros((1, N.INPUT_DIM))))
    chosen = np.flatnonzero(gap >= 0.25 * np.std(_output(spec, bench.data)))[: bench.num_inputs]
    if len(chosen) == 0:
        raise ValueError(f"seed {bench.seed}: no held-out input changes the network's output enough; try another seed")
    return bench.pool[chosen]


def completeness_reference(bench, name, spec, x):
    """(Δf per input, its description): what the method's attributions should sum to.

    Baseline methods: f(x) - f(0). Expected Gradients: f(x) - mean f over its background.
    Noise-baseline IG: f(x) - E f(b), b uniform in [min x, max x] per feature; SmoothTaylor:
    f(x) - E f(x + eps), eps ~ N(0, sigma^2), sigma = noise_scale (max x - min x); both
    expectations by Monte Carlo (MONTE_CARLO_DRAWS per input, error ~ 1e-3 of f's spread).
    """
    fx = _output(spec, x)
    if analyzer_class(name).uses_background:
        return fx - np.mean(_output(spec, bench.background)), "f(x) − mean f(background)"
    rng = np.random.default_rng([bench.seed, 20])
    low, high = x.min(axis=1), x.max(axis=1)
    if name == "noise_baseline_ig":
        means = [
            np.mean(_output(spec, rng.uniform(lo, hi, (MONTE_CARLO_DRAWS, x.shape[1])))) for lo, hi in zip(low, high)
        ]
        return fx - np.array(means), "f(x) − E f(b), b ~ U[min x, max x] (Monte Carlo)"
    if name == "smooth_taylor":
        sigma = default_setting(name, "noise_scale") * (high - low)
        means = [
            np.mean(_output(spec, row + rng.normal(0.0, s, (MONTE_CARLO_DRAWS, x.shape[1]))))
            for row, s in zip(x, sigma)
        ]
        return fx - np.array(means), "f(x) − E f(x + ε) (Monte Carlo)"
    return fx - _output(spec, np.zeros((1, x.shape[1]))), "f(x) − f(0)"


def completeness(bench, name, ladders=None):
    """Σ_i phi_i against Δf on a 4-8-6-1 ReLU network with biases; error = Σ_x |Σ_i phi_i - Δf| / Σ_x |Δf|."""
    ladders = COMPLETENESS_LADDERS if ladders is None else ladders
    spec = N.deep_spec(bench.seed)
    model = bench.model(spec, "deep")
    x = completeness_inputs(bench, spec)
    reference, description = completeness_reference(bench, name, spec, x)
    budgets = ladders.get(name) or [None]
    errors = []
    for budget in budgets:
        phi = bench.attribute(name, model, x, budget=budget)
        errors.append(float(np.sum(np.abs(phi.sum(axis=1) - reference)) / np.sum(np.abs(reference))))
    return _result(
        "completeness",
        name,
        errors[-1],
        C.verdict_from_error(errors[-1], approximable=name in ladders),
        "Σ over inputs |Σᵢ φᵢ − Δf| / Σ |Δf|",
        budgets[-1],
        reference=description,
        errors_by_budget={budget_label(b): e for b, e in zip(budgets, errors)},
    )


# --- sensitivity ------------------------------------------------------------------------------


def sensitivity_a(bench, name):
    """Inputs that differ from the baseline 0 in one feature j with f(x) != f(0) get phi_j != 0.

    Cases: the plateau f = 1 - ReLU(1 - x0) at x0 = 1.5, 2, 3 (the IG paper's example), and the
    deep ReLU network at x = ±1.5 e_j for every j where f(x) != f(0). Expected Gradients gets
    the baseline as its only background sample. Value: the smallest |phi_j| / |Δf|.
    """
    plateau = N.plateau_spec()
    x = np.array([[v, 0.0] for v in PLATEAU_POINTS])
    phi = bench.attribute(
        name,
        bench.model(plateau, "plateau"),
        x,
        background=np.zeros((1, 2), np.float32),
        pattern_data=N.plateau_data(bench.seed, len(bench.data)),
        data_key="plateau_data",
    )
    plateau_ratios = np.abs(phi[:, 0]) / np.abs(_output(plateau, x) - _output(plateau, np.zeros((1, 2))))

    deep = N.deep_spec(bench.seed)
    steps = np.concatenate([np.eye(N.INPUT_DIM), -np.eye(N.INPUT_DIM)]) * ONE_FEATURE_STEP
    delta = _output(deep, steps) - _output(deep, np.zeros((1, N.INPUT_DIM)))
    keep = np.abs(delta) > 1e-3
    if not keep.any():
        raise ValueError(f"seed {bench.seed}: no single-feature step changes the network's output; try another seed")
    features = np.tile(np.arange(N.INPUT_DIM), 2)[keep]
    phi = bench.attribute(
        name, bench.model(deep, "deep"), steps[keep], background=np.zeros((1, N.INPUT_DIM), np.float32)
    )
    generic_ratios = np.abs(phi[np.arange(len(features)), features]) / np.abs(delta[keep])
    value = min(plateau_ratios.min(), generic_ratios.min())
    return _result(
        "sensitivity_a",
        name,
        value,
        C.verdict_from_attribution(value),
        "min |φⱼ| / |Δf| (0 = violated)",
        plateau_min=float(plateau_ratios.min()),
        generic_min=float(generic_ratios.min()),
        plateau_ratios=[float(r) for r in plateau_ratios],
        generic_cases=int(len(features)),
    )


def dummy(bench, name):
    """A feature with all-zero weights (correlated with the others in the data) gets 0: max |phi_dummy| / max |phi|."""
    spec = N.dummy_spec(bench.seed)
    phi = bench.attribute(name, bench.model(spec, "dummy"), bench.inputs)
    value = _relative_max(phi[:, -1], phi)
    return _result(
        "dummy",
        name,
        value,
        C.verdict_from_error(value),
        "max |φ_dummy| / max |φ|",
        exactly_zero=bool(np.all(phi[:, -1] == 0.0)),
    )


# --- implementation invariance ------------------------------------------------------------------


def implementation_invariance(bench, name, constructions=N.EQUIVALENTS):
    """Maps of the 4-6-1 base network against each functionally equivalent rewrite (patterns fitted
    on each network from the same data): max |phi_A - phi_B| / max |phi_A|, worst construction."""
    base = N.base_spec(bench.seed)
    phi_a = bench.attribute(name, bench.model(base, "base"), bench.inputs)
    per = {}
    for construction in constructions:
        spec = N.equivalent_spec(base, construction, bench.seed)
        phi_b = bench.attribute(name, bench.model(spec, f"base_{construction}"), bench.inputs)
        error = _relative_max(phi_a - phi_b, phi_a)
        per[construction] = {"value": error, "verdict": C.verdict_from_error(error)}
    worst_name = max(per, key=lambda c: per[c]["value"])
    return _result(
        "implementation_invariance",
        name,
        per[worst_name]["value"],
        C.worst([r["verdict"] for r in per.values()]),
        "max |φ_A − φ_B| / max |φ_A| (worst rewrite)",
        worst_construction=worst_name,
        constructions=per,
    )


def invariance_over_seeds(seeds, names=("pattern_attribution", "pgig"), num_data=512):
    """Per method and rewrite: the implementation-invariance error at every seed (fresh data and networks)."""
    out = {name: {c: [] for c in N.EQUIVALENTS} for name in names}
    for seed in seeds:
        bench = AxiomBench(seed, num_data=num_data)
        for name in names:
            per = implementation_invariance(bench, name)["details"]["constructions"]
            for construction, entry in per.items():
                out[name][construction].append(entry["value"])
    return out


def equivalence_check(bench, constructions=N.EQUIVALENTS):
    """Per rewrite: max |f_A - f_B| / max |f_A| of the Keras models on the inputs and the data (should be ~1e-7)."""
    base = N.base_spec(bench.seed)
    x = np.concatenate([bench.inputs, bench.data])
    f_a = bench.model(base, "base")(x, training=False).numpy()
    out = {}
    for construction in constructions:
        model = bench.model(N.equivalent_spec(base, construction, bench.seed), f"base_{construction}")
        out[construction] = _relative_max(f_a - model(x, training=False).numpy(), f_a)
    return out


def pattern_transformations(bench, constructions=N.EQUIVALENTS):
    """Per rewrite: do the fitted patterns transform as predicted (p -> p/c, permuted, split)?

    `deviation`: max over layers of max |p_B - predicted| / max |p_B| (None where no per-unit
    prediction exists). `pa_kernel_difference`: PatternAttribution's effective backward kernel
    from the input to the hidden pre-activation, W ⊙ P, against the rewrite's (the product
    through the inserted layer for 'mixing'), as max |difference| / max |W ⊙ P|.
    """
    base = N.base_spec(bench.seed)
    model_a = bench.model(base, "base")
    patterns_a = bench.patterns(model_a)
    kernel_a = base[0].kernel * patterns_a["hidden"]
    out = {}
    for construction in constructions:
        spec = N.equivalent_spec(base, construction, bench.seed)
        patterns_b = bench.patterns(bench.model(spec, f"base_{construction}"))
        predicted = N.predicted_patterns(construction, patterns_a, bench.seed, base)
        entry = {"description": N.CONSTRUCTION_TEXT[construction], "deviation": None}
        if predicted is not None:
            entry["deviation"] = max(_relative_max(predicted[k] - patterns_b[k], patterns_b[k]) for k in predicted)
        layers = {layer.name: layer for layer in spec}
        if construction in ("permute", "rescale"):
            kernel_b = layers["hidden"].kernel * patterns_b["hidden"]
            if construction == "permute":
                kernel_b = kernel_b[:, np.argsort(N.permutation(bench.seed, kernel_b.shape[1]))]
            entry["pa_kernel_difference"] = _relative_max(kernel_b - kernel_a, kernel_a)
        elif construction == "mixing":
            kernel_b = (layers["mix"].kernel * patterns_b["mix"]) @ (layers["hidden"].kernel * patterns_b["hidden"])
            entry["pa_kernel_difference"] = _relative_max(kernel_b - kernel_a, kernel_a)
        out[construction] = entry
    return out


# --- linearity and symmetry ---------------------------------------------------------------------


def linearity(bench, name):
    """phi of f = a f1 + b f2 (one network) against a phi(f1) + b phi(f2): max |difference| / max |a phi1 + b phi2|."""
    spec1, spec2, spec = N.linearity_specs(bench.seed)
    phi1 = bench.attribute(name, bench.model(spec1, "lin_f1"), bench.inputs)
    phi2 = bench.attribute(name, bench.model(spec2, "lin_f2"), bench.inputs)
    phi = bench.attribute(name, bench.model(spec, "lin_f"), bench.inputs)
    combined = N.LINEARITY_A * phi1 + N.LINEARITY_B * phi2
    value = _relative_max(phi - combined, combined)
    return _result(
        "linearity",
        name,
        value,
        C.verdict_from_error(value),
        "max |φ_f − (aφ₁ + bφ₂)| / max |aφ₁ + bφ₂|",
        a=N.LINEARITY_A,
        b=N.LINEARITY_B,
    )


def _swap_pair(x):
    i, j = SYMMETRIC_PAIR
    swapped = np.array(x, copy=True)
    swapped[:, [i, j]] = swapped[:, [j, i]]
    return swapped


def symmetry(bench, name, large_budgets=None):
    """f symmetric in x0, x1; inputs with x1 = x0, baseline 0: max |phi_0 - phi_1| / max |phi|.

    Measured with the analyzer's defaults and, for sampling methods, at a large budget (the
    verdict's). Pattern methods and Expected Gradients also run with exchangeable data (the
    data plus its x0 <-> x1 swapped copy) to separate the data's asymmetry from the method's.
    """
    large_budgets = SYMMETRY_LARGE_BUDGETS if large_budgets is None else large_budgets
    spec = N.symmetric_spec(bench.seed)
    model = bench.model(spec, "symmetric")
    x = np.array(bench.inputs, copy=True)
    x[:, SYMMETRIC_PAIR[1]] = x[:, SYMMETRIC_PAIR[0]]
    i, j = SYMMETRIC_PAIR

    def error(**kwargs):
        phi = bench.attribute(name, model, x, **kwargs)
        return _relative_max(phi[:, i] - phi[:, j], phi)

    budgets = [None] + ([large_budgets[name]] if name in large_budgets else [])
    errors = {budget_label(b): error(budget=b) for b in budgets}
    details = {"errors_by_budget": errors}
    if analyzer_class(name).rule_needs_patterns() or analyzer_class(name).uses_background:  # fitted on data
        exchangeable = np.concatenate([bench.data, _swap_pair(bench.data)])
        background = np.concatenate([bench.background, _swap_pair(bench.background)])
        details["exchangeable_data_value"] = error(
            budget=budgets[-1], pattern_data=exchangeable, data_key="exchangeable", background=background
        )
    value = errors[budget_label(budgets[-1])]
    return _result(
        "symmetry",
        name,
        value,
        C.verdict_from_error(value, approximable=name in large_budgets),
        "max |φ₀ − φ₁| / max |φ| at x₀ = x₁",
        budgets[-1],
        **details,
    )


CHECKS = {
    "completeness": completeness,
    "sensitivity_a": sensitivity_a,
    "dummy": dummy,
    "implementation_invariance": implementation_invariance,
    "linearity": linearity,
    "symmetry": symmetry,
}
