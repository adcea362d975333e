"""ROAR/KAR image modification on hand-made arrays, and the retraining: seeded, reproducible, reuse equal to fresh."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pgig_tf.evaluation.imputation import noisy_linear_impute
from pgig_tf.evaluation.roar import (
    Retrainer,
    channel_means,
    modified_images,
    pixel_ranks,
    replaced_pixels,
    retrained_accuracy,
    top_count,
)

# One 2x3 image, one channel; the attribution ranks the pixels (row-major) 4, 1, 5, 0, 3, 2 (0 = most relevant).
IMAGE = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 2, 3, 1)
MAP = np.array([0.1, 0.7, -0.5, 0.9, 0.2, 0.3]).reshape(1, 2, 3, 1)


def test_roar_replaces_exactly_the_top_pixels_and_kar_all_others():
    roar = modified_images(IMAGE, MAP, 0.5, keep=False, fill=[-9.0])
    # the top 3 are 0.9 (pixel 3), 0.7 (pixel 1), 0.3 (pixel 5)
    np.testing.assert_array_equal(roar[0, ..., 0], [[1, -9, 3], [-9, 5, -9]])
    kar = modified_images(IMAGE, MAP, 0.5, keep=True, fill=[-9.0])
    np.testing.assert_array_equal(kar[0, ..., 0], [[-9, 2, -9], [4, -9, 6]])
    assert roar.dtype == np.float32 and kar.dtype == np.float32
    np.testing.assert_array_equal(pixel_ranks(MAP)[0], [[4, 1, 5], [0, 3, 2]])


def test_fraction_rounds_half_up_over_the_pixels():
    assert [top_count(f, 6) for f in (0.0, 0.2, 0.25, 0.5, 0.75, 1.0)] == [0, 1, 2, 3, 5, 6]
    # 0.25 of 6 pixels = 1.5 -> 2: the two highest (pixels 3 and 1)
    np.testing.assert_array_equal(replaced_pixels(MAP, 0.25)[0], [[False, True, False], [True, False, False]])


def test_fractions_zero_and_one():
    fill = [-9.0]
    np.testing.assert_array_equal(modified_images(IMAGE, MAP, 0.0, keep=False, fill=fill), IMAGE)
    np.testing.assert_array_equal(modified_images(IMAGE, MAP, 1.0, keep=True, fill=fill), IMAGE)
    np.testing.assert_array_equal(modified_images(IMAGE, MAP, 1.0, keep=False, fill=fill), np.full_like(IMAGE, -9.0))
    np.testing.assert_array_equal(modified_images(IMAGE, MAP, 0.0, keep=True, fill=fill), np.full_like(IMAGE, -9.0))


def test_ties_keep_the_row_major_order():
    flat = np.zeros((1, 2, 3))  # all tied: the earlier pixels rank first
    np.testing.assert_array_equal(pixel_ranks(flat)[0], [[0, 1, 2], [3, 4, 5]])
    roar = modified_images(IMAGE, flat, 2 / 6, keep=False, fill=0.0)
    np.testing.assert_array_equal(roar[0, ..., 0], [[0, 0, 3], [4, 5, 6]])
    partly = np.array([[[1.0, 2.0, 1.0], [2.0, 1.0, 0.0]]])  # two 2s, then three 1s in pixel order
    np.testing.assert_array_equal(pixel_ranks(partly)[0], [[2, 0, 3], [1, 4, 5]])


def test_the_channel_sum_ranks_and_each_channel_takes_its_own_fill():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.float64).reshape(2, 2, 2, 3)
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 2, 2, 3))
    # channel 0 alone would rank otherwise: the sum decides
    maps[0, 0, 0] = [5.0, -3.0, -1.5]  # sum 0.5
    maps[0, 0, 1] = [-1.0, 1.0, 1.0]  # sum 1.0
    maps[0, 1, 0] = [0.0, 0.0, 0.0]
    maps[0, 1, 1] = [0.2, 0.0, 0.0]
    fill = np.array([-1.0, -2.0, -3.0])
    out = modified_images(images, maps, 0.25, keep=False, fill=fill)
    np.testing.assert_array_equal(out[0, 0, 1], fill)
    removed = replaced_pixels(maps, 0.25)
    assert removed.sum(axis=(1, 2)).tolist() == [1, 1]
    np.testing.assert_array_equal(out[removed], np.broadcast_to(fill, (2, 3)))
    np.testing.assert_array_equal(out[~removed], images[~removed])
    np.testing.assert_allclose(channel_means(images), images.mean(axis=(0, 1, 2)))
    # the sum's magnitude with absolute=True: -4 beats 1
    signed = np.array([[[-4.0, 1.0]]])
    assert replaced_pixels(signed, 0.5)[0].tolist() == [[False, True]]
    assert replaced_pixels(signed, 0.5, absolute=True)[0].tolist() == [[True, False]]


def test_road_keeps_the_kept_pixels_exactly_and_imputes_the_others():
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, size=(3, 6, 5, 2)).astype(np.float32)
    maps = rng.normal(size=(3, 6, 5, 2))
    for keep in (False, True):
        removed = replaced_pixels(maps, 0.4, keep=keep)
        exact = modified_images(images, maps, 0.4, keep=keep, fill="road", road_noise=0.0)
        np.testing.assert_array_equal(exact[~removed], images[~removed])
        np.testing.assert_array_equal(exact, noisy_linear_impute(images, removed, noise=0.0))
        noisy = modified_images(images, maps, 0.4, keep=keep, fill="road", seed=3, ids=[7, 8, 9])
        np.testing.assert_array_equal(noisy[~removed], images[~removed])
        expected = noisy_linear_impute(images, removed, noise=0.02, seed=3, ids=[7, 8, 9])
        np.testing.assert_array_equal(noisy, expected)
        assert 0.0 < np.abs(noisy - exact)[removed].max() < 0.2
    # the noise of an image follows its id, not its position
    alone = modified_images(images[2:], maps[2:], 0.4, keep=False, fill="road", seed=3, ids=[9])
    together = modified_images(images, maps, 0.4, keep=False, fill="road", seed=3, ids=[7, 8, 9])
    np.testing.assert_array_equal(alone[0], together[2])
    # every pixel replaced: the image's per-channel mean (no noise)
    full = modified_images(images, maps, 1.0, keep=False, fill="road", road_noise=0.0)
    np.testing.assert_allclose(full, np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(fraction=1.5), ValueError, "fraction must be a number in"),
        (dict(fraction=-0.1), ValueError, "fraction must be a number in"),
        (dict(fill=[1.0, 2.0]), ValueError, "per-channel values"),
        (dict(fill="median"), ValueError, "'road'"),
        (dict(fill=[np.nan]), ValueError, "finite"),
        (dict(keep="yes"), TypeError, "keep must be a bool"),
        (dict(attributions=MAP[:, :1]), ValueError, "one map per image"),
        (dict(attributions=MAP * np.nan), ValueError, "NaN"),
        (dict(images=IMAGE.astype(np.int32)), TypeError, "float array"),
        (dict(fill="road", ids=[-1]), ValueError, "non-negative"),
        (dict(fill="road", road_noise=-0.1), ValueError, "road_noise"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    arguments = dict(images=IMAGE, attributions=MAP, fraction=0.5, keep=False, fill=[0.0])
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        modified_images(**arguments)


def tiny_cnn():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60).astype(np.int32)
    images = rng.normal(0.0, 0.3, size=(60, 6, 6, 1)).astype(np.float32)
    images[np.arange(60), 1 + labels, 2, 0] += 1.5  # the class is a bright pixel's row
    maps = rng.normal(size=images.shape)
    return images[:40], labels[:40], images[40:], labels[40:], maps


def test_roar_at_zero_reproduces_the_baseline_exactly(data):
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_test, y_test, maps = data
    fill = channel_means(x_train)
    kept_train = modified_images(x_train, maps[:40], 0.0, keep=False, fill=fill)
    kept_test = modified_images(x_test, maps[40:], 0.0, keep=False, fill=fill)
    options = dict(epochs=4, batch_size=8, learning_rate=0.05)
    baseline = retrained_accuracy(tiny_cnn, x_train, y_train, x_test, y_test, 0, **options)
    assert baseline > 0.5  # it learned (chance is 1/3)
    retrainer = Retrainer(tiny_cnn, **options)  # one held model, trained as a fresh one each time
    assert retrainer.accuracy(kept_train, y_train, kept_test, y_test, 0) == baseline
    # all pixels replaced by one constant: every test image is predicted alike
    blank_train = modified_images(x_train, maps[:40], 1.0, keep=False, fill=fill)
    blank_test = modified_images(x_test, maps[40:], 1.0, keep=False, fill=fill)
    blank = retrainer.accuracy(blank_train, y_train, blank_test, y_test, 0)
    assert blank in {float(np.mean(y_test == c)) for c in range(3)}


def test_a_reused_model_trains_bit_for_bit_as_a_fresh_one(data):
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, *_ = data
    fresh = Retrainer(tiny_cnn, epochs=2, batch_size=8, reuse=False)
    reused = Retrainer(tiny_cnn, epochs=2, batch_size=8)
    expected = {seed: [w.copy() for w in fresh.train(x_train, y_train, seed).get_weights()] for seed in (0, 1)}
    assert not all(np.array_equal(a, b) for a, b in zip(expected[0], expected[1]))
    for seed in (0, 1, 0):  # the second seed 0 follows training with another seed on the same model
        got = reused.train(x_train, y_train, seed).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(got, expected[seed])), seed


def test_retrainer_arguments():
    with pytest.raises(TypeError, match="callable"):
        Retrainer("cnn")
    with pytest.raises(ValueError, match="epochs"):
        Retrainer(tiny_cnn, epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        Retrainer(tiny_cnn, learning_rate=0.0)
