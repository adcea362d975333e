"""Writing files atomically, locking an output against a second writer, and `.npz` files that carry a SHA-256 checksum."""

import contextlib
import hashlib
import json
import os
import tempfile

import numpy as np

# The entry of a checked `.npz` (`write_npz`) that holds the SHA-256 checksum of all the other entries.
CHECKSUM_KEY = "__pgig_tf_checksum__"


# The header entry of each kind of `.npz` that pgig_tf writes, and how that kind is read: a reader
# given a file of another kind says which kind it is.
FILE_KINDS = {
    "__pgig_tf_meta__": "a patterns file (written by Patterns.save); read it with pgig_tf.Patterns.load(path)",
    "__pgig_tf_analyzer__": "an analyzer file (written by analyzer.save); read it with pgig_tf.load_analyzer(path, model)",
    "__pgig_tf_checkpoint__": "a fit_patterns checkpoint; it resumes a fit: fit_patterns(..., checkpoint=path)",
    "__progress__": "a fit_patterns checkpoint; it resumes a fit: fit_patterns(..., checkpoint=path)",
    "__pgig_tf_evaluation__": "a pgig-evaluate checkpoint of per-image scores; read it with "
    "pgig_tf.evaluation.faithfulness.EvaluationState.load(path)",
    "__pgig_tf_roar_maps__": "a pgig-roar-benchmark maps file (one method's maps of the digits); that command reads it",
}


class CorruptFileError(ValueError):
    """A file that pgig_tf wrote for later reading cannot be used: it is missing, empty, truncated,
    damaged (its checksum does not match), a directory, or a file of another kind or format version.

    The message names the file, what was expected there and what to do. Missing files raise the
    subclass `MissingFileError`, which is also a `FileNotFoundError`.
    """


class MissingFileError(CorruptFileError, FileNotFoundError):
    """There is no file at the path given (a `CorruptFileError` and a `FileNotFoundError`)."""


def unreadable(path, expected, problem, remedy, cls=CorruptFileError):
    """The `CorruptFileError` (or `cls`) whose message says that `path` is not `expected` because of `problem`.

    Args:
        path: the file.
        expected: what the file should be, e.g. "a pgig_tf patterns file (written by Patterns.save)".
        problem: what is wrong with it, e.g. "it is empty (0 bytes)".
        remedy: what to do, one sentence.
        cls: the exception class.

    Returns:
        the exception (for the caller to raise).
    """
    return cls(f"{os.fspath(path)!r} cannot be read as {expected}: {problem}. {remedy}")


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding=None):
    """Opens a temporary file beside `path` for writing; on success it replaces `path` in one rename.

    A crash or an exception while writing leaves `path` as it was (or absent) and no temporary
    file behind, so a reader never sees a half-written checkpoint or result.

    Args:
        path: the file to write.
        mode: "w" (text) or "wb" (binary).
        encoding: the text encoding (text mode only; default UTF-8).

    Yields:
        the open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # the permissions open() would give, not mkstemp's 0600
    try:
        with os.fdopen(handle, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class LockedError(RuntimeError):
    """Another process holds the lock of a file that this one would write (`exclusive_lock`)."""


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Holds an exclusive lock on `path` (created if needed) for the block; refuses if another process holds it.

    The lock is an advisory `fcntl.flock` on an open file: the operating system releases it when
    the holder exits, even when it is killed, so a crashed run never leaves a stale lock. Where
    `fcntl` does not exist (Windows) the block runs unlocked.

    Args:
        path: the lock file.
        what: what the lock protects, for the message (e.g. "the output folder results/").

    Raises:
        LockedError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(
                f"{what} is in use by {holder} (lock file {os.fspath(path)!r}); wait for it to finish or choose "
                "another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def checksum(arrays):
    """The SHA-256 (hex) of named arrays: each entry's name, dtype, shape and bytes, in name order.

    Args:
        arrays: a mapping of entry name -> numpy array (any dtype but object).

    Returns:
        64 hexadecimal digits; equal for equal contents whatever the mapping's order.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        if array.dtype.hasobject:
            raise TypeError(f"entry {name!r} is an array of Python objects, which has no stable bytes")
        # the description line keeps entries apart: no two different contents give one byte stream
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode() + b"\n")
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def file_sha256(path, chunk_size=1 << 20):
    """The SHA-256 (hex) of the bytes of the file at `path`, read in chunks of `chunk_size` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def write_npz(path, arrays):
    """Writes `arrays` (name -> array) and their `checksum` (entry `CHECKSUM_KEY`) to `path`, atomically.

    The file is an ordinary uncompressed `.npz` (numpy can read it) written under exactly the name
    given (no ".npz" appended).

    Args:
        path: the file to write.
        arrays: entry name -> numpy array; no name may be `CHECKSUM_KEY`.
    """
    if CHECKSUM_KEY in arrays:
        raise ValueError(f"an entry may not be called {CHECKSUM_KEY!r}")
    entries = {name: np.asarray(value) for name, value in arrays.items()}
    entries[CHECKSUM_KEY] = np.array(checksum(entries))
    with atomic_write(path, "wb") as file:  # a file object: np.savez would otherwise append ".npz"
        np.savez(file, **entries)


def read_npz(path, expected, remedy):
    """All entries of the `.npz` at `path`, verified against their checksum when the file has one.

    Every way the file can be unusable raises a `CorruptFileError` naming `path`, `expected`
    and `remedy`: no file (`MissingFileError`), a directory, an empty or truncated file, a file
    that is not an `.npz` archive (e.g. one `.npy` array), an entry that cannot be read (a
    damaged archive), or contents that do not match the stored checksum.

    Args:
        path: the file.
        expected: what the file should be (for messages).
        remedy: what to do if it cannot be read (for messages).

    Returns:
        (entries, verified): entry name -> array without the checksum entry, and whether a
        checksum was there and matched (False for files written without one).
    """
    path = os.fspath(path)

    def fail(problem, cls=CorruptFileError):
        return unreadable(path, expected, problem, remedy, cls)

    if not os.path.lexists(path):
        raise fail("there is no such file (check the path)", MissingFileError)
    if os.path.isdir(path):
        raise fail("it is a directory, not a file")
    if not os.path.exists(path):
        raise fail("it is a broken symbolic link", MissingFileError)
    if os.path.getsize(path) == 0:
        raise fail("it is empty (0 bytes)")
    try:
        data = np.load(path, allow_pickle=False)
    except PermissionError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever numpy or zipfile makes of a damaged file
        raise fail(
            f"it is not a complete .npz archive: it is truncated, damaged or of another kind "
            f"({type(error).__name__}: {error})"
        ) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise fail("it holds one .npy array, not an .npz archive of named arrays")
    try:
        with data:
            entries = {name: data[name] for name in data.files}
    except Exception as error:  # noqa: BLE001 - a bad CRC, a bad entry header, a short entry, ...
        raise fail(f"it is damaged: an entry cannot be read ({type(error).__name__}: {error})") from None
    listed = _directory_size(path)
    if listed is not None and listed != len(entries):
        # a damaged length field in the archive's directory can hide entries from zipfile
        raise fail(f"it is damaged: its directory says {listed} entries, {len(entries)} can be read")
    stored = entries.pop(CHECKSUM_KEY, None)
    if stored is None:
        return entries, False
    if stored.shape != () or stored.dtype.kind != "U" or str(stored) != checksum(entries):
        raise fail("it is damaged: its contents do not match the SHA-256 checksum stored when it was written")
    return entries, True


def read_header(entries, key, path, expected, remedy):
    """The JSON object stored as the string entry `key` of a checked `.npz`, or a `CorruptFileError`."""
    try:
        header = json.loads(str(entries[key]))
    except (ValueError, TypeError) as error:
        raise unreadable(path, expected, f"its {key!r} entry is not valid JSON ({error})", remedy) from None
    if not isinstance(header, dict):
        raise unreadable(path, expected, f"its {key!r} entry is not a JSON object", remedy)
    return header


def other_kind(entries, own_key):
    """How to read `entries` if they are a kind of pgig_tf file other than the one whose header is `own_key`, else None."""
    return next((how for key, how in FILE_KINDS.items() if key != own_key and key in entries), None)


def _directory_size(path):
    """The number of entries that a zip archive's end record announces, or None if it cannot be told (ZIP64)."""
    signature = b"PK\x05\x06"
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - 22 - 65535))  # the end record (22 bytes) may be followed by a comment
        tail = file.read()
    position = tail.rfind(signature)
    if position < 0 or len(tail) < position + 22:
        return None
    count = int.from_bytes(tail[position + 10 : position + 12], "little")
    return None if count == 0xFFFF else count
