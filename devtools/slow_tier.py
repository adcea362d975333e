"""Writes tests/slow_tier.txt: the tests whose time (setup + call + teardown) reaches a limit, from a durations report.

The default test run must stay under 6 minutes on a 2-core CPU; the tests listed in
tests/slow_tier.txt are marked `slow` at collection (tests/conftest.py), so they run with
`python -m pytest -m slow` and in CI, not in the default run. Make the report with every test's
times, then write the list:

    python -m pytest -q -p no:cacheprovider --durations=0 --durations-min=0 > results/durations.txt
    python -m devtools.slow_tier results/durations.txt --limit 1.5

A test that shares a module-scoped fixture with listed tests pays for that fixture when it runs
first, so a second report after writing the list may list it too (`--keep` adds to the list).
"""

import argparse
import collections
import os
import re

# never listed, however long they take: the analyzers against the independent numpy reference, and
# the README's own examples, are what a default run must always check
ALWAYS_DEFAULT = (
    "tests/analyzers/test_analyzers.py::test_matches_numpy_reference[",
    "tests/docs/test_readme_examples.py::",
)
TIER_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "slow_tier.txt")
LINE = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)")
HEADER = """\
# Tests that run only with `python -m pytest -m slow` (and in CI), to keep the default run under
# 6 minutes on a 2-core CPU: each took {limit} s or more (setup + call + teardown) there. The
# analyzers' checks against the numpy reference and the README's examples always stay in the default run.
# Written by `python -m devtools.slow_tier`; one pytest node id per line.
"""


def test_times(report):
    """{node id: seconds} summed over setup, call and teardown, from pytest's --durations output."""
    times = collections.Counter()
    for line in report.splitlines():
        match = LINE.match(line)
        if match:
            times[match.group(3)] += float(match.group(1))
    return dict(times)


def read_tier(path=TIER_FILE):
    """The node ids listed in a tier file (comments and blank lines left out)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="pytest output with --durations=0 --durations-min=0")
    parser.add_argument("--limit", type=float, default=1.5, help="seconds from which a test is listed (default 1.5)")
    parser.add_argument("--keep", action="store_true", help="keep the tests already listed")
    parser.add_argument("--out", default=TIER_FILE, help="the tier file to write (default tests/slow_tier.txt)")
    args = parser.parse_args(argv)
    with open(args.report, encoding="utf-8") as file:
        times = test_times(file.read())
    if not times:
        raise SystemExit(f"{args.report} holds no test durations: run pytest with --durations=0 --durations-min=0")
    listed = {node for node, seconds in times.items() if seconds >= args.limit and not node.startswith(ALWAYS_DEFAULT)}
    if args.keep:
        listed |= set(read_tier(args.out))
    with open(args.out, "w", encoding="utf-8") as file:
        file.write(HEADER.format(limit=args.limit))
        file.writelines(f"{node}\n" for node in sorted(listed))
    kept = sum(seconds for node, seconds in times.items() if node not in listed)
    print(f"{len(listed)} tests listed in {args.out}; the others took {kept:.0f} s in the report")


if __name__ == "__main__":
    main()
