"""The constructed models of the axiom checks: tiny Dense/ReLU networks whose right answers are known.

A network is a *spec*, a list of `Layer(name, kernel, bias, activation)` in float64, so that
the constructions (functionally equivalent rewrites, sums of networks, symmetric networks)
are plain numpy algebra; `build` turns a spec into a Keras model and `forward` evaluates it
in float64 numpy (for Monte Carlo references without Keras overhead).
"""

from collections import namedtuple

import numpy as np

INPUT_DIM = 4
Layer = namedtuple("Layer", "name kernel bias activation")

# The functionally equivalent rewrites of the base network (implementation invariance).
EQUIVALENTS = ("permute", "rescale", "split", "mixing", "relu_identity")
RESCALE_C = 4.0  # hidden layer x c, next layer x 1/c
# unit -> copies alpha*u and beta*u with outgoing weights t/alpha and (1-t)/beta
SPLIT = {"unit": 0, "alpha": 0.5, "beta": 2.0, "t": 0.3}
LINEARITY_A, LINEARITY_B = 0.7, -1.3  # f = a f1 + b f2
CONSTRUCTION_TEXT = {
    "permute": "hidden units permuted",
    "rescale": f"hidden layer (kernel, bias) x {RESCALE_C:g}, output kernel x 1/{RESCALE_C:g}",
    "split": (
        f"hidden unit {SPLIT['unit']} split into two copies scaled {SPLIT['alpha']:g} and {SPLIT['beta']:g}, "
        f"outgoing weights x {SPLIT['t']:g}/{SPLIT['alpha']:g} and x {1 - SPLIT['t']:g}/{SPLIT['beta']:g}"
    ),
    "mixing": "an invertible linear layer M inserted before the hidden layer, hidden kernel M^-1 W",
    "relu_identity": "the input written as ReLU(x) - ReLU(-x) by an extra ReLU layer [I, -I] before the hidden layer",
}


def make_data(seed, num_samples, dim=INPUT_DIM, stream=0):
    """Correlated, non-exchangeable Gaussian data x = z A, z ~ N(0, I), A = I + 0.5 N(0, 1) fixed by `seed`."""
    mixing = np.eye(dim) + 0.5 * np.random.default_rng([seed, 0, dim]).normal(size=(dim, dim))
    z = np.random.default_rng([seed, 1 + stream, dim]).normal(size=(num_samples, dim))
    return (z @ mixing).astype(np.float32)


def random_spec(rng, sizes):
    """ReLU layers of the given widths, then a linear output; weights N(0, 1/fan_in), biases N(0, 0.3^2)."""
    spec, fan_in = [], sizes[0]
    names = [f"hidden{i}" if i else "hidden" for i in range(len(sizes) - 2)] + ["out"]
    for i, (name, units) in enumerate(zip(names, sizes[1:])):
        activation = "relu" if i < len(sizes) - 2 else None
        spec.append(
            Layer(name, rng.normal(0.0, fan_in**-0.5, (fan_in, units)), rng.normal(0.0, 0.3, units), activation)
        )
        fan_in = units
    return spec


def forward(spec, x):
    """The network's output (n, outputs) in float64 numpy."""
    h = np.asarray(x, np.float64)
    for layer in spec:
        h = h @ layer.kernel + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0.0)
    return h


def build(spec, name):
    """A Keras Sequential of Dense layers with the spec's weights (float32)."""
    import keras

    layers = [keras.layers.Dense(l.kernel.shape[1], activation=l.activation, name=l.name) for l in spec]
    model = keras.Sequential([keras.Input((spec[0].kernel.shape[0],))] + layers, name=name)
    for layer in spec:
        model.get_layer(layer.name).set_weights([layer.kernel.astype(np.float32), layer.bias.astype(np.float32)])
    return model


# --- the constructions -----------------------------------------------------------------------


def base_spec(seed):
    """Implementation invariance's reference network: 4 -> 6 ReLU -> 1."""
    return random_spec(np.random.default_rng([seed, 10]), [INPUT_DIM, 6, 1])


def deep_spec(seed):
    """Completeness and sensitivity: 4 -> 8 ReLU -> 6 ReLU -> 1, non-zero biases (Gradient x Input not complete)."""
    return random_spec(np.random.default_rng([seed, 11]), [INPUT_DIM, 8, 6, 1])


def dummy_spec(seed, feature=INPUT_DIM - 1):
    """`deep_spec` with every first-layer weight of `feature` set to 0: the function does not depend on it."""
    spec = deep_spec(seed)
    kernel = spec[0].kernel.copy()
    kernel[feature] = 0.0
    return [spec[0]._replace(kernel=kernel)] + spec[1:]


def plateau_spec():
    """Seed 003's example f(x) = 1 - ReLU(1 - x0) on two inputs (x1 has weight 0)."""
    return [
        Layer("hidden", np.array([[-1.0], [0.0]]), np.array([1.0]), "relu"),
        Layer("out", np.array([[-1.0]]), np.array([1.0]), None),
    ]


def plateau_data(seed, num_samples):
    """Two correlated features, x0 centred on the kink at 1 so both sides of the plateau are seen."""
    return make_data(seed, num_samples, dim=2) + np.array([1.0, 0.0], np.float32)


def symmetric_spec(seed, pairs=3):
    """A network symmetric in x0 and x1 without equal weights: hidden units come in pairs whose
    first two kernel entries are swapped, with equal biases and outgoing weights."""
    rng = np.random.default_rng([seed, 12])
    columns, biases, outs = [], [], []
    for _ in range(pairs):
        column = rng.normal(0.0, INPUT_DIM**-0.5, INPUT_DIM)
        partner = column.copy()
        partner[[0, 1]] = column[[1, 0]]
        bias, out = rng.normal(0.0, 0.3), rng.normal(0.0, (2 * pairs) ** -0.5)
        columns += [column, partner]
        biases += [bias, bias]
        outs += [out, out]
    return [
        Layer("hidden", np.stack(columns, axis=1), np.array(biases), "relu"),
        Layer("out", np.array(outs)[:, None], rng.normal(0.0, 0.3, 1), None),
    ]


def linearity_specs(seed):
    """(f1, f2, f) with f = a f1 + b f2 as one network: both hidden layers side by side, a block-diagonal
    Dense(2) of the two heads, and a final linear Dense(1) with kernel (a, b) and bias 0."""
    rng = np.random.default_rng([seed, 13])
    f1, f2 = random_spec(rng, [INPUT_DIM, 5, 1]), random_spec(rng, [INPUT_DIM, 5, 1])
    heads = np.zeros((10, 2))
    heads[:5, 0], heads[5:, 1] = f1[1].kernel[:, 0], f2[1].kernel[:, 0]
    combined = [
        Layer(
            "hidden",
            np.concatenate([f1[0].kernel, f2[0].kernel], axis=1),
            np.concatenate([f1[0].bias, f2[0].bias]),
            "relu",
        ),
        Layer("heads", heads, np.concatenate([f1[1].bias, f2[1].bias]), None),
        Layer("combine", np.array([[LINEARITY_A], [LINEARITY_B]]), np.zeros(1), None),
    ]
    return f1, f2, combined


def mixing_matrix(seed, dim=INPUT_DIM):
    """An invertible, well-conditioned M = Q diag(s): Q random orthogonal, s in [0.5, 2] (condition <= 4)."""
    rng = np.random.default_rng([seed, 14])
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))
    return q * rng.uniform(0.5, 2.0, dim)


def permutation(seed, units):
    """A permutation of the hidden units that moves every unit."""
    return np.roll(np.random.default_rng([seed, 15]).permutation(units), 1)


def equivalent_spec(spec, construction, seed):
    """A network computing the same function as `spec` (input -> 'hidden' ReLU -> 'out') with other weights."""
    hidden, out = spec
    if construction == "permute":
        perm = permutation(seed, hidden.kernel.shape[1])
        return [
            hidden._replace(kernel=hidden.kernel[:, perm], bias=hidden.bias[perm]),
            out._replace(kernel=out.kernel[perm]),
        ]
    if construction == "rescale":
        # ReLU is positively homogeneous: relu(c z) / c = relu(z) for c > 0
        return [
            hidden._replace(kernel=hidden.kernel * RESCALE_C, bias=hidden.bias * RESCALE_C),
            out._replace(kernel=out.kernel / RESCALE_C),
        ]
    if construction == "split":
        j, alpha, beta, t = SPLIT["unit"], SPLIT["alpha"], SPLIT["beta"], SPLIT["t"]
        rest = [k for k in range(hidden.kernel.shape[1]) if k != j]
        kernel = np.concatenate(
            [alpha * hidden.kernel[:, [j]], beta * hidden.kernel[:, [j]], hidden.kernel[:, rest]], axis=1
        )
        bias = np.concatenate([[alpha * hidden.bias[j], beta * hidden.bias[j]], hidden.bias[rest]])
        out_kernel = np.concatenate([t / alpha * out.kernel[[j]], (1 - t) / beta * out.kernel[[j]], out.kernel[rest]])
        return [hidden._replace(kernel=kernel, bias=bias), out._replace(kernel=out_kernel)]
    if construction == "mixing":
        m = mixing_matrix(seed, hidden.kernel.shape[0])
        return [
            Layer("mix", m, np.zeros(m.shape[1]), None),
            hidden._replace(kernel=np.linalg.solve(m, hidden.kernel)),
            out,
        ]
    if construction == "relu_identity":
        eye = np.eye(hidden.kernel.shape[0])
        return [
            Layer("sign_split", np.concatenate([eye, -eye], axis=1), np.zeros(2 * len(eye)), "relu"),
            hidden._replace(kernel=np.concatenate([hidden.kernel, -hidden.kernel])),
            out,
        ]
    raise ValueError(f"construction must be one of {EQUIVALENTS}, got {construction!r}")


def predicted_patterns(construction, patterns, seed, spec):
    """The patterns the rewritten network should get if patterns transform covariantly, or None.

    Eq. 2 normalises each unit's pattern by w_j^T p_j = 1 and is built from covariances with
    y_j = w_j^T x, so scaling a unit's weights by c > 0 scales its pattern by 1/c, a unit whose
    input is scaled by c gets its pattern scaled by c, and permuting units permutes patterns.
    An inserted change of basis (mixing) or sign split has no such per-unit correspondence.
    """
    hidden, out = np.asarray(patterns["hidden"], np.float64), np.asarray(patterns["out"], np.float64)
    if construction == "permute":
        perm = permutation(seed, hidden.shape[1])
        return {"hidden": hidden[:, perm], "out": out[perm]}
    if construction == "rescale":
        return {"hidden": hidden / RESCALE_C, "out": out * RESCALE_C}
    if construction == "split":
        j, alpha, beta = SPLIT["unit"], SPLIT["alpha"], SPLIT["beta"]
        rest = [k for k in range(hidden.shape[1]) if k != j]
        return {
            "hidden": np.concatenate([hidden[:, [j]] / alpha, hidden[:, [j]] / beta, hidden[:, rest]], axis=1),
            "out": np.concatenate([alpha * out[[j]], beta * out[[j]], out[rest]]),
        }
    return None
