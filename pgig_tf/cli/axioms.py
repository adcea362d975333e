"""Checks the axioms of Integrated Gradients (Sundararajan et al., 2017): completeness, sensitivity, dummy,
implementation invariance, linearity and symmetry, for every analyzer on tiny constructed networks; writes
axioms.json and axioms.md."""

import argparse
import json
import os
import time


def main(argv=None):
    from pgig_tf.cli import console
    from pgig_tf.names import ANALYZER_NAMES

    console.prepare()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out",
        default=os.path.join("results", "axioms"),
        help="output folder for axioms.json and axioms.md (default: results/axioms/)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the networks and every sampling method")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(ANALYZER_NAMES),
        metavar="NAME",
        help="analyzers to check (default: all of " + ", ".join(ANALYZER_NAMES) + ")",
    )
    parser.add_argument("--num-data", type=int, default=512, help="samples that fit the patterns (default 512)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short budget ladders and default budgets for symmetry (a smoke test, not the verdicts)",
    )
    parser.add_argument(
        "--invariance-seeds",
        type=int,
        default=None,
        metavar="N",
        help="repeat PatternAttribution's and PGIG's implementation-invariance check on N seeds "
        "from --seed on (default 5; 1 with --quick)",
    )
    parser.add_argument("--docs", metavar="PATH", help="also write the Markdown report here (e.g. docs/axioms.md)")
    args = parser.parse_args(argv)
    if args.invariance_seeds is None:
        args.invariance_seeds = 1 if args.quick else 5
    if args.invariance_seeds < 1:
        parser.error(f"--invariance-seeds must be at least 1, got {args.invariance_seeds}")
    if args.num_data < 32:
        parser.error(f"--num-data must be at least 32 (Expected Gradients' background), got {args.num_data}")

    console.import_tensorflow()
    from pgig_tf.evaluation.axioms import main_table, run_axioms, to_markdown

    start = time.perf_counter()
    report = run_axioms(
        seed=args.seed,
        methods=args.methods,
        quick=args.quick,
        num_data=args.num_data,
        invariance_seeds=args.invariance_seeds,
        progress=print,
    )
    markdown = to_markdown(report)
    os.makedirs(args.out, exist_ok=True)
    json_path, md_path = os.path.join(args.out, "axioms.json"), os.path.join(args.out, "axioms.md")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    paths = [json_path, md_path]
    for path in [md_path] + ([args.docs] if args.docs else []):
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(markdown)
    if args.docs:
        paths.append(args.docs)
    print()
    print(main_table(report))
    if "pgig_implementation_invariance" in report:
        print()
        print(report["pgig_implementation_invariance"]["answer"])
    print(f"\nwrote {', '.join(paths)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
