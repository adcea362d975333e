"""The embedded default: scikit-learn's handwritten digits (1,797 real 8x8 scans) and a small VGG-style CNN."""

import contextlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

IMAGE_SIZE = 32


def load_digits_images(seed=0, image_size=IMAGE_SIZE, test_fraction=0.2):
    """(x_train, y_train, x_test, y_test): digits upsampled (bilinear) to image_size², scaled to [-1, 1].

    The split is a seeded permutation; images are (n, size, size, 1) float32.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.clip(images, 0.0, 1.0) * 2.0 - 1.0
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = int(round(test_fraction * len(images)))
    test, train = order[:num_test], order[num_test:]
    labels = digits.target.astype(np.int32)
    return images[train], labels[train], images[test], labels[test]


def build_digits_cnn(image_size=IMAGE_SIZE, num_classes=10):
    """Two VGG blocks (two 3x3 ReLU convs and a max-pool each), a ReLU dense layer and a softmax output."""
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block1_conv1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block1_conv2"),
            keras.layers.MaxPooling2D(name="block1_pool"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="block2_conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="block2_conv2"),
            keras.layers.MaxPooling2D(name="block2_pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="digits_cnn",
    )


@contextlib.contextmanager
def op_determinism():
    """Runs the block under TensorFlow's op determinism, and turns it off again if it was off before.

    The command-line tools enable op determinism for their whole run, and training rounds
    differently with it than without; training under it wherever it is called from gives the
    cache the same CNN whichever entry point trains it first.
    """
    from tensorflow.python.framework import config  # is/disable_op_determinism are not in tf.config

    was_enabled = config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            config.disable_op_determinism()


def trained_digits_cnn(cache_dir, seed=0, epochs=10, verbose=True):
    """The digits CNN trained with `seed`, from `cache_dir` if trained before; returns (model, test accuracy, data)."""
    data = load_digits_images(seed)
    x_train, y_train, x_test, y_test = data
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"digits_cnn_seed{seed}_epochs{epochs}.keras")
    info_path = path + ".json"
    if os.path.exists(path) and os.path.exists(info_path):
        model = keras.models.load_model(path)
        with open(info_path) as handle:
            accuracy = json.load(handle)["test_accuracy"]
        return model, accuracy, data
    if verbose:
        print(f"training the digits CNN ({epochs} epochs, cached in {path})")
    from pgig_tf.cli.console import without_notices

    # under op determinism tf.data prints an internal notice on stderr, which without_notices drops
    with without_notices():
        with op_determinism():
            keras.utils.set_random_seed(seed)
            model = build_digits_cnn()
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=2 if verbose else 0)
        accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    model.save(path)
    with open(info_path, "w") as handle:
        json.dump({"test_accuracy": accuracy, "seed": seed, "epochs": epochs}, handle)
    return model, accuracy, data
