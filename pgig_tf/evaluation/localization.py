"""Ground-truth localisation scores of one attribution map (Arras et al., 2022, CLEVR-XAI): mass and rank accuracy."""

import numpy as np


def _relevance(attribution, mask):
    """The channel-summed map (H, W) as float64 and the mask as bool, checked against each other."""
    relevance = np.asarray(attribution, dtype=np.float64)
    mask = np.asarray(mask)
    if relevance.ndim == 3:
        relevance = relevance.sum(axis=-1)
    if relevance.ndim != 2:
        raise ValueError(f"attribution must be (H, W) or (H, W, C), got shape {np.shape(attribution)}")
    if mask.dtype != bool:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != relevance.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the map's {relevance.shape}")
    if not np.all(np.isfinite(relevance)):
        raise ValueError("attribution contains NaN or Inf")
    return relevance, mask


def positive_mass_share(attribution, mask):
    """Share of the positive attribution that lies on `mask`: sum(R+ on mask) / sum(R+).

    R is the map summed over its channels (per pixel) and R+ = max(R, 0). A map with no
    positive value puts no relevance anywhere, so it scores 0 (it never localises).

    Args:
        attribution: (H, W) or (H, W, C) real array.
        mask: (H, W) bool array.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError, TypeError: for mismatched shapes, a non-boolean mask or non-finite values.
    """
    relevance, mask = _relevance(attribution, mask)
    positive = np.maximum(relevance, 0.0)
    total = positive.sum()
    if total <= 0.0:
        return 0.0
    return float(positive[mask].sum() / total)


def relevance_mass_accuracy(attribution, signal_mask):
    """Relevance mass accuracy (Arras et al., 2022, Eq. 1, on positive relevance): `positive_mass_share` on the signal."""
    return positive_mass_share(attribution, signal_mask)


def distractor_mass(attribution, distractor_mask):
    """Share of the positive attribution on the distractor's pixels (`positive_mass_share`); lower is better.

    Where the two masks overlap a pixel counts for both, so mass accuracy plus distractor mass
    can exceed 1.
    """
    return positive_mass_share(attribution, distractor_mask)


def relevance_rank_accuracy(attribution, signal_mask):
    """Relevance rank accuracy (Arras et al., 2022, Eq. 2): share of the K highest pixels of R on the mask, K = |mask|.

    R is the channel-summed signed map. Pixels tied with the K-th highest value share the
    remaining places equally (the expected score over a random order of the tied pixels), so
    the score does not depend on how pixels are numbered: a constant map scores the mask's
    area fraction.

    Args:
        attribution: (H, W) or (H, W, C) real array.
        signal_mask: (H, W) bool array with at least one True pixel.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError, TypeError: as `positive_mass_share`, or an empty mask.
    """
    relevance, mask = _relevance(attribution, signal_mask)
    k = int(mask.sum())
    if k == 0:
        raise ValueError("signal_mask is empty: rank accuracy needs at least one signal pixel")
    values = relevance.ravel()
    threshold = np.partition(values, values.size - k)[values.size - k]  # the K-th highest value
    above = values > threshold
    tied = values == threshold
    flat_mask = mask.ravel()
    remaining = k - int(above.sum())  # places left for the tied pixels (>= 1)
    hits = float(np.sum(above & flat_mask)) + remaining * float(np.sum(tied & flat_mask)) / float(np.sum(tied))
    return hits / k


def localization_scores(maps, signal_masks, distractor_masks):
    """Per-image scores of a batch of maps: {'mass_accuracy', 'rank_accuracy', 'distractor_mass'} -> (n,) arrays.

    Args:
        maps: (n, H, W) or (n, H, W, C) attributions.
        signal_masks: (n, H, W) bool, the signal's pixels.
        distractor_masks: (n, H, W) bool, the distractor's pixels.

    Returns:
        A dict of three float64 arrays of length n.

    Raises:
        ValueError: for batches of different lengths (and as the per-image scores).
    """
    maps = np.asarray(maps)
    if not (len(maps) == len(signal_masks) == len(distractor_masks)):
        raise ValueError(
            f"maps and masks must have the same number of images, got {len(maps)}, "
            f"{len(signal_masks)} and {len(distractor_masks)}"
        )
    scores = {"mass_accuracy": [], "rank_accuracy": [], "distractor_mass": []}
    for attribution, signal, distractor in zip(maps, signal_masks, distractor_masks):
        scores["mass_accuracy"].append(relevance_mass_accuracy(attribution, signal))
        scores["rank_accuracy"].append(relevance_rank_accuracy(attribution, signal))
        scores["distractor_mass"].append(distractor_mass(attribution, distractor))
    return {key: np.asarray(values, dtype=np.float64) for key, values in scores.items()}
