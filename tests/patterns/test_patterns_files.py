"""Patterns files (format, model fingerprint, checksum; damaged or foreign files raise CorruptFileError) and
patterns refusing a model other than the one they were fitted on."""

import collections
import json
import os
import warnings

import keras
import numpy as np
import pytest

import pgig_tf.model.fingerprint as fingerprint_module
from conftest import damaged_copies, flip, set_random_weights
from pgig_tf import Patterns, create_analyzer, fit_patterns, load_analyzer
from pgig_tf.files import CHECKSUM_KEY, CorruptFileError, MissingFileError, write_npz
from pgig_tf.model.fingerprint import OtherModelError, OtherModelWarning, model_fingerprint

META = "__pgig_tf_meta__"
EXPECTED = (
    " cannot be read as a pgig_tf patterns file (written by Patterns.save, or an .npz of layer name -> pattern array): "
)
REMEDY = "Fit the patterns again (fit_patterns(model, data)) and save them, or pass the path of an intact copy."


def fitted(model, seed=0):
    data = np.random.default_rng(seed).normal(size=(40, 6)).astype(np.float32)
    return fit_patterns(model, data, verbose=False)


def assert_same_patterns(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(got[name], expected[name])
    assert (got.kind, got.num_samples, got.model_fingerprint) == (
        expected.kind,
        expected.num_samples,
        expected.model_fingerprint,
    )


def load_error(path):
    """The message of the CorruptFileError that Patterns.load(path) raises, checked to chain no other error."""
    with pytest.raises(CorruptFileError) as caught:
        Patterns.load(path)
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    message = str(error)
    assert message.startswith(repr(os.fspath(path)) + EXPECTED), message
    return message


def test_save_writes_format_fingerprint_and_checksum_and_load_verifies_them(dense_model, tmp_path):
    patterns = fitted(dense_model)
    assert patterns.model_fingerprint == model_fingerprint(dense_model)  # set by fit_patterns
    path = patterns.save(tmp_path / "p")
    assert path == str(tmp_path / "p.npz")
    with np.load(path) as data:
        assert sorted(data.files) == sorted([CHECKSUM_KEY, META, "d1", "d2", "d3"])
        meta = json.loads(str(data[META]))
    assert (meta["format"], meta["format_version"], meta["kind"], meta["num_samples"]) == (
        "pgig_tf.patterns",
        2,
        "relu",
        40,
    )
    assert meta["model_fingerprint"] == patterns.model_fingerprint
    assert_same_patterns(Patterns.load(path), patterns)


def test_every_damaged_patterns_file_raises_one_clear_error(dense_model, tmp_path):
    path = fitted(dense_model).save(tmp_path / "p.npz")
    cases = damaged_copies(path, tmp_path)
    assert len(cases) == 15
    for what, damaged in cases:
        message = load_error(damaged)
        assert message.endswith(REMEDY), what
        if what == "missing":
            with pytest.raises(FileNotFoundError):  # MissingFileError is both
                Patterns.load(damaged)


def test_no_single_inverted_byte_gives_other_patterns(dense_model, tmp_path):
    # every 11th byte of the file inverted in turn: each copy raises CorruptFileError, or (where the byte
    # is not part of the contents: a timestamp, the file mode) loads exactly the saved patterns
    patterns = fitted(dense_model)
    raw = open(patterns.save(tmp_path / "p.npz"), "rb").read()
    outcomes = collections.Counter()
    for at in range(0, len(raw), 11):
        (tmp_path / "f.npz").write_bytes(flip(raw, at))
        try:
            loaded = Patterns.load(tmp_path / "f.npz")
        except CorruptFileError:
            outcomes["CorruptFileError"] += 1
            continue
        assert_same_patterns(loaded, patterns)
        outcomes["same patterns"] += 1
    assert sum(outcomes.values()) == len(range(0, len(raw), 11))
    assert outcomes["CorruptFileError"] > 0.85 * sum(outcomes.values())


def test_other_kinds_of_file_are_refused_saying_what_they_are(dense_model, tmp_path):
    data = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    analyzer_file = create_analyzer("pgig", dense_model).fit(data, verbose=False).save(tmp_path / "a.npz")
    assert (
        "it is an analyzer file (written by analyzer.save); read it with pgig_tf.load_analyzer(path, model)"
        in load_error(analyzer_file)
    )
    checkpoint = tmp_path / "fit.npz"
    fit_patterns(dense_model, data, batch_size=4, verbose=False, checkpoint=checkpoint, checkpoint_every=2)
    assert "it is a fit_patterns checkpoint" in load_error(checkpoint)
    np.save(tmp_path / "p.npy", np.zeros((6, 5)))
    assert "it holds one .npy array, not an .npz archive" in load_error(tmp_path / "p.npy")
    (tmp_path / "notes.npz").write_text("some text")
    assert "it is not a complete .npz archive" in load_error(tmp_path / "notes.npz")
    np.savez(tmp_path / "nothing.npz")
    assert "it is an .npz archive with no arrays" in load_error(tmp_path / "nothing.npz")
    np.savez(tmp_path / "ints.npz", d1=np.zeros((6, 5), np.int32))
    assert "it does not hold pattern arrays (pattern for layer 'd1' must be a float array" in load_error(
        tmp_path / "ints.npz"
    )
    os.mkdir(tmp_path / "folder.npz")
    assert "it is a directory" in load_error(tmp_path / "folder.npz")
    with pytest.raises(MissingFileError):
        Patterns.load(tmp_path / "absent.npz")


def rewritten(path, target, change):
    """The entries of `path` (without the checksum) passed through `change`, written to `target` with a fresh checksum."""
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files if k != CHECKSUM_KEY}
    write_npz(target, change(entries))
    return target


def with_meta(entries, **changes):
    meta = json.loads(str(entries[META]))
    meta.update(changes)
    return {**entries, META: np.array(json.dumps(meta))}


def test_headers_that_do_not_fit_are_refused(dense_model, tmp_path):
    path = fitted(dense_model).save(tmp_path / "p.npz")
    with np.load(path) as data:
        unsigned = {k: data[k] for k in data.files if k != CHECKSUM_KEY}
    np.savez(tmp_path / "unsigned.npz", **unsigned)  # version 2 without its checksum entry
    assert "it is damaged: its checksum entry is missing" in load_error(tmp_path / "unsigned.npz")
    future = rewritten(path, tmp_path / "future.npz", lambda e: with_meta(e, format_version=3))
    assert "it has patterns format version 3; this pgig_tf reads versions 1 and 2" in load_error(future)
    foreign = rewritten(path, tmp_path / "foreign.npz", lambda e: with_meta(e, format="other.thing"))
    assert "its header names format 'other.thing'" in load_error(foreign)
    garbled = rewritten(path, tmp_path / "garbled.npz", lambda e: {**e, META: np.array("{not json")})
    assert "its '__pgig_tf_meta__' entry is not valid JSON" in load_error(garbled)


def test_files_of_the_previous_version_and_plain_npz_still_load(dense_model, tmp_path):
    patterns = fitted(dense_model)
    arrays = dict(patterns)
    # as the previous version wrote them: layer entries and a meta entry with kind and num_samples only
    np.savez(tmp_path / "v1.npz", **arrays, **{META: np.array(json.dumps({"kind": "relu", "num_samples": 40}))})
    loaded = Patterns.load(tmp_path / "v1.npz")
    assert (loaded.kind, loaded.num_samples, loaded.model_fingerprint) == ("relu", 40, None)
    np.savez(tmp_path / "plain.npz", **arrays)
    plain = Patterns.load(tmp_path / "plain.npz")
    assert (plain.kind, plain.num_samples, plain.model_fingerprint) == (None, None, None)
    for got in (loaded, plain):
        assert list(got) == list(arrays)
        for name in arrays:
            np.testing.assert_array_equal(got[name], arrays[name])
    # without a checksum, damage inside an entry is still caught by the archive's CRC-32
    raw = (tmp_path / "v1.npz").read_bytes()
    (tmp_path / "v1_damaged.npz").write_bytes(flip(raw, raw.index(arrays["d2"].tobytes()) + 7))
    assert "Bad CRC-32 for file 'd2.npy'" in load_error(tmp_path / "v1_damaged.npz")


def same_layers(model, activation="relu", seed=None):
    """A copy of `dense_model`'s architecture with layer d1's activation as given and the weights copied (or re-drawn)."""
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


def test_patterns_refuse_a_model_with_other_weights_or_activations(dense_model):
    patterns = fitted(dense_model)
    patterns.check(same_layers(dense_model))  # the same model, built again: accepted
    other_weights = same_layers(dense_model, seed=7)
    with pytest.raises(
        OtherModelError,
        match=r"the patterns were fitted on another model than '.*': layer 'd1' "
        r"weights differ; layer 'd2' weights differ; layer 'd3' weights differ\. "
        r"Refit them .* or pass allow_other_model=True",
    ):
        patterns.check(other_weights)
    other_activation = same_layers(dense_model, activation="linear")
    with pytest.raises(
        OtherModelError,
        match=r"fitted on another model than '.*': activation of 'd1' is linear here, "
        r"relu at fit time\. ",
    ):
        patterns.check(other_activation)
    with pytest.warns(OtherModelWarning, match=r"activation of 'd1' is linear here, relu at fit time \(used anyway"):
        patterns.check(other_activation, allow_other_model=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtherModelWarning)
        Patterns(dict(patterns)).check(other_weights)  # no fingerprint (hand-made patterns): shapes only


def test_analyzers_refuse_patterns_of_another_model_unless_allowed(dense_model, tmp_path):
    patterns = Patterns.load(fitted(dense_model).save(tmp_path / "p.npz"))
    other = same_layers(dense_model, seed=7)
    with pytest.raises(OtherModelError, match="layer 'd1' weights differ"):
        create_analyzer("pgig", other, patterns=patterns)
    with pytest.raises(OtherModelError, match="layer 'd1' weights differ"):
        create_analyzer("smoothgrad", other, rule="pattern_attribution", patterns=patterns)
    with pytest.warns(OtherModelWarning, match="layer 'd1' weights differ") as caught:
        allowed = create_analyzer("pgig", other, patterns=patterns, steps=3, allow_other_model=True)
    assert [w.filename for w in caught if w.category is OtherModelWarning] == [__file__]  # names the caller's line
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    unchecked = create_analyzer("pgig", other, patterns=Patterns(dict(patterns)), steps=3)
    np.testing.assert_array_equal(allowed.analyze(x, 1), unchecked.analyze(x, 1))  # the flag only changes the check
    mine = create_analyzer("pgig", other, patterns=fitted(other), steps=3)
    with pytest.raises(OtherModelError, match="layer 'd1' weights differ"):
        mine.set_patterns(patterns)
    with pytest.warns(OtherModelWarning):
        allowed.set_patterns(patterns)  # same shapes: written into the compiled loop, checked all the same


def test_weights_are_hashed_at_fit_save_load_and_construction_never_by_analyze(dense_model, tmp_path, monkeypatch):
    calls = []
    original = fingerprint_module._weights_sha256
    monkeypatch.setattr(
        fingerprint_module, "_weights_sha256", lambda layer: calls.append(layer.name) or original(layer)
    )
    x = np.random.default_rng(3).normal(size=(2, 6)).astype(np.float32)
    analyzer = create_analyzer("pgig", dense_model, steps=2).fit(x, verbose=False)
    assert calls == ["d1", "d2", "d3"]  # one fingerprint for the fit and the check of its patterns
    for _ in range(3):
        analyzer.analyze(x, 0)
    assert len(calls) == 3
    analyzer.save(tmp_path / "a.npz")
    assert len(calls) == 6
    loaded = load_analyzer(tmp_path / "a.npz", dense_model)  # one fingerprint for the file and its patterns
    assert len(calls) == 9
    loaded.analyze(x, 0)
    create_analyzer("pattern_attribution", dense_model, patterns=loaded.patterns).analyze(x, 0)
    assert len(calls) == 12
