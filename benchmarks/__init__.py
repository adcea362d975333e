"""The library's own speed and replica benchmarks (run from the repository root: `python -m benchmarks.bench_speed`)."""
