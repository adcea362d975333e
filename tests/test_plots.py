"""Heatmap helpers (colours, symmetry, all-zero maps) and the explain script."""

import keras
import numpy as np
import pytest

from pgig_tf import fit_patterns
from pgig_tf.plots import heatmap, heatmap_rgb, image_for_display


def test_heatmap_is_symmetric_and_clipped():
    a = np.zeros((4, 4, 3))
    a[0, 0] = [1.0, 1.0, 1.0]     # channel sum 3
    a[1, 1, 0] = -1.5
    a[2, 2, 0] = 100.0            # an outlier beyond the percentile
    h = heatmap(a, percentile=95)
    assert h.max() == 1.0 and h.min() >= -1.0
    assert h[2, 2] == 1.0 and h[0, 0] > 0 > h[1, 1]
    np.testing.assert_allclose(h[1, 1] / h[0, 0], -0.5)  # signs and ratios kept below the clip


def test_all_zero_map_is_white_not_nan():
    rgb = heatmap_rgb(np.zeros((5, 5, 1)))
    assert np.all(np.isfinite(rgb))
    np.testing.assert_allclose(rgb, 1.0, atol=0.01)  # white


def test_colours_red_positive_blue_negative():
    a = np.array([[1.0, -1.0, 0.0]])
    rgb = heatmap_rgb(a, percentile=100)
    assert rgb[0, 0, 0] > 0.4 and rgb[0, 0, 2] < 0.1   # red
    assert rgb[0, 1, 2] > 0.4 and rgb[0, 1, 0] < 0.1   # blue
    np.testing.assert_allclose(rgb[0, 2], 1.0, atol=0.01)


def test_image_for_display():
    assert image_for_display(np.full((3, 3, 1), 7.0)).shape == (3, 3)
    np.testing.assert_allclose(image_for_display(np.array([[[-2.0], [2.0]]])), [[0.0, 1.0]])


def test_heatmap_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"attribution must be \(H, W\) or \(H, W, C\)"):
        heatmap(np.zeros(5))


def test_explain_script(tmp_path):
    from PIL import Image

    from pgig_tf.cli import explain

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "m.keras")
    fit_patterns(model, np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32"),
                 verbose=False).save(tmp_path / "p.npz")
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((np.random.default_rng(i).random((20, 24, 3)) * 255).astype("uint8")).save(paths[-1])
    out = tmp_path / "grid.png"
    explain.main([str(tmp_path / "m.keras"), *paths, "--patterns", str(tmp_path / "p.npz"), "--out", str(out),
                  "--methods", "gradient,pgig,smoothgrad"])
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="pgig needs --patterns"):
        explain.main([str(tmp_path / "m.keras"), *paths, "--methods", "pgig", "--out", str(out)])
