"""The commands' console: TensorFlow's notices are dropped, every other stderr line is kept, and a log is clean."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from pgig_tf.cli import console

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the lines TensorFlow 2.21 wrote into the main job's log before the commands filtered them
SEEN = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796163208.167297    7978 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796163208.233343    7978 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796163526.795214    7978 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset; signature=input_dataset:variant, other_arguments: -> "
    "handle:variant> This may be expected if your graph generating binary is newer  than this binary. Unknown "
    "attributes will be ignored. NodeDef: {{node ParallelMapDatasetV2/_14}}",
]
KEPT = [
    "E0000 00:00:1796163526.795214    7978 some_op.cc:12] a real error",
    "Traceback (most recent call last):",
    "ValueError: x must have shape (batch, 6), got (2, 5)",
    "WARNING: something else",
]


def test_notices_are_exactly_the_known_lines():
    assert [console.is_notice(line) for line in SEEN] == [True] * len(SEEN)
    assert [console.is_notice(line) for line in KEPT] == [False] * len(KEPT)


def test_without_notices_drops_notices_and_keeps_the_rest_in_order(capfd):
    with console.without_notices():
        for line in [KEPT[0], SEEN[0], SEEN[1], KEPT[1], SEEN[4], KEPT[2]]:
            os.write(2, (line + "\n").encode())  # as C++ writes: straight to the file descriptor
        print("to stdout")
    out, err = capfd.readouterr()
    assert err == "".join(line + "\n" for line in KEPT[:3])
    assert out == "to stdout\n"


def test_without_notices_passes_stderr_on_when_the_block_raises(capfd):
    try:
        with console.without_notices():
            os.write(2, (SEEN[2] + "\n" + KEPT[3] + "\n").encode())
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert capfd.readouterr().err == KEPT[3] + "\n"
    os.write(2, b"after\n")  # file descriptor 2 is back
    assert capfd.readouterr().err == "after\n"


def test_prepare_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    console.prepare()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    console.prepare()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.mark.slow  # whole runs of the command (or a second process); the default suite has quicker kin
def test_main_job_log_is_clean(tmp_path):
    """The benchmark as a user runs it, stdout and stderr redirected to a file: no TensorFlow noise, plain progress."""
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.set_weights([np.random.default_rng(0).normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "tiny.keras")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_")}
    env["PYTHONPATH"] = ROOT
    log = tmp_path / "log.txt"
    command = [
        sys.executable,
        os.path.join(ROOT, "scripts", "degradation_benchmark.py"),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "tiny.keras"),
        "--num-images",
        "10",
        "--images-per-batch",
        "4",
        "--methods",
        "gradient,pgig,smoothgrad_squared",
        "--patch-size",
        "8",
        "--num-steps",
        "4",
    ]
    with open(log, "wb") as handle:
        done = subprocess.run(command, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    for unwanted in (
        "\r",
        "\x1b",
        "I0000",
        "E0000",
        "W0000",
        "oneDNN",
        "absl::InitializeLog",
        "cpu_feature_guard",
        "use_unbounded_threadpool",
        "retracing",
        "WARNING",
        "Warning",
    ):
        assert unwanted not in text, (unwanted, text)
    # the model's held-out accuracy is computed on 359 digits (a partial last batch) under op determinism
    assert json.loads((tmp_path / "out" / "results.json").read_text())["model"]["test_accuracy"] is not None
    progress = [line for line in text.splitlines() if line.startswith("batch ")]
    assert [line.split(",")[0] for line in progress][-1] == "batch 3/3"
    assert all(re.fullmatch(r"batch [123]/3, \d+ s(, about \d+ s left)?", line) for line in progress), progress


def test_prepare_drops_only_the_known_python_notices(caplog):
    import logging

    console.prepare()
    console.prepare()  # idempotent: one filter
    absl = logging.getLogger("absl")
    assert sum(type(f).__name__ == "_DropNotices" for f in absl.filters) == 1
    with caplog.at_level(logging.WARNING):
        absl.warning("`TensorInfo.dtype` is deprecated. Please change your code to use NumPy with the field ...")
        absl.warning("Downloading and preparing dataset mnist")
    assert [record.getMessage() for record in caplog.records] == ["Downloading and preparing dataset mnist"]
    assert logging.getLogger("tensorflow").level == logging.ERROR


def test_tfds_progress_bars_are_off_only_off_a_terminal(monkeypatch):
    import io

    import tensorflow_datasets as tfds

    calls = []
    monkeypatch.setattr(tfds, "disable_progress_bar", lambda: calls.append("off"))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert console.plain_tfds_progress(Terminal()) is False and calls == []
    assert console.plain_tfds_progress(io.StringIO()) is True and calls == ["off"]
