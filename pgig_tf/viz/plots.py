"""Pictures of attributions: diverging heatmaps (red positive, blue negative), grids, degradation curves."""

import numpy as np


def check_percentile(percentile):
    """`percentile` if it is a number in (0, 100], else a ValueError."""
    if isinstance(percentile, bool) or not np.isscalar(percentile) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    return percentile


def heatmap(attribution, percentile=99.5):
    """A channel-summed map scaled to [-1, 1], symmetric around zero, clipped at a percentile of |map|.

    An all-zero map stays all zero (no division by zero).
    """
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"attribution must be (H, W) or (H, W, C), got shape {a.shape}")
    check_percentile(percentile)
    if not np.all(np.isfinite(a)):
        raise ValueError("attribution contains NaN or Inf")
    limit = np.percentile(np.abs(a), percentile)
    if limit <= 0:
        limit = np.abs(a).max()
    if limit <= 0:
        return np.zeros_like(a)
    return np.clip(a / limit, -1.0, 1.0)


def diverging_rgb(values):
    """(..., 3) colours of values in [-1, 1]: blue (0, 0, 1) at -1, white at 0, red (1, 0, 0) at +1.

    The linear blue-white-red map that matplotlib calls 'bwr', computed exactly (not from a
    256-entry table), so that zero is exactly white.
    """
    v = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
    positive, negative = np.maximum(v, 0.0), np.maximum(-v, 0.0)
    return np.stack([1.0 - negative, 1.0 - positive - negative, 1.0 - positive], axis=-1)


def heatmap_rgb(attribution, percentile=99.5):
    """(H, W, 3) floats in [0, 1]: white at zero, red for positive, blue for negative ('bwr')."""
    return diverging_rgb(heatmap(attribution, percentile))


def image_for_display(image):
    """An image rescaled to [0, 1] for display (grey for one channel)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image[..., 0] if image.shape[-1] == 1 else image


def image_rgb(image):
    """An (H, W, C) image as (H, W, 3) floats in [0, 1]: min-max rescaled, one channel repeated as grey."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (H, W, 1) or (H, W, 3), got shape {image.shape}")
    shown = image_for_display(image)
    return np.repeat(shown[..., None], 3, axis=-1) if shown.ndim == 2 else shown


def overlay(image, attribution, alpha=0.7, percentile=99.5):
    """The heatmap's colours over the image, (H, W, 3) floats in [0, 1].

    Each pixel mixes the image (min-max rescaled, grey for one channel) with the heatmap colour
    in proportion to alpha * |h|, h the heatmap in [-1, 1]: zero attribution shows the image
    unchanged, a clipped maximum shows (1 - alpha) image + alpha red (blue if negative).
    """
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    base = image_rgb(image)
    h = heatmap(attribution, percentile)
    if h.shape != base.shape[:2]:
        raise ValueError(f"attribution of spatial shape {h.shape} does not match image of shape {base.shape[:2]}")
    weight = alpha * np.abs(h)[..., None]
    return (1.0 - weight) * base + weight * diverging_rgb(h)


def image_grid(rows, pad=1, pad_value=1.0, scale=1):
    """One (R*H*scale + (R-1)*pad, C*W*scale + (C-1)*pad, 3) array from R rows of C (H, W, 3) images.

    Each image is enlarged `scale` times (nearest neighbour); `pad` pixels of `pad_value` separate them.
    """
    rows = [[np.asarray(tile, dtype=np.float64) for tile in row] for row in rows]
    if not rows or not rows[0]:
        raise ValueError("rows must hold at least one image")
    shape = rows[0][0].shape
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3), got shape {shape}")
    columns = len(rows[0])
    for row in rows:
        if len(row) != columns:
            raise ValueError(f"every row must hold {columns} images, got a row of {len(row)}")
        for tile in row:
            if tile.shape != shape:
                raise ValueError(f"every image must have shape {shape}, got {tile.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    height, width = shape[0] * scale, shape[1] * scale
    grid = np.full((len(rows) * (height + pad) - pad, columns * (width + pad) - pad, 3), pad_value, dtype=np.float64)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            big = tile.repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = r * (height + pad), c * (width + pad)
            grid[top : top + height, left : left + width] = big
    return grid


def to_uint8(rgb):
    """Floats in [0, 1] as uint8 0..255 (rounded, clipped), e.g. for writing a PNG."""
    return np.round(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def plot_heatmap_grid(images, maps, path, row_titles=None, percentile=99.5):
    """A grid: one row per image (the image first), one column per method; `maps` is name -> (n, H, W, C).

    `row_titles` (one per image) title each row's image, and then every panel has its own title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    rows, cols = len(images), len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image_for_display(image), cmap="gray")
        if row_titles:
            axes[r, 0].set_title(row_titles[r], fontsize=7)
        elif r == 0:
            axes[r, 0].set_title("input", fontsize=7)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(heatmap_rgb(maps[name][r], percentile))
            if r == 0 or row_titles:
                axes[r, c].set_title(name, fontsize=7)
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
        (line,) = axis.plot(k, curve, label=f"{name} (AUPC {result['aupc']:.2f})", lw=1.5, **style)
        axis.fill_between(k, curve - stderr, curve + stderr, color=line.get_color(), alpha=0.15)
    axis.set_xlabel("patches perturbed (most relevant first)")
    axis.set_ylabel("probability of the clean prediction")
    axis.set_title(title)
    axis.legend(fontsize=8, title="lowest AUPC first", title_fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
