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
    return isinstance(layer, keras.Sequential) or (isinstance(layer, keras.Model) and functional_of(layer) is not None)


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


def leaf_operations(model):
    """Like `leaf_layers`, plus the Keras operations (`keras.ops` calls) of functional graphs."""
    seen, result = set(), []

    def visit(m):
        graph = functional_of(m)
        for operation in graph.operations if graph is not None else m.layers:
            if id(operation) in seen:
                continue
            seen.add(id(operation))
            if is_graph_model(operation):
                visit(operation)
            else:
                result.append(operation)

    visit(model)
    return result


def consumers(model):
    """Maps id(leaf operation) to the leaf operations that consume its output, across nested models.

    A nested model is looked through in both directions: the layer feeding it is consumed
    by the layers reading the nested model's input, and the layer producing its output by the
    outer layers reading that output. A layer used at several places lists all consumers.
    """
    result = {}

    def resolve(tensor, sources):
        """The leaf operations that produce `tensor`; `sources[id(input)]` feeds the graph's inputs."""
        operation, node_index, tensor_index = tensor._keras_history
        if id(tensor) in sources:
            return sources[id(tensor)]
        if is_graph_model(operation) and functional_of(operation) is not None:
            inner = functional_of(operation)
            node = operation._inbound_nodes[node_index]
            inner_sources = _input_sources(inner, node, sources, resolve)
            output = keras.tree.flatten(inner.outputs)[tensor_index]
            return resolve(output, inner_sources)
        return [operation]

    def visit(graph, sources):
        for nodes in graph._nodes_by_depth.values():
            for node in nodes:
                operation = node.operation
                if node.is_input:
                    continue
                if is_graph_model(operation):
                    inner = functional_of(operation)
                    if inner is not None:
                        visit(inner, _input_sources(inner, node, sources, resolve))
                        continue
                for tensor in node.input_tensors:
                    for producer in resolve(tensor, sources):
                        result.setdefault(id(producer), []).append(operation)

    graph = functional_of(model)
    if graph is None:  # a Sequential never built on an input: consecutive layers
        layers = model.layers
        for producer, consumer in zip(layers[:-1], layers[1:]):
            result.setdefault(id(producer), []).append(consumer)
        return result
    visit(graph, {})
    return result


def _input_sources(inner, node, sources, resolve):
    """Maps each input tensor of the nested graph `inner` to the producers feeding it at `node`."""
    inner_inputs = keras.tree.flatten(inner.inputs)
    outer_inputs = list(node.input_tensors)
    return {id(i): resolve(o, sources) for i, o in zip(inner_inputs, outer_inputs)}
