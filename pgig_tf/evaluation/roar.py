"""ROAR and KAR (Hooker et al., NeurIPS 2019): retrain on images whose most (or least) relevant pixels are replaced."""

import numbers

import numpy as np

from pgig_tf.evaluation.perturbation import road_fill
from pgig_tf.validation import check_float_images, check_nonnegative_seed, check_positive_int

KINDS = ("roar", "kar")  # remove and retrain; keep and retrain
ROAD = "road"
# ROAD's noise for images scaled to [0, 1] is 0.01 (Rong et al., ICML 2022); twice that for [-1, 1].
DEFAULT_ROAD_NOISE = 0.02


def pixel_ranks(attributions, absolute=False):
    """(n, H, W) int: each pixel's rank, 0 = most relevant, by the channel-summed attribution.

    The score of a pixel is the attribution summed over channels (its absolute value if
    `absolute`), highest first; equal scores keep the pixels' row-major order (a stable sort).

    Args:
        attributions: real array (n, H, W, C) or (n, H, W).
        absolute: rank by |channel sum| instead of the signed channel sum.

    Returns:
        int64 array (n, H, W).

    Raises:
        TypeError, ValueError: for a non-numeric array, another number of axes, or NaN/Inf.
    """
    scores = _channel_sums(attributions)
    if absolute:
        scores = np.abs(scores)
    n = len(scores)
    flat = scores.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(flat.shape[1]), flat.shape), axis=1)
    return ranks.reshape(scores.shape)


def top_count(fraction, num_pixels):
    """round(fraction x num_pixels), halves rounded up: how many pixels the top `fraction` holds."""
    return int(np.floor(fraction * num_pixels + 0.5))


def replaced_pixels(attributions, fraction, keep=False, absolute=False):
    """(n, H, W) bool: the pixels that ROAR (keep=False) or KAR (keep=True) replaces.

    The top k = `top_count(fraction, H x W)` pixels of each image by `pixel_ranks` are replaced
    for ROAR; for KAR they are kept and all other pixels replaced.

    Args:
        attributions: real array (n, H, W, C) or (n, H, W).
        fraction: the share of pixels in the top group, in [0, 1].
        keep: False for ROAR (replace the top group), True for KAR (replace the rest).
        absolute: rank by |channel sum| instead of the signed channel sum.

    Returns:
        bool array (n, H, W), True where a pixel is replaced.

    Raises:
        TypeError, ValueError: bad attributions or a fraction outside [0, 1].
    """
    fraction = _check_fraction(fraction)
    ranks = pixel_ranks(attributions, absolute)
    top = ranks < top_count(fraction, ranks[0].size)
    return ~top if keep else top


def modified_images(
    images, attributions, fraction, keep, fill, absolute=False, road_noise=DEFAULT_ROAD_NOISE, seed=0, ids=None
):
    """The images of ROAR (keep=False) or KAR (keep=True): their `replaced_pixels` set to `fill`.

    Hooker et al. (NeurIPS 2019, §3) replace the pixels with the training set's per-channel mean,
    so that the replaced value itself carries no class information; ROAD's noisy linear
    imputation (Rong et al., ICML 2022) fills them from their kept neighbours instead, so the
    replaced pixels' positions show less.

    Args:
        images: float array (n, H, W, C).
        attributions: real array (n, H, W, C) or (n, H, W), one map per image.
        fraction: the share of pixels in the top group (ranked by `pixel_ranks`), in [0, 1].
        keep: False for ROAR (replace the top round(fraction x H x W) pixels), True for KAR
            (keep them, replace all other pixels).
        fill: a value per channel (shape (C,) or a scalar), e.g. the training set's per-channel
            mean (`channel_means`); or "road": `imputation.noisy_linear_impute` of the replaced
            pixels (an image with every pixel replaced becomes its per-channel mean plus the noise).
        absolute: rank by |channel sum| instead of the signed channel sum.
        road_noise: fill="road": the noise's standard deviation, absolute (default 0.02, ROAD's
            0.01 for [0, 1] scaled to images in [-1, 1]).
        seed: fill="road": non-negative int seeding the noise.
        ids: fill="road": non-negative int per image keying its noise stream (default 0..n-1);
            pass each image's index in the whole data set to make the noise independent of batching.

    Returns:
        Array like `images` (same shape and dtype); pixels not replaced are the input's bit for bit.

    Raises:
        TypeError, ValueError: for bad shapes or values, or a fill of the wrong size.
    """
    images = check_float_images(images)
    attributions = np.asarray(attributions)
    if attributions.shape[:3] != images.shape[:3] or attributions.ndim not in (3, 4):
        raise ValueError(
            f"attributions must have shape {images.shape[:3]} or {images.shape[:3]} + (C,) (one map per image), "
            f"got {attributions.shape}"
        )
    if not isinstance(keep, (bool, np.bool_)):
        raise TypeError(f"keep must be a bool (False: ROAR, True: KAR), got {keep!r}")
    removed = replaced_pixels(attributions, fraction, bool(keep), absolute)
    if isinstance(fill, str):
        if fill != ROAD:
            raise ValueError(f"fill must be per-channel values or {ROAD!r}, got {fill!r}")
        seed = check_nonnegative_seed(seed)
        ids = np.arange(len(images)) if ids is None else np.asarray(ids)
        if ids.shape != (len(images),) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
            raise ValueError(f"ids must be {len(images)} non-negative ints (one per image), got {ids!r}")
        if isinstance(road_noise, bool) or not isinstance(road_noise, numbers.Real) or not 0 <= road_noise < np.inf:
            raise ValueError(f"road_noise must be a finite number >= 0 (a standard deviation), got {road_noise!r}")
        return road_fill(images, removed, float(road_noise), seed, ids[:, None]).astype(images.dtype)
    values = np.asarray(fill, dtype=np.float64)
    channels = images.shape[-1]
    if values.ndim > 1 or values.size not in (1, channels) or not np.all(np.isfinite(values)):
        raise ValueError(f"fill must be a finite scalar or {channels} per-channel values, or {ROAD!r}, got {fill!r}")
    values = np.broadcast_to(values.reshape(-1), (channels,)).astype(images.dtype)
    return np.where(removed[..., None], values, images)


def channel_means(images):
    """(C,) float64: the per-channel mean of `images` (n, H, W, C), the constant fill of ROAR/KAR."""
    return check_float_images(images).mean(axis=(0, 1, 2), dtype=np.float64)


class Retrainer:
    """Trains a fresh model from `build_model` and returns its test accuracy (ROAR's retraining step).

    Each training is the embedded digits CNN's (`datasets.digits.trained_digits_cnn`):
    `keras.utils.set_random_seed(seed)`, a new model from `build_model()`, Adam (learning rate
    `learning_rate`), sparse categorical cross-entropy, `epochs` epochs of shuffled batches of
    `batch_size`; the accuracy is the share of test images whose argmax prediction is the label.

    With reuse=True one compiled model per builder is kept and, for every training, given the
    fresh model's initial weights and the optimizer's initial state, so its training step is not
    traced again; the trained weights are bit for bit those of a fresh model (the tests check
    this). Under `tf.config.experimental.enable_op_determinism()` the same seed and data give the
    same accuracy.

    Args:
        build_model: callable returning a new, uncompiled Keras model with a softmax output.
        epochs: training epochs (>= 1).
        batch_size: training batch size (>= 1).
        learning_rate: Adam's learning rate (> 0).
        predict_batch_size: batch size of the test predictions (a speed setting only).
        reuse: keep one compiled model (True) or compile a new one for every training (False).
    """

    def __init__(self, build_model, epochs=10, batch_size=64, learning_rate=1e-3, predict_batch_size=1024, reuse=True):
        if not callable(build_model):
            raise TypeError(f"build_model must be a callable returning a new Keras model, got {build_model!r}")
        self.build_model = build_model
        self.epochs = check_positive_int(epochs, "epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.predict_batch_size = check_positive_int(predict_batch_size, "predict_batch_size")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.reuse = bool(reuse)
        self._held = None
        self._optimizer_start = None

    def _compiled(self, model):
        import keras

        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="sparse_categorical_crossentropy")
        return model

    def _model(self, seed):
        """A model with the seeded initial weights and a fresh optimizer, ready to fit."""
        import keras

        keras.utils.set_random_seed(seed)
        fresh = self.build_model()
        if not self.reuse:
            return self._compiled(fresh)
        if self._held is None:
            self._held = self._compiled(fresh)
            self._held.optimizer.build(self._held.trainable_variables)
            self._optimizer_start = [np.array(v.numpy()) for v in self._held.optimizer.variables]
            return self._held
        held = self._held
        if [w.shape for w in held.weights] != [w.shape for w in fresh.weights]:
            raise ValueError("build_model returned a model of another architecture than its first one")
        held.set_weights(fresh.get_weights())
        for variable, value in zip(held.optimizer.variables, self._optimizer_start):
            variable.assign(value)  # iteration 0, zero moments: the state of a new optimizer
        return held

    def train(self, x_train, y_train, seed):
        """The model trained on (x_train, y_train) with `seed` (with reuse=True, the one held model: it
        changes at the next training).

        Args:
            x_train: training images.
            y_train: their int labels.
            seed: non-negative int for `keras.utils.set_random_seed` (initial weights, shuffling).

        Returns:
            the trained Keras model.
        """
        seed = check_nonnegative_seed(seed)
        model = self._model(seed)
        model.fit(x_train, y_train, epochs=self.epochs, batch_size=self.batch_size, verbose=0)
        return model

    def accuracy(self, x_train, y_train, x_test, y_test, seed):
        """Test accuracy of the model trained on (x_train, y_train) with `seed` (`train`).

        Args:
            x_train: training images.
            y_train: their int labels.
            x_test: test images.
            y_test: their int labels.
            seed: non-negative int for `keras.utils.set_random_seed` (initial weights, shuffling).

        Returns:
            float: the share of test images predicted correctly.
        """
        model = self.train(x_train, y_train, seed)
        step = self.predict_batch_size
        # predict_on_batch: the compiled prediction without a new input pipeline per call
        predicted = np.concatenate(
            [np.argmax(model.predict_on_batch(x_test[i : i + step]), axis=1) for i in range(0, len(x_test), step)]
        )
        return float(np.mean(predicted == np.asarray(y_test)))


def retrained_accuracy(
    build_model, x_train, y_train, x_test, y_test, seed, epochs=10, batch_size=64, learning_rate=1e-3
):
    """Test accuracy of a fresh model from `build_model` trained on (x_train, y_train) with `seed`.

    Hooker et al. (2019) retrain from scratch on the modified training images and measure the
    accuracy on the equally modified test images. The training is `Retrainer`'s (the digits
    CNN's hyperparameters by default), with a newly compiled model.

    Returns:
        float: the share of test images predicted correctly.
    """
    retrainer = Retrainer(build_model, epochs, batch_size, learning_rate, reuse=False)
    return retrainer.accuracy(x_train, y_train, x_test, y_test, seed)


def _channel_sums(attributions):
    if hasattr(attributions, "numpy"):
        attributions = attributions.numpy()
    array = np.asarray(attributions)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"attributions must be a real numeric array, got dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(f"attributions must have shape (n, H, W, C) or (n, H, W), got {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("attributions contains NaN or Inf")
    return array.sum(axis=-1) if array.ndim == 4 else array


def _check_fraction(fraction):
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    return float(fraction)
