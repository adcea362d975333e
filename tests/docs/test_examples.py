"""The extension examples of docs/extending.md run (each asserts its numbers against an independent formula) and the page shows them."""

import os
import runpy

import pytest
from markdown_code import REPOSITORY

EXAMPLES = ("custom_rule.py", "custom_aggregator.py", "custom_layer.py")


@pytest.fixture
def registries():
    """The examples register a rule, an analyzer and a layer treatment; each test leaves the registries as it found them."""
    from pgig_tf.analyzers import ANALYZERS
    from pgig_tf.core.rules import RULES
    from pgig_tf.model import layer_support

    saved = dict(ANALYZERS), dict(RULES), dict(layer_support._REGISTERED)
    yield ANALYZERS, RULES, layer_support._REGISTERED
    for registry, before in zip((ANALYZERS, RULES, layer_support._REGISTERED), saved):
        registry.clear()
        registry.update(before)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(os.path.join(REPOSITORY, "docs", "examples", example), run_name="__main__")
    analyzers, rules, layers = registries
    if example == "custom_rule.py":
        assert rules["deconvnet"] is namespace["DeconvNetRule"]
    elif example == "custom_aggregator.py":
        assert analyzers["midpoint_ig"] is namespace["MidpointIGAnalyzer"]
    else:
        assert namespace["Scale"] not in layers  # the example unregisters what it registered


def test_the_extending_page_includes_every_example():
    page = open(os.path.join(REPOSITORY, "docs", "extending.md"), encoding="utf-8").read()
    for example in EXAMPLES:
        assert f'--8<-- "docs/examples/{example}"' in page
