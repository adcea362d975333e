"""Faithfulness metrics from one ranking equal each curve's own; the checkpoint state round-trips; summaries rank by direction."""

import json

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf.evaluation.faithfulness import (
    CURVES,
    METRICS,
    SRG_METRICS,
    EvaluationState,
    FaithfulnessMetrics,
    summarise,
    units_per_step,
)
from pgig_tf.evaluation.perturbation import PerturbationCurves
from pgig_tf.files import CorruptFileError, write_npz


@pytest.fixture(scope="module")
def setting():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    set_random_weights(model, 5, scale=0.4)
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (3, 6, 6, 2)).astype(np.float32)
    maps = rng.normal(0, 1, images.shape).astype(np.float32)
    return model, images, maps, np.array([0, 2, 1])


def test_every_metric_is_the_area_of_the_curve_that_ranks_the_map_itself(setting):
    model, images, maps, targets = setting
    metrics = FaithfulnessMetrics(
        model, patch_size=2, patch_step=2, pixel_step=5, blur_sigma=1.5, road_noise=0.05, seed=3, batch_size=7
    )
    scores, curves = metrics.evaluate(images, maps, targets, first_index=4)
    assert list(scores) == list(METRICS) and list(curves) == list(CURVES)
    # the curves' settings: MoRF/LeRF on 2x2 patches, 2 per step; deletion to 0 and insertion into the blur on pixels
    for name in CURVES:
        engine = metrics.engine(name)
        _, _, replacement = name.partition("_")
        expected = {
            "deletion": ("remove", 0.0, 1, 5),
            "insertion": ("insert", "blur", 1, 5),
        }.get(name, ("remove", replacement, 2, 2))
        assert (engine.order, engine.mode, engine.replacement, engine.patch_size, engine.units_per_step) == (
            "morf",
        ) + expected
        assert (engine.blur_sigma, engine.road_noise, engine.seed, engine.num_steps) == (1.5, 0.05, 3, None)
        # ranked once for all curves, the maps give the curves the engine gets when it ranks them itself
        if not name.startswith("lerf"):
            own = engine.curves(images, maps, targets, first_index=4)
            np.testing.assert_array_equal(curves[name].values, own.values)
        if name in scores:
            np.testing.assert_array_equal(scores[name], curves[name].area)
    # LeRF from the MoRF engine on the reversed ranking is the LeRF engine's curve
    for replacement in ("blur", "road"):
        lerf = PerturbationCurves(
            model,
            "lerf",
            replacement,
            patch_size=2,
            units_per_step=2,
            blur_sigma=1.5,
            road_noise=0.05,
            seed=3,
            batch_size=7,
        ).curves(images, maps, targets, first_index=4)
        np.testing.assert_array_equal(curves[f"lerf_{replacement}"].values, lerf.values)
    for replacement in ("image_mean", "own_patch_mean", "blur", "road"):
        np.testing.assert_array_equal(
            scores[f"srg_{replacement}"], scores[f"lerf_{replacement}"] - scores[f"morf_{replacement}"]
        )
    fractions = metrics.fractions(images.shape)
    assert len(fractions["deletion"]) == 1 + 8  # 36 pixels, 5 per step
    assert len(fractions["morf_road"]) == 1 + 5 and fractions["morf_road"][-1] == 1.0  # 9 patches, 2 per step
    with pytest.raises(ValueError, match=r"maps must be shaped like images \(3, 6, 6, 2\), got \(3, 6, 6, 1\)"):
        metrics.evaluate(images, maps[..., :1], targets)


def test_units_per_step():
    assert [units_per_step(64, 64), units_per_step(625, 64), units_per_step(1024, 64), units_per_step(5, 64)] == [
        1,
        10,
        16,
        1,
    ]
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        units_per_step(10, 0)


def state_with_scores(rng, methods=("a", "b")):
    state = EvaluationState({"seed": 0, "patch_size": 2}, methods, {c: 5 for c in CURVES}, {"model": "m"})

    class FakeCurves:
        def __init__(self, values):
            self.values = values

    for batch in range(2):
        results = {
            name: (
                {metric: rng.normal(size=3) for metric in METRICS},
                {curve: FakeCurves(rng.random((3, 5)).astype(np.float32)) for curve in CURVES},
                0.5,
                0.25,
            )
            for name in methods
        }
        state.add(results, targets=[1, 2, 0], predictions=[1, 1, 0], labels=None if batch else [1, 2, 2])
        state.batches_done += 1
    return state


def test_state_round_trips_and_refuses_other_settings(tmp_path):
    state = state_with_scores(np.random.default_rng(0))
    path = tmp_path / "scores.npz"
    state.save(path)
    loaded = EvaluationState.load(path, {"seed": 0, "patch_size": 2})
    assert loaded.batches_done == 2 and not loaded.finished and loaded.info == {"model": "m"}
    assert loaded.labels.tolist() == [1, 2, 2, -1, -1, -1] and loaded.targets.tolist() == [1, 2, 0, 1, 2, 0]
    assert loaded.seconds == {"a": {"attribution": 1.0, "metrics": 0.5}, "b": {"attribution": 1.0, "metrics": 0.5}}
    for name in ("a", "b"):
        for metric in METRICS:
            np.testing.assert_array_equal(loaded.scores[name][metric], state.scores[name][metric])
        for curve in CURVES:
            np.testing.assert_array_equal(loaded.curve_sums[name][curve], state.curve_sums[name][curve])
    np.testing.assert_array_equal(loaded.mean_curves()["a"]["deletion"], state.curve_sums["a"]["deletion"] / 6)
    with pytest.raises(ValueError, match=r"other settings \(patch_size: 2 there, 4 now; seed: 0 there, None now\)"):
        EvaluationState.load(path, {"patch_size": 4})
    other = tmp_path / "patterns.npz"
    write_npz(other, {"__pgig_tf_meta__": np.array(json.dumps({}))})
    with pytest.raises(CorruptFileError, match="it is a patterns file"):
        EvaluationState.load(other)


def test_summary_ranks_each_metric_in_its_direction():
    rng = np.random.default_rng(2)
    n = 40
    # "good" has clearly lower MoRF, higher LeRF and SRG, lower deletion, higher insertion than "bad"
    good = {metric: rng.normal(0, 0.05, n) + (1.0 if higher else 0.0) for metric, higher in METRICS.items()}
    bad = {metric: rng.normal(0, 0.05, n) + (0.0 if higher else 1.0) for metric, higher in METRICS.items()}
    noisy = {metric: rng.normal(0.5, 0.5, n) for metric in METRICS}
    summary = summarise({"bad": bad, "good": good, "noisy": noisy}, resamples=300, seed=1)
    for metric in METRICS:
        assert summary["ranks"][metric]["good"] == 1 and summary["ranks"][metric]["bad"] == 3
        assert summary["methods"]["noisy"][f"{metric}_rank"] == 2
        mean = summary["methods"]["good"][metric]
        assert mean == pytest.approx(good[metric].mean(), abs=1e-12)
        low, high = summary["methods"]["good"][f"{metric}_ci"]
        assert low < mean < high
    for replacement in ("image_mean", "own_patch_mean", "blur", "road"):
        pairs = summary["srg_differences"][replacement]
        assert list(pairs) == ["bad - good", "bad - noisy", "good - noisy"]
        assert pairs["bad - good"]["mean"] == pytest.approx(-1.0, abs=0.05)
        assert pairs["bad - good"]["excludes_zero"] and pairs["bad - good"]["ci"][1] < 0
    assert len(SRG_METRICS) == 4
