"""Token inputs: the Embedding layer an integer input feeds, checked token ids, and their embedded vectors."""

import numpy as np
from keras import layers as kl

from pgig_tf.model import layer_kinds as L
from pgig_tf.model.graph import functional_of, is_graph_model


def embedding_for_input(model, index):
    """The Embedding layer that is the only consumer of model input `index` (through nested models), else None."""
    graph = functional_of(model)
    if graph is None:
        return None
    consumers = input_consumers(graph, index)
    masked = [op for op, _ in consumers if isinstance(op, kl.Embedding) and getattr(op, "mask_zero", False)]
    if len(masked) == 1:
        return masked[0]  # its mask is a separate op on the token ids; check_embedding refuses it
    if len(consumers) != 1:
        return None
    operation, position = consumers[0]
    if isinstance(operation, kl.Embedding):
        return operation
    if is_graph_model(operation):
        return embedding_for_input(operation, position)
    return None


def input_consumers(graph, index):
    """(operation, argument position) of every call that reads input `index` of the Functional `graph`."""
    tensor = graph.inputs[index]
    found = []
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.is_input or not node.operation:
                continue
            for position, argument in enumerate(node.input_tensors):
                if argument is tensor:
                    found.append((node.operation, position))
    return found


def check_embedding(layer, input_name):
    """Raises for an Embedding whose outputs cannot stand in for its token ids (a padding mask)."""
    if getattr(layer, "mask_zero", False):
        raise ValueError(
            f"Embedding {L.describe(layer)} on input '{input_name}' has mask_zero=True: attributions are "
            "taken on the embedded vectors, which carry no padding mask, so masked layers would compute "
            "something else. Rebuild the model with mask_zero=False (same weights) to explain it."
        )


def check_tokens(array, layer, name):
    """`array` (already shape-checked) as int32 token ids in [0, input_dim), or a ValueError naming the bad id."""
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            sample = int(np.nonzero(bad)[0][0])
            raise ValueError(f"{name} contains NaN or Inf (sample {sample}); it holds token ids")
        fractional = array != np.round(array)
        if fractional.any():
            where = np.nonzero(fractional)
            raise ValueError(
                f"{name} holds token ids for Embedding {L.describe(layer)}, which must be whole numbers; "
                f"got {array[where][0].item()!r} (sample {int(where[0][0])})"
            )
    input_dim = int(layer.input_dim)
    out_of_range = (array < 0) | (array >= input_dim)
    if out_of_range.any():
        where = np.nonzero(out_of_range)
        raise ValueError(
            f"{name} holds token ids for Embedding {L.describe(layer)}: integers in [0, {input_dim}) "
            f"(its input_dim), got {array[where][0].item()!r} (sample {int(where[0][0])})"
        )
    return array.astype(np.int32)


def embed(layer, tokens, batch_size=1024):
    """The Embedding layer's output (numpy) for int token ids, computed `batch_size` rows at a time."""
    pieces = [
        np.asarray(layer(tokens[i : i + batch_size], training=False)) for i in range(0, max(len(tokens), 1), batch_size)
    ]
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
