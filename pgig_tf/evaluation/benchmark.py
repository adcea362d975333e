"""The image degradation benchmark: methods x batches of images -> mean curves, AUPC, AUTVC; resumable and shardable.

Progress is a set of running sums per method (images, curve sum, curve sum of squares,
AUTVC sums, seconds), written to a JSON checkpoint every few batches. A restarted run with
the same settings skips the batches already counted; shards are disjoint slices of the
images whose checkpoints `merge_states` adds up.
"""

import json
import os
import time

import numpy as np

from pgig_tf.evaluation.degradation import aupc
from pgig_tf.evaluation.smoothness import autvc
from pgig_tf.files import atomic_write
from pgig_tf.names import DEFAULT_METHODS, PAPER_METHODS  # noqa: F401 (kept importable from here)
from pgig_tf.progress import Progress


class MethodTotals:
    """Running sums for one method."""

    def __init__(self, num_points):
        self.count = 0
        self.curve_sum = np.zeros(num_points)
        self.curve_sum_sq = np.zeros(num_points)
        self.autvc_sum = 0.0
        self.autvc_sum_sq = 0.0
        self.attribution_seconds = 0.0
        self.degradation_seconds = 0.0

    def add(self, curves, smoothness, attribution_seconds, degradation_seconds):
        self.count += len(curves)
        self.curve_sum += curves.sum(axis=0)
        self.curve_sum_sq += (curves**2).sum(axis=0)
        self.autvc_sum += float(smoothness.sum())
        self.autvc_sum_sq += float((smoothness**2).sum())
        self.attribution_seconds += attribution_seconds
        self.degradation_seconds += degradation_seconds

    def merge(self, other):
        self.count += other.count
        self.curve_sum += other.curve_sum
        self.curve_sum_sq += other.curve_sum_sq
        self.autvc_sum += other.autvc_sum
        self.autvc_sum_sq += other.autvc_sum_sq
        self.attribution_seconds += other.attribution_seconds
        self.degradation_seconds += other.degradation_seconds

    def to_json(self):
        return {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in vars(self).items()}

    @classmethod
    def from_json(cls, data):
        totals = cls(len(data["curve_sum"]))
        for key, value in data.items():
            setattr(totals, key, np.asarray(value) if isinstance(value, list) else value)
        return totals

    def summary(self):
        """Mean curve, its standard error, AUPC of the mean curve, mean AUTVC and timings."""
        n = self.count
        mean = self.curve_sum / n
        variance = np.maximum(self.curve_sum_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
        autvc_mean = self.autvc_sum / n
        autvc_var = max(self.autvc_sum_sq / n - autvc_mean**2, 0.0) * n / max(n - 1, 1)
        seconds = self.attribution_seconds + self.degradation_seconds
        steps = len(mean) - 1
        return {
            "num_images": n,
            "curve": mean.tolist(),
            "stderr": np.sqrt(variance / n).tolist(),
            "aupc": float(aupc(mean)),
            "aupc_per_patch": float(aupc(mean)) / steps,
            "autvc": autvc_mean,
            "autvc_stderr": float(np.sqrt(autvc_var / n)),
            "seconds": seconds,
            "seconds_per_image": seconds / n,
            "attribution_seconds_per_image": self.attribution_seconds / n,
            "degradation_seconds_per_image": self.degradation_seconds / n,
        }


def state_path(out_dir, shard_index, num_shards):
    return os.path.join(out_dir, f"state-shard{shard_index}of{num_shards}.json")


def load_state(path, fingerprint):
    """The checkpoint at `path` if it belongs to a run with the same settings; None if there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        state = json.load(handle)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{path} holds a checkpoint of a run with other settings; use another --out or delete it.\n"
            f"  checkpoint: {state['fingerprint']}\n  this run:   {fingerprint}"
        )
    state["totals"] = {name: MethodTotals.from_json(t) for name, t in state["totals"].items()}
    return state


def save_state(path, state):
    data = dict(state, totals={name: t.to_json() for name, t in state["totals"].items()})
    with atomic_write(path) as handle:  # a kill mid-write never leaves a broken checkpoint
        json.dump(data, handle)


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


def run_benchmark(
    analyzers,
    degrader,
    batches,
    num_batches,
    checkpoint,
    fingerprint,
    smoothness_scales=None,
    checkpoint_every=5,
    batch_seed=None,
    keep_examples=0,
    verbose=True,
):
    """Runs every analyzer on every batch and returns (the state with its totals, the kept examples).

    `analyzers`: name -> analyzer. `batches`: an iterable of (images, targets or None) or
    (images, targets or None, true labels); targets None explains the clean prediction.
    `checkpoint`: path of the JSON checkpoint; batches already in it are skipped.
    `batch_seed(batch_index)` reseeds the random methods per batch so that no two batches
    share noise. `keep_examples` images of the first batch, of different classes where
    possible (true labels if given, else predicted; see `choose_examples`), are kept with
    their maps for plotting: examples holds each method's maps and "__images__",
    "__predictions__" (predicted classes), "__labels__" (true classes, if given).
    """
    state = load_state(checkpoint, fingerprint) or {
        "fingerprint": fingerprint,
        "batches_done": 0,
        "totals": {name: MethodTotals(degrader.num_steps + 1) for name in analyzers},
    }
    state["num_batches"] = num_batches
    examples = {}
    progress = Progress(num_batches, "batch", start=state["batches_done"]) if verbose else None
    for index, batch in enumerate(batches):
        if index < state["batches_done"]:
            continue  # counted before a restart
        images, targets = batch[0], batch[1]
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
            if batch_seed is not None and hasattr(analyzer, "seed"):
                analyzer.seed = batch_seed(index)
            start = time.perf_counter()
            maps = analyzer.analyze(images, neuron_selection=targets)
            middle = time.perf_counter()
            curves = degrader.curves(images, maps, targets)
            end = time.perf_counter()
            state["totals"][name].add(curves, autvc(maps, smoothness_scales), middle - start, end - middle)
            if kept is not None:
                examples[name] = maps[kept]
        state["batches_done"] = index + 1
        if state["batches_done"] % checkpoint_every == 0:
            save_state(checkpoint, state)
        if progress is not None:
            progress.update(index + 1)
    save_state(checkpoint, state)
    return state, examples


def merge_states(paths):
    """Adds up the totals of shard checkpoints (which must come from one run's settings)."""
    states = []
    for path in paths:
        with open(path) as handle:
            states.append(json.load(handle))
    fingerprints = {json.dumps(s["fingerprint"], sort_keys=True) for s in states}
    if len(fingerprints) != 1:
        raise ValueError("the shard checkpoints come from runs with different settings")
    totals = {}
    for state in states:
        for name, data in state["totals"].items():
            part = MethodTotals.from_json(data)
            if name in totals:
                totals[name].merge(part)
            else:
                totals[name] = part
    return states[0]["fingerprint"], totals
