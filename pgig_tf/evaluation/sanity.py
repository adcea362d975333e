"""Model-randomisation sanity check (Adebayo et al., 2018): do attributions change when the weights do?"""

from dataclasses import dataclass, field

import keras
import numpy as np

from pgig_tf.model.spec import model_io
from pgig_tf.validation import check_inputs, resolve_neurons


def rankdata(values):
    """Ranks 1..n of a 1-D array, ties given the average of the ranks they span (scipy's 'average')."""
    values = np.asarray(values).ravel()
    n = values.size
    sorter = np.argsort(values, kind="mergesort")
    inverse = np.empty(n, dtype=np.intp)
    inverse[sorter] = np.arange(n)
    ordered = values[sorter]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))  # first element of each tie group
    group = np.cumsum(starts)[inverse]  # 1-based tie-group index of each element
    bounds = np.concatenate((np.nonzero(starts)[0], [n]))  # group g spans sorted positions bounds[g-1]..bounds[g]-1
    return 0.5 * (bounds[group] + bounds[group - 1] + 1)


def spearman(a, b):
    """Spearman rank correlation of two equally long arrays (flattened): Pearson of their average-tie ranks.

    NaN when either array is constant (its ranks have no spread, so the correlation is undefined).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs arrays of equal size, got {a.size} and {b.size}")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / denominator, -1.0, 1.0))


def weighted_layers(model, prefix=""):
    """(name, layer) of every leaf layer with weights, bottom-up in graph order; nested models are walked."""
    found = []
    for layer in model.layers:
        name = prefix + layer.name
        if isinstance(layer, keras.Model):
            found.extend(weighted_layers(layer, prefix=name + "/"))
        elif _randomizable(layer):
            found.append((name, layer))
    return found


def _randomizable(layer):
    return [w for w in layer.weights if not _is_running_statistic(w)]


def _is_running_statistic(variable):
    # Batch-norm running mean/variance are statistics, not learned parameters; a re-drawn variance
    # could be negative, so they are kept.
    return variable.name.rsplit("/", 1)[-1].startswith("moving_")


def _redraw(array, rng):
    """A new array of the same shape from N(0, std(array)); the RMS replaces a zero std (constant arrays)."""
    scale = float(np.std(array)) or float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))
    return rng.normal(0.0, scale, array.shape).astype(array.dtype)


@dataclass
class RandomizationResult:
    """What `cascading_randomization` found.

    Row s of the (steps x inputs) arrays is step s: step 0 is the unchanged clone, step j >= 1 has
    `layers[:j]` randomised (cascading) or only `layers[j-1]` (independent).
    """

    layers: list  # names of the weighted layers, in the order they were randomised (top first)
    correlations: np.ndarray  # (steps, inputs) Spearman of |maps| (or signed maps if absolute=False)
    signed_correlations: np.ndarray  # (steps, inputs) Spearman of the signed maps
    neuron_selection: np.ndarray  # the original model's output index per input, used at every step
    absolute: bool = True
    mode: str = "cascading"
    reference_maps: np.ndarray = None  # the original model's maps (return_maps=True)
    maps: np.ndarray = None  # (steps, inputs, ...) maps of each step (return_maps=True)
    extra: dict = field(default_factory=dict)

    @property
    def step_labels(self):
        return ["original"] + list(self.layers)

    @property
    def mean(self):
        """Mean correlation per step over the inputs (NaN entries, from constant maps, left out)."""
        return _nanmean_rows(self.correlations)

    @property
    def signed_mean(self):
        return _nanmean_rows(self.signed_correlations)

    @property
    def std(self):
        """Per-step spread of the correlation over the inputs (standard deviation, NaN entries left out)."""
        return _nanstd_rows(self.correlations)

    def to_dict(self):
        """A JSON-ready summary (no maps)."""

        def clean(array):
            return [[None if np.isnan(v) else float(v) for v in row] for row in np.atleast_2d(array)]

        return {
            "layers": list(self.layers),
            "step_labels": self.step_labels,
            "mode": self.mode,
            "absolute": self.absolute,
            "neuron_selection": [int(i) for i in self.neuron_selection],
            "mean": clean(self.mean[None])[0],
            "std": clean(self.std[None])[0],
            "correlations": clean(self.correlations),
            "signed_mean": clean(self.signed_mean[None])[0],
            "signed_correlations": clean(self.signed_correlations),
        }


def _nanmean_rows(array):
    counts = np.sum(~np.isnan(array), axis=1)
    sums = np.nansum(array, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nanstd_rows(array):
    mean = _nanmean_rows(array)
    counts = np.sum(~np.isnan(array), axis=1)
    squares = np.nansum((array - mean[:, None]) ** 2, axis=1)
    return np.where(counts > 0, np.sqrt(squares / np.maximum(counts, 1)), np.nan)


def clone_with_weights(model):
    """A clone of `model` (new variables) holding a copy of its weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def cascading_randomization(
    model,
    analyzer_factory,
    x,
    neuron_selection="max_activation",
    seed=0,
    absolute=True,
    *,
    mode="cascading",
    return_maps=False,
):
    """Model-parameter randomisation test (Adebayo et al., 2018) for any pgig_tf analyzer.

    On a clone of `model` (the model itself is never changed), the weighted layers are randomised
    from the output layer down: at step j the top j weighted layers hold new weights (`mode=
    "cascading"`), or only the j-th from the top (`mode="independent"`). Every weight array of a
    randomised layer, biases included (batch-norm running statistics excluded), is redrawn from
    N(0, std of the original array; its RMS if the array is constant) by `numpy.random.default_rng(seed)`, layers top-down, arrays in
    `layer.weights` order; the draws of a layer are the same in both modes.

    `analyzer_factory(m)` returns a ready analyzer for model `m` (fit pattern analyzers inside it:
    the patterns depend on the weights); it is called once for `model` (the reference maps) and once
    per step on the clone. `neuron_selection` is resolved on the original model once and the same
    output indices are explained at every step. Per input, the Spearman rank correlation of the
    flattened reference and step maps is computed on absolute values (`absolute=True`, as in the
    paper) and on the signed maps; NaN where a map is constant.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    input_shape, width = model_io(model)
    x = check_inputs(x, input_shape)
    targets = resolve_neurons(neuron_selection, x.shape[0], width, lambda: model.predict(x, verbose=0))

    reference = np.asarray(analyzer_factory(model).analyze(x, neuron_selection=targets))

    clone = clone_with_weights(model)
    originals, clones = weighted_layers(model), weighted_layers(clone)
    if [n for n, _ in originals] != [n for n, _ in clones]:  # pragma: no cover - clone_model keeps names
        raise RuntimeError("the clone's weighted layers do not match the model's")
    top_down = clones[::-1]
    rng = np.random.default_rng(seed)
    # Every layer's new weights are drawn up front, so both modes use the same draws.
    drawn = [[_redraw(keras.ops.convert_to_numpy(w), rng) for w in _randomizable(layer)] for _, layer in top_down]
    kept = [[np.array(keras.ops.convert_to_numpy(w)) for w in _randomizable(layer)] for _, layer in top_down]

    def assign(layer, arrays):
        for variable, array in zip(_randomizable(layer), arrays):
            variable.assign(array)

    maps = []
    for step in range(len(top_down) + 1):
        if step > 0:
            if mode == "independent" and step > 1:
                assign(top_down[step - 2][1], kept[step - 2])  # restore the previous layer
            assign(top_down[step - 1][1], drawn[step - 1])
        maps.append(np.asarray(analyzer_factory(clone).analyze(x, neuron_selection=targets)))
    maps = np.stack(maps)

    flat_ref = reference.reshape(len(x), -1)
    flat_maps = maps.reshape(maps.shape[0], len(x), -1)
    signed = np.array([[spearman(flat_ref[i], step[i]) for i in range(len(x))] for step in flat_maps])
    if absolute:
        correlations = np.array(
            [[spearman(np.abs(flat_ref[i]), np.abs(step[i])) for i in range(len(x))] for step in flat_maps]
        )
    else:
        correlations = signed.copy()
    return RandomizationResult(
        layers=[name for name, _ in top_down],
        correlations=correlations,
        signed_correlations=signed,
        neuron_selection=targets,
        absolute=absolute,
        mode=mode,
        reference_maps=reference if return_maps else None,
        maps=maps if return_maps else None,
    )


def plot_randomization(result, path, title=None):
    """PNG of the mean Spearman correlation (band: ± one std over the inputs) per step; one line per analyzer.

    `result` is a `RandomizationResult` or a dict name -> result (all over the same model's layers).
    The figure says which way is good: the maps of a method that depends on what the model
    learned decorrelate from the original ones as layers are randomised (correlation near 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pgig_tf.viz.plots import method_styles

    results = result if isinstance(result, dict) else {"": result}
    first = next(iter(results.values()))
    labels = first.step_labels
    steps = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(labels) + 4.0), 5.2), layout="constrained")
    styles = method_styles([name for name in results if name])
    for name, res in results.items():
        if res.step_labels != labels:
            raise ValueError(f"result {name!r} was computed over other layers than the first result")
        mean, std = res.mean, res.std
        colour, linestyle, marker = styles.get(name, ("tab:blue", "-", "o"))
        ax.plot(steps, mean, color=colour, ls=linestyle, lw=2, marker=marker or "o", markersize=6, label=name or None)
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(steps)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=11)
    ax.tick_params(axis="y", labelsize=11)
    ax.set_ylim(-1.05, 1.05)
    kind = "cascading" if first.mode == "cascading" else "independent"
    ax.set_xlabel(f"layers randomised from the top ({kind})", fontsize=12)
    of = "|attribution|" if first.absolute else "attribution"
    ax.set_ylabel(f"Spearman rank correlation of {of}\nwith the original (mean ± std over inputs)", fontsize=12)
    ax.set_title(
        (title or "Model-randomisation sanity check")
        + "\ngood: falling to 0, as maps that depend on the learned weights decorrelate once those are random",
        fontsize=12,
    )
    # the direction, beside the axis: an arrow from 1 (maps ignore the weights) down to 0 (decorrelated)
    top, zero = (1.0 + 1.05) / 2.1, 1.05 / 2.1  # correlations 1 and 0 as fractions of the axis
    ax.annotate(
        "",
        xy=(1.025, zero),
        xytext=(1.025, top),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.5},
    )
    ax.text(1.045, top, "worse:\nmaps ignore\nthe weights", transform=ax.transAxes, fontsize=11, va="top", ha="left")
    ax.text(1.045, zero, "better:\ndecorrelated", transform=ax.transAxes, fontsize=11, va="center", ha="left")
    ax.grid(alpha=0.3)
    if any(results):
        ax.legend(loc="upper left", bbox_to_anchor=(1.035, 0.4), fontsize=11, frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "RandomizationResult",
    "cascading_randomization",
    "clone_with_weights",
    "plot_randomization",
    "rankdata",
    "spearman",
    "weighted_layers",
]
