"""Runs the ROAR and KAR benchmark on the embedded digits; same as the `pgig-roar-benchmark` command (see --help)."""

from pgig_tf.cli.roar_benchmark import main

if __name__ == "__main__":
    main()
