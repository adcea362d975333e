"""Perturbation curves against a by-hand loop and the Degrader; orders, replacements, ROAD, areas, SRG and insertion controls."""

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf.evaluation.degradation import Degrader, aupc
from pgig_tf.evaluation.imputation import noise_generator, noisy_linear_impute
from pgig_tf.evaluation.perturbation import (
    Curves,
    PerturbationCurves,
    curve_area,
    deletion_curves,
    gaussian_blur,
    insertion_curves,
    relevance_ranks,
    removal_counts,
    symmetric_relevance_gain,
)
from pgig_tf.evaluation.statistics import bootstrap_ci


@pytest.fixture
def image_model():
    model = keras.Sequential(
        [
            keras.Input((10, 11, 2)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )  # logits: softmax applied by the curves
    return set_random_weights(model, 2, scale=0.3)


def numpy_blur(image, sigma):
    """Normalised 2-D Gaussian sum over the in-image pixels within ceil(3 sigma) (not separable, no convolution op)."""
    height, width, _ = image.shape
    radius = int(np.ceil(3 * sigma))
    out = np.zeros(image.shape)
    for i in range(height):
        for j in range(width):
            r0, r1 = max(0, i - radius), min(height, i + radius + 1)
            c0, c1 = max(0, j - radius), min(width, j + radius + 1)
            dr, dc = np.arange(r0, r1)[:, None] - i, np.arange(c0, c1)[None, :] - j
            g = np.exp(-(dr**2 + dc**2) / (2 * sigma**2))
            out[i, j] = (g[..., None] * image[r0:r1, c0:c1]).sum(axis=(0, 1)) / g.sum()
    return out


def by_hand(
    model,
    images,
    attributions,
    patch,
    counts,
    replacement,
    mode="remove",
    order="morf",
    targets=None,
    sigma=5.0,
    noise=0.01,
    seed=0,
    first_index=0,
):
    """One copy at a time: units sorted by hand, replaced pixels written with explicit loops."""

    def probs(img):
        return keras.ops.convert_to_numpy(keras.ops.softmax(model(img[None].astype(np.float32))))[0]

    curves = []
    for i, (image, a) in enumerate(zip(images, attributions)):
        height, width, _ = image.shape
        units = [(r, c) for r in range(height // patch) for c in range(width // patch)]
        blocks = [(slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch)) for r, c in units]
        scores = [a[block].sum(-1).mean() for block in blocks]
        sequence = sorted(range(len(units)), key=lambda j: (-scores[j], j))
        if order == "lerf":
            sequence = sequence[::-1]
        if replacement == "image_mean":
            fill = np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
        elif replacement == "own_patch_mean":
            fill = image.copy()
            for block in blocks:
                fill[block] = image[block].mean(axis=(0, 1))
        elif replacement == "blur":
            fill = numpy_blur(image, sigma)
        elif replacement != "road":
            fill = np.full(image.shape, replacement)
        target = int(np.argmax(probs(image))) if targets is None else targets[i]
        curve = []
        for step, count in enumerate(counts):
            changed = set(sequence[:count])
            hidden = changed if mode == "remove" else set(range(len(units))) - changed
            removed = np.zeros((height, width), bool)
            for j in hidden:
                removed[blocks[j]] = True
            if replacement == "road":
                if removed.all():
                    copy = image.mean(axis=(0, 1)) + noise_generator(seed, [first_index + i, step]).normal(
                        0, noise, image.shape
                    )
                else:
                    copy = noisy_linear_impute(image[None], removed[None], noise, seed, ids=[[first_index + i, step]])[
                        0
                    ]
            else:
                copy = image.copy()
                copy[removed] = fill[removed]
            curve.append(probs(copy)[target])
        curves.append(curve)
    return np.array(curves)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (3, 10, 11, 2)).astype(np.float32)
    attributions = rng.normal(0, 1, images.shape).astype(np.float32)
    return images, attributions


# -- compatibility with the Degrader ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, num_steps", [(-1.5, -1.5, 9), ("own_patch_mean", "patch_mean", 5), ("image_mean", "image_mean", 9)]
)
def test_morf_equals_the_degrader(image_model, data, ours, theirs, num_steps):
    images, attributions = data
    expected = Degrader(image_model, patch_size=3, num_steps=num_steps, replacement=theirs, batch_size=7).curves(
        images, attributions
    )
    curves = PerturbationCurves(image_model, "morf", ours, patch_size=3, num_steps=num_steps, batch_size=7).curves(
        images, attributions
    )
    np.testing.assert_array_equal(curves.values, expected)
    np.testing.assert_array_equal(curves.aupc, aupc(expected))
    np.testing.assert_allclose(curves.fractions, np.arange(num_steps + 1) / 9)
    assert np.ptp(expected, axis=1).min() > 0  # the curves do move


# -- every replacement, order and mode against the by-hand loop ------------------------------------


@pytest.mark.parametrize(
    "replacement, order, mode",
    [
        ("image_mean", "morf", "remove"),
        ("own_patch_mean", "morf", "remove"),
        (0.7, "morf", "remove"),
        ("blur", "morf", "remove"),
        ("road", "morf", "remove"),
        ("own_patch_mean", "lerf", "remove"),
        ("road", "lerf", "remove"),
        ("blur", "morf", "insert"),
        ("road", "morf", "insert"),
        (0.7, "morf", "insert"),
    ],
)
def test_curves_match_the_by_hand_loop(image_model, data, replacement, order, mode):
    images, attributions = data
    engine = PerturbationCurves(
        image_model,
        order,
        replacement,
        patch_size=3,
        units_per_step=2,
        mode=mode,
        blur_sigma=1.5,
        road_noise=0.05,
        seed=3,
        batch_size=4,
        images_per_call=2,
    )
    counts = [0, 2, 4, 6, 8, 9]  # 9 patches, 2 per step, the last step 1
    curves = engine.curves(images, attributions, first_index=5)
    expected = by_hand(
        image_model,
        images,
        attributions,
        3,
        counts,
        replacement,
        mode,
        order,
        sigma=1.5,
        noise=0.05,
        seed=3,
        first_index=5,
    )
    np.testing.assert_allclose(curves.values, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(curves.fractions, np.array(counts) / 9)
    assert np.ptp(expected, axis=1).min() > 0


@pytest.mark.parametrize("replacement", ["image_mean", "road"])
def test_pixel_units_and_absolute_ranking_with_true_targets(image_model, data, replacement):
    images, attributions = data
    images, attributions = images[:2], attributions[:2]
    engine = PerturbationCurves(
        image_model, "morf", replacement, patch_size=1, units_per_step=37, absolute=True, batch_size=16
    )
    curves = engine.curves(images, attributions, targets=[3, 0])
    counts = [0, 37, 74, 110]
    expected = by_hand(
        image_model, images, np.abs(attributions.sum(-1, keepdims=True)), 1, counts, replacement, targets=[3, 0]
    )
    np.testing.assert_allclose(curves.values, expected, rtol=2e-5, atol=1e-6)


def test_lerf_is_morf_of_the_reversed_ranking(image_model, data):
    images, attributions = data
    for replacement in ("image_mean", "blur", "road"):
        options = dict(patch_size=2, units_per_step=3, batch_size=8)
        morf = PerturbationCurves(image_model, "morf", replacement, **options)
        lerf = PerturbationCurves(image_model, "lerf", replacement, **options)
        # Random attributions have no ties, so negating them reverses the ranking exactly.
        np.testing.assert_array_equal(
            lerf.curves(images, attributions).values, morf.curves(images, -attributions).values
        )
        ranks = relevance_ranks(attributions, 2)
        np.testing.assert_array_equal(
            lerf.curves_for_ranks(images, ranks).values,
            morf.curves_for_ranks(images, ranks.size // 3 - 1 - ranks).values,
        )


def test_clean_and_fully_replaced_ends(image_model, data):
    images, attributions = data
    morf = PerturbationCurves(image_model, "morf", -0.5, patch_size=2, units_per_step=5)
    insertion = PerturbationCurves(image_model, "morf", -0.5, patch_size=2, units_per_step=5, mode="insert")
    removed, inserted = morf.curves(images, attributions).values, insertion.curves(images, attributions).values
    np.testing.assert_allclose(removed[:, 0], inserted[:, -1], rtol=1e-6)  # nothing removed = everything restored
    np.testing.assert_allclose(removed[:, -1], inserted[:, 0], rtol=1e-6)


# -- replacements ---------------------------------------------------------------------------------


def test_gaussian_blur_against_a_direct_sum():
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (2, 8, 9, 3)).astype(np.float32)
    for sigma in (0.7, 5.0):
        ours = gaussian_blur(images, sigma).numpy()
        for b in range(2):
            np.testing.assert_allclose(ours[b], numpy_blur(images[b].astype(np.float64), sigma), rtol=1e-5, atol=1e-6)
    constant = np.full((1, 6, 7, 2), 3.25, np.float32)
    np.testing.assert_allclose(gaussian_blur(constant, 5.0).numpy(), constant, rtol=1e-6)


def test_road_keeps_kept_pixels_and_curves_read_its_copies(image_model, data):
    images, attributions = data
    engine = PerturbationCurves(image_model, "morf", "road", patch_size=3, units_per_step=2, road_noise=0.05)
    ranks = relevance_ranks(attributions, 3)
    curves = engine.curves(images, attributions)
    counts = engine.counts(images.shape)
    for step in range(len(counts)):
        copies = engine.perturbed(images, ranks, step)
        changed = ranks < counts[step]
        removed = np.pad(changed.repeat(3, 1).repeat(3, 2), [(0, 0), (0, 1), (0, 2)])
        np.testing.assert_array_equal(copies[~removed], images[~removed])  # bit for bit
        assert np.all(copies[removed] != images[removed])
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(image_model(copies)))
        clean = np.argmax(keras.ops.convert_to_numpy(image_model(images)), axis=1)
        np.testing.assert_allclose(curves.values[:, step], probs[np.arange(3), clean], rtol=1e-5)


def test_road_with_every_pixel_removed_uses_the_image_mean_plus_noise():
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.Dense(3)])
    images = np.random.default_rng(2).normal(0, 1, (2, 4, 4, 2)).astype(np.float32)
    engine = PerturbationCurves(set_random_weights(model, 0), "morf", "road", patch_size=2, road_noise=0.1, seed=4)
    ranks = np.tile(np.arange(4).reshape(1, 2, 2), (2, 1, 1))
    copies = engine.perturbed(images, ranks, 4, first_index=7)
    for b in range(2):
        expected = images[b].mean(axis=(0, 1), dtype=np.float64) + noise_generator(4, [7 + b, 4]).normal(
            0, 0.1, (4, 4, 2)
        )
        np.testing.assert_allclose(copies[b], expected, rtol=1e-6)


def test_road_curves_do_not_depend_on_batching(image_model, data):
    images, attributions = data
    engine = PerturbationCurves(image_model, "lerf", "road", patch_size=3, units_per_step=3, batch_size=5)
    whole = engine.curves(images, attributions).values
    parts = np.concatenate(
        [
            engine.curves(images[:1], attributions[:1]).values,
            engine.curves(images[1:], attributions[1:], first_index=1).values,
        ]
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    other_seed = PerturbationCurves(image_model, "lerf", "road", patch_size=3, units_per_step=3, seed=1)
    assert np.abs(other_seed.curves(images, attributions).values[:, 1:-1] - whole[:, 1:-1]).min() > 0


def test_compiled_once_per_image_shape(image_model, data):
    images, attributions = data
    for replacement, kind in (("blur", "curves"), ("road", "chosen")):
        engine = PerturbationCurves(
            image_model, "morf", replacement, patch_size=3, units_per_step=3, batch_size=5, images_per_call=2
        )
        for count in (3, 1, 2):
            engine.curves(images[:count], attributions[:count])
        assert engine._functions[(kind, (10, 11, 2))].experimental_get_tracing_count() == 1


# -- schedule and areas ---------------------------------------------------------------------------


def test_schedule_and_areas():
    np.testing.assert_array_equal(removal_counts(9, 2), [0, 2, 4, 6, 8, 9])
    np.testing.assert_array_equal(removal_counts(9, 2, num_steps=3), [0, 2, 4, 6])
    np.testing.assert_array_equal(removal_counts(4), [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="num_steps=6 exceeds the 5 steps of 2 unit"):
        removal_counts(9, 2, num_steps=6)
    # Trapezoid over x = [0, .5, .75, 1]: (1 + .5)/2 * .5 + (.5 + .25)/2 * .25 + (.25 + 0)/2 * .25
    curves = Curves(np.array([[1.0, 0.5, 0.25, 0.0]]), np.array([0.0, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(curves.area, [0.375 + 0.09375 + 0.03125])
    np.testing.assert_allclose(curves.aupc, [0.75 + 0.375 + 0.125])
    # With one unit per step over the whole range, the area is the AUPC divided by the number of steps.
    values = np.random.default_rng(0).random((5, 9))
    np.testing.assert_allclose(curve_area(values, np.arange(9) / 8), aupc(values) / 8, rtol=1e-14)
    lerf = Curves(np.array([[1.0, 1.0, 0.75, 0.5]]), curves.fractions)
    np.testing.assert_allclose(symmetric_relevance_gain(curves, lerf), lerf.area - curves.area)
    assert symmetric_relevance_gain(curves, lerf)[0] > 0


# -- controls with a known answer -----------------------------------------------------------------


@pytest.fixture
def linear_model():
    """Two logits [w . x, 0] on 8x8x1 images: the contribution of pixel j to logit 0 is w_j x_j."""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    w = np.random.default_rng(10).normal(0, 0.3, 64)
    model.set_weights([np.stack([w, np.zeros(64)], axis=1).astype(np.float32), np.zeros(2, np.float32)])
    return model, w.reshape(1, 8, 8, 1)


def test_srg_of_a_perfect_ranking_beats_a_random_one_whose_interval_holds_zero(linear_model):
    model, w = linear_model
    rng = np.random.default_rng(11)
    images = rng.normal(0, 1, (300, 8, 8, 1)).astype(np.float32)
    perfect = w * images  # the exact contribution of each pixel against the replacement 0
    random = rng.normal(0, 1, images.shape)
    options = dict(patch_size=1, units_per_step=4, batch_size=256, images_per_call=64)
    morf, lerf = (PerturbationCurves(model, order, 0.0, **options) for order in ("morf", "lerf"))
    curves = {
        name: (morf.curves(images, a, targets=0), lerf.curves(images, a, targets=0))
        for name, a in (("perfect", perfect), ("random", random))
    }
    srg = {name: symmetric_relevance_gain(*pair) for name, pair in curves.items()}
    # Removing the largest contributions first minimises the logit at every point, so the perfect
    # MoRF curve lies below (and its LeRF curve above) any other ranking's, image by image.
    assert np.all(curves["perfect"][0].values <= curves["random"][0].values + 1e-6)
    assert np.all(curves["perfect"][1].values >= curves["random"][1].values - 1e-6)
    _, random_low, random_high = bootstrap_ci(srg["random"], seed=0)
    perfect_mean, perfect_low, _ = bootstrap_ci(srg["perfect"], seed=0)
    assert random_low < 0 < random_high
    assert perfect_low > 0.6 and perfect_low > random_high + 0.5, (perfect_mean, random_high)


def test_insertion_and_deletion_of_a_perfect_ranking_beat_the_reversed_one(linear_model):
    model, w = linear_model
    images = np.random.default_rng(12).normal(0, 1, (40, 8, 8, 1)).astype(np.float32)
    blurred = gaussian_blur(images, 5.0).numpy()
    insertion = insertion_curves(model, units_per_step=4)  # from the blurred image, by default
    deletion = deletion_curves(model, units_per_step=4)  # to 0, by default
    # Against the blurred image pixel j adds w_j (x_j - blur(x)_j) to the logit; against 0, w_j x_j.
    best_insert = insertion.curves(images, w * (images - blurred), targets=0)
    worst_insert = insertion.curves(images, -w * (images - blurred), targets=0)
    best_delete = deletion.curves(images, w * images, targets=0)
    worst_delete = deletion.curves(images, -w * images, targets=0)
    assert np.all(best_insert.values >= worst_insert.values - 1e-6)
    assert np.all(best_delete.values <= worst_delete.values + 1e-6)
    assert np.mean(best_insert.area - worst_insert.area) > 0.6
    assert np.mean(worst_delete.area - best_delete.area) > 0.6
    # Insertion's first point is the blurred image, its last the clean one.
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(blurred)))[:, 0]
    np.testing.assert_allclose(best_insert.values[:, 0], probs, rtol=1e-5)
    np.testing.assert_allclose(
        best_insert.values[:, -1], keras.ops.convert_to_numpy(keras.ops.softmax(model(images)))[:, 0], rtol=1e-5
    )


# -- arguments ------------------------------------------------------------------------------------


def test_argument_errors(image_model, data):
    images, attributions = data
    with pytest.raises(ValueError, match=r"order must be one of \('morf', 'lerf'\), got 'most'"):
        PerturbationCurves(image_model, "most")
    with pytest.raises(ValueError, match=r"mode must be one of \('remove', 'insert'\), got 'add'"):
        PerturbationCurves(image_model, mode="add")
    with pytest.raises(ValueError, match=r"replacement must be one of .* got 'zero'"):
        PerturbationCurves(image_model, replacement="zero")
    with pytest.raises(ValueError, match="replacement must be one of .* or a finite number, got nan"):
        PerturbationCurves(image_model, replacement=float("nan"))
    with pytest.raises(ValueError, match="blur_sigma must be a finite number of pixels > 0, got 0"):
        PerturbationCurves(image_model, blur_sigma=0)
    with pytest.raises(ValueError, match="road_noise must be a finite number >= 0, got -1"):
        PerturbationCurves(image_model, road_noise=-1)
    with pytest.raises(ValueError, match="patch_size must be a positive integer, got 0"):
        PerturbationCurves(image_model, patch_size=0)
    with pytest.raises(ValueError, match="patch_size=12 leaves no whole patch in a 10x11 image"):
        PerturbationCurves(image_model, patch_size=12).curves(images, attributions)
    with pytest.raises(ValueError, match="num_steps=10 exceeds the 9 steps"):
        PerturbationCurves(image_model, patch_size=3, num_steps=10).curves(images, attributions)
    engine = PerturbationCurves(image_model, patch_size=3)
    with pytest.raises(ValueError, match="attributions must be shaped like images"):
        engine.curves(images, attributions[..., :1])
    with pytest.raises(ValueError, match=r"ranks of images \[1\] are not permutations of 0..8"):
        engine.curves_for_ranks(
            images, np.stack([np.arange(9).reshape(3, 3), np.zeros((3, 3), int), np.arange(9).reshape(3, 3)])
        )
    with pytest.raises(ValueError, match=r"ranks must have shape \(3, 3, 3\)"):
        engine.curves_for_ranks(images, np.zeros((3, 2, 2), int))
    with pytest.raises(ValueError, match="targets must be in 0..3 .* got 4"):
        engine.curves(images, attributions, targets=[0, 4, 1])
    with pytest.raises(ValueError, match=r"targets has shape \(2,\) for 3 images"):
        engine.curves(images, attributions, targets=[0, 1])
    with pytest.raises(ValueError, match="step must be an int in 0..9, got 10"):
        engine.perturbed(images, relevance_ranks(attributions, 3), 10)
    with pytest.raises(ValueError, match=r"first_index must be a non-negative int below 2\*\*31, got -1"):
        engine.curves(images, attributions, first_index=-1)
    with pytest.raises(ValueError, match="morf and lerf curves must share images and schedule"):
        symmetric_relevance_gain(Curves(np.zeros((2, 3)), np.arange(3) / 2), Curves(np.zeros((2, 4)), np.arange(4) / 3))
