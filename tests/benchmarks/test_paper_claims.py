"""The metric-by-metric claims table: intervals, areas, ranks with ties and the plain-words verdicts on hand-made results."""

import math

import pytest

from benchmarks import paper_claims as claims


def made_results():
    """Results of every source for three methods, small enough to check by hand."""

    def scored(key, values):
        return {n: {key: v, f"{key}_ci": [lo, hi]} for n, (v, lo, hi) in values.items()}

    evaluate = {"pgig": {}, "integrated_gradients": {}, "random": {}}
    for key, values in {
        "srg_road": {"pgig": (0.2, 0.1, 0.3), "integrated_gradients": (0.5, 0.4, 0.6), "random": (0.0, -0.1, 0.1)},
        "insertion": {"pgig": (0.9, 0.8, 0.95), "integrated_gradients": (0.9, 0.85, 0.97), "random": (0.5, 0.4, 0.6)},
        "deletion": {"pgig": (0.3, 0.2, 0.4), "integrated_gradients": (0.1, 0.05, 0.15), "random": (0.8, 0.7, 0.9)},
    }.items():
        for name, (v, lo, hi) in values.items():
            evaluate[name].update({key: v, f"{key}_ci": [lo, hi]})
    roar_cell = {"10": {"values": [0.9, 0.8]}, "50": {"values": [0.5, 0.6]}}
    return {
        "degradation": {
            "methods": scored(
                "aupc", {"pgig": (20.0, 18.0, 22.0), "integrated_gradients": (10.0, 9.0, 11.0), "random": (40, 38, 42)}
            )
        },
        "evaluate": {"methods": evaluate},
        "roar": {
            "settings": {"fractions": [10, 50]},
            "baseline_accuracy": {"values": [1.0, 1.0]},
            "methods": {"pgig": {"roar": roar_cell, "kar": roar_cell}},
        },
        "sanity": {"methods": {"pgig": {"correlations": [[1.0, 1.0, 1.0], [0.1, None, 0.3]]}}},
        "axioms": {
            "methods": {
                "pgig": {a: {"verdict": "fails"} for a in claims.AXIOMS} | {"dummy": {"verdict": "holds"}},
                "integrated_gradients": {a: {"verdict": "holds"} for a in claims.AXIOMS}
                | {"completeness": {"verdict": "holds approximately"}},
                "pattern_net": {a: {"verdict": "holds"} for a in claims.AXIOMS},
            }
        },
    }


def test_t_interval_and_the_per_seed_trapezoid_areas():
    mean, low, high = claims.t_interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2 dof) = 4.303
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - low == high - mean
    assert claims.t_interval([0.7]) == (0.7, 0.7, 0.7)
    # seed 0: (0, 1) (0.1, 0.9) (0.5, 0.5) -> 0.1 * 1.9 / 2 + 0.4 * 1.4 / 2 = 0.095 + 0.28
    areas = claims.roar_area([1.0, 1.0], [[0.9, 0.8], [0.5, 0.6]], [10, 50])
    assert areas == pytest.approx([0.375, 0.1 * 1.8 / 2 + 0.4 * 1.4 / 2])


def test_cells_ranks_and_verdicts_of_hand_made_results():
    cells = claims.cells_from_results(made_results())
    assert cells["morf_aupc"]["pgig"] == (20.0, 18.0, 22.0)
    assert cells["axioms"] == {
        "pgig": (1.0, 1.0, 1.0),
        "integrated_gradients": (6.0, 6.0, 6.0),
        "pattern_net": (6.0,) * 3,
    }
    value, low, high = cells["randomisation"]["pgig"]  # None (a constant map) left out: mean of 0.1 and 0.3
    assert value == pytest.approx(0.2) and 0.1 <= low <= high <= 0.3
    ranked = claims.rank_cells(cells)
    assert ranked["morf_aupc"] == {"pgig": (2, False), "integrated_gradients": (1, False), "random": (3, False)}
    # insertion: pgig and IG overlap (both beat random): tied at rank 1
    assert ranked["insertion"] == {"pgig": (1, True), "integrated_gradients": (1, True), "random": (3, False)}
    verdicts = claims.compare(cells, "pgig", "integrated_gradients")
    assert verdicts == {
        "morf_aupc": "worse",
        "srg_road": "worse",
        "insertion": "cannot tell",
        "deletion": "worse",
        "axioms": "worse",
    }
    assert claims.compare(cells, "pgig", "random")["deletion"] == "better"


def test_the_page_ranks_only_the_table_methods_and_says_what_is_missing():
    results = made_results()
    assert "ground_truth" not in results
    page, short = claims.report(results, methods=("integrated_gradients", "pgig", "random"))
    assert "| pgig | 20.00 [18.00, 22.00] 2 |" in page
    assert "1/6 2 |" in page  # pattern_net's 6/6 is not in the table, so pgig ranks 2nd of two, not 3rd
    assert "| integrated_gradients | 10.00 (1) | 0.500 (1) |" in short
    assert "Not in this table (no results found): ground_truth." in page
    assert (
        "- **pgig against integrated_gradients:** better on none; worse on MoRF AUPC, SRG (ROAD), deletion, "
        "axioms; cannot tell on insertion." in page
    )
    assert "- deletion: pgig is better than 1 and worse than 1 of the 2 others (worse than integrated_gradients)." in (
        page
    )


def test_the_readme_table_is_the_short_table_of_the_claims_page():
    """README.md's claims table is docs/claims.md's short table (both written by `python -m benchmarks.paper_claims`)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    page = (root / "docs" / "claims.md").read_text(encoding="utf-8")
    start = readme.index(claims.README_START) + len(claims.README_START)
    table = readme[start : readme.index(claims.README_END)].strip()
    short = page.split("## Short", 1)[1].split("## In plain words", 1)[0].strip()
    assert table == short and table.count("\n") == 13  # a header, a rule and 12 methods
    assert claims.replace_between_markers(readme, table) == readme
    with pytest.raises(ValueError, match="no '<!-- claims table"):
        claims.replace_between_markers("no markers", table)
