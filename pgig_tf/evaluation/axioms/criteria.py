"""The axiom checks' tolerances and verdicts, defined once.

Every check measures one number per (method, property), a relative error in [0, inf)
(except sensitivity (a), which measures the smallest relative attribution and wants it > 0):

* holds: error <= EXACT_TOL. The constructed networks are evaluated in float32; two
  functionally equivalent float32 networks, or one map against a float32 sum of maps, differ by
  ~1e-7 relative, so 1e-4 separates "equal up to round-off" from "different" with a wide margin.
* holds approximately: EXACT_TOL < error <= APPROX_TOL, only where the error can come from a
  discretisation or sampling budget (a Riemann sum with m steps, a Monte Carlo mean of n
  draws): such checks run along a ladder of budgets and judge the largest; the errors by
  budget are reported, so a reader sees whether they shrink. Where the budget plays no role
  (the same noise for both networks, a single backward pass), anything above EXACT_TOL fails.
* fails: error > APPROX_TOL, or > EXACT_TOL where no budget can explain it.
* not applicable: the property does not make sense for the method (a reason is given); the
  measured number is still reported.
"""

EXACT_TOL = 1e-4
APPROX_TOL = 0.05
# Sensitivity (a) asks for a non-zero attribution: |phi_j| / |f(x) - f(baseline)| must exceed this.
NONZERO_TOL = 1e-6

HOLDS, APPROX, FAILS, NOT_APPLICABLE = "holds", "holds approximately", "fails", "not applicable"
VERDICTS = (HOLDS, APPROX, FAILS, NOT_APPLICABLE)


def verdict_from_error(error, approximable=False):
    """holds / holds approximately / fails for a relative error; 'approximately' only if `approximable`."""
    if not error >= 0:  # also catches NaN
        raise ValueError(f"error must be a number >= 0, got {error!r}")
    if error <= EXACT_TOL:
        return HOLDS
    if approximable and error <= APPROX_TOL:
        return APPROX
    return FAILS


def verdict_from_attribution(ratio):
    """Sensitivity (a): holds if the smallest |phi_j| / |Δf| exceeds NONZERO_TOL, else fails."""
    if not ratio >= 0:
        raise ValueError(f"ratio must be a number >= 0, got {ratio!r}")
    return HOLDS if ratio > NONZERO_TOL else FAILS


def worst(verdicts):
    """The weakest of several verdicts (fails < holds approximately < holds)."""
    order = {FAILS: 0, APPROX: 1, HOLDS: 2}
    return min(verdicts, key=order.__getitem__)
