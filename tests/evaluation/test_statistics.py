"""Bootstrap intervals (coverage, pairing, reproducibility), ranks with ties, argument checks."""

import numpy as np
import pytest
from scipy import stats

from pgig_tf.evaluation import statistics
from pgig_tf.evaluation.statistics import (
    bootstrap_ci,
    bootstrap_means,
    independent_difference_ci,
    paired_difference_ci,
    ranks_with_ties,
)


def test_bootstrap_means_resample_rows_with_replacement_in_stream_order():
    values = np.random.default_rng(0).normal(0, 1, 13)
    rng = np.random.default_rng(21)
    expected = [values[rng.integers(0, 13, 13)].mean() for _ in range(50)]
    np.testing.assert_allclose(bootstrap_means(values, resamples=50, seed=21), expected, rtol=1e-14)


def test_blocking_does_not_change_the_resamples(monkeypatch):
    values = np.random.default_rng(1).normal(0, 1, (40, 3))
    whole = bootstrap_means(values, resamples=300, seed=2)
    monkeypatch.setattr(statistics, "_BLOCK_ELEMENTS", 7 * 120)  # blocks of 7 resamples
    np.testing.assert_array_equal(bootstrap_means(values, resamples=300, seed=2), whole)


def test_trailing_axes_are_independent_columns_on_the_same_indices():
    values = np.random.default_rng(2).normal(0, 1, (30, 4))
    mean, low, high = bootstrap_ci(values, seed=3)
    assert mean.shape == low.shape == high.shape == (4,)
    for j in range(4):
        np.testing.assert_allclose((mean[j], low[j], high[j]), bootstrap_ci(values[:, j], seed=3), rtol=1e-13)


def test_coverage_of_a_known_mean_is_nominal():
    # 400 datasets of n=50 draws from N(1.3, 2^2). A correct 95% percentile bootstrap interval of
    # the mean covers 1.3 with probability ~0.94 at n=50 (it uses the plug-in sd and normal
    # quantiles: P(|t_49| < 1.96 * sqrt(49/50)) = 0.942). The accepted band [0.91, 0.99] of the
    # 400 outcomes is checked below to reject (a) an interval too narrow by a factor 2 (coverage
    # ~0.67) and (b) one too wide by a factor 2 (coverage ~0.9997) with overwhelming probability,
    # while a correct interval falls outside it with probability < 1%.
    trials, n, true_mean = 400, 50, 1.3
    correct_p = stats.t.cdf(1.96 * np.sqrt(49 / 50), 49) * 2 - 1
    narrow_p = stats.t.cdf(0.98 * np.sqrt(49 / 50), 49) * 2 - 1
    wide_p = stats.t.cdf(3.92 * np.sqrt(49 / 50), 49) * 2 - 1
    lo_count, hi_count = int(np.ceil(0.91 * trials)), int(np.floor(0.99 * trials))  # 364 .. 396

    def in_band(p):
        return stats.binom.cdf(hi_count, trials, p) - stats.binom.cdf(lo_count - 1, trials, p)

    assert in_band(correct_p) > 0.99
    assert in_band(narrow_p) < 1e-30
    assert in_band(wide_p) < 1e-3

    data_rng = np.random.default_rng(2024)
    covered = covered_if_halved = covered_if_doubled = 0
    for trial in range(trials):
        sample = data_rng.normal(true_mean, 2.0, n)
        mean, low, high = bootstrap_ci(sample, confidence=0.95, resamples=1000, seed=trial)
        covered += low <= true_mean <= high
        covered_if_halved += mean - (mean - low) / 2 <= true_mean <= mean + (high - mean) / 2
        covered_if_doubled += mean - 2 * (mean - low) <= true_mean <= mean + 2 * (high - mean)
    assert lo_count <= covered <= hi_count, covered
    # The band does tell the broken intervals apart on these very data.
    assert covered_if_halved < lo_count and covered_if_doubled > hi_count, (covered_if_halved, covered_if_doubled)


def test_paired_difference_is_narrower_for_positively_correlated_scores():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 1, 100)  # image-to-image variation both methods see
    a = shared + 0.05 + rng.normal(0, 0.1, 100)
    b = shared + rng.normal(0, 0.1, 100)
    assert np.corrcoef(a, b)[0, 1] > 0.95
    mean, low, high = paired_difference_ci(a, b, seed=1)
    unpaired_mean, unpaired_low, unpaired_high = independent_difference_ci(a, b, seed=1)
    assert mean == pytest.approx(unpaired_mean, rel=1e-12) == pytest.approx(np.mean(a - b))
    assert (high - low) < 0.25 * (unpaired_high - unpaired_low)
    assert low > 0 > unpaired_low  # only the paired interval resolves the +0.05 difference


def test_paired_resampling_uses_the_same_indices_for_both():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 1, 40), rng.normal(0, 1, 40)
    difference = bootstrap_means(a, 500, seed=9) - bootstrap_means(b, 500, seed=9)
    mean, low, high = paired_difference_ci(a, b, resamples=500, seed=9)
    np.testing.assert_allclose((low, high), np.quantile(difference, [0.025, 0.975]), rtol=1e-12)
    assert mean == pytest.approx(np.mean(a) - np.mean(b), rel=1e-12)


def test_seeds_reproduce():
    values = np.random.default_rng(7).normal(0, 1, 60)
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values, seed=4)[1:] != bootstrap_ci(values, seed=5)[1:]
    assert bootstrap_ci(values, seed=4)[0] == bootstrap_ci(values, seed=5)[0] == pytest.approx(values.mean())


def test_ranks_with_ties():
    means = [0.95, 0.9, 0.84, 0.5]
    intervals = [[0.9, 1.0], [0.85, 0.95], [0.8, 0.88], [0.4, 0.6]]
    ranking = ranks_with_ties(means, intervals)
    # A and B overlap, B and C overlap, A lies clearly above C; everyone lies clearly above D.
    np.testing.assert_array_equal(ranking.ranks, [1, 1, 2, 4])
    np.testing.assert_array_equal(ranking.tied, [True, True, False, False])
    np.testing.assert_array_equal(ranking.order, [0, 1, 2, 3])
    assert ranking.overlaps[1, 2] and ranking.overlaps[2, 1] and not ranking.overlaps[0, 2]
    # Lower is better (e.g. MoRF area): D is best, then C and B tied, A after C.
    lower = ranks_with_ties(means, intervals, higher_is_better=False)
    np.testing.assert_array_equal(lower.ranks, [3, 2, 2, 1])
    np.testing.assert_array_equal(lower.order, [3, 2, 1, 0])
    np.testing.assert_array_equal(lower.tied, [False, True, True, False])


def test_argument_errors():
    with pytest.raises(ValueError, match=r"values needs at least 2 rows .* got shape \(1,\)"):
        bootstrap_ci([1.0])
    with pytest.raises(TypeError, match="values must be a real numeric array .* got dtype <U1"):
        bootstrap_ci(["a", "b"])
    with pytest.raises(ValueError, match="values contains NaN or Inf"):
        bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\), e.g. 0.95, got 95"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="resamples must be a positive integer, got 0"):
        bootstrap_ci([1.0, 2.0], resamples=0)
    with pytest.raises(TypeError, match="seed must be a non-negative int, got str 'x'"):
        bootstrap_ci([1.0, 2.0], seed="x")
    with pytest.raises(ValueError, match=r"a and b must have the same shape .* got \(3,\) and \(2,\)"):
        paired_difference_ci([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"intervals must have shape \(2, 2\)"):
        ranks_with_ties([1.0, 2.0], [[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"intervals must have low <= high, got \[2.0, 1.0\]"):
        ranks_with_ties([1.0, 2.0], [[0.0, 1.0], [2.0, 1.0]])
