"""Pictures of attributions: diverging heatmaps (red positive, blue negative), grids, degradation curves."""

import numpy as np


def heatmap(attribution, percentile=99.5):
    """A channel-summed map scaled to [-1, 1], symmetric around zero, clipped at a percentile of |map|.

    An all-zero map stays all zero (no division by zero).
    """
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"attribution must be (H, W) or (H, W, C), got shape {a.shape}")
    limit = np.percentile(np.abs(a), percentile)
    if limit <= 0:
        limit = np.abs(a).max()
    if limit <= 0:
        return np.zeros_like(a)
    return np.clip(a / limit, -1.0, 1.0)


def heatmap_rgb(attribution, percentile=99.5):
    """(H, W, 3) floats in [0, 1]: white at zero, red for positive, blue for negative (matplotlib 'bwr')."""
    from matplotlib import colormaps

    return colormaps["bwr"]((heatmap(attribution, percentile) + 1.0) / 2.0)[..., :3]


def image_for_display(image):
    """An image rescaled to [0, 1] for display (grey for one channel)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image[..., 0] if image.shape[-1] == 1 else image


def plot_heatmap_grid(images, maps, path, row_titles=None, percentile=99.5):
    """A grid: one row per image (the image first), one column per method; `maps` is name -> (n, H, W, C)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    rows, cols = len(images), len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image_for_display(image), cmap="gray")
        axes[r, 0].set_ylabel(row_titles[r] if row_titles else "", fontsize=8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(heatmap_rgb(maps[name][r], percentile))
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
        if r == 0:
            axes[r, 0].set_title("input", fontsize=7)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle("attributions (red positive, blue negative)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_degradation_curves(methods, path, title="image degradation (steeper is better)"):
    """Mean curves with standard-error bands; `methods` is name -> {"curve", "stderr", "aupc"}; legend by AUPC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 5.5))
    ordered = sorted(methods.items(), key=lambda item: item[1]["aupc"])
    for name, result in ordered:
        curve, stderr = np.asarray(result["curve"]), np.asarray(result["stderr"])
        k = np.arange(len(curve))
        style = {"color": "black", "ls": "--"} if name == "random" else {}
        line, = axis.plot(k, curve, label=f"{name} (AUPC {result['aupc']:.2f})", lw=1.5, **style)
        axis.fill_between(k, curve - stderr, curve + stderr, color=line.get_color(), alpha=0.15)
    axis.set_xlabel("patches perturbed (most relevant first)")
    axis.set_ylabel("probability of the clean prediction")
    axis.set_title(title)
    axis.legend(fontsize=8, title="lowest AUPC first", title_fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
