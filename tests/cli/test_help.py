"""Every command's --help answers without importing TensorFlow or Keras; the names it lists are the analyzers'."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = (
    "degradation_benchmark",
    "explain",
    "fit_patterns",
    "stress_test",
    "axioms",
    "sanity_check",
    "evaluate",
    "roar_benchmark",
)

PROBE = """
import contextlib, io, sys
from pgig_tf.cli import {name} as command
text = io.StringIO()
try:
    with contextlib.redirect_stdout(text):
        command.main(["--help"])
    code = None
except SystemExit as exit:
    code = exit.code
print(code, "tensorflow" in sys.modules, "keras" in sys.modules, text.getvalue().startswith("usage:"))
"""


@pytest.mark.parametrize("name", COMMANDS)
def test_help_does_not_import_tensorflow(name):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # exit code 0, tensorflow not imported, keras not imported, the usage text printed
    assert done.stdout.split() == ["0", "False", "False", "True"], done.stdout + done.stderr


def test_listed_names_are_the_analyzers():
    from pgig_tf.analyzers import ANALYZERS
    from pgig_tf.names import ANALYZER_NAMES, DEFAULT_METHODS

    assert ANALYZER_NAMES == tuple(ANALYZERS)
    assert set(DEFAULT_METHODS) <= set(ANALYZERS) and len(DEFAULT_METHODS) == 12
