"""Command-line entry points (also runnable from `scripts/`)."""
