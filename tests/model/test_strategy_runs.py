"""A strategy given to an analyzer or to fit_patterns is the one that runs their compiled loops."""

import numpy as np
import pytest
import tensorflow as tf

import pgig_tf
from pgig_tf import create_analyzer


@pytest.fixture
def counted_strategy(monkeypatch):
    """A one-device MirroredStrategy whose `run` counts its calls (one per trace of a distributed loop)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    calls = []
    run = strategy.run

    def counted(fn, args=(), kwargs=None, options=None):
        calls.append(fn)
        return run(fn, args=args, kwargs=kwargs, options=options)

    monkeypatch.setattr(strategy, "run", counted)
    return strategy, calls


def test_an_analyzer_runs_its_loop_through_the_strategy(dense_model, counted_strategy):
    strategy, calls = counted_strategy
    x = np.random.default_rng(7).normal(size=(3, 6)).astype(np.float32)
    analyzer = create_analyzer("integrated_gradients", dense_model, steps=4, strategy=strategy)
    maps = analyzer.analyze(x, 1)
    analyzer.analyze(x[:2], 1)  # another batch size: the same trace
    assert len(calls) == 1 and analyzer._get_engine().tracing_count == 1
    expected = create_analyzer("integrated_gradients", dense_model, steps=4).analyze(x, 1)
    np.testing.assert_allclose(maps, expected, rtol=1e-6, atol=1e-7)


def test_fit_patterns_accumulates_through_the_strategy(dense_model, counted_strategy):
    strategy, calls = counted_strategy
    data = np.random.default_rng(8).normal(size=(10, 6)).astype(np.float32)
    patterns = pgig_tf.fit_patterns(dense_model, data, batch_size=4, verbose=False, strategy=strategy)
    assert len(calls) == 1  # batches of 4, 4 and 2 share one trace
    expected = pgig_tf.fit_patterns(dense_model, data, batch_size=4, verbose=False)
    for layer in expected:
        np.testing.assert_allclose(patterns[layer], expected[layer], rtol=1e-6)
