"""`analyze` on a tf.data.Dataset or a keras PyDataset: batch by batch, with the maps and draws of one call."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pgig_tf import create_analyzer

METHODS = {
    "gradient": {},
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3, "seed": 4},
    "noise_baseline_ig": {"steps": 3, "samples": 2, "seed": 1},
    "smooth_taylor": {"samples": 3, "seed": 2},
}


@pytest.fixture
def images(rng):
    return rng.normal(size=(11, 6)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_batched_dataset_of_pairs_gives_the_maps_of_one_call(name, dense_model, images):
    analyzer = create_analyzer(name, dense_model, **METHODS[name])
    whole = analyzer.analyze(images, neuron_selection=2)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(11))).batch(4)  # (x, y): x is explained
    streamed = analyzer.analyze(dataset, neuron_selection=2)
    # the noise is keyed by the sample's index in the stream; other batch shapes change only float rounding
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    other_seed = create_analyzer(name, dense_model, **dict(METHODS[name], seed=99)) if "seed" in METHODS[name] else None
    if other_seed is not None:  # a check that could fail: other draws differ far beyond rounding
        assert np.abs(other_seed.analyze(dataset, neuron_selection=2) - whole).max() > 1e-3 * np.abs(whole).max()


def test_an_unbatched_dataset_is_batched_and_max_activation_is_per_sample(dense_model, images):
    analyzer = create_analyzer("integrated_gradients", dense_model, steps=3, batch_size=5)
    whole = analyzer.analyze(images)
    np.testing.assert_allclose(
        analyzer.analyze(tf.data.Dataset.from_tensor_slices(images)), whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max()
    )


def test_one_index_per_sample_is_split_over_the_batches(dense_model, images):
    targets = np.arange(11) % 3
    analyzer = create_analyzer("gradient", dense_model)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(5)
    whole = analyzer.analyze(images, targets)
    np.testing.assert_allclose(analyzer.analyze(dataset, targets), whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    with pytest.raises(ValueError, match=r"neuron_selection has 10 indices but x has more samples"):
        analyzer.analyze(dataset, targets[:10])
    with pytest.raises(ValueError, match=r"neuron_selection has 12 indices but x has 11 samples"):
        analyzer.analyze(dataset, np.arange(12) % 3)
    with pytest.raises(ValueError, match=r"neuron_selection has 4 indices but x has more samples"):
        analyzer.analyze(dataset, targets[:4])


def test_a_keras_py_dataset_streams_its_batches(dense_model, images):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return images[4 * index : 4 * index + 4], np.zeros(len(images[4 * index : 4 * index + 4]))

    analyzer = create_analyzer("smoothgrad", dense_model, samples=2, seed=9)
    whole = analyzer.analyze(images, 1)
    np.testing.assert_allclose(analyzer.analyze(Batches(), 1), whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())


def test_an_empty_dataset_is_an_error(dense_model):
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 6), np.float32)).batch(2)
    with pytest.raises(ValueError, match="x is an empty dataset"):
        create_analyzer("gradient", dense_model).analyze(empty)


def test_memory_is_bounded_by_the_batch_not_the_dataset(dense_model):
    """A generator dataset of 20,000 samples: only one batch is ever materialised as model input."""
    seen = []

    def generate():
        rng = np.random.default_rng(0)
        for _ in range(40):
            batch = rng.normal(size=(500, 6)).astype(np.float32)
            seen.append(len(batch))
            yield batch

    dataset = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((None, 6), tf.float32))
    analyzer = create_analyzer("gradient", dense_model)
    sizes = []
    original = analyzer._analyze_checked
    analyzer._analyze_checked = lambda batch, *args: sizes.append(batch.num_samples) or original(batch, *args)
    maps = analyzer.analyze(dataset, neuron_selection=0)
    assert maps.shape == (20000, 6) and sizes == [500] * 40 and sum(seen) == 20000
