"""Walking a Keras model's graph (Sequential, Functional, nested) with a substitute for each layer."""

import keras


def functional_of(model):
    """The Functional graph behind `model`, or None for a Sequential that was never built on an input."""
    if isinstance(model, keras.Sequential):
        return model._functional
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def is_graph_model(layer):
    """True for a model we can walk (a Sequential or Functional model, possibly nested)."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and functional_of(layer) is not None
    )


def run_graph(model, inputs, substitute):
    """Evaluates `model` on `inputs`, calling `substitute(layer)(*args, **kwargs)` in place of each layer.

    Nested Sequential/Functional models are walked too, so `substitute` only ever sees leaf
    layers (and Keras operations such as `ops.add` used in a functional graph).
    """

    def operation_fn(operation):
        if is_graph_model(operation):
            return lambda x, *args, **kwargs: run_graph(operation, x, substitute)
        return substitute(operation)

    graph = functional_of(model)
    if graph is not None:
        return graph._run_through_graph(inputs, operation_fn=operation_fn)
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = operation_fn(layer)(x)
        return x
    raise ValueError(
        f"Model '{model.name}' ({type(model).__name__}) is a subclassed model whose graph cannot be "
        "read; build it with the Sequential or Functional API to use a modified backward rule."
    )


def leaf_layers(model):
    """All leaf layers of `model`, nested models expanded, in graph order, each once."""
    seen, result = set(), []

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if is_graph_model(layer):
            for inner in layer.layers:
                visit(inner)
        else:
            result.append(layer)

    for layer in model.layers:
        visit(layer)
    return result


def consumers(model):
    """Maps id(layer) to the list of operations that consume its output, across nested models."""
    result = {}

    def add(producer, consumer):
        result.setdefault(id(producer), []).append(consumer)

    def visit(m):
        graph = functional_of(m)
        if graph is None:
            layers = m.layers
            for producer, consumer in zip(layers[:-1], layers[1:]):
                add(producer, consumer)
        else:
            for nodes in graph._nodes_by_depth.values():
                for node in nodes:
                    for tensor in node.input_tensors:
                        add(tensor._keras_history[0], node.operation)
        for layer in m.layers:
            if is_graph_model(layer):
                visit(layer)

    visit(model)
    return result
