"""AttributionCallback during training (files, TensorBoard images, no retracing) and in-place pattern updates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import set_random_weights
from pgig_tf import AttributionCallback, create_analyzer, fit_patterns

METHODS = {
    "gradient": {},
    "integrated_gradients": {"steps": 4},
    "pattern_attribution": {},
    "smoothgrad": {"samples": 3},
}


def tiny_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="c"),
            keras.layers.Flatten(name="f"),
            keras.layers.Dense(3, name="o"),
        ]
    )  # logits
    model.compile(
        optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return set_random_weights(model, 4, scale=0.3)


def read_image_summaries(log_dir):
    """{tag: [(step, [decoded uint8 images])]} from the event files in `log_dir`."""
    found = {}
    for path in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                strings = tf.make_ndarray(value.tensor)
                width, height = int(strings[0]), int(strings[1])
                images = [tf.io.decode_png(s).numpy() for s in strings[2:]]
                assert all(image.shape == (height, width, 3) for image in images)
                found.setdefault(value.tag, []).append((event.step, images))
    return found


def test_callback_writes_maps_during_training_without_retracing(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    images = x[:2]
    model = tiny_model()
    before = create_analyzer("gradient", model).analyze(images, neuron_selection=[0, 1])
    callback = AttributionCallback(
        images,
        methods=METHODS,
        every=2,
        png_dir=tmp_path / "png",
        log_dir=str(tmp_path / "tb"),
        neuron_selection=[0, 1],
        fit_data=x[:16],
        scale=3,
    )
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])

    # logged before training (step 0) and after epoch 2 (every=2); not after epochs 1 and 3
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == sorted(["inputs.png"] + [f"{m}_epoch{s:04d}.png" for m in METHODS for s in (0, 2)])
    strip = tf.io.decode_png(tf.io.read_file(str(tmp_path / "png" / "gradient_epoch0002.png"))).numpy()
    assert strip.shape == (8 * 3, 2 * 8 * 3 + 1, 3)  # two 8x8 maps enlarged 3x, 1 px between them
    assert np.all(strip[:, 24] == 255)

    summaries = read_image_summaries(tmp_path / "tb")
    assert sorted(summaries) == sorted(["inputs"] + [f"attributions/{m}" for m in METHODS])
    assert [step for step, _ in summaries["attributions/gradient"]] == [0, 2]
    assert [len(images) for _, images in summaries["attributions/pattern_attribution"]] == [2, 2]
    assert summaries["inputs"][0][1][0].shape == (24, 24, 3)

    # the analyzers were built once and traced once; they saw the trained weights
    analyzers = callback._analyzers
    assert {name: a.tracing_count for name, a in analyzers.items()} == {name: 1 for name in METHODS}
    callback.log(3)
    assert callback.latest_step == 3 and all(a.tracing_count == 1 for a in analyzers.values())
    after = callback.latest["gradient"]
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(after, create_analyzer("gradient", model).analyze(images, neuron_selection=[0, 1]))
    fresh_pa = create_analyzer("pattern_attribution", model, patterns=fit_patterns(model, x[:16], verbose=False))
    np.testing.assert_array_equal(
        callback.latest["pattern_attribution"], fresh_pa.analyze(images, neuron_selection=[0, 1])
    )
    np.testing.assert_array_equal(
        callback.latest["smoothgrad"],
        create_analyzer("smoothgrad", model, samples=3, seed=0).analyze(images, neuron_selection=[0, 1]),
    )


def test_callback_overlay_style_and_png_pixels(tmp_path):
    images = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
    model = tiny_model()
    callback = AttributionCallback(images, methods=["gradient"], png_dir=tmp_path, style="overlay", at_start=False)
    callback.set_model(model)
    maps = callback.log(5)
    from pgig_tf.viz.plots import overlay, to_uint8

    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "gradient_epoch0005.png"))).numpy()
    assert png.shape == (8, 3 * 8 + 2, 3)
    np.testing.assert_array_equal(png[:, 9:17], to_uint8(overlay(images[1], maps["gradient"][1])))


def test_callback_argument_errors():
    images = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"methods \['pgig', 'expected_gradients'\] need fit_data"):
        AttributionCallback(images, methods=["gradient", "pgig", "expected_gradients"])
    with pytest.raises(ValueError, match=r"methods \['smoothgrad'\] need fit_data"):
        AttributionCallback(images, methods={"smoothgrad": {"rule": "pattern_net"}})
    AttributionCallback(images, methods={"expected_gradients": {"baselines": images}})  # no fit_data needed
    with pytest.raises(ValueError, match="unknown methods"):
        AttributionCallback(images, methods=["gradients"])
    with pytest.raises(ValueError, match="every must be a positive integer, got 0"):
        AttributionCallback(images, every=0)
    with pytest.raises(ValueError, match=r"images must be \(n, H, W\) or \(n, H, W, C\), got shape \(2, 64\)"):
        AttributionCallback(images.reshape(2, 64))
    with pytest.raises(TypeError, match="one-pass iterator"):
        AttributionCallback(images, methods=["pgig"], fit_data=iter([images]))
    with pytest.raises(ValueError, match="style must be one of"):
        AttributionCallback(images, style="contour")
    with pytest.raises(ValueError, match="pattern_kind must be one of"):
        AttributionCallback(images, pattern_kind="quadratic")
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got 101"):
        AttributionCallback(images, percentile=101)
    with pytest.raises(ValueError, match=r"style='overlay' needs images of shape"):
        AttributionCallback(np.zeros((2, 8, 8, 2)), style="overlay")


def test_set_patterns_updates_in_place_and_matches_a_fresh_analyzer(dense_model):
    rng = np.random.default_rng(2)
    first, second = (
        fit_patterns(dense_model, rng.normal(size=(30, 6)).astype(np.float32), verbose=False) for _ in range(2)
    )
    x = rng.normal(size=(3, 6)).astype(np.float32)
    analyzer = create_analyzer("pgig", dense_model, steps=3, patterns=first)
    before = analyzer.analyze(x)
    analyzer.set_patterns(second)
    got = analyzer.analyze(x)
    assert analyzer.tracing_count == 1 and analyzer.patterns is second
    assert not np.allclose(got, before)
    np.testing.assert_array_equal(got, create_analyzer("pgig", dense_model, steps=3, patterns=second).analyze(x))
    with pytest.raises(ValueError, match="Patterns do not fit model"):
        analyzer.set_patterns({"d1": np.zeros((6, 5), np.float32)})


def test_adaptive_smooth_taylor_uses_refitted_patterns(conv_model):
    # its per-candidate engines are rebuilt when fit() gives new patterns (they kept the old rule before)
    rng = np.random.default_rng(3)
    first, second = (rng.normal(size=(12, 9, 9, 2)).astype(np.float32) for _ in range(2))
    x = rng.normal(size=(2, 9, 9, 2)).astype(np.float32)
    settings = {
        "samples": 3,
        "noise_scale": "adaptive",
        "candidates": (0.2,),
        "criterion": "total_variation",
        "rule": "pattern_attribution",
        "seed": 1,
    }
    analyzer = create_analyzer("smooth_taylor", conv_model, **settings).fit(first, verbose=False)
    before = analyzer.analyze(x)
    got = analyzer.fit(second, verbose=False).analyze(x)
    assert not np.allclose(got, before)
    np.testing.assert_array_equal(
        got, create_analyzer("smooth_taylor", conv_model, **settings).fit(second, verbose=False).analyze(x)
    )


def test_callback_on_images_without_channel_axis(tmp_path):
    model = set_random_weights(
        keras.Sequential([keras.Input((5, 4)), keras.layers.Flatten(), keras.layers.Dense(2)]), 5
    )
    images = np.random.default_rng(4).normal(size=(2, 5, 4)).astype(np.float32)
    callback = AttributionCallback(images, methods=["gradient"], png_dir=tmp_path, scale=2)
    callback.set_model(model)
    maps = callback.log(0)
    assert maps["gradient"].shape == (2, 5, 4)
    for name in ("inputs.png", "gradient_epoch0000.png"):
        assert tf.io.decode_png(tf.io.read_file(str(tmp_path / name))).numpy().shape == (10, 2 * 8 + 1, 3)
