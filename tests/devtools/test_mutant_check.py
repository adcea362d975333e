"""The mutant check picks the mutants a record left alive and reads pytest's exit code as a verdict."""

import json

import pytest

from devtools.mutant_check import chosen_names, main, verdict


def test_only_the_chosen_statuses_are_picked_in_the_records_order():
    lines = [
        json.dumps({"name": "m:1:0:a", "status": "killed"}),
        "",
        json.dumps({"name": "m:2:0:b", "status": "not covered"}),
        json.dumps({"name": "m:3:0:c", "status": "survived"}),
        json.dumps({"name": "m:4:0:d", "status": "timeout"}),
    ]
    assert chosen_names(lines, {"survived", "not covered"}) == ["m:2:0:b", "m:3:0:c"]
    assert chosen_names(lines, {"killed"}) == ["m:1:0:a"]


def test_a_failing_test_kills_and_anything_but_pass_or_fail_is_an_error():
    assert verdict(1) == "killed"
    assert verdict(0) == "survived"
    assert verdict(2) == "error (pytest exit code 2)"  # interrupted or a collection error: no verdict
    assert verdict(5) == "error (pytest exit code 5)"  # no test ran


def test_the_tests_to_run_must_be_named():
    with pytest.raises(SystemExit, match="name the tests to run after --"):
        main(["--statuses", "survived"])
    with pytest.raises(SystemExit, match="name the tests to run after --"):
        main(["--statuses", "survived", "--"])
