"""Several devices (tf.distribute): 2 logical CPUs in a fresh process give one device's maps and patterns; errors.

Also saving and loading with a strategy.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import pgig_tf
from conftest import distribute_checks
from pgig_tf import create_analyzer, load_analyzer
from pgig_tf.data import shard_bounds, shard_sizes
from pgig_tf.model.distribute import make_strategy


@pytest.fixture(scope="module")
def two_replicas():
    """The measurements of distribute_checks.py on 2 logical CPU devices (one subprocess for all, see conftest)."""
    code, out, err = distribute_checks().result(timeout=600)
    assert code == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_the_checks_ran_on_two_replicas(two_replicas):
    assert two_replicas["replicas"] == 2


@pytest.mark.parametrize("name", ["integrated_gradients", "pgig", "smoothgrad", "vargrad", "expected_gradients"])
def test_shards_give_one_devices_maps(two_replicas, name):
    # 5 samples: shards of 3 and 2; 1 sample: the second replica gets none. Random methods key
    # their noise on the sample's index in the whole call, so the draws are the same.
    assert two_replicas[f"{name} n=5"] < 1e-5
    assert two_replicas[f"{name} n=1"] < 1e-5
    assert two_replicas[f"{name} traces"] == 1  # batches of 5, 1 and 3 samples share one trace


def test_other_noise_would_show(two_replicas):
    assert two_replicas["smoothgrad other seed"] > 1e-2  # so the comparison above can fail


def test_speed_options_with_a_strategy(two_replicas):
    assert two_replicas["bfloat16 pgig"] < 1e-5
    assert two_replicas["model dtype after bfloat16"] == "float32"
    assert "strategy.scope()" in two_replicas["jit outside scope error"]
    assert two_replicas["mirrored names"] is True
    assert two_replicas["jit mirrored integrated_gradients"] < 1e-5
    assert two_replicas["jit mirrored smoothgrad n=1"] < 1e-5
    assert two_replicas["mirrored pgig"] < 1e-5


def test_fit_patterns_with_a_strategy(two_replicas):
    assert two_replicas["fit 23 samples, batches of 8"] < 1e-5
    assert two_replicas["fit 23 samples, batches of 8 num_samples"] == [23, 23]
    assert two_replicas["fit 1 sample"] < 1e-5
    assert two_replicas["fit 1 sample num_samples"] == [1, 1]
    assert two_replicas["analyzer.fit"] < 1e-5
    assert two_replicas["fit resumed"] < 1e-5  # a checkpoint of 2 batches, then the third batch


def test_degradation_benchmark_replicas(two_replicas):
    assert two_replicas["cli curves"] < 1e-5
    assert two_replicas["cli replicas"] == [1, 2]


def test_shard_sizes_are_contiguous_and_balanced():
    assert [int(s) for s in shard_sizes(tf.constant(5), 2)] == [3, 2]
    assert [int(s) for s in shard_sizes(tf.constant(1), 2)] == [1, 0]
    assert [int(s) for s in shard_sizes(tf.constant(7), 3)] == [3, 2, 2]
    assert [shard_bounds(7, 3, i) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [shard_bounds(2, 3, i) for i in range(3)] == [(0, 1), (1, 2), (2, 2)]


def test_shards_of_whole_blocks_start_at_a_block_and_partition_the_items():
    assert [shard_bounds(12, 2, i, 4) for i in range(2)] == [(0, 8), (8, 12)]  # 3 blocks: 2 and 1
    assert [shard_bounds(359, 2, i, 32) for i in range(2)] == [(0, 192), (192, 359)]  # 12 blocks, the last short
    assert [shard_bounds(5, 3, i, 4) for i in range(3)] == [(0, 4), (4, 5), (5, 5)]  # 2 blocks for 3 shards
    rng = np.random.default_rng(0)
    for _ in range(200):
        count, num_shards, block = int(rng.integers(0, 60)), int(rng.integers(1, 7)), int(rng.integers(1, 9))
        bounds = [shard_bounds(count, num_shards, i, block) for i in range(num_shards)]
        assert bounds[0][0] == 0 and bounds[-1][1] == count
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
        assert all(start % block == 0 or start == count for start, _ in bounds)
        assert [shard_bounds(count, num_shards, i, 1) for i in range(num_shards)] == [
            shard_bounds(count, num_shards, i) for i in range(num_shards)
        ]


def test_one_replica_strategy_in_process_equals_no_strategy(conv_model, dense_model):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x = np.random.default_rng(3).normal(size=(3, 9, 9, 2)).astype(np.float32)
    for name, kwargs in (("integrated_gradients", {"steps": 4}), ("smooth_taylor", {"samples": 3, "seed": 5})):
        expected = create_analyzer(name, conv_model, **kwargs).analyze(x, neuron_selection=[0, 1, 2])
        got = create_analyzer(name, conv_model, strategy=strategy, **kwargs).analyze(x, neuron_selection=[0, 1, 2])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
    data = np.random.default_rng(4).normal(size=(10, 6)).astype(np.float32)
    one, two = (
        pgig_tf.fit_patterns(dense_model, data, batch_size=4, verbose=False, strategy=s) for s in (None, strategy)
    )
    for layer in one:
        np.testing.assert_allclose(two[layer], one[layer], rtol=1e-6)


def test_save_leaves_the_strategy_out_and_load_takes_one(conv_model, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x = np.random.default_rng(5).normal(size=(2, 9, 9, 2)).astype(np.float32)
    analyzer = create_analyzer("smoothgrad", conv_model, samples=3, seed=2, strategy=strategy)
    expected = analyzer.analyze(x, neuron_selection=1)
    analyzer.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as data:
        header = json.loads(str(data["__pgig_tf_analyzer__"]))
    assert "strategy" not in header["settings"] and header["settings"]["seed"] == 2
    plain = load_analyzer(tmp_path / "a.npz", conv_model)
    assert plain.strategy is None
    np.testing.assert_array_equal(plain.analyze(x, neuron_selection=1), expected)
    again = load_analyzer(tmp_path / "a.npz", conv_model, strategy=strategy)
    assert again.strategy is strategy
    np.testing.assert_array_equal(again.analyze(x, neuron_selection=1), expected)


def test_a_strategy_that_is_not_one(dense_model):
    with pytest.raises(TypeError, match="strategy must be a tf.distribute.Strategy .* got str"):
        create_analyzer("gradient", dense_model, strategy="mirrored")
    with pytest.raises(TypeError, match="strategy must be a tf.distribute.Strategy"):
        pgig_tf.fit_patterns(dense_model, np.zeros((2, 6), np.float32), verbose=False, strategy=2)


def test_make_strategy_after_tensorflow_started():
    if len(tf.config.list_physical_devices("GPU")) >= 2:
        pytest.skip("with 2 GPUs make_strategy(2) uses them and needs no logical CPU devices")
    tf.constant(0.0)  # TensorFlow has initialised its devices in this process
    with pytest.raises(
        RuntimeError,
        match=r"2 logical CPU devices are needed, but TensorFlow has already "
        r"initialised its devices with 1 CPU device.*make_strategy\(2\)",
    ):
        make_strategy(2)
    with pytest.raises(ValueError, match="replicas must be a positive integer, got 0"):
        make_strategy(0)
    assert make_strategy(1).num_replicas_in_sync == 1


def test_replicas_flag_is_checked():
    from pgig_tf.cli import degradation_benchmark as cli

    with pytest.raises(SystemExit):
        cli.parse_args(["--replicas", "0"])
    assert cli.parse_args([]).replicas == 1
