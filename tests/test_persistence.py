"""analyzer.save / load_analyzer: settings and fitted state round-trip, bit-identical maps, clear errors."""

import json

import keras
import numpy as np
import pytest

import pgig_tf
from conftest import damaged_copies, flip, set_random_weights
from pgig_tf import ANALYZERS, IntegratedGradientsAnalyzer, Patterns, create_analyzer, load_analyzer
from pgig_tf.files import CHECKSUM_KEY, CorruptFileError, write_npz
from pgig_tf.model.fingerprint import OtherModelError, OtherModelWarning
from pgig_tf.persistence import HEADER_KEY

# Non-default settings for every analyzer, so that each setting's round trip shows in the output.
SETTINGS = {
    "gradient": {"batch_size": 7},
    "input_t_gradient": {},
    "integrated_gradients": {
        "steps": 5,
        "baseline": np.random.default_rng(9).normal(size=(9, 9, 2)),
        "method": "gausslegendre",
    },
    "guided_backprop": {},
    "pattern_net": {},
    "pattern_attribution": {},
    "pgig": {"steps": 4, "baseline": 0.3},
    "smoothgrad": {"samples": 4, "noise_scale": 0.2, "seed": 3},
    "smoothgrad_squared": {"samples": 3, "rule": "pattern_attribution", "seed": 1},
    "vargrad": {"samples": 3, "rule": "guided_backprop", "seed": 2},
    "smoothgrad_ig": {"steps": 3, "samples": 2, "seed": 4, "method": "riemann_trapezoid"},
    "expected_gradients": {"samples": 5, "max_background": 6, "seed": 5},
    "smooth_taylor": {
        "samples": 4,
        "noise_scale": "adaptive",
        "candidates": (0.1, 0.4),
        "criterion": "total_variation",
        "seed": 6,
    },
    "noise_baseline_ig": {"steps": 3, "samples": 2, "seed": 7, "method": "riemann_middle"},
    "random": {"seed": 8},
}


def assert_same_config(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], Patterns):
            assert isinstance(b[key], Patterns) and list(a[key]) == list(b[key])
            assert (a[key].kind, a[key].num_samples) == (b[key].kind, b[key].num_samples)
            for layer in a[key]:
                assert a[key][layer].dtype == b[key][layer].dtype
                np.testing.assert_array_equal(a[key][layer], b[key][layer])
        elif isinstance(a[key], np.ndarray):
            assert isinstance(b[key], np.ndarray) and a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert type(a[key]) is type(b[key]) and a[key] == b[key], key


@pytest.mark.slow  # seconds of whole runs; the default suite keeps its quicker kin
def test_every_analyzer_round_trips_bit_identically(conv_model, tmp_path):
    assert set(SETTINGS) == set(ANALYZERS)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(10, 9, 9, 2)).astype(np.float32)
    x = rng.normal(size=(3, 9, 9, 2)).astype(np.float32)
    for name, settings in SETTINGS.items():
        analyzer = create_analyzer(name, conv_model, **settings)
        analyzer.fit(data, verbose=False)
        expected = analyzer.analyze(x, neuron_selection=[0, 2, 1])
        path = tmp_path / f"{name}.npz"
        analyzer.save(path)
        loaded = load_analyzer(path, conv_model)
        assert type(loaded) is type(analyzer)
        assert_same_config(loaded.get_config(), analyzer.get_config())
        got = loaded.analyze(x, neuron_selection=[0, 2, 1])
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected, err_msg=name)  # bit for bit
        if name == "expected_gradients":
            np.testing.assert_array_equal(loaded.baselines, data[:6])
        if name == "smooth_taylor":
            np.testing.assert_array_equal(loaded.chosen_noise_scales, analyzer.chosen_noise_scales)


def test_settings_given_after_construction_and_fitted_state_are_saved(dense_model, tmp_path):
    data = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    analyzer = create_analyzer(
        "expected_gradients",
        dense_model,
        samples=3,
        rule="pattern_attribution",
        patterns=Patterns({"d1": np.zeros((6, 5)), "d2": np.zeros((5, 4)), "d3": np.zeros((4, 3))}),
    )
    analyzer.fit(data, verbose=False)  # replaces the patterns given to the constructor and sets a background
    analyzer.seed = 11
    analyzer.save(tmp_path / "eg.npz")
    loaded = load_analyzer(tmp_path / "eg.npz", dense_model)
    assert loaded.seed == 11
    np.testing.assert_array_equal(loaded.baselines, data)
    assert loaded.patterns.kind == "relu" and loaded.patterns.num_samples == 20
    for layer in ("d1", "d2", "d3"):
        np.testing.assert_array_equal(loaded.patterns[layer], analyzer.patterns[layer])
        assert np.abs(loaded.patterns[layer]).sum() > 0


def test_seed_none_stays_fresh_noise_with_everything_else_identical(dense_model, tmp_path, monkeypatch):
    # seed=None means "fresh noise at every call"; it is saved as None, so the loaded analyzer
    # also draws fresh noise, and with the same per-call seed it gives the same map.
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    analyzer = create_analyzer("smoothgrad", dense_model, samples=5)
    analyzer.save(tmp_path / "sg.npz")
    loaded = load_analyzer(tmp_path / "sg.npz", dense_model)
    assert loaded.seed is None
    assert not np.array_equal(loaded.analyze(x), loaded.analyze(x))
    for a in (analyzer, loaded):
        monkeypatch.setattr(a, "_next_seed", lambda: 1234)
    np.testing.assert_array_equal(loaded.analyze(x), analyzer.analyze(x))


def test_unfitted_pattern_analyzer_round_trips_unfitted(dense_model, tmp_path):
    create_analyzer("pgig", dense_model).save(tmp_path / "p.npz")
    loaded = load_analyzer(tmp_path / "p.npz", dense_model)
    assert loaded.patterns is None
    with pytest.raises(ValueError, match="needs patterns"):
        loaded.analyze(np.zeros((1, 6), np.float32))


def test_new_constructor_arguments_round_trip_without_extra_code(dense_model, tmp_path, monkeypatch):
    class WithOption(IntegratedGradientsAnalyzer):
        def __init__(self, model, *, steps=25, option=("a", 1), **kwargs):
            super().__init__(model, steps=steps, **kwargs)
            self.option = option

    monkeypatch.setitem(ANALYZERS, "with_option", WithOption)
    WithOption(dense_model, steps=np.int64(3), option={"k": [1.5, None], "n": np.int64(4)}, batch_size=5).save(
        tmp_path / "o.npz"
    )
    loaded = load_analyzer(tmp_path / "o.npz", dense_model)
    assert loaded.option == {"k": [1.5, None], "n": 4} and loaded.batch_size == 5
    config = loaded.get_config()
    assert type(config["option"]["n"]) is np.int64  # numpy scalars keep their type
    assert type(config["steps"]) is int and config["steps"] == 3  # the attribute, as the analyzer validated it
    assert WithOption(dense_model).get_config()["option"] == ("a", 1)


def test_model_that_differs_is_rejected(dense_model, tmp_path):
    data = np.random.default_rng(3).normal(size=(8, 6)).astype(np.float32)
    create_analyzer("pattern_attribution", dense_model).fit(data, verbose=False).save(tmp_path / "pa.npz")
    other_widths = set_random_weights(
        keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(7, activation="relu", name="d1"),
                keras.layers.Dense(4, activation="relu", name="d2"),
                keras.layers.Dense(3, name="d3"),
            ]
        ),
        1,
    )
    with pytest.raises(
        OtherModelError,
        match=r"saved for another model .*kernel of 'd1' has shape \(6, 7\) here, "
        r"\(6, 5\) in the file",
    ):
        load_analyzer(tmp_path / "pa.npz", other_widths)
    with pytest.warns(OtherModelWarning, match=r"kernel of 'd1' has shape \(6, 7\) here"):  # allowed, but the
        with pytest.raises(ValueError, match=r"cannot rebuild .*pattern shape differs from the kernel for 'd1'"):
            load_analyzer(tmp_path / "pa.npz", other_widths, allow_other_model=True)  # patterns cannot fit
    other_input = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"saved for a model with inputs \[\[None, 6\]\].*has inputs \[\[None, 5\]\]"):
        load_analyzer(tmp_path / "pa.npz", other_input)


def test_clear_errors_for_missing_foreign_and_other_version_files(dense_model, tmp_path):
    with pytest.raises(
        FileNotFoundError, match="missing.npz' cannot be read as a pgig_tf analyzer file .*no such file"
    ):
        load_analyzer(tmp_path / "missing.npz", dense_model)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(
        CorruptFileError, match="text.npz' cannot be read as a pgig_tf analyzer file .*not a complete .npz archive"
    ):
        load_analyzer(tmp_path / "text.npz", dense_model)
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(CorruptFileError, match="holds one .npy array"):
        load_analyzer(tmp_path / "array.npy", dense_model)
    Patterns({"d1": np.zeros((6, 5))}).save(tmp_path / "patterns.npz")
    with pytest.raises(
        CorruptFileError,
        match=r"it is a patterns file \(written by Patterns.save\); read it with "
        r"pgig_tf.Patterns.load",
    ):
        load_analyzer(tmp_path / "patterns.npz", dense_model)

    path = create_analyzer("gradient", dense_model).save(tmp_path / "g.npz")
    with np.load(path) as data:
        entries = {key: data[key] for key in data.files if key != CHECKSUM_KEY}
    header = json.loads(str(entries[HEADER_KEY]))
    header["pgig_tf_version"] = "0.0.1"
    entries[HEADER_KEY] = np.array(json.dumps(header))
    write_npz(tmp_path / "old.npz", entries)  # as another pgig_tf version would have written it
    with pytest.raises(
        ValueError, match=rf"saved by pgig_tf 0\.0\.1, this is pgig_tf {pgig_tf.__version__}.*strict_version=False"
    ):
        load_analyzer(tmp_path / "old.npz", dense_model)
    with pytest.warns(UserWarning, match="saved by pgig_tf 0.0.1"):
        assert isinstance(load_analyzer(tmp_path / "old.npz", dense_model, strict_version=False), ANALYZERS["gradient"])

    header["format_version"] = 99
    entries[HEADER_KEY] = np.array(json.dumps(header))
    write_npz(tmp_path / "future.npz", entries)
    with pytest.raises(CorruptFileError, match="format version 99; this pgig_tf .* reads versions 1 and 2"):
        load_analyzer(tmp_path / "future.npz", dense_model, strict_version=False)


def test_save_writes_exactly_the_given_name_and_rejects_unsaveable_settings(dense_model, tmp_path):
    path = create_analyzer("gradient", dense_model).save(tmp_path / "no_suffix")
    assert path == str(tmp_path / "no_suffix") and (tmp_path / "no_suffix").is_file()

    class Unregistered(IntegratedGradientsAnalyzer):
        pass

    with pytest.raises(ValueError, match="Unregistered is not one of them"):
        Unregistered(dense_model).save(tmp_path / "u.npz")
    analyzer = create_analyzer("integrated_gradients", dense_model)
    analyzer.steps = object()
    with pytest.raises(TypeError, match="cannot save setting 'steps'.*got object"):
        analyzer.save(tmp_path / "bad.npz")


ANALYZER_FILE = " cannot be read as a pgig_tf analyzer file (written by analyzer.save): "


def fitted_pgig(model, seed=4):
    data = np.random.default_rng(seed).normal(size=(16, 6)).astype(np.float32)
    return create_analyzer("pgig", model, steps=3).fit(data, verbose=False)


def test_every_damaged_analyzer_file_raises_one_clear_error(dense_model, tmp_path):
    path = fitted_pgig(dense_model).save(tmp_path / "a.npz")
    cases = damaged_copies(path, tmp_path)
    assert len(cases) == 15
    for what, damaged in cases:
        with pytest.raises(CorruptFileError) as caught:
            load_analyzer(damaged, dense_model)
        error = caught.value
        assert str(error).startswith(repr(str(damaged)) + ANALYZER_FILE), what
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), what


def test_no_single_inverted_byte_loads_another_analyzer(dense_model, tmp_path):
    analyzer = fitted_pgig(dense_model)
    x = np.random.default_rng(5).normal(size=(2, 6)).astype(np.float32)
    expected = analyzer.analyze(x, 1)
    raw = open(analyzer.save(tmp_path / "a.npz"), "rb").read()
    outcomes = {"CorruptFileError": 0, "same analyzer": 0}
    positions = range(0, len(raw), len(raw) // 60)
    for at in positions:
        (tmp_path / "f.npz").write_bytes(flip(raw, at))
        try:
            loaded = load_analyzer(tmp_path / "f.npz", dense_model)
        except CorruptFileError:
            outcomes["CorruptFileError"] += 1
            continue
        assert_same_config(loaded.get_config(), analyzer.get_config())
        np.testing.assert_array_equal(loaded.analyze(x, 1), expected)
        outcomes["same analyzer"] += 1
    assert sum(outcomes.values()) == len(positions) and outcomes["CorruptFileError"] >= 0.85 * len(positions)


def copy_of(model, activation="relu", seed=None):
    """dense_model's architecture with d1's activation as given and its weights copied (or re-drawn with `seed`)."""
    copy = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation=activation, name="d1"),
            keras.layers.Dense(4, activation="relu", name="d2"),
            keras.layers.Dense(3, name="d3"),
        ]
    )
    copy.set_weights(model.get_weights())
    return copy if seed is None else set_random_weights(copy, seed)


def test_an_analyzer_refuses_another_model_unless_allowed(dense_model, tmp_path):
    analyzer = fitted_pgig(dense_model)
    path = analyzer.save(tmp_path / "a.npz")
    x = np.random.default_rng(6).normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_array_equal(load_analyzer(path, copy_of(dense_model)).analyze(x, 1), analyzer.analyze(x, 1))
    other_weights = copy_of(dense_model, seed=9)
    with pytest.raises(
        OtherModelError,
        match=r"a.npz' was saved for another model than '.*': layer 'd1' weights "
        r"differ; layer 'd2' weights differ; layer 'd3' weights differ\. Load it "
        r"with the model it was saved with, or pass allow_other_model=True",
    ):
        load_analyzer(path, other_weights)
    with pytest.raises(OtherModelError, match=r"activation of 'd1' is linear here, relu in the file\. Load"):
        load_analyzer(path, copy_of(dense_model, activation="linear"))
    gradient = create_analyzer("gradient", dense_model).save(tmp_path / "g.npz")
    with pytest.raises(OtherModelError, match="layer 'd1' weights differ"):  # every analyzer file, patterns or not
        load_analyzer(gradient, other_weights)

    with pytest.warns(OtherModelWarning) as caught:
        loaded = load_analyzer(path, other_weights, allow_other_model=True)
    said = [str(w.message) for w in caught if w.category is OtherModelWarning]
    assert len(said) == 1 and "was saved for another model" in said[0] and "layer 'd1' weights differ" in said[0]
    assert loaded.allow_other_model and loaded.get_config()["allow_other_model"] is True
    unchecked = create_analyzer("pgig", other_weights, steps=3, patterns=Patterns(dict(analyzer.patterns)))
    np.testing.assert_array_equal(loaded.analyze(x, 1), unchecked.analyze(x, 1))


def test_files_of_the_previous_version_still_load_unverified(dense_model, tmp_path):
    analyzer = fitted_pgig(dense_model)
    with np.load(analyzer.save(tmp_path / "a.npz")) as data:
        entries = {k: data[k] for k in data.files if k != CHECKSUM_KEY}
    header = json.loads(str(entries[HEADER_KEY]))
    header["format_version"] = 1  # as the previous version wrote it: no fingerprints, no checksum
    del header["model_fingerprint"], header["settings"]["patterns"]["model_fingerprint"]
    del header["settings"]["allow_other_model"]
    entries[HEADER_KEY] = np.array(json.dumps(header))
    with open(tmp_path / "v1.npz", "wb") as file:
        np.savez(file, **entries)
    loaded = load_analyzer(tmp_path / "v1.npz", copy_of(dense_model, seed=9))  # nothing to tell another model by
    assert loaded.patterns.model_fingerprint is None and loaded.steps == 3
    header["format_version"] = 2  # the current version without its checksum: damaged
    entries[HEADER_KEY] = np.array(json.dumps(header))
    with open(tmp_path / "unsigned.npz", "wb") as file:
        np.savez(file, **entries)
    with pytest.raises(CorruptFileError, match="it is damaged: its checksum entry is missing"):
        load_analyzer(tmp_path / "unsigned.npz", dense_model)


# Settings changed after construction, for several analyzers: (name, constructor settings, changes)
CHANGED = [
    ("integrated_gradients", {}, {"steps": 7, "baseline": 0.25, "batch_size": 5}),
    ("integrated_gradients", {}, {"steps": "auto", "method": "riemann_middle", "tolerance": 0.05, "max_steps": 27}),
    ("pgig", {}, {"steps": 4, "baseline": np.full((1, 1, 2), -0.5, np.float32)}),
    ("smoothgrad", {"seed": 1}, {"samples": 3, "noise_scale": 0.4, "seed": 12}),
    ("smoothgrad_ig", {"seed": 2}, {"steps": 2, "samples": 3, "noise_scale": 0.05, "baseline": 0.1}),
    ("noise_baseline_ig", {"seed": 3}, {"steps": 3, "samples": 2}),
    (
        "smooth_taylor",
        {"seed": 4, "noise_scale": "adaptive", "candidates": (0.1, 0.4), "criterion": "total_variation"},
        {"samples": 3, "candidates": (0.2, 0.6)},
    ),
    (
        "smooth_taylor",
        {"seed": 4, "noise_scale": "adaptive", "candidates": (0.1, 0.4), "criterion": "total_variation"},
        {"samples": 3, "noise_scale": 0.3},
    ),
    ("expected_gradients", {"seed": 5, "samples": 4}, {"samples": 2, "max_background": 3}),
]


@pytest.mark.parametrize("name,settings,changes", CHANGED, ids=[f"{c[0]}-{i}" for i, c in enumerate(CHANGED)])
def test_settings_changed_after_construction_survive_save_and_load(conv_model, tmp_path, name, settings, changes):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 9, 9, 2)).astype(np.float32)
    analyzer = create_analyzer(name, conv_model, **settings).fit(
        rng.normal(size=(8, 9, 9, 2)).astype(np.float32), verbose=False
    )
    for key, value in changes.items():
        setattr(analyzer, key, value)  # before the first analyze call, so the analyzer itself uses them
    config = analyzer.get_config()
    for key, value in changes.items():
        assert config[key] is value, key
    expected = analyzer.analyze(x, 1)
    loaded = load_analyzer(analyzer.save(tmp_path / "a.npz"), conv_model)
    for key, value in changes.items():
        np.testing.assert_array_equal(getattr(loaded, key), value, err_msg=key)
    assert_same_config(loaded.get_config(), config)
    np.testing.assert_array_equal(loaded.analyze(x, 1), expected)
    fresh = create_analyzer(name, conv_model, **{**settings, **changes, "batch_size": config["batch_size"]})
    if name == "expected_gradients":
        fresh.set_background(analyzer.baselines)
    if fresh.needs_patterns:
        fresh.set_patterns(analyzer.patterns)
    np.testing.assert_array_equal(fresh.analyze(x, 1), expected)  # the changed settings are the ones in use
