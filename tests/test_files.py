"""Atomic writes: the target is replaced whole or left as it was, and no temporary file stays behind."""

import os

import pytest

from pgig_tf.files import atomic_write


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
