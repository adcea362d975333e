"""Checks the attribution axioms for every analyzer and writes the table; same as the `pgig-axioms` command."""

from pgig_tf.cli.axioms import main

if __name__ == "__main__":
    main()
