"""The paper's stress test (§3, Fig. 2): patterns, and which method fails which part of it."""

import json

import numpy as np
import pytest

from pgig_tf.cli import stress_test


@pytest.fixture(scope="module")
def result():
    return stress_test.run(mean=0.0, std=0.5, seed=0, steps=25)


def test_model_is_the_target_function(result):
    arrays, summary = result
    assert summary["max_abs_output_error"] < 1e-6


def test_fitted_patterns(result):
    """§3.4: p1 ≈ (-1, 0), p2 = -1."""
    _, summary = result
    p1, p2 = summary["patterns"]["f1"], summary["patterns"]["f2"]
    assert abs(p1[0] + 1.0) < 0.06 and abs(p1[1]) < 0.06
    assert p2 == pytest.approx([-1.0], abs=1e-6)


def test_ig_gives_the_distractor_dimension_weight(result):
    arrays, summary = result
    ig = summary["methods"]["integrated_gradients"]
    assert ig["mean_abs_distractor_dim_x2"] > 0.25
    assert ig["mean_abs_x1_on_plateau"] > 0.8  # and it survives the plateau


def test_pa_is_exactly_zero_on_the_plateau(result):
    arrays, _ = result
    plateau = arrays["z"] > 1
    assert plateau.sum() == 100
    assert np.all(arrays["pattern_attribution"][plateau] == 0.0)
    assert np.abs(arrays["pattern_attribution"][~plateau, 0]).max() > 0.9


def test_pgig_ignores_the_distractor_and_survives_the_plateau(result):
    arrays, summary = result
    pgig, ig = summary["methods"]["pgig"], summary["methods"]["integrated_gradients"]
    assert pgig["mean_abs_distractor_dim_x2"] < 0.1 * ig["mean_abs_distractor_dim_x2"]
    assert pgig["mean_abs_x1_on_plateau"] > 0.8
    # with one unit per layer, every backward kernel w is scaled by its pattern: PGIG = IG * p1 * p2
    p1, p2 = np.array(summary["patterns"]["f1"]), summary["patterns"]["f2"][0]
    np.testing.assert_allclose(arrays["pgig"], arrays["integrated_gradients"] * p1 * p2, rtol=1e-4, atol=1e-6)


def test_script_writes_png_and_json(tmp_path):
    stress_test.main(["--out", str(tmp_path), "--steps", "5"])
    png = (tmp_path / "stress_test.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    summary = json.loads((tmp_path / "stress_test.json").read_text())
    assert summary["settings"]["steps"] == 5 and set(summary["methods"]) == {
        "integrated_gradients",
        "pattern_attribution",
        "pgig",
    }


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_script_distractor_mean_and_std_shape_the_distractor(tmp_path, monkeypatch):
    """--distractor-mean/--distractor-std: eps ~ N(mean, std^2) is the input's second dimension, x2 = eps."""
    from pgig_tf import fit_patterns
    from pgig_tf.datasets.stress_test import stress_data, stress_model

    drawn = []
    monkeypatch.setattr(stress_test, "plot", lambda arrays, path: drawn.append(arrays))
    argv = ["--out", str(tmp_path), "--steps", "2", "--seed", "3"]
    stress_test.main(argv + ["--distractor-mean", "0.3", "--distractor-std", "0.2"])
    summary = json.loads((tmp_path / "stress_test.json").read_text())
    assert summary["settings"]["distractor_mean"] == 0.3 and summary["settings"]["distractor_std"] == 0.2
    x = drawn[0]["x"]
    _, _, _, expected_x, _ = stress_data(mean=0.3, std=0.2, seed=3)
    np.testing.assert_array_equal(x, expected_x)
    eps = drawn[0]["distractor"]
    np.testing.assert_array_equal(eps[:, 0], eps[:, 1])  # the distractor is (1, 1) eps
    np.testing.assert_array_equal(x[:, 1], eps[:, 1].astype(np.float32))  # and the signal is 0 in x2
    # 401 draws: the sample mean is within 4 standard errors (4 * 0.2 / 20) of 0.3, the sample std within 10 %
    assert abs(eps[:, 1].mean() - 0.3) < 0.04 and abs(eps[:, 1].std() - 0.2) < 0.02
    # the patterns are fitted on that data
    direct = fit_patterns(stress_model(), expected_x, kind="relu", verbose=False)
    np.testing.assert_allclose(summary["patterns"]["f1"], direct["f1"].ravel(), rtol=1e-6, atol=1e-7)
    # the defaults (0, 0.5) draw another distractor
    stress_test.main(argv)
    eps = drawn[1]["distractor"][:, 1]
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 0.5) < 0.05
