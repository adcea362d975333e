"""Fits patterns for a Keras model on a dataset; same as the `pgig-fit-patterns` command (see --help)."""

from pgig_tf.cli.fit_patterns import main

if __name__ == "__main__":
    main()
