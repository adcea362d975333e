"""The integration rules' nodes and weights, Gauss–Legendre's degree of exactness, and the nested refinement levels."""

import math

import numpy as np
import pytest

import numpy_reference as ref
from pgig_tf.core.integration import (
    AUTO_START,
    METHODS,
    check_method,
    nodes_and_weights,
    refinement_levels,
)


def test_nodes_and_weights_by_hand_at_four_points():
    expected = {
        "riemann_right": ([1 / 4, 2 / 4, 3 / 4, 1], [1 / 4] * 4),
        "riemann_left": ([0, 1 / 4, 2 / 4, 3 / 4], [1 / 4] * 4),
        "riemann_middle": ([1 / 8, 3 / 8, 5 / 8, 7 / 8], [1 / 4] * 4),
        "riemann_trapezoid": ([0, 1 / 3, 2 / 3, 1], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    }
    for method, (alphas, weights) in expected.items():
        got_alphas, got_weights = nodes_and_weights(method, 4)
        np.testing.assert_allclose(got_alphas, alphas, rtol=0, atol=1e-15, err_msg=method)
        np.testing.assert_allclose(got_weights, weights, rtol=0, atol=1e-15, err_msg=method)
    # 2-point Gauss-Legendre: nodes ±1/√3 on [-1, 1], weights 1
    alphas, weights = nodes_and_weights("gausslegendre", 2)
    np.testing.assert_allclose(alphas, [(1 - 1 / math.sqrt(3)) / 2, (1 + 1 / math.sqrt(3)) / 2], rtol=1e-15)
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_rules_equal_the_reference_definitions(method):
    for steps in (2, 3, 7, 50):
        alphas, weights = nodes_and_weights(method, steps)
        ref_alphas, ref_weights = ref.path_rule(method, steps)
        np.testing.assert_allclose(alphas, ref_alphas, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(weights, ref_weights, rtol=1e-14)
        assert math.isclose(weights.sum(), 1.0, rel_tol=1e-14)
        assert np.all(np.diff(alphas) > 0) and alphas[0] >= 0 and alphas[-1] <= 1


def test_gauss_legendre_degree_of_exactness_is_2m_minus_1():
    for m in (1, 2, 3, 5, 8):
        alphas, weights = nodes_and_weights("gausslegendre", m)
        for degree in range(2 * m + 1):
            error = abs(weights @ alphas**degree - 1 / (degree + 1))
            if degree <= 2 * m - 1:
                assert error < 1e-14, (m, degree)
            else:  # x^2m, the first power it misses, by the rule's error term (m!)^4 / ((2m + 1) ((2m)!)^2)
                expected = math.factorial(m) ** 4 / ((2 * m + 1) * math.factorial(2 * m) ** 2)
                assert math.isclose(error, expected, rel_tol=1e-5), (m, degree)


def test_unknown_method_and_too_few_trapezoid_points_raise_clearly():
    with pytest.raises(
        ValueError, match="riemann_right, riemann_left, riemann_middle, riemann_trapezoid, gausslegendre"
    ):
        check_method("simpson")
    with pytest.raises(ValueError, match="needs steps >= 2"):
        nodes_and_weights("riemann_trapezoid", 1)


def integrand(alpha):
    return np.sin(3 * alpha) + np.exp(alpha) * (alpha > 0.37)  # a jump, so that no rule is exact


@pytest.mark.parametrize("method", METHODS)
def test_each_level_reuses_the_previous_sum_and_equals_the_full_rule(method):
    levels = refinement_levels(method, 256)
    factor = 3 if method == "riemann_middle" else 2
    expected_steps = [AUTO_START[method]]
    while len(expected_steps) < len(levels):
        last = expected_steps[-1]
        expected_steps.append((last - 1) * 2 + 1 if method == "riemann_trapezoid" else last * factor)
    assert [level.steps for level in levels] == expected_steps
    assert (
        expected_steps[-1]
        <= 256
        < ((expected_steps[-1] - 1) * 2 + 1 if method == "riemann_trapezoid" else expected_steps[-1] * factor)
    )
    total = 0.0
    evaluated = 0
    for level in levels:
        total = level.carry * total + level.weights @ integrand(level.alphas)
        evaluated += len(level.alphas)
        alphas, weights = nodes_and_weights(method, level.steps)
        assert math.isclose(total, weights @ integrand(alphas), rel_tol=1e-13)
    if method == "gausslegendre":
        assert evaluated == sum(expected_steps)  # nothing to reuse
    else:
        assert evaluated == expected_steps[-1]  # every point evaluated once


def test_max_steps_must_allow_two_levels():
    with pytest.raises(ValueError, match="max_steps must be at least 16"):
        refinement_levels("riemann_right", 15)
    assert [level.steps for level in refinement_levels("riemann_middle", 27)] == [3, 9, 27]
    with pytest.raises(ValueError, match="max_steps must be at least 27"):
        refinement_levels("riemann_middle", 26)
