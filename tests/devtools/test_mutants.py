"""The mutation pass's mutants: which changes are made, and that they reach (and leave) the running code."""

import functools
import importlib
import sys
import textwrap

import pytest

from devtools.mutants import Patch, find_mutants, mutants_of_source, mutated_source, outermost_functions
from devtools.mutation_pass import covering_tests, junit_durations, select_tests, source_hashes, summary

TOY = textwrap.dedent(
    '''
    """A toy module."""
    import functools

    LIMIT = 3


    def f(a, b=1):
        """Docstring, never mutated."""
        c = a + b
        if c > 2 and a:
            return -c
        return c * 2


    @functools.lru_cache(maxsize=None)
    def cached(n):
        return n + 10


    class Box:
        def __init__(self, value):
            self.value = value

        @property
        def double(self):
            return self.value * 2

        def adder(self):
            def add(x):
                return x + self.value

            return add

        def loop(self, items):
            total = 0
            for item in items:
                if item < 0:
                    break
                total += item
            return total


    def helper(x):
        if x > 0:
            return x * 2.0
        return (
            x
            - 1.0
        )


    def traced(x):
        import tensorflow as tf

        return float(tf.function(helper)(tf.constant(x)))
    '''
)


def test_the_mutants_of_a_function_body_are_its_operators_constants_and_assignments():
    found = {(m.function, m.kind, m.before, m.after) for m in mutants_of_source(TOY, "toy") if m.function == "f"}
    assert found == {
        ("f", "value -> None", "c = a + b", "c = None"),
        ("f", "Add -> Sub", "a + b", "a - b"),
        ("f", "And -> Or", "c > 2 and a", "c > 2 or a"),
        ("f", "Gt -> GtE", "c > 2", "c >= 2"),
        ("f", "2 -> 3", "2", "3"),
        ("f", "drop USub", "-c", "c"),
        ("f", "Mult -> Div", "c * 2", "c / 2"),
    }
    # the docstring, the default value b=1, the module constant and the decorator are left alone
    assert not [m for m in mutants_of_source(TOY, "toy") if m.line < 9]  # module level and f's signature and docstring
    assert {m.line for m in mutants_of_source(TOY, "toy") if m.function == "f"} == {10, 11, 12, 13}


def test_nested_functions_and_methods_are_named_by_their_outermost_function():
    functions = {m.function for m in mutants_of_source(TOY, "toy")}
    assert functions == {"f", "cached", "Box.__init__", "Box.double", "Box.adder", "Box.loop", "helper"}
    loop = {m.kind for m in mutants_of_source(TOY, "toy") if m.function == "Box.loop"}
    assert {"break -> continue", "Lt -> LtE", "Add -> Sub", "0 -> 1", "value -> None"} <= loop


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_module_for_mutants.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_module_for_mutants")
    yield module
    sys.modules.pop("toy_module_for_mutants", None)


def _mutant(module, function, kind):
    (found,) = [m for m in find_mutants(module.__name__) if m.function == function and m.kind == kind]
    return found


def test_a_patch_changes_every_reference_to_the_function_and_restore_undoes_it(toy):
    alias = toy.f  # as `from toy import f` elsewhere would hold it
    assert alias(1, 1) == 4
    with Patch(_mutant(toy, "f", "Mult -> Div")):
        assert alias(1, 1) == 1.0
        assert toy.f(5, 1) == -6
    assert alias(1, 1) == 4


def test_patches_reach_cached_functions_properties_closures_and_loops(toy):
    assert toy.cached(1) == 11
    with Patch(_mutant(toy, "cached", "Add -> Sub")):
        assert toy.cached(1) == -9  # the cache of the original is emptied
    assert toy.cached(1) == 11
    box = toy.Box(3)
    with Patch(_mutant(toy, "Box.double", "Mult -> Div")):
        assert box.double == 1.5
    assert box.double == 6
    add = box.adder()
    with Patch(_mutant(toy, "Box.adder", "Add -> Sub")):
        assert box.adder()(10) == 7  # the closure is made from the mutated outer function
    assert add(10) == 13 and box.adder()(10) == 13
    with Patch(_mutant(toy, "Box.__init__", "value -> None")):
        assert toy.Box(3).value is None
    with Patch(_mutant(toy, "Box.loop", "break -> continue")):
        assert box.loop([1, -1, 2]) == 3
    assert box.loop([1, -1, 2]) == 1


def test_summary_counts_each_status_per_module():
    results = [
        {"name": "a", "module": "m", "status": "killed", "line": 1, "function": "f", "before": "x", "after": "y"},
        {
            "name": "b",
            "module": "m",
            "status": "survived",
            "line": 2,
            "function": "f",
            "before": "a + b",
            "after": "a - b",
        },
        {"name": "c", "module": "n", "status": "timeout", "line": 3, "function": "g", "before": "x", "after": "y"},
    ]
    text = summary(results)
    assert "| `m` | 2 | 1 | 0 | 1 | 0 | 0 | 0 |" in text
    assert "| `n` | 1 | 0 | 1 | 0 | 0 | 0 | 0 |" in text
    assert "| all | 3 | 1 | 1 | 1 | 0 | 0 | 0 |" in text
    planned = summary(results, [("a", "m"), ("b", "m"), ("c", "n"), ("d", "n")])
    assert "| `n` | 2 | 0 | 1 | 0 | 0 | 0 | 1 |" in planned
    assert "- m:2 f (survived): `a + b` → `a - b`" in text
    assert functools.reduce(lambda n, line: n + line.startswith("- "), text.splitlines(), 0) == 1


def test_a_mutant_keeps_every_line_in_place(toy):
    source = open(toy.__file__).read()
    for mutant in find_mutants(toy.__name__):
        text = mutated_source(source, mutant)
        assert text != source
        assert len(text.splitlines()) == len(source.splitlines()), mutant.name
        changed = [i for i, (a, b) in enumerate(zip(source.splitlines(), text.splitlines())) if a != b]
        assert changed and min(changed) + 1 >= mutant.line - 1, mutant.name
    (multi_line,) = [m for m in find_mutants(toy.__name__) if m.function == "helper" and m.kind == "Sub -> Add"]
    assert "(x + 1.0\n)" in mutated_source(source, multi_line)


def test_autograph_converts_the_mutant_not_the_source_on_disk(toy):
    """Inside a tf.function AutoGraph rebuilds a function from its source: it must read the mutant's."""
    assert toy.traced(3.0) == 6.0
    with Patch(_mutant(toy, "helper", "Mult -> Div")):
        assert toy.traced(3.0) == 1.5
    assert toy.traced(3.0) == 6.0
    with Patch(_mutant(toy, "helper", "Sub -> Add")):
        assert toy.traced(-2.0) == -1.0
    assert toy.traced(-2.0) == -3.0


def test_covering_tests_reads_the_per_test_contexts_of_a_coverage_database(tmp_path):
    import coverage  # the mutation pass's dependency, in the "test" extra (pytest-cov)

    source = tmp_path / "module.py"
    source.write_text("a = 1\nb = 2\n")
    data = coverage.CoverageData(basename=str(tmp_path / "coverage.db"))
    for context, lines in (("tests/t.py::test_a|run", [1, 2]), ("tests/t.py::test_b|setup", [2]), ("", [1])):
        data.set_context(context)
        data.add_lines({str(source): lines})
    data.write()
    assert covering_tests(str(tmp_path / "coverage.db"), str(source)) == {
        1: {"tests/t.py::test_a"},
        2: {"tests/t.py::test_a", "tests/t.py::test_b"},
    }


def test_test_durations_maps_junit_cases_to_node_ids(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.devtools.test_mutants" name="test_a[1-2]" time="0.25"/>'
        '<testcase classname="tests.devtools.test_mutants.TestBox" name="test_b" time="1.5"/>'
        '<testcase classname="tests.nowhere" name="test_c" time="9"/>'
        "</testsuite></testsuites>"
    )
    assert junit_durations(str(report)) == {
        "tests/devtools/test_mutants.py::test_a[1-2]": 0.25,
        "tests/devtools/test_mutants.py::TestBox::test_b": 1.5,
    }


def test_select_tests_falls_back_to_the_module_only_for_functions_coverage_never_saw():
    by_line = {3: {"t::a"}, 4: {"t::a", "t::b"}, 20: {"t::c"}}
    assert select_tests(by_line, (2, 6), 4) == ({"t::a", "t::b"}, "line")
    assert select_tests(by_line, (2, 6), 5) == (set(), "line")  # the function ran, this line did not
    assert select_tests(by_line, (10, 15), 12) == ({"t::a", "t::b", "t::c"}, "module")  # a tf.function body
    assert select_tests(by_line, (2, 6), 5, converted=True) == ({"t::a", "t::b", "t::c"}, "module")


def test_outermost_functions_gives_each_function_and_method_its_lines():
    assert outermost_functions(TOY) == {
        "f": (8, 13),
        "cached": (17, 18),  # from the def line: decorators are not the body
        "Box.__init__": (22, 23),
        "Box.double": (26, 27),
        "Box.adder": (29, 33),
        "Box.loop": (35, 41),
        "helper": (44, 50),
        "traced": (53, 56),
    }


def test_source_hashes_change_with_the_source(toy, tmp_path):
    before = source_hashes([toy.__name__])
    assert list(before) == [toy.__name__] and len(before[toy.__name__]) == 64
    with open(toy.__file__, "a") as handle:
        handle.write("\n# an edit\n")
    assert source_hashes([toy.__name__]) != before
