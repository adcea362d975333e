"""Runs the faithfulness evaluation; same as the `pgig-evaluate` command (see --help)."""

from pgig_tf.cli.evaluate import main

if __name__ == "__main__":
    main()
