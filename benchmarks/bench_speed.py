"""Speed and memory against the hardware limit: each analyzer's time per gradient evaluation / a compiled gradient's.

The limit is the best per-sample time of a compiled `tf.GradientTape` input gradient of one
output of the same model, over a few batch sizes, in the same process. Each analyzer is timed
(median of repeats, warm-up excluded) on enough images that its evaluations fill whole
chunks; its ratio is time / (evaluations x limit). Also: fit_patterns against a compiled
forward pass, the degradation benchmark's per-method time against its floor (evaluations +
K+1 forward passes), peak memory of `analyze` at different steps/samples (fresh processes),
and the number of traces after repeated calls.

The default model is the embedded digits CNN (`pgig_tf.datasets.digits`, trained once and
cached); `--model vgg16` times Keras' VGG16 with random weights (224x224), `--model PATH` a
saved `.keras` model. Run from the repository root: `python -m benchmarks.bench_speed`.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

try:  # POSIX only; peak memory is skipped where it is missing
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each method at settings that give ~25 evaluations per image, so all are comparable.
SPEED_METHODS = {
    "gradient": {},
    "input_t_gradient": {},
    "guided_backprop": {},
    "pattern_net": {},
    "pattern_attribution": {},
    "integrated_gradients": {"steps": 25},
    "pgig": {"steps": 25},
    "smoothgrad": {"samples": 25},
    "smoothgrad_squared": {"samples": 25},
    "vargrad": {"samples": 25},
    "smoothgrad_ig": {"steps": 5, "samples": 5},
    "expected_gradients": {"samples": 25},
    "smooth_taylor": {"samples": 25},
    "noise_baseline_ig": {"steps": 5, "samples": 5},
}


# Methods without random draws: their jit_compile maps are comparable with float32's.
DETERMINISTIC = (
    "gradient",
    "input_t_gradient",
    "guided_backprop",
    "pattern_net",
    "pattern_attribution",
    "integrated_gradients",
    "pgig",
)


def method_spec(label):
    """(name, settings) of a --methods entry: a name of SPEED_METHODS, or 'name@rule' for a path method with
    another integration rule (`pgig_tf.core.integration.METHODS`, e.g. 'pgig@gausslegendre')."""
    name, _, rule = label.partition("@")
    if name not in SPEED_METHODS:
        raise SystemExit(f"--methods: unknown method {name!r}; choose from {', '.join(SPEED_METHODS)}")
    settings = dict(SPEED_METHODS[name])
    if rule:
        from pgig_tf.core.integration import METHODS as RULES

        if "steps" not in settings or rule not in RULES:
            raise SystemExit(f"--methods: {label!r} needs a path method and a rule of {', '.join(RULES)}")
        settings["method"] = rule
    return name, settings


def evaluations(name, settings):
    """Gradient evaluations per image of a method at `settings`."""
    if name == "smoothgrad_ig" or name == "noise_baseline_ig":
        return settings["steps"] * settings["samples"]
    return settings.get("steps", settings.get("samples", 1))


def median_time(function, repeats):
    function()  # warm-up: tracing and first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_model(name, cache_dir):
    import keras

    if name == "vgg16":
        return keras.applications.VGG16(weights=None)  # timing does not depend on the weights
    if name == "digits":
        from pgig_tf.datasets.digits import trained_digits_cnn

        return trained_digits_cnn(cache_dir, verbose=False)[0]
    return keras.models.load_model(name, compile=False)


def inputs_for(model, count, seed=0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(0, 1, (count,) + shape).astype(np.float32)


class GradientLimit:
    """Per-sample seconds of a compiled input gradient of output 0 at a batch size (measured once per size)."""

    def __init__(self, model, repeats, candidate_batch_sizes):
        import tensorflow as tf

        self.model, self.repeats, self.by_batch_size = model, repeats, {}
        self.candidates = list(candidate_batch_sizes)
        shape = tuple(model.inputs[0].shape[1:])

        @tf.function(input_signature=[tf.TensorSpec((None,) + shape, tf.float32)])
        def gradient(x):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                out = tf.reduce_sum(tf.reshape(model(x, training=False), [tf.shape(x)[0], -1])[:, 0])
            return tape.gradient(out, x)

        self._gradient = gradient

    def at(self, batch_size):
        if batch_size not in self.by_batch_size:
            self.by_batch_size[batch_size] = median_time(self.call_at(batch_size), self.repeats) / batch_size
        return self.by_batch_size[batch_size]

    def call_at(self, batch_size):
        """A function running one compiled gradient of `batch_size` inputs."""
        import tensorflow as tf

        x = tf.constant(inputs_for(self.model, batch_size))
        return lambda: self._gradient(x).numpy()

    @property
    def best(self):
        """The limit: the best per-sample time over the candidate batch sizes."""
        return min(self.at(b) for b in self.candidates)

    @property
    def best_batch_size(self):
        return min(self.candidates, key=self.at)


def paired_times(method, limit, repeats):
    """(method seconds, limit seconds per sample) of each round: one limit call, then one `method` call.

    The limit runs at its best batch size right before each repeat, so a slow minute of the
    machine slows both: the median of the rounds' ratios is robust to the drift that moves a
    limit measured once by several percent between processes. Warm-up calls excluded.
    """
    batch_size = limit.best_batch_size
    gradient = limit.call_at(batch_size)
    gradient()
    method()
    method_seconds, limit_seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        gradient()
        middle = time.perf_counter()
        method()
        method_seconds.append(time.perf_counter() - middle)
        limit_seconds.append((middle - start) / batch_size)
    return method_seconds, limit_seconds


def forward_time(model, batch_size, repeats):
    """Per-sample seconds of a compiled forward pass at `batch_size`."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    forward = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None,) + shape, tf.float32)]
    )
    x = tf.constant(inputs_for(model, batch_size))
    return median_time(lambda: forward(x).numpy(), repeats) / batch_size


def make_analyzer(model, name, settings, batch_size, patterns, background):
    """One analyzer as the degradation benchmark builds it, at the speed settings `settings`."""
    from pgig_tf.cli.degradation_benchmark import build_analyzers

    return build_analyzers(model, [name], patterns, background, batch_size, 0, settings=lambda _: settings)[name]


def time_analyzer(model, name, settings, batch_size, patterns, background, limit, repeats):
    """Times one analyzer on as many images as fit one chunk (at least one image).

    ratio: time per evaluation / the limit re-timed right before each repeat (`paired_times`),
    median over the repeats: the issue's definition, robust to the machine's drift;
    ratio_first_limit: against the limit measured once at the start; ratio_same_chunk: against
    the limit at the chunk size this call really evaluates, which separates our overhead from
    how much less efficient the hardware is at a smaller batch.
    """
    evals = evaluations(name, settings)
    images = max(1, batch_size // evals)
    chunk = min(images * evals, batch_size)
    x = inputs_for(model, images, seed=1)
    analyzer = make_analyzer(model, name, settings, batch_size, patterns, background)
    method_seconds, limit_seconds = paired_times(lambda: analyzer.analyze(x, neuron_selection=0), limit, repeats)
    per_image = statistics.median(method_seconds) / images
    rounds = [m / (images * evals * g) for m, g in zip(method_seconds, limit_seconds)]
    return {
        "seconds_per_image": per_image,
        "evaluations_per_image": evals,
        "images": images,
        "batch_size": batch_size,
        "chunk": chunk,
        "ratio": statistics.median(rounds),
        "ratio_rounds": rounds,
        "method_rounds": method_seconds,
        "limit_rounds": limit_seconds,
        "ratio_first_limit": per_image / (evals * limit.best),
        "ratio_same_chunk": per_image / (evals * limit.at(chunk)),
        "traces_after_repeats": analyzer.tracing_count,
    }


def levers(model, names, batch_size, patterns, background, limit, repeats, options=("bfloat16", "jit")):
    """The speed options against the float32 loop: time ratio to the limit and the maps' error.

    Error: relative L2 distance ||a - a32|| / ||a32|| of the maps of the same 2 images, and their
    correlation; jit_compile draws other (XLA Philox) noise, so its error is shown for deterministic
    methods only.
    """
    from pgig_tf.cli.degradation_benchmark import build_analyzers

    rows = {}
    x = inputs_for(model, max(1, batch_size // 25), seed=6)
    for name in names:
        settings = SPEED_METHODS[name]
        evals = evaluations(name, settings)
        reference = None
        chosen = [{}] + [{"bfloat16": {"compute_dtype": "bfloat16"}, "jit": {"jit_compile": True}}[o] for o in options]
        for option in chosen:
            combined = dict(settings, **option)
            analyzer = build_analyzers(
                model, [name], patterns, background, batch_size, 0, settings=lambda _, combined=combined: combined
            )[name]
            try:
                seconds = median_time(lambda a=analyzer: a.analyze(x, neuron_selection=0), repeats) / len(x)
            except ValueError as error:  # XLA could not compile this model's loop
                rows[f"{name} {option}"] = {"error": str(error)}
                continue
            maps = analyzer.analyze(x, neuron_selection=0)
            if reference is None:
                reference = maps
            key = f"{name} {option or 'float32'}"
            rows[key] = {"seconds_per_image": seconds, "ratio": seconds / (evals * limit.best)}
            line = f"{key:<48}{seconds:>9.4f} s/image  ratio {rows[key]['ratio']:.3f}"
            if name in DETERMINISTIC or "jit_compile" not in option:
                rows[key]["relative_l2_error"] = float(np.linalg.norm(maps - reference) / np.linalg.norm(reference))
                rows[key]["correlation"] = float(np.corrcoef(maps.ravel(), reference.ravel())[0, 1])
                line += f"  error {rows[key]['relative_l2_error']:.2e}  correlation {rows[key]['correlation']:.5f}"
            print(line)
    return rows


def degradation_vs_floor(
    model, methods, images, targets, degrader, batch_size, patterns, background, limit, forward, repeats
):
    """Per image and method, the degradation benchmark's step (analyze, then the K+1 curve points) against its floor.

    The floor is the method's gradient evaluations at the limit plus K+1 compiled forward passes
    at the degrader's chunk size; AUTVC and ranking are numpy work included in the time.
    """
    from pgig_tf.cli.degradation_benchmark import build_analyzers, method_settings
    from pgig_tf.evaluation.benchmark import DEFAULT_METHODS
    from pgig_tf.evaluation.smoothness import autvc

    analyzers = build_analyzers(model, methods or DEFAULT_METHODS, patterns, background, batch_size, 0)
    rows = {}
    for name, analyzer in analyzers.items():

        def step(analyzer=analyzer):
            maps = analyzer.analyze(images, neuron_selection=targets)
            degrader.curves(images, maps, targets)
            autvc(maps)

        seconds = median_time(step, repeats) / len(images)
        evals = 0 if name == "random" else evaluations(name, method_settings(name))
        floor = evals * limit.best + (degrader.num_steps + 1) * forward
        rows[name] = {
            "seconds_per_image": seconds,
            "evaluations_per_image": evals,
            "floor_seconds_per_image": floor,
            "ratio_to_floor": seconds / floor,
        }
    return rows


def peak_rss_mb():
    """This process's peak resident memory in MB (getrusage's ru_maxrss), or None without the resource module.

    ru_maxrss is in kilobytes on Linux and the BSDs, in bytes on macOS. On Linux a process
    started by fork/exec begins with its parent's peak, so `peak_memory` starts its workers
    from a process that has not loaded TensorFlow yet.
    """
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def memory_worker(spec):
    """Builds the model and one analyzer, runs one `analyze`; returns the peak memory before and after (MB).

    `spec`: {"model", "cache_dir", "method", "settings", "batch_size"}. Meant for a fresh process
    (`run_worker`), so that the peak is this analysis's alone; with "method" None it only loads
    the model (which trains and caches the digits CNN the first time).
    """
    started = peak_rss_mb()
    model = load_model(spec["model"], spec["cache_dir"])
    if spec.get("method") is None:
        return {"model": model.name, "peak_mb": peak_rss_mb()}
    from pgig_tf import Patterns

    patterns = Patterns({l.name: np.ones(l.kernel.shape, np.float32) for l in model.layers if hasattr(l, "kernel")})
    analyzer = make_analyzer(
        model, spec["method"], spec["settings"], spec["batch_size"], patterns, inputs_for(model, 4)
    )
    before = peak_rss_mb()
    analyzer.analyze(inputs_for(model, 1, seed=2), neuron_selection=0)
    after = peak_rss_mb()
    return {
        "peak_mb": after,
        "peak_before_analyze_mb": before,
        "analyze_mb": after - before,
        "peak_at_start_mb": started,
    }


def run_worker(spec):
    """`memory_worker(spec)` in a fresh process: `python -m benchmarks.bench_speed --worker JSON`.

    The arguments go as JSON on the command line, the result comes back as JSON on the last line
    of the worker's output.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPOSITORY_ROOT, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_speed", "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPOSITORY_ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the memory worker failed (exit code {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory(model_name, cache_dir, method, settings, batch_size):
    """Peak resident memory (MB) of a fresh process that builds the model and runs one `analyze`.

    Call it before the calling process loads TensorFlow: on Linux the worker's ru_maxrss starts
    at the caller's peak (the result's `peak_at_start_mb` shows where it started).
    """
    return run_worker(
        {"model": model_name, "cache_dir": cache_dir, "method": method, "settings": settings, "batch_size": batch_size}
    )


def memory_section(model_name, cache_dir, batch_size=16):
    """Peak memory of `analyze` for IG at 25 and 100 steps and SmoothGrad at 25 and 100 samples, one process each."""
    if resource is None:
        print("peak memory: skipped, it is read with the resource module (getrusage), which this platform lacks")
        return {"skipped": "no resource module on this platform"}
    run_worker({"model": model_name, "cache_dir": cache_dir, "method": None})  # trains the digits CNN if not cached
    memory = {}
    for name, variants in (
        ("integrated_gradients", ({"steps": 25}, {"steps": 100})),
        ("smoothgrad", ({"samples": 25}, {"samples": 100})),
    ):
        for settings in variants:
            key = f"{name} {settings}"
            memory[key] = peak_memory(model_name, cache_dir, name, settings, batch_size)
            print(
                f"peak memory, {key}, batch_size {batch_size}: {memory[key]['peak_mb']:.0f} MB "
                f"({memory[key]['analyze_mb']:.0f} MB for analyze; the worker started at "
                f"{memory[key]['peak_at_start_mb']:.0f} MB)",
                flush=True,
            )
    return memory


def fit_time(model, data, batch_size, strategy=None):
    """(per-image seconds, patterns) of fit_patterns: a long call minus a one-batch call (each traces once)."""
    from pgig_tf import fit_patterns

    def fit(part):
        start = time.perf_counter()
        patterns = fit_patterns(model, part, batch_size=batch_size, verbose=False, strategy=strategy)
        return time.perf_counter() - start, patterns

    fit(data[:batch_size])  # warm-up: first-call allocations
    gc.collect()  # each call's float64 sums (2 kernels per layer: 2.2 GB on VGG16) are freed only by gc
    total, patterns = fit(data)
    gc.collect()
    one, _ = fit(data[:batch_size])
    gc.collect()
    return (total - one) / (len(data) - batch_size), patterns


def machine_info():
    """The machine and library versions a timing ran on."""
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
    }


def kernel_gradient_time(model, batch_size, repeats):
    """Per-sample seconds that two kernel gradients per Dense/Conv layer add to a forward pass.

    The arithmetic that fit_patterns adds (Σ x y⁺ and Σ x⁺ per layer, Eq. 2): per layer, at its
    real input shape with random inputs, the time of its linear part plus both kernel gradients
    (two different output gradients) minus the time of the linear part alone.
    """
    import tensorflow as tf

    from pgig_tf.model import layer_kinds as L
    from pgig_tf.model.graph import leaf_layers, run_graph

    shapes = {}

    def record(layer):
        call = L.inference_call(layer)
        if not L.is_kernel_layer(layer):
            return call

        def recorded(x, **kwargs):
            shapes[layer.name] = (layer, tuple(x.shape[1:]))
            return call(x, **kwargs)

        return recorded

    run_graph(model, tf.zeros((1,) + tuple(model.inputs[0].shape[1:])), record)
    assert [l.name for l in leaf_layers(model) if L.is_kernel_layer(l)] == list(shapes)
    rng = np.random.default_rng(7)
    total = 0.0
    for layer, shape in shapes.values():  # one layer at a time: only its tensors in memory
        x = tf.constant(rng.normal(0, 1, (batch_size,) + shape).astype(np.float32))

        @tf.function
        def linear_part(x, layer=layer):
            return L.linear_part(layer, x, tf.convert_to_tensor(layer.kernel))

        @tf.function
        def with_kernel_gradients(x, layer=layer):
            kernel = tf.convert_to_tensor(layer.kernel)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(kernel)
                z = L.linear_part(layer, x, kernel)
            return (
                z,
                tape.gradient(z, kernel, output_gradients=tf.nn.relu(z)),
                tape.gradient(z, kernel, output_gradients=tf.cast(z > 0, z.dtype)),
            )

        total += median_time(lambda x=x, f=with_kernel_gradients: [s.numpy() for s in f(x)], repeats) - median_time(
            lambda x=x, f=linear_part: f(x).numpy(), repeats
        )
    return total / batch_size


def fit_section(model, repeats, batch_size=64):
    """fit_patterns' time per image against a compiled forward pass of the same model, and its floor.

    The floor is the forward pass plus two kernel gradients per layer (`kernel_gradient_time`),
    all at fit_patterns' default batch size.
    """
    data = inputs_for(model, 3 * batch_size, seed=4)
    forward = forward_time(model, batch_size, repeats)
    floor = forward + kernel_gradient_time(model, batch_size, repeats)
    seconds, _ = fit_time(model, data, batch_size)
    print(
        f"fit_patterns: {seconds * 1000:.2f} ms/image, forward {forward * 1000:.2f} ms/image, "
        f"ratio {seconds / forward:.2f}; floor (forward + 2 kernel gradients per layer) "
        f"{floor * 1000:.2f} ms/image = {floor / forward:.2f}x forward, fit / floor {seconds / floor:.2f}"
    )
    return {
        "seconds_per_image": seconds,
        "forward_seconds_per_image": forward,
        "ratio_to_forward": seconds / forward,
        "floor_seconds_per_image": floor,
        "floor_ratio_to_forward": floor / forward,
        "ratio_to_floor": seconds / floor,
        "batch_size": batch_size,
    }


def degradation_section(args, model, patterns, background, limit):
    """The benchmark's settings for this model (digits: 4x4 patches, K=64, image mean; else 9x9, K=100, patch mean)."""
    from pgig_tf.evaluation.degradation import Degrader

    if args.model == "digits":
        from pgig_tf.datasets.digits import load_digits_images
        from pgig_tf.patterns.fitting import fit_patterns

        x_train, _, x_test, _ = load_digits_images(0)
        images = x_test[: args.degradation_images]
        patterns, background = fit_patterns(model, x_train, verbose=False), x_train[:1000]
        degrader = Degrader(model, 4, 64, "image_mean", batch_size=args.batch_size)
    else:
        images = inputs_for(model, args.degradation_images, seed=5)
        degrader = Degrader(model, 9, 100, "patch_mean", batch_size=args.batch_size)
    targets = np.argmax(model.predict(images, verbose=0).reshape(len(images), -1), axis=1)
    # the floor's forward pass at its best batch size, as the limit's gradient
    forward = min(forward_time(model, b, args.repeats) for b in limit.candidates + [args.batch_size])
    methods = [m.strip() for m in args.degradation_methods.split(",")] if args.degradation_methods else None
    rows = degradation_vs_floor(
        model, methods, images, targets, degrader, args.batch_size, patterns, background, limit, forward, args.repeats
    )
    print(
        f"degradation benchmark step, {len(images)} images, K={degrader.num_steps}, forward "
        f"{forward * 1000:.3f} ms/image:"
    )
    print(f"{'method':<22}{'evals':>6}{'s/image':>10}{'floor':>10}{'ratio':>8}")
    for name, r in rows.items():
        print(
            f"{name:<22}{r['evaluations_per_image']:>6}{r['seconds_per_image']:>10.4f}"
            f"{r['floor_seconds_per_image']:>10.4f}{r['ratio_to_floor']:>8.3f}"
        )
    return {
        "images": len(images),
        "num_steps": degrader.num_steps,
        "forward_seconds_per_image": forward,
        "methods": rows,
    }


def write_report(path, report):
    """Writes the JSON report; called after every section, so a killed run keeps what it measured."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="digits",
        help="digits (the embedded CNN, the default), vgg16 (weights=None, 224x224), or a .keras file",
    )
    parser.add_argument(
        "--methods",
        default=",".join(SPEED_METHODS),
        help="comma-separated names; name@rule times a path method with another integration rule "
        "(e.g. integrated_gradients@gausslegendre)",
    )
    parser.add_argument(
        "--limit-batch-sizes",
        default=None,
        help="batch sizes of the limit (default 8,16,32,64 for vgg16; 16,64,256 otherwise)",
    )
    parser.add_argument(
        "--sweep-batch-sizes",
        default="25,50,75,100",
        help="batch sizes tried for IG and PGIG (25 steps: multiples of 25 fill whole chunks)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="the analyzers' batch size for the table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--fit-batch-size", type=int, default=64, help="fit_patterns' batch size (its default: 64)")
    parser.add_argument("--skip-degradation", action="store_true")
    parser.add_argument("--skip-levers", action="store_true")
    parser.add_argument(
        "--lever-options",
        default="bfloat16,jit",
        help="speed options to time: bfloat16 (compute_dtype), jit (jit_compile)",
    )
    parser.add_argument(
        "--lever-methods",
        default="integrated_gradients,pgig,smoothgrad",
        help="methods timed with compute_dtype='bfloat16' and jit_compile=True",
    )
    parser.add_argument(
        "--degradation-methods",
        default=None,
        help="methods of the degradation timing (default: the benchmark's twelve)",
    )
    parser.add_argument(
        "--degradation-images",
        type=int,
        default=32,
        help="images per step of the degradation benchmark timing (its default batch is 32)",
    )
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "pgig_tf"))
    parser.add_argument("--out", default="results/bench_speed.json")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one `memory_worker` run, see peak_memory
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(json.loads(args.worker))))
        return

    report = {"model": args.model}
    if not args.skip_memory:
        # first, while this process is small: a worker's ru_maxrss starts at its parent's peak
        report["memory"] = memory_section(args.model, args.cache_dir)
        write_report(args.out, report)

    import tensorflow as tf

    from pgig_tf import Patterns

    tf.get_logger().setLevel("ERROR")
    # the paper explains the softmax output on purpose (§5); the warning would repeat per method
    from pgig_tf.validation import SoftmaxOutputWarning

    warnings.filterwarnings("ignore", category=SoftmaxOutputWarning)
    model = load_model(args.model, args.cache_dir)
    patterns = Patterns(
        {
            l.name: np.random.default_rng(0).normal(0, 1, l.kernel.shape).astype(np.float32)
            for l in model.layers
            if hasattr(l, "kernel")
        }
    )
    background = inputs_for(model, 8, seed=3)
    report["machine"] = machine_info()
    limit_batch_sizes = args.limit_batch_sizes or ("8,16,32,64" if args.model == "vgg16" else "16,64,256")
    limit = GradientLimit(model, args.repeats, [int(b) for b in limit_batch_sizes.split(",")])
    print(
        f"limit: {limit.best * 1000:.2f} ms per input gradient (by batch size: "
        + ", ".join(f"{b}: {t * 1000:.2f}" for b, t in limit.by_batch_size.items())
        + ")"
    )

    report["methods"] = {}
    print("ratio: against the limit re-timed before each repeat; first-limit: against the one above")
    print(
        f"{'method':<22}{'evals':>6}{'chunk':>6}{'s/image':>10}{'ratio':>8}{'first-limit':>12}{'same-chunk':>11}"
        f"{'traces':>7}"
    )
    for label in [m.strip() for m in args.methods.split(",") if m.strip()]:
        name, settings = method_spec(label)
        r = time_analyzer(model, name, settings, args.batch_size, patterns, background, limit, args.repeats)
        report["methods"][label] = r
        write_report(args.out, report)
        print(
            f"{label:<22}{r['evaluations_per_image']:>6}{r['chunk']:>6}{r['seconds_per_image']:>10.4f}"
            f"{r['ratio']:>8.3f}{r['ratio_first_limit']:>12.3f}{r['ratio_same_chunk']:>11.3f}"
            f"{r['traces_after_repeats']:>7}",
            flush=True,
        )

    report["batch_size_sweep"] = {}
    for name in ("integrated_gradients", "pgig") if args.sweep_batch_sizes else ():
        sweep = {
            int(b): time_analyzer(model, name, SPEED_METHODS[name], int(b), patterns, background, limit, args.repeats)
            for b in args.sweep_batch_sizes.split(",")
        }
        report["batch_size_sweep"][name] = sweep
        write_report(args.out, report)
        print(
            f"{name} ratio by batch size: "
            + ", ".join(f"{b}: {r['ratio']:.3f} (same chunk {r['ratio_same_chunk']:.3f})" for b, r in sweep.items())
        )
    if not args.skip_levers:
        print("speed options (ratio against the float32 limit; error against the float32 maps):")
        report["levers"] = levers(
            model,
            [m.strip() for m in args.lever_methods.split(",") if m.strip()],
            50,
            patterns,
            background,
            limit,
            args.repeats,
            [o.strip() for o in args.lever_options.split(",") if o.strip()],
        )
    report["limit_seconds_per_gradient"] = limit.best
    report["limit_by_batch_size"] = limit.by_batch_size
    write_report(args.out, report)

    if not args.skip_fit:
        report["fit_patterns"] = fit_section(model, args.repeats, args.fit_batch_size)
        write_report(args.out, report)

    if not args.skip_degradation and (args.model != "vgg16" or args.degradation_methods):
        # VGG16 at K = 100 costs minutes per method: only with an explicit --degradation-methods
        report["degradation"] = degradation_section(args, model, patterns, background, limit)
        write_report(args.out, report)

    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
