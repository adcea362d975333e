"""Atomic writes (the target is replaced whole or left as it was) and checked .npz files (verified when read)."""

import os
import zipfile

import numpy as np
import pytest

from conftest import damaged_copies, flip
from pgig_tf.files import (
    CHECKSUM_KEY,
    CorruptFileError,
    MissingFileError,
    atomic_write,
    checksum,
    read_npz,
    write_npz,
)

EXPECTED, REMEDY = "a test file", "Write it again."


def test_a_completed_write_replaces_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with atomic_write(path) as handle:
        handle.write("new")
        assert path.read_text() == "old"  # not visible before the rename
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.json") as handle:
            handle.write("{")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"mode must be 'w' or 'wb', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_the_file_gets_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "results.json") as handle:
            handle.write("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def entries():
    return {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1.5, -2.0]),
        "header": np.array('{"k": 1}'),
        "flags": np.array([True, False]),
    }


def assert_same_entries(got, expected):
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and got[name].shape == expected[name].shape, name
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_checked_npz_round_trips_and_is_an_ordinary_npz(tmp_path):
    write_npz(tmp_path / "f", entries())
    assert os.listdir(tmp_path) == ["f"]  # exactly the name given, no ".npz" appended, no temporary left
    got, verified = read_npz(tmp_path / "f", EXPECTED, REMEDY)
    assert verified
    assert_same_entries(got, entries())
    with np.load(tmp_path / "f") as data:  # numpy reads it as it is
        assert sorted(data.files) == sorted([*entries(), CHECKSUM_KEY])
        assert str(data[CHECKSUM_KEY]) == checksum(entries())
    np.savez(tmp_path / "plain.npz", **entries())  # a file without a checksum is read, unverified
    got, verified = read_npz(tmp_path / "plain.npz", EXPECTED, REMEDY)
    assert not verified
    assert_same_entries(got, entries())
    with pytest.raises(ValueError, match="may not be called '__pgig_tf_checksum__'"):
        write_npz(tmp_path / "g", {CHECKSUM_KEY: np.zeros(1)})


def test_the_checksum_covers_names_dtypes_shapes_and_bytes_in_any_order():
    base = entries()
    reference = checksum(base)
    assert len(reference) == 64 and checksum(dict(reversed(list(base.items())))) == reference
    changed = [
        {**{k: v for k, v in base.items() if k != "a"}, "A": base["a"]},  # name
        {**base, "a": base["a"].astype(np.float64)},  # dtype
        {**base, "a": base["a"].reshape(4, 3)},  # shape, same bytes
        {**base, "a": np.where(base["a"] == 5, np.float32(5.0000005), base["a"])},  # one value, by one ulp
        {**base, "header": np.array('{"k": 2}')},  # the header
        {k: v for k, v in base.items() if k != "b"},  # one entry fewer
    ]
    assert len({checksum(c) for c in changed} | {reference}) == len(changed) + 1
    with pytest.raises(TypeError, match="array of Python objects"):
        checksum({"o": np.array([object()])})


def shows_no_other_error(error):
    """True if the traceback of `error` chains no other exception (no "During handling of ..." BadZipFile etc.)."""
    return error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def damage_outcomes(path, directory):
    """{what was done: message of the CorruptFileError} for every damaged copy of `path` (see `damaged_copies`)."""
    outcomes = {}
    for what, damaged in damaged_copies(path, directory):
        with pytest.raises(CorruptFileError) as caught:
            read_npz(damaged, EXPECTED, REMEDY)
        message = str(caught.value)
        assert message.startswith(repr(str(damaged)) + " cannot be read as a test file: "), (what, message)
        assert message.endswith(REMEDY), (what, message)
        assert shows_no_other_error(caught.value), what
        outcomes[what] = message
    return outcomes


def test_every_damaged_copy_raises_one_clear_error_naming_the_file(tmp_path):
    write_npz(tmp_path / "f.npz", entries())
    outcomes = damage_outcomes(tmp_path / "f.npz", tmp_path)
    assert len(outcomes) == 15
    assert "is empty (0 bytes)" in outcomes["emptied (0 bytes)"]
    assert sum("not a complete .npz archive" in m for w, m in outcomes.items() if w.startswith("cut to")) == 9
    assert "is a directory, not a file" in outcomes["a directory in its place"]
    assert "there is no such file (check the path)" in outcomes["missing"]
    inverted = [m for w, m in outcomes.items() if "inverted" in w]
    assert len(inverted) == 3 and all("it is damaged" in m for m in inverted)


def test_missing_file_error_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        read_npz(tmp_path / "nothing.npz", EXPECTED, REMEDY)
    assert type(caught.value) is MissingFileError and isinstance(caught.value, CorruptFileError)


def test_other_kinds_of_file_and_consistent_edits_are_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CorruptFileError, match="holds one .npy array, not an .npz archive"):
        read_npz(tmp_path / "one.npy", EXPECTED, REMEDY)
    (tmp_path / "text.npz").write_text("just text")
    with pytest.raises(CorruptFileError, match="not a complete .npz archive"):
        read_npz(tmp_path / "text.npz", EXPECTED, REMEDY)

    # a valid archive (CRC-32s right) whose contents changed after the checksum was written
    write_npz(tmp_path / "f.npz", entries())
    with np.load(tmp_path / "f.npz") as data:
        stored = {k: data[k] for k in data.files}
    edited = {**stored, "b": np.array([1.5, -2.5])}
    np.savez(tmp_path / "edited.npz", **edited)
    without_one = {k: v for k, v in stored.items() if k != "flags"}
    np.savez(tmp_path / "dropped.npz", **without_one)
    for name in ("edited.npz", "dropped.npz"):
        with pytest.raises(CorruptFileError, match="do not match the SHA-256 checksum stored when it was written"):
            read_npz(tmp_path / name, EXPECTED, REMEDY)


def test_a_damaged_directory_that_hides_entries_is_caught(tmp_path):
    # zipfile silently skips the directory records that follow one whose comment length is
    # damaged; the archive's end record still counts every entry, so the lost ones are noticed
    write_npz(tmp_path / "f.npz", entries())
    raw = (tmp_path / "f.npz").read_bytes()
    end = raw.rindex(b"PK\x05\x06")
    first_record = int.from_bytes(raw[end + 16 : end + 20], "little")  # where the directory starts
    assert raw[first_record : first_record + 4] == b"PK\x01\x02"
    (tmp_path / "hidden.npz").write_bytes(flip(raw, first_record + 32))  # low byte of its comment length
    with zipfile.ZipFile(tmp_path / "hidden.npz") as archive:
        assert len(archive.infolist()) == 1  # what zipfile alone sees: one entry, no error
    with pytest.raises(CorruptFileError, match=r"its directory says 5 entries, 1 can be read"):
        read_npz(tmp_path / "hidden.npz", EXPECTED, REMEDY)
