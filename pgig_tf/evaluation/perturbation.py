"""Perturbation curves in either order (MoRF, LeRF), with constant, mean, blur or ROAD replacements, and their areas.

Pieces that compose:
- units and ranking: p x p patches (pixels for p = 1) scored by the channel-summed attribution
  averaged per patch (signed, or absolute), ranked by `degradation.patch_ranks` (0 = most relevant);
- order: 'morf' changes the most relevant unit first, 'lerf' the least relevant first (the exact
  reverse of the MoRF order);
- mode: 'remove' replaces the changed units (MoRF, LeRF, deletion), 'insert' starts from the fully
  replaced image and restores the changed units (insertion);
- replacement: 'image_mean' (per-channel mean of the image), 'own_patch_mean' (each patch by its
  own per-channel mean; no change for pixels), a number (a constant), 'blur' (a Gaussian blur of
  the image) or 'road' (ROAD's noisy linear imputation of the removed pixels);
- schedule: curve point k has min(k * units_per_step, N) of the N units changed, k = 0..num_steps;
- areas: `Curves.area`, the trapezoid over the fraction of units changed (x = changed / N, from 0
  to 1 for the default schedule, where it is the mean output over the whole range), and
  `Curves.aupc`, the trapezoid with unit spacing over k (output x steps; the `aupc` of
  `degradation`, kept for comparison with the degradation benchmark); `symmetric_relevance_gain`.

Model calls are float32, compiled once per image shape and evaluated in chunks of `batch_size`
copies; images stream through in groups of `images_per_call`, so memory does not grow with the
number of images. ROAD's copies are imputed on the host (scipy) and fed to the same compiled model call.
"""

import concurrent.futures
import numbers
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pgig_tf.evaluation.degradation import _to_pixels, aupc, ends_in_softmax, patch_ranks, patch_scores
from pgig_tf.evaluation.imputation import noise_generator, noisy_linear_impute
from pgig_tf.model.spec import model_io
from pgig_tf.names import PERTURBATION_REPLACEMENTS
from pgig_tf.validation import check_first_index, check_inputs, check_positive_int

ORDERS = ("morf", "lerf")
MODES = ("remove", "insert")
REPLACEMENTS = PERTURBATION_REPLACEMENTS
DEFAULT_BLUR_SIGMA = 5.0  # pixels; the kernel is truncated at ceil(3 sigma)
DEFAULT_ROAD_NOISE = 0.01  # absolute; ROAD's value for images scaled to [0, 1]


@dataclass(frozen=True, eq=False)
class Curves:
    """Perturbation curves of n images: `values` (n, S), the explained output at each of S points;
    `fractions` (S,), the share of units changed (removed, or restored for insertion) at each point."""

    values: np.ndarray
    fractions: np.ndarray

    @property
    def area(self):
        """(n,) trapezoid area over the fraction axis (output x fraction; the mean output when it spans [0, 1])."""
        return curve_area(self.values, self.fractions)

    @property
    def aupc(self):
        """(n,) trapezoid area with unit spacing over the points k = 0..S-1 (output x steps), as `degradation.aupc`."""
        return aupc(self.values)


def curve_area(curves, fractions):
    """Trapezoid area of `curves` (..., S) over the x values `fractions` (S,) (increasing)."""
    curves = np.asarray(curves, dtype=np.float64)
    x = np.asarray(fractions, dtype=np.float64)
    if x.ndim != 1 or curves.shape[-1] != len(x) or len(x) < 2:
        raise ValueError(
            f"fractions must be 1-D with one entry per curve point ({curves.shape[-1]}, >= 2), got shape {x.shape}"
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"fractions must be strictly increasing, got {x.tolist()}")
    return ((curves[..., 1:] + curves[..., :-1]) * np.diff(x)).sum(axis=-1) / 2.0


def symmetric_relevance_gain(morf, lerf):
    """(n,) SRG = LeRF area - MoRF area (Blücher et al., TMLR 2024), higher is better; 0 in expectation for a random ranking.

    Both `Curves` must come from the same images, schedule and replacement (equal fractions).
    """
    if not isinstance(morf, Curves) or not isinstance(lerf, Curves):
        raise TypeError(f"morf and lerf must be Curves, got {type(morf).__name__} and {type(lerf).__name__}")
    if morf.values.shape != lerf.values.shape or not np.array_equal(morf.fractions, lerf.fractions):
        raise ValueError(
            f"morf and lerf curves must share images and schedule, got shapes {morf.values.shape} "
            f"and {lerf.values.shape}"
        )
    return lerf.area - morf.area


def removal_counts(num_units, units_per_step=1, num_steps=None):
    """(S,) int: units changed at each curve point, min(k * units_per_step, num_units) for k = 0..num_steps.

    num_steps=None runs until every unit is changed (ceil(num_units / units_per_step) steps).
    Raises ValueError if a step would change no unit.
    """
    num_units = check_positive_int(num_units, "num_units")
    units_per_step = check_positive_int(units_per_step, "units_per_step")
    needed = -(-num_units // units_per_step)
    if num_steps is None:
        num_steps = needed
    num_steps = check_positive_int(num_steps, "num_steps")
    if num_steps > needed:
        raise ValueError(
            f"num_steps={num_steps} exceeds the {needed} steps of {units_per_step} unit(s) that change "
            f"all {num_units} units"
        )
    return np.minimum(np.arange(num_steps + 1) * units_per_step, num_units).astype(np.int32)


def relevance_ranks(attributions, patch_size=1, absolute=False):
    """(n, H//p, W//p) int32: each unit's rank, 0 = most relevant (`degradation.patch_scores`, `patch_ranks`)."""
    patch_size = check_positive_int(patch_size, "patch_size")
    return patch_ranks(patch_scores(attributions, patch_size, bool(absolute)))


def gaussian_blur(images, sigma=DEFAULT_BLUR_SIGMA):
    """(B, H, W, C) Gaussian blur of each channel, kernel truncated at radius ceil(3 sigma) pixels.

    Near the border the kernel is renormalised over the pixels inside the image (a normalised
    convolution), so constant images stay constant. Works on float32 tensors or arrays.
    """
    sigma = _check_sigma(sigma)
    images = tf.convert_to_tensor(images, tf.float32)
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)

    def separable(x):
        channels = x.shape[-1]
        rows = tf.constant(np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, channels, 1)))
        cols = tf.constant(np.tile(taps.reshape(1, -1, 1, 1), (1, 1, channels, 1)))
        x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "SAME")
        return tf.nn.depthwise_conv2d(x, cols, [1, 1, 1, 1], "SAME")

    return separable(images) / separable(tf.ones_like(images[:1, :, :, :1]))


class PerturbationCurves:
    """Computes perturbation curves of `model` (float32 image model, one output vector) for images and attributions.

    Args:
        model: Keras model on images (batch, H, W, C).
        order: 'morf' (most relevant first) or 'lerf' (least relevant first).
        replacement: 'image_mean', 'own_patch_mean', 'blur', 'road', or a number (a constant).
        patch_size: side p of the square units; 1 ranks and changes single pixels. Pixels beyond
            the last whole patch are never changed.
        units_per_step: units changed between consecutive curve points.
        num_steps: curve points after the first; None runs until every unit is changed.
        mode: 'remove' (point k: the first k*units_per_step units of the order replaced) or
            'insert' (point k: the fully replaced image with those units restored).
        absolute: rank by |channel-summed attribution| instead of its signed value.
        blur_sigma: the 'blur' replacement's Gaussian sigma in pixels (default 5).
        road_noise: the 'road' replacement's noise standard deviation, absolute (default 0.01,
            ROAD's value for images in [0, 1]; scale it with your images' range).
        seed: the 'road' noise seed; copy (image i, point k) draws from
            `imputation.noise_generator(seed, (first_index + i, k))`. When a point has every
            pixel removed, ROAD has no known pixel; that copy is the image's per-channel mean plus
            the same noise.
        batch_size: copies per model call.
        images_per_call: images per compiled call (memory per call grows with it, not with n).
        apply_softmax: apply a softmax before reading the class; None applies it unless the model
            already ends in one, so curves record probabilities either way.
    """

    def __init__(
        self,
        model,
        order="morf",
        replacement="image_mean",
        *,
        patch_size=1,
        units_per_step=1,
        num_steps=None,
        mode="remove",
        absolute=False,
        blur_sigma=DEFAULT_BLUR_SIGMA,
        road_noise=DEFAULT_ROAD_NOISE,
        seed=0,
        batch_size=64,
        images_per_call=16,
        apply_softmax=None,
    ):
        self.model = model
        self._input_shape, self._width = model_io(model)
        if len(self._input_shape) != 4:
            raise ValueError(f"perturbation curves need an image model (batch, H, W, C); input is {self._input_shape}")
        self.order = _check_choice(order, ORDERS, "order")
        self.mode = _check_choice(mode, MODES, "mode")
        self.replacement = _check_replacement(replacement)
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.units_per_step = check_positive_int(units_per_step, "units_per_step")
        self.num_steps = None if num_steps is None else check_positive_int(num_steps, "num_steps")
        self.absolute = bool(absolute)
        self.blur_sigma = _check_sigma(blur_sigma)
        self.road_noise = _check_nonnegative(road_noise, "road_noise")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.images_per_call = check_positive_int(images_per_call, "images_per_call")
        self.apply_softmax = not ends_in_softmax(model) if apply_softmax is None else bool(apply_softmax)
        self._functions = {}

    # -- schedule -------------------------------------------------------------------------------
    def grid(self, image_shape):
        """(rows, cols) of units for images of shape (H, W, C) or (n, H, W, C)."""
        height, width = tuple(image_shape)[-3:-1]
        rows, cols = height // self.patch_size, width // self.patch_size
        if rows * cols == 0:
            raise ValueError(f"patch_size={self.patch_size} leaves no whole patch in a {height}x{width} image")
        return rows, cols

    def counts(self, image_shape):
        """(S,) units changed at each curve point for images of `image_shape`."""
        rows, cols = self.grid(image_shape)
        return removal_counts(rows * cols, self.units_per_step, self.num_steps)

    def fractions(self, image_shape):
        """(S,) share of units changed at each curve point, from 0 (to 1 when num_steps is None)."""
        rows, cols = self.grid(image_shape)
        return self.counts(image_shape) / float(rows * cols)

    # -- curves ---------------------------------------------------------------------------------
    def curves(self, images, attributions, targets=None, first_index=0):
        """Curves of `images` (n, H, W, C) ranked by `attributions` (same shape).

        `targets`: None (the class predicted on the clean image), one int, or one int per image.
        `first_index`: the global index of images[0] (only 'road' uses it, for its noise streams).
        """
        images = check_inputs(images, self._input_shape, name="images")
        attributions = np.asarray(attributions)
        if attributions.shape != images.shape:
            raise ValueError(f"attributions must be shaped like images {images.shape}, got {attributions.shape}")
        ranks = relevance_ranks(attributions, self.patch_size, self.absolute)
        return self.curves_for_ranks(images, ranks, targets, first_index)

    def curves_for_ranks(self, images, ranks, targets=None, first_index=0):
        """Curves of `images` for given relevance ranks (n, H//p, W//p), 0 = most relevant, one permutation per image."""
        images = check_inputs(images, self._input_shape, name="images")
        ranks = self._order(self._check_ranks(ranks, images.shape))
        targets = self._check_targets(targets, len(images))
        first_index = check_first_index(first_index)
        counts = self.counts(images.shape)
        if self.replacement == "road":
            values = self._road_curves(images, ranks, targets, counts, first_index)
        else:
            function = self._function("curves", images.shape[1:])
            values = np.empty((len(images), len(counts)), np.float32)
            for start in range(0, len(images), self.images_per_call):
                part = slice(start, start + self.images_per_call)
                values[part] = function(
                    tf.constant(images[part]), tf.constant(ranks[part]), tf.constant(targets[part]), tf.constant(counts)
                ).numpy()
        return Curves(values, self.fractions(images.shape))

    def perturbed(self, images, ranks, step, first_index=0):
        """(n, H, W, C) float32: the copies of `images` at curve point `step` (0..S-1) for relevance `ranks`."""
        images = check_inputs(images, self._input_shape, name="images")
        ranks = self._order(self._check_ranks(ranks, images.shape))
        counts = self.counts(images.shape)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < len(counts):
            raise ValueError(f"step must be an int in 0..{len(counts) - 1}, got {step!r}")
        first_index = check_first_index(first_index)
        steps = np.full(len(images), step)
        if self.replacement == "road":
            removed = self._removed_pixels(ranks, counts[steps], images.shape[1:3])
            ids = np.stack([first_index + np.arange(len(images)), steps], axis=1)
            return road_fill(images, removed, self.road_noise, self.seed, ids)
        x = tf.constant(images)
        changed = tf.cast(tf.constant(ranks) < int(counts[step]), tf.float32)
        return self._mix(x, self._replacement_images(x), changed).numpy()

    # -- internals ------------------------------------------------------------------------------
    def _order(self, ranks):
        if self.order == "lerf":  # exactly the reverse of the MoRF order
            return (ranks[0].size - 1 - ranks).astype(np.int32)
        return ranks

    def _check_ranks(self, ranks, image_shape):
        rows, cols = self.grid(image_shape)
        array = np.asarray(ranks)
        expected = (image_shape[0], rows, cols)
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"ranks must be integers, got dtype {array.dtype}")
        if array.shape != expected:
            raise ValueError(
                f"ranks must have shape {expected} (images x units of size {self.patch_size}), got {array.shape}"
            )
        flat = np.sort(array.reshape(len(array), -1), axis=1)
        bad = np.flatnonzero((flat != np.arange(rows * cols)).any(axis=1))
        if len(bad):
            raise ValueError(f"ranks of images {bad[:10].tolist()} are not permutations of 0..{rows * cols - 1}")
        return array.astype(np.int32)

    def _check_targets(self, targets, count):
        if targets is None:
            return np.full(count, -1, np.int32)  # -1: the clean prediction
        array = np.asarray(targets)
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"targets must be None, an int or one int per image, got {targets!r}")
        array = np.broadcast_to(array, (count,)) if array.ndim == 0 else array
        if array.shape != (count,):
            raise ValueError(f"targets has shape {array.shape} for {count} images")
        if (array < 0).any() or (array >= self._width).any():
            raise ValueError(
                f"targets must be in 0..{self._width - 1} (the model's outputs), got "
                f"{array[(array < 0) | (array >= self._width)][0]}"
            )
        return array.astype(np.int32)

    def _function(self, kind, sample_shape):
        key = (kind, tuple(sample_shape))
        if key not in self._functions:
            images = tf.TensorSpec((None,) + tuple(sample_shape), tf.float32)
            targets = tf.TensorSpec((None,), tf.int32)
            if kind == "curves":
                rows, cols = self.grid(sample_shape)
                ranks = tf.TensorSpec((None, rows, cols), tf.int32)
                signature = [images, ranks, targets, tf.TensorSpec((None,), tf.int32)]
                self._functions[key] = tf.function(self._device_curves, input_signature=signature)
            else:
                self._functions[key] = tf.function(self._chosen, input_signature=[images, targets])
        return self._functions[key]

    def _outputs(self, x):
        out = self.model(x, training=False)
        out = tf.reshape(out, [tf.shape(out)[0], -1])
        return tf.nn.softmax(out) if self.apply_softmax else out

    def _chosen(self, x, targets):
        """The output of class targets[i] for x[i]; -1 picks x[i]'s own top class."""
        outputs = self._outputs(x)
        top = tf.argmax(outputs, axis=1, output_type=tf.int32)
        return tf.gather(outputs, tf.where(targets < 0, top, targets), axis=1, batch_dims=1), top

    def _replacement_images(self, images):
        if self.replacement == "image_mean":
            return tf.broadcast_to(tf.reduce_mean(images, axis=[1, 2], keepdims=True), tf.shape(images))
        if self.replacement == "own_patch_mean":
            p = self.patch_size
            means = tf.nn.avg_pool2d(images, p, p, "VALID")
            return _to_pixels(means, p, tf.shape(images)[1], tf.shape(images)[2], fill=images)
        if self.replacement == "blur":
            return gaussian_blur(images, self.blur_sigma)
        return tf.fill(tf.shape(images), tf.cast(self.replacement, images.dtype))

    def _mix(self, images, replacement, changed):
        """Copies with the changed units (float 0/1 grid) replaced ('remove') or the others replaced ('insert')."""
        hidden = changed if self.mode == "remove" else 1 - changed
        mask = _to_pixels(hidden[..., None], self.patch_size, tf.shape(images)[1], tf.shape(images)[2])
        return images * (1 - mask) + replacement * mask

    def _device_curves(self, images, ranks, targets, counts):
        steps = tf.shape(counts)[0]
        n = tf.shape(images)[0]
        clean = tf.argmax(self._outputs(images), axis=1, output_type=tf.int32)
        targets = tf.where(targets < 0, clean, targets)
        replacement = self._replacement_images(images)
        total = n * steps
        values = tf.zeros([total], images.dtype)
        for start in tf.range(0, total, self.batch_size):
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)  # one chunk in memory at a time
            flat = tf.range(start, tf.minimum(start + self.batch_size, total))
            image_index, k = flat // steps, flat % steps
            changed = tf.cast(tf.gather(ranks, image_index) < tf.gather(counts, k)[:, None, None], images.dtype)
            copies = self._mix(tf.gather(images, image_index), tf.gather(replacement, image_index), changed)
            outputs = self._outputs(copies)
            chosen = tf.gather(outputs, tf.gather(targets, image_index), axis=1, batch_dims=1)
            values = tf.tensor_scatter_nd_update(values, flat[:, None], chosen)
        return tf.reshape(values, [n, steps])

    def _removed_pixels(self, ranks, counts, size):
        """(b, H, W) bool: pixels replaced in the copies whose ranks and unit counts are given."""
        changed = ranks < np.asarray(counts)[:, None, None]
        hidden = changed if self.mode == "remove" else ~changed
        p = self.patch_size
        pixels = hidden.repeat(p, axis=1).repeat(p, axis=2)
        return np.pad(pixels, [(0, 0), (0, size[0] - pixels.shape[1]), (0, size[1] - pixels.shape[2])])

    def _road_curves(self, images, ranks, targets, counts, first_index):
        chosen = self._function("chosen", images.shape[1:])
        steps = len(counts)
        if (targets < 0).any():  # the clean predictions
            for start in range(0, len(images), self.batch_size):
                part = slice(start, start + self.batch_size)
                top = chosen(tf.constant(images[part]), tf.constant(targets[part]))[1].numpy()
                targets[part] = np.where(targets[part] < 0, top, targets[part])
        values = np.empty(len(images) * steps, np.float32)

        def impute(start):
            flat = np.arange(start, min(start + self.batch_size, len(values)))
            index, k = np.divmod(flat, steps)
            removed = self._removed_pixels(ranks[index], counts[k], images.shape[1:3])
            ids = np.stack([first_index + index, k], axis=1)
            return flat, index, road_fill(images[index], removed, self.road_noise, self.seed, ids)

        # The imputation runs on the host, one thread; the model on all cores. So the next chunk's
        # copies are imputed in a second thread while the model evaluates this chunk's (the model
        # call releases the GIL). Each copy's noise is keyed by (image, step): the same values.
        starts = list(range(0, len(values), self.batch_size))
        with concurrent.futures.ThreadPoolExecutor(1) as imputer:
            upcoming = imputer.submit(impute, starts[0]) if starts else None
            for position in range(len(starts)):
                flat, index, copies = upcoming.result()
                if position + 1 < len(starts):
                    upcoming = imputer.submit(impute, starts[position + 1])
                values[flat] = chosen(tf.constant(copies), tf.constant(targets[index]))[0].numpy()
        return values.reshape(len(images), steps)


def road_fill(images, removed, noise, seed, ids):
    """ROAD replacement of the `removed` pixels (`imputation.noisy_linear_impute`), with one rule added:
    an image with every pixel removed becomes its per-channel mean plus the same noise (all pixels)."""
    images = np.asarray(images)
    everything = removed.reshape(len(removed), -1).all(axis=1)
    out = np.empty_like(images)
    if (~everything).any():
        out[~everything] = noisy_linear_impute(images[~everything], removed[~everything], noise, seed, ids[~everything])
    for b in np.flatnonzero(everything):
        filled = np.broadcast_to(images[b].mean(axis=(0, 1), dtype=np.float64), images[b].shape).copy()
        if noise > 0:
            filled += noise_generator(seed, ids[b]).normal(0.0, noise, filled.shape)
        out[b] = filled
    return out


def deletion_curves(model, replacement=0.0, **options):
    """Deletion (Petsiuk et al., BMVC 2018): most relevant units removed first; lower area is better.

    `replacement` defaults to 0.0 (the paper sets deleted pixels to zero); other options as
    `PerturbationCurves` (pixels by default: patch_size=1).
    """
    return PerturbationCurves(model, order="morf", replacement=replacement, mode="remove", **options)


def insertion_curves(model, replacement="blur", **options):
    """Insertion (Petsiuk et al., BMVC 2018): from the fully replaced image (blurred by default),
    the most relevant units restored first; higher area is better. Options as `PerturbationCurves`."""
    return PerturbationCurves(model, order="morf", replacement=replacement, mode="insert", **options)


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_replacement(replacement):
    if isinstance(replacement, str):
        return _check_choice(replacement, REPLACEMENTS, "replacement")
    if isinstance(replacement, bool) or not isinstance(replacement, numbers.Real) or not np.isfinite(replacement):
        raise ValueError(f"replacement must be one of {REPLACEMENTS} or a finite number, got {replacement!r}")
    return float(replacement)


def _check_sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"blur_sigma must be a finite number of pixels > 0, got {sigma!r}")
    return float(sigma)


def _check_nonnegative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
