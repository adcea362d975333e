"""Judging attributions: degradation curves, smoothness, the model-randomisation check, the benchmark runner, the axioms."""
