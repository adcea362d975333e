"""Which attribution method keeps which axiom of Integrated Gradients (Sundararajan et al., 2017): constructed networks, the checks, the report."""

from pgig_tf.evaluation.axioms.bench import AxiomBench
from pgig_tf.evaluation.axioms.checks import (
    CHECKS,
    COMPLETENESS_LADDERS,
    PROPERTIES,
    PROPERTY_TITLES,
    SYMMETRY_LARGE_BUDGETS,
)
from pgig_tf.evaluation.axioms.criteria import (
    APPROX,
    APPROX_TOL,
    EXACT_TOL,
    FAILS,
    HOLDS,
    NONZERO_TOL,
    NOT_APPLICABLE,
    verdict_from_error,
)
from pgig_tf.evaluation.axioms.report import main_table, run_axioms, to_markdown

__all__ = [
    "APPROX",
    "APPROX_TOL",
    "AxiomBench",
    "CHECKS",
    "COMPLETENESS_LADDERS",
    "EXACT_TOL",
    "FAILS",
    "HOLDS",
    "NONZERO_TOL",
    "NOT_APPLICABLE",
    "PROPERTIES",
    "PROPERTY_TITLES",
    "SYMMETRY_LARGE_BUDGETS",
    "main_table",
    "run_axioms",
    "to_markdown",
    "verdict_from_error",
]
