"""Quadrature rules on [0, 1] for path methods: nodes alpha_k and weights w_k, and their nested refinements.

A path method with m = `steps` points integrates a gradient along x̄ + alpha (x − x̄), alpha in
[0, 1], as Σ_k w_k g(alpha_k). The rules, as Captum's `method=` defines them:

- "riemann_right" (the PGIG paper's Eq. 1 and 4): alpha_k = k/m, w_k = 1/m, k = 1..m;
- "riemann_left": alpha_k = (k − 1)/m, w_k = 1/m;
- "riemann_middle": alpha_k = (k − 1/2)/m, w_k = 1/m;
- "riemann_trapezoid": alpha_k = (k − 1)/(m − 1), w_k = 1/(2(m − 1)) for k = 1 and k = m,
  1/(m − 1) otherwise (m >= 2);
- "gausslegendre": the m-point Gauss–Legendre rule (nodes xi_k, weights omega_k on [−1, 1]),
  mapped to [0, 1]: alpha_k = (1 + xi_k)/2, w_k = omega_k/2. It integrates polynomials of
  degree <= 2m − 1 exactly.

Refinement (`refinement_levels`, for steps="auto"): a rule at m points followed by the same rule
at r·m points. The right, left and trapezoid rules double (r = 2; the trapezoid doubles its
m − 1 intervals) and the middle rule triples (r = 3): every node of a level is a node of the
next, so the next level's sum is S_next = S / r + Σ_new w_k g(alpha_k) over its new nodes only.
Gauss–Legendre's nodes do not nest: each level (m doubling) evaluates all its nodes.
"""

import functools
from typing import NamedTuple

import numpy as np

RIEMANN_RIGHT = "riemann_right"
RIEMANN_LEFT = "riemann_left"
RIEMANN_MIDDLE = "riemann_middle"
RIEMANN_TRAPEZOID = "riemann_trapezoid"
GAUSS_LEGENDRE = "gausslegendre"
METHODS = (RIEMANN_RIGHT, RIEMANN_LEFT, RIEMANN_MIDDLE, RIEMANN_TRAPEZOID, GAUSS_LEGENDRE)
DEFAULT_METHOD = RIEMANN_RIGHT

# steps="auto": the first level's points and the factor by which each level multiplies them
# (for the trapezoid: its intervals, m - 1); Gauss-Legendre re-evaluates every level.
AUTO_START = {RIEMANN_RIGHT: 4, RIEMANN_LEFT: 4, RIEMANN_MIDDLE: 3, RIEMANN_TRAPEZOID: 5, GAUSS_LEGENDRE: 4}
REFINEMENT_FACTOR = {RIEMANN_RIGHT: 2, RIEMANN_LEFT: 2, RIEMANN_MIDDLE: 3, RIEMANN_TRAPEZOID: 2, GAUSS_LEGENDRE: 2}
NESTED = (RIEMANN_RIGHT, RIEMANN_LEFT, RIEMANN_MIDDLE, RIEMANN_TRAPEZOID)
# steps="auto" stops after this many successive refinements that each changed the map by at most
# the tolerance: along a ReLU network's path the gradient is a step function, and two levels can
# agree by chance while both are several times the tolerance away from the integral.
AUTO_AGREEMENTS = 2


def check_method(method: str) -> str:
    """`method` if it names a rule of `METHODS`.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def check_steps(method: str, steps: int) -> int:
    """`steps` if the rule `method` can use that many points.

    Raises:
        ValueError: the trapezoid rule with fewer than 2 points (its nodes (k − 1)/(m − 1) need m >= 2).
    """
    if method == RIEMANN_TRAPEZOID and steps < 2:
        raise ValueError(f"method {RIEMANN_TRAPEZOID!r} needs steps >= 2 (its nodes are (k-1)/(steps-1)), got {steps}")
    return steps


def nodes_and_weights(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule's m = `steps` nodes alpha_k in [0, 1] (ascending) and weights w_k, in float64.

    Args:
        method: a name in `METHODS`.
        steps: m, the number of points.

    Returns:
        (alphas, weights), two float64 arrays of length m; the weights sum to 1.

    Raises:
        ValueError: an unknown method, or a number of points the rule cannot use.
    """
    alphas, weights = _nodes_and_weights(check_method(method), check_steps(method, int(steps)))
    return alphas.copy(), weights.copy()


@functools.lru_cache(maxsize=64)
def _nodes_and_weights(method, m):
    """`nodes_and_weights`, computed once per (method, m): leggauss costs O(m³) (0.2 s at m = 1024)."""
    k = np.arange(1, m + 1, dtype=np.float64)
    uniform = np.full(m, 1.0 / m)
    if method == RIEMANN_RIGHT:
        return k / m, uniform
    if method == RIEMANN_LEFT:
        return (k - 1) / m, uniform
    if method == RIEMANN_MIDDLE:
        return (k - 0.5) / m, uniform
    if method == RIEMANN_TRAPEZOID:
        weights = np.full(m, 1.0 / (m - 1))
        weights[[0, -1]] = 0.5 / (m - 1)
        return (k - 1) / (m - 1), weights
    xi, omega = np.polynomial.legendre.leggauss(m)
    return (1.0 + xi) / 2.0, omega / 2.0


def _grid_numerators(method, steps):
    """Integer numerators of the rule's nodes over a common denominator (m, 2m for the middle rule, m - 1 for the
    trapezoid; the nested rules only)."""
    k = np.arange(1, int(steps) + 1)
    if method == RIEMANN_RIGHT:
        return k
    if method == RIEMANN_MIDDLE:
        return 2 * k - 1
    return k - 1  # left and trapezoid


class Level(NamedTuple):
    """One refinement level: the rule at `steps` points, from the previous level's sum S as
    carry · S + Σ weights · g(alphas) over the nodes not evaluated before (`alphas`)."""

    steps: int
    alphas: np.ndarray
    weights: np.ndarray
    carry: float


def level_steps(method: str, max_steps: int) -> list[int]:
    """The points of each steps="auto" level of `method`: `AUTO_START[method]`, multiplied by the rule's
    refinement factor while at most `max_steps`.

    Raises:
        ValueError: an unknown method, or `max_steps` below the `AUTO_AGREEMENTS` + 1 levels the
            stopping test needs.
    """
    factor = REFINEMENT_FACTOR[check_method(method)]

    def refined(steps):
        return (steps - 1) * factor + 1 if method == RIEMANN_TRAPEZOID else steps * factor

    counts = [AUTO_START[method]]
    while refined(counts[-1]) <= max_steps:
        counts.append(refined(counts[-1]))
    if len(counts) < AUTO_AGREEMENTS + 1:
        needed = counts[0]
        for _ in range(AUTO_AGREEMENTS):
            needed = refined(needed)
        raise ValueError(
            f"steps='auto' with method {method!r} compares at least {AUTO_AGREEMENTS + 1} levels (from "
            f"{counts[0]} points, x{factor}{' intervals' if method == RIEMANN_TRAPEZOID else ''}): max_steps must "
            f"be at least {needed}, got {max_steps}"
        )
    return counts


def refinement_levels(method: str, max_steps: int) -> list[Level]:
    """The levels of steps="auto" for `method` (their points: `level_steps`).

    Args:
        method: a name in `METHODS`.
        max_steps: the most points of a level.

    Returns:
        At least `AUTO_AGREEMENTS` + 1 `Level`s; the nested rules list only each level's new nodes.

    Raises:
        ValueError: an unknown method, or `max_steps` below the second level's points.
    """
    factor = REFINEMENT_FACTOR[check_method(method)]
    levels = []
    for index, steps in enumerate(level_steps(method, max_steps)):
        alphas, weights = nodes_and_weights(method, steps)
        if index == 0 or method not in NESTED:
            levels.append(Level(steps, alphas, weights, 0.0))
            continue
        numerators = _grid_numerators(method, steps)
        new = numerators % factor != 0  # the nodes of the previous level are the multiples of the factor
        levels.append(Level(steps, alphas[new], weights[new], 1.0 / factor))
    return levels
