"""Runs chosen mutants of a mutation pass's record against chosen tests, one fresh process per mutant.

A pass selects each mutant's tests from a coverage run made before the pass; tests written after
it (to close what survived) are not in its selection. This check runs the mutants a record left
alive (by default those `survived` or `not covered`, and with `--subprocess-only` those the pass
left out) against the tests named after `--`, each in its own Python process that swaps the
mutant in (`devtools.mutants.Patch`) and runs pytest with `-x`; a mutant is killed when pytest
reports a failing test (exit code 1). Results go to `--out`, one JSON line per mutant:

    python -m devtools.mutant_check --out results/mutation/recheck.jsonl -- \\
        -m "not slow or tiered" tests/core tests/patterns/test_gate_edges.py
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED, SURVIVED = "killed", "survived"


def chosen_names(record_lines, statuses):
    """Names of the mutants whose recorded status is one of `statuses`, in the record's order."""
    names = []
    for line in record_lines:
        if line.strip():
            result = json.loads(line)
            if result["status"] in statuses:
                names.append(result["name"])
    return names


def subprocess_only_names():
    """Names of the mutants that `devtools.mutation_pass` leaves out (functions only a subprocess runs)."""
    from devtools.mutants import find_mutants
    from devtools.mutation_pass import SUBPROCESS_ONLY

    names = []
    for module in sorted({entry.split(":")[0] for entry in SUBPROCESS_ONLY}):
        names += [m.name for m in find_mutants(module) if f"{module}:{m.function}" in SUBPROCESS_ONLY]
    return names


def verdict(exit_code):
    """pytest's exit code under a mutant: 1 (a test failed) kills it, 0 (all passed) lets it survive."""
    if exit_code == 1:
        return KILLED
    if exit_code == 0:
        return SURVIVED
    return f"error (pytest exit code {exit_code})"


def _run_one(name, pytest_args, timeout):
    """Runs `pytest_args` under mutant `name` in a new process; returns its result record."""
    code = (
        "import sys, pytest\n"
        "from devtools.mutants import Patch, find_mutants\n"
        f"name = {name!r}\n"
        "[mutant] = [m for m in find_mutants(name.split(':')[0]) if m.name == name]\n"
        "with Patch(mutant):\n"
        f"    sys.exit(int(pytest.main(['-q', '-x', '-p', 'no:cacheprovider'] + {list(pytest_args)!r})))\n"
    )
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        status = verdict(done.returncode)
        failed = [line[len("FAILED ") :] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
        detail = failed[0].split(" - ")[0] if failed else ""
    except subprocess.TimeoutExpired:
        status, detail = "timeout", f"over {timeout} s"
    return {"name": name, "status": status, "detail": detail, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.exit("name the tests to run after --, e.g. -- tests/core")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", default="devtools/mutation_results.jsonl", help="a mutation pass's results")
    parser.add_argument("--statuses", default="survived,not covered", help="comma-separated statuses to run")
    parser.add_argument("--subprocess-only", action="store_true", help="also the mutants the pass leaves out")
    parser.add_argument("--out", default="results/mutation/recheck.jsonl")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    args = parser.parse_args(argv[:split])
    pytest_args = argv[split + 1 :]
    if not pytest_args:
        sys.exit("name the tests to run after --, e.g. -- tests/core")
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    with open(args.record) as handle:
        names = chosen_names(handle, {s.strip() for s in args.statuses.split(",") if s.strip()})
    if args.subprocess_only:
        names += subprocess_only_names()
    print(f"{len(names)} mutants against: {' '.join(pytest_args)}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    counts = {}
    with open(args.out, "w") as out, ThreadPoolExecutor(max(args.workers, 1)) as pool:
        futures = [pool.submit(_run_one, name, pytest_args, args.timeout) for name in names]
        for future in futures:
            result = future.result()
            out.write(json.dumps(result) + "\n")
            out.flush()
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            print(f"{result['status']}: {result['name']} {result['detail']}", flush=True)
    print(", ".join(f"{count} {status}" for status, count in sorted(counts.items())))


if __name__ == "__main__":
    main()
