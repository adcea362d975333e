"""The ground-truth benchmark end to end in quick mode: accuracy, the controls' scores, results.json and figures."""

import json
import subprocess
import sys

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
