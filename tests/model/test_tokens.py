"""Token inputs: attributions on the Embedding output, summed per token, for every method."""

import keras
import numpy as np
import pytest

from conftest import set_random_weights
from pgig_tf import create_analyzer, fit_patterns
from pgig_tf.model.fingerprint import OtherModelWarning

VOCAB, LENGTH, DIM = 11, 6, 4

FAST = {
    "integrated_gradients": dict(steps=4),
    "pgig": dict(steps=4),
    "smoothgrad": dict(samples=3, seed=3),
    "expected_gradients": dict(samples=4, seed=3),
}


def conv_text_model(length=LENGTH):
    """int tokens -> Embedding(11, 4) -> Conv1D(5, 3, relu) -> GlobalMaxPooling1D -> Dense(2)."""
    model = keras.Sequential(
        [
            keras.Input((length,), dtype="int32", name="tokens"),
            keras.layers.Embedding(VOCAB, DIM, name="emb"),
            keras.layers.Conv1D(5, 3, activation="relu", name="conv"),
            keras.layers.GlobalMaxPooling1D(name="pool"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    return set_random_weights(model, 21)


def tail_of(model, length=LENGTH):
    """The same layers after the Embedding, on float inputs of shape (tokens, embedding dim)."""
    return keras.Sequential([keras.Input((length, DIM))] + [model.get_layer(n) for n in ("conv", "pool", "out")])


def embedded(model, tokens):
    return np.asarray(model.get_layer("emb")(tokens))


def tokens_for(n, seed, length=LENGTH):
    return np.random.default_rng(seed).integers(0, VOCAB, (n, length))


@pytest.mark.parametrize(
    "method",
    ["gradient", "guided_backprop", "pgig", "smoothgrad", "expected_gradients"],
)
def test_token_attributions_are_the_embedding_attributions_summed(method):
    """analyze(tokens) equals the method on the model after its Embedding, summed over the embedding axis."""
    model = conv_text_model()
    tail = tail_of(model)
    tokens = tokens_for(4, 0)
    kwargs, tail_kwargs = dict(FAST.get(method, {})), dict(FAST.get(method, {}))
    if method == "pgig":
        patterns = fit_patterns(model, tokens_for(30, 1), verbose=False)
        tail_patterns = fit_patterns(tail, embedded(model, tokens_for(30, 1)), verbose=False)
        assert sorted(patterns) == ["conv", "out"]
        for name in patterns:  # fitting through the Embedding sees the same layer inputs
            np.testing.assert_allclose(patterns[name], tail_patterns[name], rtol=1e-5, atol=1e-6)
        kwargs["patterns"] = patterns
        tail_kwargs.update(patterns=patterns, allow_other_model=True)  # the tail has the same kernels, no Embedding
    analyzer = create_analyzer(method, model, **kwargs)
    if method == "pgig":
        with pytest.warns(OtherModelWarning, match=r"layer 'emb' \(Embedding\) is at fit time, not here"):
            tail_analyzer = create_analyzer(method, tail, **tail_kwargs)
    else:
        tail_analyzer = create_analyzer(method, tail, **tail_kwargs)
    if method == "expected_gradients":
        analyzer.fit(tokens_for(5, 2))
        tail_analyzer.fit(embedded(model, tokens_for(5, 2)))
    result = analyzer.analyze(tokens, 1)
    expected = tail_analyzer.analyze(embedded(model, tokens), 1).sum(axis=-1)
    assert result.shape == (4, LENGTH)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0


def test_baseline_token_ids_are_embedded():
    """An integer baseline array is token ids (e.g. all padding): IG from their embedding."""
    model = conv_text_model()
    tokens = tokens_for(3, 4)
    padding = np.zeros(LENGTH, np.int32)
    result = create_analyzer("integrated_gradients", model, steps=5, baseline=padding).analyze(tokens, 0)
    pad_embedding = embedded(model, padding[None])[0]
    expected = (
        create_analyzer("integrated_gradients", tail_of(model), steps=5, baseline=pad_embedding)
        .analyze(embedded(model, tokens), 0)
        .sum(-1)
    )
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    # completeness (IG's axiom): the token scores add up to f(x) - f(padding) for a fine enough path
    fine = create_analyzer("integrated_gradients", model, steps=400, baseline=padding)
    outputs = fine.predict(tokens)[:, 0] - fine.predict(padding[None])[0, 0]
    np.testing.assert_allclose(fine.analyze(tokens, 0).sum(axis=1), outputs, rtol=0.02, atol=0.02)


def test_variable_length_inputs():
    model = conv_text_model(length=None)
    analyzer = create_analyzer("integrated_gradients", model, steps=3)
    assert analyzer.analyze(tokens_for(2, 5, length=7)).shape == (2, 7)
    assert analyzer.analyze(tokens_for(3, 6, length=9)).shape == (3, 9)


def test_tokens_and_features_with_a_nested_embedding_model():
    """A token input whose Embedding sits in a nested Sequential, next to a float input: one map per input."""
    tokens_in = keras.Input((LENGTH,), dtype="int32", name="tokens")
    features_in = keras.Input((3,), name="features")
    encoder = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, DIM, name="emb"),
            keras.layers.GlobalAveragePooling1D(),
        ],
        name="encoder",
    )
    h = keras.layers.Concatenate()([encoder(tokens_in), features_in])
    model = set_random_weights(keras.Model([tokens_in, features_in], keras.layers.Dense(2, name="out")(h)), 2)
    tokens, features = tokens_for(2, 7), np.ones((2, 3), np.float32)
    scores, feature_scores = create_analyzer("input_t_gradient", model).analyze([tokens, features], 1)
    kernel = model.get_layer("out").kernel.numpy()[:, 1]
    vectors = embedded(model.get_layer("encoder"), tokens)  # (2, LENGTH, DIM)
    # Gradient x Input of a linear model: each token's vector times its share (1/LENGTH) of the kernel
    np.testing.assert_allclose(scores, (vectors * kernel[:DIM] / LENGTH).sum(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feature_scores, features * kernel[DIM:], rtol=1e-6)


def test_text_example_finds_the_key_token():
    """The README example: a model trained to detect token 7 gives it the largest IG score."""
    keras.utils.set_random_seed(0)
    vocab, length, key = 20, 12, 7
    rng = np.random.default_rng(0)

    def make(n):
        tokens = rng.integers(1, vocab, (n, length))
        tokens[tokens == key] = 1
        labels = rng.random(n) < 0.5
        tokens[labels, rng.integers(0, length, labels.sum())] = key
        return tokens, labels.astype("int32")

    tokens, labels = make(600)
    model = keras.Sequential(
        [
            keras.Input((length,), dtype="int32"),
            keras.layers.Embedding(vocab, 8),
            keras.layers.Conv1D(8, 3, padding="same", activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(2),  # logits
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(tokens, labels, epochs=10, batch_size=32, verbose=0)

    test_tokens, test_labels = make(100)
    positive = test_tokens[test_labels == 1]
    scores = create_analyzer("integrated_gradients", model).analyze(positive, neuron_selection=1)
    assert scores.shape == positive.shape
    np.testing.assert_array_equal(positive[np.arange(len(positive)), scores.argmax(axis=1)], key)


def test_token_errors():
    model = conv_text_model()
    analyzer = create_analyzer("gradient", model)
    with pytest.raises(
        ValueError,
        match=r"x holds token ids for Embedding 'emb' \(Embedding\): integers in "
        r"\[0, 11\) \(its input_dim\), got 11 \(sample 1\)",
    ):
        analyzer.analyze(np.array([[0] * LENGTH, [11] + [0] * (LENGTH - 1)]))
    with pytest.raises(
        ValueError,
        match=r"x holds token ids for Embedding 'emb' \(Embedding\), which must be whole "
        r"numbers; got 0.5 \(sample 0\)",
    ):
        analyzer.analyze(np.full((1, LENGTH), 0.5))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\), got \(1, 5\)"):
        analyzer.analyze(np.zeros((1, 5), np.int32))
    # float token ids with whole values are accepted (a float32 keras.Input feeding an Embedding)
    np.testing.assert_array_equal(
        analyzer.analyze(np.ones((1, LENGTH), np.float32), 0), analyzer.analyze(np.ones((1, LENGTH), np.int64), 0)
    )


def test_models_that_cannot_be_explained_on_tokens():
    masked = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, DIM, mask_zero=True, name="emb"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match=r"Embedding 'emb' \(Embedding\) on input '.*' has mask_zero=True"):
        create_analyzer("integrated_gradients", masked)
    ints = keras.Input((3,), dtype="int32", name="counts")
    dense = keras.Model(ints, keras.layers.Dense(2)(ints))
    with pytest.raises(ValueError, match=r"Input 'counts' has dtype int32 and does not feed exactly one Embedding"):
        create_analyzer("gradient", dense)


def test_the_integer_baseline_must_be_token_ids_of_one_sample():
    with pytest.raises(ValueError, match=r"baseline \(token ids\) must have shape \(batch, 6\), got \(1, 5\)"):
        create_analyzer("integrated_gradients", conv_text_model(), baseline=np.zeros(5, np.int32))
