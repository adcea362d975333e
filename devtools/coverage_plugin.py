"""pytest plugin for the mutation pass's coverage run: the library's functions run as written, not converted by AutoGraph.

Inside a tf.function, AutoGraph runs a converted copy of each function it calls, compiled from a
generated file, so coverage would not see the library's own lines run. With this plugin
(`-p devtools.coverage_plugin`) the functions that a tf.function calls in `pgig_tf` run
unconverted (what they compute is the same: their control flow is Python's, not the tensors');
the bodies of the tf.functions themselves are still converted, and so is all of
`pgig_tf.core.engine`, whose loops over tensors need AutoGraph: the mutation pass gives a mutant
on a line coverage did not see there every test that runs the module.
"""

CONVERTED = ("pgig_tf.core.engine",)


def pytest_configure(config):
    from tensorflow.python.autograph.core import config as autograph_config
    from tensorflow.python.autograph.core.config_lib import Convert, DoNotConvert

    rules = (*(Convert(name) for name in CONVERTED), DoNotConvert("pgig_tf"))
    autograph_config.CONVERSION_RULES = (*rules, *autograph_config.CONVERSION_RULES)
