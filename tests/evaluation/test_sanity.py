"""Tests of the model-randomisation sanity check (pgig_tf.evaluation.sanity) and its CLI (pgig_tf.cli.sanity_check)."""

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import create_analyzer
from pgig_tf.evaluation.sanity import (
    cascading_randomization,
    clone_with_weights,
    plot_randomization,
    rankdata,
    spearman,
    weighted_layers,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gradient_factory(model):
    return create_analyzer("gradient", model)


def redraw(array, rng):
    """The documented draw: N(0, std of the array), the RMS when the std is 0."""
    scale = float(np.std(array)) or float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))
    return rng.normal(0.0, scale, array.shape).astype(array.dtype)


def drawn_weights(model, seed):
    """name -> new weight arrays, drawn top-down (the order cascading_randomization uses)."""
    rng = np.random.default_rng(seed)
    return {name: [redraw(w.numpy(), rng) for w in layer.weights] for name, layer in weighted_layers(model)[::-1]}


def gradient_maps(model, x, targets):
    return create_analyzer("gradient", model).analyze(x, neuron_selection=targets)


# --- Spearman ------------------------------------------------------------------------------------


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata([3, 1, 2, 2, 5, 3, 3]), [5, 1, 2.5, 2.5, 7, 5, 5])


def test_spearman_with_ties_by_hand():
    # a ranks (1, 2.5, 2.5, 4), b ranks (1, 4, 2.5, 2.5); centred: (-1.5, 0, 0, 1.5), (-1.5, 1.5, 0, 0)
    # -> sum of products 2.25, sums of squares 4.5 and 4.5 -> 2.25 / 4.5 = 0.5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(0.5, abs=1e-15)
    # a ranks (1, 3, 3, 3, 5), b ranks (5, 4, 3, 2, 1); centred products -4 + 0 + 0 + 0 - 4 = -8,
    # sums of squares 8 and 10 -> -8 / sqrt(80) = -2 / sqrt(5)
    assert spearman([10, 20, 20, 20, 30], [5, 4, 3, 2, 1]) == pytest.approx(-2 / math.sqrt(5), abs=1e-15)
    # 2-D inputs are flattened; identical arrays correlate exactly 1, reversed ones exactly -1
    a = np.array([[0.3, -1.0], [0.3, 2.0]])
    assert spearman(a, a) == 1.0
    assert spearman([1, 2, 3, 4], [8, 6, 4, 2]) == -1.0


def test_spearman_of_a_constant_map_is_nan():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="equal size"):
        spearman([1, 2, 3], [1, 2])


# --- the randomisation ---------------------------------------------------------------------------


def test_users_model_is_unchanged_and_step_zero_is_exactly_one(dense_model, rng):
    before = [w.copy() for w in dense_model.get_weights()]
    x = rng.normal(size=(4, 6)).astype("float32")
    result = cascading_randomization(dense_model, gradient_factory, x, seed=3)
    after = dense_model.get_weights()
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    assert result.correlations.shape == (4, 4)  # (1 + 3 weighted layers) x 4 inputs
    assert result.signed_correlations.shape == (4, 4)
    np.testing.assert_array_equal(result.correlations[0], np.ones(4))
    np.testing.assert_array_equal(result.signed_correlations[0], np.ones(4))
    assert result.mean[0] == 1.0
    # the original model's argmax is explained at every step
    np.testing.assert_array_equal(result.neuron_selection, np.argmax(dense_model.predict(x, verbose=0), axis=1))


def test_linear_model_correlation_is_the_spearman_of_the_kernels():
    kernel = np.array([[0.9], [-0.1], [0.4], [-1.3], [0.05], [0.7]], dtype="float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, name="lin")])
    model.set_weights([kernel, np.array([0.2], dtype="float32")])
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    result = cascading_randomization(model, gradient_factory, x, seed=11, return_maps=True)

    # the map of Dense(1) is its kernel column, before and after randomisation
    new_kernel = redraw(kernel, np.random.default_rng(11)).ravel()
    for i in range(3):
        np.testing.assert_allclose(result.reference_maps[i], kernel.ravel(), rtol=1e-6)
        np.testing.assert_allclose(result.maps[1, i], new_kernel, rtol=1e-6)

    def by_hand(u, v):  # distinct values: 1 - 6 sum d^2 / (n (n^2 - 1))
        ru, rv = np.argsort(np.argsort(u)), np.argsort(np.argsort(v))
        n = len(u)
        return 1 - 6 * np.sum((ru - rv) ** 2) / (n * (n * n - 1))

    expected_abs = by_hand(np.abs(kernel.ravel()), np.abs(new_kernel))
    expected_signed = by_hand(kernel.ravel(), new_kernel)
    assert result.layers == ["lin"]
    np.testing.assert_allclose(result.correlations[1], np.full(3, expected_abs), atol=1e-12)
    np.testing.assert_allclose(result.signed_correlations[1], np.full(3, expected_signed), atol=1e-12)
    assert result.correlations[0].tolist() == [1.0, 1.0, 1.0]


def test_cascading_is_top_down_and_cumulative(dense_model, rng):
    x = rng.normal(size=(5, 6)).astype("float32")
    result = cascading_randomization(dense_model, gradient_factory, x, seed=5, return_maps=True)
    assert result.layers == ["d3", "d2", "d1"]  # output layer first
    assert result.step_labels == ["original", "d3", "d2", "d1"]
    draws = drawn_weights(dense_model, 5)
    manual = clone_with_weights(dense_model)
    for step, name in enumerate(result.layers, start=1):  # step j: the top j layers re-drawn
        manual.get_layer(name).set_weights(draws[name])
        np.testing.assert_allclose(
            result.maps[step], gradient_maps(manual, x, result.neuron_selection), rtol=1e-5, atol=1e-7
        )
    assert result.maps.shape == (4, 5, 6)


def test_independent_mode_randomises_one_layer_at_a_time(dense_model, rng):
    x = rng.normal(size=(3, 6)).astype("float32")
    result = cascading_randomization(dense_model, gradient_factory, x, seed=5, mode="independent", return_maps=True)
    draws = drawn_weights(dense_model, 5)
    for step, name in enumerate(result.layers, start=1):
        manual = clone_with_weights(dense_model)
        manual.get_layer(name).set_weights(draws[name])
        np.testing.assert_allclose(
            result.maps[step], gradient_maps(manual, x, result.neuron_selection), rtol=1e-5, atol=1e-7
        )
    with pytest.raises(ValueError, match="mode"):
        cascading_randomization(dense_model, gradient_factory, x, mode="bottom_up")


def test_layer_list_skips_layers_without_weights_and_walks_nested_models(conv_model, rng):
    x = rng.normal(size=(2, 9, 9, 2)).astype("float32")
    result = cascading_randomization(conv_model, gradient_factory, x, neuron_selection=1)
    assert result.layers == ["out", "c2", "c1"]
    np.testing.assert_array_equal(result.neuron_selection, [1, 1])

    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="h")], name="inner")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="top")(inner(inputs))
    nested = set_random_weights(keras.Model(inputs, outputs), 2)
    before = [w.copy() for w in nested.get_weights()]
    result = cascading_randomization(nested, gradient_factory, rng.normal(size=(2, 6)).astype("float32"))
    assert result.layers == ["top", "inner/h"]
    for b, a in zip(before, nested.get_weights()):
        np.testing.assert_array_equal(b, a)


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_pattern_factory_refits_and_plot_writes_a_png(dense_model, rng, tmp_path):
    data = rng.normal(size=(64, 6)).astype("float32")
    fitted = []

    def factory(model):
        fitted.append(model)
        return create_analyzer("pattern_attribution", model).fit(data, verbose=False)

    result = cascading_randomization(dense_model, factory, data[:4], seed=1)
    assert len(fitted) == 5 and fitted[0] is dense_model  # reference + 4 steps, on the clone
    assert all(m is not dense_model for m in fitted[1:])
    np.testing.assert_array_equal(result.correlations[0], np.ones(4))
    assert np.all(np.isfinite(result.mean))
    path = plot_randomization(result, tmp_path / "one.png", title="one")
    assert Path(path).read_bytes()[:8] == PNG_SIGNATURE
    summary = result.to_dict()
    assert summary["layers"] == ["d3", "d2", "d1"] and len(summary["correlations"]) == 4


# --- the script ----------------------------------------------------------------------------------


def load_script():
    from pgig_tf.cli import sanity_check

    return sanity_check


@pytest.mark.slow  # seconds of whole runs; the default suite keeps its quicker kin
def test_script_runs_end_to_end(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(4, activation="softmax", name="head"),
        ]
    )
    set_random_weights(model, 4)
    model.save(tmp_path / "tiny.keras")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32"))
    out = tmp_path / "out"
    summary = load_script().main(
        [
            "--model",
            str(tmp_path / "tiny.keras"),
            "--data",
            str(tmp_path / "data.npy"),
            "--methods",
            "gradient,pattern_attribution,smoothgrad",
            "--num-images",
            "3",
            "--out",
            str(out),
        ]
    )
    assert (out / "sanity.png").read_bytes()[:8] == PNG_SIGNATURE
    written = json.loads((out / "sanity.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert set(written["methods"]) == {"gradient", "pattern_attribution", "smoothgrad"}
    for method in written["methods"].values():
        assert method["layers"] == ["head", "conv"]
        assert np.array(method["correlations"]).shape == (3, 3)  # steps x inputs
        assert np.array(method["signed_correlations"]).shape == (3, 3)
        assert method["mean"][0] == 1.0  # seeded smoothgrad and re-fitted patterns are deterministic
        assert len(method["mean"]) == 3


def test_script_rejects_bad_arguments(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit):
        script.main(["--model", "m.keras", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown method"):
        script.main(["--model", "m.keras", "--data", "d.npy", "--methods", "gradient,nope", "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def script_files(tmp_path_factory):
    """A tiny conv model (.keras: conv -> flat -> head) and 40 inputs for it (.npy)."""
    folder = tmp_path_factory.mktemp("sanity_script")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(4, name="head"),
        ]
    )
    set_random_weights(model, 4)
    model.save(folder / "tiny.keras")
    data = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32")
    np.save(folder / "data.npy", data)
    return {"folder": folder, "model": model, "data": data}


def run_script(script_files, out, *extra):
    folder = script_files["folder"]
    return load_script().main(
        ["--model", str(folder / "tiny.keras"), "--data", str(folder / "data.npy"), "--num-images", "3"]
        + ["--out", str(out), *extra]
    )


def abs_spearman_rows(reference, maps):
    return [spearman(np.abs(a), np.abs(b)) for a, b in zip(reference, maps)]


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_script_mode_independent_randomises_one_layer_at_a_time(script_files, tmp_path):
    """--mode independent: step 2 has only the conv layer re-drawn (the head keeps its weights); cascading both."""
    model, x = script_files["model"], script_files["data"][:3]
    runs = {
        mode: run_script(script_files, tmp_path / mode, "--methods", "gradient", "--mode", mode)
        for mode in ("independent", "cascading")
    }
    draws = drawn_weights(model, 0)
    for mode, summary in runs.items():
        result = summary["methods"]["gradient"]
        assert summary["settings"]["mode"] == mode and result["mode"] == mode
        assert result["layers"] == ["head", "conv"]
        targets = np.array(result["neuron_selection"])
        reference = gradient_maps(model, x, targets).reshape(3, -1)
        manual = clone_with_weights(model)
        for step, name in enumerate(result["layers"], start=1):
            if mode == "independent":
                manual = clone_with_weights(model)  # only this layer re-drawn
            manual.get_layer(name).set_weights(draws[name])
            expected = abs_spearman_rows(reference, gradient_maps(manual, x, targets).reshape(3, -1))
            np.testing.assert_allclose(result["correlations"][step], expected, atol=1e-12, err_msg=f"{mode} {name}")
    independent, cascading = (runs[mode]["methods"]["gradient"]["correlations"] for mode in runs)
    assert independent[1] == cascading[1]  # step 1: the head alone in both modes
    assert independent[2] != cascading[2]  # step 2: the conv alone, or the conv and the head


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_script_signed_reports_and_plots_the_signed_correlations(script_files, tmp_path, monkeypatch, capsys):
    """--signed: the correlations (and the plotted means) are those of the signed maps; without it, of |maps|."""
    from pgig_tf.evaluation import sanity

    plotted = []
    plot = sanity.plot_randomization
    monkeypatch.setattr(
        sanity, "plot_randomization", lambda results, *a, **k: plotted.append(results) or plot(results, *a, **k)
    )
    signed = run_script(script_files, tmp_path / "signed", "--methods", "gradient", "--signed")
    printed = capsys.readouterr().out
    default = run_script(script_files, tmp_path / "absolute", "--methods", "gradient")
    result, other = signed["methods"]["gradient"], default["methods"]["gradient"]
    assert result["absolute"] is False and other["absolute"] is True
    assert result["correlations"] == result["signed_correlations"] == other["signed_correlations"]
    assert result["mean"] == result["signed_mean"]
    assert other["correlations"] != other["signed_correlations"]
    # the signed correlations are Spearman's of the signed maps: the last step's, by hand
    model, x = script_files["model"], script_files["data"][:3]
    targets = np.array(result["neuron_selection"])
    draws = drawn_weights(model, 0)
    randomised = clone_with_weights(model)
    for name in ("head", "conv"):
        randomised.get_layer(name).set_weights(draws[name])
    reference = gradient_maps(model, x, targets).reshape(3, -1)
    last = gradient_maps(randomised, x, targets).reshape(3, -1)
    np.testing.assert_allclose(result["correlations"][2], [spearman(a, b) for a, b in zip(reference, last)], atol=1e-12)
    assert not plotted[0]["gradient"].absolute and plotted[1]["gradient"].absolute
    np.testing.assert_allclose(plotted[0]["gradient"].mean, result["signed_mean"], atol=1e-12)
    header = next(line for line in printed.splitlines() if line.startswith("method"))
    assert header.split() == ["method", "signed"]
    assert (tmp_path / "signed" / "sanity.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_script_fit_samples_fits_the_patterns_on_the_first_samples(script_files, tmp_path, monkeypatch):
    """--fit-samples N: pattern methods are fitted on the first N inputs of --data, on every randomised model."""
    script = load_script()
    given = []
    factory = script.make_factory
    monkeypatch.setattr(
        script, "make_factory", lambda name, fit_data, seed: given.append(fit_data) or factory(name, fit_data, seed)
    )
    summary = run_script(script_files, tmp_path, "--methods", "pattern_attribution", "--fit-samples", "10")
    data = script_files["data"]
    assert summary["settings"]["fit_samples"] == 10
    np.testing.assert_array_equal(given[0], data[:10])
    # the correlations are those of PatternAttribution fitted on those 10 inputs, not on all 40
    correlations = {}
    for count in (10, 40):
        direct = cascading_randomization(
            script_files["model"],
            lambda m, count=count: create_analyzer("pattern_attribution", m).fit(data[:count], verbose=False),
            data[:3],
            seed=0,
        )
        correlations[count] = direct.correlations
    np.testing.assert_allclose(summary["methods"]["pattern_attribution"]["correlations"], correlations[10], atol=1e-9)
    assert not np.allclose(correlations[40], correlations[10], atol=1e-3)
