"""The commands' console: TensorFlow's start-up and internal notices kept out of the output, before TensorFlow loads."""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Lines TensorFlow writes to stderr that a user of these commands cannot act on. The C++
# notices at import come from code that runs before TF_CPP_MIN_LOG_LEVEL is read, so that
# variable does not hold them back (seen with TensorFlow 2.21); they are filtered at the file
# descriptor instead, and every other line is passed on unchanged.
NOTICES = (
    # absl's note before the first C++ log line
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    # oneDNN on (the default; TF_ENABLE_ONEDNN_OPTS=0 would change the numbers)
    re.compile(r"^I\d{4} .*port\.cc:\d+\] oneDNN custom operations are on\."),
    # CPU instructions TensorFlow was not compiled for (two lines)
    re.compile(r"^I\d{4} .*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"),
    # tf.data under op determinism rewrites a parallel map into a sequential one and keeps an
    # attribute the sequential op lacks; TensorFlow ignores it (Keras' fit/predict on arrays
    # whose length is not a multiple of the batch size)
    re.compile(r"^E\d{4} .*node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool "),
)


# Python log messages from libraries the commands use that a user cannot act on: tensorflow_datasets
# reads its own deprecated TensorInfo.dtype when images are decoded after take/shard (SkipDecoding).
PYTHON_NOTICES = ("`TensorInfo.dtype` is deprecated",)


class _DropNotices(logging.Filter):
    """Drops log records whose message contains one of `PYTHON_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in PYTHON_NOTICES)


def prepare() -> None:
    """Sets what must be set before TensorFlow is imported; call it first in a command's main().

    TF_CPP_MIN_LOG_LEVEL=2 holds back TensorFlow's C++ INFO and WARNING lines (errors still
    show); the Python-side 'tensorflow' logger shows errors only (its warnings, such as
    tf.function retracing counted across the many analyzers a command builds, are not
    something a user of the command can change), and `PYTHON_NOTICES` are dropped from the
    'absl' logger. Values the user set are kept.
    TF_ENABLE_ONEDNN_OPTS is left alone: it changes the numerical results.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _DropNotices) for f in absl.filters):
        absl.addFilter(_DropNotices())


def is_notice(line: str) -> bool:
    """True if `line` (without its newline) is one of the `NOTICES`."""
    return any(pattern.search(line) for pattern in NOTICES)


@contextlib.contextmanager
def without_notices():
    """Runs the block with file descriptor 2 captured; afterwards writes back every line that is not a notice.

    Everything written to stderr in the block (by C++ or Python) reaches stderr when the block
    ends, in order, including when it raises; only lines matching `NOTICES` are dropped.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not is_notice(line.rstrip("\r\n"))
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Imports TensorFlow and Keras (after `prepare()`) without their start-up notices; a no-op once imported."""
    prepare()
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    with without_notices():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def plain_tfds_progress(stream=None) -> bool:
    """Turns tensorflow_datasets' progress bars (redrawn with carriage returns) off unless `stream` is a terminal.

    `stream` defaults to sys.stderr, where the bars are drawn. Returns True if they were turned off.
    """
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty and isatty():
        return False
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return True
