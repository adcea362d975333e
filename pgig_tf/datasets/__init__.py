"""Data the benchmarks run on: the embedded digits and their CNN, ImageNet/TFDS and VGG16, the stress test's data."""
