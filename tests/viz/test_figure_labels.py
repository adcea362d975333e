"""What the shipped figures say: the stress test's panel letters, the sanity check's good direction."""

import matplotlib.figure
import numpy as np
import pytest

from pgig_tf.evaluation.sanity import RandomizationResult, plot_randomization


@pytest.fixture
def recorded(monkeypatch):
    """The texts of every figure saved in the test, instead of writing it."""
    figures = []

    def record(fig, *args, **kwargs):
        figures.append(
            {
                "titles": [ax.get_title() for ax in fig.axes],
                "texts": [t.get_text() for ax in fig.axes for t in ax.texts],
                "legends": [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_legend()],
                "lines": [
                    (line.get_color(), line.get_linestyle())
                    for ax in fig.axes
                    for line in ax.get_lines()
                    if line.get_label() and not line.get_label().startswith("_")
                ],
                "arrow": next(
                    (
                        (tuple(np.round(t.xyann, 6)), tuple(np.round(t.xy, 6)))
                        for ax in fig.axes
                        for t in ax.texts
                        if getattr(t, "arrow_patch", None) is not None
                    ),
                    None,
                ),
            }
        )

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def test_stress_test_panels_are_lettered_a_to_g(recorded, tmp_path):
    from pgig_tf.cli import stress_test

    z = np.linspace(-2, 2, 9)
    arrays = {
        "z": z,
        "y": z,
        **{
            key: np.stack([z, -z], axis=1)
            for key in ("signal", "distractor", "x", "integrated_gradients", "pattern_attribution", "pgig")
        },
    }
    stress_test.plot(arrays, tmp_path / "s.png")
    titles = [title for title in recorded[0]["titles"] if title]
    assert [title[:3] for title in titles] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)"]
    assert titles[4:] == ["(e) Integrated Gradients", "(f) PatternAttribution", "(g) Pattern-Guided IG"]
    assert recorded[0]["legends"] == [["x1 (signal dimension)", "x2 (distractor dimension)"]]


def test_sanity_figure_says_low_correlation_is_good(recorded, tmp_path):
    correlations = np.array([[1.0, 1.0], [0.6, 0.4], [0.1, -0.1]])
    results = {
        name: RandomizationResult(
            layers=["d2", "d1"],
            correlations=correlations * scale,
            signed_correlations=correlations,
            neuron_selection=np.zeros(2, int),
        )
        for name, scale in (("gradient", 1.0), ("pgig", 0.5), ("my_method", 0.8))
    }
    plot_randomization(results, tmp_path / "r.png", title="check")
    figure = recorded[0]
    assert figure["titles"][0] == (
        "check\ngood: falling to 0, as maps that depend on the learned weights decorrelate once those are random"
    )
    assert figure["texts"] == ["", "worse:\nmaps ignore\nthe weights", "better:\ndecorrelated"]  # "" is the arrow
    fraction = lambda correlation: round((correlation + 1.05) / 2.1, 6)  # noqa: E731 (y limits -1.05, 1.05)
    assert figure["arrow"] == ((1.025, fraction(1.0)), (1.025, fraction(0.0)))  # from correlation 1 down to 0
    assert figure["legends"] == [["gradient", "pgig", "my_method"]]
    assert len(set(figure["lines"])) == 3  # each method its own colour and line style, as in curves.png
