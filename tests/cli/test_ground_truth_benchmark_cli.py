"""The ground-truth benchmark end to end in quick mode: accuracy, the controls' scores, results.json and figures."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pgig_tf.cli import ground_truth_benchmark as cli

NUM_IMAGES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cache = str(tmp_path_factory.mktemp("cache"))
    cli.main(
        [
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            cache,
            "--num-images",
            str(NUM_IMAGES),
            "--resamples",
            "200",
            "--quiet",
        ]
    )
    return out, json.loads((out / "results.json").read_text())


def test_the_network_learned_and_every_method_is_scored(run):
    out, results = run
    assert results["test_accuracy"] >= 0.95
    assert list(results["methods"]) == list(cli.METHODS) and len(cli.METHODS) == 13
    assert results["num_images"] == NUM_IMAGES
    for name, r in results["methods"].items():
        for metric in ("mass_accuracy", "rank_accuracy", "distractor_mass"):
            low, high = r[f"{metric}_ci"]
            assert 0.0 <= low <= r[metric] <= high <= 1.0, (name, metric)
            assert r[f"{metric}_rank"] >= 1
    for picture in ("examples.png", "scores.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"


def test_controls_score_what_they_must(run):
    _, results = run
    from pgig_tf.datasets.ground_truth import load_ground_truth_images

    _, test = load_ground_truth_images(0, num_train=1, num_test=cli.QUICK["num_test"])
    signal, distractor = test.signal_masks[:NUM_IMAGES], test.distractor_masks[:NUM_IMAGES]
    area = signal.mean()
    assert results["mask_area_fraction"] == pytest.approx(area)
    truth = results["methods"]["ground_truth"]
    assert truth["mass_accuracy"] == 1.0 and truth["rank_accuracy"] == 1.0
    assert truth["mass_accuracy_ci"] == [1.0, 1.0] and truth["rank_accuracy_ci"] == [1.0, 1.0]
    # the mask as map puts on the distractor the share of signal pixels that the decoys cover
    shared = (signal & distractor).sum(axis=(1, 2)) / signal.sum(axis=(1, 2))
    assert truth["distractor_mass"] == pytest.approx(shared.mean())
    random = results["methods"]["random"]
    # uniform noise: per-image mass share has sd about 0.005, so the mean of 8 is within 0.01 of the area
    assert abs(random["mass_accuracy"] - area) < 0.01
    assert abs(random["distractor_mass"] - distractor.mean()) < 0.01
    assert results["ranks"]["mass_accuracy"]["ground_truth"] == 1


def test_default_methods_are_the_degradation_benchmarks_plus_the_control():
    from pgig_tf.evaluation.benchmark import DEFAULT_METHODS

    assert cli.METHODS == DEFAULT_METHODS + ("ground_truth",)


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\nfrom pgig_tf.cli import ground_truth_benchmark as c\n"
        "try:\n    c.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ground-truth" in output.lower() or "signal" in output
    assert output.strip().splitlines()[-1] == "False False"


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        cli.parse_args(["--num-images", "1"])
    with pytest.raises(SystemExit):
        cli.main(
            [
                "--methods",
                "no_such_method",
                "--num-images",
                "2",
                "--num-train",
                "8",
                "--num-test",
                "4",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.fixture
def stand_in_cnn(monkeypatch):
    """The CNN's training stood in for by a tiny untrained CNN on small splits: {"model", "train", "test"}."""
    import keras

    from pgig_tf.datasets import ground_truth

    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(3, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    model.set_weights([np.random.default_rng(5).normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    used = {"model": model}

    def trained(cache_dir, seed=0, num_train=6000, num_test=1000, epochs=8, verbose=True):
        used["train"], used["test"] = ground_truth.load_ground_truth_images(seed, num_train, num_test)
        return model, 0.25, (used["train"], used["test"])

    monkeypatch.setattr(ground_truth, "trained_ground_truth_cnn", trained)
    return used


def tiny_arguments(out, *extra):
    """The command on 20 training and 6 test images (the stand-in CNN is not trained), 50 resamples."""
    sizes = ["--num-train", "20", "--num-test", "6", "--epochs", "1", "--resamples", "50"]
    return ["--out", str(out), *sizes, "--quiet", *extra]


def png_size(path):
    """(width, height) in pixels from a PNG's IHDR chunk."""
    raw = open(path, "rb").read(24)
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_num_fit_fits_the_patterns_on_the_first_training_images(tmp_path, stand_in_cnn, monkeypatch):
    """--num-fit N: the patterns come from the first N training images (PatternAttribution's scores show it)."""
    from pgig_tf import create_analyzer
    from pgig_tf.evaluation.localization import localization_scores
    from pgig_tf.patterns import fitting

    fitted = []
    fit = fitting.fit_patterns
    monkeypatch.setattr(fitting, "fit_patterns", lambda model, data, **k: fitted.append(data) or fit(model, data, **k))
    results = cli.main(tiny_arguments(tmp_path, "--methods", "pattern_attribution,ground_truth", "--num-fit", "7"))
    train, test = stand_in_cnn["train"], stand_in_cnn["test"]
    assert results["settings"]["num_fit"] == 7
    np.testing.assert_array_equal(fitted[0], train.images[:7])
    model = stand_in_cnn["model"]
    scores = {}
    for count in (7, 20):
        patterns = fit(model, train.images[:count], verbose=False)
        maps = create_analyzer("pattern_attribution", model, patterns=patterns).analyze(test.images, test.labels)
        scores[count] = localization_scores(maps, test.signal_masks, test.distractor_masks)
    for metric in ("mass_accuracy", "rank_accuracy", "distractor_mass"):
        expected = scores[7][metric].mean()
        assert results["methods"]["pattern_attribution"][metric] == pytest.approx(expected, rel=1e-5), metric
    assert not np.allclose(scores[20]["mass_accuracy"], scores[7]["mass_accuracy"], rtol=1e-3)


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_num_examples_sets_the_rows_of_the_examples_figure(tmp_path, stand_in_cnn):
    """--num-examples N: examples.png shows N images (rows of 1.4 inches at 120 dpi), a column per method and the input."""
    methods = ["--methods", "gradient,ground_truth"]
    cli.main(tiny_arguments(tmp_path / "three", *methods, "--num-examples", "3"))
    cli.main(tiny_arguments(tmp_path / "default", *methods))
    # 3 columns (input, gradient, ground_truth) of 1.3 inches; rows of 1.4 inches; 120 dpi
    assert png_size(tmp_path / "three" / "examples.png") == (round(3 * 1.3 * 120), round(3 * 1.4 * 120))
    assert png_size(tmp_path / "default" / "examples.png") == (round(3 * 1.3 * 120), round(4 * 1.4 * 120))
