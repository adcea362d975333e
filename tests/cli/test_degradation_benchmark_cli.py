"""The main job end to end on the embedded default (tiny settings): files, determinism, shards + merge."""

import json
import shutil
import warnings

import numpy as np
import pytest

from pgig_tf.cli import degradation_benchmark as cli
from pgig_tf.validation import SoftmaxOutputWarning

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
            "--pattern-images",
            "200",  # patterns of the first 200 training digits: enough for these checks, and quicker
            "--quiet",
            *extra,
        ]
    )
    return json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None


def assert_same_outcome(ours, theirs, name):
    """Method `name` scored alike in two runs whose model calls were batched otherwise.

    Rounding of differently batched float32 kernels (seen on AVX2 CPUs: ~1e-7 relative in maps
    and outputs) can swap two near-tied patches of a map, which moves one point of a 12-image
    mean curve by a few percent (SmoothGrad²: 2.8%, 0.002 absolute). The random control's
    ranking holds no rounding, so its curve agrees to rtol 1e-5; every other method's AUPC and
    SRG agree to 1e-3 relative, where other noise moves them by several percent.
    """
    ours, theirs = ours["methods"][name], theirs["methods"][name]
    if name == "random":
        np.testing.assert_allclose(ours["curve"], theirs["curve"], rtol=1e-5)
    else:
        np.testing.assert_allclose(ours["curve"], theirs["curve"], atol=0.01)
    for key in ("aupc", "srg"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-3), (name, key)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, cache):
    """(output folder, results) of one run with `run`'s settings, shared by the tests that compare against one."""
    out = tmp_path_factory.mktemp("default_run")
    return out, run(out, cache)


def test_writes_results_curves_and_heatmaps(default_run):
    out, results = default_run
    assert set(results["methods"]) == set(METHODS.split(","))
    assert results["model"]["test_accuracy"] > 0.9  # the cached CNN really learned the digits
    for r in results["methods"].values():
        assert len(r["curve"]) == 65 and len(r["stderr"]) == 65 and r["num_images"] == 12
        assert r["aupc"] == pytest.approx(sum((a + b) / 2 for a, b in zip(r["curve"][1:], r["curve"][:-1])))
        lerf = r["lerf_curve"]
        assert r["lerf_auc"] == pytest.approx(sum((a + b) / 2 for a, b in zip(lerf[1:], lerf[:-1])))
        assert r["srg"] == pytest.approx(r["lerf_auc"] - r["aupc"])
        for key in ("aupc", "lerf_auc", "srg"):
            low, high = r[f"{key}_ci"]
            assert low < r[key] < high  # the percentile interval of 12 images' mean holds the mean
        assert lerf[0] == r["curve"][0]  # both orders start from the clean image
        assert r["seconds"] > 0
    pairs = results["pairwise"]["srg"]
    assert len(pairs) == 10 and {tuple(p["methods"]) for p in pairs} >= {("gradient", "random")}
    for pair in pairs:
        a, b = (results["methods"][name] for name in pair["methods"])
        assert pair["difference"] == pytest.approx(a["srg"] - b["srg"], abs=1e-9)
        assert pair["excludes_zero"] == (pair["ci"][0] > 0 or pair["ci"][1] < 0)
    for picture in ("curves.png", "heatmaps.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    assert results["versions"]["tensorflow"] and results["settings"]["seed"] == 0
    # only settings that applied to the digits run are recorded
    assert not {"preprocessing", "weights", "split", "patterns_format"} & set(results["settings"])
    info = json.loads((out / "model_info.json").read_text())
    assert not {"preprocessing", "weights"} & set(info) and not {"preprocessing", "weights"} & set(results["model"])


@pytest.mark.slow  # whole runs of the command (or a second process); the default suite has quicker kin
def test_same_seed_same_numbers_other_seed_other_noise(tmp_path, cache, default_run):
    first = default_run[1]
    second = run(tmp_path / "b", cache)
    for name in first["methods"]:
        assert first["methods"][name]["curve"] == second["methods"][name]["curve"]
        assert first["methods"][name]["srg_ci"] == second["methods"][name]["srg_ci"]
    # draws are keyed by the image, not the batch: other batches give the same maps, another seed others
    third = run(tmp_path / "c", cache, "--methods", "random,smoothgrad_squared", "--images-per-batch", "3")
    fourth = run(tmp_path / "d", cache, "--methods", "random,smoothgrad_squared", "--seed", "1")
    for name in ("random", "smoothgrad_squared"):
        assert_same_outcome(third, first, name)
        assert not np.allclose(fourth["methods"][name]["curve"], first["methods"][name]["curve"], rtol=1e-3)
        assert fourth["methods"][name]["aupc"] != pytest.approx(first["methods"][name]["aupc"], rel=3e-3)


@pytest.mark.slow  # seconds of whole runs; the default suite keeps its quicker kin
def test_shards_then_merge(tmp_path, cache, default_run):
    whole = default_run[1]
    out = tmp_path / "sharded"
    for index in range(2):
        assert run(out, cache, "--num-shards", "2", "--shard-index", str(index)) is None
    cli.main(["--out", str(out), "--merge", "--num-shards", "2"])
    merged = json.loads((out / "results.json").read_text())
    # shards of whole batches meet one run's batches (same model calls, same rounding) and draws are
    # keyed by the image's global index: only the order of the merged sums differs
    for name in METHODS.split(","):
        ours, theirs = merged["methods"][name], whole["methods"][name]
        np.testing.assert_allclose(ours["curve"], theirs["curve"], rtol=1e-12, atol=0)
        for key in ("aupc", "srg", "lerf_auc"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=0), (name, key)
    assert merged["methods"]["random"]["num_images"] == 12


def test_a_finished_run_restarted_recomputes_nothing(tmp_path, cache, capsys, monkeypatch, default_run):
    finished, first = default_run
    shutil.copytree(finished, tmp_path / "run")  # its checkpoint included; the shared folder stays as it was
    capsys.readouterr()
    built = []
    monkeypatch.setattr(cli, "load_setting", lambda *a, **k: built.append(a))
    again = run(tmp_path / "run", cache)
    for name in first["methods"]:
        assert again["methods"][name]["curve"] == first["methods"][name]["curve"]
        assert again["methods"][name]["seconds"] == first["methods"][name]["seconds"]  # no new time was spent
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "already complete (use --fresh to recompute)" and built == []  # no model was even loaded
    assert "nothing recomputed: all 3 batches and their s/image come from an earlier run" in printed[-1]
    assert printed[-1].startswith("test accuracy 0.9")


class Interrupting:
    """An analyzer that stops the run (as a kill would) once `counter["batches"]` batches are checkpointed."""

    def __init__(self, inner, counter, stop_at):
        self.inner, self.counter, self.stop_at, self.seed = inner, counter, stop_at, None

    def analyze(self, x, neuron_selection, first_index=0):
        if self.counter["batches"] == self.stop_at:
            raise KeyboardInterrupt("killed")
        return self.inner.analyze(x, neuron_selection=neuron_selection, first_index=first_index)


@pytest.mark.slow  # whole runs of the command (or a second process); the default suite has quicker kin
def test_an_interrupted_run_resumes_and_says_so_and_fresh_starts_over(tmp_path, cache, capsys, monkeypatch):
    out = tmp_path
    counter = {"batches": 0}
    build = cli.build_analyzers

    def interrupting(*args, **kwargs):
        analyzers = build(*args, **kwargs)
        first = next(iter(analyzers))
        analyzers[first] = Interrupting(analyzers[first], counter, stop_at=2)
        return analyzers

    monkeypatch.setattr(cli, "build_analyzers", interrupting)
    from pgig_tf.evaluation import benchmark

    saved = benchmark.save_state

    def counting_save(path, state):  # with --checkpoint-every 1: called after every batch
        counter["batches"] = state["batches_done"]
        saved(path, state)

    monkeypatch.setattr(benchmark, "save_state", counting_save)
    with pytest.raises(KeyboardInterrupt):
        run(out, cache, "--checkpoint-every", "1")
    monkeypatch.setattr(cli, "build_analyzers", build)
    capsys.readouterr()
    resumed = run(out, cache, "--checkpoint-every", "1")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "resuming: 2 of 3 batches done"
    assert (
        "this run computed the last 1 of 3 batches; s/image covers all of them, the earlier run's included"
        in printed[-1]
    )
    # the examples of the first batch were written before it was checkpointed: the resumed run draws them
    assert printed[-1].endswith(f"{out / 'curves.png'}, {out / 'heatmaps.png'}")
    assert (out / "heatmaps.png").read_bytes()[:4] == b"\x89PNG"
    fresh = run(out, cache, "--fresh")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"--fresh: discarded the checkpoint {out / 'state-shard0of1.json'}"
    assert not any(line.startswith(("resuming", "already complete")) for line in printed)
    assert "this run computed all 3 batches" in printed[-1]
    assert all(fresh["methods"][m]["num_images"] == 12 for m in fresh["methods"])
    for name in METHODS.split(","):  # draws keyed by the image: resumed = computed in one go, sampling methods too
        np.testing.assert_allclose(resumed["methods"][name]["curve"], fresh["methods"][name]["curve"], rtol=1e-12)
        assert resumed["methods"][name]["srg_ci"] == pytest.approx(fresh["methods"][name]["srg_ci"], rel=1e-9)
    assert fresh["methods"]["gradient"]["seconds"] != resumed["methods"]["gradient"]["seconds"]  # really recomputed


def test_a_checkpoint_of_other_settings_stops_the_run_before_any_work(tmp_path, cache, monkeypatch):
    from pgig_tf.evaluation.benchmark import save_state

    state = {"format": 2, "fingerprint": {"seed": 1}, "identity": {}, "batches_done": 0, "num_batches": 3}
    save_state(str(tmp_path / "state-shard0of1.json"), dict(state, batch_sizes=[], batch_sha256=[], totals={}))
    monkeypatch.setattr(cli, "load_setting", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit, match=r"holds a checkpoint of a run with other settings(.|\n)*--fresh discards it"):
        run(tmp_path, cache)


def test_settings_only_for_vgg16_and_fresh_not_with_merge():
    for flag in (["--preprocessing", "crop224"], ["--weights", "none"]):
        with pytest.raises(SystemExit):
            cli.parse_args(flag)
    args = cli.parse_args(["--model", "vgg16", "--dataset", "imagenet2012"])
    assert (args.preprocessing, args.weights, args.split) == ("caffe225", "imagenet", "validation")
    with pytest.raises(SystemExit):
        cli.parse_args(["--fresh", "--merge"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--dataset", "mnist"])  # the digits CNN cannot run on another dataset


def test_heatmap_examples_are_of_different_classes_with_true_and_predicted_labels(tmp_path, cache, monkeypatch):
    from pgig_tf.datasets.digits import load_digits_images
    from pgig_tf.evaluation.benchmark import choose_examples

    drawn = []
    monkeypatch.setattr(
        "pgig_tf.viz.plots.plot_heatmap_grid",
        lambda images, maps, path, row_titles=None, **k: drawn.append((images, maps, row_titles)),
    )
    cli.main(["--out", str(tmp_path), "--cache-dir", cache, "--num-images", "32", "--methods", "gradient", "--quiet"])
    labels = load_digits_images(0)[3][:32]  # the first batch: 32 held-out digits
    chosen = choose_examples(labels, 6)
    assert len(set(labels[chosen].tolist())) == 6
    with np.load(tmp_path / "examples.npz") as examples:
        np.testing.assert_array_equal(examples["__labels__"], labels[chosen])
        predictions = examples["__predictions__"]
        assert examples["gradient"].shape == (6, 32, 32, 1)
    images, maps, titles = drawn[0]
    assert titles == [f"true {t}\npredicted {p}" for t, p in zip(labels[chosen], predictions)]
    assert np.mean(predictions == labels[chosen]) >= 5 / 6  # the CNN is right on (nearly) all of them


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
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


@pytest.mark.slow  # VGG-sized: fits VGG16's patterns (float64 sums of 2 x 138 M weights)
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
    assert (results["settings"]["preprocessing"], results["settings"]["weights"]) == ("caffe225", "none")
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


def test_a_damaged_checkpoint_stops_the_run_before_any_work(tmp_path, cache, monkeypatch):
    (tmp_path / "state-shard0of1.json").write_text('{"format": 2, "fingerprint": {"seed"')
    monkeypatch.setattr(cli, "load_setting", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit, match=r"state-shard0of1.json' cannot be read as a degradation benchmark checkpoint"):
        run(tmp_path, cache)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, cache, monkeypatch):
    from pgig_tf.files import exclusive_lock

    monkeypatch.setattr(cli, "load_setting", lambda *a, **k: pytest.fail("work started"))
    with exclusive_lock(tmp_path / ".lock-shard0of1", "a run"):  # as a run in another process holds it
        with pytest.raises(SystemExit, match=r"the output folder .* is in use by process \d+ .*choose another output"):
            run(tmp_path, cache)


def test_merge_needs_every_shard(tmp_path):
    with pytest.raises(SystemExit, match=r"missing shard checkpoints in .*: .*state-shard0of2.json, .*state-shard1of2"):
        cli.main(["--out", str(tmp_path), "--merge", "--num-shards", "2"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--replacement", "zeros"], "--replacement must be one of patch_mean, image_mean, blur, road or a number"),
        (["--replacement", "nan"], "--replacement must be a finite number, got nan"),
        (["--road-noise", "0.1"], "--road-noise applies only to --replacement road"),
        (["--replacement", "road", "--road-noise", "-1"], "--road-noise must be a finite number >= 0"),
        (["--replacement", "blur", "--blur-sigma", "0"], "--blur-sigma must be a finite number > 0"),
        (["--num-steps", "0"], "--num-steps must be a positive integer, got 0"),
        (["--num-shards", "0"], "--num-shards must be a positive integer, got 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer, got 0"),
        (["--patterns", "/nonexistent/p.npz"], "--patterns '/nonexistent/p.npz': there is no such file"),
        (["--pattern-images", "0"], "--pattern-images must be a positive integer, got 0"),
        (["--set", "smooth_taylor"], "--set takes METHOD.OPTION=VALUE, got 'smooth_taylor'"),
        (["--methods", "gradient", "--set", "pgig.steps=3"], "--set 'pgig.steps=3': 'pgig' is not among --methods"),
        (["--methods", "gradient,pgjg"], "--methods: unknown ['pgjg']; choose from gradient,"),
    ],
)
def test_bad_arguments_are_named(flags, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(flags)
    assert message in capsys.readouterr().err


def test_road_replacement_runs_both_orders(tmp_path, cache):
    results = run(tmp_path, cache, "--replacement", "road", "--methods", "gradient,random", "--num-steps", "8")
    assert results["settings"]["replacement"] == "road" and results["settings"]["road_noise"] == 0.02
    for r in results["methods"].values():
        assert len(r["curve"]) == len(r["lerf_curve"]) == 9
        assert r["srg"] == pytest.approx(r["lerf_auc"] - r["aupc"])
        assert r["srg_ci"][0] <= r["srg"] <= r["srg_ci"][1]
    gradient = results["methods"]["gradient"]
    assert gradient["srg"] > results["methods"]["random"]["srg"]  # the trained CNN's gradient beats a random order


def test_set_overrides_a_methods_setting_and_is_part_of_the_fingerprint():
    args = cli.parse_args(["--set", "smooth_taylor.noise_scale=0.1", "--set", "smooth_taylor.candidates=[0.1, 0.2]"])
    assert args.overrides == {"smooth_taylor": {"noise_scale": 0.1, "candidates": [0.1, 0.2]}}
    assert cli.run_settings(args, "smooth_taylor") == {"samples": 150, "noise_scale": 0.1, "candidates": [0.1, 0.2]}
    assert cli.fingerprint_of(args)["overrides"] == args.overrides
    assert "overrides" not in cli.fingerprint_of(cli.parse_args([]))
    assert cli.parse_args(["--set", "smooth_taylor.noise_scale=adaptive"]).overrides["smooth_taylor"] == {
        "noise_scale": "adaptive"
    }
    assert not cli.needs_patterns(cli.parse_args(["--methods", "gradient,random"]))
    assert cli.needs_patterns(
        cli.parse_args(["--methods", "gradient,smoothgrad", "--set", 'smoothgrad.rule="pattern_net"'])
    )


def tiny_softmax_model():
    """A tiny softmax image model on (8, 8, 1) inputs with seeded weights."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.set_weights([np.random.default_rng(1).normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_the_users_images_from_an_npz_file(tmp_path):
    model = tiny_softmax_model()
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 8, 8, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    np.savez(tmp_path / "images.npz", x=x, y=y)
    np.savez(tmp_path / "train.npz", x=rng.normal(size=(30, 8, 8, 1)).astype("float32"))
    common = ["--model", str(tmp_path / "m.keras"), "--dataset", str(tmp_path / "images.npz"), "--quiet"]
    common += ["--patch-size", "2", "--num-steps", "8", "--images-per-batch", "4"]
    out = tmp_path / "out"
    cli.main(
        [
            "--out",
            str(out),
            *common,
            "--methods",
            "gradient,pgig,random",
            "--background-npz",
            str(tmp_path / "train.npz"),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == 10 and results["model"]["test_accuracy"] == 1.0  # y are the model's classes
    assert results["settings"]["background_npz"] == str(tmp_path / "train.npz")
    with pytest.raises(SystemExit, match="pattern methods and expected_gradients need training images"):
        cli.main(["--out", str(tmp_path / "o2"), *common, "--methods", "pgig"])
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(SystemExit, match=r"--dataset: .*bad.npz'?: no array 'x' \(the images\)"):
        cli.main(["--out", str(tmp_path / "o3"), *common[:2], "--dataset", str(tmp_path / "bad.npz"), "--quiet"])
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 9, 9, 1), "float32"))
    with pytest.raises(SystemExit, match=r"holds images of shape \(9, 9, 1\); the model takes \(8, 8, 1\)"):
        cli.main(["--out", str(tmp_path / "o4"), *common[:2], "--dataset", str(tmp_path / "wrong.npz"), "--quiet"])


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """A tiny softmax image model (.keras) and 8 images (.npz) whose labels y differ from its predictions on half."""
    folder = tmp_path_factory.mktemp("tiny_npz")
    model = tiny_softmax_model()
    model.save(folder / "m.keras")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    predictions = model.predict(x, verbose=0).argmax(1)
    y = np.where(np.arange(8) % 2 == 0, predictions, (predictions + 1) % 4)
    np.savez(folder / "images.npz", x=x, y=y)
    np.savez(folder / "train.npz", x=rng.normal(size=(30, 8, 8, 1)).astype("float32"))
    return {"folder": folder, "model": model, "x": x, "y": y, "predictions": predictions}


def tiny_run(tiny_npz, out, *extra):
    """One run of the command on `tiny_npz` (2x2 patches, 8 steps, batches of 4); returns results.json."""
    folder = tiny_npz["folder"]
    cli.main(
        ["--out", str(out), "--model", str(folder / "m.keras"), "--dataset", str(folder / "images.npz"), "--quiet"]
        + ["--patch-size", "2", "--num-steps", "8", "--images-per-batch", "4", *extra]
    )
    return json.loads((out / "results.json").read_text())


def direct_curves(model, x, maps, targets, absolute):
    """The mean MoRF and LeRF curves of `maps` computed with the library, as the command's settings for `tiny_run`."""
    from pgig_tf.evaluation.perturbation import PerturbationCurves

    options = dict(patch_size=2, num_steps=8, absolute=absolute, seed=0, batch_size=64, images_per_call=4)
    return [
        PerturbationCurves(model, order, "own_patch_mean", **options).curves(x, maps, targets).values.mean(axis=0)
        for order in ("morf", "lerf")
    ]


@pytest.fixture(scope="module")
def gradient_runs(tiny_npz, tmp_path_factory):
    """results.json of `tiny_run` with --methods gradient: by default, with --absolute and with --true-label."""
    folder = tmp_path_factory.mktemp("gradient_runs")
    return {
        flag: tiny_run(tiny_npz, folder / (flag[2:] or "default"), "--methods", "gradient", *([flag] if flag else []))
        for flag in ("", "--absolute", "--true-label")
    }


def gradient_maps(model, x, targets):
    from pgig_tf import create_analyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftmaxOutputWarning)  # the softmax output is explained on purpose
        return create_analyzer("gradient", model).analyze(x, neuron_selection=targets)


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_absolute_ranks_patches_by_the_magnitude_of_the_map(tiny_npz, gradient_runs):
    """--absolute: the curves are those of patches ranked by |attribution| (the library's absolute=True)."""
    model, x, predictions = tiny_npz["model"], tiny_npz["x"], tiny_npz["predictions"]
    maps = gradient_maps(model, x, predictions)
    assert (maps > 0).any() and (maps < 0).any()  # signed maps: the two rankings differ
    for flag in ("", "--absolute"):
        results = gradient_runs[flag]
        assert results["settings"]["absolute"] is bool(flag)
        morf, lerf = direct_curves(model, x, maps, predictions, absolute=bool(flag))
        np.testing.assert_allclose(results["methods"]["gradient"]["curve"], morf, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(results["methods"]["gradient"]["lerf_curve"], lerf, rtol=1e-5, atol=1e-7)
    signed, magnitude = (gradient_runs[flag]["methods"]["gradient"]["curve"] for flag in ("", "--absolute"))
    assert np.max(np.abs(np.subtract(signed, magnitude))) > 1e-3


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_true_label_follows_the_label_instead_of_the_prediction(tiny_npz, gradient_runs):
    """--true-label: each image's curve follows the probability of its label y, not of its clean prediction."""
    model, x, y, predictions = tiny_npz["model"], tiny_npz["x"], tiny_npz["y"], tiny_npz["predictions"]
    probabilities = model.predict(x, verbose=0)
    for flag, targets in (("", predictions), ("--true-label", y)):
        results = gradient_runs[flag]
        assert results["settings"]["true_label"] is bool(flag)
        curve = results["methods"]["gradient"]["curve"]
        # the first point is the clean image: the mean probability of the class followed
        assert curve[0] == pytest.approx(probabilities[np.arange(8), targets].mean(), rel=1e-5)
        maps = gradient_maps(model, x, targets)  # the map of that class
        np.testing.assert_allclose(curve, direct_curves(model, x, maps, targets, False)[0], rtol=1e-5, atol=1e-7)
    assert (
        gradient_runs[""]["methods"]["gradient"]["curve"][0]
        > gradient_runs["--true-label"]["methods"]["gradient"]["curve"][0]
    )


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_patterns_format_reference_gives_the_npz_patterns_curves(tiny_npz, tmp_path):
    """--patterns-format reference: patterns written in the PatternNet authors' layout give the npz file's numbers."""
    from pgig_tf import fit_patterns
    from pgig_tf.patterns.reference import to_reference_layout

    model = tiny_npz["model"]
    with np.load(tiny_npz["folder"] / "train.npz") as train:
        patterns = fit_patterns(model, train["x"], verbose=False)
    patterns.save(tmp_path / "patterns.npz")
    np.savez(tmp_path / "reference.npz", **to_reference_layout(patterns, model))
    methods = ["--methods", "gradient,pattern_attribution"]
    npz = tiny_run(tiny_npz, tmp_path / "npz", *methods, "--patterns", str(tmp_path / "patterns.npz"))
    reference = tiny_run(
        tiny_npz,
        tmp_path / "reference",
        *methods,
        "--patterns",
        str(tmp_path / "reference.npz"),
        "--patterns-format",
        "reference",
    )
    assert (npz["settings"]["patterns_format"], reference["settings"]["patterns_format"]) == ("npz", "reference")
    for key in ("curve", "lerf_curve", "autvc"):
        np.testing.assert_allclose(
            reference["methods"]["pattern_attribution"][key], npz["methods"]["pattern_attribution"][key], rtol=1e-6
        )
    with pytest.raises(
        SystemExit,
        match=r"reference\.npz' holds arrays A_0\.\.A_\d+, the PatternNet authors' layout: pass --patterns-format reference",
    ):
        tiny_run(tiny_npz, tmp_path / "wrong", *methods, "--patterns", str(tmp_path / "reference.npz"))


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_tfds_data_dir_and_background_split_reach_the_loader(tmp_path, fake_tfds, tiny_npz, monkeypatch):
    """--data-dir and --background-split: the TFDS loader reads from that folder, the background from that split."""
    from pgig_tf.patterns import fitting

    rng = np.random.default_rng(3)
    extra = (rng.normal(size=(9, 8, 8, 1)).astype("float32"), rng.integers(0, 4, 9))
    calls = fake_tfds({"test": (tiny_npz["x"], tiny_npz["y"]), "extra": extra})
    fitted = []
    fit = fitting.fit_patterns
    monkeypatch.setattr(fitting, "fit_patterns", lambda model, data, **k: fitted.append(data) or fit(model, data, **k))
    data_dir = str(tmp_path / "tfds")
    cli.main(
        ["--model", str(tiny_npz["folder"] / "m.keras"), "--dataset", "mnist", "--num-images", "6", "--quiet"]
        + ["--images-per-batch", "4", "--patch-size", "2", "--num-steps", "8", "--data-dir", data_dir]
        + ["--methods", "gradient,pattern_attribution", "--background-split", "extra", "--num-background", "5"]
        + ["--out", str(tmp_path)]
    )
    assert sorted((c["split"], c["data_dir"], c["num_images"]) for c in calls) == [
        ("extra", data_dir, 5),
        ("test", data_dir, 6),
    ]
    assert all(c["name"] == "mnist" and c["manual_dir"] is None for c in calls)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["background_split"] == "extra" and results["model"]["dataset"] == "mnist:test"
    assert results["methods"]["gradient"]["num_images"] == 6
    # the patterns were fitted on the first 5 images of that split
    assert len(fitted) == 1
    np.testing.assert_array_equal(fitted[0], extra[0][:5])


def test_fit_patterns_kind_linear_fits_the_linear_estimator(tmp_path):
    """pgig-fit-patterns --kind linear: the file holds fit_patterns(..., kind="linear") of the same images."""
    import keras

    from pgig_tf import Patterns, fit_patterns
    from pgig_tf.cli import fit_patterns as script
    from pgig_tf.datasets.digits import load_digits_images

    model = keras.Sequential(
        [keras.Input((32, 32, 1)), keras.layers.Conv2D(2, 3, activation="relu"), keras.layers.Flatten()]
        + [keras.layers.Dense(10)]
    )
    model.set_weights([np.random.default_rng(4).normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    common = ["--model", str(tmp_path / "m.keras"), "--num-images", "40"]
    script.main(common + ["--kind", "linear", "--out", str(tmp_path / "linear.npz")])
    script.main(common + ["--out", str(tmp_path / "relu.npz")])  # the default: --kind relu
    x_train = load_digits_images(0)[0][:40]
    linear, relu = Patterns.load(tmp_path / "linear.npz"), Patterns.load(tmp_path / "relu.npz")
    assert (linear.kind, relu.kind) == ("linear", "relu") and linear.num_samples == 40
    for kind, loaded in (("linear", linear), ("relu", relu)):
        direct = fit_patterns(model, x_train, kind=kind, batch_size=32, verbose=False)
        assert set(loaded) == set(direct)
        for name in direct:
            np.testing.assert_allclose(loaded[name], direct[name], rtol=1e-5, atol=1e-8)
    # the conv layer feeds a ReLU: its two estimators differ
    assert not np.allclose(linear[model.layers[0].name], relu[model.layers[0].name], rtol=1e-3)


def test_fit_patterns_data_dir_reaches_the_tfds_loader(tmp_path, fake_tfds, tiny_npz):
    """pgig-fit-patterns --data-dir: the TFDS dataset is read from that folder, and the patterns fitted on its images."""
    from pgig_tf import Patterns, fit_patterns
    from pgig_tf.cli import fit_patterns as script

    x, y = tiny_npz["x"], tiny_npz["y"]
    calls = fake_tfds({"train": (x, y)})
    data_dir = str(tmp_path / "tfds")
    script.main(
        ["--model", str(tiny_npz["folder"] / "m.keras"), "--dataset", "mnist", "--num-images", "6"]
        + ["--batch-size", "4", "--data-dir", data_dir, "--out", str(tmp_path / "p.npz")]
    )
    assert [(c["name"], c["split"], c["data_dir"], c["num_images"]) for c in calls] == [("mnist", "train", data_dir, 6)]
    loaded = Patterns.load(tmp_path / "p.npz")
    direct = fit_patterns(tiny_npz["model"], x[:6], batch_size=4, verbose=False)
    assert loaded.num_samples == 6
    for name in direct:
        np.testing.assert_allclose(loaded[name], direct[name], rtol=1e-5, atol=1e-8)


def test_compute_dtype_bfloat16_reaches_every_method_but_random_and_the_fingerprint():
    args = cli.parse_args(["--methods", "gradient,pgig,random", "--compute-dtype", "bfloat16"])
    assert cli.run_settings(args, "pgig") == {**cli.method_settings("pgig"), "compute_dtype": "bfloat16"}
    assert cli.run_settings(args, "gradient") == {"compute_dtype": "bfloat16"}
    assert cli.run_settings(args, "random") == {}
    assert cli.fingerprint_of(args)["compute_dtype"] == "bfloat16"
    # --set still wins for one method; float32 (the default) leaves the fingerprint as it was
    mixed = cli.parse_args(["--methods", "pgig", "--compute-dtype", "bfloat16", "--set", "pgig.compute_dtype=null"])
    assert cli.run_settings(mixed, "pgig")["compute_dtype"] is None
    assert "compute_dtype" not in cli.fingerprint_of(cli.parse_args(["--methods", "pgig"]))
