"""Statistics of per-image scores: percentile bootstrap intervals, paired differences, ranks with ties."""

import numbers
from typing import NamedTuple

import numpy as np

from pgig_tf.validation import check_nonnegative_seed

# Resampled values held at once (resamples x images x trailing size); bounds memory for large n.
_BLOCK_ELEMENTS = 2**22


def bootstrap_means(values, resamples=1000, seed=0):
    """(resamples, ...) means of `values` over its first axis, each over n indices drawn with replacement.

    The indices come from `numpy.random.default_rng(seed)`, drawn in row-major order (in blocks
    that bound memory; blocking does not change the stream), so the same (n, seed, resamples)
    always gives the same resampled indices, whatever the values: scores of several methods on
    the same images, resampled with one seed, are resampled on the same image indices (paired).

    Args:
        values: real array (n, ...), n >= 2: one row per image.
        resamples: number of bootstrap resamples (>= 1).
        seed: non-negative int.

    Returns:
        float64 array (resamples,) + values.shape[1:].

    Raises:
        TypeError, ValueError: for non-numeric or non-finite values, fewer than 2 rows, or bad settings.
    """
    values = _check_values(values, "values")
    resamples = _check_count(resamples, "resamples")
    seed = check_nonnegative_seed(seed)
    n = len(values)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // values.size)
    means = np.empty((resamples,) + values.shape[1:])
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def bootstrap_ci(values, confidence=0.95, resamples=1000, seed=0):
    """(mean, low, high): the mean over the first axis and its percentile bootstrap interval.

    The interval's ends are the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the
    resampled means (`bootstrap_means`). Trailing axes are treated independently.

    Args:
        values: real array (n, ...), n >= 2: one row per image.
        confidence: the interval's nominal coverage, in (0, 1).
        resamples: number of bootstrap resamples (>= 1; 1000 or more for a 95% interval).
        seed: non-negative int; the same seed reproduces the interval exactly.

    Returns:
        Three floats (1-D values) or three arrays of shape values.shape[1:].

    Raises:
        TypeError, ValueError: as `bootstrap_means`, or `confidence` outside (0, 1).
    """
    confidence = _check_confidence(confidence)
    values = _check_values(values, "values")
    means = bootstrap_means(values, resamples, seed)
    return _summary(values.mean(axis=0), means, confidence)


def paired_difference_ci(a, b, confidence=0.95, resamples=1000, seed=0):
    """(mean, low, high) of mean(a - b), resampling the same image indices for `a` and `b`.

    For two methods scored on the same images: the image-to-image variation they share cancels,
    so the interval is narrower than one from independent resamples when a and b are positively
    correlated. Same arguments as `bootstrap_ci`; `a` and `b` must have the same shape.
    """
    a = _check_values(a, "a")
    b = _check_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (paired, one row per image), got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, confidence, resamples, seed)


def independent_difference_ci(a, b, confidence=0.95, resamples=1000, seed=0):
    """(mean, low, high) of mean(a) - mean(b), resampling `a` and `b` independently (seeds `seed`, `seed` + 1).

    For scores of different images (unpaired); `a` and `b` may have different lengths but the
    same trailing shape. Same arguments as `bootstrap_ci`.
    """
    confidence = _check_confidence(confidence)
    a = _check_values(a, "a")
    b = _check_values(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a and b must have the same trailing shape, got {a.shape} and {b.shape}")
    seed = check_nonnegative_seed(seed)
    means = bootstrap_means(a, resamples, seed) - bootstrap_means(b, resamples, seed + 1)
    return _summary(a.mean(axis=0) - b.mean(axis=0), means, confidence)


class Ranking(NamedTuple):
    """Ranks of m methods (1 = best) with the ties their intervals leave.

    ranks: (m,) int; a method's rank is 1 + the number of methods whose interval lies entirely
        on the better side of its own (those that beat it clearly).
    tied: (m,) bool; True where another method has the same rank.
    order: (m,) int; method indices best first (by rank, then by mean).
    overlaps: (m, m) bool; True where the two methods' intervals overlap (diagonal True).
    """

    ranks: np.ndarray
    tied: np.ndarray
    order: np.ndarray
    overlaps: np.ndarray


def ranks_with_ties(means, intervals, higher_is_better=True):
    """Ranks methods by their means, counting only the clear wins (non-overlapping intervals).

    Args:
        means: (m,) the methods' mean scores.
        intervals: (m, 2) their (low, high) intervals, low <= mean <= high not required but low <= high.
        higher_is_better: True for scores such as SRG or insertion area, False for MoRF area or deletion.

    Returns:
        A `Ranking`.

    Raises:
        ValueError: for mismatched shapes, non-finite values or an interval with low > high.
    """
    means = np.asarray(means, dtype=np.float64)
    intervals = np.asarray(intervals, dtype=np.float64)
    if means.ndim != 1 or len(means) == 0:
        raise ValueError(f"means must be a non-empty 1-D array (one per method), got shape {means.shape}")
    if intervals.shape != (len(means), 2):
        raise ValueError(f"intervals must have shape ({len(means)}, 2) (low, high per method), got {intervals.shape}")
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(intervals))):
        raise ValueError("means and intervals must be finite")
    low, high = intervals[:, 0], intervals[:, 1]
    if np.any(low > high):
        raise ValueError(f"intervals must have low <= high, got {intervals[low > high][0].tolist()}")
    if higher_is_better:
        beats = low[:, None] > high[None, :]  # beats[i, j]: i's interval lies above j's
    else:
        beats = high[:, None] < low[None, :]
    ranks = 1 + beats.sum(axis=0)
    same = ranks[:, None] == ranks[None, :]
    tied = same.sum(axis=1) > 1
    order = np.lexsort((-means if higher_is_better else means, ranks))
    overlaps = ~(beats | beats.T)
    return Ranking(ranks.astype(int), tied, order, overlaps)


def _summary(mean, means, confidence):
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    if np.ndim(mean) == 0:
        return float(mean), float(low), float(high)
    return mean, low, high


def _check_values(values, name):
    if hasattr(values, "numpy"):
        values = values.numpy()
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"{name} must be a real numeric array (one row per image), got dtype {array.dtype}")
    if array.ndim == 0 or len(array) < 2:
        raise ValueError(f"{name} needs at least 2 rows (images) along its first axis, got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_confidence(confidence):
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95, got {confidence!r}")
    return float(confidence)
