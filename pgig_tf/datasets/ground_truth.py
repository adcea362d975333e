"""A seeded synthetic image dataset with known signal and distractor pixels (the PGIG stress test, §3, at image scale)."""

import json
import os
from typing import NamedTuple

import numpy as np

IMAGE_SIZE = 32
SHAPE_SIZE = 7
CLASS_NAMES = ("square_outline", "cross", "diagonal_line", "disc")
DECOY_NAMES = ("horizontal_bar", "vertical_bar", "block")
# Pixel levels: x = s + d + noise with zero meaning "nothing drawn", as in the stress test (§3) where the
# attribution baseline 0 is the absence of signal and distractor. The ranges keep x inside [-1, 1] without
# clipping: 0.45 (signal) + 0.4 (decoys) + 0.1 (field) + 0.05 (noise) = 1.0, and -0.1 - 0.05 > -1.
SIGNAL_AMPLITUDE = (0.35, 0.45)
DECOY_AMPLITUDE = (0.3, 0.4)
FIELD_AMPLITUDE = 0.1  # the smooth field spans [-FIELD_AMPLITUDE, FIELD_AMPLITUDE]
FIELD_SIGMA = 4.0
NOISE_STD = 0.02
NOISE_LIMIT = 0.05
NUM_DECOYS = 2
OVERLAP_PROBABILITY = 0.5
MIN_TEST_ACCURACY = 0.95  # what the trained CNN must reach for the benchmark to be meaningful


class GroundTruthData(NamedTuple):
    """One split of the dataset; every array has n rows.

    images: (n, 32, 32, 1) float32 in [-1, 1]: signal + distractor + noise.
    labels: (n,) int32 class index into CLASS_NAMES.
    signal_masks: (n, 32, 32) bool, the pixels of the class shape (where `signal` is non-zero).
    distractor_masks: (n, 32, 32) bool, the pixels of the decoy shapes (where `decoys` is non-zero).
    signal: (n, 32, 32) float32 s, zero outside the signal mask.
    distractor: (n, 32, 32) float32 d = decoys + field.
    decoys: (n, 32, 32) float32, zero outside the distractor mask.
    field: (n, 32, 32) float32, a smooth random field in [-FIELD_AMPLITUDE, FIELD_AMPLITUDE] over every pixel; it carries
        no class information either but, being everywhere and weak, it is left out of the distractor mask.
    """

    images: np.ndarray
    labels: np.ndarray
    signal_masks: np.ndarray
    distractor_masks: np.ndarray
    signal: np.ndarray
    distractor: np.ndarray
    decoys: np.ndarray
    field: np.ndarray


def class_shape(label):
    """The 7x7 binary stencil of class `label` (0 square outline, 1 cross, 2 diagonal line, 3 filled disc)."""
    size = SHAPE_SIZE
    stencil = np.zeros((size, size), dtype=bool)
    if label == 0:
        stencil[[0, -1], :] = True
        stencil[:, [0, -1]] = True
    elif label == 1:
        stencil[size // 2, :] = True
        stencil[:, size // 2] = True
    elif label == 2:
        stencil[np.arange(size), np.arange(size)] = True
    elif label == 3:
        rows, cols = np.mgrid[:size, :size] - size // 2
        stencil = rows**2 + cols**2 <= 9  # radius 3
    else:
        raise ValueError(f"label must be in 0..{len(CLASS_NAMES) - 1}, got {label!r}")
    return stencil


def decoy_shape(kind):
    """The binary stencil of decoy `kind` (0 horizontal 2x8 bar, 1 vertical 8x2 bar, 2 filled 4x4 block)."""
    if kind == 0:
        return np.ones((2, 8), dtype=bool)
    if kind == 1:
        return np.ones((8, 2), dtype=bool)
    if kind == 2:
        return np.ones((4, 4), dtype=bool)
    raise ValueError(f"kind must be in 0..{len(DECOY_NAMES) - 1}, got {kind!r}")


def _smooth_fields(rng, n, size):
    """n white-noise images blurred by a Gaussian (sigma FIELD_SIGMA px), each rescaled to [-1, 1] x FIELD_AMPLITUDE."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(n, size, size)), (0.0, FIELD_SIGMA, FIELD_SIGMA), mode="wrap")
    field -= field.min(axis=(1, 2), keepdims=True)
    return (2.0 * field / np.maximum(field.max(axis=(1, 2), keepdims=True), 1e-12) - 1.0) * FIELD_AMPLITUDE


def make_ground_truth_data(num_images, seed=0, image_size=IMAGE_SIZE):
    """`num_images` images drawn from `numpy.random.default_rng(seed)`; the same seed gives the same arrays.

    Each image holds one class shape (its label; balanced classes in random order) at a random
    position with a random amplitude, NUM_DECOYS decoy shapes (bars and blocks, none a class
    shape) of comparable amplitude, one of them placed over the class shape with probability
    OVERLAP_PROBABILITY (elsewhere at random, so they still overlap it now and then), a smooth
    random field and small clipped Gaussian pixel noise. Where decoys overlap each other the
    larger amplitude wins.

    Args:
        num_images: positive int.
        seed: non-negative int.
        image_size: image side (>= 16).

    Returns:
        A `GroundTruthData`.

    Raises:
        ValueError: for a non-positive num_images or an image_size below 16.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    rng = np.random.default_rng(seed)
    n, size = int(num_images), int(image_size)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int32)
    signal = np.zeros((n, size, size), np.float32)
    decoys = np.zeros((n, size, size), np.float32)
    stencils = [class_shape(label) for label in range(len(CLASS_NAMES))]
    decoy_stencils = [decoy_shape(kind) for kind in range(len(DECOY_NAMES))]
    for i in range(n):
        top, left = rng.integers(1, size - SHAPE_SIZE, size=2)
        amplitude = rng.uniform(*SIGNAL_AMPLITUDE)
        signal[i, top : top + SHAPE_SIZE, left : left + SHAPE_SIZE] = stencils[labels[i]] * amplitude
        centre = np.array([top, left]) + SHAPE_SIZE // 2
        overlap = rng.random() < OVERLAP_PROBABILITY
        for j in range(NUM_DECOYS):
            stencil = decoy_stencils[rng.integers(len(decoy_stencils))]
            height, width = stencil.shape
            if j == 0 and overlap:  # centred within 3 px of the class shape's centre
                row, col = centre + rng.integers(-3, 4, size=2) - np.array([height, width]) // 2
                row, col = np.clip(row, 0, size - height), np.clip(col, 0, size - width)
            else:
                row, col = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
            window = decoys[i, row : row + height, col : col + width]
            np.maximum(window, stencil * rng.uniform(*DECOY_AMPLITUDE), out=window)
    field = _smooth_fields(rng, n, size).astype(np.float32)
    noise = np.clip(rng.normal(0.0, NOISE_STD, size=(n, size, size)), -NOISE_LIMIT, NOISE_LIMIT)
    distractor = decoys + field
    images = (signal + distractor + noise).astype(np.float32)[..., None]
    return GroundTruthData(
        images, labels, signal != 0, decoys != 0, signal, distractor.astype(np.float32), decoys, field
    )


def load_ground_truth_images(seed=0, num_train=6000, num_test=1000):
    """(train, test): two `GroundTruthData` splits, drawn with seeds derived from `seed` (disjoint streams)."""
    train = make_ground_truth_data(num_train, seed=2 * seed)
    test = make_ground_truth_data(num_test, seed=2 * seed + 1)
    return train, test


def build_ground_truth_cnn(image_size=IMAGE_SIZE):
    """The embedded digits CNN (`pgig_tf.datasets.digits.build_digits_cnn`) with one output per class shape."""
    from pgig_tf.datasets.digits import build_digits_cnn

    model = build_digits_cnn(image_size=image_size, num_classes=len(CLASS_NAMES))
    model.name = "ground_truth_cnn"
    return model


def _accuracy(model, split):
    return float(np.mean(np.argmax(model.predict(split.images, verbose=0), axis=1) == split.labels))


def trained_ground_truth_cnn(cache_dir, seed=0, num_train=6000, num_test=1000, epochs=8, verbose=True):
    """The CNN trained on the dataset with `seed`, from `cache_dir` if trained before.

    Args:
        cache_dir: folder of the cached model (created if needed); the file name holds the settings.
        seed: seeds the data and the training.
        num_train, num_test: split sizes.
        epochs: training epochs (Adam, learning rate 1e-3, batch 64).
        verbose: print training progress.

    Returns:
        (model, test accuracy, (train, test)) with the two `GroundTruthData` splits.
    """
    import keras

    train, test = load_ground_truth_images(seed, num_train, num_test)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"ground_truth_cnn_seed{seed}_train{num_train}_epochs{epochs}.keras")
    info_path = path + ".json"
    if os.path.exists(path) and os.path.exists(info_path):
        model = keras.models.load_model(path)
        with open(info_path) as handle:
            info = json.load(handle)
        if info.get("num_test") == num_test:
            return model, info["test_accuracy"], (train, test)
        # trained before, measured on another number of test images: measure again, no retraining
        return model, _accuracy(model, test), (train, test)
    keras.utils.set_random_seed(seed)
    model = build_ground_truth_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if verbose:
        print(f"training the ground-truth CNN ({num_train} images, {epochs} epochs, cached in {path})")
    model.fit(train.images, train.labels, epochs=epochs, batch_size=64, verbose=2 if verbose else 0)
    accuracy = _accuracy(model, test)
    from pgig_tf.files import atomic_write

    model.save(path)
    with atomic_write(info_path) as handle:
        json.dump(
            {"test_accuracy": accuracy, "seed": seed, "num_train": num_train, "num_test": num_test, "epochs": epochs},
            handle,
        )
    return model, accuracy, (train, test)
