"""Fault injection: the benchmark killed (SIGKILL) at several points and restarted gives one run's results and files."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUMBERS = ("curve", "lerf_curve", "aupc", "aupc_ci", "lerf_auc", "lerf_auc_ci", "srg", "srg_ci", "autvc")


def command(model_path, out):
    return [
        sys.executable,
        os.path.join(ROOT, "scripts", "degradation_benchmark.py"),
        "--out",
        str(out),
        "--model",
        str(model_path),
        "--num-images",
        "40",
        "--images-per-batch",
        "4",
        "--checkpoint-every",
        "1",
        "--methods",
        "gradient,smoothgrad_squared,random",
        "--patch-size",
        "8",
        "--num-steps",
        "8",
        "--quiet",
    ]


def batches_done(out):
    try:
        return json.loads((out / "state-shard0of1.json").read_text())["batches_done"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def kill_after(model_path, out, batches, env):
    """Starts a run and SIGKILLs it once its checkpoint counts `batches` batches; returns the count at the kill."""
    process = subprocess.Popen(command(model_path, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while batches_done(out) < batches and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return batches_done(out)


@pytest.mark.slow  # four processes that each start TensorFlow
def test_killed_runs_resume_to_the_results_and_files_of_one_run(tmp_path):
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
    env = dict(os.environ, PYTHONPATH=ROOT)
    whole = tmp_path / "whole"
    subprocess.run(command(tmp_path / "tiny.keras", whole), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    counts = [kill_after(tmp_path / "tiny.keras", killed, k, env) for k in (1, 4, 7)]
    assert counts[0] >= 1 and counts[-1] < 10  # killed three times, before the end (10 batches)
    assert not list(killed.glob("*.tmp"))  # atomic writes leave no half-written file behind
    subprocess.run(command(tmp_path / "tiny.keras", killed), env=env, check=True, capture_output=True)
    expected = json.loads((whole / "results.json").read_text())
    got = json.loads((killed / "results.json").read_text())
    for name, result in expected["methods"].items():
        for key in NUMBERS:
            assert got["methods"][name][key] == result[key], (name, key)  # bit for bit: the same sums in order
    assert got["pairwise"] == expected["pairwise"]
    for name in ("curves.png", "heatmaps.png", "examples.npz", "model_info.json"):
        assert (killed / name).stat().st_size > 0, name
    with np.load(whole / "examples.npz") as a, np.load(killed / "examples.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
