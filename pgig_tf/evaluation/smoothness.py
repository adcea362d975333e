"""Smoothness of attribution maps: multi-scale average total variation and its area, AUTVC (SmoothTaylor paper).

Each map is summed over channels and divided by its largest absolute value (an all-zero map
stays zero); at each scale s it is average-pooled over s x s blocks, and the total variation
is the mean absolute difference between horizontally and vertically neighbouring values
(the two means added). AUTVC is the trapezoid area of TV over the scale index (unit
spacing); lower means a smoother map. Default scales: 1, 2, 4, 8, keeping those no larger
than half the map's shorter side.
"""

import numpy as np

DEFAULT_SCALES = (1, 2, 4, 8)


def total_variation(maps):
    """Mean |horizontal difference| + mean |vertical difference| of each 2-D map in (n, H, W)."""
    maps = np.asarray(maps, dtype=np.float64)
    horizontal = np.abs(np.diff(maps, axis=2)).mean(axis=(1, 2)) if maps.shape[2] > 1 else 0.0
    vertical = np.abs(np.diff(maps, axis=1)).mean(axis=(1, 2)) if maps.shape[1] > 1 else 0.0
    return horizontal + vertical


def multiscale_total_variation(attributions, scales=None):
    """(n, len(scales)): total variation of each normalised channel-summed map at each pooling scale."""
    a = np.asarray(attributions, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"attributions must be images (n, H, W, C), got shape {a.shape}")
    maps = a.sum(axis=-1)
    peak = np.abs(maps).max(axis=(1, 2), keepdims=True)
    maps = maps / np.where(peak > 0, peak, 1.0)
    n, height, width = maps.shape
    if scales is None:
        scales = [s for s in DEFAULT_SCALES if s <= min(height, width) // 2] or [1]
    result = []
    for s in scales:
        if s > min(height, width) // 2:
            raise ValueError(f"scale {s} is too large for {height}x{width} maps (at most {min(height, width) // 2})")
        rows, cols = height // s, width // s
        pooled = maps[:, : rows * s, : cols * s].reshape(n, rows, s, cols, s).mean(axis=(2, 4))
        result.append(total_variation(pooled))
    return np.stack(result, axis=1)


def autvc(attributions, scales=None) -> np.ndarray:
    """Area under the multi-scale total-variation curve per map (trapezoid, unit spacing; lower = smoother).

    Args:
        attributions: maps (n, H, W[, C]); channels are summed.
        scales: average-pooling factors (default 1, 2, 4, 8; those that fit the map).

    Returns:
        One AUTVC per map (SmoothTaylor paper), float64.
    """
    tv = multiscale_total_variation(attributions, scales)
    if tv.shape[1] == 1:
        return tv[:, 0]
    return (tv[:, 1:] + tv[:, :-1]).sum(axis=1) / 2.0
