"""Heatmaps of a Keras model's predictions on image files; same as the `pgig-explain` command (see --help)."""

from pgig_tf.cli.explain import main

if __name__ == "__main__":
    main()
