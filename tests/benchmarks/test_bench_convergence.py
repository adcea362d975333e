"""The convergence benchmark's bookkeeping: relative errors, the first grid point within the target, the tables."""

import numpy as np
import pytest

from benchmarks.bench_convergence import first_reaching, main, print_tables, relative_errors


def test_relative_errors_are_per_image_l2_ratios():
    reference = np.zeros((2, 3, 2))
    reference[0, 0, 0], reference[1] = 3.0, 1.0
    maps = reference.copy()
    maps[0, 1, 1] = 4.0  # ||(0, 4)|| / ||3|| for image 0
    maps[1] *= 1.5  # half of every value for image 1
    np.testing.assert_allclose(relative_errors(maps, reference), [4 / 3, 0.5], rtol=1e-15)


def test_first_reaching_takes_the_smallest_m_within_the_target():
    errors = {4: 0.5, 8: 0.009, 16: 0.02, 32: 0.004}
    assert first_reaching([4, 8, 16, 32], errors, 0.01) == 8
    assert first_reaching([4, 16], errors, 0.01) is None


def test_tables_show_every_rule_and_the_missing_entries(capsys):
    auto = {
        "mean_evaluations": 40.0,
        "max_evaluations": 64,
        "converged": 0.5,
        "mean_error": 0.004,
        "max_error": 0.02,
        "seconds_per_image": 0.1,
    }
    rule = {
        "mean_error": {"4": 0.2, "8": 0.009},
        "evaluations_for_mean_error_1pct": 8,
        "evaluations_for_max_error_1pct": None,
        "seconds_per_image_at_mean_error_1pct": 0.05,
        "auto": auto,
        "auto_one_agreement": auto,
    }
    without_auto = {key: value for key, value in rule.items() if not key.startswith("auto")}
    report = {
        "grid": [4, 8],
        "reference_steps": 16,
        "tolerance": 0.01,
        "methods": {"pgig": {"rules": {"riemann_right": rule, "gausslegendre": rule, "riemann_left": without_auto}}},
        "overhead": {"auto_seconds": 1.1, "fixed_seconds": 1.0, "steps": 8, "images": 2, "ratio": 1.1},
    }
    print_tables(report)
    out = capsys.readouterr().out
    assert "| riemann_right | 20.00% | 0.90% |" in out and "| gausslegendre | 20.00% | 0.90% |" in out
    assert "| riemann_right | 8 | > 8 | 0.050 | 40 (64) | 0.40% (2.00%) | 50% | 0.100 |" in out
    assert "| riemann_left | 8 | > 8 | 0.050 | | | | |" in out  # steps="auto" not run with this rule
    assert "ratio 1.100" in out


def test_auto_rules_must_be_among_the_rules(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--rules", "riemann_right", "--auto-rules", "riemann_right,gausslegendre"])
    assert exit_info.value.code == 2
    assert "--auto-rules ['gausslegendre'] are not in --rules ['riemann_right']" in capsys.readouterr().err
