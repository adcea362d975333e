"""The speed benchmark's bookkeeping: evaluations per method, paired limit timing, one trace, the memory worker."""

import statistics
import types

import keras
import numpy as np
import pytest

from benchmarks import bench_speed
from benchmarks.bench_speed import (
    SPEED_METHODS,
    GradientLimit,
    evaluations,
    memory_worker,
    paired_times,
    run_worker,
    time_analyzer,
)


def test_every_timed_method_runs_about_25_evaluations():
    assert {name: evaluations(name, s) for name, s in SPEED_METHODS.items()} == {
        name: 1
        if name in ("gradient", "input_t_gradient", "guided_backprop", "pattern_net", "pattern_attribution")
        else 25
        for name in SPEED_METHODS
    }


def test_paired_times_alternate_the_limit_and_the_method(conv_model):
    limit = GradientLimit(conv_model, repeats=1, candidate_batch_sizes=[2, 4])
    calls = []
    gradient_at_best = limit.call_at(limit.best_batch_size)
    limit.call_at = lambda b: lambda: (calls.append(("limit", b)), gradient_at_best())
    method_seconds, limit_seconds = paired_times(lambda: calls.append(("method",)), limit, repeats=3)
    best = limit.best_batch_size
    assert calls == [("limit", best), ("method",)] * 4  # warm-up, then 3 rounds
    assert len(method_seconds) == len(limit_seconds) == 3 and min(limit_seconds) > 0


@pytest.mark.parametrize("name", ["pgig", "smoothgrad"])
def test_time_analyzer_ratio_is_the_median_of_its_rounds(conv_model, name):
    patterns = {l.name: np.ones(l.kernel.shape, np.float32) for l in conv_model.layers if hasattr(l, "kernel")}
    limit = GradientLimit(conv_model, repeats=1, candidate_batch_sizes=[8])
    row = time_analyzer(
        conv_model, name, {"steps": 4} if name == "pgig" else {"samples": 4}, 8, patterns, None, limit, repeats=3
    )
    assert row["images"] == 2 and row["chunk"] == 8 and row["evaluations_per_image"] == 4
    assert row["ratio"] == statistics.median(row["ratio_rounds"]) and len(row["ratio_rounds"]) == 3
    per_evaluation = [m / (2 * 4) for m in row["method_rounds"]]
    np.testing.assert_allclose(row["ratio_rounds"], np.divide(per_evaluation, row["limit_rounds"]), rtol=1e-12)
    assert np.median(row["method_rounds"]) / 2 == pytest.approx(row["seconds_per_image"], rel=1e-12)
    assert row["traces_after_repeats"] == 1  # warm-up and 3 repeats reuse one trace


@pytest.mark.parametrize("platform, maxrss, megabytes", [("linux", 3 * 1024, 3.0), ("darwin", 3 * 2**20, 3.0)])
def test_peak_rss_reads_getrusage_in_the_platforms_unit(monkeypatch, platform, maxrss, megabytes):
    usage = types.SimpleNamespace(getrusage=lambda who: types.SimpleNamespace(ru_maxrss=maxrss), RUSAGE_SELF=0)
    monkeypatch.setattr(bench_speed, "resource", usage)
    monkeypatch.setattr(bench_speed.sys, "platform", platform)
    assert bench_speed.peak_rss_mb() == megabytes


def test_without_the_resource_module_memory_is_skipped_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(bench_speed, "resource", None)
    assert bench_speed.peak_rss_mb() is None
    assert bench_speed.memory_section("digits", "unused") == {"skipped": "no resource module on this platform"}
    assert "skipped" in capsys.readouterr().out


def test_memory_worker_measures_one_analyze(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, activation="relu", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.save(tmp_path / "tiny.keras")
    row = memory_worker(
        {
            "model": str(tmp_path / "tiny.keras"),
            "cache_dir": str(tmp_path),
            "method": "integrated_gradients",
            "settings": {"steps": 4},
            "batch_size": 8,
        }
    )
    assert set(row) == {"peak_mb", "peak_before_analyze_mb", "analyze_mb", "peak_at_start_mb"}
    assert row["peak_mb"] >= row["peak_before_analyze_mb"] >= row["peak_at_start_mb"] > 0
    assert row["analyze_mb"] == row["peak_mb"] - row["peak_before_analyze_mb"]


def test_worker_process_gets_its_arguments_as_json_and_reports_its_error():
    # `python -m benchmarks.bench_speed --worker JSON` in a fresh process; a spec without a model
    # fails before TensorFlow is imported, and its traceback comes back in the error
    with pytest.raises(RuntimeError, match="(?s)exit code 1.*KeyError: 'model'"):
        run_worker({"cache_dir": "unused", "method": "gradient"})


def test_a_method_entry_names_a_path_method_and_optionally_its_integration_rule():
    assert bench_speed.method_spec("pgig") == ("pgig", {"steps": 25})
    assert bench_speed.method_spec("pgig@gausslegendre") == ("pgig", {"steps": 25, "method": "gausslegendre"})
    assert bench_speed.method_spec("integrated_gradients@riemann_trapezoid")[1]["method"] == "riemann_trapezoid"
    with pytest.raises(SystemExit, match="unknown method 'pgi'"):
        bench_speed.method_spec("pgi@gausslegendre")
    with pytest.raises(SystemExit, match="'smoothgrad@gausslegendre' needs a path method"):
        bench_speed.method_spec("smoothgrad@gausslegendre")
    with pytest.raises(SystemExit, match="'pgig@simpson' needs a path method and a rule of riemann_right"):
        bench_speed.method_spec("pgig@simpson")
