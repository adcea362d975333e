"""Image degradation (perturbation) curves and their area, AUPC (PGIG paper §5; SmoothTaylor paper's AUPC).

Square patches are ranked by the attribution summed over channels and averaged per patch
(signed by default); curve point k is the model's output for the explained class after the
top-k patches are replaced (k = 0..K). All K+1 copies of every image are built on the device
and evaluated in chunks of `batch_size` inside one compiled function.
"""

import numpy as np
import tensorflow as tf

from pgig_tf.model.spec import ModelSpec, model_io
from pgig_tf.validation import check_inputs, check_positive_int

REPLACEMENTS = ("patch_mean", "image_mean")


def patch_scores(attributions, patch_size, absolute=False):
    """(n, H//p, W//p): channel-summed attribution (|.| if `absolute`) averaged over each p x p patch.

    Pixels beyond the last whole patch (when H or W is not a multiple of p) are not scored.
    """
    a = np.asarray(attributions, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"attributions must be images (n, H, W, C), got shape {a.shape}")
    a = a.sum(axis=-1)
    if absolute:
        a = np.abs(a)
    n, height, width = a.shape
    rows, cols = height // patch_size, width // patch_size
    a = a[:, : rows * patch_size, : cols * patch_size]
    return a.reshape(n, rows, patch_size, cols, patch_size).mean(axis=(2, 4))


def patch_ranks(scores):
    """Rank of every patch, 0 = highest score; ties go to the earlier patch in row-major order."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(n, 0), axis=1)
    return ranks.reshape(scores.shape).astype(np.int32)


def aupc(curves):
    """Area under perturbation curve(s): trapezoid over k = 0..K with unit spacing (lower is better).

    In units of output x patches, as the SmoothTaylor paper reports it; divide by K for the mean
    output over the perturbation range.
    """
    curves = np.asarray(curves, dtype=np.float64)
    return (curves[..., 1:] + curves[..., :-1]).sum(axis=-1) / 2.0


def ends_in_softmax(model):
    """True if the model's output is computed by a softmax (layer, fused activation or Activation('softmax'))."""
    return ModelSpec(model).softmax_layer() is not None


class Degrader:
    """Computes degradation curves of `model` for images and attributions.

    replacement: 'patch_mean' (each patch by its own per-channel mean; the reference code),
    'image_mean' (by the image's per-channel mean; the paper text), or a number (a constant).
    apply_softmax: whether to apply a softmax to the model output before reading the
    class's value; None (default) applies it unless the model already ends in a softmax, so
    the curve records probabilities either way.
    """

    def __init__(
        self,
        model,
        patch_size=9,
        num_steps=100,
        replacement="patch_mean",
        absolute=False,
        batch_size=64,
        apply_softmax=None,
    ):
        self.model = model
        self._input_shape, _ = model_io(model)
        if len(self._input_shape) != 4:
            raise ValueError(f"degradation needs an image model (batch, H, W, C); input is {self._input_shape}")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.num_steps = check_positive_int(num_steps, "num_steps")
        if not (replacement in REPLACEMENTS or isinstance(replacement, (int, float))):
            raise ValueError(f"replacement must be one of {REPLACEMENTS} or a number, got {replacement!r}")
        self.replacement = replacement
        self.absolute = bool(absolute)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.apply_softmax = not ends_in_softmax(model) if apply_softmax is None else bool(apply_softmax)
        self._functions = {}

    def curves(self, images, attributions, targets=None):
        """(n, K+1) curves; `targets` default to the class predicted on the clean image."""
        images = check_inputs(images, self._input_shape, name="images")
        attributions = np.asarray(attributions)
        if attributions.shape != images.shape:
            raise ValueError(f"attributions must be shaped like images {images.shape}, got {attributions.shape}")
        height, width = images.shape[1:3]
        grid = (height // self.patch_size) * (width // self.patch_size)
        if self.num_steps > grid:
            raise ValueError(
                f"num_steps={self.num_steps} exceeds the {grid} patches of size {self.patch_size} in a "
                f"{height}x{width} image"
            )
        ranks = patch_ranks(patch_scores(attributions, self.patch_size, self.absolute))
        if targets is None:
            targets = np.full(len(images), -1, np.int32)  # -1: the clean prediction, found on the device
        targets = np.asarray(targets, np.int32).reshape(-1)
        if len(targets) != len(images):
            raise ValueError(f"targets has {len(targets)} entries for {len(images)} images")
        function = self._function_for(images.shape[1:])
        return function(tf.constant(images), tf.constant(ranks), tf.constant(targets)).numpy()

    def _function_for(self, sample_shape):
        key = tuple(sample_shape)
        if key not in self._functions:
            rows, cols = key[0] // self.patch_size, key[1] // self.patch_size
            signature = [
                tf.TensorSpec((None,) + key, tf.float32),
                tf.TensorSpec((None, rows, cols), tf.int32),
                tf.TensorSpec((None,), tf.int32),
            ]
            self._functions[key] = tf.function(self._curves, input_signature=signature)
        return self._functions[key]

    def _outputs(self, x):
        out = self.model(x, training=False)
        out = tf.reshape(out, [tf.shape(out)[0], -1])
        return tf.nn.softmax(out) if self.apply_softmax else out

    def _replacement_images(self, images):
        p = self.patch_size
        if self.replacement == "image_mean":
            return tf.broadcast_to(tf.reduce_mean(images, axis=[1, 2], keepdims=True), tf.shape(images))
        if self.replacement == "patch_mean":
            means = tf.nn.avg_pool2d(images, p, p, "VALID")
            return _to_pixels(means, p, tf.shape(images)[1], tf.shape(images)[2], fill=images)
        return tf.fill(tf.shape(images), tf.cast(self.replacement, images.dtype))

    def _curves(self, images, ranks, targets):
        steps = self.num_steps + 1
        n = tf.shape(images)[0]
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        clean = tf.argmax(self._outputs(images), axis=1, output_type=tf.int32)
        targets = tf.where(targets < 0, clean, targets)
        replacement = self._replacement_images(images)
        total = n * steps
        values = tf.zeros([total], images.dtype)
        for start in tf.range(0, total, self.batch_size):
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)  # one chunk in memory at a time
            flat = tf.range(start, tf.minimum(start + self.batch_size, total))
            image_index, k = flat // steps, flat % steps
            hidden = tf.cast(tf.gather(ranks, image_index) < k[:, None, None], images.dtype)
            mask = _to_pixels(hidden[..., None], self.patch_size, height, width)
            copies = tf.gather(images, image_index) * (1 - mask) + tf.gather(replacement, image_index) * mask
            outputs = self._outputs(copies)
            chosen = tf.gather(outputs, tf.gather(targets, image_index), axis=1, batch_dims=1)
            values = tf.tensor_scatter_nd_update(values, flat[:, None], chosen)
        return tf.reshape(values, [n, steps])


def _to_pixels(grid, p, height, width, fill=None):
    """Upsamples a (n, rows, cols, c) patch grid to pixels and pads to (height, width) with `fill` (or 0)."""
    pixels = tf.repeat(tf.repeat(grid, p, axis=1), p, axis=2)
    pad_h, pad_w = height - tf.shape(pixels)[1], width - tf.shape(pixels)[2]
    padded = tf.pad(pixels, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    if fill is None:
        return padded
    inside = tf.pad(tf.ones_like(pixels[..., :1]), [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    return padded * inside + fill * (1 - inside)
