"""pgig-evaluate on a tiny model and .npz: argument and file errors, the three outputs, SRG per image, resuming."""

import json
import math

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf.cli import evaluate as cli
from pgig_tf.evaluation import faithfulness
from pgig_tf.evaluation.faithfulness import METRICS, SRG_METRICS

METHODS = "gradient,integrated_gradients,random"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny image model (.keras) and 7 images for it (.npz with x and y)."""
    folder = tmp_path_factory.mktemp("evaluate_inputs")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    set_random_weights(model, 3, scale=0.4)
    model_path = folder / "tiny.keras"
    model.save(model_path)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (7, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 7)
    data_path = folder / "data.npz"
    np.savez(data_path, x=x, y=y)
    return {"model": str(model_path), "data": str(data_path), "folder": folder, "x": x, "y": y}


def arguments(files, out, *extra):
    return [
        "--model",
        files["model"],
        "--data",
        files["data"],
        "--out",
        str(out),
        "--methods",
        METHODS,
        "--images-per-batch",
        "3",
        "--patch-size",
        "2",
        "--num-steps",
        "8",
        "--resamples",
        "200",
        "--quiet",
        *extra,
    ]


def read(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def whole_run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    cli.main(arguments(files, out))
    return out, read(out)


def without_timings(results):
    """results.json without what differs between runs of the same settings: seconds and library versions."""
    results = json.loads(json.dumps(results))
    results.pop("versions")
    for method in results["methods"].values():
        method.pop("seconds_per_image")
    return results


def assert_same_results(ours, theirs, rtol, path="results"):
    """Equal structure, keys, strings and integers; floats within `rtol` (relative) of each other."""
    assert type(ours) is type(theirs), path
    if isinstance(ours, dict):
        assert list(ours) == list(theirs), path
        for key in ours:
            assert_same_results(ours[key], theirs[key], rtol, f"{path}[{key!r}]")
    elif isinstance(ours, list):
        assert len(ours) == len(theirs), path
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_results(a, b, rtol, f"{path}[{index}]")
    elif isinstance(ours, float):
        assert ours == pytest.approx(theirs, rel=rtol, abs=0.0, nan_ok=True), path
    else:
        assert ours == theirs, path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-images", "1"], "--num-images must be at least 2"),
        (["--resamples", "0"], "--resamples must be a positive integer, got 0"),
        (["--num-steps", "0"], "--num-steps must be a positive integer, got 0"),
        (["--patch-size", "0"], "--patch-size must be a positive integer, got 0"),
        (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (["--road-noise", "-0.1"], "--road-noise must be a finite number >= 0, got -0.1"),
        (["--road-noise", "nan"], "--road-noise must be a finite number >= 0, got nan"),
        (["--blur-sigma", "0"], "--blur-sigma must be a finite number of pixels > 0, got 0.0"),
        (["--weights", "none"], "--preprocessing and --weights apply only to --model vgg16"),
        (["--split", "test"], "--split applies only to a TFDS --data"),
        (["--methods", "gradient,pgi"], "unknown method(s) pgi; choose from gradient,"),
        (["--methods", "gradient,gradient"], "--methods names a method twice"),
        (["--model", "missing.keras"], "--model: no model file 'missing.keras'"),
        (["--data", "missing.npz"], "--data: no file 'missing.npz'"),
        (["--background-npz", "missing.npz"], "--background-npz: no file 'missing.npz'"),
        (["--curves-replacement", "zero"], "invalid choice: 'zero'"),
        (["--num-shards", "0"], "--num-shards must be a positive integer, got 0"),
        (["--num-shards", "2", "--shard-index", "2"], "--shard-index must be in [0, 2), got 2"),
        (["--num-shards", "2", "--merge", "--fresh"], "--fresh discards a shard's checkpoint; --merge only reads"),
        (["--merge"], "--merge combines shards: give the run's --num-shards (at least 2)"),
    ],
)
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.parse_args(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def bad_file(files, name, **arrays):
    path = files["folder"] / name
    np.savez(path, **arrays)
    return str(path)


def test_npz_validation_errors(files, tmp_path):
    x, y = files["x"], files["y"]
    cases = [
        (bad_file(files, "no_x.npz", images=x), "no array 'x' (the images); the file holds ['images']"),
        (bad_file(files, "text_x.npz", x=np.array(["a", "b"])), "'x' must hold real numbers"),
        (bad_file(files, "rank3.npz", x=x[0]), "'x' must have shape (N, H, W, C), got (8, 8, 1) (one colour image?"),
        (bad_file(files, "one.npz", x=x[:1]), "'x' holds 1 image(s); at least 2 are needed"),
        (bad_file(files, "nan.npz", x=np.where(np.arange(7)[:, None, None, None] == 4, np.nan, x)), "in images [4]"),
        (bad_file(files, "onehot.npz", x=x, y=np.eye(3)[y]), "(one-hot labels? save y.argmax(axis=1))"),
        (bad_file(files, "short_y.npz", x=x, y=y[:5]), "'y' holds 5 labels for the 7 images of 'x'"),
        (
            bad_file(files, "float_y.npz", x=x, y=y.astype(float)),
            "'y' must hold integer class indices, got dtype float64",
        ),
        (bad_file(files, "negative_y.npz", x=x, y=y - 5), "'y' holds negative classes"),
    ]
    not_npz = files["folder"] / "not.npz"
    not_npz.write_text("hello")
    cases.append((str(not_npz), "it is not a complete .npz archive"))
    for path, message in cases:
        with pytest.raises(SystemExit) as exit:
            cli.main(["--data", path, "--out", str(tmp_path), "--quiet"])
        assert f"--data: {path!r}" in str(exit.value) or f"--data: '{path}'" in str(exit.value)
        assert message in str(exit.value), str(exit.value)
    # checks that need the model: the images' shape and the classes' range
    wide = bad_file(files, "wide.npz", x=np.zeros((3, 8, 9, 1), np.float32))
    big_y = bad_file(files, "big_y.npz", x=x, y=np.full(7, 3))
    for path, message in (
        (wide, "'x' holds images of shape (8, 9, 1); the model takes (8, 8, 1)"),
        (big_y, "'y' holds class 3 (image 0), but the model has 3 outputs (classes 0..2)"),
    ):
        with pytest.raises(SystemExit) as exit:
            cli.main(["--model", files["model"], "--data", path, "--out", str(tmp_path), "--quiet"])
        assert message in str(exit.value) and path in str(exit.value)
    # pattern methods and Expected Gradients need a background the .npz data does not give
    with pytest.raises(SystemExit, match="need background images .* --background-npz FILE"):
        cli.main(arguments(files, tmp_path / "eg", "--methods", "gradient,expected_gradients"))


def test_writes_the_three_outputs_with_finite_numbers(whole_run, files):
    out, results = whole_run
    methods = METHODS.split(",")
    assert results["num_images"] == 7 and list(results["methods"]) == methods
    assert results["settings"]["patch_size"] == 2 and results["settings"]["target"] == "label"
    assert results["settings"]["patches_per_step"] == 2 and results["settings"]["pixels_per_step"] == 8
    assert results["per_image"]["targets"] == results["per_image"]["labels"] == files["y"].tolist()
    for name in methods:
        r = results["methods"][name]
        for metric in METRICS:
            low, high = r[f"{metric}_ci"]
            assert math.isfinite(r[metric]) and low <= r[metric] <= high
            assert 1 <= r[f"{metric}_rank"] <= len(methods) and isinstance(r[f"{metric}_tied"], bool)
            values = results["per_image"]["scores"][name][metric]
            assert len(values) == 7 and r[metric] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
        assert set(results["mean_curves"][name]) == set(faithfulness.CURVES)
    for metric in METRICS:
        assert results["ranks"][metric] == {name: results["methods"][name][f"{metric}_rank"] for name in methods}
    for fractions in results["fractions"].values():
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert len(fractions) == 9  # 16 patches, 2 per step; 64 pixels, 8 per step
    pairs = {"gradient - integrated_gradients", "gradient - random", "integrated_gradients - random"}
    for replacement in ("image_mean", "own_patch_mean", "blur", "road"):
        assert set(results["srg_differences"][replacement]) == pairs
        for pair in results["srg_differences"][replacement].values():
            low, high = pair["ci"]
            assert pair["excludes_zero"] == (low > 0 or high < 0)
    markdown = (out / "results.md").read_text()
    assert (
        "| method | SRG image_mean ↑ | SRG own_patch_mean ↑ | SRG blur ↑ | SRG road ↑ | deletion ↓ | insertion ↑ |"
        in (markdown)
    )
    row = next(line for line in markdown.splitlines() if line.startswith("| random | "))
    assert row.count("[") == 6  # a mean, interval and rank per column
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_srg_is_lerf_minus_morf_per_image_and_the_checkpoint_holds_the_same_scores(whole_run, files):
    out, results = whole_run
    scores = results["per_image"]["scores"]
    for name in METHODS.split(","):
        for replacement in ("image_mean", "own_patch_mean", "blur", "road"):
            srg, lerf, morf = (scores[name][f"{k}_{replacement}"] for k in ("srg", "lerf", "morf"))
            assert srg == [a - b for a, b in zip(lerf, morf)]  # exactly, per image
    state = faithfulness.EvaluationState.load(out / "scores.npz")
    assert state.finished and state.batches_done == 3 and state.num_images == 7
    assert state.labels.tolist() == files["y"].tolist() == results["per_image"]["targets"]
    for name in METHODS.split(","):
        for metric in METRICS:
            assert state.scores[name][metric].tolist() == scores[name][metric]


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_random_control_and_a_resumed_run_gives_the_same_numbers(whole_run, files, tmp_path, monkeypatch, capsys):
    first = whole_run[1]
    # the random ranking's SRG is 0 in expectation: its interval holds 0 for most replacements
    holds = sum(
        first["methods"]["random"][f"{m}_ci"][0] <= 0 <= first["methods"]["random"][f"{m}_ci"][1] for m in SRG_METRICS
    )
    assert holds >= 3
    out = tmp_path / "resumed"
    calls = {"n": 0}
    evaluate = faithfulness.FaithfulnessMetrics.evaluate

    def stop_in_the_second_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 methods per batch: the second method of the second batch
            raise KeyboardInterrupt
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(faithfulness.FaithfulnessMetrics, "evaluate", stop_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        cli.main(arguments(files, out))
    monkeypatch.setattr(faithfulness.FaithfulnessMetrics, "evaluate", evaluate)
    saved = faithfulness.EvaluationState.load(out / "scores.npz")
    assert saved.batches_done == 1 and saved.num_images == 3 and not saved.finished
    cli.main(arguments(files, out, "--quiet"))
    assert without_timings(read(out)) == without_timings(first)
    # a finished run is only rewritten; other settings in the same folder are refused
    cli.main(arguments(files, out, "--resamples", "300"))
    again = read(out)
    assert again["settings"]["resamples"] == 300
    assert again["per_image"] == first["per_image"]
    with pytest.raises(SystemExit, match=r"(?s)holds a run with other settings \(patch_size: 2 there, 4 now.*--fresh"):
        cli.main(arguments(files, out, "--patch-size", "4"))


@pytest.mark.slow  # whole runs of the command (or a second process); the default suite has quicker kin
def test_a_tfds_dataset_with_patterns_fitted_on_its_training_split(tmp_path):
    """--data NAME streams a TFDS split (TFDS' offline mock data here); patterns come from its train split."""
    import tensorflow_datasets as tfds

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3, activation="relu"), keras.layers.Flatten()]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    set_random_weights(model, 4, scale=0.1)
    model.save(tmp_path / "mnist.keras")
    out = tmp_path / "out"
    with tfds.testing.mock_data(num_examples=6):
        cli.main(
            ["--model", str(tmp_path / "mnist.keras"), "--data", "mnist", "--out", str(out), "--num-images", "4"]
            + ["--images-per-batch", "3", "--num-background", "5", "--num-steps", "8", "--resamples", "50"]
            + ["--methods", "gradient,pattern_attribution", "--quiet"]
        )
    results = read(out)
    assert results["data"] == {
        "data": "mnist:test",
        "preprocessing": "unit (squash to the model's input, [-1, 1])",
        "background": "5 images of mnist:train",
    }
    settings = results["settings"]
    assert (settings["split"], settings["background_split"], settings["num_background"]) == ("test", "train", 5)
    # 28 // 8 = 3: 81 patches of 3x3, 11 per step; 784 pixels, 98 per step; [-1, 1] images: ROAD noise 0.02
    assert (settings["patch_size"], settings["patches_per_step"], settings["pixels_per_step"]) == (3, 11, 98)
    assert settings["road_noise"] == 0.02 and settings["target"] == "label"
    assert results["num_images"] == 4 and len(results["fractions"]["morf_road"]) == 1 + 8
    assert all(math.isfinite(results["methods"][m]["srg_road"]) for m in ("gradient", "pattern_attribution"))


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_shards_merged_give_the_per_image_scores_of_one_run(whole_run, files, tmp_path):
    """Two shards of whole batches (6 and 1 of 7 images, batches of 3) merge into exactly one run's numbers.

    A shard meets the very batches of one run (`data.shard_bounds` with a block), so no model call
    is batched otherwise and even the float32 rounding is the same, random included.
    """
    first = whole_run[1]
    out = tmp_path / "sharded"
    with pytest.raises(
        SystemExit, match=r"--num-shards 8 is more than the 3 batches of --images-per-batch 3 in the 7 images evaluated"
    ):
        cli.main(arguments(files, out, "--num-shards", "8"))
    with pytest.raises(SystemExit, match=r"missing shard checkpoints in .*scores-shard0of2.npz, scores-shard1of2.npz"):
        cli.main(arguments(files, out, "--num-shards", "2", "--merge"))
    assert cli.main(arguments(files, out, "--num-shards", "2", "--shard-index", "1")) is None
    assert not (out / "results.json").exists()
    with pytest.raises(SystemExit, match=r"missing shard checkpoints in .*: scores-shard0of2.npz$"):
        cli.main(arguments(files, out, "--num-shards", "2", "--merge"))
    cli.main(arguments(files, out, "--num-shards", "2", "--shard-index", "0"))
    shard = faithfulness.EvaluationState.load(out / "scores-shard0of2.npz")
    assert shard.num_images == 6 and shard.labels.tolist() == files["y"][:6].tolist()
    with pytest.raises(SystemExit, match=r"holds a run with other settings \(patch_size: 2 there, 4 now"):
        cli.main(arguments(files, out, "--num-shards", "2", "--merge", "--patch-size", "4"))
    merged = cli.main(arguments(files, out, "--num-shards", "2", "--merge"))
    assert merged == read(out)
    assert merged["settings"].pop("num_shards") == 2
    assert first["settings"].pop("num_shards") == 1
    assert_same_results(without_timings(merged), without_timings(first), rtol=0)
    first["settings"]["num_shards"] = 1


@pytest.mark.slow  # seconds of whole runs; the default suite keeps its quicker kin
def test_a_merge_refuses_an_unfinished_shard(files, tmp_path, monkeypatch):
    out = tmp_path / "unfinished"
    cli.main(arguments(files, out, "--num-shards", "2", "--shard-index", "1"))
    evaluate = faithfulness.FaithfulnessMetrics.evaluate
    calls = {"n": 0}

    def stop_in_the_second_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(faithfulness.FaithfulnessMetrics, "evaluate", stop_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        cli.main(arguments(files, out, "--num-shards", "2", "--shard-index", "0"))  # 4 images: batches of 3 and 1
    monkeypatch.setattr(faithfulness.FaithfulnessMetrics, "evaluate", evaluate)
    with pytest.raises(SystemExit, match=r"scores-shard0of2.npz is unfinished \(3 images so far\): run shard 0 again"):
        cli.main(arguments(files, out, "--num-shards", "2", "--merge"))


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_target_prediction_explains_the_clean_prediction_instead_of_the_label(whole_run, files, tmp_path):
    """--target prediction: every image's explained class is the model's prediction, not its label."""
    out = tmp_path / "prediction"
    results = cli.main(arguments(files, out, "--target", "prediction"))
    predictions = keras.models.load_model(files["model"]).predict(files["x"], verbose=0).argmax(1)
    same = predictions == files["y"]
    assert 0 < same.sum() < len(same)  # the labels differ from the predictions on some images, not all
    assert results["settings"]["target"] == "prediction" and whole_run[1]["settings"]["target"] == "label"
    per_image = results["per_image"]
    assert per_image["targets"] == per_image["predictions"] == predictions.tolist()
    assert per_image["labels"] == files["y"].tolist()  # still recorded (the accuracy uses them)
    # the gradient's scores are the label run's where the classes agree, and others where they do not
    ours, labels = per_image["scores"]["gradient"], whole_run[1]["per_image"]["scores"]["gradient"]
    for metric in ("morf_image_mean", "lerf_blur", "srg_road", "deletion", "insertion"):
        for i in range(len(same)):
            if same[i]:
                assert ours[metric][i] == labels[metric][i], (metric, i)
    assert all(ours["morf_image_mean"][i] != labels["morf_image_mean"][i] for i in np.flatnonzero(~same))


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_patterns_format_reference_reads_the_pattern_net_authors_layout(files, tmp_path):
    """--patterns-format reference: the same patterns written in the reference layout give the npz file's maps."""
    from pgig_tf import fit_patterns
    from pgig_tf.patterns.reference import to_reference_layout

    model = keras.models.load_model(files["model"])
    background = np.random.default_rng(5).uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
    patterns = fit_patterns(model, background, verbose=False)
    patterns.save(tmp_path / "patterns.npz")
    reference = to_reference_layout(patterns, model)
    assert reference["A_0"].shape == (3, 1, 3, 3)  # channels first: a file of another layout than pgig_tf's
    np.savez(tmp_path / "reference.npz", **reference)
    runs = {}
    for name, flags in (
        ("npz", ["--patterns", str(tmp_path / "patterns.npz")]),
        ("reference", ["--patterns", str(tmp_path / "reference.npz"), "--patterns-format", "reference"]),
    ):
        runs[name] = cli.main(arguments(files, tmp_path / name, "--methods", "gradient,pattern_attribution", *flags))
    assert runs["npz"]["settings"]["patterns_format"] == "npz"
    assert runs["reference"]["settings"]["patterns_format"] == "reference"
    scores = [runs[name]["per_image"]["scores"]["pattern_attribution"] for name in ("npz", "reference")]
    assert set(scores[0]) == set(METRICS)
    for metric in METRICS:
        np.testing.assert_allclose(scores[1][metric], scores[0][metric], rtol=1e-6, atol=1e-7, err_msg=metric)
    # patterns of another model: refused with the file's name and what differs
    other = keras.models.clone_model(model)
    other.set_weights([w + 0.5 for w in model.get_weights()])
    fit_patterns(other, background, verbose=False).save(tmp_path / "other.npz")
    with pytest.raises(SystemExit, match=r"--patterns '.*other\.npz' does not fit the model: .*weights differ"):
        cli.main(
            arguments(
                files, tmp_path / "other", "--methods", "pattern_attribution", "--patterns", str(tmp_path / "other.npz")
            )
        )
    # without the flag the reference file is read as pgig_tf's format: its A_i arrays name no layer of the model
    with pytest.raises(
        SystemExit,
        match=r"reference\.npz' holds arrays A_0\.\.A_\d+, the PatternNet authors' layout: pass --patterns-format reference",
    ):
        cli.main(
            arguments(files, tmp_path / "wrong", "--methods", "gradient,pattern_attribution")
            + ["--patterns", str(tmp_path / "reference.npz")]
        )


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_tfds_data_dir_and_background_split_reach_the_loader(files, tmp_path, fake_tfds, monkeypatch):
    """--data-dir and --background-split: the TFDS loader reads the background from that split of that folder."""
    from pgig_tf.patterns import fitting

    rng = np.random.default_rng(6)
    test = (files["x"][:4], files["y"][:4].astype(np.int64))
    extra = (rng.uniform(-1, 1, (9, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 9))
    calls = fake_tfds({"test": test, "extra": extra})
    fitted = []
    fit = fitting.fit_patterns
    monkeypatch.setattr(fitting, "fit_patterns", lambda model, data, **k: fitted.append(data) or fit(model, data, **k))
    data_dir = str(tmp_path / "tfds")
    results = cli.main(
        ["--model", files["model"], "--data", "mnist", "--num-images", "4", "--images-per-batch", "3"]
        + ["--patch-size", "2", "--num-steps", "8", "--resamples", "50", "--quiet", "--out", str(tmp_path / "out")]
        + ["--methods", "gradient,pattern_attribution", "--data-dir", data_dir]
        + ["--background-split", "extra", "--num-background", "5"]
    )
    assert sorted((c["split"], c["data_dir"], c["num_images"]) for c in calls) == [
        ("extra", data_dir, 5),
        ("test", data_dir, 4),
    ]
    assert all(c["name"] == "mnist" and c["manual_dir"] is None for c in calls)
    assert results["settings"]["background_split"] == "extra" and results["settings"]["split"] == "test"
    assert results["data"]["background"] == "5 images of mnist:extra"
    assert results["per_image"]["labels"] == test[1].tolist()
    # the patterns were fitted on the first 5 images of that split
    assert len(fitted) == 1
    np.testing.assert_array_equal(fitted[0], extra[0][:5])


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_compute_dtype_bfloat16_is_recorded_and_ranks_as_float32_does(whole_run, files, tmp_path):
    out = tmp_path / "bfloat16"
    results = cli.main(arguments(files, out, "--compute-dtype", "bfloat16"))
    assert results["settings"]["compute_dtype"] == "bfloat16" and "compute_dtype" not in whole_run[1]["settings"]
    # the random control draws no model gradients: bit for bit the float32 run's
    first = whole_run[1]["per_image"]["scores"]
    assert results["per_image"]["scores"]["random"] == first["random"]
    for name in ("gradient", "integrated_gradients"):
        np.testing.assert_allclose(results["per_image"]["scores"][name]["srg_blur"], first[name]["srg_blur"], atol=0.1)
    with pytest.raises(
        SystemExit, match=r"holds a run with other settings \(compute_dtype: 'bfloat16' there, None now"
    ):
        cli.main(arguments(files, out))
