"""Shared fixtures: small seeded Keras models and data for the tests."""

import os
import subprocess
import sys
import tempfile

# The independent numpy reference (tests/reference/) is imported by tests in every folder.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
DISTRIBUTE_CHECKS = [sys.executable, os.path.join(TESTS, "model", "distribute_checks.py"), "--cli"]


class BackgroundProcess:
    """A command started now and read later; its output goes to temporary files, so no pipe can fill up and block it."""

    def __init__(self, args, env=None, nice=0):
        self.args = args
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(args, stdout=self._out, stderr=self._err, env=env, text=True)
        if nice and hasattr(os, "setpriority"):  # POSIX; a preexec_fn is unsafe once TF runs threads
            try:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
            except OSError:  # only a scheduling hint: the command then runs at this process's priority
                pass

    def result(self, timeout):
        """(exit code, stdout, stderr), waiting at most `timeout` seconds for the command to finish."""
        code = self.process.wait(timeout)
        self._out.seek(0)
        self._err.seek(0)
        return code, self._out.read(), self._err.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_background = {}


def distribute_checks():
    """tests/model/distribute_checks.py (2 logical CPU devices need a fresh process) as a BackgroundProcess.

    Started once per session: right after collection when a test of tests/model/test_distribute.py
    was selected (so that its minute of tracing runs beside the other tests, at a lower priority),
    else by the first caller.
    """
    if "distribute" not in _background:
        import pgig_tf

        # the checks import the pgig_tf these tests import, whatever else is installed
        source = os.path.dirname(os.path.dirname(os.path.abspath(pgig_tf.__file__)))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        _background["distribute"] = BackgroundProcess(DISTRIBUTE_CHECKS, env=env, nice=5)
    return _background["distribute"]


def pytest_collection_finish(session):
    if any(
        item.path.name == "test_distribute.py" and "two_replicas" in getattr(item, "fixturenames", ())
        for item in session.items
    ):
        distribute_checks()


def pytest_sessionfinish(session, exitstatus):
    for process in _background.values():  # a run stopped early (-x, Ctrl-C) leaves none behind
        process.stop()


def set_random_weights(model, seed, scale=0.5):
    """Gives every weight (biases included) seeded non-zero random values."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.fixture(autouse=True)
def restore_op_determinism():
    """Leaves TF's process-wide op-determinism switch as each test found it.

    The degradation benchmark's CLI, run in-process by its tests, switches it on; TF has no public
    off switch, hence the internal module.
    """
    from tensorflow.python.framework import config

    enabled = config.is_op_determinism_enabled()
    yield
    if enabled:
        config.enable_op_determinism()
    else:
        config.disable_op_determinism()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def dense_model():
    """Dense(5, relu) -> Dense(4, relu) -> Dense(3) on 6 features, random non-zero biases."""
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="d1"),
            keras.layers.Dense(4, activation="relu", name="d2"),
            keras.layers.Dense(3, name="d3"),
        ],
        name="dense_model",
    )
    return set_random_weights(model, 0)


@pytest.fixture
def conv_model():
    """Conv 'same' + ReLU layer, strided 'valid' conv, max-pool, Flatten, Dense: a small image model."""
    inputs = keras.Input((9, 9, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", name="c1")(inputs)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(4, 3, strides=2, padding="valid", activation="relu", name="c2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    return set_random_weights(keras.Model(inputs, outputs, name="conv_model"), 1)


@pytest.fixture
def fake_tfds(monkeypatch):
    """serve({split: (x, y)}) makes `pgig_tf.datasets.imagenet.tfds_image_dataset` serve those arrays (already
    preprocessed) instead of a TFDS dataset, keeping its num_images and shard; returns the list of the calls'
    arguments (name, split, data_dir, manual_dir, num_images, shard)."""
    import tensorflow as tf

    from pgig_tf.data import shard_bounds
    from pgig_tf.datasets import imagenet

    calls = []

    def serve(splits):
        def dataset(name, split, data_dir=None, manual_dir=None, num_images=None, preprocess=None, shard=None):
            calls.append(
                dict(
                    name=name,
                    split=split,
                    data_dir=data_dir,
                    manual_dir=manual_dir,
                    num_images=num_images,
                    shard=shard,
                )
            )
            x, y = splits[split]
            count = min(num_images or len(x), len(x))
            start, stop = shard_bounds(count, *shard) if shard is not None else (0, count)
            return tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop]))

        monkeypatch.setattr(imagenet, "tfds_image_dataset", dataset)
        return calls

    return serve


def damaged_copies(path, directory):
    """Damaged copies of the file at `path`, written into `directory`: a list of (what was done, path).

    The file emptied; cut short at 9 offsets (1 byte, 4, 30, 100, a quarter, half, three quarters,
    inside the archive's 22-byte end record, and 1 byte short); one byte inverted at a quarter, the
    middle and three quarters of the file; a directory and a missing file in its place.
    """
    raw = open(path, "rb").read()
    size = len(raw)
    cases = []

    def add(what, data=None, kind="file"):
        target = os.path.join(directory, f"damaged_{len(cases)}.npz")
        if kind == "file":
            with open(target, "wb") as file:
                file.write(data)
        elif kind == "directory":
            os.mkdir(target)
        cases.append((what, target))

    add("emptied (0 bytes)", b"")
    for cut in sorted({1, 4, 30, 100, size // 4, size // 2, 3 * size // 4, size - 10, size - 1}):
        add(f"cut to {cut} of {size} bytes", raw[:cut])
    for at in (size // 4, size // 2, 3 * size // 4):
        add(f"byte {at} of {size} inverted", flip(raw, at))
    add("a directory in its place", kind="directory")
    add("missing", kind="missing")
    return cases


def flip(raw, at):
    """`raw` (bytes) with the byte at offset `at` inverted."""
    damaged = bytearray(raw)
    damaged[at] ^= 0xFF
    return bytes(damaged)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Marks `slow` and `tiered` the tests listed in tests/slow_tier.txt (written by `python -m devtools.slow_tier`).

    `tiered` lets a run take them back (`-m "not slow or tiered"`: all but the VGG-sized tests and
    whole benchmark runs), as the mutation pass does.
    """
    with open(os.path.join(TESTS, "slow_tier.txt"), encoding="utf-8") as file:
        tier = {line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")}
    for item in items:
        if item.nodeid in tier:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.tiered)
