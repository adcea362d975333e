"""The benchmark runner: totals equal a direct computation, restarts lose and redo nothing, shards merge exactly."""

import json

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import create_analyzer
from pgig_tf.evaluation.benchmark import MethodTotals, merge_states, run_benchmark, state_path
from pgig_tf.evaluation.degradation import Degrader, aupc
from pgig_tf.evaluation.smoothness import autvc


@pytest.fixture
def setting():
    model = set_random_weights(
        keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                keras.layers.Conv2D(3, 3, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(4, activation="softmax"),
            ]
        ),
        1,
        0.3,
    )
    images = np.random.default_rng(0).normal(0, 1, (10, 12, 12, 1)).astype(np.float32)
    degrader = Degrader(model, patch_size=3, num_steps=16, replacement="image_mean")
    return model, images, degrader


class CountingAnalyzer:
    """Wraps an analyzer and counts the images it explains."""

    def __init__(self, inner):
        self.inner, self.images, self.seed = inner, 0, None

    def analyze(self, x, neuron_selection):
        self.images += len(x)
        return self.inner.analyze(x, neuron_selection)


def batches_of(images, size, fail_after=None):
    for index, start in enumerate(range(0, len(images), size)):
        if fail_after is not None and index == fail_after:
            raise KeyboardInterrupt("killed")
        yield images[start : start + size], None


def test_totals_match_a_direct_computation(setting, tmp_path):
    model, images, degrader = setting
    analyzers = {
        "gradient": create_analyzer("gradient", model),
        "ig": create_analyzer("integrated_gradients", model, steps=4),
    }
    state, examples = run_benchmark(
        analyzers,
        degrader,
        batches_of(images, 4),
        3,
        str(tmp_path / "s.json"),
        {"a": 1},
        keep_examples=2,
        verbose=False,
    )
    for name, analyzer in analyzers.items():
        maps = analyzer.analyze(images)
        curves = degrader.curves(images, maps)
        summary = state["totals"][name].summary()
        np.testing.assert_allclose(summary["curve"], curves.mean(0), rtol=1e-6)
        np.testing.assert_allclose(summary["stderr"], curves.std(0, ddof=1) / np.sqrt(10), rtol=1e-5, atol=1e-9)
        assert summary["aupc"] == pytest.approx(aupc(curves.mean(0)))
        assert summary["autvc"] == pytest.approx(autvc(maps).mean())
        assert summary["num_images"] == 10
        np.testing.assert_array_equal(examples[name], maps[:2])


def test_a_killed_run_resumes_without_recomputing(setting, tmp_path):
    model, images, degrader = setting
    path = str(tmp_path / "state.json")
    counting = CountingAnalyzer(create_analyzer("integrated_gradients", model, steps=3))
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(
            {"ig": counting},
            degrader,
            batches_of(images, 2, fail_after=3),
            5,
            path,
            {"a": 1},
            checkpoint_every=1,
            verbose=False,
        )
    assert json.load(open(path))["batches_done"] == 3 and counting.images == 6
    resumed, _ = run_benchmark({"ig": counting}, degrader, batches_of(images, 2), 5, path, {"a": 1}, verbose=False)
    assert counting.images == 10  # only the 4 images not yet counted were explained again
    fresh, _ = run_benchmark(
        {"ig": create_analyzer("integrated_gradients", model, steps=3)},
        degrader,
        batches_of(images, 2),
        5,
        str(tmp_path / "fresh.json"),
        {"a": 1},
        verbose=False,
    )
    np.testing.assert_allclose(resumed["totals"]["ig"].curve_sum, fresh["totals"]["ig"].curve_sum, rtol=1e-12)
    assert resumed["totals"]["ig"].count == 10


def test_checkpoint_of_other_settings_is_refused(setting, tmp_path):
    model, images, degrader = setting
    path = str(tmp_path / "state.json")
    run_benchmark(
        {"g": create_analyzer("gradient", model)}, degrader, batches_of(images, 5), 2, path, {"a": 1}, verbose=False
    )
    with pytest.raises(ValueError, match="holds a checkpoint of a run with other settings"):
        run_benchmark(
            {"g": create_analyzer("gradient", model)}, degrader, batches_of(images, 5), 2, path, {"a": 2}, verbose=False
        )


def test_shards_merge_to_the_whole(setting, tmp_path):
    model, images, degrader = setting
    analyzer = create_analyzer("gradient", model)
    whole, _ = run_benchmark(
        {"g": analyzer}, degrader, batches_of(images, 3), 4, str(tmp_path / "w.json"), {"a": 1}, verbose=False
    )
    paths = []
    for index, part in enumerate(np.array_split(images, 2)):
        paths.append(state_path(str(tmp_path), index, 2))
        run_benchmark({"g": analyzer}, degrader, batches_of(part, 3), 2, paths[-1], {"a": 1}, verbose=False)
    _, totals = merge_states(paths)
    # float32 model outputs depend on the batch's composition at the 1e-7 level
    np.testing.assert_allclose(totals["g"].curve_sum, whole["totals"]["g"].curve_sum, rtol=1e-6)
    assert totals["g"].count == 10


def test_totals_round_trip_through_json():
    totals = MethodTotals(3)
    totals.add(np.array([[1.0, 0.5, 0.2], [0.8, 0.4, 0.0]]), np.array([0.3, 0.5]), 1.5, 0.5)
    again = MethodTotals.from_json(json.loads(json.dumps(totals.to_json())))
    assert again.summary() == totals.summary()
    assert totals.summary()["curve"] == [0.9, 0.45, 0.1] and totals.summary()["seconds_per_image"] == 1.0
