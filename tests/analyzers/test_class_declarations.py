"""Analyzers declare what they need (rule, patterns, background, seed, start) and take the shared options once."""

import numpy as np
import pytest

from pgig_tf import Patterns, create_analyzer, fit_patterns
from pgig_tf.analyzers import ANALYZERS, analyzer_settings, build_analyzer
from pgig_tf.core.engine import START_ONE, START_VALUE
from pgig_tf.core.rules import RULES, LayerwiseRule, Rule, rule_class

SHARED = ("batch_size", "output", "compute_dtype", "jit_compile", "strategy")


def test_every_analyzer_takes_the_shared_options_with_their_defaults():
    for name, cls in ANALYZERS.items():
        settings = cls.settings()
        assert {key: settings[key] for key in SHARED} == {
            "batch_size": 64,
            "output": None,
            "compute_dtype": None,
            "jit_compile": False,
            "strategy": None,
        }, name
        assert ("rule" in settings) == (cls.fixed_rule is None), name
        assert ("seed" in settings) == cls.random, name


def test_declarations_of_the_named_methods():
    needs_patterns = {name for name, cls in ANALYZERS.items() if cls.rule_needs_patterns()}
    assert needs_patterns == {"pattern_net", "pattern_attribution", "pgig"}
    assert {name for name, cls in ANALYZERS.items() if cls.uses_background} == {"expected_gradients"}
    assert {name for name, cls in ANALYZERS.items() if cls.start == START_VALUE} == {
        "pattern_net",
        "pattern_attribution",
    }
    assert ANALYZERS["pgig"].start == START_ONE and ANALYZERS["pgig"].fixed_rule == "pattern_attribution"
    assert ANALYZERS["smoothgrad"].rule_needs_patterns("pattern_net")
    assert not ANALYZERS["smoothgrad"].rule_needs_patterns("guided_backprop")


def test_settings_keep_each_method_s_own_defaults():
    assert analyzer_settings("integrated_gradients")["steps"] == 25
    assert analyzer_settings("smooth_taylor")["samples"] == 150
    assert analyzer_settings("noise_baseline_ig")["steps"] == 50
    assert "patterns" in analyzer_settings("pgig") and "patterns" not in analyzer_settings("gradient")


def test_direct_construction_rejects_an_option_the_class_does_not_take(dense_model):
    with pytest.raises(TypeError, match=r"GradientAnalyzer takes no argument rule; it takes: batch_size"):
        ANALYZERS["gradient"](dense_model, rule="guided_backprop")
    with pytest.raises(TypeError, match=r"PGIGAnalyzer takes no argument seed"):
        ANALYZERS["pgig"](dense_model, seed=1)


def test_rule_takes_a_rule_class_as_well_as_a_name(dense_model, rng):
    x = rng.normal(size=(3, 6)).astype(np.float32)
    by_name = create_analyzer("integrated_gradients", dense_model, rule="guided_backprop").analyze(x, 1)
    by_class = create_analyzer("integrated_gradients", dense_model, rule=RULES["guided_backprop"]).analyze(x, 1)
    np.testing.assert_array_equal(by_class, by_name)

    class HalfRelu(LayerwiseRule):
        """Passes half of the ReLU's gradient: every path through k ReLUs is scaled by 2^-k."""

        name = "half_relu"

        def _relu(self, x):
            import tensorflow as tf

            @tf.custom_gradient
            def relu(z):
                return tf.nn.relu(z), lambda dy: 0.5 * dy * tf.cast(z > 0, dy.dtype)

            return relu(x)

    assert rule_class(HalfRelu) is HalfRelu
    gradient = create_analyzer("gradient", dense_model).analyze(x, 1)
    half = create_analyzer("integrated_gradients", dense_model, rule=HalfRelu, steps=1).analyze(x, 1)
    # steps=1 evaluates at x itself: IG = x * (gradient with every ReLU path through 2 ReLUs scaled by 1/4)
    np.testing.assert_allclose(half, x * gradient / 4, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"rule HalfRelu is not known by name, so it cannot be saved"):
        create_analyzer("integrated_gradients", dense_model, rule=HalfRelu).get_config()
    with pytest.raises(ValueError, match=r"rule must be one of .* or a pgig_tf.core.rules.Rule subclass, got 'nope'"):
        create_analyzer("integrated_gradients", dense_model, rule="nope")
    assert issubclass(HalfRelu, Rule)


def test_build_analyzer_passes_only_what_each_analyzer_uses(dense_model, rng):
    data = rng.normal(size=(64, 6)).astype(np.float32)
    patterns = fit_patterns(dense_model, data, verbose=False)
    background = data[:5]
    for name in ANALYZERS:
        analyzer = build_analyzer(name, dense_model, patterns=patterns, background=background, seed=7, batch_size=16)
        assert analyzer.batch_size == 16
        assert (analyzer.patterns is patterns) == type(analyzer).rule_needs_patterns(), name
        assert (analyzer.seed == 7) == type(analyzer).random, name
        if type(analyzer).uses_background:
            np.testing.assert_array_equal(analyzer.baselines, background)
    pg_smooth = build_analyzer("smoothgrad", dense_model, patterns=patterns, rule="pattern_attribution")
    assert isinstance(pg_smooth.patterns, Patterns) and pg_smooth.patterns is patterns
