"""Checks of what users pass in (inputs, neuron selections, settings), with errors that say what was expected."""

import numbers
import sys

import numpy as np


def checked_array(x, input_shape, name="x"):
    """`x` as a numeric numpy array of the model input's rank and shape (batch axis first), dtype unchanged."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    if x is None:
        raise TypeError(f"{name} must be a numeric array (or a tf.data.Dataset to stream), got None")
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}: {error}") from None
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    expected = "(" + ", ".join("batch" if d is None else str(d) for d in input_shape) + ")"
    if array.ndim != len(input_shape):
        hint = " (a single sample needs a batch axis: x[None])" if array.ndim == len(input_shape) - 1 else ""
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}{hint}")
    for axis, (want, got) in enumerate(zip(input_shape[1:], array.shape[1:]), start=1):
        if want is not None and want != got:
            raise ValueError(f"{name} must have shape {expected}, got {array.shape} (axis {axis})")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {array.shape}); pass at least one sample")
    return array


def check_inputs(x, input_shape, name="x", dtype="float32"):
    """Returns `x` as a finite array of the model's input shape in `dtype`, or raises saying why it is not.

    Integer and other float inputs (float16, float64) are cast to `dtype`, the model input's dtype;
    values that the cast turns infinite (beyond its range) are an error, like NaN and Inf.
    """
    array = checked_array(x, input_shape, name)
    _check_finite(array, name)
    with np.errstate(over="ignore"):  # overflow is reported below, with the value
        cast = array.astype(dtype, copy=False)
    if cast is not array and np.issubdtype(cast.dtype, np.floating) and not np.all(np.isfinite(cast)):
        largest = float(np.max(np.abs(array.astype(np.float64))))
        raise ValueError(
            f"{name} has values beyond the range of the model's {np.dtype(dtype).name} inputs "
            f"(largest |value| {largest:.3g}, dtype {array.dtype}); rescale the input"
        )
    return cast


def _check_finite(array, name):
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        samples = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{name} contains NaN or Inf ({int(bad.sum())} values, in samples {samples[:10].tolist()})")


def resolve_neurons(neuron_selection, num_samples, width, predict):
    """Output indices, one per sample: 'max_activation' (argmax of `predict()`), an int, or one int per sample."""
    if isinstance(neuron_selection, str):
        if neuron_selection != "max_activation":
            raise ValueError(
                f"neuron_selection must be 'max_activation', an int or one int per sample, got {neuron_selection!r}"
            )
        return np.argmax(predict().reshape(num_samples, -1), axis=1).astype(np.int32)
    if hasattr(neuron_selection, "numpy"):  # a tf.Tensor: its value
        neuron_selection = neuron_selection.numpy()
    if (
        isinstance(neuron_selection, np.ndarray)
        and neuron_selection.ndim == 0
        and np.issubdtype(neuron_selection.dtype, np.integer)
    ):
        neuron_selection = int(neuron_selection)
    if isinstance(neuron_selection, numbers.Integral) and not isinstance(neuron_selection, bool):
        indices = np.full(num_samples, int(neuron_selection))
    else:
        indices = np.asarray(neuron_selection)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                "neuron_selection must be 'max_activation', an int or a 1-D array of ints "
                f"(one per sample), got {neuron_selection!r}"
            )
        if len(indices) != num_samples:
            raise ValueError(f"neuron_selection has {len(indices)} indices but x has {num_samples} samples")
    out_of_range = (indices < 0) | (indices >= width)
    if out_of_range.any():
        raise ValueError(
            f"neuron_selection {indices[out_of_range][0]} is out of range: the model output has "
            f"{width} units (valid: 0..{width - 1})"
        )
    return indices.astype(np.int32)


def check_positive_int(value, name):
    """`value` as an int >= 1, or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_baseline(baseline, input_shape, name="baseline"):
    """The baseline as a float32 array that broadcasts to one sample (input shape without the batch axis).

    It broadcasts one way only: each of its axes (aligned from the last) is 1 or the sample's
    size there, so it never enlarges a sample; an axis of free size (None) takes only 1.
    """
    sample_shape = tuple(input_shape[1:])
    if hasattr(baseline, "numpy"):
        baseline = baseline.numpy()
    if baseline is None or isinstance(baseline, (str, bytes, dict)):
        raise TypeError(
            f"{name} must be a number or an array that broadcasts to one sample {sample_shape}, "
            f"got {type(baseline).__name__}"
        )
    try:
        array = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a number or an array that broadcasts to one sample {sample_shape}, got "
            f"{type(baseline).__name__}: {error}"
        ) from None
    if array.ndim > len(sample_shape):
        raise ValueError(f"{name} must describe one sample {sample_shape}, got shape {array.shape}")
    for have, want in zip(array.shape[::-1], sample_shape[::-1]):
        if have != 1 and have != want:
            free = " (axes of free size take only 1)" if want is None else ""
            raise ValueError(
                f"{name} of shape {array.shape} does not broadcast to one sample of shape {sample_shape}: "
                f"each of its axes, aligned from the last, must be 1 or the sample's size{free}"
            )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def check_nonnegative_seed(seed):
    """A seed that must be given: a non-negative int (numpy Generator seeds of the evaluation metrics)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a non-negative int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def check_first_index(first_index):
    """The index of a piece's first sample in a larger set: a non-negative int below 2**31."""
    if isinstance(first_index, bool) or not isinstance(first_index, numbers.Integral):
        raise TypeError(f"first_index must be a non-negative int, got {type(first_index).__name__} {first_index!r}")
    if not 0 <= first_index < 2**31:
        raise ValueError(f"first_index must be a non-negative int below 2**31, got {first_index!r}")
    return int(first_index)


def check_seed(seed):
    """None (fresh randomness each call) or a non-negative int below 2**31."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be None or an integer in [0, 2**31), got {seed!r}")
    return int(seed)


# Above this, sigma exceeds each sample's range a millionfold: every point is noise, and float32
# sums of such points overflow (noise_scale=1e38 gave all-zero maps).
MAX_NOISE_SCALE = 1e6


def check_noise_scale(noise_scale, name="noise_scale"):
    """A finite float >= 0: sigma as a fraction of each sample's (max - min)."""
    if (
        isinstance(noise_scale, bool)
        or not isinstance(noise_scale, numbers.Real)
        or not np.isfinite(noise_scale)
        or noise_scale < 0
    ):
        raise ValueError(
            f"{name} must be a finite number >= 0 (sigma as a fraction of each sample's max - min), got {noise_scale!r}"
        )
    if noise_scale > MAX_NOISE_SCALE:
        raise ValueError(
            f"{name} must be at most {MAX_NOISE_SCALE:g}, got {noise_scale!r}: it is sigma as a fraction of each "
            "sample's max - min, so the noise would drown the input and overflow float32 sums (try 0.1-0.5)"
        )
    return float(noise_scale)


def check_tolerance(tolerance, name="tolerance"):
    """A finite float > 0 (a relative tolerance), or a ValueError naming `name`."""
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not np.isfinite(tolerance)
        or tolerance <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {tolerance!r}")
    return float(tolerance)


def resolve_output(output, names, model_name):
    """The index of the explained output: `output` is one of `names` or an index; None only for one output."""
    listed = ", ".join(repr(n) for n in names)
    if output is None:
        if len(names) == 1:
            return 0
        raise ValueError(
            f"Model '{model_name}' has {len(names)} outputs ({listed}); choose the one to explain with "
            f"output=<name> or output=<index 0..{len(names) - 1}>"
        )
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"output {output!r} is not an output of model '{model_name}'; its outputs are {listed}")
        if names.count(output) > 1:
            indices = [i for i, n in enumerate(names) if n == output]
            raise ValueError(
                f"output {output!r} names several outputs of model '{model_name}' (indices {indices}); "
                "choose one by its index"
            )
        return names.index(output)
    if isinstance(output, numbers.Integral) and not isinstance(output, bool):
        if not 0 <= output < len(names):
            raise ValueError(
                f"output index {output} is out of range: model '{model_name}' has {len(names)} outputs "
                f"(valid: 0..{len(names) - 1}, or a name: {listed})"
            )
        return int(output)
    raise TypeError(f"output must be an output's name (str) or index (int), got {type(output).__name__} {output!r}")


def check_finite_attributions(result, method, model=None):
    """Raises if an analyzer's result holds NaN or Inf, naming the samples (and the layer, if `model`'s weights are to blame)."""
    bad = ~np.isfinite(result)
    if bad.any():
        samples = np.unique(np.nonzero(bad)[0])
        broken = [] if model is None else [w.path for w in model.weights if not np.all(np.isfinite(np.asarray(w)))]
        if broken:
            raise ValueError(
                f"{method}'s attributions contain NaN or Inf because the model's weights do: "
                f"{', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''} hold NaN or Inf values. "
                "Check the training run (a diverged loss) or the weights file."
            )
        raise ValueError(
            f"{method}'s attributions of samples {samples[:10].tolist()} contain NaN or Inf "
            f"({int(bad.sum())} values): the model's output or gradient overflowed for these inputs "
            "(e.g. exp or softmax of very large values). Rescale the inputs, or explain logits instead of "
            "probabilities."
        )
    return result


class ConvergenceWarning(UserWarning):
    """Some samples of a steps="auto" path method did not meet the tolerance within max_steps (see `last_converged`)."""


class SoftmaxOutputWarning(UserWarning):
    """A gradient method is explaining a softmax output, whose gradients saturate; silence with warnings.filterwarnings."""


def softmax_output_message(method, layer_name):
    """The SoftmaxOutputWarning text for `method` on an output produced by softmax layer `layer_name`."""
    return (
        f"{method} explains the output of '{layer_name}', a softmax: its gradients saturate (they vanish as a "
        "class probability nears 0 or 1 and mix in the other classes), so local-gradient maps of a confident "
        "prediction are near zero and noisy. Methods that integrate along a path (integrated_gradients, pgig, "
        "expected_gradients, smoothgrad_ig, noise_baseline_ig, smooth_taylor) are less affected. To explain the "
        "logits, rebuild the last layer with activation=None (same weights) or drop the Softmax layer. Silence "
        "with warnings.filterwarnings('ignore', category=pgig_tf.SoftmaxOutputWarning)."
    )


def user_stacklevel():
    """The `stacklevel` with which the caller's `warnings.warn` names the first frame outside pgig_tf."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("pgig_tf"):
        frame, level = frame.f_back, level + 1
    return level


def check_float_images(images):
    """A finite float array of images (B, H, W, C) (a tensor is converted); TypeError/ValueError otherwise."""
    if hasattr(images, "numpy"):
        images = images.numpy()
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"images must be a float array (B, H, W, C), got dtype {array.dtype}")
    if array.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("images contains NaN or Inf")
    return array
