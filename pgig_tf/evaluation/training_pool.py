"""Many small trainings at once: `Retrainer.accuracy` in worker processes of one thread each.

A CNN as small as the embedded digits CNN keeps a 2-core CPU only partly busy when one
training uses both cores (TensorFlow's threads wait on each other at every small kernel); one
training per core, each on one thread, gets nearly twice the trainings per minute. Every worker
trains on one thread under op determinism, so a training's result depends only on its data,
seed and settings — never on how many workers run or which one takes it.
"""

import concurrent.futures
import multiprocessing
import time

from pgig_tf.validation import check_nonnegative_seed, check_positive_int

_retrainer = None  # the worker process's Retrainer


def _start_worker(build_model, epochs, batch_size, learning_rate):
    """Runs once in each worker: one TensorFlow thread, op determinism, and a `Retrainer`."""
    global _retrainer
    from pgig_tf.cli import console

    console.prepare()  # quiet TensorFlow's start-up notices in the workers too
    import tensorflow as tf

    from pgig_tf.evaluation.roar import Retrainer

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    _retrainer = Retrainer(build_model, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)


def _accuracy(key, x_train, y_train, x_test, y_test, seed):
    began = time.perf_counter()
    accuracy = _retrainer.accuracy(x_train, y_train, x_test, y_test, seed)
    return key, accuracy, time.perf_counter() - began


class TrainingPool:
    """Trainings (`Retrainer.accuracy`) run in `workers` processes with one TensorFlow thread each.

    Use it as a context manager; `submit` a training, then take finished ones from `finished`:

        with TrainingPool(build_digits_cnn, workers=2) as pool:
            pool.submit("a", x_train, y_train, x_test, y_test, seed=0)
            for key, accuracy, seconds in pool.finished():
                ...

    Args:
        build_model: a module-level callable returning a new, uncompiled Keras model with a softmax
            output (it is sent to the workers, so it must be importable by name).
        workers: number of processes (>= 1).
        epochs: training epochs (`Retrainer`).
        batch_size: training batch size.
        learning_rate: Adam's learning rate.
    """

    def __init__(self, build_model, workers=2, epochs=10, batch_size=64, learning_rate=1e-3):
        if not callable(build_model):
            raise TypeError(f"build_model must be a callable returning a new Keras model, got {build_model!r}")
        self.workers = check_positive_int(workers, "workers")
        self._settings = (
            build_model,
            check_positive_int(epochs, "epochs"),
            check_positive_int(batch_size, "batch_size"),
        )
        self._settings += (float(learning_rate),)
        self._executor = None
        self._pending = set()

    def __enter__(self):
        # spawn: a fresh interpreter per worker (forking a process that runs TensorFlow is unsafe)
        self._executor = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=self._settings,
        )
        return self

    def __exit__(self, *exc):
        self._executor.shutdown(wait=exc[0] is None, cancel_futures=True)
        self._executor = None
        self._pending = set()
        return False

    @property
    def pending(self):
        """Trainings submitted and not yet taken from `finished`."""
        return len(self._pending)

    def submit(self, key, x_train, y_train, x_test, y_test, seed):
        """Queues one training; `key` comes back with its result."""
        if self._executor is None:
            raise RuntimeError("use the TrainingPool in a with-block")
        seed = check_nonnegative_seed(seed)
        self._pending.add(self._executor.submit(_accuracy, key, x_train, y_train, x_test, y_test, seed))

    def finished(self, at_most=None):
        """Yields (key, accuracy, seconds) of trainings as they finish: all pending ones, or `at_most` of them."""
        taken = 0
        while self._pending and (at_most is None or taken < at_most):
            done, _ = concurrent.futures.wait(self._pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                self._pending.discard(future)
                taken += 1
                yield future.result()
                if at_most is not None and taken >= at_most:
                    return
