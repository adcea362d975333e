"""`AttributionCallback`: attribution maps of fixed images during Keras training, as PNGs and TensorBoard images."""

import os
from collections.abc import Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from pgig_tf.analyzers import ANALYZERS, analyzer_class, create_analyzer
from pgig_tf.patterns.fitting import KINDS, fit_patterns
from pgig_tf.validation import check_positive_int, check_seed
from pgig_tf.viz.plots import check_percentile, heatmap_rgb, image_grid, image_rgb, overlay, to_uint8

STYLES = ("heatmap", "overlay")


class AttributionCallback(keras.callbacks.Callback):
    """Every `every` epochs, explains the model on fixed `images` with `methods` and writes the maps.

    images: (n, H, W) or (n, H, W, C) inputs, preprocessed as the model expects.
    methods: `ANALYZERS` names, or a dict name -> keyword settings for `create_analyzer`.
    every: logs when the number of completed epochs is a multiple of `every`; with
        `at_start` also once before the first epoch of each `fit` (its step is the initial epoch).
    png_dir: writes `{method}_epoch{step:04d}.png` (the images' maps side by side, each enlarged
        `scale` times, 1 px white between them) and `inputs.png` once.
    log_dir: writes TensorBoard image summaries `attributions/{method}` (one image per input) at
        step = completed epochs, and `inputs` once, into `log_dir`.
    neuron_selection: as in `analyze`: 'max_activation' (the current prediction), an int, or one
        int per image (e.g. the true labels).
    fit_data: needed by pattern rules and by Expected Gradients without `baselines=`: an array or
        a `tf.data.Dataset` (read again at every log). Patterns depend on the weights, so they are
        refitted on `fit_data` at every log: one `fit_patterns` pass, shared by all pattern
        methods, about four forward passes' worth of work per sample of `fit_data`. Patterns given
        in a method's settings are used as they are. The background is kept from the first log.
    seed: the sampling methods' fixed seed, so maps change between logs only through the weights.
    style: 'heatmap' (red positive, blue negative, white zero) or 'overlay' (the map over the image).

    The analyzers are built once, at the first log. Their compiled loops read the model's
    variables, so later logs see the trained weights without retracing; refitted patterns are
    written into the loops' pattern variables. `latest` holds the last log's maps
    ({method: array shaped like `images`}), `latest_step` its step. `log(step)` logs by hand
    (after `set_model`, which `fit` calls).
    """

    def __init__(
        self,
        images,
        methods=("gradient", "integrated_gradients"),
        every=1,
        png_dir=None,
        log_dir=None,
        neuron_selection="max_activation",
        fit_data=None,
        pattern_kind="relu",
        seed=0,
        style="heatmap",
        scale=1,
        percentile=99.5,
        at_start=True,
    ):
        super().__init__()
        images = np.asarray(images)
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be (n, H, W) or (n, H, W, C), got shape {images.shape}")
        self.images = images
        self.methods = _method_settings(methods)
        self.every = check_positive_int(every, "every")
        self.png_dir, self.log_dir = png_dir, log_dir
        self.neuron_selection = neuron_selection
        if pattern_kind not in KINDS:
            raise ValueError(f"pattern_kind must be one of {KINDS}, got {pattern_kind!r}")
        self.pattern_kind = pattern_kind
        self.seed = check_seed(seed)
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        if style == "overlay" and (images.ndim != 4 or images.shape[-1] not in (1, 3)):
            raise ValueError(f"style='overlay' needs images of shape (n, H, W, 1) or (n, H, W, 3), got {images.shape}")
        self.style = style
        self.scale = check_positive_int(scale, "scale")
        self.percentile = check_percentile(percentile)
        self.at_start = bool(at_start)
        needing = [
            name
            for name, kwargs in self.methods.items()
            if _needs_patterns(name, kwargs)
            or (analyzer_class(name).uses_background and kwargs.get("baselines") is None)
        ]
        if needing and fit_data is None:
            raise ValueError(
                f"methods {needing} need fit_data (patterns are refitted on it at every log; Expected Gradients "
                "keeps it as background)"
            )
        if isinstance(fit_data, Iterator):
            raise TypeError(
                "fit_data must be an array or a tf.data.Dataset that can be read again at every log, "
                f"got a one-pass iterator ({type(fit_data).__name__})"
            )
        self.fit_data = fit_data
        self.latest, self.latest_step = None, None
        self._analyzers, self._analyzers_model = None, None
        self._writer = None
        self._started = False
        self._inputs_written = False

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.at_start and not self._started:
            self.log(epoch)
        self._started = True

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.log(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def log(self, step):
        """Computes every method's maps on `images` with the model as it is now and writes them at `step`."""
        built_now = self._analyzers is None or self._analyzers_model is not self.model
        analyzers = self._get_analyzers()  # a new set is built with patterns fitted on the current weights
        refit = (
            []
            if built_now
            else [
                name
                for name, kwargs in self.methods.items()
                if analyzers[name].needs_patterns and "patterns" not in kwargs
            ]
        )
        if refit:
            patterns = fit_patterns(self.model, self.fit_data, kind=self.pattern_kind, verbose=False)
            for name in refit:
                analyzers[name].set_patterns(patterns)  # into the compiled loop's variables: no retrace
        maps = {
            name: analyzer.analyze(self.images, neuron_selection=self.neuron_selection)
            for name, analyzer in analyzers.items()
        }
        self.latest, self.latest_step = maps, int(step)
        pictures = {name: [self._picture(image, a) for image, a in zip(self.images, m)] for name, m in maps.items()}
        inputs = None if self._inputs_written else self._input_pictures()
        if self.png_dir is not None:
            os.makedirs(self.png_dir, exist_ok=True)
            if inputs:
                _write_png(os.path.join(self.png_dir, "inputs.png"), image_grid([inputs], scale=self.scale))
            for name, row in pictures.items():
                _write_png(
                    os.path.join(self.png_dir, f"{name}_epoch{step:04d}.png"), image_grid([row], scale=self.scale)
                )
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                if inputs:
                    write_image_summary("inputs", [self._enlarged(p) for p in inputs], step)
                for name, row in pictures.items():
                    write_image_summary(f"attributions/{name}", [self._enlarged(p) for p in row], step)
            self._writer.flush()
        self._inputs_written = True
        return maps

    def _input_pictures(self):
        """The images as RGB in [0, 1] (min-max per image); None unless they have 1 or 3 channels."""
        images = self.images[..., None] if self.images.ndim == 3 else self.images
        return [image_rgb(image) for image in images] if images.shape[-1] in (1, 3) else None

    def _enlarged(self, picture):
        return image_grid([[picture]], pad=0, scale=self.scale)

    def _picture(self, image, attribution):
        if self.style == "overlay":
            return overlay(image, attribution, percentile=self.percentile)
        return heatmap_rgb(attribution, self.percentile)

    def _get_analyzers(self):
        """The analyzers, built once per model (with fitted patterns and background where needed)."""
        if self._analyzers is not None and self._analyzers_model is self.model:
            return self._analyzers
        model = self.model
        patterns = None
        analyzers = {}
        for name, settings in self.methods.items():
            kwargs = dict(settings)
            if analyzer_class(name).random:
                kwargs.setdefault("seed", self.seed)
            if _needs_patterns(name, settings) and "patterns" not in settings:
                if patterns is None:
                    patterns = fit_patterns(model, self.fit_data, kind=self.pattern_kind, verbose=False)
                kwargs["patterns"] = patterns
            analyzer = create_analyzer(name, model, **kwargs)
            if analyzer.uses_background and analyzer.baselines is None:
                analyzer.fit(self.fit_data, kind=self.pattern_kind, verbose=False)
            analyzers[name] = analyzer
        self._analyzers, self._analyzers_model = analyzers, model
        return analyzers


def write_image_summary(tag, images, step):
    """A TensorBoard image summary of (H, W, 3) images in [0, 1] in the default writer, without the tensorboard package.

    The layout TensorBoard's image plugin reads: a string tensor [width, height, png_1, ..., png_k]
    with plugin name 'images' in its metadata.
    """
    from tensorflow.core.framework import summary_pb2

    images = [to_uint8(image) for image in images]
    height, width = images[0].shape[:2]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + encoded)
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "images"
    return tf.summary.write(tag, tensor, step=tf.constant(step, tf.int64), metadata=metadata)


def _write_png(path, rgb):
    tf.io.write_file(path, tf.io.encode_png(to_uint8(rgb)))


def _method_settings(methods):
    """{name: settings} from a sequence of names or a mapping name -> settings; unknown names fail."""
    if isinstance(methods, str):
        methods = (methods,)
    if isinstance(methods, Mapping):
        settings = {name: dict(kwargs or {}) for name, kwargs in methods.items()}
    else:
        settings = {name: {} for name in methods}
    if not settings:
        raise ValueError("methods must name at least one analyzer")
    unknown = [name for name in settings if name not in ANALYZERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from: {', '.join(ANALYZERS)}")
    return settings


def _needs_patterns(name, settings):
    """Whether the method's rule is a pattern rule (its own default or its `rule=` setting)."""
    return analyzer_class(name).rule_needs_patterns(settings.get("rule"))
