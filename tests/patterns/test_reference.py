"""The PatternNet authors' pattern layout: channels-first import/export on a small VGG-like model."""

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import Patterns
from pgig_tf.patterns.reference import from_reference_layout, load_reference_vgg16_patterns, to_reference_layout


@pytest.fixture
def stand_in():
    """VGG-like: two 'same' convs with max-pools to a (2, 3, 5) map, Flatten, Dropout, fc1, fc2."""
    model = keras.Sequential(
        [
            keras.Input((8, 12, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2, name="p1"),
            keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="c2"),
            keras.layers.MaxPooling2D(2, name="p2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Dense(6, activation="relu", name="fc1"),
            keras.layers.Dense(3, activation="softmax", name="fc2"),
        ],
        name="stand_in",
    )
    return set_random_weights(model, 3)


def _kernels(model):
    return {
        layer.name: layer.kernel.numpy()
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    }


def test_import_permutes_fc1_rows_from_chw_to_hwc_and_transposes_convs(stand_in):
    C, H, W = 5, 2, 3
    assert stand_in.get_layer("flatten").input.shape == (None, H, W, C)
    o, i, y, x = np.meshgrid(*map(np.arange, (4, 3, 3, 3)), indexing="ij")
    a0 = (1000.0 * o + 100 * i + 10 * y + x).astype(np.float32)  # (out, in, kh, kw)
    fc1 = np.zeros((C * H * W, 6), np.float32)
    for c in range(C):
        for h in range(H):
            for w in range(W):
                fc1[c * H * W + h * W + w] = (100 * c + 10 * h + w + 1) * np.arange(1, 7)
    reference = {"A_0": a0, "A_1": np.ones((5, 4, 3, 3), np.float32), "A_2": fc1, "A_3": np.arange(18.0).reshape(6, 3)}
    patterns = from_reference_layout(reference, stand_in)
    assert list(patterns) == ["c1", "c2", "fc1", "fc2"]
    patterns.check(stand_in)
    for c in range(C):
        for h in range(H):
            for w in range(W):
                np.testing.assert_array_equal(
                    patterns["fc1"][(h * W + w) * C + c], (100 * c + 10 * h + w + 1) * np.arange(1, 7)
                )
    assert patterns["c1"].shape == (3, 3, 3, 4)
    assert patterns["c1"][2, 1, 0, 3] == 3000 + 0 + 20 + 1  # Keras [kh, kw, in, out] = reference [out, in, kh, kw]
    np.testing.assert_array_equal(patterns["c1"], a0.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(patterns["fc2"], reference["A_3"])


def test_reference_layout_is_the_same_linear_map_under_the_reference_conventions(stand_in):
    rng = np.random.default_rng(4)
    kernels = _kernels(stand_in)
    reference = to_reference_layout(Patterns(kernels), stand_in)
    # fc1: a (C, H, W)-flattened feature map times the reference rows = Keras' (H, W, C) flatten times its kernel.
    t = rng.normal(size=(2, 2, 3, 5))
    keras_out = t.reshape(2, -1) @ kernels["fc1"]
    reference_out = t.transpose(0, 3, 1, 2).reshape(2, -1) @ reference["A_2"]
    np.testing.assert_allclose(reference_out, keras_out, rtol=1e-6, atol=1e-9)
    # c1: cross-correlation with an (out, in, kh, kw) kernel = Keras' convolution.
    z = rng.normal(size=(1, 8, 12, 3)).astype(np.float32)
    keras_conv = keras.ops.conv(z, kernels["c1"], padding="same").numpy()[0]
    padded = np.pad(z[0], ((1, 1), (1, 1), (0, 0)))
    a0 = reference["A_0"].astype(np.float64)
    manual = np.zeros((8, 12, 4))
    for dy in range(3):
        for dx in range(3):
            manual += np.einsum("yxi,oi->yxo", padded[dy : dy + 8, dx : dx + 12], a0[:, :, dy, dx])
    np.testing.assert_allclose(keras_conv, manual, rtol=1e-4, atol=1e-5)


def test_reference_round_trips_and_npz_load(stand_in, tmp_path):
    kernels = _kernels(stand_in)
    reference = to_reference_layout(Patterns(kernels), stand_in)
    assert [(k, v.shape) for k, v in reference.items()] == [
        ("A_0", (4, 3, 3, 3)),
        ("A_1", (5, 4, 3, 3)),
        ("A_2", (30, 6)),
        ("A_3", (6, 3)),
    ]
    assert not np.array_equal(reference["A_2"], kernels["fc1"])  # the rows were permuted
    back = from_reference_layout(reference, stand_in)
    assert back.kind == "relu"
    for name in kernels:
        np.testing.assert_array_equal(back[name], kernels[name])
    again = to_reference_layout(back, stand_in)
    for key in reference:
        np.testing.assert_array_equal(again[key], reference[key])
    path = tmp_path / "stand_in.patterns.A_only.npz"
    np.savez(path, **reference)
    loaded = load_reference_vgg16_patterns(path, stand_in)
    for name in kernels:
        np.testing.assert_array_equal(loaded[name], kernels[name])


def test_reference_import_validates_count_keys_and_shapes(stand_in):
    reference = to_reference_layout(Patterns(_kernels(stand_in)), stand_in)
    with pytest.raises(ValueError, match=r"A_0\.\.A_3 .*4 layers"):
        from_reference_layout({k: v for k, v in reference.items() if k != "A_3"}, stand_in)
    with pytest.raises(ValueError, match="A_0..A_3"):
        from_reference_layout({**reference, "B_0": reference["A_0"]}, stand_in)
    bad = dict(reference, A_1=reference["A_1"].transpose(2, 3, 1, 0))
    with pytest.raises(ValueError, match=r"A_1 has shape \(3, 3, 4, 5\).*'c2'.*needs \(5, 4, 3, 3\)"):
        from_reference_layout(bad, stand_in)
    with pytest.raises(ValueError, match="no pattern"):
        to_reference_layout(Patterns({"c1": _kernels(stand_in)["c1"]}), stand_in)


def test_a_damaged_reference_file_is_named_with_what_it_should_be(stand_in, tmp_path):
    from pgig_tf.files import CorruptFileError, MissingFileError

    good = tmp_path / "good.npz"
    np.savez(good, **to_reference_layout(Patterns(_kernels(stand_in)), stand_in))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(MissingFileError, match=r"missing\.npz.*A_0\.\.A_15\): there is no such file"):
        load_reference_vgg16_patterns(tmp_path / "missing.npz", stand_in)
    for path, problem in [
        (truncated, "not a complete .npz archive"),
        (empty, r"empty \(0 bytes\)"),
        (single, "one .npy array"),
        (tmp_path, "a directory"),
    ]:
        with pytest.raises(CorruptFileError, match=rf"(?s){path.name}.*{problem}.*pgig-fit-patterns"):
            load_reference_vgg16_patterns(path, stand_in)
