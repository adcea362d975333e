"""ROAD's noisy linear imputation (Rong et al., ICML 2022): removed pixels solved from their neighbours, plus noise."""

import numbers

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from threadpoolctl import ThreadpoolController

from pgig_tf.validation import check_float_images, check_nonnegative_seed

# The 8 neighbours of a pixel as (row offset, column offset, weight): 1/6 for each direct
# neighbour, 1/12 for each diagonal one (4/6 + 4/12 = 1 inside the image).
NEIGHBOURS = tuple(
    (dr, dc, 1.0 / 6.0 if dr == 0 or dc == 0 else 1.0 / 12.0)
    for dr in (-1, 0, 1)
    for dc in (-1, 0, 1)
    if (dr, dc) != (0, 0)
)
SOLVERS = ("banded", "sparse")
# Images whose shorter side is at most this many pixels are solved as banded systems (`solve_banded`).
# Measured per image on a 2-core CPU (3 channels, 10-90% of 4x4 or 8x8 patches removed), sparse LU
# against banded: 1.9 against 0.4 ms at 32x32, 50 against 18 ms at 128x128, 112 against 67 ms at
# 192x192, 153 against 167 ms at 224x224.
BANDED_MAX_SIDE = 192
# OpenBLAS splits LAPACK's blocked band factorisation of these small systems over threads and
# then spends far longer waiting than computing (1 s instead of 3 ms at n = 4000 with 65 bands
# on a 2-core CPU); the solves run with one BLAS thread.
_BLAS = ThreadpoolController()


def noisy_linear_impute(images, removed, noise=0.01, seed=0, ids=None, solver=None):
    """Replaces the removed pixels of each image by ROAD's noisy linear imputation.

    Every removed pixel i is set to the weighted mean of its 8 neighbours j,
    x_i = sum_j w_ij x_j, with w = 1/6 for direct and 1/12 for diagonal neighbours; neighbours
    outside the image are dropped and the remaining weights renormalised to sum to 1. The
    equations of all removed pixels of an image are solved jointly (one direct factorisation per
    image, see `solver`; the channels as right-hand-side columns), with the kept pixels as known values. Then
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
        solver: how the equations are solved, both exactly (direct factorisations, equal up to
            floating-point rounding): 'banded' (`solve_banded`: a banded Cholesky factorisation,
            assembled for all images at once), 'sparse' (`solve_removed`: a sparse LU per image),
            or None: 'banded' for images whose shorter side is at most `BANDED_MAX_SIDE` pixels.

    Returns:
        Array like `images` (same shape and dtype) with the removed pixels imputed.

    Raises:
        TypeError: `images` is not a float array, `removed` not bool, `noise`/`seed` of the wrong type.
        ValueError: wrong shapes, non-finite values, negative `noise` or `seed`, or an image with
            every pixel removed (it has no known pixel to interpolate from).
    """
    images = check_float_images(images)
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
    if solver is None:
        solver = "banded" if min(images.shape[1:3]) <= BANDED_MAX_SIDE else "sparse"
    elif solver not in SOLVERS:
        raise ValueError(f"solver must be None or one of {SOLVERS}, got {solver!r}")
    out = images.copy()
    if solver == "banded":
        solutions = solve_banded(images, removed)
    else:
        normaliser = neighbour_weight_sums(*images.shape[1:3])
        solutions = [
            solve_removed(image, mask, normaliser) if mask.any() else None for image, mask in zip(images, removed)
        ]
    for b, values in enumerate(solutions):
        if values is None:
            continue
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


def solve_banded(images, removed):
    """The exact (noise-free) values of each image's removed pixels: a list of (R_b, C) float64, None where R_b = 0.

    The same equations as `solve_removed`, with row i multiplied by s_i, the sum of pixel i's
    in-image base weights (`neighbour_weight_sums`): s_i x_i - sum_(j removed) w_ij x_j =
    sum_(j kept) w_ij x_j, w the base weights 1/6 and 1/12. The matrix is then symmetric and
    positive definite (diagonally dominant, strictly in every row with a kept neighbour, and
    every group of connected removed pixels has one unless the whole image is removed), and its
    unknowns, numbered row by row (column by column if the image is wider than high), couple
    only within min(H, W) + 1 places: a banded Cholesky factorisation (LAPACK pbsv) solves it in
    O(R min(H, W)^2). The systems of all images are assembled at once; each image is solved on
    its own, so an image's values do not depend on the others in the batch. Values are
    returned in row-major order of the removed pixels, like `solve_removed`.

    Args:
        images: float array (B, H, W, C).
        removed: bool array (B, H, W) with at least one kept pixel per image.
    """
    images = np.asarray(images)
    removed = np.asarray(removed, dtype=bool)
    batch, height, width, channels = images.shape
    transposed = width > height
    if transposed:  # number the unknowns along the shorter side: a narrower band
        images, removed = images.transpose(0, 2, 1, 3), removed.transpose(0, 2, 1)
        height, width = width, height
    # Each image framed by one pixel of "outside" (-2); inside, kept pixels are -1 and removed
    # ones the number of their unknown (image by image, row-major within each).
    framed = np.full((batch, height + 2, width + 2), -2)
    framed[:, 1:-1, 1:-1] = -1
    owner, r, c = np.nonzero(removed)
    count = len(r)
    unknowns = np.arange(count)
    framed[owner, r + 1, c + 1] = unknowns
    position = framed.reshape(-1)
    values = np.zeros((batch, height + 2, width + 2, channels))
    values[:, 1:-1, 1:-1] = images
    values = values.reshape(-1, channels)
    centre = (owner * (height + 2) + r + 1) * (width + 2) + c + 1
    band = width + 1  # a neighbour at (+1, +1) is at most width + 1 unknowns further on
    lower = np.zeros((band + 1, count))  # lower[d, i] = A[i + d, i] (LAPACK's lower band storage)
    lower[0] = neighbour_weight_sums(height, width)[r, c]
    rhs = np.zeros((count, channels))
    for dr, dc, weight in NEIGHBOURS:
        j = centre + dr * (width + 2) + dc
        k = position[j]
        if (dr, dc) > (0, 0):  # the neighbours further on in row-major order: the entries below the diagonal
            later = k >= 0
            lower[k[later] - unknowns[later], unknowns[later]] = -weight
        kept = k == -1
        # Each offset reaches every unknown at most once, so plain indexing accumulates correctly.
        rhs[kept] += weight * values[j[kept]]
    per_image = np.bincount(owner, minlength=batch)
    ends = np.cumsum(per_image)
    starts = ends - per_image
    if transposed:  # back to the row-major order of the caller's images
        order = np.argsort(owner * (height * width) + c * height + r, kind="stable")
    solutions = []
    with _BLAS.limit(limits=1, user_api="blas"):
        for start, end in zip(starts, ends):
            if end == start:
                solutions.append(None)
                continue
            diagonals = min(band, end - start - 1) + 1
            solution = scipy.linalg.solveh_banded(
                lower[:diagonals, start:end], rhs[start:end], lower=True, check_finite=False
            )
            if transposed:
                solution = solution[order[start:end] - start]
            solutions.append(solution)
    return solutions


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
