"""Pictures: heatmaps, grids, overlays, degradation curves, and the training callback that draws them."""
