"""Runs the PGIG stress test (paper §3, Fig. 2); same as the `pgig-stress-test` command."""

from pgig_tf.cli.stress_test import main

if __name__ == "__main__":
    main()
