"""Runs the model-randomisation sanity check; same as the `pgig-sanity-check` command (see --help)."""

from pgig_tf.cli.sanity_check import main

if __name__ == "__main__":
    main()
