"""`register_layer`: telling the backward rules and pattern fitting how a layer class they do not know behaves."""

import inspect
import warnings

LINEAR = "linear"
TREATMENTS = (LINEAR,)

_REGISTERED = {}  # layer class -> "linear" or a callable fn(layer, inputs, rule_name)


def register_layer(layer_class: type, treatment) -> None:
    """Tells the non-plain rules (guided and pattern rules, pattern fitting) how `layer_class` behaves.

    Args:
        layer_class: the Keras layer class (its subclasses are covered too).
        treatment: `"linear"`: the layer is passed with its ordinary gradient under every rule;
            right for layers without a ReLU gate or a kernel to replace (scalings, custom
            pooling or reshaping, fixed linear maps) and for anything you want treated that way.
            Or a function `fn(layer, inputs, rule_name) -> outputs` for full control: called in
            place of `layer(inputs)` while a rule rewrites the model; `rule_name` is one of
            'guided_backprop', 'pattern_attribution', 'pattern_net'. It must return the layer's
            own forward value (e.g. `layer(inputs, training=False)`) and may give it any backward
            pass with `tf.custom_gradient` (whose grad function must take `variables=None` and
            return `(dx, [None] * len(variables))` when the layer reads its own weights).

    Registrations apply to subclasses too: the class nearest to the layer's own in its method
    resolution order wins, a registered one or a built-in one (so registering a Keras class
    overrides its built-in treatment). The plain 'gradient' rule never needs them. Register
    before creating an analyzer (its rule is checked and traced then); registrations live
    in this process only.
    Example::

        pgig_tf.register_layer(MyScale, "linear")

        def identity_under_pattern_attribution(layer, inputs, rule_name):
            if rule_name != "pattern_attribution":
                return layer(inputs)

            @tf.custom_gradient
            def call(x):
                return layer(x), lambda dy, variables=None: (dy, [None] * len(variables)) if variables else dy

            return call(inputs)

        pgig_tf.register_layer(MyScale, identity_under_pattern_attribution)

    `unregister_layer(layer_class)` removes a registration.

    Raises:
        TypeError: `layer_class` is not a class.
        ValueError: `treatment` is neither "linear" nor callable.
    """
    if not inspect.isclass(layer_class):
        raise TypeError(f"layer_class must be a class (a Keras layer type), got {layer_class!r}")
    if not (treatment in TREATMENTS or callable(treatment)):
        raise ValueError(
            f"treatment must be one of {TREATMENTS} or a function fn(layer, inputs, rule_name), got {treatment!r}"
        )
    _REGISTERED[layer_class] = treatment


def unregister_layer(layer_class: type) -> None:
    """Removes the registration of `layer_class` (a no-op if there is none)."""
    _REGISTERED.pop(layer_class, None)


def register_rule(layer_class, treatment):
    """Deprecated name of `register_layer` (it registers a layer treatment, not a rule)."""
    warnings.warn("pgig_tf.register_rule is deprecated; use pgig_tf.register_layer", DeprecationWarning, stacklevel=2)
    register_layer(layer_class, treatment)


def unregister_rule(layer_class):
    """Deprecated name of `unregister_layer`."""
    warnings.warn(
        "pgig_tf.unregister_rule is deprecated; use pgig_tf.unregister_layer", DeprecationWarning, stacklevel=2
    )
    unregister_layer(layer_class)


def registered_treatment(layer):
    """(treatment, position in the MRO) of `layer`'s nearest registered class, or (None, None)."""
    for position, cls in enumerate(type(layer).__mro__):
        if cls in _REGISTERED:
            return _REGISTERED[cls], position
    return None, None
