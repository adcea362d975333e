"""The main job end to end on the embedded default (tiny settings): files, determinism, shards + merge."""

import json

import numpy as np
import pytest

from pgig_tf.cli import degradation_benchmark as cli

METHODS = "gradient,pgig,expected_gradients,smoothgrad_squared,random"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def run(out, cache, *extra):
    cli.main(
        [
            "--out",
            str(out),
            "--cache-dir",
            cache,
            "--num-images",
            "12",
            "--images-per-batch",
            "4",
            "--methods",
            METHODS,
            "--quiet",
            *extra,
        ]
    )
    return json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None


def test_writes_results_curves_and_heatmaps(tmp_path, cache):
    results = run(tmp_path, cache)
    assert set(results["methods"]) == set(METHODS.split(","))
    assert results["model"]["test_accuracy"] > 0.9  # the cached CNN really learned the digits
    for r in results["methods"].values():
        assert len(r["curve"]) == 65 and len(r["stderr"]) == 65 and r["num_images"] == 12
        assert r["aupc"] == pytest.approx(sum((a + b) / 2 for a, b in zip(r["curve"][1:], r["curve"][:-1])))
        assert r["seconds"] > 0
    for picture in ("curves.png", "heatmaps.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    assert results["versions"]["tensorflow"] and results["settings"]["seed"] == 0


def test_same_seed_same_numbers_other_seed_other_noise(tmp_path, cache):
    first = run(tmp_path / "a", cache)
    second = run(tmp_path / "b", cache)
    for name in first["methods"]:
        assert first["methods"][name]["curve"] == second["methods"][name]["curve"]
    third = run(tmp_path / "c", cache, "--seed", "0", "--methods", "random")
    fourth = run(tmp_path / "d", cache, "--seed", "0", "--methods", "random", "--images-per-batch", "3")
    assert third["methods"]["random"]["curve"] != fourth["methods"]["random"]["curve"]  # settings change the draws


def test_shards_then_merge(tmp_path, cache):
    whole = run(tmp_path / "whole", cache)
    out = tmp_path / "sharded"
    for index in range(2):
        assert run(out, cache, "--num-shards", "2", "--shard-index", str(index)) is None
    cli.main(["--out", str(out), "--merge", "--num-shards", "2"])
    merged = json.loads((out / "results.json").read_text())
    for name in ("gradient", "pgig"):  # deterministic methods: the same images give the same curves
        np.testing.assert_allclose(merged["methods"][name]["curve"], whole["methods"][name]["curve"], rtol=1e-5)
    assert merged["methods"]["random"]["num_images"] == 12


def test_a_finished_run_restarted_recomputes_nothing(tmp_path, cache):
    first = run(tmp_path, cache)
    again = run(tmp_path, cache)
    for name in first["methods"]:
        assert again["methods"][name]["curve"] == first["methods"][name]["curve"]
        assert again["methods"][name]["seconds"] == first["methods"][name]["seconds"]  # no new time was spent


def test_tfds_dataset_with_a_model_file(tmp_path):
    """Any TFDS image dataset with --model PATH.keras, on TFDS' mock data (offline)."""
    import keras
    import tensorflow_datasets as tfds

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "mnist.keras")
    with tfds.testing.mock_data(num_examples=10):
        cli.main(
            [
                "--out",
                str(tmp_path / "out"),
                "--model",
                str(tmp_path / "mnist.keras"),
                "--dataset",
                "mnist",
                "--num-images",
                "6",
                "--images-per-batch",
                "4",
                "--num-background",
                "5",
                "--patch-size",
                "4",
                "--num-steps",
                "20",
                "--methods",
                "gradient,pattern_attribution,expected_gradients",
                "--quiet",
            ]
        )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["model"]["dataset"] == "mnist:test"
    assert all(r["num_images"] == 6 and len(r["curve"]) == 21 for r in results["methods"].values())


def test_vgg16_on_mock_imagenet(tmp_path):
    """The paper's setting (VGG16 at 225, caffe preprocessing, 9x9 patches), with weights=None and mock ImageNet."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        cli.main(
            [
                "--out",
                str(tmp_path),
                "--model",
                "vgg16",
                "--weights",
                "none",
                "--dataset",
                "imagenet2012",
                "--manual-dir",
                str(tmp_path / "manual"),
                "--num-images",
                "2",
                "--images-per-batch",
                "2",
                "--num-background",
                "2",
                "--num-steps",
                "3",
                "--methods",
                "gradient,pattern_attribution",
                "--quiet",
            ]
        )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["preprocessing"] == "caffe225" and results["settings"]["patch_size"] == 9
    assert set(results["methods"]) == {"gradient", "pattern_attribution"}
    assert all(r["num_images"] == 2 and len(r["curve"]) == 4 for r in results["methods"].values())


def test_fit_patterns_script_on_tfds_and_digits(tmp_path, cache):
    import keras
    import tensorflow_datasets as tfds

    from pgig_tf import Patterns, fit_patterns
    from pgig_tf.cli import fit_patterns as script
    from pgig_tf.datasets.digits import trained_digits_cnn

    script.main(["--out", str(tmp_path / "digits.npz"), "--cache-dir", cache, "--num-images", "40"])
    model, _, (x_train, _, _, _) = trained_digits_cnn(cache)
    direct = fit_patterns(model, x_train[:40], batch_size=32, verbose=False)  # the script's batches
    loaded = Patterns.load(tmp_path / "digits.npz")
    assert set(loaded) == set(direct) and loaded.num_samples == 40
    for name in direct:
        np.testing.assert_allclose(loaded[name], direct[name], rtol=1e-5, atol=1e-8)
    small = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    small.save(tmp_path / "m.keras")
    with tfds.testing.mock_data(num_examples=12):
        script.main(
            [
                "--model",
                str(tmp_path / "m.keras"),
                "--dataset",
                "mnist",
                "--batch-size",
                "5",
                "--out",
                str(tmp_path / "mnist.npz"),
            ]
        )
    assert Patterns.load(tmp_path / "mnist.npz").num_samples == 12
    assert not (tmp_path / "mnist.npz.checkpoint.npz").exists()
