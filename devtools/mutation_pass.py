"""Mutation pass: does the fast test suite notice when the library's core code is changed?

Each mutant of `devtools.mutants` (one operator or constant changed in one function body) is
run against the tests that execute its line, and counts as killed when one of them fails (or
when they run past a time limit), survived when all pass, and not covered when no test runs the
line. The tests run in persistent worker processes that import TensorFlow once and swap each
mutant's code into the live function, so a mutant costs the time of its tests only.

Which test runs which line comes from a coverage run of the fast tests of the core (`TESTS`)
with per-test contexts and `devtools.coverage_plugin`, made first when `--coverage` does not
exist yet or the mutated modules changed since it was made (about 3 minutes on a 2-core CPU):

    python -m devtools.mutation_pass

Before the first mutant, every selected test is run once unchanged in a worker (the control
run); the pass stops if one fails, since then a "kill" could be the harness's doing. A mutant's
tests run fastest first, after those that killed most earlier mutants of its module. Results are appended
to results/mutation/mutants.jsonl as they come (a second run resumes) and summarised per module.
"""

import argparse
import hashlib
import importlib
import inspect
import json
import multiprocessing
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from multiprocessing.connection import wait

from devtools.coverage_plugin import CONVERTED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODULES = (
    "pgig_tf.core.rules",
    "pgig_tf.core.aggregators",
    "pgig_tf.core.engine",
    "pgig_tf.core.integration",
    "pgig_tf.core.noise",
    "pgig_tf.patterns.fitting",
)
# the default run's tests and those only moved out of it for time (tests/slow_tier.txt), not the
# VGG-sized tests and whole benchmark runs
SELECTION = "not slow or tiered"
# the fast tests that exercise the mutated modules (tests/model/test_distribute.py runs its checks in a subprocess)
TESTS = (
    "tests/core",
    "tests/analyzers",
    "tests/patterns",
    "tests/reference",
    "tests/model",
    "tests/test_persistence.py",
    "tests/test_validation.py",
    "tests/test_files.py",
    "--ignore=tests/model/test_distribute.py",
)
# functions whose tests run them on 2 logical devices, in a subprocess only (tests/model/distribute_checks.py),
# where a mutant swapped into the test process cannot reach them: left out, and counted. (One replica in the
# test process, tests/model/test_strategy_runs.py, runs the first but cannot tell a replica's offset apart.)
SUBPROCESS_ONLY = (
    "pgig_tf.core.engine:GradientEngine._attribute_distributed",
    "pgig_tf.core.engine:GradientEngine._empty_result",  # a replica's empty shard
    "pgig_tf.core.engine:RefiningEngine._empty_result",
)
KILLED, TIMEOUT, SURVIVED, NOT_COVERED, ERROR, NOT_RUN = (
    "killed",
    "timeout",
    "survived",
    "not covered",
    "error",
    "not run",
)


def make_coverage(coverage_file, junit_file):
    """Runs `TESTS` under coverage with per-test contexts, writing `coverage_file` and the durations to `junit_file`."""
    import subprocess

    os.makedirs(os.path.dirname(os.path.abspath(coverage_file)), exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "devtools.coverage_plugin"]
    command += [
        *TESTS,
        "-m",
        SELECTION,
        "--cov=pgig_tf",
        "--cov-context=test",
        "--cov-report=",
        f"--junitxml={junit_file}",
    ]
    print("coverage run:", " ".join(command), flush=True)
    code = subprocess.call(command, cwd=ROOT, env={**os.environ, "COVERAGE_FILE": os.path.abspath(coverage_file)})
    if code != 0:
        sys.exit(f"the coverage run failed (pytest exit code {code}): the tests must pass before a mutation pass")


def source_hashes(modules):
    """{module: SHA-256 of its source file}: a coverage run's line numbers hold for these sources only."""
    hashes = {}
    for module in modules:
        with open(inspect.getsourcefile(importlib.import_module(module)), "rb") as handle:
            hashes[module] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def covering_tests(coverage_file, source_file):
    """{line: set of test node ids that ran it} from a coverage database made with --cov-context=test."""
    import coverage

    data = coverage.CoverageData(basename=coverage_file)
    data.read()
    lines = data.contexts_by_lineno(os.path.abspath(source_file))
    found = defaultdict(set)
    for line, contexts in lines.items():
        for context in contexts:
            if context:  # "" is code run outside any test (imports, collection)
                found[line].add(context.rsplit("|", 1)[0])
    return found


def select_tests(by_line, function_lines, line, converted=False):
    """(tests to run against a mutant on `line`, how they were chosen).

    The tests that ran the line ("line"). Where coverage cannot see a line run, every test that
    ran a line of the module ("module"): in a function of which no line ran under coverage (the
    body of a tf.function, run only as AutoGraph's converted copy) and anywhere in a module that
    AutoGraph converts in the coverage run too (`converted`, see `devtools.coverage_plugin`).
    Elsewhere a line that did not run is not covered.
    """
    if by_line.get(line):
        return set(by_line[line]), "line"
    first, last = function_lines
    if not converted and any(by_line.get(n) for n in range(first, last + 1)):
        return set(), "line"
    return set().union(*by_line.values()), "module"


def junit_durations(junit_file):
    """{test node id: seconds} from pytest's --junitxml report."""
    durations = {}
    for case in ElementTree.parse(junit_file).iter("testcase"):
        parts = case.get("classname", "").split(".")
        # classname is the dotted module path, followed by the class for tests in a class
        for split in range(len(parts), 0, -1):
            path = os.path.join(*parts[:split]) + ".py"
            if os.path.exists(os.path.join(ROOT, path)):
                node = "::".join([path, *parts[split:], case.get("name")])
                durations[node] = float(case.get("time", 0))
                break
    return durations


def _worker(connection, log_path):
    """Runs (mutant, tests) requests from `connection` until it receives None."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import pytest

    from devtools.mutants import Mutant, Patch

    class FirstFailure:
        def __init__(self):
            self.node = None

        def pytest_runtest_logreport(self, report):
            if report.failed and self.node is None:
                self.node = report.nodeid

    while True:
        request = connection.recv()
        if request is None:
            return
        mutant, tests = request
        recorder = FirstFailure()
        start = time.perf_counter()
        try:
            patch = Patch(Mutant(**mutant)) if mutant else None
        except Exception as error:  # reported as the mutant's status
            connection.send((ERROR, f"{type(error).__name__}: {error}", 0.0))
            continue
        try:
            code = pytest.main(
                ["-x", "-q", "-p", "no:cacheprovider", "--rootdir", ROOT, "-m", SELECTION, *tests], plugins=[recorder]
            )
        finally:
            if patch:
                patch.restore()
        import keras

        keras.backend.clear_session()
        status = {0: SURVIVED, 1: KILLED}.get(int(code), ERROR)
        connection.send((status, recorder.node or f"pytest exit code {int(code)}", time.perf_counter() - start))


class Worker:
    """A worker process and the request it is running."""

    def __init__(self, context, log_path):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, log_path), daemon=True)
        self.process.start()
        self.job = None  # (mutant record, deadline)
        self.served = 0

    def send(self, record, tests, deadline):
        self.job = (record, deadline)
        self.served += 1
        self.connection.send((record and {k: record[k] for k in MUTANT_FIELDS}, tests))

    def stop(self, kill=False):
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


MUTANT_FIELDS = ("module", "function", "index", "kind", "line", "before", "after")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES), help="comma-separated modules to mutate")
    parser.add_argument(
        "--coverage", default="results/mutation/coverage.db", help="coverage database with test contexts"
    )
    parser.add_argument("--junit", default="results/mutation/junit.xml", help="the coverage run's --junitxml report")
    parser.add_argument("--out", default="results/mutation/mutants.jsonl", help="results, one JSON line per mutant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restart-every", type=int, default=40, help="mutants per worker process before a fresh one")
    parser.add_argument("--timeout-factor", type=float, default=4.0, help="limit: factor × the tests' seconds + 60 s")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N mutants (0: all)")
    parser.add_argument("--skip-control", action="store_true", help="skip the unchanged run of every selected test")
    parser.add_argument(
        "--rerun",
        default="",
        help="comma-separated statuses (e.g. 'survived,not covered'): run again only the mutants recorded with one "
        "(after new tests; make the coverage again first), leaving unrun mutants for later",
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    from devtools.mutants import mutants_of_source, outermost_functions

    sources = source_hashes(args.modules.split(","))
    stamp = args.coverage + ".sources.json"
    recorded = None
    if os.path.exists(stamp):
        with open(stamp) as handle:
            recorded = json.load(handle)
    if not os.path.exists(args.coverage) or recorded != sources:
        if os.path.exists(args.coverage):  # its line numbers belong to other sources: remade, not trusted
            print("the mutated modules changed since the coverage run: making it again", flush=True)
        make_coverage(args.coverage, args.junit)
        with open(stamp, "w") as handle:
            json.dump(sources, handle, indent=1)
    durations = junit_durations(args.junit)
    records = []
    skipped = Counter()
    for module in args.modules.split(","):
        source_file = inspect.getsourcefile(importlib.import_module(module))
        by_line = covering_tests(args.coverage, source_file)
        with open(source_file, encoding="utf-8") as handle:
            source = handle.read()
        functions = outermost_functions(source)
        for mutant in mutants_of_source(source, module):
            if f"{module}:{mutant.function}" in SUBPROCESS_ONLY:
                skipped[f"{module}:{mutant.function}"] += 1
                continue
            tests, selection = select_tests(by_line, functions[mutant.function], mutant.line, module in CONVERTED)
            record = {k: getattr(mutant, k) for k in MUTANT_FIELDS}
            record.update(name=mutant.name, tests=tests, selection=selection)  # the tests are ordered when run
            records.append(record)
    if args.limit:
        records = records[: args.limit]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    done = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            for line in f:
                if line.strip():
                    result = json.loads(line)
                    done[result["name"]] = result
    rerun = {status.strip() for status in args.rerun.split(",") if status.strip()}
    if rerun:
        todo = [r for r in records if r["name"] in done and done[r["name"]]["status"] in rerun]
        for record in todo:
            del done[record["name"]]
    else:
        todo = [r for r in records if r["name"] not in done]
    print(f"{len(records)} mutants in {args.modules}; {len(done)} already run; {len(todo)} to run", flush=True)
    for function, count in skipped.items():
        print(f"left out: {count} mutants of {function}, which only a subprocess runs", flush=True)
    context = multiprocessing.get_context("spawn")
    log_path = os.path.abspath(args.out) + ".log"

    if not args.skip_control and todo and (rerun or not done):  # a resumed pass had its control run when it started
        every = sorted({t for r in todo for t in r["tests"]}, key=lambda t: (durations.get(t, 1.0), t))
        print(f"control run: {len(every)} tests unchanged ...", flush=True)
        worker = Worker(context, log_path)
        worker.send(None, every, None)
        status, detail, seconds = worker.connection.recv()
        worker.stop()
        if status != SURVIVED:
            sys.exit(f"the control run failed ({detail}): fix the tests or the harness before a mutation pass")
        print(f"control run: all {len(every)} tests pass in the harness ({seconds:.0f} s)", flush=True)

    # tests that killed earlier mutants of a module run first against the next ones (-x stops at the first failure)
    killers = defaultdict(Counter)

    def count_killer(result):
        if result["status"] == KILLED and "::" in result["detail"]:  # the detail names the first failing test
            killers[result["module"]][result["detail"]] += 1

    for result in done.values():
        count_killer(result)
    workers = [Worker(context, log_path) for _ in range(min(args.workers, max(len(todo), 1)))]
    queue = list(todo)
    start = time.perf_counter()
    finished = 0
    with open(args.out, "a") as out:

        def record_result(record, status, detail, seconds):
            nonlocal finished
            result = {k: v for k, v in record.items() if k != "tests"}  # the count of tests, not their names
            result.update(status=status, detail=detail, seconds=round(seconds, 2), tests=len(record["tests"]))
            out.write(json.dumps(result) + "\n")
            out.flush()
            done[record["name"]] = result
            count_killer(result)
            finished += 1
            if finished % 25 == 0 or not queue:
                print(f"{finished}/{len(todo)} mutants in {time.perf_counter() - start:.0f} s", flush=True)

        def feed(worker):
            while queue:
                record = queue.pop(0)
                if not record["tests"]:
                    record_result(record, NOT_COVERED, "no test runs this line", 0.0)
                    continue
                limit = args.timeout_factor * sum(durations.get(t, 1.0) for t in record["tests"]) + 60
                kills = killers[record["module"]]
                tests = sorted(record["tests"], key=lambda t: (-kills[t], durations.get(t, 1.0), t))
                worker.send(record, tests, time.monotonic() + limit)
                return
            worker.job = None

        for worker in workers:
            feed(worker)
        while any(w.job for w in workers):
            busy = [w for w in workers if w.job]
            ready = wait([w.connection for w in busy], timeout=1.0)
            for i, worker in enumerate(workers):
                if not worker.job:
                    continue
                record, deadline = worker.job
                if worker.connection in ready:
                    try:
                        status, detail, seconds = worker.connection.recv()
                    except EOFError:  # the worker died: the mutant crashed the interpreter
                        status, detail, seconds = KILLED, "the worker process died", 0.0
                        worker.stop(kill=True)
                        worker = workers[i] = Worker(context, log_path)
                    record_result(record, status, detail, seconds)
                elif time.monotonic() > deadline:
                    worker.stop(kill=True)
                    record_result(record, TIMEOUT, "past the time limit", 0.0)
                    worker = workers[i] = Worker(context, log_path)
                else:
                    continue
                if worker.served >= args.restart_every and worker.process.is_alive():
                    worker.stop()
                    worker = workers[i] = Worker(context, log_path)
                feed(worker)
        for worker in workers:
            worker.stop()
    print(summary(done.values(), [(r["name"], r["module"]) for r in records]))


def summary(results, planned=None):
    """Markdown: per module, the mutants and how many were killed, timed out, survived, were not covered or not run yet
    (of `planned`, (name, module) pairs; default: the results' own), then the survivors."""
    results = list(results)
    if planned is None:
        planned = [(r["name"], r["module"]) for r in results]
    by_name = {r["name"]: r for r in results}
    counts = defaultdict(Counter)
    for name, module in planned:
        counts[module][by_name[name]["status"] if name in by_name else NOT_RUN] += 1
    columns = (KILLED, TIMEOUT, SURVIVED, NOT_COVERED, ERROR, NOT_RUN)
    lines = ["| module | mutants | " + " | ".join(columns) + " |", "| --- | ---: |" + " ---: |" * len(columns)]
    total = Counter()
    for module in sorted(counts):
        total.update(counts[module])
        row = [str(counts[module][c]) for c in columns]
        lines.append(f"| `{module}` | {sum(counts[module].values())} | " + " | ".join(row) + " |")
    lines.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[c]) for c in columns) + " |")
    planned_names = {name for name, _ in planned}
    survivors = sorted(
        (r for r in results if r["name"] in planned_names and r["status"] in (SURVIVED, NOT_COVERED, ERROR)),
        key=lambda r: (r["module"], r["line"], r["name"]),
    )
    if survivors:
        lines += ["", "Survivors:"]
        lines += [
            f"- {r['module']}:{r['line']} {r['function']} ({r['status']}): `{r['before']}` → `{r['after']}`"
            for r in survivors
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
