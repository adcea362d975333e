"""What an analyzer differentiates: the model's inputs, the explained output, and the engine's one array per sample.

Token inputs go through their Embedding; the rest converts between what users pass and the engine.

The engine and the aggregators see one float array per sample. For a single input it is the
input itself; for a single token input, its embedded vectors (tokens, embedding dim); for several
inputs, all of them (token inputs embedded) flattened and concatenated. Inside the compiled loop
`ModelSpec.forward` splits that array back into the model's inputs, runs the rule's rewritten
forward with each token input's Embedding replaced by the identity (so the rest of the graph is
differentiated with respect to the embedded vectors), and picks the chosen output.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl
from keras import tree

from pgig_tf.data import is_whole_data, iterate_batches
from pgig_tf.model import layer_kinds as L
from pgig_tf.model import tokens as sequence
from pgig_tf.model.graph import functional_of, is_graph_model, run_graph
from pgig_tf.validation import check_baseline, check_inputs, checked_array, resolve_output


def model_tensors(model):
    """The model's input and output tensors (flat lists), or a ValueError if it was never built on an input."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a Keras model (keras.Model), got {type(model).__name__}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"Model '{model.name}' has no defined input; build it first, e.g. with keras.Input(shape) "
            "as its first layer or model.build((None, ...))."
        )
    return list(inputs), list(outputs)


def model_io(model):
    """The input shape (batch axis first) and output width of a single-input, single-output model; clear errors otherwise."""
    inputs, outputs = model_tensors(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs and {len(outputs)} outputs; "
            "only single-input, single-output models are supported."
        )
    spec = ModelSpec(model)
    return spec.parts[0].shape, spec.output_width


class InputPart:
    """One model input as the engine sees it: its values, or for token ids their Embedding output."""

    def __init__(self, index, tensor, embedding):
        self.index = index
        self.name = tensor._keras_history[0].name
        self.shape = tuple(tensor.shape)  # the model input's shape, batch axis first
        self.dtype = tf.as_dtype(tensor.dtype)  # the model input's dtype
        self.embedding = embedding
        if embedding is not None:
            sequence.check_embedding(embedding, self.name)
            self.engine_shape = self.shape[1:] + (int(embedding.output_dim),)
            self.engine_dtype = _at_least_float32(tf.as_dtype(embedding.compute_dtype))
        elif self.dtype.is_floating:
            self.engine_shape = self.shape[1:]
            self.engine_dtype = _at_least_float32(self.dtype)
        else:
            raise ValueError(
                f"Input '{self.name}' has dtype {self.dtype.name} and does not feed exactly one Embedding layer: "
                "only float inputs can be differentiated. Token ids must go straight into a keras.layers.Embedding "
                "(attributions are then taken on its output); run other preprocessing (e.g. TextVectorization) "
                "outside the model."
            )

    @property
    def size(self):
        """Values per sample in the engine's array (None if a dimension is unknown)."""
        return None if any(d is None for d in self.engine_shape) else int(np.prod(self.engine_shape, dtype=np.int64))


class Batch:
    """A checked user input: the model's input arrays (model dtypes) and the engine's array."""

    def __init__(self, values, engine, structure, names):
        self.values = values
        self.engine = engine
        self.structure = structure  # None (one array), list, tuple or dict
        self.names = names
        self.num_samples = values[0].shape[0]


class ModelSpec:
    """The inputs, the chosen output and the engine's view of `model` (see the module docstring).

    `output`: the explained output's name (its layer's name, or its key when the model's
    outputs are a dict) or index; None is only allowed for a single-output model.
    `choose_output=False` skips the output (pattern fitting needs only the inputs).
    """

    def __init__(self, model, output=None, choose_output=True):
        inputs, outputs = model_tensors(model)
        self.model = model
        self.graph = functional_of(model)
        self.parts = [InputPart(i, t, sequence.embedding_for_input(model, i)) for i, t in enumerate(inputs)]
        self.input_names = [p.name for p in self.parts]
        self._outputs = outputs
        self.output_names = _output_names(model, outputs)
        self.output_index = None
        if choose_output:
            top_level = [t._keras_history[0].name for t in outputs]  # a nested model's name, as Keras names it
            if isinstance(output, str) and output not in self.output_names and top_level.count(output) == 1:
                output = top_level.index(output)
            self.output_index = resolve_output(output, self.output_names, model.name)
            shape = outputs[self.output_index].shape
            if any(d is None for d in shape[1:]):
                raise ValueError(f"Model '{model.name}' has an output of unknown size {tuple(shape)}")
            self.output_width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        self.embedding_ids = {id(p.embedding) for p in self.parts if p.embedding is not None}
        self.simple = len(self.parts) == 1 and not self.embedding_ids
        if len(self.parts) == 1:
            self.segments = None
            self.engine_shape = self.parts[0].engine_shape
            self.engine_dtype = self.parts[0].engine_dtype
        else:
            unknown = [p.name for p in self.parts if p.size is None]
            if unknown:
                raise ValueError(
                    f"Model '{model.name}' has several inputs, and input(s) {unknown} have an unknown size "
                    f"({', '.join(str(p.shape) for p in self.parts if p.size is None)}); multi-input models "
                    "need fixed input shapes (their values are concatenated into one vector per sample)."
                )
            self.segments = [p.size for p in self.parts]
            self.engine_shape = (sum(self.segments),)
            self.engine_dtype = np.result_type(*[p.engine_dtype for p in self.parts])
        self._predict_functions = {}

    # --- user input -> model inputs and engine array -----------------------------------------

    def check(self, x, name="x", embed=True):
        """A `Batch` from `x`: an array (one input) or a list/tuple/dict by input name (several inputs)."""
        values, structure, labels = self._by_part(x, name)
        arrays = []
        for part, value, label in zip(self.parts, values, labels):
            if part.embedding is None:
                arrays.append(check_inputs(value, part.shape, name=label, dtype=part.engine_dtype))
            else:
                tokens = sequence.check_tokens(checked_array(value, part.shape, label), part.embedding, label)
                arrays.append(tokens)
        counts = [a.shape[0] for a in arrays]
        if len(set(counts)) > 1:
            described = ", ".join(f"{c} in {label}" for c, label in zip(counts, labels))
            raise ValueError(f"{name}'s inputs must have the same number of samples, got {described}")
        model_inputs = [
            a.astype(p.dtype.as_numpy_dtype, copy=False) if p.embedding is not None else a
            for p, a in zip(self.parts, arrays)
        ]
        engine = self._engine_array(arrays) if embed else None
        return Batch(model_inputs, engine, structure, labels)

    def _by_part(self, x, name):
        """(values in model input order, structure of `x`, label of each value for messages)."""
        listed = ", ".join(repr(n) for n in self.input_names)
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            extra = sorted(str(k) for k in x if k not in self.input_names)
            if missing or extra:
                raise ValueError(
                    f"{name} must be a dict with one entry per model input ({listed}), got keys "
                    f"{sorted(str(k) for k in x)}"
                    + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else "")
                )
            return [x[n] for n in self.input_names], dict, [f"{name}[{n!r}]" for n in self.input_names]
        if len(self.parts) == 1:
            return [x], None, [name]
        if not isinstance(x, (list, tuple)):
            raise TypeError(
                f"{name} must be a list or tuple of {len(self.parts)} arrays (inputs {listed}) or a dict by "
                f"input name, got {type(x).__name__}"
            )
        if len(x) != len(self.parts):
            raise ValueError(f"{name} must hold {len(self.parts)} arrays (inputs {listed}), got {len(x)}")
        labels = [f"{name}[{i}] (input {n!r})" for i, n in enumerate(self.input_names)]
        return list(x), type(x), labels

    def _engine_array(self, arrays):
        values = []
        for part, array in zip(self.parts, arrays):
            if part.embedding is not None:
                array = sequence.embed(part.embedding, array)
            values.append(np.asarray(array, dtype=self.engine_dtype))
        if self.segments is None:
            return values[0]
        return np.concatenate([v.reshape(v.shape[0], -1) for v in values], axis=1)

    def baseline(self, baseline, name="baseline"):
        """The baseline in the engine's layout, broadcastable to one sample of the engine's array.

        One input: a number or an array broadcastable to one sample. A token input's baseline is in
        embedding space (0: the zero vector), or an integer array of token ids (one sample), embedded
        now with the Embedding's current weights (not again if they change later).
        Several inputs: a number for all, or a list/tuple/dict with one such value per input.
        """
        if self.segments is None:
            return self._part_baseline(self.parts[0], baseline, name)
        if isinstance(baseline, dict):
            values, _, labels = self._by_part(baseline, name)
        elif isinstance(baseline, (list, tuple)):
            values, _, labels = self._by_part(baseline, name)
        elif isinstance(baseline, numbers.Real) or np.ndim(baseline) == 0:
            values, labels = [baseline] * len(self.parts), [f"{name} (input {n!r})" for n in self.input_names]
        else:
            raise TypeError(
                f"{name} of a model with {len(self.parts)} inputs must be a number or a list/tuple/dict with "
                f"one value per input ({', '.join(map(repr, self.input_names))}), got {type(baseline).__name__}"
            )
        pieces = [
            np.broadcast_to(self._part_baseline(p, v, label), p.engine_shape).ravel()
            for p, v, label in zip(self.parts, values, labels)
        ]
        return np.concatenate(pieces).astype(np.float32)

    def _part_baseline(self, part, baseline, name):
        if (
            part.embedding is not None
            and np.ndim(baseline) > 0
            and np.issubdtype(np.asarray(baseline).dtype, np.integer)
        ):
            tokens = checked_array(np.asarray(baseline)[None], part.shape, f"{name} (token ids)")
            tokens = sequence.check_tokens(tokens, part.embedding, f"{name} (token ids)")
            return sequence.embed(part.embedding, tokens)[0].astype(np.float32)
        return check_baseline(baseline, (None,) + part.engine_shape, name=name)

    # --- engine array -> user-facing attributions --------------------------------------------

    def split(self, values):
        """The engine's array (numpy or tensor, one row per sample) as one array per input."""
        if self.segments is None:
            return [values]
        if isinstance(values, np.ndarray):
            pieces = np.split(values, np.cumsum(self.segments)[:-1], axis=1)
            return [p.reshape((-1,) + part.engine_shape) for p, part in zip(pieces, self.parts)]
        pieces = tf.split(values, self.segments, axis=1)
        return [
            tf.cast(tf.reshape(p, (-1,) + part.engine_shape), part.engine_dtype) for p, part in zip(pieces, self.parts)
        ]

    def restore(self, result, batch):
        """The engine's result as one attribution per input (token inputs summed over the embedding axis)."""
        arrays = [
            a.sum(axis=-1) if part.embedding is not None else a for a, part in zip(self.split(result), self.parts)
        ]
        return self.pack_like(arrays, batch)

    def pack_like(self, arrays, batch):
        """One array per input, in the structure the user passed (`batch.structure`)."""
        if batch.structure is None:
            return arrays[0]
        if batch.structure is dict:
            return dict(zip(self.input_names, arrays))
        return batch.structure(arrays)

    def attribution_shapes(self, batch):
        """The shape of each input's attributions (token inputs: the token ids' shape)."""
        return [v.shape for v in batch.values]

    # --- the forward pass inside the compiled loop -------------------------------------------

    def pack_inputs(self, tensors):
        """The model's inputs in the structure it was built with."""
        if len(tensors) == 1:
            return tensors[0]
        return tree.pack_sequence_as(self.graph._inputs_struct, tensors)

    def forward(self, rule, points):
        """The chosen output on `points` (the engine's array), built so that differentiating it applies `rule`."""
        inputs = self.pack_inputs(self.split(points))
        if self.embedding_ids:
            outputs = run_graph(self.model, inputs, self._substitute(rule))
        else:
            outputs = rule.forward(self.model, inputs)
        return self.select(outputs)

    def select(self, outputs):
        """The chosen output out of the model's (possibly nested) outputs."""
        return tree.flatten(outputs)[self.output_index]

    def _substitute(self, rule):
        """The rule's layer substitutes, with each token input's Embedding replaced by the identity."""
        inner = getattr(rule, "substitute", None)

        def substitute(layer):
            if id(layer) in self.embedding_ids:
                return lambda embedded, *args, **kwargs: embedded
            if inner is not None:
                return inner(layer)
            return _inference_operation(layer)

        return substitute

    def check_rule(self, rule):
        """`rule.check_model`, with the Embedding layers of token inputs exempt (they are never differentiated)."""
        rule.check_model(self.model, exempt=self.embedding_ids)

    # --- predictions ---------------------------------------------------------------------------

    def predict(self, batch, batch_size):
        """The chosen output (numpy) on the checked `batch`, `batch_size` samples at a time."""
        function = self._predict_function(batch)
        outputs = [
            function(*[tf.constant(v[i : i + batch_size]) for v in batch.values]).numpy()
            for i in range(0, batch.num_samples, batch_size)
        ]
        return np.concatenate(outputs)

    def _predict_function(self, batch):
        key = tuple((v.shape[1:], v.dtype.name) for v in batch.values)
        if key not in self._predict_functions:
            signature = [tf.TensorSpec((None,) + v.shape[1:], v.dtype) for v in batch.values]

            def predict(*inputs):
                return self.select(self.model(self.pack_inputs(list(inputs)), training=False))

            self._predict_functions[key] = tf.function(predict, input_signature=signature)
        return self._predict_functions[key]

    def input_signature(self):
        """One TensorSpec per model input (model dtypes), e.g. for a compiled pass over data."""
        return [tf.TensorSpec(p.shape, p.dtype) for p in self.parts]

    # --- data for fit() ------------------------------------------------------------------------

    def iterate_batches(self, data, batch_size):
        """`data.iterate_batches` for this model's inputs: (iterator of raw input batches, count or None)."""
        ranks = len(self.parts[0].shape) - 1 if len(self.parts) == 1 else [len(p.shape) - 1 for p in self.parts]
        return iterate_batches(data, batch_size, ranks, self.input_names)

    def is_array_data(self, data):
        """True if `data` is all the data in memory: an array (one input) or a list/tuple/dict of arrays."""
        if len(self.parts) == 1:
            return isinstance(data, (np.ndarray, tf.Tensor))
        return is_whole_data(data, [len(p.shape) - 1 for p in self.parts], self.input_names)

    # --- what the output is ----------------------------------------------------------------------

    def softmax_layer(self):
        """The layer that computes the chosen output if it is a softmax (Softmax, or activation='softmax'), else None."""
        layer = producing_layer(self._outputs[self.output_index])
        if isinstance(layer, kl.Softmax):
            return layer
        if getattr(layer, "activation", None) is keras.activations.softmax:
            return layer
        return None


def _output_names(model, outputs):
    """One name per output (flattened order): its dict key if the outputs are a dict, else the name of the
    layer that computes it (looking inside nested models)."""
    graph = functional_of(model)
    structure = getattr(graph, "_outputs_struct", None)
    if isinstance(structure, dict):
        return [str(path[0]) for path, _ in tree.flatten_with_path(structure)]
    return [producing_layer(t).name for t in outputs]


def producing_layer(tensor):
    """The leaf layer that computes `tensor`, looking through nested Functional/Sequential models."""
    layer, _, index = tensor._keras_history
    while is_graph_model(layer) and functional_of(layer) is not None:
        layer, _, index = tree.flatten(functional_of(layer).outputs)[index]._keras_history
    return layer


def _inference_operation(operation):
    """Calls a layer in inference mode; Keras operations (ops used in a functional graph) as they are."""
    if isinstance(operation, keras.Layer):
        return L.inference_call(operation)
    return operation


class SpecRule:
    """A backward rule seen through a `ModelSpec`: what the engine calls, on its one array per sample."""

    def __init__(self, rule, spec):
        self.rule = rule
        self.spec = spec

    def forward(self, model, points):
        return self.spec.forward(self.rule, points)


def _at_least_float32(dtype):
    """The engine's working dtype for an input of `dtype`: float64 stays, anything narrower is float32.

    The running count, mean and M2 live in this dtype; bfloat16 would count exactly only to 256.
    """
    return np.float64 if dtype == tf.float64 else np.float32
