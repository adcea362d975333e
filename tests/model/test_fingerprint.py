"""Model fingerprints: what they record, that a rebuilt or nested copy matches, and how each difference is named."""

import json

import keras
import numpy as np

from conftest import set_random_weights
from pgig_tf.model import fingerprint as F


def dense(activation="relu", width=5, relu_layer=None, seed=0):
    layers = [keras.Input((6,)), keras.layers.Dense(width, activation=activation, name="d1")]
    if relu_layer is not None:
        layers.append(relu_layer)
    layers += [keras.layers.Dense(3, name="out")]
    return set_random_weights(keras.Sequential(layers), seed)


def test_the_fingerprint_records_each_layer_and_a_hash_of_its_weights():
    model = dense(relu_layer=keras.layers.ReLU(6.0, name="r"))
    fingerprint = F.model_fingerprint(model)
    assert json.loads(json.dumps(fingerprint)) == fingerprint  # JSON as it is
    layers = fingerprint["layers"]
    assert [(e["name"], e["class"], e.get("kernel"), e.get("activation")) for e in layers] == [
        ("d1", "Dense", [6, 5], "relu"),
        ("r", "ReLU", None, "relu(max_value=6)"),
        ("out", "Dense", [5, 3], "linear"),
    ]
    assert "weights" not in layers[1] and all(len(layers[i]["weights"]) == 64 for i in (0, 2))
    assert F.model_fingerprint(dense(relu_layer=keras.layers.ReLU(6.0, name="r"))) == fingerprint  # rebuilt alike
    nested = keras.Sequential(
        [
            keras.Input((6,)),
            keras.Sequential([keras.Input((6,)), model.get_layer("d1"), model.get_layer("r")], name="block"),
            model.get_layer("out"),
        ]
    )
    assert F.model_fingerprint(nested) == fingerprint  # nesting is no difference: the same leaf layers


def test_each_kind_of_difference_is_named():
    saved = F.model_fingerprint(dense())
    assert F.fingerprint_differences(saved, saved) == []
    assert F.fingerprint_differences(saved, F.model_fingerprint(dense(seed=1)), "in the file") == [
        "layer 'd1' weights differ",
        "layer 'out' weights differ",
    ]
    assert F.fingerprint_differences(saved, F.model_fingerprint(dense(activation="tanh")), "in the file") == [
        "activation of 'd1' is tanh here, relu in the file"
    ]
    assert F.fingerprint_differences(saved, F.model_fingerprint(dense(width=4)), "at fit time") == [
        "kernel of 'd1' has shape (6, 4) here, (6, 5) at fit time",
        "kernel of 'out' has shape (4, 3) here, (5, 3) at fit time",
    ]
    with_relu = F.model_fingerprint(dense(relu_layer=keras.layers.ReLU(name="r")))
    assert F.fingerprint_differences(saved, with_relu, "there") == ["layer 'r' (ReLU) is here, not there"]
    assert F.fingerprint_differences(with_relu, saved, "there") == ["layer 'r' (ReLU) is there, not here"]
    renamed = {"version": 1, "layers": [{**e, "class": "Conv2D"} if e["name"] == "d1" else e for e in saved["layers"]]}
    assert F.fingerprint_differences(renamed, saved, "there") == ["layer 'd1' is a Dense here, a Conv2D there"]
    assert F.fingerprint_differences({"version": 9, "layers": []}, saved, "there") == [
        "the model fingerprint there is of version 9, this pgig_tf compares version 1 only"
    ]


def test_a_model_is_hashed_once_inside_cached_fingerprints(monkeypatch):
    model = dense()
    calls = []
    original = F._weights_sha256
    monkeypatch.setattr(F, "_weights_sha256", lambda layer: calls.append(layer.name) or original(layer))
    with F.cached_fingerprints():
        first = F.model_fingerprint(model)
        assert F.model_fingerprint(model) is first
        with F.cached_fingerprints():  # nested blocks share the outer cache
            F.model_fingerprint(model)
    assert calls == ["d1", "out"]
    model.get_layer("d1").kernel.assign(np.zeros((6, 5), np.float32))
    assert F.model_fingerprint(model) != first and calls == ["d1", "out", "d1", "out"]  # outside: hashed anew
