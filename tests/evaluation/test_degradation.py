"""Degradation curves against a by-hand loop; AUPC; patch ranking."""

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf.evaluation.degradation import Degrader, aupc, patch_ranks, patch_scores


@pytest.fixture
def image_model():
    model = keras.Sequential(
        [
            keras.Input((10, 11, 2)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )  # logits: softmax applied by the Degrader
    return set_random_weights(model, 2, scale=0.3)


def by_hand(model, images, attributions, patch, steps, replacement, targets=None):
    """One copy at a time, with explicit loops over the ranked patches."""
    curves = []
    for i, (image, a) in enumerate(zip(images, attributions)):
        rows, cols = image.shape[0] // patch, image.shape[1] // patch
        scores = [
            (a[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].sum(-1).mean(), r, c)
            for r in range(rows)
            for c in range(cols)
        ]
        order = sorted(range(len(scores)), key=lambda j: (-scores[j][0], j))

        def probs(img):
            return keras.ops.convert_to_numpy(keras.ops.softmax(model(img[None])))[0]

        target = int(np.argmax(probs(image))) if targets is None else targets[i]
        copy, curve = image.copy(), [probs(image)[target]]
        for j in order[:steps]:
            _, r, c = scores[j]
            block = (slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
            if replacement == "patch_mean":
                copy[block] = image[block].mean(axis=(0, 1))
            elif replacement == "image_mean":
                copy[block] = image.mean(axis=(0, 1))
            else:
                copy[block] = replacement
            curve.append(probs(copy)[target])
        curves.append(curve)
    return np.array(curves)


@pytest.mark.parametrize("replacement", ["patch_mean", "image_mean", -1.5])
def test_curves_match_the_by_hand_loop(image_model, replacement):
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (3, 10, 11, 2)).astype(np.float32)
    attributions = rng.normal(0, 1, images.shape).astype(np.float32)
    degrader = Degrader(image_model, patch_size=3, num_steps=9, replacement=replacement, batch_size=7)
    ours = degrader.curves(images, attributions)
    expected = by_hand(image_model, images, attributions, 3, 9, replacement)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(expected, axis=1).min() > 0  # the curves do move


def test_true_label_targets(image_model):
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (2, 10, 11, 2)).astype(np.float32)
    attributions = rng.normal(0, 1, images.shape).astype(np.float32)
    ours = Degrader(image_model, patch_size=3, num_steps=4).curves(images, attributions, targets=[3, 0])
    np.testing.assert_allclose(
        ours, by_hand(image_model, images, attributions, 3, 4, "patch_mean", [3, 0]), rtol=1e-5, atol=1e-6
    )


def test_softmax_model_output_is_used_as_is(image_model):
    probs_model = keras.Sequential([image_model, keras.layers.Softmax()])
    rng = np.random.default_rng(2)
    images = rng.normal(0, 1, (2, 10, 11, 2)).astype(np.float32)
    attributions = rng.normal(0, 1, images.shape).astype(np.float32)
    a = Degrader(image_model, patch_size=3, num_steps=5).curves(images, attributions)
    b = Degrader(probs_model, patch_size=3, num_steps=5).curves(images, attributions)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_patch_scores_and_ranks():
    a = np.zeros((1, 4, 6, 2))
    a[0, :2, 2:4, 0] = 3.0  # patch (0, 1): mean 3
    a[0, 2:, :2, 1] = -1.0  # patch (1, 0): mean -1
    a[0, 2:, 4:, :] = 0.5  # patch (1, 2): channel sum 1
    scores = patch_scores(a, 2)
    np.testing.assert_array_equal(scores, [[[0, 3, 0], [-1, 0, 1]]])
    np.testing.assert_array_equal(patch_ranks(scores), [[[2, 0, 3], [5, 4, 1]]])
    np.testing.assert_array_equal(patch_scores(a, 2, absolute=True)[0, 1, 0], 1.0)


def test_aupc_is_the_unit_spaced_trapezoid():
    assert aupc(np.array([1.0, 0.5, 0.0])) == pytest.approx(1.0)
    np.testing.assert_allclose(aupc(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.6]])), [3.0, 0.3])


def test_degrader_errors(image_model):
    with pytest.raises(ValueError, match="num_steps=20 exceeds the 9 patches of size 3"):
        Degrader(image_model, patch_size=3, num_steps=20).curves(np.zeros((1, 10, 11, 2)), np.zeros((1, 10, 11, 2)))
    with pytest.raises(ValueError, match="attributions must be shaped like images"):
        Degrader(image_model, patch_size=3, num_steps=2).curves(np.zeros((1, 10, 11, 2)), np.zeros((1, 10, 11, 1)))
    with pytest.raises(ValueError, match="replacement must be one of"):
        Degrader(image_model, replacement="blur")
