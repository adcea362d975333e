"""Localisation scores: hand-computed maps, the ground-truth control, and random maps at the mask's area fraction."""

import numpy as np
import pytest

from pgig_tf.evaluation.localization import (
    distractor_mass,
    localization_scores,
    positive_mass_share,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

MASK = np.zeros((3, 3), dtype=bool)
MASK[0, 0] = MASK[1, 1] = True


def test_mass_accuracy_by_hand():
    attribution = np.array([[3.0, 1.0, -5.0], [0.0, 2.0, 0.0], [4.0, 0.0, -1.0]])
    # positive mass 3 + 1 + 2 + 4 = 10, of which 3 + 2 on the mask
    assert relevance_mass_accuracy(attribution, MASK) == pytest.approx(0.5)


def test_channels_are_summed_before_the_positive_part():
    attribution = np.zeros((3, 3, 2))
    attribution[0, 0] = [2.0, -1.0]  # sums to 1: on the mask
    attribution[2, 2] = [-4.0, 1.0]  # sums to -3: not counted
    attribution[0, 2] = [1.0, 2.0]  # sums to 3: off the mask
    assert relevance_mass_accuracy(attribution, MASK) == pytest.approx(1.0 / 4.0)


def test_no_positive_attribution_scores_zero():
    assert relevance_mass_accuracy(-np.ones((3, 3)), MASK) == 0.0
    assert relevance_mass_accuracy(np.zeros((3, 3)), MASK) == 0.0
    assert distractor_mass(np.zeros((3, 3)), MASK) == 0.0


def test_rank_accuracy_by_hand():
    attribution = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    # K = 2; the two highest are (0, 0) = 5 (on the mask) and (2, 0) = 4 (off)
    assert relevance_rank_accuracy(attribution, MASK) == pytest.approx(0.5)
    attribution[2, 0] = 1.5  # now the top two are 5 and 2, both on the mask
    assert relevance_rank_accuracy(attribution, MASK) == pytest.approx(1.0)


def test_rank_accuracy_shares_ties():
    attribution = np.array([[5.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # (0, 0) is in; one place is left for four pixels tied at 1, one of them (1, 1) on the mask
    assert relevance_rank_accuracy(attribution, MASK) == pytest.approx((1.0 + 1.0 / 4.0) / 2.0)
    assert relevance_rank_accuracy(np.full((3, 3), 7.0), MASK) == pytest.approx(2.0 / 9.0)  # the area fraction


def test_distractor_mass_by_hand():
    attribution = np.array([[3.0, 1.0, -5.0], [0.0, 2.0, 0.0], [4.0, 0.0, -1.0]])
    distractor = np.zeros((3, 3), dtype=bool)
    distractor[2, :] = True
    assert distractor_mass(attribution, distractor) == pytest.approx(0.4)
    assert positive_mass_share(attribution, distractor) == distractor_mass(attribution, distractor)


def test_ground_truth_control_scores_exactly_one():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((32, 32)) < rng.uniform(0.01, 0.3)
        mask[rng.integers(32), rng.integers(32)] = True
        assert relevance_mass_accuracy(mask.astype(float), mask) == 1.0
        assert relevance_rank_accuracy(mask.astype(float)[..., None], mask) == 1.0


def test_uniform_random_maps_score_the_area_fraction():
    """Over 4000 maps the mean is within 5 standard errors of k/N (a wrong score misses it by far more)."""
    rng = np.random.default_rng(1)
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:14, 6:16] = True  # k = 100 of N = 1024
    fraction = mask.mean()
    maps = rng.random((4000, 32, 32))
    masks = np.broadcast_to(mask, maps.shape)
    scores = localization_scores(maps, masks, ~masks)
    for key in ("mass_accuracy", "rank_accuracy"):
        values = scores[key]
        bound = 5 * values.std(ddof=1) / np.sqrt(len(values))
        assert bound < 0.003
        assert abs(values.mean() - fraction) < bound, key
    assert abs(scores["distractor_mass"].mean() - (1 - fraction)) < 0.002
    np.testing.assert_allclose(scores["mass_accuracy"] + scores["distractor_mass"], 1.0)  # complementary masks


def test_errors():
    with pytest.raises(TypeError):
        relevance_mass_accuracy(np.ones((3, 3)), MASK.astype(int))
    with pytest.raises(ValueError):
        relevance_mass_accuracy(np.ones((3, 4)), MASK)
    with pytest.raises(ValueError):
        relevance_rank_accuracy(np.ones((3, 3)), np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError):
        relevance_mass_accuracy(np.full((3, 3), np.nan), MASK)
    with pytest.raises(ValueError):
        localization_scores(np.ones((2, 3, 3)), [MASK], [MASK, MASK])
