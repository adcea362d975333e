"""Pictures of attributions: diverging heatmaps (red positive, blue negative), grids, degradation curves, faithfulness ranks."""

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


def wrapped_name(name, width=10):
    """`name` on two lines if it is longer than `width`: broken after the underscore nearest its middle."""
    underscores = [i for i, char in enumerate(name) if char == "_"]
    if len(name) <= width or not underscores:
        return name
    cut = min(underscores, key=lambda i: abs(i - len(name) / 2))
    return name[: cut + 1] + "\n" + name[cut + 1 :]


def plot_heatmap_grid(images, maps, path, row_titles=None, percentile=99.5):
    """A grid: one row per image (the image first), one column per method; `maps` is name -> (n, H, W, C).

    Method names head the columns; `row_titles` (one per image, e.g. true and predicted class)
    label the rows on the left. Each map is scaled on its own (`heatmap`: divided by its
    `percentile` of |map|, clipped to [-1, 1]) and drawn in the diverging colours of
    `diverging_rgb`; a colour bar says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    names = list(maps)
    rows, cols = len(images), len(names) + 1
    if row_titles is not None and len(row_titles) != rows:
        raise ValueError(f"row_titles must hold one title per image ({rows}), got {len(row_titles)}")
    panel = 1.0  # inches per image at 100 dpi
    label_width = 1.5 if row_titles else 0.3
    # at least 3.4 inches high, so that the colour bar's label fits beside a grid of one or two rows
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(label_width + panel * cols + 1.2, max(0.9 + panel * rows, 3.4)),
        squeeze=False,
        layout="constrained",
    )
    for r, image in enumerate(images):
        axes[r, 0].imshow(image_for_display(image), cmap="gray")
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=13, labelpad=6)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(heatmap_rgb(maps[name][r], percentile))
    for c, title in enumerate(["input"] + [wrapped_name(name) for name in names]):
        axes[0, c].set_title(title, fontsize=11)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    # diverging_rgb is matplotlib's 'bwr' computed exactly, so this bar shows the maps' colours
    bar = fig.colorbar(
        ScalarMappable(Normalize(-1.0, 1.0), "bwr"), ax=axes, ticks=[-1.0, 0.0, 1.0], fraction=0.02, pad=0.01, aspect=30
    )
    bar.ax.set_yticklabels(["-1", "0", "+1"], fontsize=12)
    bar.set_label(f"each map / its own\n{percentile:g}th percentile of |map|\n(clipped to ±1)", fontsize=11)
    fig.suptitle("attributions: red positive, blue negative", fontsize=15)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Every known method's (colour, line style, marker) in degradation plots: no two share a
# colour, and methods whose curves lie close together (IG and SmoothGrad-IG, SmoothGrad² and
# VarGrad) differ in line style and marker as well. The random control is a plain black line.
METHOD_STYLES = {
    "input_t_gradient": ("#ff7f0e", "-", "o"),
    "smoothgrad_ig": ("#17becf", "--", "v"),
    "integrated_gradients": ("#1f77b4", "-", "^"),
    "gradient": ("#9467bd", "-.", "<"),
    "expected_gradients": ("#2ca02c", "--", "P"),
    "smoothgrad_squared": ("#8c564b", "-", "s"),
    "vargrad": ("#e377c2", "--", "D"),
    "pgig": ("#d62728", "-", "*"),
    "guided_backprop": ("#bcbd22", "-.", ">"),
    "pattern_attribution": ("#800000", ":", "X"),
    "pattern_net": ("#e6ab02", "--", "p"),
    "smoothgrad": ("#008080", ":", "h"),
    "noise_baseline_ig": ("#000080", "-.", "8"),
    "smooth_taylor": ("#7f7f7f", ":", "d"),
    "random": ("#000000", "--", ""),
}
# Methods not in the table take these in turn: dash patterns the table does not use, so no
# fallback style equals a table style (30 distinct pairs before the cycle repeats).
FALLBACK_LINESTYLES = ((0, (6, 2)), (0, (1, 1)), (0, (4, 1, 1, 1, 1, 1)))
FALLBACK_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def method_styles(names):
    """name -> (colour, line style, marker) for `names`: `METHOD_STYLES`, then a fallback cycle for other names."""
    styles, unknown = {}, 0
    for name in names:
        if name in METHOD_STYLES:
            styles[name] = METHOD_STYLES[name]
        else:
            linestyle = FALLBACK_LINESTYLES[(unknown // len(FALLBACK_COLOURS)) % len(FALLBACK_LINESTYLES)]
            styles[name] = (
                FALLBACK_COLOURS[unknown % len(FALLBACK_COLOURS)],
                linestyle,
                FALLBACK_MARKERS[unknown % len(FALLBACK_MARKERS)],
            )
            unknown += 1
    return styles


def plot_degradation_curves(methods, path, title="image degradation"):
    """Mean curves with standard-error bands; `methods` is name -> {"curve", "stderr", "aupc"}.

    When every method also has "lerf_curve", "lerf_stderr" and "srg", a second panel shows the
    least-relevant-first curves and the legend gives each method's SRG. Each method has its
    own colour, line style and marker (`method_styles`); the legend, ordered by AUPC, sits
    beside the axes so that it covers no curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = all("lerf_curve" in result and "srg" in result for result in methods.values())
    fig, axes = plt.subplots(1, 2 if both else 1, figsize=(10.0, 4.6) if both else (9.5, 5.2), layout="constrained")
    axes = list(np.atleast_1d(axes))
    ordered = sorted(methods.items(), key=lambda item: item[1]["aupc"])
    styles = method_styles(name for name, _ in ordered)
    panels = [("curve", "stderr", "most relevant first (MoRF; lower is better)")]
    if both:
        panels.append(("lerf_curve", "lerf_stderr", "least relevant first (LeRF; higher is better)"))
    for axis, (key, band, order) in zip(axes, panels):
        for position, (name, result) in enumerate(ordered):
            curve, stderr = np.asarray(result[key]), np.asarray(result[band])
            k = np.arange(len(curve))
            colour, linestyle, marker = styles[name]
            every = max(len(curve) // 8, 1)
            label = f"{name} ({result['aupc']:.2f}" + (f", {result['srg']:.2f})" if both else ")")
            axis.plot(
                k,
                curve,
                color=colour,
                ls=linestyle,
                lw=2.0 if name != "random" else 1.5,
                marker=marker or None,
                markersize=5 if both else 6,
                markevery=(position % every, every),
                label=label,
            )
            axis.fill_between(k, curve - stderr, curve + stderr, color=colour, alpha=0.12, linewidth=0)
        if both:
            axis.set_title(order, fontsize=11)
            axis.set_xlabel("patches perturbed", fontsize=11)
        else:
            axis.set_xlabel("patches perturbed (most relevant first)", fontsize=12)
        axis.tick_params(labelsize=10 if both else 11)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the clean prediction", fontsize=11 if both else 12)
    if both:
        fig.suptitle(title, fontsize=13)
    else:
        axes[0].set_title(f"{title} (steeper is better)", fontsize=13)
    legend_title = (
        "method (AUPC, SRG),\nlowest AUPC first;\nbands: ± 1 standard error"
        if both
        else "method (AUPC), lowest first;\nbands: ± 1 standard error"
    )
    axes[-1].legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize=9 if both else 10.5,
        title=legend_title,
        title_fontsize=9 if both else 10.5,
        handlelength=3.2,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metric_label(metric):
    """A table column's name on two lines: 'srg_own_patch_mean' -> 'SRG\\nown patch mean'; 'deletion' -> 'deletion'."""
    head, _, tail = metric.partition("_")
    if head in ("srg", "morf", "lerf") and tail:
        return {"srg": "SRG", "morf": "MoRF", "lerf": "LeRF"}[head] + "\n" + tail.replace("_", " ")
    return metric.replace("_", " ")


def draw_rank_heatmap(axis, ranks, tied=None, title=None):
    """Ranks of methods (rows) by metric (columns) as coloured cells with their numbers; 1 is best (dark green).

    Args:
        axis: a matplotlib Axes.
        ranks: {metric: {method: rank}}; every metric ranks the same methods (rank 1 = best).
        tied: {metric: {method: bool}}, True where another method has the same rank (shown as "2=").
        title: the axes' title.

    Returns:
        The image drawn (for a colour bar).
    """
    metrics = list(ranks)
    methods = list(ranks[metrics[0]])
    table = np.array([[ranks[metric][method] for metric in metrics] for method in methods], dtype=float)
    worst = max(len(methods), 2)
    image = axis.imshow(table, cmap="RdYlGn_r", vmin=1, vmax=worst, aspect="auto")
    for row, method in enumerate(methods):
        for column, metric in enumerate(metrics):
            rank = int(table[row, column])
            text = f"{rank}=" if tied is not None and tied[metric][method] else str(rank)
            shade = (rank - 1) / (worst - 1)
            colour = "white" if shade < 0.15 or shade > 0.85 else "black"
            axis.text(column, row, text, ha="center", va="center", fontsize=9, color=colour)
    axis.set_xticks(range(len(metrics)))
    axis.set_xticklabels([metric_label(m) for m in metrics], fontsize=8, rotation=90)
    axis.set_yticks(range(len(methods)))
    axis.set_yticklabels(methods, fontsize=9)
    axis.tick_params(length=0)
    if title:
        axis.set_title(title, fontsize=11)
    return image


def draw_mean_curves(axis, curves, fractions, title, xlabel="fraction of patches replaced"):
    """Mean curves of several methods on one axes, each in its `method_styles` style.

    Args:
        axis: a matplotlib Axes.
        curves: {method: (S,) mean output at each point}.
        fractions: (S,) the x values (fraction of units changed).
        title: the axes' title.
        xlabel: the x axis' label.
    """
    styles = method_styles(curves)
    for name, curve in curves.items():
        colour, linestyle, marker = styles[name]
        axis.plot(
            fractions,
            curve,
            color=colour,
            ls=linestyle,
            lw=1.8 if name != "random" else 1.3,
            marker=marker or None,
            markersize=4,
            markevery=max(len(curve) // 8, 1),
            label=name,
        )
    axis.set_xlabel(xlabel, fontsize=10)
    axis.set_ylabel("mean output of the explained class", fontsize=10)
    axis.set_xlim(0, 1)
    axis.set_title(title, fontsize=11)
    axis.grid(alpha=0.3)


def plot_evaluation(ranks, tied, morf, lerf, fractions, path, replacement, title=None):
    """The faithfulness figure: a rank heat map (methods x metrics) beside the mean MoRF and LeRF curves of one replacement.

    Args:
        ranks: {metric: {method: rank}}, as `draw_rank_heatmap`.
        tied: {metric: {method: bool}}, as `draw_rank_heatmap`.
        morf: {method: (S,) mean MoRF curve} under `replacement`.
        lerf: {method: (S,) mean LeRF curve} under `replacement`.
        fractions: (S,) fraction of patches replaced at each point.
        path: the PNG to write.
        replacement: the replacement's name (for the titles).
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = len(next(iter(ranks.values())))
    fig = plt.figure(figsize=(19, max(5.5, 0.42 * methods + 2.6)), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[0.5 * len(ranks) + 1.5, 5, 5])
    heat = fig.add_subplot(grid[0])
    image = draw_rank_heatmap(heat, ranks, tied, "rank per metric (1 best; = tied: intervals overlap)")
    fig.colorbar(image, ax=heat, fraction=0.03, pad=0.01).set_label("rank", fontsize=9)
    label = replacement.replace("_", " ")
    left, right = fig.add_subplot(grid[1]), fig.add_subplot(grid[2], sharey=None)
    draw_mean_curves(left, morf, fractions, f"MoRF, {label}: most relevant first (lower is better)")
    draw_mean_curves(right, lerf, fractions, f"LeRF, {label}: least relevant first (higher is better)")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9, handlelength=3.0)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=90)
    plt.close(fig)
