"""ROAD noisy linear imputation against a dense solve, hand-computed pixels, kept pixels, noise streams and errors."""

import numpy as np
import pytest

from pgig_tf.evaluation import imputation
from pgig_tf.evaluation.imputation import noisy_linear_impute


def dense_reference(image, removed):
    """The same equations built pixel by pixel with explicit loops, solved densely (numpy.linalg.solve)."""
    height, width, channels = image.shape
    unknowns = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    index = {pixel: i for i, pixel in enumerate(unknowns)}
    a = np.eye(len(unknowns))
    b = np.zeros((len(unknowns), channels))
    for i, (r, c) in enumerate(unknowns):
        neighbours = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) == (0, 0) or not (0 <= r + dr < height and 0 <= c + dc < width):
                    continue
                neighbours.append(((r + dr, c + dc), 1 / 6 if abs(dr) + abs(dc) == 1 else 1 / 12))
        total = sum(w for _, w in neighbours)
        for pixel, w in neighbours:
            if pixel in index:
                a[i, index[pixel]] -= w / total
            else:
                b[i] += w / total * image[pixel]
    solution = np.linalg.solve(a, b)
    out = image.astype(np.float64).copy()
    for i, pixel in enumerate(unknowns):
        out[pixel] = solution[i]
    return out


@pytest.mark.parametrize("solver", ["banded", "sparse"])
@pytest.mark.parametrize(
    "seed, shape, fraction",
    [(0, (5, 6, 2), 0.3), (1, (7, 4, 3), 0.6), (2, (6, 6, 1), 0.9), (3, (1, 8, 2), 0.5), (4, (8, 1, 1), 0.5)],
)
def test_matches_a_dense_solve_of_the_same_equations(seed, shape, fraction, solver):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (3,) + shape)
    removed = rng.random((3,) + shape[:2]) < fraction
    removed[:, 0, 0] = False  # at least one kept pixel per image
    removed[:, -1, -1] = True  # and at least one removed
    ours = noisy_linear_impute(images, removed, noise=0.0, solver=solver)
    for b in range(3):
        np.testing.assert_allclose(ours[b], dense_reference(images[b], removed[b]), rtol=1e-10, atol=1e-12)
    # The imputed values are not trivially the known ones: they moved.
    assert np.abs(ours[removed] - images[removed]).min() > 0


def test_banded_and_sparse_solvers_agree_and_the_default_picks_by_size(monkeypatch):
    rng = np.random.default_rng(9)
    # Wider than high (the banded solver numbers the unknowns column by column), higher than
    # wide, square; removed pixels in patches (one group) and scattered (many groups).
    for shape in ((12, 30, 3), (30, 12, 1), (16, 16, 2)):
        images = rng.normal(0, 1, (4,) + shape)
        removed = rng.random((4,) + shape[:2]) < np.array([0.1, 0.5, 0.9, 0.0])[:, None, None]
        removed[:3:2, 3:9, 4:10] = True  # images 0 and 2: a block as well
        removed[:, 0, 0] = False
        banded = noisy_linear_impute(images, removed, noise=0.0, solver="banded")
        sparse = noisy_linear_impute(images, removed, noise=0.0, solver="sparse")
        np.testing.assert_allclose(banded, sparse, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(banded[3], images[3])  # nothing removed
        # each image is solved on its own: alone it gets the same values, bit for bit
        for b in range(4):
            alone = noisy_linear_impute(images[b : b + 1], removed[b : b + 1], noise=0.0, solver="banded")
            np.testing.assert_array_equal(alone[0], banded[b])
    calls = []
    monkeypatch.setattr(imputation, "solve_banded", lambda *a: calls.append("banded") or [None] * len(a[0]))
    small = np.zeros((1, 4, imputation.BANDED_MAX_SIDE + 1, 1))
    noisy_linear_impute(small, np.zeros(small.shape[:3], bool))
    large = np.zeros((1, imputation.BANDED_MAX_SIDE + 1, imputation.BANDED_MAX_SIDE + 1, 1))
    noisy_linear_impute(large, np.zeros(large.shape[:3], bool))
    assert calls == ["banded"]  # the shorter side decides
    with pytest.raises(ValueError, match=r"solver must be None or one of \('banded', 'sparse'\), got 'lu'"):
        noisy_linear_impute(small, np.zeros(small.shape[:3], bool), solver="lu")


def test_constant_image_stays_constant():
    images = np.full((2, 6, 7, 3), 0.25)
    images[1] = -4.0
    removed = np.random.default_rng(0).random((2, 6, 7)) < 0.7
    out = noisy_linear_impute(images, removed, noise=0.0)
    np.testing.assert_allclose(out, images, rtol=0, atol=1e-14)


def test_single_interior_pixel_is_its_neighbours_weighted_mean():
    image = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1) ** 2  # 0, 1, 4 / 9, 16, 25 / 36, 49, 64
    removed = np.zeros((1, 3, 3), bool)
    removed[0, 1, 1] = True
    direct = 1 + 9 + 25 + 49  # up, left, right, down
    diagonal = 0 + 4 + 36 + 64
    expected = direct / 6 + diagonal / 12  # 14 + 8.6666...
    out = noisy_linear_impute(image, removed, noise=0.0)
    assert out[0, 1, 1, 0] == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(22.666666666666668)


def test_removed_corner_uses_renormalised_weights():
    image = np.zeros((1, 3, 4, 2))
    image[0, 0, 1] = [3.0, 1.0]  # right of the corner: direct, 1/6
    image[0, 1, 0] = [6.0, -2.0]  # below: direct, 1/6
    image[0, 1, 1] = [12.0, 5.0]  # diagonal: 1/12
    removed = np.zeros((1, 3, 4), bool)
    removed[0, 0, 0] = True
    total = 1 / 6 + 1 / 6 + 1 / 12  # = 5/12
    expected = (np.array([3.0, 1.0]) / 6 + np.array([6.0, -2.0]) / 6 + np.array([12.0, 5.0]) / 12) / total
    np.testing.assert_allclose(expected, [(3 * 2 + 6 * 2 + 12) / 5, (1 * 2 - 2 * 2 + 5) / 5])  # = [6.0, 0.6]
    out = noisy_linear_impute(image, removed, noise=0.0)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-14)


def test_two_adjacent_removed_pixels_are_solved_jointly():
    # A 1x4 row [a, ?, ?, d]: x1 = (a + x2)/2, x2 = (x1 + d)/2 (only direct neighbours exist) -> linear interpolation.
    image = np.array([2.0, 0.0, 0.0, 11.0]).reshape(1, 1, 4, 1)
    removed = np.array([[[False, True, True, False]]])
    out = noisy_linear_impute(image, removed, noise=0.0)
    np.testing.assert_allclose(out[0, 0, :, 0], [2.0, 5.0, 8.0, 11.0], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kept_pixels_are_untouched_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    images = (rng.normal(0, 1, (4, 9, 8, 3)) * 1e3).astype(dtype) + dtype(1e-7)
    removed = rng.random((4, 9, 8)) < 0.5
    out = noisy_linear_impute(images, removed, noise=0.3, seed=5)
    assert out.dtype == dtype and out.shape == images.shape
    kept = ~removed
    np.testing.assert_array_equal(out[kept].view(np.uint8), images[kept].view(np.uint8))
    assert np.all(out[removed] != images[removed])


def test_no_removed_pixel_returns_a_copy():
    images = np.random.default_rng(0).normal(0, 1, (2, 4, 4, 1)).astype(np.float32)
    out = noisy_linear_impute(images, np.zeros((2, 4, 4), bool), noise=1.0)
    np.testing.assert_array_equal(out, images)
    assert out is not images


def test_seeds_and_batching():
    rng = np.random.default_rng(4)
    images = rng.normal(0, 1, (5, 6, 6, 2))
    removed = rng.random((5, 6, 6)) < 0.5
    removed[:, 0, 0] = False
    a = noisy_linear_impute(images, removed, noise=0.1, seed=7)
    np.testing.assert_array_equal(a, noisy_linear_impute(images, removed, noise=0.1, seed=7))
    other = noisy_linear_impute(images, removed, noise=0.1, seed=8)
    assert np.all(a[removed] != other[removed])
    # Split into batches, the images keep their noise when given their global indices.
    first = noisy_linear_impute(images[:2], removed[:2], noise=0.1, seed=7)
    second = noisy_linear_impute(images[2:], removed[2:], noise=0.1, seed=7, ids=np.arange(2, 5))
    np.testing.assert_array_equal(np.concatenate([first, second]), a)
    # The noise is the only difference from the exact solution, and different images get different noise.
    exact = noisy_linear_impute(images, removed, noise=0.0)
    residual = a - exact
    assert np.all(residual[~removed] == 0)
    assert not np.allclose(residual[0][removed[0]][:5], residual[1][removed[1]][:5])


def test_noise_standard_deviation():
    # 2 images x 4000 removed pixels x 3 channels = 24000 draws. The sample std of m normal draws has
    # a standard error of sigma / sqrt(2m) = 0.46% of sigma: +-3% is more than 6 standard errors
    # (chance of failing a correct implementation < 1e-9), while a std off by 10% fails.
    sigma = 0.05
    rng = np.random.default_rng(6)
    images = rng.random((2, 80, 80, 3))
    removed = np.zeros((2, 80, 80), bool)
    removed[:, :, 10:60] = True  # 80 x 50 = 4000 pixels per image
    residual = noisy_linear_impute(images, removed, noise=sigma, seed=1) - noisy_linear_impute(images, removed, 0.0)
    draws = residual[removed]
    assert draws.size == 24000
    assert abs(draws.std() / sigma - 1) < 0.03
    assert abs(draws.mean()) < 4 * sigma / np.sqrt(draws.size)


def test_every_pixel_removed_is_an_error():
    images = np.zeros((3, 4, 4, 1))
    removed = np.zeros((3, 4, 4), bool)
    removed[1] = True
    with pytest.raises(ValueError, match=r"removed marks every pixel of images \[1\]"):
        noisy_linear_impute(images, removed)


def test_argument_errors():
    images = np.zeros((2, 4, 4, 1))
    removed = np.zeros((2, 4, 4), bool)
    with pytest.raises(TypeError, match="images must be a float array .* got dtype int64"):
        noisy_linear_impute(np.zeros((2, 4, 4, 1), np.int64), removed)
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, C\), got shape \(4, 4, 1\)"):
        noisy_linear_impute(images[0], removed)
    with pytest.raises(ValueError, match="images contains NaN or Inf"):
        noisy_linear_impute(np.full((2, 4, 4, 1), np.nan), removed)
    with pytest.raises(TypeError, match="removed must be a bool array .* got dtype float64"):
        noisy_linear_impute(images, removed.astype(float))
    with pytest.raises(ValueError, match=r"removed must have shape \(2, 4, 4\) .* got \(2, 4, 3\)"):
        noisy_linear_impute(images, removed[:, :, :3])
    with pytest.raises(ValueError, match="noise must be a finite number >= 0 .* got -0.1"):
        noisy_linear_impute(images, removed, noise=-0.1)
    with pytest.raises(TypeError, match="noise must be a real number >= 0 .* got 'big'"):
        noisy_linear_impute(images, removed, noise="big")
    with pytest.raises(TypeError, match="seed must be a non-negative int, got float 1.5"):
        noisy_linear_impute(images, removed, seed=1.5)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        noisy_linear_impute(images, removed, seed=-1)
    with pytest.raises(ValueError, match=r"ids must have shape \(2,\) or \(2, m\), got \(3,\)"):
        noisy_linear_impute(images, removed, ids=[0, 1, 2])
