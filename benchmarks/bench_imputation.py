"""Time of ROAD's noisy linear imputation: the embedded digits default (every curve point) and one 224x224x3 image.

Part 1 imputes, for each of the digits test images (32x32x1), the copies of a ROAD MoRF curve
with 4x4 patches (64 patches, 65 points, a random ranking per image), as `PerturbationCurves`
does, and then times the whole ROAD curve computation on the digits CNN (random weights: the
model's cost does not depend on its training). Part 2 imputes one 224x224x3 image at removal
fractions 0.1..0.9 (random pixels and 8x8 patches) and over a 65-point patch curve.

    PYTHONPATH=$PWD python benchmarks/bench_imputation.py [--images N]
"""

import argparse
import time

import numpy as np

from pgig_tf.datasets.digits import build_digits_cnn, load_digits_images
from pgig_tf.evaluation.imputation import noisy_linear_impute
from pgig_tf.evaluation.perturbation import PerturbationCurves, removal_counts, road_fill


def patch_masks(ranks, counts, patch, size):
    """(len(counts), H, W) bool: the pixels of the first counts[k] patches of one image's ranking."""
    changed = ranks[None] < np.asarray(counts)[:, None, None]
    pixels = changed.repeat(patch, axis=1).repeat(patch, axis=2)
    return np.pad(pixels, [(0, 0), (0, size - pixels.shape[1]), (0, size - pixels.shape[2])])


def digits(num_images):
    _, _, images, _ = load_digits_images(0)
    images = images[:num_images]
    rng = np.random.default_rng(0)
    counts = removal_counts(64)
    start = time.perf_counter()
    for i, image in enumerate(images):
        ranks = rng.permutation(64).reshape(8, 8)
        removed = patch_masks(ranks, counts, 4, 32)
        ids = np.stack([np.full(len(counts), i), np.arange(len(counts))], axis=1)
        road_fill(np.repeat(image[None], len(counts), 0), removed, 0.02, 0, ids)
    seconds = time.perf_counter() - start
    print(
        f"digits 32x32x1: {len(images)} images x {len(counts)} points: imputation {seconds:.1f} s "
        f"({1e3 * seconds / len(images):.1f} ms per image, {1e3 * seconds / (len(images) * len(counts)):.2f} ms "
        "per copy)"
    )

    model = build_digits_cnn()
    engine = PerturbationCurves(model, "morf", "road", patch_size=4, road_noise=0.02, batch_size=64)
    attributions = rng.normal(0, 1, images.shape).astype(np.float32)
    engine.curves(images[:2], attributions[:2])  # trace once
    start = time.perf_counter()
    engine.curves(images, attributions)
    seconds = time.perf_counter() - start
    print(f"digits ROAD MoRF curves (imputation + model calls): {seconds:.1f} s for {len(images)} images")


def large():
    rng = np.random.default_rng(1)
    image = rng.random((1, 224, 224, 3)).astype(np.float32)
    for kind in ("pixels", "8x8 patches"):
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
            if kind == "pixels":
                removed = rng.random((1, 224, 224)) < fraction
            else:
                ranks = rng.permutation(784).reshape(28, 28)
                removed = patch_masks(ranks, [int(round(fraction * 784))], 8, 224)
            start = time.perf_counter()
            noisy_linear_impute(image, removed)
            print(f"224x224x3, {kind}, {fraction:.0%} removed: {time.perf_counter() - start:.2f} s")
    ranks = rng.permutation(784).reshape(28, 28)
    counts = removal_counts(784, 13)[:-1]  # 61 points from 0 to 780 patches; the last (all removed) needs no solve
    start = time.perf_counter()
    for k, count in enumerate(counts):
        noisy_linear_impute(image, patch_masks(ranks, [count], 8, 224), ids=[[0, k]])
    seconds = time.perf_counter() - start
    print(f"224x224x3, one image, {len(counts)} patch-curve points (8x8 patches, 13 per step): {seconds:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=359, help="digits test images (default: all 359)")
    args = parser.parse_args()
    digits(args.images)
    large()


if __name__ == "__main__":
    main()
