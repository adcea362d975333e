"""tests/slow_tier.txt names existing tests, and devtools.slow_tier lists what a durations report says."""

import os
import re

import pytest

from devtools import slow_tier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPORT = """\
============================= slowest durations ==============================
3.10s call     tests/a/test_x.py::test_long[1-2]
0.80s setup    tests/a/test_x.py::test_short
0.60s call     tests/a/test_x.py::test_short
0.20s teardown tests/a/test_x.py::test_short
2.00s call     tests/analyzers/test_analyzers.py::test_matches_numpy_reference[gradient-dense]
1.40s call     tests/a/test_x.py::test_almost
(3 durations < 0.005s hidden.)
"""


def test_times_are_summed_over_setup_call_and_teardown():
    times = slow_tier.test_times(REPORT)
    assert times == {
        "tests/a/test_x.py::test_long[1-2]": 3.1,
        "tests/a/test_x.py::test_short": pytest.approx(1.6),
        "tests/analyzers/test_analyzers.py::test_matches_numpy_reference[gradient-dense]": 2.0,
        "tests/a/test_x.py::test_almost": 1.4,
    }


def test_the_list_holds_the_tests_over_the_limit_but_never_the_reference_checks(tmp_path, capsys):
    report, out = tmp_path / "durations.txt", tmp_path / "tier.txt"
    report.write_text(REPORT)
    slow_tier.main([str(report), "--limit", "1.5", "--out", str(out)])
    assert slow_tier.read_tier(str(out)) == ["tests/a/test_x.py::test_long[1-2]", "tests/a/test_x.py::test_short"]
    assert capsys.readouterr().out.startswith("2 tests listed in ")
    out.write_text("# a comment\ntests/b/test_y.py::test_kept\n")
    slow_tier.main([str(report), "--limit", "2.5", "--out", str(out), "--keep"])
    assert slow_tier.read_tier(str(out)) == ["tests/a/test_x.py::test_long[1-2]", "tests/b/test_y.py::test_kept"]


def test_every_listed_test_exists():
    listed = slow_tier.read_tier()
    assert len(listed) > 100
    for node in listed:
        path, _, name = node.partition("::")
        function = re.sub(r"\[.*\]$", "", name.split("::")[-1])
        with open(os.path.join(ROOT, path), encoding="utf-8") as file:
            assert re.search(rf"^\s*def {re.escape(function)}\(", file.read(), re.M), node


class Item:
    def __init__(self, nodeid):
        self.nodeid, self.markers = nodeid, []

    def add_marker(self, marker):
        self.markers.append(marker.name)


def test_collection_marks_the_listed_tests_slow_and_tiered_and_no_others():
    import conftest

    listed = slow_tier.read_tier()[0]
    items = [Item(listed), Item("tests/devtools/test_slow_tier.py::test_every_listed_test_exists")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [item.markers for item in items] == [["slow", "tiered"], []]
