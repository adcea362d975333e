"""Runs the ground-truth localisation benchmark; same as the `pgig-ground-truth-benchmark` command (see --help)."""

from pgig_tf.cli.ground_truth_benchmark import main

if __name__ == "__main__":
    main()
