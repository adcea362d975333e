"""Measures every analyzer against the plain compiled gradient; same as `pgig-bench-speed` (see --help)."""

from pgig_tf.cli.bench_speed import main

if __name__ == "__main__":
    main()
