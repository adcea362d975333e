"""Measurements on 2 logical CPU devices for tests/test_distribute.py, run in a fresh process (prints one JSON line).

Logical devices must be configured before TensorFlow initialises, which the pytest process
has already done; `python tests/distribute_checks.py` measures everything here in one process.
"""

import json
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: conftest

import pgig_tf  # noqa: E402

STRATEGY = pgig_tf.make_strategy(2)  # first: before any TensorFlow operation

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from conftest import set_random_weights  # noqa: E402
from pgig_tf import create_analyzer, fit_patterns  # noqa: E402
from pgig_tf.model.distribute import mirror_model  # noqa: E402

tf.get_logger().setLevel("ERROR")  # many short-lived analyzers: TF's retracing warning is noise here


def conv_model():
    """Conv + BatchNorm + ReLU, a strided conv with fused ReLU, max-pool and a Dense head."""
    inputs = keras.Input((9, 9, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="c2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    model = set_random_weights(keras.Model(inputs, outputs, name="conv_model"), 1)
    bn = model.get_layer("bn")
    bn.moving_variance.assign(np.abs(bn.moving_variance.numpy()) + 0.5)  # a variance must be positive
    return model


def relative(a, b):
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def engine_checks(model, patterns, x):
    """Max relative difference of each method's maps with the strategy from one device's, for 5 and 1 samples."""
    settings = {
        "integrated_gradients": {"steps": 6},
        "pgig": {"steps": 6, "patterns": patterns},
        "smoothgrad": {"samples": 5, "seed": 3},
        "vargrad": {"samples": 4, "seed": 1},
        "expected_gradients": {"samples": 4, "seed": 2, "baselines": x[::-1]},
    }
    targets = np.array([0, 2, 1, 1, 0])
    out = {}
    for name, kwargs in settings.items():
        one = create_analyzer(name, model, batch_size=4, **kwargs)
        two = create_analyzer(name, model, batch_size=4, strategy=STRATEGY, **kwargs)
        for n in (5, 1):
            out[f"{name} n={n}"] = relative(two.analyze(x[:n], targets[:n]), one.analyze(x[:n], targets[:n]))
        two.analyze(x[:3], targets[:3])
        out[f"{name} traces"] = two.tracing_count  # after batches of 5, 1 and 3 samples
    # the noise differs between seeds far more than the shards' rounding (the comparison can fail)
    other = create_analyzer("smoothgrad", model, samples=5, seed=4, batch_size=4).analyze(x, targets)
    same = create_analyzer("smoothgrad", model, samples=5, seed=3, batch_size=4).analyze(x, targets)
    out["smoothgrad other seed"] = relative(other, same)
    return out


def speed_option_checks(model, patterns, x):
    """bfloat16 and jit_compile with the strategy against the same option on one device."""
    out = {}
    one = create_analyzer("pgig", model, steps=4, patterns=patterns, compute_dtype="bfloat16").analyze(x, 1)
    two = create_analyzer(
        "pgig", model, steps=4, patterns=patterns, compute_dtype="bfloat16", strategy=STRATEGY
    ).analyze(x, 1)
    out["bfloat16 pgig"] = relative(two, one)
    out["model dtype after bfloat16"] = model.layers[1].dtype_policy.name
    try:
        create_analyzer("integrated_gradients", model, steps=4, jit_compile=True, strategy=STRATEGY)
        out["jit outside scope error"] = None
    except ValueError as error:
        out["jit outside scope error"] = str(error)
    mirrored = mirror_model(model, STRATEGY)
    out["mirrored names"] = [w.path for w in mirrored.weights] == [w.path for w in model.weights]
    one = create_analyzer("integrated_gradients", model, steps=4, jit_compile=True).analyze(x, 1)
    two = create_analyzer("integrated_gradients", mirrored, steps=4, jit_compile=True, strategy=STRATEGY)
    out["jit mirrored integrated_gradients"] = relative(two.analyze(x, 1), one)
    # XLA's own noise, the same on both; 1 sample: the second replica has nothing to compile
    one = create_analyzer("smoothgrad", model, samples=3, seed=1, jit_compile=True).analyze(x[:1], 1)
    two = create_analyzer("smoothgrad", mirrored, samples=3, seed=1, jit_compile=True, strategy=STRATEGY)
    out["jit mirrored smoothgrad n=1"] = relative(two.analyze(x[:1], 1), one)
    one = create_analyzer("pgig", model, steps=4, patterns=patterns).analyze(x, 1)
    out["mirrored pgig"] = relative(
        create_analyzer("pgig", mirrored, steps=4, patterns=patterns, strategy=STRATEGY).analyze(x, 1), one
    )
    return out


def fit_checks(model, data):
    """Patterns with the strategy against one device's: uneven last batch (7 = 4 + 3) and a 1-sample batch."""
    out = {}
    for label, part, batch_size in (("23 samples, batches of 8", data[:23], 8), ("1 sample", data[:1], 8)):
        one = fit_patterns(model, part, batch_size=batch_size, verbose=False)
        two = fit_patterns(model, part, batch_size=batch_size, verbose=False, strategy=STRATEGY)
        out[f"fit {label}"] = max(relative(two[k], one[k]) for k in one)
        out[f"fit {label} num_samples"] = [one.num_samples, two.num_samples]
    analyzer = create_analyzer("pgig", model, steps=3, strategy=STRATEGY).fit(data[:23], batch_size=8, verbose=False)
    one = fit_patterns(model, data[:23], batch_size=8, verbose=False)
    out["analyzer.fit"] = max(relative(analyzer.patterns[k], one[k]) for k in one)
    # a checkpoint written with the strategy (sums read across replicas), resumed with it (spread back)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sums.npz")
        fit_patterns(
            model, data[:16], batch_size=8, verbose=False, strategy=STRATEGY, checkpoint=path, checkpoint_every=1
        )
        resumed = fit_patterns(model, data[:23], batch_size=8, verbose=False, strategy=STRATEGY, checkpoint=path)
    out["fit resumed"] = max(relative(resumed[k], one[k]) for k in one)
    return out


def cli_checks():
    """The degradation benchmark on a tiny model file: --replicas 2 against --replicas 1."""
    from pgig_tf.cli import degradation_benchmark as cli

    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    set_random_weights(model, 2, scale=0.3)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, "tiny.keras"))
        for replicas in (1, 2):
            out = os.path.join(folder, f"out{replicas}")
            cli.main(
                [
                    "--out",
                    out,
                    "--model",
                    os.path.join(folder, "tiny.keras"),
                    "--num-images",
                    "5",
                    "--images-per-batch",
                    "5",
                    "--methods",
                    "gradient,pgig,smoothgrad_squared,expected_gradients",
                    "--num-background",
                    "20",
                    "--patch-size",
                    "4",
                    "--num-steps",
                    "16",
                    "--replicas",
                    str(replicas),
                    "--quiet",
                ]
            )
            with open(os.path.join(out, "results.json")) as handle:
                results[replicas] = json.load(handle)
    methods = results[1]["methods"]
    return {
        "cli curves": max(relative(results[2]["methods"][m]["curve"], methods[m]["curve"]) for m in methods),
        "cli replicas": [results[r]["model"]["replicas"] for r in (1, 2)],
    }


def main():
    warnings.filterwarnings("ignore", category=pgig_tf.SoftmaxOutputWarning)
    rng = np.random.default_rng(0)
    model = conv_model()
    data = rng.normal(size=(40, 9, 9, 2)).astype(np.float32)
    x = rng.normal(size=(5, 9, 9, 2)).astype(np.float32)
    patterns = fit_patterns(model, data, verbose=False)
    report = {"replicas": STRATEGY.num_replicas_in_sync}
    report.update(engine_checks(model, patterns, x))
    report.update(speed_option_checks(model, patterns, x))
    report.update(fit_checks(model, data))
    if "--cli" in sys.argv:
        report.update(cli_checks())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
