"""Paper-scale data and model for the degradation benchmark: VGG16, ImageNet preprocessing, TFDS image loading."""

import keras
import numpy as np
import tensorflow as tf

from pgig_tf.data import shard_bounds

# Caffe VGG16 channel means in BGR order (Keras' `vgg16.preprocess_input`).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


# ----------------------------------------------------------------------------------------------
# Model


def build_vgg16(input_size=224, weights="imagenet"):
    """Keras' VGG16 with the classifier top and a softmax output, at `input_size` x `input_size`.

    `weights`: "imagenet" (Keras downloads them; needs internet), None (random init) or the path
    of a local weights file (`.weights.h5`, or the legacy `.h5` Keras' VGG16 ships). Keras
    refuses include_top inputs other than 224 with pretrained weights, so for any other size
    (the reference code uses 225 so that 9x9 patches tile the image) the 224 model is built
    with the requested weights and its weights are copied, layer by layer, into the same
    architecture built at `input_size`. Five 2x2 max-pools with floor leave a 7x7x512 map for
    every size in 224..255, so every weight keeps its shape; other sizes raise ValueError.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise TypeError(f"input_size must be an int, got {input_size!r}")
    input_size = int(input_size)
    if input_size // 32 != 7:
        raise ValueError(f"input_size must be in 224..255 so that VGG16's fc1 sees a 7x7x512 map, got {input_size}")
    if weights is not None and not isinstance(weights, str):
        weights = str(weights)  # a pathlib.Path
    if input_size == 224:
        return keras.applications.VGG16(include_top=True, weights=weights, classifier_activation="softmax")
    model = keras.applications.VGG16(
        include_top=True, weights=None, input_shape=(input_size, input_size, 3), classifier_activation="softmax"
    )
    if weights is None:
        return model
    source = keras.applications.VGG16(include_top=True, weights=weights, classifier_activation="softmax")
    _copy_weights(source, model)
    return model


def _copy_weights(source, target):
    """Copies every layer's weights from `source` to the layer of the same name in `target`."""
    for layer in target.layers:
        if not layer.weights:
            continue  # the input layers' auto-numbered names differ
        values = source.get_layer(layer.name).get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            raise ValueError(f"layer '{layer.name}': weight shapes differ between the 224 and the target model")
        layer.set_weights(values)


# ----------------------------------------------------------------------------------------------
# Preprocessing (RGB images in [0, 255], uint8 or float; one image (H, W, C), a batch
# (n, H, W, C), or a list of images of different sizes; 1-channel images are repeated to RGB)


def preprocess_caffe(images, size=225, antialias=True):
    """Caffe VGG16 preprocessing as the reference code runs it: squash-resize, BGR, mean subtracted.

    Resizes to `size` x `size` without keeping the aspect ratio (no crop; bilinear, with an
    antialiasing filter when shrinking, like PIL), flips RGB to BGR and subtracts
    `CAFFE_MEAN_BGR`, no scaling: Keras' `vgg16.preprocess_input` after the resize. 225 makes
    9x9 patches tile the image (625 patches). Returns float32, numpy for numpy input and a
    tensor for a tensor (so it works inside `tf.data` maps).
    """

    def run(x):
        x = tf.image.resize(x, (size, size), method="bilinear", antialias=antialias)
        return x[..., ::-1] - tf.constant(CAFFE_MEAN_BGR, tf.float32)

    return _apply(run, images)


def preprocess_crop_unit(images, size=224, resize_to=256, antialias=True):
    """The paper text's variant: shorter side resized to `resize_to` (256), center crop, scaled to [-1, 1].

    The aspect ratio is kept (the longer side becomes round(long * 256 / short)); the
    `size` x `size` center crop is then mapped by x / 127.5 - 1, channels stay RGB. VGG16's
    Caffe ('imagenet') weights expect `preprocess_caffe`; this variant is for models trained
    with [-1, 1] inputs.
    """
    if resize_to < size:
        raise ValueError(f"resize_to ({resize_to}) must be at least the crop size ({size})")

    def run(x):
        shape = tf.shape(x)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        scale = resize_to / tf.minimum(height, width)
        new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), resize_to)
        new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), resize_to)
        x = tf.image.resize(x, tf.stack([new_height, new_width]), method="bilinear", antialias=antialias)
        top, left = (new_height - size) // 2, (new_width - size) // 2
        x = x[:, top : top + size, left : left + size, :]
        return tf.ensure_shape(x, [None, size, size, x.shape[-1]]) / 127.5 - 1.0

    return _apply(run, images)


# name -> (function, input size); the function's default size is that size.
PREPROCESSING = {"caffe225": (preprocess_caffe, 225), "crop224": (preprocess_crop_unit, 224)}


def unit_preprocessing(height, width, channels):
    """The preprocessing for a model of one's own: squash to its input size, match its channels, scale to [-1, 1].

    Args:
        height, width, channels: the model's input size.

    Returns:
        A function of one (H, W, C) image tensor with values in [0, 255] (for `tfds_image_dataset`'s
        `preprocess`): resized bilinearly to (height, width) without keeping the aspect ratio,
        RGB turned grey or grey repeated to RGB as `channels` asks, then x / 127.5 - 1.
    """

    def preprocess(image):
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        if channels == 1 and image.shape[-1] == 3:
            image = tf.image.rgb_to_grayscale(image)
        elif channels == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return image / 127.5 - 1.0

    return preprocess


def _apply(run, images):
    """Runs `run` on a float32 (n, H, W, 3) tensor made from `images`; returns the caller's kind of array."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        return np.stack([_apply(run, image) for image in images])
    is_tensor = tf.is_tensor(images)
    x = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if x.shape.rank not in (3, 4):
        raise ValueError(f"images must be (H, W, C) or (n, H, W, C), got shape {tuple(x.shape)}")
    single = x.shape.rank == 3
    if single:
        x = x[None]
    channels = x.shape[-1]
    if channels == 1:
        x = tf.tile(x, [1, 1, 1, 3])
    elif channels not in (3, None):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got {channels}")
    y = run(x)
    if single:
        y = y[0]
    return y if is_tensor else y.numpy()


def _resolve_preprocess(preprocess):
    if isinstance(preprocess, str):
        if preprocess not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {preprocess!r}; known: {sorted(PREPROCESSING)} or a callable")
        return PREPROCESSING[preprocess][0]
    if not callable(preprocess):
        raise TypeError(f"preprocess must be a name in PREPROCESSING or a callable, got {preprocess!r}")
    return preprocess


# ----------------------------------------------------------------------------------------------
# TFDS loading


def tfds_image_dataset(name, split, data_dir=None, manual_dir=None, num_images=None, preprocess="caffe225", shard=None):
    """An unbatched `tf.data.Dataset` of (preprocessed float32 image, int64 label) from a TFDS dataset.

    Any TFDS dataset with "image" and "label" features works. `imagenet2012` cannot be
    downloaded: put `ILSVRC2012_img_val.tar` (and/or the train tar) in `manual_dir` (TFDS'
    default is `<data_dir>/downloads/manual`); the first call prepares the TFRecords in
    `data_dir`, later calls read them. TFDS' imagenet2012 labels use the sorted-WordNet-id class
    order, which is Keras' ImageNet class order.

    Order is the split's file order (no shuffling). `num_images` keeps the first images of the
    split; `shard=(num_shards, index)` or `(num_shards, index, block)` then keeps contiguous
    shard `index` of `num_shards` (`data.shard_bounds`, of whole blocks of `block` images), so
    the shards of one call partition the same first `num_images` images in order. Images are decoded and preprocessed only after the take/shard, so a
    shard decodes only its own images. `preprocess` is a name in `PREPROCESSING` or a callable
    on one (H, W, C) uint8 image tensor.
    """
    import tensorflow_datasets as tfds

    preprocess = _resolve_preprocess(preprocess)
    if num_images is not None:
        if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
            raise ValueError(f"num_images must be a positive int or None, got {num_images!r}")
    if shard is not None:
        try:
            values = tuple(int(v) for v in shard)
        except (TypeError, ValueError):
            values = ()
        if len(values) not in (2, 3):
            raise ValueError(f"shard must be (num_shards, index) or (num_shards, index, block), got {shard!r}")
        num_shards, index, block = values + (1,) * (3 - len(values))
        if num_shards < 1 or not 0 <= index < num_shards or block < 1:
            raise ValueError(f"shard needs num_shards >= 1, 0 <= index < num_shards and block >= 1, got {shard!r}")
    kwargs = {}
    if manual_dir is not None:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        }
    ds, info = tfds.load(
        name,
        split=split,
        data_dir=None if data_dir is None else str(data_dir),
        shuffle_files=False,
        with_info=True,
        decoders={"image": tfds.decode.SkipDecoding()},  # decode after take/shard
        **kwargs,
    )
    missing = [key for key in ("image", "label") if key not in info.features]
    if missing:
        raise ValueError(f"dataset '{name}' has no {missing} feature(s); its features: {list(info.features)}")
    if num_images is not None:
        ds = ds.take(num_images)
    if shard is not None:  # contiguous, as everywhere in pgig_tf (data.shard_bounds)
        total = int(ds.cardinality())
        if total < 0:  # unknown: count the (still undecoded) examples
            total = int(ds.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
        start, stop = shard_bounds(total, num_shards, index, block)
        ds = ds.skip(start).take(stop - start)
    image_feature = info.features["image"]

    def decode(example):
        image = image_feature.decode_example(example["image"])
        return tf.cast(preprocess(image), tf.float32), tf.cast(example["label"], tf.int64)

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def iterate_tfds_images(name, split, batch_size=32, **kwargs):
    """Batches (images float32 (b, S, S, 3), labels int64 (b,)) as numpy; arguments as `tfds_image_dataset`."""
    ds = tfds_image_dataset(name, split, **kwargs).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def load_tfds_images(name, split, data_dir=None, manual_dir=None, num_images=None, preprocess="caffe225", shard=None):
    """(images float32 (n, S, S, 3), labels int64 (n,)) in memory; see `tfds_image_dataset`.

    All 50k ImageNet validation images at 225 take 30 GB: use `iterate_tfds_images` for them.
    """
    images, labels = [], []
    batches = iterate_tfds_images(
        name,
        split,
        batch_size=64,
        data_dir=data_dir,
        manual_dir=manual_dir,
        num_images=num_images,
        preprocess=preprocess,
        shard=shard,
    )
    for x, y in batches:
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError(f"no images in {name} split {split!r} (shard {shard})")
    return np.concatenate(images), np.concatenate(labels)
