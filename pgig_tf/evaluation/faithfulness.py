"""Faithfulness per image (MoRF, LeRF and SRG under four replacements; deletion; insertion), its resumable runner and summary.

For one batch of images and one method's maps, `FaithfulnessMetrics.evaluate` ranks the units
once (patches for MoRF/LeRF, pixels for deletion/insertion) and computes every curve of
`CURVES` from those ranks (`perturbation.PerturbationCurves`), giving per image:

- `morf_<r>` and `lerf_<r>`: the areas (`Curves.area`, over the fraction of patches replaced)
  of the most- and least-relevant-first curves with replacement r in `REPLACEMENTS`;
- `srg_<r>` = `lerf_<r>` - `morf_<r>`, the symmetric relevance gain (Blücher et al., TMLR 2024);
- `deletion` and `insertion` (Petsiuk et al., BMVC 2018, as `perturbation.deletion_curves` and
  `insertion_curves` define them): pixels set to a constant (0) most relevant first, and restored
  into a blurred image most relevant first.

`evaluate_batches` runs analyzers over batches of images, computes every map once and every
metric on it, and keeps per-image scores and summed curves in an `EvaluationState`, written
atomically as a checked `.npz` checkpoint that a restarted run with the same settings resumes.
`summarise` turns per-image scores into means, percentile bootstrap intervals, ranks with ties
and paired SRG differences (`statistics`).
"""

import json
import time

import numpy as np

from pgig_tf.evaluation.perturbation import (
    DEFAULT_BLUR_SIGMA,
    DEFAULT_ROAD_NOISE,
    ORDERS,
    REPLACEMENTS,
    PerturbationCurves,
    deletion_curves,
    insertion_curves,
    relevance_ranks,
    symmetric_relevance_gain,
)
from pgig_tf.files import other_kind, read_header, read_npz, unreadable, write_npz
from pgig_tf.validation import check_positive_int

# metric -> True if higher is better, in the order of the tables.
METRICS = {
    **{f"srg_{r}": True for r in REPLACEMENTS},
    "deletion": False,
    "insertion": True,
    **{f"morf_{r}": False for r in REPLACEMENTS},
    **{f"lerf_{r}": True for r in REPLACEMENTS},
}
SRG_METRICS = tuple(f"srg_{r}" for r in REPLACEMENTS)
# The curves computed per map; each metric but SRG is the area of one of them.
CURVES = tuple(f"{order}_{r}" for r in REPLACEMENTS for order in ORDERS) + ("deletion", "insertion")
DEFINITIONS = {
    "morf_<r>": "area (trapezoid over the fraction of patches replaced, 0 to 1) of the output of the explained "
    "class with the most relevant patches replaced first by replacement r; lower is better",
    "lerf_<r>": "the same area with the least relevant patches replaced first; higher is better",
    "srg_<r>": "symmetric relevance gain lerf_<r> - morf_<r> (Blücher et al., TMLR 2024), per image; higher is "
    "better, 0 in expectation for a random ranking",
    "deletion": "area over the fraction of pixels set to the deletion value, most relevant first (Petsiuk et al., "
    "BMVC 2018); lower is better",
    "insertion": "area over the fraction of pixels restored into the blurred image, most relevant first "
    "(Petsiuk et al., BMVC 2018); higher is better",
    "replacements": "image_mean: the image's per-channel mean; own_patch_mean: each patch's own per-channel mean; "
    "blur: a Gaussian blur of the image; road: ROAD's noisy linear imputation (Rong et al., ICML 2022)",
}
STATE_KEY = "__pgig_tf_evaluation__"
STATE_VERSION = 1


def units_per_step(num_units, num_steps):
    """Units changed per curve step so that the curve takes at most `num_steps` steps over all `num_units`: ceil(N / steps)."""
    num_units = check_positive_int(num_units, "num_units")
    num_steps = check_positive_int(num_steps, "num_steps")
    return -(-num_units // num_steps)


class FaithfulnessMetrics:
    """Every curve of `CURVES` and every metric of `METRICS` for images and their maps.

    Args:
        model: Keras image model (batch, H, W, C) with one output vector.
        patch_size: side of the square patches of the MoRF/LeRF curves.
        patch_step: patches replaced per step of the MoRF/LeRF curves (every curve runs to the whole image).
        pixel_step: pixels changed per step of the deletion and insertion curves.
        blur_sigma: sigma in pixels of the 'blur' replacement and of insertion's blurred start.
        road_noise: the 'road' replacement's noise standard deviation (absolute, in the images' units).
        deletion_value: the constant deleted pixels are set to (Petsiuk et al.: 0).
        seed: ROAD's noise seed; copy (image i, step k) draws from the stream of (seed, first_index + i, k).
        batch_size: copies per model call.
        images_per_call: images per compiled call of the non-ROAD curves.
        apply_softmax: as `PerturbationCurves` (None: unless the model ends in a softmax).
    """

    def __init__(
        self,
        model,
        patch_size=1,
        patch_step=1,
        pixel_step=1,
        blur_sigma=DEFAULT_BLUR_SIGMA,
        road_noise=DEFAULT_ROAD_NOISE,
        deletion_value=0.0,
        seed=0,
        batch_size=64,
        images_per_call=16,
        apply_softmax=None,
    ):
        self.model = model
        self.patch_size = check_positive_int(patch_size, "patch_size")
        common = dict(
            blur_sigma=blur_sigma,
            road_noise=road_noise,
            seed=seed,
            batch_size=batch_size,
            images_per_call=images_per_call,
            apply_softmax=apply_softmax,
        )
        # One engine (one compiled function) per replacement: the LeRF order is exactly the reverse
        # of the MoRF order (as PerturbationCurves(order="lerf") makes it), so the MoRF engine
        # computes both from the ranks and their reverse.
        self.engines = {
            replacement: PerturbationCurves(
                model, "morf", replacement, patch_size=patch_size, units_per_step=patch_step, **common
            )
            for replacement in REPLACEMENTS
        }
        self.engines["deletion"] = deletion_curves(
            model, deletion_value, patch_size=1, units_per_step=pixel_step, **common
        )
        self.engines["insertion"] = insertion_curves(model, "blur", patch_size=1, units_per_step=pixel_step, **common)

    def engine(self, curve):
        """The `PerturbationCurves` that computes `curve` (a name of `CURVES`; LeRF from the reversed ranking)."""
        return self.engines[curve.partition("_")[2] if curve.startswith(ORDERS) else curve]

    def fractions(self, image_shape):
        """{curve: (S,) fraction of units changed at each point} for images of `image_shape`."""
        return {curve: self.engine(curve).fractions(image_shape) for curve in CURVES}

    def evaluate(self, images, maps, targets, first_index=0):
        """Scores and curves of `images` (n, H, W, C) ranked by `maps` (same shape), for the classes `targets`.

        Args:
            images: float32 array (n, H, W, C).
            maps: the attributions, shaped like `images`.
            targets: (n,) ints, the explained class of each image.
            first_index: the global index of images[0] (keys ROAD's noise).

        Returns:
            (scores, curves): {metric: (n,) float64} for every metric of `METRICS`, and
            {curve: `Curves`} for every curve of `CURVES`.

        Raises:
            ValueError: `maps` not shaped like `images`, or the curves' own argument errors.
        """
        images = np.asarray(images, dtype=np.float32)
        maps = np.asarray(maps)
        if maps.shape != images.shape:
            raise ValueError(f"maps must be shaped like images {images.shape}, got {maps.shape}")
        targets = np.asarray(targets)
        patches = relevance_ranks(maps, self.patch_size)  # ranked once for the eight MoRF/LeRF curves
        ranks = {"morf": patches, "lerf": patches[0].size - 1 - patches}  # LeRF: the exact reverse
        pixels = relevance_ranks(maps, 1)  # and once for deletion and insertion
        curves = {}
        for curve in CURVES:
            order = curve.partition("_")[0]
            given = ranks[order] if order in ranks else pixels
            curves[curve] = self.engine(curve).curves_for_ranks(images, given, targets, first_index)
        scores = {}
        for replacement in REPLACEMENTS:
            morf, lerf = curves[f"morf_{replacement}"], curves[f"lerf_{replacement}"]
            scores[f"morf_{replacement}"] = morf.area
            scores[f"lerf_{replacement}"] = lerf.area
            scores[f"srg_{replacement}"] = symmetric_relevance_gain(morf, lerf)
        scores["deletion"] = curves["deletion"].area
        scores["insertion"] = curves["insertion"].area
        return {metric: scores[metric] for metric in METRICS}, curves


class EvaluationState:
    """What a run has computed so far: per-image scores, summed curves and seconds per method, per-image targets.

    Args:
        fingerprint: JSON-ready dict of the settings that decide the numbers (a checkpoint of other
            settings is refused).
        methods: method names, in table order.
        curve_lengths: {curve: points per curve} (`CURVES`).
        info: JSON-ready dict kept with the state (e.g. what the model and data are).
    """

    def __init__(self, fingerprint, methods, curve_lengths, info=None):
        self.fingerprint = fingerprint
        self.methods = list(methods)
        self.info = dict(info or {})
        self.batches_done = 0
        self.finished = False
        self.scores = {m: {k: np.zeros(0) for k in METRICS} for m in self.methods}
        self.curve_sums = {m: {c: np.zeros(int(curve_lengths[c])) for c in CURVES} for m in self.methods}
        self.seconds = {m: {"attribution": 0.0, "metrics": 0.0} for m in self.methods}
        self.targets = np.zeros(0, np.int64)
        self.predictions = np.zeros(0, np.int64)
        self.labels = np.zeros(0, np.int64)  # -1 where the true class is not known

    @property
    def num_images(self):
        return len(self.targets)

    def add(self, results, targets, predictions, labels=None):
        """Adds one batch: `results` {method: (scores, curves, attribution seconds, metric seconds)}."""
        for name, (scores, curves, attribution_seconds, metric_seconds) in results.items():
            for metric in METRICS:
                self.scores[name][metric] = np.concatenate([self.scores[name][metric], scores[metric]])
            for curve in CURVES:
                self.curve_sums[name][curve] = self.curve_sums[name][curve] + curves[curve].values.astype(
                    np.float64
                ).sum(axis=0)
            self.seconds[name]["attribution"] += attribution_seconds
            self.seconds[name]["metrics"] += metric_seconds
        count = len(targets)
        labels = np.full(count, -1) if labels is None else np.asarray(labels)
        self.targets = np.concatenate([self.targets, np.asarray(targets, np.int64)])
        self.predictions = np.concatenate([self.predictions, np.asarray(predictions, np.int64)])
        self.labels = np.concatenate([self.labels, labels.astype(np.int64)])

    def mean_curves(self):
        """{method: {curve: (S,) mean over the images}}."""
        return {m: {c: s / max(self.num_images, 1) for c, s in sums.items()} for m, sums in self.curve_sums.items()}

    def save(self, path):
        """Writes the state to `path` as a checked `.npz` (atomically: a kill mid-write leaves the previous file)."""
        header = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "methods": self.methods,
            "info": self.info,
            "batches_done": self.batches_done,
            "finished": self.finished,
            "seconds": self.seconds,
        }
        arrays = {STATE_KEY: np.array(json.dumps(header))}
        arrays.update(targets=self.targets, predictions=self.predictions, labels=self.labels)
        for name in self.methods:
            for metric in METRICS:
                arrays[f"scores/{name}/{metric}"] = self.scores[name][metric]
            for curve in CURVES:
                arrays[f"curve_sums/{name}/{curve}"] = self.curve_sums[name][curve]
        write_npz(path, arrays)

    @classmethod
    def load(cls, path, fingerprint=None):
        """The state saved at `path`.

        Raises:
            CorruptFileError: the file is missing, damaged or of another kind.
            ValueError: `fingerprint` is given and differs from the saved one (the message names the differing settings).
        """
        expected = "a pgig-evaluate checkpoint (scores.npz)"
        remedy = "Delete it (or run with --fresh) to start over."
        entries, _ = read_npz(path, expected, remedy)
        if STATE_KEY not in entries:
            how = other_kind(entries, STATE_KEY)
            raise unreadable(path, expected, f"it is {how}" if how else "it has no evaluation header", remedy)
        header = read_header(entries, STATE_KEY, path, expected, remedy)
        if header.get("version") != STATE_VERSION:
            raise unreadable(path, expected, f"it has format version {header.get('version')!r}", remedy)
        if fingerprint is not None and header["fingerprint"] != fingerprint:
            saved = header["fingerprint"]
            keys = sorted(set(saved) | set(fingerprint), key=str)
            differing = [
                f"{k}: {saved.get(k)!r} there, {fingerprint.get(k)!r} now"
                for k in keys
                if saved.get(k) != fingerprint.get(k)
            ]
            raise ValueError(f"{path} holds a run with other settings ({'; '.join(differing)})")
        try:
            lengths = {c: len(entries[f"curve_sums/{header['methods'][0]}/{c}"]) for c in CURVES}
            state = cls(header["fingerprint"], header["methods"], lengths, header["info"])
            state.batches_done, state.finished = header["batches_done"], header["finished"]
            state.seconds = header["seconds"]
            state.targets, state.predictions, state.labels = (
                entries["targets"],
                entries["predictions"],
                entries["labels"],
            )
            for name in state.methods:
                for metric in METRICS:
                    state.scores[name][metric] = entries[f"scores/{name}/{metric}"]
                for curve in CURVES:
                    state.curve_sums[name][curve] = entries[f"curve_sums/{name}/{curve}"]
        except (KeyError, IndexError) as error:
            raise unreadable(path, expected, f"the entry {error} is missing", remedy) from None
        return state

    @classmethod
    def merged(cls, shards):
        """One state holding the shards' images in order, as one run over all of them would.

        Args:
            shards: the finished states of shards 0, 1, ... of one run, in that order; each
                fingerprint holds its `shard_index`, and they agree on everything else.

        Raises:
            ValueError: a shard is unfinished, out of order, or of other settings or methods.
        """
        shards = list(shards)
        if not shards:
            raise ValueError("no shard states to merge")
        common = {k: v for k, v in shards[0].fingerprint.items() if k != "shard_index"}
        for position, shard in enumerate(shards):
            if shard.fingerprint.get("shard_index") != position:
                raise ValueError(f"shard {position} holds shard_index {shard.fingerprint.get('shard_index')!r}")
            if not shard.finished:
                raise ValueError(f"shard {position} is not finished ({shard.batches_done} batches done)")
            own = {k: v for k, v in shard.fingerprint.items() if k != "shard_index"}
            if own != common or shard.methods != shards[0].methods:
                differing = sorted(k for k in set(own) | set(common) if own.get(k) != common.get(k))
                raise ValueError(f"shard {position} was run with other settings ({', '.join(differing) or 'methods'})")
        lengths = {c: len(shards[0].curve_sums[shards[0].methods[0]][c]) for c in CURVES}
        state = cls(common, shards[0].methods, lengths, shards[0].info)
        state.batches_done = sum(shard.batches_done for shard in shards)
        state.finished = True
        for name in state.methods:
            for metric in METRICS:
                state.scores[name][metric] = np.concatenate([shard.scores[name][metric] for shard in shards])
            for curve in CURVES:
                state.curve_sums[name][curve] = sum(shard.curve_sums[name][curve] for shard in shards)
            for key in ("attribution", "metrics"):
                state.seconds[name][key] = sum(shard.seconds[name][key] for shard in shards)
        for key in ("targets", "predictions", "labels"):
            setattr(state, key, np.concatenate([getattr(shard, key) for shard in shards]))
        return state


def evaluate_batches(
    analyzers, metrics, batches, state, checkpoint=None, checkpoint_every=1, first_index=0, predict=None, progress=None
):
    """Adds to `state` every analyzer's scores on each batch it does not hold yet, saving it as it goes.

    Each map is computed once per method and batch and every metric is evaluated on it; images
    stream through in the given batches, so memory does not grow with their number (but for the
    per-image scores). The analyzers' random draws (and ROAD's noise) are keyed by each image's
    index in the whole set (`first_index` + its position in the run), so a resumed run, another
    batching or a shard of the set draws exactly what one uninterrupted run draws.

    Args:
        analyzers: {method: analyzer}, the methods of `state` (each seeded with the run's seed).
        metrics: a `FaithfulnessMetrics`.
        batches: iterable of (images, labels or None, targets or None); targets None explains
            the class the model predicts for the clean image.
        state: an `EvaluationState`; its first `batches_done` batches are skipped.
        checkpoint: path the state is saved to every `checkpoint_every` batches and at the end (None: never).
        first_index: the index of the run's first image in the whole set (a shard's start).
        predict: function of images -> model outputs (n, classes); default `predict_batches(metrics.model, .)`.
        progress: a `progress.Progress` (or None) updated after each batch.

    Returns:
        `state`, with `finished` set.
    """
    from pgig_tf.evaluation.benchmark import predict_batches
    from pgig_tf.validation import check_first_index

    predict = predict or (lambda x: predict_batches(metrics.model, x))
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    first_index = check_first_index(first_index)
    for index, (images, labels, targets) in enumerate(batches):
        if index < state.batches_done:
            continue  # counted before a restart
        predictions = np.argmax(np.asarray(predict(images)).reshape(len(images), -1), axis=1)
        targets = predictions if targets is None else np.asarray(targets)
        start = first_index + state.num_images
        results = {}
        for name, analyzer in analyzers.items():
            began = time.perf_counter()
            maps = np.asarray(analyzer.analyze(images, neuron_selection=targets, first_index=start))
            middle = time.perf_counter()
            scores, curves = metrics.evaluate(images, maps, targets, start)
            results[name] = (scores, curves, middle - began, time.perf_counter() - middle)
        state.add(results, targets, predictions, labels)
        state.batches_done = index + 1
        if checkpoint is not None and state.batches_done % checkpoint_every == 0:
            state.save(checkpoint)
        if progress is not None:
            progress.update(state.batches_done)
    state.finished = True
    if checkpoint is not None:
        state.save(checkpoint)
    return state


def summarise(scores, resamples=1000, seed=0, confidence=0.95):
    """Means, bootstrap intervals, ranks and paired SRG differences of per-image scores.

    Every interval resamples the same image indices (one `seed` for all), so the methods'
    intervals and the paired differences are over the same resampled image sets.

    Args:
        scores: {method: {metric: (n,) values}} with the metrics of `METRICS`, n >= 2.
        resamples: bootstrap resamples.
        seed: the bootstrap seed.
        confidence: the intervals' nominal coverage.

    Returns:
        {"methods": {method: {metric: mean, metric_ci: [low, high], metric_rank: int,
        metric_tied: bool}}, "ranks": {metric: {method: rank}}, "srg_differences": {replacement:
        {"a - b": {"mean", "ci", "excludes_zero"}}} for every pair of methods a before b}.
    """
    from pgig_tf.evaluation.statistics import bootstrap_ci, paired_difference_ci, ranks_with_ties

    names = list(scores)
    methods = {name: {} for name in names}
    ranks = {}
    for metric, higher in METRICS.items():
        means, intervals = [], []
        for name in names:
            mean, low, high = bootstrap_ci(scores[name][metric], confidence, resamples, seed)
            methods[name][metric] = mean
            methods[name][f"{metric}_ci"] = [low, high]
            means.append(mean)
            intervals.append((low, high))
        ranking = ranks_with_ties(means, intervals, higher_is_better=higher)
        ranks[metric] = {name: int(rank) for name, rank in zip(names, ranking.ranks)}
        for name, rank, tied in zip(names, ranking.ranks, ranking.tied):
            methods[name][f"{metric}_rank"] = int(rank)
            methods[name][f"{metric}_tied"] = bool(tied)
    differences = {}
    for replacement in REPLACEMENTS:
        metric = f"srg_{replacement}"
        differences[replacement] = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                mean, low, high = paired_difference_ci(
                    scores[a][metric], scores[b][metric], confidence, resamples, seed
                )
                differences[replacement][f"{a} - {b}"] = {
                    "mean": mean,
                    "ci": [low, high],
                    "excludes_zero": bool(low > 0 or high < 0),
                }
    return {"methods": methods, "ranks": ranks, "srg_differences": differences}


__all__ = [
    "CURVES",
    "DEFINITIONS",
    "EvaluationState",
    "FaithfulnessMetrics",
    "METRICS",
    "SRG_METRICS",
    "evaluate_batches",
    "summarise",
    "units_per_step",
]
