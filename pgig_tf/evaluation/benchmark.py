"""The degradation benchmark runner: methods x batches -> MoRF and LeRF curves and areas with bootstrap CIs; checked, resumable, shardable.

Progress is a set of running sums per method (curve sums and squares for both orders, AUTVC
sums, seconds) plus each image's areas (for the bootstrap intervals), written to a JSON
checkpoint every few batches. A restarted run with the same settings, model, patterns and
data skips the batches already counted (it checks each skipped batch's images against the
SHA-256 stored for it); shards are contiguous slices of the images whose checkpoints
`merge_states` adds up once every shard is complete. Every random draw is keyed by the
image's index in the whole set (`first_index`), so shards and resumed runs give the numbers
of one uninterrupted run.
"""

import hashlib
import itertools
import json
import math
import os
import time

import numpy as np

from pgig_tf.evaluation.degradation import aupc
from pgig_tf.evaluation.smoothness import autvc
from pgig_tf.evaluation.statistics import bootstrap_ci
from pgig_tf.files import atomic_write, unreadable
from pgig_tf.names import DEFAULT_METHODS, PAPER_METHODS  # noqa: F401 (kept importable from here)
from pgig_tf.progress import Progress

CHECKPOINT_FORMAT = 2  # 2: both orders, per-image areas, batch sizes and SHA-256s, the run's identity
CONFIDENCE = 0.95
RESAMPLES = 1000  # bootstrap resamples of every interval, drawn with seed BOOTSTRAP_SEED
BOOTSTRAP_SEED = 0
CHECKPOINT = "a degradation benchmark checkpoint (state-shard*.json)"
FRESH = "Delete it, or run again with --fresh to start over."
AREA_KEYS = ("aupc", "lerf_auc", "srg")


class MethodTotals:
    """Running sums for one method, and each image's MoRF and LeRF areas (`degradation.aupc` units)."""

    ARRAYS = ("curve_sum", "curve_sum_sq", "lerf_sum", "lerf_sum_sq", "aupc_values", "lerf_values")
    NUMBERS = ("count", "autvc_sum", "autvc_sum_sq", "attribution_seconds", "degradation_seconds")

    def __init__(self, num_points, lerf=False):
        self.lerf = bool(lerf)
        self.count = 0
        self.curve_sum = np.zeros(num_points)
        self.curve_sum_sq = np.zeros(num_points)
        self.lerf_sum = np.zeros(num_points if lerf else 0)
        self.lerf_sum_sq = np.zeros(num_points if lerf else 0)
        self.aupc_values = np.zeros(0)
        self.lerf_values = np.zeros(0)
        self.autvc_sum = 0.0
        self.autvc_sum_sq = 0.0
        self.attribution_seconds = 0.0
        self.degradation_seconds = 0.0

    def add(self, curves, smoothness, attribution_seconds, degradation_seconds, lerf_curves=None):
        """Counts a batch: its MoRF `curves` (n, K+1), AUTVC values (n,), seconds, and LeRF curves if kept."""
        curves = np.asarray(curves, dtype=np.float64)
        if self.lerf != (lerf_curves is not None):
            raise ValueError("lerf_curves must be given exactly when the totals keep LeRF curves")
        self.count += len(curves)
        self.curve_sum += curves.sum(axis=0)
        self.curve_sum_sq += (curves**2).sum(axis=0)
        self.aupc_values = np.concatenate([self.aupc_values, aupc(curves)])
        if self.lerf:
            lerf_curves = np.asarray(lerf_curves, dtype=np.float64)
            self.lerf_sum += lerf_curves.sum(axis=0)
            self.lerf_sum_sq += (lerf_curves**2).sum(axis=0)
            self.lerf_values = np.concatenate([self.lerf_values, aupc(lerf_curves)])
        self.autvc_sum += float(np.sum(smoothness))
        self.autvc_sum_sq += float(np.sum(np.square(smoothness)))
        self.attribution_seconds += attribution_seconds
        self.degradation_seconds += degradation_seconds

    def merge(self, other):
        """Adds the totals of the images that follow (the next shard); per-image values are appended in order."""
        if self.lerf != other.lerf or len(self.curve_sum) != len(other.curve_sum):
            raise ValueError("totals of runs with different curves cannot be merged")
        for key in self.NUMBERS + ("curve_sum", "curve_sum_sq", "lerf_sum", "lerf_sum_sq"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.aupc_values = np.concatenate([self.aupc_values, other.aupc_values])
        self.lerf_values = np.concatenate([self.lerf_values, other.lerf_values])

    def to_json(self):
        return {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in vars(self).items()}

    @classmethod
    def from_json(cls, data):
        """Totals from `to_json`'s dict; raises ValueError for missing, mistyped, non-finite or inconsistent entries."""
        if not isinstance(data, dict):
            raise ValueError(f"totals must be a JSON object, got {type(data).__name__}")
        expected = set(cls.ARRAYS + cls.NUMBERS) | {"lerf"}
        if set(data) != expected:
            missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
            raise ValueError(f"totals have missing entries {missing} and unknown entries {extra}")
        if not isinstance(data["lerf"], bool):
            raise ValueError(f"'lerf' must be true or false, got {data['lerf']!r}")
        count = data["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"'count' must be a non-negative integer, got {count!r}")
        totals = cls(len(data["curve_sum"]) if isinstance(data["curve_sum"], list) else 0, data["lerf"])
        for key in cls.NUMBERS[1:]:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key!r} must be a finite number, got {value!r}")
            setattr(totals, key, float(value))
        totals.count = count
        for key in cls.ARRAYS:
            value = data[key]
            if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"{key!r} must be a list of numbers")
            array = np.asarray(value, dtype=np.float64)
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{key!r} contains NaN or Inf")
            setattr(totals, key, array)
        totals._check_consistent()
        return totals

    def _check_consistent(self):
        points = len(self.curve_sum)
        if points < 2 or len(self.curve_sum_sq) != points:
            raise ValueError(f"curve sums must have one entry per curve point (>= 2), got {points}")
        lerf_points = points if self.lerf else 0
        if len(self.lerf_sum) != lerf_points or len(self.lerf_sum_sq) != lerf_points:
            raise ValueError(f"LeRF sums must have {lerf_points} entries, got {len(self.lerf_sum)}")
        if len(self.aupc_values) != self.count or len(self.lerf_values) != (self.count if self.lerf else 0):
            raise ValueError(
                f"'count' says {self.count} images but there are {len(self.aupc_values)} MoRF and "
                f"{len(self.lerf_values)} LeRF areas"
            )
        # the per-image areas and the curve sums must describe the same curves (trapezoids are linear)
        for values, sums in ((self.aupc_values, self.curve_sum), (self.lerf_values, self.lerf_sum)):
            if len(values) and not math.isclose(values.sum(), aupc(sums), rel_tol=1e-9, abs_tol=1e-9 * len(values)):
                raise ValueError(
                    f"the per-image areas add up to {values.sum():.6g} but the curve sums give {aupc(sums):.6g}"
                )

    def summary(self):
        """Mean curves, their standard errors, areas of the mean curves with 95% bootstrap CIs, AUTVC and timings.

        `aupc` is the MoRF area of the mean curve (`degradation.aupc`, lower is better),
        `lerf_auc` the LeRF area (higher is better) and `srg` = lerf_auc - aupc (higher is
        better). Each `<key>_ci` is the percentile bootstrap interval of the mean of the
        per-image values over images (`RESAMPLES` resamples, seed `BOOTSTRAP_SEED`; None for
        fewer than 2 images).
        """
        n = self.count
        mean, stderr = _mean_and_stderr(self.curve_sum, self.curve_sum_sq, n)
        autvc_mean = self.autvc_sum / n
        autvc_var = max(self.autvc_sum_sq / n - autvc_mean**2, 0.0) * n / max(n - 1, 1)
        seconds = self.attribution_seconds + self.degradation_seconds
        steps = len(mean) - 1
        result = {
            "num_images": n,
            "curve": mean.tolist(),
            "stderr": stderr.tolist(),
            "aupc": float(aupc(mean)),
            "aupc_ci": _interval(self.aupc_values),
            "aupc_per_patch": float(aupc(mean)) / steps,
        }
        if self.lerf:
            lerf_mean, lerf_stderr = _mean_and_stderr(self.lerf_sum, self.lerf_sum_sq, n)
            result.update(
                lerf_curve=lerf_mean.tolist(),
                lerf_stderr=lerf_stderr.tolist(),
                lerf_auc=float(aupc(lerf_mean)),
                lerf_auc_ci=_interval(self.lerf_values),
                srg=float(aupc(lerf_mean)) - float(aupc(mean)),
                srg_ci=_interval(self.lerf_values - self.aupc_values),
            )
        result.update(
            autvc=autvc_mean,
            autvc_stderr=float(np.sqrt(autvc_var / n)),
            seconds=seconds,
            seconds_per_image=seconds / n,
            attribution_seconds_per_image=self.attribution_seconds / n,
            degradation_seconds_per_image=self.degradation_seconds / n,
        )
        return result

    def per_image(self, key):
        """(n,) each image's value of `key`: 'aupc', 'lerf_auc' or 'srg'."""
        if key == "aupc":
            return self.aupc_values
        if not self.lerf:
            raise ValueError(f"{key!r} needs LeRF curves, which this run did not compute")
        return self.lerf_values if key == "lerf_auc" else self.lerf_values - self.aupc_values


def _mean_and_stderr(total, total_sq, n):
    mean = total / n
    variance = np.maximum(total_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, np.sqrt(variance / n)


def _interval(values):
    if len(values) < 2:
        return None
    _, low, high = bootstrap_ci(values, CONFIDENCE, RESAMPLES, BOOTSTRAP_SEED)
    return [low, high]


def pairwise_differences(totals, key):
    """Every pair of methods' paired difference of `key` ('aupc', 'lerf_auc' or 'srg') with its 95% bootstrap CI.

    Returns a list of {"methods": [a, b], "difference": mean(a - b), "ci": [low, high],
    "excludes_zero": bool}, resampling the same images for both methods (one bootstrap seed:
    `statistics.paired_difference_ci`).
    """
    names = sorted(totals)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        difference = totals[a].per_image(key) - totals[b].per_image(key)
        interval = _interval(difference)
        pairs.append(
            {
                "methods": [a, b],
                "difference": float(difference.mean()),
                "ci": interval,
                "excludes_zero": bool(interval is not None and (interval[0] > 0 or interval[1] < 0)),
            }
        )
    return pairs


def state_path(out_dir, shard_index, num_shards):
    return os.path.join(out_dir, f"state-shard{shard_index}of{num_shards}.json")


def read_state(path):
    """The checkpoint at `path`, checked; raises `files.CorruptFileError` naming the file for anything unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise unreadable(path, CHECKPOINT, f"it is not complete JSON ({error})", FRESH) from None
    except IsADirectoryError:
        raise unreadable(path, CHECKPOINT, "it is a directory", FRESH) from None
    try:
        _check_state(state)
    except ValueError as error:
        raise unreadable(path, CHECKPOINT, str(error), FRESH) from None
    state["totals"] = {name: MethodTotals.from_json(t) for name, t in state["totals"].items()}
    return state


def _check_state(state):
    if not isinstance(state, dict):
        raise ValueError(f"it holds a JSON {type(state).__name__}, not an object")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"it has checkpoint format {state.get('format')!r}, this version reads {CHECKPOINT_FORMAT}")
    for key in ("fingerprint", "identity", "batches_done", "num_batches", "batch_sizes", "batch_sha256", "totals"):
        if key not in state:
            raise ValueError(f"its {key!r} entry is missing")
    done, total = state["batches_done"], state["num_batches"]
    for key, value in (("batches_done", done), ("num_batches", total)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key!r} must be a non-negative integer, got {value!r}")
    if done > total:
        raise ValueError(f"it counts {done} batches done of {total}")
    sizes, hashes = state["batch_sizes"], state["batch_sha256"]
    if not (isinstance(sizes, list) and isinstance(hashes, list) and len(sizes) == len(hashes) == done):
        raise ValueError(f"it lists the sizes and SHA-256s of {len(sizes)} and {len(hashes)} batches, not {done}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError("its batch sizes must be positive integers")
    if not isinstance(state["totals"], dict) or not isinstance(state["identity"], dict):
        raise ValueError("its 'totals' and 'identity' entries must be objects")
    methods = state["fingerprint"].get("methods") if isinstance(state["fingerprint"], dict) else None
    if done and methods is not None and set(state["totals"]) != set(methods):
        missing, extra = sorted(set(methods) - set(state["totals"])), sorted(set(state["totals"]) - set(methods))
        raise ValueError(f"its totals lack the methods {missing} and hold unknown ones {extra}")
    for name, data in state["totals"].items():
        try:
            totals = MethodTotals.from_json(data)
        except ValueError as error:
            raise ValueError(f"the totals of {name!r} are damaged: {error}") from None
        if totals.count != sum(sizes):
            raise ValueError(f"the totals of {name!r} count {totals.count} images, its batches hold {sum(sizes)}")


def load_state(path, fingerprint):
    """The checkpoint at `path` if it belongs to a run with the same settings; None if there is none.

    Raises `files.CorruptFileError` if the file cannot be used, ValueError if its settings differ.
    """
    if not os.path.lexists(path):
        return None
    state = read_state(path)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{path} holds a checkpoint of a run with other settings; use another --out or delete it.\n"
            f"  checkpoint: {state['fingerprint']}\n  this run:   {fingerprint}"
        )
    return state


def save_state(path, state):
    data = dict(state, totals={name: t.to_json() for name, t in state["totals"].items()})
    with atomic_write(path) as handle:  # a kill mid-write never leaves a broken checkpoint
        json.dump(data, handle)


def batch_sha256(images):
    """SHA-256 (hex) of a batch of images: dtype, shape and bytes (a resumed run checks it is given the same data)."""
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(json.dumps([images.dtype.str, list(images.shape)]).encode())
    digest.update(images.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def check_identity(saved, current, where):
    """Raises ValueError naming what differs between the run identity `saved` (in checkpoint `where`) and `current`."""
    if saved == current:
        return
    keys = sorted(set(saved) | set(current))
    differing = [key for key in keys if saved.get(key) != current.get(key)]
    details = "; ".join(f"{key}: {saved.get(key)!r} there, {current.get(key)!r} here" for key in differing)
    raise ValueError(
        f"{where} was written by a run with another {', '.join(differing)} ({details}); resuming would mix two "
        "runs into one result. Use another --out, or --fresh to start over."
    )


def predict_batches(model, x, batch_size=32):
    """`model.predict(x)` in batches of `batch_size` through `predict_on_batch`, without a tf.data pipeline.

    The same compiled prediction on the same batches as `model.predict` (default batch size
    32); under `tf.config.experimental.enable_op_determinism()` Keras' tf.data pipeline for a
    last, partial batch makes TensorFlow log an internal error line, which this avoids. A model
    built under a multi-replica strategy goes through `model.predict`, which gathers the replicas.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # a model built under a strategy splits predict_on_batch's batch over its replicas; predict gathers
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    )


def choose_examples(classes, count):
    """Indices of `count` samples showing as many classes as possible: the first sample of each class, in order.

    If there are fewer classes than `count`, the earliest remaining samples fill up; the
    indices are returned in increasing order.
    """
    firsts, seen = [], set()
    for index, label in enumerate(np.asarray(classes).tolist()):
        if label not in seen:
            seen.add(label)
            firsts.append(index)
    chosen = set(firsts)
    rest = [index for index in range(len(classes)) if index not in chosen]
    return sorted((firsts + rest)[:count])


def _curves(maker, images, maps, targets, first_index):
    """(n, K+1) curves from a `Degrader` or a `perturbation.PerturbationCurves` (given the images' global index)."""
    from pgig_tf.evaluation.perturbation import PerturbationCurves

    if isinstance(maker, PerturbationCurves):
        return maker.curves(images, maps, targets, first_index=first_index).values
    return maker.curves(images, maps, targets)


def run_benchmark(
    analyzers,
    degrader,
    batches,
    num_batches,
    checkpoint,
    fingerprint,
    smoothness_scales=None,
    checkpoint_every=5,
    lerf=None,
    first_index=0,
    identity=None,
    keep_examples=0,
    examples_path=None,
    verbose=True,
):
    """Runs every analyzer on every batch and returns (the state with its totals, the kept examples).

    Args:
        analyzers: name -> analyzer.
        degrader: the MoRF curves: a `degradation.Degrader` or a `perturbation.PerturbationCurves`.
        batches: an iterable of (images, targets or None) or (images, targets or None, true
            labels); targets None explains the clean prediction.
        num_batches: how many batches `batches` yields.
        checkpoint: path of the JSON checkpoint; batches already in it are skipped after their
            images are checked against the SHA-256 stored for them.
        fingerprint: the settings that decide the numbers; a checkpoint of other settings is refused.
        smoothness_scales: AUTVC scales (`smoothness.autvc`).
        checkpoint_every: batches between checkpoints.
        lerf: the LeRF curves (same kind and schedule as `degrader`, order 'lerf'), or None.
        first_index: the index of the first image in the whole set (a shard's start): analyzers
            and ROAD curves key their random draws by each image's global index.
        identity: what else must match for a resume (e.g. SHA-256s of the model's weights and
            the patterns, library versions); a checkpoint with another identity is refused.
        keep_examples: images of the first batch, of different classes where possible (true
            labels if given, else predicted; see `choose_examples`), kept with their maps for
            plotting: each method's maps and "__images__", "__predictions__" (predicted
            classes), "__labels__" (true classes, if given).
        examples_path: if given, the kept examples are written there (`.npz`, atomically) right
            after the first batch, before any checkpoint counts it, so a resumed run has them.
        verbose: print progress.
    """
    identity = dict(identity or {})
    state = load_state(checkpoint, fingerprint)
    if state is None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "identity": identity,
            "batches_done": 0,
            "num_batches": num_batches,
            "batch_sizes": [],
            "batch_sha256": [],
            "totals": {},
        }
    else:
        check_identity(state["identity"], identity, checkpoint)
        if state["num_batches"] != num_batches:
            raise ValueError(
                f"{checkpoint} was written by a run of {state['num_batches']} batches; this run has {num_batches}. "
                "Use another --out, or --fresh to start over."
            )
    examples = {}
    progress = Progress(num_batches, "batch", start=state["batches_done"]) if verbose else None
    start = first_index
    for index, batch in enumerate(batches):
        images, targets = batch[0], batch[1]
        if index < state["batches_done"]:  # counted before a restart: only check that it is the same data
            if state["batch_sizes"][index] != len(images) or state["batch_sha256"][index] != batch_sha256(images):
                raise ValueError(
                    f"batch {index}'s images differ from those {checkpoint} counted: the data changed since. "
                    "Use another --out, or --fresh to start over."
                )
            start += len(images)
            continue
        labels = batch[2] if len(batch) > 2 else None
        predictions = None
        if targets is None or (index == 0 and keep_examples):
            predictions = np.argmax(predict_batches(degrader.model, images).reshape(len(images), -1), axis=1)
        if targets is None:
            targets = predictions
        kept = None
        if index == 0 and keep_examples:
            kept = choose_examples(predictions if labels is None else labels, keep_examples)
            examples["__images__"] = images[kept]
            examples["__predictions__"] = predictions[kept]
            if labels is not None:
                examples["__labels__"] = np.asarray(labels)[kept]
        for name, analyzer in analyzers.items():
            began = time.perf_counter()
            maps = analyzer.analyze(images, neuron_selection=targets, first_index=start)
            middle = time.perf_counter()
            morf = _curves(degrader, images, maps, targets, start)
            lerf_curves = None if lerf is None else _curves(lerf, images, maps, targets, start)
            end = time.perf_counter()
            if name not in state["totals"]:
                state["totals"][name] = MethodTotals(morf.shape[1], lerf=lerf is not None)
            state["totals"][name].add(
                morf, autvc(maps, smoothness_scales), middle - began, end - middle, lerf_curves=lerf_curves
            )
            if kept is not None:
                examples[name] = maps[kept]
        if kept is not None and examples_path is not None:
            with atomic_write(examples_path, "wb") as handle:
                np.savez(handle, **examples)
        state["batches_done"] = index + 1
        state["batch_sizes"].append(int(len(images)))
        state["batch_sha256"].append(batch_sha256(images))
        start += len(images)
        if state["batches_done"] % checkpoint_every == 0:
            save_state(checkpoint, state)
        if progress is not None:
            progress.update(index + 1)
    if state["batches_done"] != num_batches:
        raise ValueError(f"the batches ended after {state['batches_done']} of the {num_batches} announced")
    save_state(checkpoint, state)
    return state, examples


def merge_states(paths):
    """Adds up the totals of shard checkpoints, in the order given (shard 0 first).

    Every checkpoint must be complete and come from one run's settings and identity; raises
    `files.CorruptFileError` for an unreadable checkpoint and ValueError otherwise.
    """
    states = [read_state(path) for path in paths]
    unfinished = [
        f"{path} ({state['batches_done']} of {state['num_batches']} batches)"
        for path, state in zip(paths, states)
        if state["batches_done"] != state["num_batches"]
    ]
    if unfinished:
        raise ValueError(
            "unfinished shards cannot be merged: " + "; ".join(unfinished) + ". Run them to the end first."
        )
    for path, state in zip(paths[1:], states[1:]):
        if state["fingerprint"] != states[0]["fingerprint"]:
            raise ValueError(f"{path} and {paths[0]} come from runs with different settings")
        check_identity(states[0]["identity"], state["identity"], path)
    totals = {}
    for state in states:
        for name, part in state["totals"].items():
            if name in totals:
                totals[name].merge(part)
            else:
                totals[name] = part
    return states[0]["fingerprint"], totals
