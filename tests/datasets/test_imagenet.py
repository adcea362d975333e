"""VGG16 at 225, ImageNet preprocessing, TFDS loading (mocked), and the reference pattern file on the full-size VGG16.

The tests on the full-size VGG16 (two models of 138 M weights, 0.55 GB each, and its 0.4 GB
first dense kernel in the reference layout) are marked `slow`: `python -m pytest -m slow`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pgig_tf import Patterns
from pgig_tf.datasets.imagenet import (
    CAFFE_MEAN_BGR,
    PREPROCESSING,
    build_vgg16,
    iterate_tfds_images,
    load_tfds_images,
    preprocess_caffe,
    preprocess_crop_unit,
    tfds_image_dataset,
)
from pgig_tf.patterns.reference import load_reference_vgg16_patterns, to_reference_layout

VGG_KERNEL_LAYERS = [
    "block1_conv1",
    "block1_conv2",
    "block2_conv1",
    "block2_conv2",
    "block3_conv1",
    "block3_conv2",
    "block3_conv3",
    "block4_conv1",
    "block4_conv2",
    "block4_conv3",
    "block5_conv1",
    "block5_conv2",
    "block5_conv3",
    "fc1",
    "fc2",
    "predictions",
]


# ---------------------------------------------------------------------------------------------
# VGG16


@pytest.fixture(scope="module")
def vgg224():
    keras.utils.set_random_seed(0)
    return build_vgg16(224, weights=None)


@pytest.fixture(scope="module")
def vgg225(vgg224, tmp_path_factory):
    """The 225 model built from a weights file saved from `vgg224` (the local-file weights path)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16.weights.h5"
    vgg224.save_weights(path)
    keras.utils.set_random_seed(1)  # so that an untransferred weight would differ
    return build_vgg16(225, weights=path)


@pytest.mark.slow
def test_vgg16_225_has_the_224_models_layers_and_weights(vgg224, vgg225):
    assert vgg224.input_shape == (None, 224, 224, 3)
    assert vgg225.input_shape == (None, 225, 225, 3)
    assert vgg225.output_shape == (None, 1000)
    assert [layer.name for layer in vgg225.layers[1:]] == [layer.name for layer in vgg224.layers[1:]]
    assert len(vgg225.layers) == len(vgg224.layers) == 23
    assert [layer.name for layer in vgg225.layers if layer.weights] == VGG_KERNEL_LAYERS
    assert vgg225.get_layer("flatten").output.shape == (None, 25088)
    assert vgg225.get_layer("predictions").activation is keras.activations.softmax
    w224, w225 = vgg224.get_weights(), vgg225.get_weights()
    assert len(w224) == len(w225) == 32
    for a, b in zip(w224, w225):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_vgg16_225_computes_what_the_224_layers_compute_on_a_225_image(vgg224, vgg225):
    rng = np.random.default_rng(0)
    x = preprocess_caffe(rng.integers(0, 256, (1, 225, 225, 3), dtype=np.uint8))
    # Reference: the 224 model's own layer objects called one after another on the 225 image.
    h = tf.constant(x)
    for layer in vgg224.layers[1:]:
        h = layer(h)
        if layer.name == "fc2":
            reference_fc2 = h.numpy()
    features = keras.Model(vgg225.input, vgg225.get_layer("fc2").output)(x).numpy()
    assert np.abs(reference_fc2).max() > 0
    np.testing.assert_allclose(features, reference_fc2, rtol=1e-4, atol=1e-6 * np.abs(reference_fc2).max())
    probabilities = vgg225(x).numpy()
    assert probabilities.shape == (1, 1000)
    assert np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(probabilities, h.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("size", [223, 256, 32])
def test_build_vgg16_rejects_sizes_without_a_7x7_map(size):
    with pytest.raises(ValueError, match="224..255"):
        build_vgg16(size, weights=None)


# ---------------------------------------------------------------------------------------------
# Preprocessing


def test_caffe_at_224_is_keras_vgg16_preprocess_input_after_the_same_resize():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 150, 190, 3), dtype=np.uint8)
    ours = preprocess_caffe(x, size=224)
    resized = tf.image.resize(x.astype(np.float32), (224, 224), method="bilinear", antialias=True).numpy()
    expected = keras.applications.vgg16.preprocess_input(resized.copy())
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    as_tensor = preprocess_caffe(tf.constant(x), size=224)
    assert tf.is_tensor(as_tensor)
    np.testing.assert_allclose(as_tensor.numpy(), expected, atol=1e-4)


def test_caffe_squashes_to_225_flips_to_bgr_and_subtracts_the_mean():
    image = np.empty((300, 400, 3), np.uint8)
    image[...] = (10, 200, 50)  # RGB
    out = preprocess_caffe(image)
    assert out.shape == (225, 225, 3)
    expected = np.array([50 - 103.939, 200 - 116.779, 10 - 123.68], np.float32)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-3)
    assert CAFFE_MEAN_BGR == (103.939, 116.779, 123.68)


def test_preprocessing_takes_batches_lists_of_sizes_and_grayscale():
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    out = preprocess_caffe(batch)
    for i in range(3):
        np.testing.assert_allclose(out[i], preprocess_caffe(batch[i]), atol=1e-4)
    images = [rng.integers(0, 256, (17, 50, 3), dtype=np.uint8), rng.integers(0, 256, (300, 20, 3), dtype=np.uint8)]
    stacked = preprocess_crop_unit(images)
    assert stacked.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(stacked[1], preprocess_crop_unit(images[1]), atol=1e-5)
    gray = rng.integers(0, 256, (20, 20, 1), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_caffe(gray), preprocess_caffe(np.repeat(gray, 3, axis=-1)), atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        preprocess_caffe(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        preprocess_caffe(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("portrait", [False, True])
def test_crop_unit_resizes_the_short_side_to_256_center_crops_and_scales(portrait):
    # A ramp along the long side: value j * 255 / 399 at column j of a 300 x 400 image.
    ramp = np.arange(400, dtype=np.float32) * 255.0 / 399.0
    image = np.repeat(np.broadcast_to(ramp, (300, 400))[..., None], 3, axis=-1)
    if portrait:
        image = image.transpose(1, 0, 2)
    out = preprocess_crop_unit(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    if portrait:
        out = out.transpose(1, 0, 2)
    # Long side 400 -> round(400 * 256 / 300) = 341, crop starts at (341 - 224) // 2 = 58.
    k = np.arange(224)
    source = (k + 58 + 0.5) * 400.0 / 341.0 - 0.5
    expected = source * 255.0 / 399.0 / 127.5 - 1.0
    np.testing.assert_allclose(out[112, 4:-4, 0], expected[4:-4], atol=2e-3)
    np.testing.assert_allclose(out[:, 100, 1], np.full(224, expected[100]), atol=2e-3)


def test_crop_unit_keeps_rgb_and_maps_0_255_to_minus_one_one():
    red = np.zeros((256, 300, 3), np.uint8)
    red[..., 0] = 255
    out = preprocess_crop_unit(red)
    np.testing.assert_allclose(out[..., 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[..., 1:], -1.0, atol=1e-5)
    with pytest.raises(ValueError, match="resize_to"):
        preprocess_crop_unit(red, size=224, resize_to=200)


def test_preprocessing_table_names_function_and_size():
    assert PREPROCESSING == {"caffe225": (preprocess_caffe, 225), "crop224": (preprocess_crop_unit, 224)}
    image = np.zeros((100, 120, 3), np.uint8)
    for function, size in PREPROCESSING.values():
        assert function(image).shape == (size, size, 3)


# ---------------------------------------------------------------------------------------------
# TFDS loading (tfds.testing.mock_data: random images of random sizes, no files needed)


def _raw(name, split):
    """(image, label) pairs in split order, decoded from the stored bytes as tfds_image_dataset does.

    (The mock JPEG-encodes its random images only when decoding is skipped, so a plain
    `tfds.load` would give the images before the lossy encoding.)
    """
    ds, info = tfds.load(name, split=split, with_info=True, decoders={"image": tfds.decode.SkipDecoding()})
    decode = info.features["image"].decode_example
    return [(decode(example["image"]).numpy(), int(example["label"])) for example in ds]


def test_imagenet2012_mock_loads_preprocessed_images_in_order(tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        raw = _raw("imagenet2012", "validation")
        images, labels = load_tfds_images("imagenet2012", "validation", manual_dir=tmp_path, num_images=5)
        cropped, labels_crop = load_tfds_images("imagenet2012", "validation", num_images=2, preprocess="crop224")
    assert len({image.shape for image, _ in raw}) > 1  # random sizes
    assert images.shape == (5, 225, 225, 3) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert labels.tolist() == [label for _, label in raw[:5]]
    for i in range(5):
        np.testing.assert_allclose(images[i], preprocess_caffe(raw[i][0]), atol=1e-4)
    assert cropped.shape == (2, 224, 224, 3) and labels_crop.tolist() == labels[:2].tolist()
    np.testing.assert_allclose(cropped[1], preprocess_crop_unit(raw[1][0]), atol=1e-5)


def test_shards_partition_the_first_num_images():
    with tfds.testing.mock_data(num_examples=10):
        all_images, all_labels = load_tfds_images("imagenet2012", "validation", num_images=7)
        shards = [load_tfds_images("imagenet2012", "validation", num_images=7, shard=(3, i)) for i in range(3)]
    for (images, labels), (start, stop) in zip(shards, [(0, 3), (3, 5), (5, 7)]):  # contiguous blocks
        assert labels.tolist() == all_labels[start:stop].tolist()
        np.testing.assert_array_equal(images, all_images[start:stop])
    assert sum(len(labels) for _, labels in shards) == 7


def test_shards_of_whole_blocks_hold_whole_batches():
    """shard=(num_shards, index, block): 7 images in blocks of 3 are 3 blocks, shared 2 and 1."""
    with tfds.testing.mock_data(num_examples=10):
        all_images, all_labels = load_tfds_images("imagenet2012", "validation", num_images=7)
        shards = [load_tfds_images("imagenet2012", "validation", num_images=7, shard=(2, i, 3)) for i in range(2)]
    for (images, labels), (start, stop) in zip(shards, [(0, 6), (6, 7)]):
        assert labels.tolist() == all_labels[start:stop].tolist()
        np.testing.assert_array_equal(images, all_images[start:stop])


@pytest.mark.parametrize("shard", [(2,), (2, 0, 3, 1), (2, 2), (0, 0), (2, 0, 0), "ab", 5])
def test_a_bad_shard_is_a_value_error_naming_it(shard):
    with pytest.raises(ValueError, match=r"shard (must be|needs)"):
        tfds_image_dataset("imagenet2012", "validation", shard=shard)


def test_iterate_tfds_images_batches_the_same_images():
    with tfds.testing.mock_data(num_examples=6):
        images, labels = load_tfds_images("imagenet2012", "validation", num_images=5)
        batches = list(iterate_tfds_images("imagenet2012", "validation", batch_size=2, num_images=5))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    assert np.concatenate([y for _, y in batches]).tolist() == labels.tolist()


def test_mnist_mock_grayscale_and_a_custom_preprocess():
    with tfds.testing.mock_data(num_examples=4):
        raw = _raw("mnist", "test")
        images, labels = load_tfds_images("mnist", "test", num_images=3)
        scaled, _ = load_tfds_images("mnist", "test", num_images=3, preprocess=lambda im: tf.cast(im, tf.float32) / 255)
    assert images.shape == (3, 225, 225, 3)
    assert labels.tolist() == [label for _, label in raw[:3]]
    pixels = images + np.array(CAFFE_MEAN_BGR, np.float32)  # gray -> B = G = R
    np.testing.assert_allclose(pixels[..., 0], pixels[..., 2], atol=1e-3)
    np.testing.assert_allclose(pixels[..., 1], pixels[..., 2], atol=1e-3)
    assert scaled.shape == (3, 28, 28, 1)
    np.testing.assert_allclose(scaled, np.stack([image for image, _ in raw[:3]]) / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shard": (2, 2)}, "shard"),
        ({"shard": 3}, "shard"),
        ({"num_images": 0}, "num_images"),
        ({"preprocess": "nope"}, "unknown preprocessing"),
    ],
)
def test_load_tfds_images_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_tfds_images("mnist", "test", **kwargs)


@pytest.mark.slow
def test_full_size_vgg16_reference_patterns(vgg224, vgg225, tmp_path):
    kernels = {name: vgg224.get_layer(name).kernel.numpy() for name in VGG_KERNEL_LAYERS}
    reference = to_reference_layout(Patterns(kernels), vgg224)
    assert list(reference) == [f"A_{i}" for i in range(16)]
    assert reference["A_0"].shape == (64, 3, 3, 3)
    assert reference["A_12"].shape == (512, 512, 3, 3)
    assert reference["A_13"].shape == (25088, 4096)
    assert reference["A_15"].shape == (4096, 1000)
    rng = np.random.default_rng(5)
    for c, h, w, j in zip(
        rng.integers(0, 512, 20), rng.integers(0, 7, 20), rng.integers(0, 7, 20), rng.integers(0, 4096, 20)
    ):
        assert reference["A_13"][c * 49 + h * 7 + w, j] == kernels["fc1"][(h * 7 + w) * 512 + c, j]
    assert reference["A_12"][7, 300, 0, 2] == kernels["block5_conv3"][0, 2, 300, 7]
    path = tmp_path / "imagenet_224_vgg_16.patterns.A_only.npz"
    np.savez(path, **reference)
    del reference
    patterns = load_reference_vgg16_patterns(path, vgg225)  # same kernel shapes at 225
    assert list(patterns) == VGG_KERNEL_LAYERS
    patterns.check(vgg225)
    for name in VGG_KERNEL_LAYERS:
        np.testing.assert_array_equal(patterns[name], kernels[name])
