"""Runs the image degradation benchmark; same as the `pgig-degradation-benchmark` command (see --help)."""

from pgig_tf.cli.degradation_benchmark import main

if __name__ == "__main__":
    main()
