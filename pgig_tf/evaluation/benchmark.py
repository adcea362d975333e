"""The image degradation benchmark: methods x batches of images -> mean curves, AUPC, AUTVC; resumable and shardable.

Progress is a set of running sums per method (images, curve sum, curve sum of squares,
AUTVC sums, seconds), written to a JSON checkpoint every few batches. A restarted run with
the same settings skips the batches already counted; shards are disjoint slices of the
images whose checkpoints `merge_states` adds up.
"""

import json
import os
import time

import keras
import numpy as np

from pgig_tf.evaluation.degradation import aupc
from pgig_tf.evaluation.smoothness import autvc
from pgig_tf.files import atomic_write

# The paper's ten methods (§5) in its order, then SmoothTaylor (Goh et al., 2020) and the random control.
PAPER_METHODS = (
    "gradient",
    "input_t_gradient",
    "integrated_gradients",
    "smoothgrad_squared",
    "vargrad",
    "smoothgrad_ig",
    "expected_gradients",
    "guided_backprop",
    "pattern_attribution",
    "pgig",
)
DEFAULT_METHODS = PAPER_METHODS + ("smooth_taylor", "random")


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
    """Runs every analyzer on every batch (images, labels, targets) and returns the state with its totals.

    `analyzers`: name -> analyzer. `batches`: an iterable of (images, targets or None);
    `checkpoint`: path of the JSON checkpoint; batches already in it are skipped.
    `batch_seed(batch_index)` reseeds the random methods per batch so that no two batches
    share noise. The first `keep_examples` images' maps are kept in the state for plotting.
    """
    state = load_state(checkpoint, fingerprint) or {
        "fingerprint": fingerprint,
        "batches_done": 0,
        "totals": {name: MethodTotals(degrader.num_steps + 1) for name in analyzers},
    }
    examples = {}
    progress = keras.utils.Progbar(num_batches, unit_name="batch") if verbose else None
    for index, (images, targets) in enumerate(batches):
        if index < state["batches_done"]:
            continue  # counted before a restart
        if targets is None:
            targets = np.argmax(degrader.model.predict(images, verbose=0).reshape(len(images), -1), axis=1)
        for name, analyzer in analyzers.items():
            if batch_seed is not None and hasattr(analyzer, "seed"):
                analyzer.seed = batch_seed(index)
            start = time.perf_counter()
            maps = analyzer.analyze(images, neuron_selection=targets)
            middle = time.perf_counter()
            curves = degrader.curves(images, maps, targets)
            end = time.perf_counter()
            state["totals"][name].add(curves, autvc(maps, smoothness_scales), middle - start, end - middle)
            if index == 0 and keep_examples:
                examples[name] = maps[:keep_examples]
        if index == 0 and keep_examples:
            examples["__images__"] = images[:keep_examples]
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
