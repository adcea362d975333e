"""Heatmap helpers (colours, symmetry, clipping, all-zero maps, overlay, grids) and the explain script."""

import keras
import numpy as np
import pytest

from pgig_tf import fit_patterns
from pgig_tf.viz.plots import (
    diverging_rgb,
    heatmap,
    heatmap_rgb,
    image_for_display,
    image_grid,
    image_rgb,
    overlay,
    plot_heatmap_grid,
    to_uint8,
)

RED, WHITE, BLUE = [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]


def test_heatmap_is_symmetric_and_clipped():
    a = np.zeros((4, 4, 3))
    a[0, 0] = [1.0, 1.0, 1.0]  # channel sum 3
    a[1, 1, 0] = -1.5
    a[2, 2, 0] = 100.0  # an outlier beyond the percentile
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
    assert rgb[0, 0, 0] > 0.4 and rgb[0, 0, 2] < 0.1  # red
    assert rgb[0, 1, 2] > 0.4 and rgb[0, 1, 0] < 0.1  # blue
    np.testing.assert_allclose(rgb[0, 2], 1.0, atol=0.01)


def test_exact_colours_at_known_values():
    np.testing.assert_array_equal(
        diverging_rgb([-1.0, -0.5, 0.0, 0.5, 1.0, 3.0]), [BLUE, [0.5, 0.5, 1.0], WHITE, [1.0, 0.5, 0.5], RED, RED]
    )
    # +max red, -max blue, zero exactly white, half-way pink; channels summed first
    a = np.array([[[1.0, 1.0], [-2.0, 0.0], [0.0, 0.0], [0.5, 0.5]]])
    np.testing.assert_array_equal(heatmap_rgb(a, percentile=100)[0], [RED, BLUE, WHITE, [1.0, 0.5, 0.5]])


def test_diverging_colours_are_matplotlibs_bwr():
    from matplotlib import colormaps

    nodes = np.arange(256) / 255.0  # bwr is a 256-entry table; entry k is the colour at k / 255
    np.testing.assert_allclose(diverging_rgb(2.0 * nodes - 1.0), colormaps["bwr"](nodes)[:, :3], atol=1e-12)


def test_percentile_clipping_exact():
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(heatmap(a, percentile=50), [[0.4, 0.8, 1.0, 1.0]])  # limit = median |a| = 2.5
    np.testing.assert_allclose(heatmap(-a, percentile=100), [[-0.25, -0.5, -0.75, -1.0]])
    sparse = np.zeros((10, 10))
    sparse[3, 4] = -0.2  # the percentile of |map| is 0: the maximum is used instead
    h = heatmap(sparse, percentile=99)
    assert h[3, 4] == -1.0 and np.count_nonzero(h) == 1


def test_all_zero_maps_without_division_by_zero():
    image = np.random.default_rng(0).random((4, 5, 3))
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(heatmap(np.zeros((4, 5, 3))), np.zeros((4, 5)))
        np.testing.assert_array_equal(heatmap_rgb(np.zeros((4, 5))), np.ones((4, 5, 3)))
        np.testing.assert_array_equal(overlay(image, np.zeros((4, 5, 3))), image_rgb(image))
        np.testing.assert_array_equal(image_rgb(np.full((2, 2, 1), 3.0)), np.zeros((2, 2, 3)))


def test_overlay_exact_mix_and_shapes():
    image = np.array([[[0.0], [1.0], [2.0], [4.0]]])  # grey, rescaled to 0, .25, .5, 1
    attribution = np.array([[1.0, -1.0, 0.5, 0.0]])
    got = overlay(image, attribution, alpha=0.5, percentile=100)
    assert got.shape == (1, 4, 3)
    np.testing.assert_allclose(
        got[0],
        [
            [0.5, 0.0, 0.0],  # 0.5 black + 0.5 red
            [0.125, 0.125, 0.625],  # 0.5 grey .25 + 0.5 blue
            [0.75 * 0.5 + 0.25, 0.75 * 0.5 + 0.125, 0.75 * 0.5 + 0.125],  # weight .25 of pink (1, .5, .5)
            [1.0, 1.0, 1.0],  # zero attribution: the image itself
        ],
    )
    rgb = overlay(np.random.default_rng(1).random((6, 7, 3)), np.random.default_rng(2).normal(size=(6, 7, 3)))
    assert rgb.shape == (6, 7, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\], got 1.5"):
        overlay(image, attribution, alpha=1.5)
    with pytest.raises(
        ValueError, match=r"attribution of spatial shape \(1, 3\) does not match image of shape \(1, 4\)"
    ):
        overlay(image, attribution[:, :3])
    with pytest.raises(ValueError, match=r"image must be \(H, W, 1\) or \(H, W, 3\)"):
        overlay(np.zeros((1, 4, 2)), attribution)


def test_image_grid_shapes_padding_and_scale():
    red, blue = np.ones((2, 3, 3)) * RED, np.ones((2, 3, 3)) * BLUE
    grid = image_grid([[red, blue, red], [blue, red, blue]], pad=1, scale=2)
    assert grid.shape == (2 * 4 + 1, 3 * 6 + 2, 3)
    np.testing.assert_array_equal(grid[:4, :6], np.ones((4, 6, 3)) * RED)
    np.testing.assert_array_equal(grid[:4, 7:13], np.ones((4, 6, 3)) * BLUE)
    np.testing.assert_array_equal(grid[4], np.ones((20, 3)))  # white padding row
    assert image_grid([[red]], pad=0).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="every row must hold 2 images, got a row of 1"):
        image_grid([[red, blue], [red]])
    with pytest.raises(ValueError, match=r"every image must have shape \(2, 3, 3\), got \(3, 3, 3\)"):
        image_grid([[red, np.zeros((3, 3, 3))]])
    with pytest.raises(ValueError, match="scale must be a positive integer, got 0"):
        image_grid([[red]], scale=0)
    np.testing.assert_array_equal(to_uint8([[-0.5, 0.0, 0.5, 1.0, 2.0]]), [[0, 0, 128, 255, 255]])


def test_heatmap_rejects_bad_percentile_and_non_finite_maps():
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got 0"):
        heatmap(np.ones((2, 2)), percentile=0)
    with pytest.raises(ValueError, match="attribution contains NaN or Inf"):
        heatmap(np.array([[1.0, np.nan]]))


def test_grid_heads_columns_with_methods_and_labels_rows(tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = {}

    def record(fig, *args, **kwargs):
        image_axes = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
        drawn["titles"] = [ax.get_title() for ax in image_axes]
        drawn["row_labels"] = [ax.get_ylabel() for ax in image_axes]
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        drawn["bars"] = [(ax.get_ylabel(), ax.get_ylim(), [t.get_text() for t in ax.get_yticklabels()]) for ax in bars]
        drawn["bar_colours"] = [c.cmap.name for ax in bars for c in ax.collections if type(c).__name__ == "QuadMesh"]
        drawn["suptitle"] = fig._suptitle.get_text()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    maps = {"m1": np.ones((2, 4, 4, 1)), "integrated_gradients": -np.ones((2, 4, 4, 1))}
    plot_heatmap_grid(
        np.zeros((2, 4, 4, 1)), maps, tmp_path / "g.png", row_titles=["true 3\npredicted 3", "true 7\npredicted 1"]
    )
    assert drawn["titles"] == ["input", "m1", "integrated_\ngradients", "", "", ""]  # method names head the columns
    assert drawn["row_labels"] == ["true 3\npredicted 3", "", "", "true 7\npredicted 1", "", ""]
    label, limits, ticks = drawn["bars"][0]
    assert len(drawn["bars"]) == 1 and limits == (-1.0, 1.0) and ticks == ["-1", "0", "+1"]
    assert "99.5th percentile of |map|" in label and "each map" in label and "clipped to ±1" in label
    assert drawn["bar_colours"] == ["bwr"]  # the maps' colours (test_diverging_colours_are_matplotlibs_bwr)
    assert drawn["suptitle"] == "attributions: red positive, blue negative"
    with pytest.raises(ValueError, match=r"row_titles must hold one title per image \(2\), got 1"):
        plot_heatmap_grid(np.zeros((2, 4, 4, 1)), maps, tmp_path / "g.png", row_titles=["one"])


def test_wrapped_names():
    from pgig_tf.viz.plots import wrapped_name

    assert [
        wrapped_name(n)
        for n in (
            "gradient",
            "integrated_gradients",
            "input_t_gradient",
            "noise_baseline_ig",
            "smoothgrad_ig",
            "vargrad",
        )
    ] == [
        "gradient",
        "integrated_\ngradients",
        "input_t_\ngradient",
        "noise_\nbaseline_ig",
        "smoothgrad_\nig",
        "vargrad",
    ]


def test_every_method_has_its_own_colour_and_line_style(tmp_path, monkeypatch):
    import matplotlib.figure

    from pgig_tf.names import ANALYZER_NAMES, DEFAULT_METHODS
    from pgig_tf.viz.plots import METHOD_STYLES, method_styles, plot_degradation_curves

    assert set(METHOD_STYLES) == set(ANALYZER_NAMES)
    colours = [colour for colour, _, _ in METHOD_STYLES.values()]
    assert len(set(colours)) == len(colours)  # every known method its own colour
    extra = [f"custom_{i}" for i in range(31)]
    styles = method_styles(list(ANALYZER_NAMES) + extra)
    pairs = [(colour, str(linestyle)) for colour, linestyle, _ in styles.values()]
    assert len(set(pairs[: len(ANALYZER_NAMES) + 30])) == len(ANALYZER_NAMES) + 30  # fallbacks repeat only after 30
    assert pairs[-1] == pairs[len(ANALYZER_NAMES)]

    drawn = {}

    def record(fig, *args, **kwargs):
        axis = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        drawn["lines"] = {
            line.get_label().split(" (")[0]: (line.get_color(), line.get_linestyle()) for line in axis.get_lines()
        }
        drawn["labels"] = [text.get_text() for text in axis.get_legend().get_texts()]
        drawn["legend"] = axis.get_legend().get_window_extent(renderer)
        drawn["axes"] = axis.get_window_extent(renderer)
        drawn["width"] = fig.get_size_inches()[0] * kwargs.get("dpi", fig.dpi)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    rng = np.random.default_rng(0)
    methods = {
        name: {"curve": np.sort(rng.random(65))[::-1].tolist(), "stderr": [0.01] * 65, "aupc": float(i)}
        for i, name in enumerate(list(DEFAULT_METHODS) + ["my_method"])
    }
    plot_degradation_curves(methods, tmp_path / "c.png")
    lines = drawn["lines"]
    assert len(lines) == 13 and len(set(lines.values())) == 13  # distinct (colour, line style) per method
    assert lines["input_t_gradient"][0] != lines["smooth_taylor"][0]  # best and worst differ
    assert lines["integrated_gradients"] != lines["smoothgrad_ig"]
    assert drawn["labels"][:2] == ["gradient (0.00)", "input_t_gradient (1.00)"]  # ordered by AUPC
    assert drawn["legend"].x0 >= drawn["axes"].x1  # the legend sits beside the axes, over no curve
    assert 800 <= drawn["width"] <= 1000  # about README width: scaled little, if at all


def test_explain_row_titles():
    from pgig_tf.cli.explain import row_titles

    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    assert row_titles(["d/a.png", "b.jpg"], probabilities) == ["a.png\npred 1 (p 0.700)", "b.jpg\npred 0 (p 0.500)"]
    assert row_titles(["a.png", "b.png"], probabilities, explained=[1, 2]) == [
        "a.png\npred 1 (p 0.700)",
        "b.png\npred 0 (p 0.500)\nexplains 2 (p 0.250)",
    ]
    logits = np.log(probabilities) + 3.0  # not probabilities: their softmax is shown
    assert row_titles(["a.png", "b.png"], logits) == [
        "a.png\npred 1 (softmax p 0.700)",
        "b.png\npred 0 (softmax p 0.500)",
    ]
    assert row_titles(["a.png"], np.array([[2.5]])) == ["a.png\noutput 2.500"]


def test_image_for_display():
    assert image_for_display(np.full((3, 3, 1), 7.0)).shape == (3, 3)
    np.testing.assert_allclose(image_for_display(np.array([[[-2.0], [2.0]]])), [[0.0, 1.0]])


def test_heatmap_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"attribution must be \(H, W\) or \(H, W, C\)"):
        heatmap(np.zeros(5))


def test_explain_script(tmp_path, monkeypatch):
    from PIL import Image

    import pgig_tf.viz.plots
    from pgig_tf.cli import explain

    drawn = []
    original = pgig_tf.viz.plots.plot_heatmap_grid
    monkeypatch.setattr(
        pgig_tf.viz.plots, "plot_heatmap_grid", lambda *a, **k: (drawn.append(k["row_titles"]), original(*a, **k))
    )

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(tmp_path / "m.keras")
    fit_patterns(model, np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32"), verbose=False).save(
        tmp_path / "p.npz"
    )
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((np.random.default_rng(i).random((20, 24, 3)) * 255).astype("uint8")).save(paths[-1])
    out = tmp_path / "grid.png"
    explain.main(
        [
            str(tmp_path / "m.keras"),
            *paths,
            "--patterns",
            str(tmp_path / "p.npz"),
            "--out",
            str(out),
            "--methods",
            "gradient,pgig,smoothgrad",
        ]
    )
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    x = explain.load_images(paths, 16, 16, 3, "unit")
    probabilities = model.predict(x, verbose=0)
    assert drawn == [[f"{i}.png\npred {p.argmax()} (p {p.max():.3f})" for i, p in enumerate(probabilities)]]


def test_explain_skips_methods_it_cannot_run_and_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import pgig_tf.viz.plots
    from pgig_tf.cli import explain

    drawn = []
    monkeypatch.setattr(pgig_tf.viz.plots, "plot_heatmap_grid", lambda images, maps, *a, **k: drawn.append(list(maps)))
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(tmp_path / "m.keras")
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype("uint8")).save(tmp_path / "a.png")
    args = [str(tmp_path / "m.keras"), str(tmp_path / "a.png"), "--out", str(tmp_path / "g.png")]
    assert explain.main(args + ["--methods", "pgig,gradient,expected_gradients,pattern_net"]) is None  # exit code 0
    printed = capsys.readouterr().out.splitlines()
    assert drawn == [["gradient"]]
    assert printed[:3] == [
        f"skipping pgig: it needs patterns; fit them with pgig-fit-patterns --model {tmp_path / 'm.keras'} "
        "--dataset DATASET (or pgig_tf.fit_patterns in Python) and pass --patterns FILE.npz",
        "skipping expected_gradients: it needs background inputs; pass --background FILE.npy "
        "(inputs preprocessed like the images, e.g. training images)",
        f"skipping pattern_net: it needs patterns; fit them with pgig-fit-patterns --model {tmp_path / 'm.keras'} "
        "--dataset DATASET (or pgig_tf.fit_patterns in Python) and pass --patterns FILE.npz",
    ]
    np.save(tmp_path / "background.npy", np.zeros((4, 8, 8, 1), "float32"))
    explain.main(args + ["--methods", "expected_gradients", "--background", str(tmp_path / "background.npy")])
    assert drawn[-1] == ["expected_gradients"]
    # decided before any work: with every method skipped, not even the (missing) model file is opened
    with pytest.raises(SystemExit, match="nothing to explain: every method was skipped"):
        explain.main([str(tmp_path / "missing.keras"), str(tmp_path / "a.png"), "--methods", "pgig"])
    with pytest.raises(SystemExit) as stopped:
        explain.main(args + ["--methods", "gradient,pgi"])
    assert stopped.value.code == 2 and "unknown method(s) pgi" in capsys.readouterr().err
    for neuron in ("3", "-1"):  # the model has 3 outputs
        with pytest.raises(
            SystemExit,
            match=rf"--neuron must be an output unit of the model, 0 to 2 \(it has 3 "
            rf"outputs\), got {neuron}$",
        ):
            explain.main(args + ["--methods", "gradient", "--neuron", neuron])
    explain.main(args + ["--methods", "gradient", "--neuron", "2"])
    assert drawn[-1] == ["gradient"]
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.raises(SystemExit, match=r"^--patterns: .*damaged\.npz.*not a complete \.npz archive"):
        explain.main(args + ["--methods", "pgig", "--patterns", str(tmp_path / "damaged.npz")])


def test_degradation_curves_with_lerf_draw_both_orders(tmp_path, monkeypatch):
    import matplotlib.figure

    from pgig_tf.viz.plots import plot_degradation_curves

    drawn = {}

    def record(fig, *args, **kwargs):
        drawn["panels"] = [[line.get_ydata().tolist() for line in axis.get_lines()] for axis in fig.axes]
        drawn["labels"] = [text.get_text() for text in fig.axes[-1].get_legend().get_texts()]
        drawn["width"] = fig.get_size_inches()[0] * kwargs.get("dpi", fig.dpi)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    methods = {
        "a": {
            "curve": [1, 0.5, 0],
            "stderr": [0] * 3,
            "aupc": 1.0,
            "lerf_curve": [1, 1, 0],
            "lerf_stderr": [0] * 3,
            "srg": 0.5,
        },
        "b": {
            "curve": [1, 0.2, 0],
            "stderr": [0] * 3,
            "aupc": 0.7,
            "lerf_curve": [1, 0.9, 0],
            "lerf_stderr": [0] * 3,
            "srg": 0.7,
        },
    }
    plot_degradation_curves(methods, tmp_path / "c.png")
    assert drawn["panels"] == [[[1, 0.2, 0], [1, 0.5, 0]], [[1, 0.9, 0], [1, 1, 0]]]  # MoRF, then LeRF, by AUPC
    assert drawn["labels"] == ["b (0.70, 0.70)", "a (1.00, 0.50)"]
    assert 800 <= drawn["width"] <= 1000
