"""The bfloat16 study's map agreement: Spearman ρ, top-10% overlap and relative L2 on hand-made maps."""

import numpy as np
import pytest

from benchmarks.bfloat16_study import agreement


def test_identical_reversed_and_perturbed_maps():
    base = np.arange(40, dtype=np.float32).reshape(1, 5, 8, 1)  # 40 pixels: the top 10% are 4 pixels
    rho, overlap, l2 = agreement(base, base.copy())
    assert rho.tolist() == [1.0] and overlap.tolist() == [1.0] and l2.tolist() == [0.0]
    rho, overlap, _ = agreement(base, -base)  # the order reversed: no top pixel in common
    assert rho[0] == pytest.approx(-1.0) and overlap.tolist() == [0.0]
    swapped = base.copy().reshape(-1)
    swapped[[39, 0]] = swapped[[0, 39]]  # the top pixel becomes the lowest: 3 of the 4 top pixels stay
    rho, overlap, l2 = agreement(base, swapped.reshape(base.shape))
    assert overlap.tolist() == [0.75]
    d = np.zeros(40)
    d[0], d[39] = 39, -39
    ranks = np.arange(40)  # Spearman ρ = 1 - 6 Σd² / (n(n² - 1)) for distinct ranks
    assert rho[0] == pytest.approx(1 - 6 * (2 * 39**2) / (40 * (40**2 - 1)))
    assert l2[0] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(ranks))


def test_channels_are_summed_before_comparing():
    a = np.random.default_rng(0).normal(size=(3, 4, 4, 3))
    b = a.copy()
    b[..., 0], b[..., 1] = a[..., 1], a[..., 0]  # channels swapped: the same channel sums
    rho, overlap, l2 = agreement(a, b)
    assert np.allclose(rho, 1.0) and overlap.tolist() == [1.0, 1.0, 1.0] and np.allclose(l2, 0.0)
