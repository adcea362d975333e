"""The ground-truth dataset: seeded determinism, masks that match the drawn pixels, and the cached CNN."""

import numpy as np
import pytest

from pgig_tf.datasets import ground_truth as gt


@pytest.fixture(scope="module")
def data():
    return gt.make_ground_truth_data(400, seed=3)


def test_same_seed_same_arrays_other_seed_other_arrays(data):
    again = gt.make_ground_truth_data(400, seed=3)
    for name, array in data._asdict().items():
        np.testing.assert_array_equal(array, getattr(again, name), err_msg=name)
    other = gt.make_ground_truth_data(400, seed=4)
    assert not np.array_equal(data.images, other.images)
    assert data.images.shape == (400, 32, 32, 1) and data.images.dtype == np.float32
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0


def test_signal_is_the_class_shape_and_zero_outside_its_mask(data):
    assert np.all(data.signal[~data.signal_masks] == 0)
    assert np.all(data.signal[data.signal_masks] >= gt.SIGNAL_AMPLITUDE[0])
    for signal_mask, label, signal in zip(data.signal_masks, data.labels, data.signal):
        rows, cols = np.nonzero(signal_mask)
        top, left = rows.min(), cols.min()
        box = signal_mask[top : top + gt.SHAPE_SIZE, left : left + gt.SHAPE_SIZE]
        np.testing.assert_array_equal(box, gt.class_shape(label))
        assert len(np.unique(signal[signal_mask])) == 1  # one amplitude per shape
    np.testing.assert_array_equal(np.bincount(data.labels), [100] * 4)  # balanced classes


def test_distractor_is_decoys_plus_field_and_decoys_vanish_outside_its_mask(data):
    assert np.all(data.decoys[~data.distractor_masks] == 0)
    assert np.all(data.decoys[data.distractor_masks] >= gt.DECOY_AMPLITUDE[0])
    np.testing.assert_allclose(data.distractor, data.decoys + data.field, atol=1e-6)
    assert data.field.min() >= -gt.FIELD_AMPLITUDE - 1e-6 and data.field.max() <= gt.FIELD_AMPLITUDE + 1e-6
    noise = data.images[..., 0] - (data.signal + data.distractor)
    assert np.abs(noise).max() <= gt.NOISE_LIMIT + 1e-5
    assert 0.01 < noise.std() < 0.03  # the small pixel noise is there
    areas = data.distractor_masks.sum(axis=(1, 2))
    assert areas.min() >= 16 and areas.max() <= 2 * 16  # two decoys of 16 pixels each, possibly overlapping


def test_decoys_overlap_the_signal_often_and_carry_no_class(data):
    overlap = np.any(data.signal_masks & data.distractor_masks, axis=(1, 2))
    assert 0.4 < overlap.mean() < 0.9
    # the decoys' area does not depend on the class (two-sided: every class within 2 px of the mean)
    areas = data.distractor_masks.sum(axis=(1, 2))
    per_class = [areas[data.labels == label].mean() for label in range(4)]
    assert max(per_class) - min(per_class) < 2.0
    for kind in range(3):  # no decoy stencil equals a class stencil
        assert all(
            gt.decoy_shape(kind).shape != gt.class_shape(label).shape
            or not np.array_equal(gt.decoy_shape(kind), gt.class_shape(label))
            for label in range(4)
        )


def test_errors():
    with pytest.raises(ValueError):
        gt.make_ground_truth_data(0)
    with pytest.raises(ValueError):
        gt.class_shape(4)
    with pytest.raises(ValueError):
        gt.decoy_shape(3)


def test_trained_cnn_is_cached(tmp_path):
    model, accuracy, (train, test) = gt.trained_ground_truth_cnn(
        str(tmp_path), num_train=64, num_test=16, epochs=1, verbose=False
    )
    assert model.output_shape == (None, 4) and len(train.images) == 64 and len(test.images) == 16
    assert accuracy == np.mean(model.predict(test.images, verbose=0).argmax(1) == test.labels)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [
        "ground_truth_cnn_seed0_train64_epochs1.keras",
        "ground_truth_cnn_seed0_train64_epochs1.keras.json",
    ]
    cached, cached_accuracy, _ = gt.trained_ground_truth_cnn(
        str(tmp_path), num_train=64, num_test=16, epochs=1, verbose=False
    )
    assert cached_accuracy == accuracy
    for a, b in zip(model.get_weights(), cached.get_weights()):
        np.testing.assert_array_equal(a, b)
    stamp = (tmp_path / files[0]).stat().st_mtime_ns
    _, other_accuracy, (_, bigger) = gt.trained_ground_truth_cnn(
        str(tmp_path), num_train=64, num_test=32, epochs=1, verbose=False
    )
    assert len(bigger.images) == 32 and sorted(path.name for path in tmp_path.iterdir()) == files
    assert (tmp_path / files[0]).stat().st_mtime_ns == stamp  # loaded, not retrained
    assert other_accuracy == np.mean(cached.predict(bigger.images, verbose=0).argmax(1) == bigger.labels)
