"""The axiom checks (Sundararajan et al., 2017): the constructions are what they claim, and the well-known results come out."""

import json

import numpy as np
import pytest

from pgig_tf.analyzers import ANALYZERS
from pgig_tf.cli import axioms as cli
from pgig_tf.evaluation.axioms import AxiomBench
from pgig_tf.evaluation.axioms import checks as K
from pgig_tf.evaluation.axioms import criteria as C
from pgig_tf.evaluation.axioms import networks as N


@pytest.fixture(scope="module")
def bench():
    return AxiomBench(seed=0)


def _rng():
    return np.random.default_rng(7)


# --- criteria and constructions (no TensorFlow work) ----------------------------------------------


def test_verdict_thresholds():
    assert C.verdict_from_error(0.0) == C.HOLDS
    assert C.verdict_from_error(C.EXACT_TOL) == C.HOLDS
    assert C.verdict_from_error(2 * C.EXACT_TOL) == C.FAILS  # no budget can explain a deterministic error
    assert C.verdict_from_error(2 * C.EXACT_TOL, approximable=True) == C.APPROX
    assert C.verdict_from_error(2 * C.APPROX_TOL, approximable=True) == C.FAILS
    assert C.verdict_from_attribution(0.0) == C.FAILS and C.verdict_from_attribution(1e-3) == C.HOLDS
    assert C.worst([C.HOLDS, C.APPROX, C.HOLDS]) == C.APPROX and C.worst([C.APPROX, C.FAILS]) == C.FAILS
    with pytest.raises(ValueError, match="error must be"):
        C.verdict_from_error(float("nan"))


@pytest.mark.parametrize("construction", N.EQUIVALENTS)
def test_rewrites_compute_the_same_function(construction):
    base = N.base_spec(0)
    rewritten = N.equivalent_spec(base, construction, 0)
    x = 3.0 * _rng().normal(size=(2000, N.INPUT_DIM))
    np.testing.assert_allclose(N.forward(rewritten, x), N.forward(base, x), rtol=1e-10, atol=1e-10)
    assert any(
        a.kernel.shape != b.kernel.shape or not np.allclose(a.kernel, b.kernel) for a, b in zip(base, rewritten)
    ) or len(rewritten) != len(base)


def test_linearity_and_symmetric_constructions():
    f1, f2, f = N.linearity_specs(0)
    x = _rng().normal(size=(500, N.INPUT_DIM))
    np.testing.assert_allclose(
        N.forward(f, x), N.LINEARITY_A * N.forward(f1, x) + N.LINEARITY_B * N.forward(f2, x), rtol=1e-12, atol=1e-12
    )
    symmetric = N.symmetric_spec(0)
    np.testing.assert_allclose(N.forward(symmetric, K._swap_pair(x)), N.forward(symmetric, x), rtol=1e-12, atol=1e-12)
    assert not np.allclose(symmetric[0].kernel[0], symmetric[0].kernel[1])  # symmetric without equal weights
    dummy = N.dummy_spec(0)
    moved = x.copy()
    moved[:, -1] += 5.0
    np.testing.assert_array_equal(N.forward(dummy, moved), N.forward(dummy, x))


def test_keras_models_match_the_specs(bench):
    differences = K.equivalence_check(bench)
    assert set(differences) == set(N.EQUIVALENTS) and max(differences.values()) < 1e-6
    model = bench.model(N.deep_spec(0), "deep")
    np.testing.assert_allclose(model(bench.data).numpy(), N.forward(N.deep_spec(0), bench.data), rtol=1e-5, atol=1e-5)


# --- the well-known results ----------------------------------------------------------------------


def test_integrated_gradients_completeness_converges(bench):
    ladder = {"integrated_gradients": [{"steps": m} for m in (4, 16, 64, 256)]}
    result = K.completeness(bench, "integrated_gradients", ladder)
    errors = list(result["details"]["errors_by_budget"].values())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))  # shrinks with m
    assert errors[-1] < 0.01 and errors[-1] < errors[0] / 10
    assert result["verdict"] == C.APPROX and result["budget"] == "m=256"


def test_gradient_methods_are_not_complete_and_pgig_neither(bench):
    assert K.completeness(bench, "gradient")["verdict"] == C.FAILS
    # biases make Gradient x Input incomplete even on a piecewise linear network
    assert K.completeness(bench, "input_t_gradient")["value"] > C.APPROX_TOL
    # PGIG sums p_i IG_i (§4.1), not IG_i: the error does not shrink with the steps
    pgig = K.completeness(bench, "pgig", {"pgig": [{"steps": 64}, {"steps": 256}]})
    assert pgig["verdict"] == C.FAILS and min(pgig["details"]["errors_by_budget"].values()) > C.APPROX_TOL


def test_plateau_gradient_is_exactly_zero_ig_counts_the_slope(bench):
    plateau = bench.model(N.plateau_spec(), "plateau")
    data = N.plateau_data(0, 512)
    x = np.array([[v, 0.0] for v in K.PLATEAU_POINTS])
    assert np.all(bench.attribute("gradient", plateau, x) == 0.0)
    steps = 25
    ig = bench.attribute("integrated_gradients", plateau, x, budget={"steps": steps})
    # right Riemann sum: the gradient is 1 at the path points k/m x0 < 1 and 0 on the plateau (ReLU'(0) = 0)
    expected = [x0 * sum(1 for k in range(1, steps + 1) if k / steps * x0 < 1) / steps for x0 in K.PLATEAU_POINTS]
    np.testing.assert_allclose(ig[:, 0], expected, rtol=1e-6)
    assert np.all(ig[:, 1] == 0.0)
    pa = bench.attribute("pattern_attribution", plateau, x, pattern_data=data, data_key="plateau_data")
    assert np.all(pa == 0.0)  # PA violates sensitivity (PGIG paper §3.4)
    pgig = bench.attribute("pgig", plateau, x, pattern_data=data, data_key="plateau_data")
    assert np.all(np.abs(pgig[:, 0]) > 0.5)


def test_sensitivity_verdicts(bench):
    gradient, ig = K.sensitivity_a(bench, "gradient"), K.sensitivity_a(bench, "integrated_gradients")
    assert gradient["verdict"] == C.FAILS and gradient["details"]["plateau_min"] == 0.0
    assert ig["verdict"] == C.HOLDS and ig["details"]["plateau_min"] > 0.9 and ig["details"]["generic_cases"] >= 4


@pytest.mark.parametrize(
    "name", ["gradient", "integrated_gradients", "guided_backprop", "pattern_attribution", "pgig", "smoothgrad"]
)
def test_dummy_feature_gets_exactly_zero(bench, name):
    result = K.dummy(bench, name)
    assert result["details"]["exactly_zero"] and result["verdict"] == C.HOLDS


def test_pattern_net_gives_a_correlated_dummy_feature_signal(bench):
    # PatternNet's backward kernel is p, not w: the dummy feature's pattern entry is its covariance with y
    result = K.dummy(bench, "pattern_net")
    assert result["verdict"] == C.FAILS and result["value"] > 0.01


def test_integrated_gradients_is_implementation_invariant(bench):
    result = K.implementation_invariance(bench, "integrated_gradients")
    assert result["verdict"] == C.HOLDS
    assert max(r["value"] for r in result["details"]["constructions"].values()) < 1e-5


@pytest.mark.parametrize("name", ["pattern_attribution", "pgig"])
def test_pattern_attribution_and_pgig_invariance(bench, name):
    per = K.implementation_invariance(bench, name)["details"]["constructions"]
    for construction in ("permute", "rescale", "split"):  # per-unit rewrites: w * p is unchanged
        assert per[construction]["value"] < 1e-5, construction
    for construction in ("mixing", "relu_identity"):  # patterns of mixed units differ
        assert per[construction]["value"] > 100 * C.EXACT_TOL, construction
        assert per[construction]["verdict"] == C.FAILS


def test_patterns_transform_as_predicted(bench):
    transformations = K.pattern_transformations(bench)
    for construction in ("permute", "rescale", "split"):
        assert transformations[construction]["deviation"] < 1e-5, construction
    assert transformations["rescale"]["pa_kernel_difference"] < 1e-5
    assert transformations["mixing"]["deviation"] is None
    assert transformations["mixing"]["pa_kernel_difference"] > 0.05


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_guided_backprop_and_pattern_net_break_invariance(bench):
    guided = K.implementation_invariance(bench, "guided_backprop")["details"]["constructions"]
    assert guided["relu_identity"]["value"] > 0.05  # the ReLU(x) - ReLU(-x) detour gates the gradient
    assert max(guided[c]["value"] for c in ("permute", "rescale", "split", "mixing")) < 1e-5
    net = K.implementation_invariance(bench, "pattern_net", constructions=("rescale", "split"))["details"]
    assert net["constructions"]["rescale"]["value"] < 1e-5
    # backward kernel p: both copies of a split unit carry p_hidden * p_out, so its share doubles
    assert net["constructions"]["split"]["value"] > 0.01


@pytest.mark.parametrize(
    "name, holds",
    [("integrated_gradients", True), ("smoothgrad", True), ("smoothgrad_squared", False), ("random", False)],
)
def test_linearity(bench, name, holds):
    result = K.linearity(bench, name)
    if holds:
        assert result["verdict"] == C.HOLDS and result["value"] < 1e-5
    else:
        assert result["verdict"] == C.FAILS and result["value"] > C.APPROX_TOL


def test_symmetry(bench):
    for name in ("gradient", "integrated_gradients"):
        result = K.symmetry(bench, name)
        assert result["verdict"] == C.HOLDS and result["value"] < 1e-5
    pa = K.symmetry(bench, "pattern_attribution")
    # patterns fitted on non-exchangeable data break the symmetry; on exchangeable data they keep it
    assert pa["verdict"] == C.FAILS and pa["value"] > C.APPROX_TOL
    assert pa["details"]["exchangeable_data_value"] < 1e-4


def test_sampling_is_seeded(bench):
    other = AxiomBench(seed=0)
    np.testing.assert_array_equal(other.inputs, bench.inputs)
    model = bench.model(N.symmetric_spec(0), "symmetric")
    first = bench.attribute("smoothgrad", model, bench.inputs)
    np.testing.assert_array_equal(other.attribute("smoothgrad", model, bench.inputs), first)
    assert not np.array_equal(AxiomBench(seed=1).attribute("smoothgrad", model, bench.inputs), first)


# --- the script ----------------------------------------------------------------------------------


def test_default_methods_are_every_analyzer(monkeypatch):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("pgig_tf.evaluation.axioms.run_axioms", fake_run)
    with pytest.raises(SystemExit):
        cli.main(["--out", "unused"])
    assert seen["methods"] is None and seen["seed"] == 0 and not seen["quick"]
    from pgig_tf.evaluation.axioms import report

    with pytest.raises(ValueError, match="methods must be names"):
        report.run_axioms(methods=["gradient", "nope"])
    assert len(ANALYZERS) == 15


def test_script_writes_json_and_markdown(tmp_path):
    docs = tmp_path / "docs" / "axioms.md"
    cli.main(["--methods", "random", "--quick", "--out", str(tmp_path), "--docs", str(docs)])
    report = json.loads((tmp_path / "axioms.json").read_text(encoding="utf-8"))
    assert list(report["methods"]) == ["random"]
    for results in report["methods"].values():
        assert list(results) == list(K.PROPERTIES)
        assert all(r["verdict"] in C.VERDICTS and np.isfinite(r["value"]) for r in results.values())
    assert report["methods"]["random"]["dummy"]["verdict"] == C.FAILS
    assert report["settings"]["tolerances"] == {
        "exact": C.EXACT_TOL,
        "approximate": C.APPROX_TOL,
        "nonzero": C.NONZERO_TOL,
    }
    markdown = (tmp_path / "axioms.md").read_text(encoding="utf-8")
    assert docs.read_text(encoding="utf-8") == markdown
    table = [line for line in markdown.splitlines() if line.startswith("| `random` |")]
    assert len(table) == 3  # main table, invariance by rewrite, symmetry by budget
    assert table[0].count("|") == len(K.PROPERTIES) + 2 and "✗ fails" in table[0]


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_script_num_data_fits_the_patterns_on_that_many_samples(tmp_path):
    """--num-data: the data that fits every pattern has that many samples (the pattern transformations show it)."""
    cli.main(["--methods", "random", "--quick", "--out", str(tmp_path), "--num-data", "64", "--seed", "3"])
    report = json.loads((tmp_path / "axioms.json").read_text(encoding="utf-8"))
    assert report["settings"]["num_data"] == 64 and report["settings"]["seed"] == 3
    small = AxiomBench(3, num_data=64)
    assert small.data.shape == (64, N.INPUT_DIM)
    expected = K.pattern_transformations(small)
    found = report["implementation_invariance"]["patterns"]
    assert set(found) == set(expected)
    for construction, entry in expected.items():
        assert set(found[construction]) == set(entry)
        for key, value in entry.items():
            if isinstance(value, float):
                assert found[construction][key] == pytest.approx(value, rel=1e-6), (construction, key)
            else:
                assert found[construction][key] == value, (construction, key)
    # the default 512 samples fit other patterns: mixing changes PatternAttribution's kernel by another amount
    # (0.6728 against 0.6735: a thousand times the tolerance the numbers above are equal within)
    default = K.pattern_transformations(AxiomBench(3))["mixing"]["pa_kernel_difference"]
    assert abs(default - found["mixing"]["pa_kernel_difference"]) > 1e-4 * default
    markdown = (tmp_path / "axioms.md").read_text(encoding="utf-8")
    assert "fit their patterns on each network from the same 64 samples." in markdown
    assert "Data: 64 correlated" in markdown


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_script_invariance_seeds_repeats_the_pattern_methods_check_on_that_many_seeds(tmp_path, monkeypatch):
    """--invariance-seeds N: PatternAttribution's implementation invariance measured again on seeds --seed..--seed+N-1."""
    # the option changes only the implementation-invariance check: to keep this test short, the other
    # properties' checks measure the (quick) random method in PatternAttribution's place
    for check in ("completeness", "sensitivity_a", "dummy", "linearity", "symmetry"):
        real = getattr(K, check)
        monkeypatch.setattr(K, check, lambda bench, name, *a, _real=real, **k: _real(bench, "random", *a, **k))
    cli.main(
        ["--methods", "pattern_attribution", "--quick", "--out", str(tmp_path)]
        + ["--num-data", "32", "--invariance-seeds", "2", "--seed", "3"]
    )
    report = json.loads((tmp_path / "axioms.json").read_text(encoding="utf-8"))
    assert report["settings"]["invariance_seeds"] == 2
    over = report["implementation_invariance"]["over_seeds"]
    assert over["seeds"] == [3, 4] and list(over["methods"]) == ["pattern_attribution"]
    values = over["methods"]["pattern_attribution"]
    assert set(values) == set(N.EQUIVALENTS) and all(len(v) == 2 for v in values.values())
    # the first seed is the main table's check; the second one's networks and data are seed 4's
    main = report["methods"]["pattern_attribution"]["implementation_invariance"]["details"]["constructions"]
    assert {c: v[0] for c, v in values.items()} == {c: main[c]["value"] for c in N.EQUIVALENTS}
    other = K.implementation_invariance(AxiomBench(4, num_data=32), "pattern_attribution", constructions=("mixing",))
    assert values["mixing"][1] == pytest.approx(other["details"]["constructions"]["mixing"]["value"], rel=1e-6)
    assert values["mixing"][1] != values["mixing"][0]
    markdown = (tmp_path / "axioms.md").read_text(encoding="utf-8")
    assert "The same check on seeds 3–4 (fresh data, networks and patterns each)" in markdown
