"""The benchmark runner: totals equal a direct computation, restarts lose and redo nothing, shards merge exactly,
damaged or foreign checkpoints are refused."""

import json

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import create_analyzer
from pgig_tf.evaluation.benchmark import (
    CHECKPOINT_FORMAT,
    MethodTotals,
    load_state,
    merge_states,
    pairwise_differences,
    run_benchmark,
    state_path,
)
from pgig_tf.evaluation.degradation import Degrader, aupc
from pgig_tf.evaluation.perturbation import PerturbationCurves
from pgig_tf.evaluation.smoothness import autvc
from pgig_tf.evaluation.statistics import bootstrap_ci
from pgig_tf.files import CorruptFileError


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

    def analyze(self, x, neuron_selection, first_index=0):
        self.images += len(x)
        return self.inner.analyze(x, neuron_selection, first_index=first_index)


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
        # the kept examples: of the first batch (4 images), the first image of each predicted class
        predicted = model.predict(images[:4], verbose=0).argmax(1)
        firsts = [i for i in range(4) if predicted[i] not in predicted[:i]]
        chosen = sorted((firsts + [i for i in range(4) if i not in firsts])[:2])
        np.testing.assert_array_equal(examples[name], maps[chosen])
        np.testing.assert_array_equal(examples["__predictions__"], predicted[chosen])
        np.testing.assert_array_equal(examples["__images__"], images[chosen])
        assert "__labels__" not in examples  # no true labels were given


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
    totals = MethodTotals(3, lerf=True)
    totals.add(
        np.array([[1.0, 0.5, 0.2], [0.8, 0.4, 0.0]]),
        np.array([0.3, 0.5]),
        1.5,
        0.5,
        lerf_curves=np.array([[1.0, 0.9, 0.2], [0.8, 0.8, 0.0]]),
    )
    again = MethodTotals.from_json(json.loads(json.dumps(totals.to_json())))
    assert again.summary() == totals.summary()
    summary = totals.summary()
    assert summary["curve"] == [0.9, 0.45, 0.1] and summary["seconds_per_image"] == 1.0
    # MoRF areas 1.1 and 0.8, LeRF areas 1.5 and 1.2: the means' areas and SRG = LeRF - MoRF
    assert summary["aupc"] == pytest.approx(0.95) and summary["lerf_auc"] == pytest.approx(1.35)
    assert summary["srg"] == pytest.approx(0.4)
    assert summary["srg_ci"] == pytest.approx([0.4, 0.4])  # both images have SRG 0.4: every resample too
    assert summary["aupc_ci"][0] >= 0.8 and summary["aupc_ci"][1] <= 1.1


def test_examples_show_as_many_classes_as_possible():
    from pgig_tf.evaluation.benchmark import choose_examples

    assert choose_examples([6, 6, 2, 6, 5, 2, 1, 9, 0, 3], 6) == [0, 2, 4, 6, 7, 8]
    assert choose_examples([4, 4, 4, 7, 4], 3) == [0, 1, 3]  # two classes: the earliest others fill up
    assert choose_examples([1, 2], 6) == [0, 1]


def test_true_labels_choose_the_examples_and_are_kept(setting, tmp_path):
    model, images, degrader = setting
    labels = np.array([3, 3, 1, 3, 0, 2, 2, 1, 0, 3])
    batches = ((images[i : i + 5], None, labels[i : i + 5]) for i in range(0, 10, 5))
    state, examples = run_benchmark(
        {"g": create_analyzer("gradient", model)},
        degrader,
        batches,
        2,
        str(tmp_path / "s.json"),
        {"a": 1},
        keep_examples=3,
        verbose=False,
    )
    np.testing.assert_array_equal(examples["__labels__"], [3, 1, 0])
    np.testing.assert_array_equal(examples["__images__"], images[[0, 2, 4]])
    np.testing.assert_array_equal(examples["__predictions__"], model.predict(images[[0, 2, 4]], verbose=0).argmax(1))
    assert state["num_batches"] == 2 and state["totals"]["g"].count == 10


@pytest.fixture
def both_orders(setting):
    model, images, _ = setting
    return tuple(
        PerturbationCurves(model, order, "road", patch_size=3, num_steps=16, road_noise=0.05, seed=3)
        for order in ("morf", "lerf")
    )


def test_lerf_areas_srg_and_their_intervals_match_a_direct_computation(setting, both_orders, tmp_path):
    model, images, _ = setting
    morf, lerf = both_orders
    analyzer = create_analyzer("smoothgrad", model, samples=3, seed=2)
    state, _ = run_benchmark(
        {"sg": analyzer}, morf, batches_of(images, 4), 3, str(tmp_path / "s.json"), {"a": 1}, lerf=lerf, verbose=False
    )
    maps = analyzer.analyze(images)
    morf_curves, lerf_curves = morf.curves(images, maps).values, lerf.curves(images, maps).values
    totals = state["totals"]["sg"]
    np.testing.assert_allclose(totals.aupc_values, aupc(morf_curves), rtol=1e-6)
    np.testing.assert_allclose(totals.lerf_values, aupc(lerf_curves), rtol=1e-6)
    summary = totals.summary()
    assert summary["srg"] == pytest.approx(aupc(lerf_curves.mean(0)) - aupc(morf_curves.mean(0)), rel=1e-6)
    _, low, high = bootstrap_ci(aupc(lerf_curves) - aupc(morf_curves), 0.95, 1000, 0)
    assert summary["srg_ci"] == pytest.approx([low, high], rel=1e-6)
    np.testing.assert_allclose(summary["lerf_curve"], lerf_curves.mean(0), rtol=1e-6)


def test_shards_with_their_first_index_equal_one_run_for_sampling_methods(setting, both_orders, tmp_path):
    """Noise and ROAD draws are keyed by the image's global index: shards [0, 5) and [5, 10) give one run's values."""
    model, images, _ = setting
    morf, lerf = both_orders

    def analyzers():
        return {
            "sg": create_analyzer("smoothgrad", model, samples=3, seed=2),
            "random": create_analyzer("random", model, seed=2),
        }

    whole, _ = run_benchmark(
        analyzers(), morf, batches_of(images, 3), 4, str(tmp_path / "w.json"), {"a": 1}, lerf=lerf, verbose=False
    )
    paths = [state_path(str(tmp_path), index, 2) for index in range(2)]
    for index, start in enumerate((0, 5)):
        part = images[start : start + 5]
        run_benchmark(
            analyzers(),
            morf,
            batches_of(part, 3),
            2,
            paths[index],
            {"a": 1},
            lerf=lerf,
            first_index=start,
            verbose=False,
        )
    _, totals = merge_states(paths)
    for name in ("sg", "random"):
        np.testing.assert_allclose(totals[name].aupc_values, whole["totals"][name].aupc_values, rtol=1e-5)
        np.testing.assert_allclose(totals[name].lerf_values, whole["totals"][name].lerf_values, rtol=1e-5)
    # without the shard's first index the second shard repeats the first images' draws
    run_benchmark(
        analyzers(), morf, batches_of(images[5:], 3), 2, str(tmp_path / "x.json"), {"a": 1}, lerf=lerf, verbose=False
    )
    unkeyed = load_state(str(tmp_path / "x.json"), {"a": 1})["totals"]["random"].aupc_values
    assert not np.allclose(unkeyed, whole["totals"]["random"].aupc_values[5:], rtol=1e-3)


def test_merge_refuses_an_unfinished_shard(setting, tmp_path):
    model, images, degrader = setting
    paths = [state_path(str(tmp_path), index, 2) for index in range(2)]
    run_benchmark(
        {"g": create_analyzer("gradient", model)},
        degrader,
        batches_of(images[:5], 5),
        1,
        paths[0],
        {"a": 1},
        verbose=False,
    )
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(images[5:], 2, fail_after=2),
            3,
            paths[1],
            {"a": 1},
            checkpoint_every=1,
            verbose=False,
        )
    with pytest.raises(ValueError, match=r"unfinished shards cannot be merged: .*shard1of2.json \(2 of 3 batches\)"):
        merge_states(paths)


def test_resuming_with_other_data_or_another_model_is_refused(setting, tmp_path):
    model, images, degrader = setting
    path = str(tmp_path / "s.json")
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(images, 2, fail_after=2),
            5,
            path,
            {"a": 1},
            checkpoint_every=1,
            identity={"model_sha256": "aa"},
            verbose=False,
        )
    with pytest.raises(ValueError, match="batch 1's images differ from those .* counted: the data changed since"):
        other = images.copy()
        other[3, 0, 0, 0] += 1.0
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(other, 2),
            5,
            path,
            {"a": 1},
            identity={"model_sha256": "aa"},
            verbose=False,
        )
    with pytest.raises(
        ValueError, match="written by a run with another model_sha256 \\(model_sha256: 'aa' there, 'bb'"
    ):
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(images, 2),
            5,
            path,
            {"a": 1},
            identity={"model_sha256": "bb"},
            verbose=False,
        )
    with pytest.raises(ValueError, match="written by a run of 5 batches; this run has 4"):
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(images[:8], 2),
            4,
            path,
            {"a": 1},
            identity={"model_sha256": "aa"},
            verbose=False,
        )


@pytest.fixture(scope="module")
def checkpoint_text(tmp_path_factory):
    """The text of a finished two-method checkpoint with both orders (written once per module)."""
    model = set_random_weights(
        keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]),
        1,
        0.3,
    )
    images = np.random.default_rng(0).normal(0, 1, (10, 6, 6, 1)).astype(np.float32)
    morf, lerf = (PerturbationCurves(model, order, patch_size=3, num_steps=4) for order in ("morf", "lerf"))
    path = tmp_path_factory.mktemp("checkpoint") / "state.json"
    analyzers = {"g": create_analyzer("gradient", model), "ig": create_analyzer("integrated_gradients", model, steps=2)}
    run_benchmark(
        analyzers, morf, batches_of(images, 5), 2, str(path), {"methods": ["g", "ig"]}, lerf=lerf, verbose=False
    )
    return path.read_text()


@pytest.fixture
def finished_checkpoint(checkpoint_text, tmp_path):
    path = tmp_path / "state.json"
    path.write_text(checkpoint_text)
    return path, {"methods": ["g", "ig"]}


def damage(data, how):
    totals = data["totals"]
    if how == "nan_sum":
        totals["g"]["curve_sum"][3] = float("nan")
    elif how == "missing_method":
        del totals["ig"]
    elif how == "count":
        totals["g"]["count"] = 15
    elif how == "areas_disagree_with_sums":
        totals["g"]["aupc_values"][0] += 0.5
    elif how == "missing_key":
        del totals["ig"]["lerf_sum"]
    elif how == "format":
        data["format"] = 1
    elif how == "batches_done":
        data["batches_done"] = 3
    return data


DAMAGES = {
    "nan_sum": "the totals of 'g' are damaged: 'curve_sum' contains NaN or Inf",
    "missing_method": r"its totals lack the methods \['ig'\]",
    "count": r"'count' says 15 images but there are 10 MoRF",
    "areas_disagree_with_sums": "the per-image areas add up to .* but the curve sums give",
    "missing_key": r"totals have missing entries \['lerf_sum'\]",
    "format": f"it has checkpoint format 1, this version reads {CHECKPOINT_FORMAT}",
    "batches_done": "it counts 3 batches done of 2",
}


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_refused_with_its_name_and_the_problem(finished_checkpoint, how):
    path, fingerprint = finished_checkpoint
    path.write_text(json.dumps(damage(json.loads(path.read_text()), how)))
    with pytest.raises(
        CorruptFileError, match=f"{path.name}.* cannot be read as a degradation benchmark checkpoint.*{DAMAGES[how]}"
    ):
        load_state(str(path), fingerprint)


@pytest.mark.parametrize("cut", [0, 1, 100, -3])
def test_a_truncated_checkpoint_is_refused(finished_checkpoint, cut):
    path, fingerprint = finished_checkpoint
    text = path.read_text()
    path.write_text(text[:cut] if cut >= 0 else text[:cut] + "\x00")
    with pytest.raises(CorruptFileError, match="it is not complete JSON.* run again with --fresh"):
        load_state(str(path), fingerprint)


def test_the_batches_must_be_as_many_as_announced(setting, tmp_path):
    model, images, degrader = setting
    with pytest.raises(ValueError, match="the batches ended after 2 of the 3 announced"):
        run_benchmark(
            {"g": create_analyzer("gradient", model)},
            degrader,
            batches_of(images, 5),
            3,
            str(tmp_path / "s.json"),
            {},
            verbose=False,
        )


def test_pairwise_differences_are_paired_bootstrap_intervals():
    a, b = MethodTotals(2, lerf=True), MethodTotals(2, lerf=True)
    rng = np.random.default_rng(0)
    morf = rng.random((40, 2))
    a.add(morf, np.zeros(40), 0, 0, lerf_curves=morf + 1.0)  # SRG 1 per image
    b.add(morf, np.zeros(40), 0, 0, lerf_curves=morf + rng.random((40, 1)))
    (pair,) = pairwise_differences({"b": b, "a": a}, "srg")
    assert pair["methods"] == ["a", "b"]
    srg_b = b.per_image("srg")
    assert pair["difference"] == pytest.approx(np.mean(1.0 - srg_b))
    _, low, high = bootstrap_ci(1.0 - srg_b, 0.95, 1000, 0)
    assert pair["ci"] == pytest.approx([low, high]) and pair["excludes_zero"] == (low > 0 or high < 0)
