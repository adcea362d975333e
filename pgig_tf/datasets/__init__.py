"""Data the benchmarks run on: digits and their CNN, ImageNet/TFDS and VGG16, the stress test, ground-truth images."""
