"""ROAD's noisy linear imputation (Rong et al., ICML 2022): removed pixels solved from their neighbours, plus noise."""

import numbers

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from pgig_tf.validation import check_nonnegative_seed

# The 8 neighbours of a pixel as (row offset, column offset, weight): 1/6 for each direct
# neighbour, 1/12 for each diagonal one (4/6 + 4/12 = 1 inside the image).
NEIGHBOURS = tuple(
    (dr, dc, 1.0 / 6.0 if dr == 0 or dc == 0 else 1.0 / 12.0)
    for dr in (-1, 0, 1)
    for dc in (-1, 0, 1)
    if (dr, dc) != (0, 0)
)


def noisy_linear_impute(images, removed, noise=0.01, seed=0, ids=None):
    """Replaces the removed pixels of each image by ROAD's noisy linear imputation.

    Every removed pixel i is set to the weighted mean of its 8 neighbours j,
    x_i = sum_j w_ij x_j, with w = 1/6 for direct and 1/12 for diagonal neighbours; neighbours
    outside the image are dropped and the remaining weights renormalised to sum to 1. The
    equations of all removed pixels of an image are solved jointly (one sparse factorisation per
    image, the channels as right-hand-side columns), with the kept pixels as known values. Then
    Gaussian noise of standard deviation `noise` (absolute, in the images' units) is added to the
    removed pixels only. Kept pixels are returned bit for bit.

    Args:
        images: float array (B, H, W, C).
        removed: bool array (B, H, W), True where a pixel is removed.
        noise: standard deviation of the added noise, >= 0; 0 returns the exact solution.
        seed: non-negative int. Image b draws its noise from `numpy.random.default_rng([seed, *ids[b]])`.
        ids: non-negative ints per image, shape (B,) or (B, m), mixed with `seed` into each image's
            noise stream; default the image's position 0..B-1. Pass the images' global indices
            to make the result independent of how images are split into batches.

    Returns:
        Array like `images` (same shape and dtype) with the removed pixels imputed.

    Raises:
        TypeError: `images` is not a float array, `removed` not bool, `noise`/`seed` of the wrong type.
        ValueError: wrong shapes, non-finite values, negative `noise` or `seed`, or an image with
            every pixel removed (it has no known pixel to interpolate from).
    """
    images = _check_images(images)
    removed = _check_removed(removed, images.shape)
    noise = _check_noise(noise)
    seed = check_nonnegative_seed(seed)
    ids = _check_ids(ids, len(images))
    everything = removed.reshape(len(removed), -1).all(axis=1)
    if everything.any():
        raise ValueError(
            f"removed marks every pixel of images {np.flatnonzero(everything)[:10].tolist()}; noisy linear "
            "imputation needs at least one kept pixel per image"
        )
    out = images.copy()
    normaliser = neighbour_weight_sums(*images.shape[1:3])
    for b in range(len(images)):
        if not removed[b].any():
            continue
        values = solve_removed(images[b], removed[b], normaliser)
        if noise > 0:
            values += noise_generator(seed, ids[b]).normal(0.0, noise, values.shape)
        out[b][removed[b]] = values.astype(out.dtype)
    return out


def noise_generator(seed, key):
    """The numpy Generator of one image's noise: seeded by `seed` followed by the ints of `key`."""
    return np.random.default_rng([int(seed), *(int(k) for k in np.atleast_1d(key))])


def neighbour_weight_sums(height, width):
    """(H, W): the sum of the base weights of each pixel's in-image neighbours (1 inside, less at borders)."""
    total = np.zeros((height, width))
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for dr, dc, weight in NEIGHBOURS:
        inside = (rows + dr >= 0) & (rows + dr < height) & (cols + dc >= 0) & (cols + dc < width)
        total += weight * inside
    return total


def solve_removed(image, removed, normaliser=None):
    """(R, C) float64: the exact (noise-free) values of the R removed pixels of one image, row-major.

    Solves (I - W_rr) x_r = W_rk x_k, where W holds the renormalised neighbour weights, r the
    removed and k the kept pixels. `normaliser` is `neighbour_weight_sums(H, W)` (computed if None).
    """
    height, width, channels = image.shape
    if normaliser is None:
        normaliser = neighbour_weight_sums(height, width)
    flat = image.reshape(-1, channels).astype(np.float64)
    unknown = np.flatnonzero(removed.reshape(-1))
    count = len(unknown)
    position = np.full(height * width, -1)
    position[unknown] = np.arange(count)
    r, c = np.divmod(unknown, width)
    # Row i of the matrix I - W_rr in CSR form: slot 0 the diagonal, slots 1..8 the removed neighbours.
    columns = np.full((count, 1 + len(NEIGHBOURS)), -1)
    entries = np.zeros(columns.shape)
    columns[:, 0], entries[:, 0] = np.arange(count), 1.0
    rhs = np.zeros((count, channels))
    for slot, (dr, dc, weight) in enumerate(NEIGHBOURS, start=1):
        nr, nc = r + dr, c + dc
        i = np.flatnonzero((nr >= 0) & (nr < height) & (nc >= 0) & (nc < width))
        j = nr[i] * width + nc[i]
        w = weight / normaliser[r[i], c[i]]
        k = position[j]
        solved = k >= 0  # a removed neighbour: its weight moves to the left-hand side
        columns[i[solved], slot] = k[solved]
        entries[i[solved], slot] = -w[solved]
        # Each offset reaches every removed pixel at most once, so plain indexing accumulates correctly.
        rhs[i[~solved]] += w[~solved, None] * flat[j[~solved]]
    present = columns >= 0
    indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
    matrix = scipy.sparse.csr_matrix((entries[present], columns[present], indptr), shape=(count, count))
    return np.asarray(scipy.sparse.linalg.spsolve(matrix, rhs)).reshape(count, channels)


def _check_images(images):
    if hasattr(images, "numpy"):
        images = images.numpy()
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"images must be a float array (B, H, W, C), got dtype {array.dtype}")
    if array.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("images contains NaN or Inf")
    return array


def _check_removed(removed, image_shape):
    if hasattr(removed, "numpy"):
        removed = removed.numpy()
    array = np.asarray(removed)
    if array.dtype != bool:
        raise TypeError(f"removed must be a bool array (B, H, W), got dtype {array.dtype}")
    if array.shape != tuple(image_shape[:3]):
        raise ValueError(
            f"removed must have shape {tuple(image_shape[:3])} (images without channels), got {array.shape}"
        )
    return array


def _check_noise(noise):
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a real number >= 0 (an absolute standard deviation), got {noise!r}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (an absolute standard deviation), got {noise!r}")
    return float(noise)


def _check_ids(ids, count):
    if ids is None:
        return np.arange(count)[:, None]
    array = np.asarray(ids)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"ids must be non-negative ints, shape ({count},) or ({count}, m), got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) != count:
        raise ValueError(f"ids must have shape ({count},) or ({count}, m), got {np.shape(ids)}")
    if (array < 0).any():
        raise ValueError(f"ids must be non-negative, got {array.min()}")
    return array
