"""Writing files atomically: a temporary file beside the target, flushed to disk, then renamed over it."""

import contextlib
import os
import tempfile


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
