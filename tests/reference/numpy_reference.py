"""Pure-numpy (float64) reference for gradient / guided / IG (five integration rules, exact ReLU-path integral) /
PatternNet / PatternAttribution / PGIG."""

# Layer-spec format: a network is a plain Python list of the dataclasses below, applied in order
# to a batch x (NHWC images or (N, D) vectors).  Kernels follow TensorFlow/Keras conventions:
# Dense.W is (D_in, D_out); Conv2D.K is (kh, kw, c_in, c_out) used as cross-correlation.
# `patterns` arguments are lists with ONE array per Dense/Conv2D layer (in network order),
# each with the shape of that layer's kernel -- exactly what `compute_patterns` returns.
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F64 = np.float64


@dataclass
class Dense:
    W: np.ndarray  # (D_in, D_out)
    b: np.ndarray  # (D_out,)
    activation: str = "linear"  # "linear" | "relu"


@dataclass
class Conv2D:
    K: np.ndarray  # (kh, kw, c_in, c_out)
    b: np.ndarray  # (c_out,)
    strides: tuple = (1, 1)
    padding: str = "valid"  # "valid" | "same" (TensorFlow semantics)
    dilation: tuple = (1, 1)
    activation: str = "linear"  # "linear" | "relu"


@dataclass
class ReLU:
    pass


@dataclass
class MaxPool2D:
    pool: tuple = (2, 2)
    strides: tuple | None = None  # None -> same as pool (Keras default)
    padding: str = "valid"  # "valid" | "same" (window padding never wins the max)


@dataclass
class AvgPool2D:
    pool: tuple = (2, 2)
    strides: tuple | None = None
    padding: str = "valid"  # "valid" | "same" ("same" averages over the real pixels only)


@dataclass
class Flatten:
    pass  # NHWC -> (N, H*W*C), numpy row-major


@dataclass
class Softmax:
    pass  # over the last axis


RULES = ("gradient", "guided", "pattern_attribution", "pattern_net")


# ----------------------------------------------------------------------------- geometry
def _out_and_pads(size, k, stride, dilation, padding):
    """TF output size and (before, after) padding along one spatial axis."""
    ek = (k - 1) * dilation + 1  # dilated kernel extent
    if padding == "valid":
        out, before, after = (size - ek) // stride + 1, 0, 0  # = ceil((size - ek + 1) / stride)
    elif padding == "same":
        out = -(-size // stride)  # ceil(size / stride)
        total = max((out - 1) * stride + ek - size, 0)
        before, after = total // 2, total - total // 2  # odd extra pixel goes AFTER
    else:
        raise ValueError(f"unknown padding {padding!r}")
    if out < 1:
        raise ValueError("input smaller than the (dilated) kernel")
    return out, before, after


def _geometry(x_shape, ksize, strides, padding, dilation):
    _, h, w, _ = x_shape
    oh, pt, pb = _out_and_pads(h, ksize[0], strides[0], dilation[0], padding)
    ow, pl, pr = _out_and_pads(w, ksize[1], strides[1], dilation[1], padding)
    return oh, ow, ((0, 0), (pt, pb), (pl, pr), (0, 0))


def _window(i, j, oh, ow, strides, dilation):
    """Slices of the padded input seen by kernel tap (i, j) at all output positions."""
    (sh, sw), (dh, dw) = strides, dilation
    return (
        slice(None),
        slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
        slice(j * dw, j * dw + (ow - 1) * sw + 1, sw),
        slice(None),
    )


def extract_patches(x, ksize, strides=(1, 1), padding="valid", dilation=(1, 1), pad_value=0.0):
    """Receptive-field patches (N, oh, ow, kh*kw*c_in) in (kh, kw, c_in) order, so that
    conv2d(x, K) == extract_patches(x, ...) @ K.reshape(-1, c_out)."""
    x = np.asarray(x, F64)
    n, _, _, c = x.shape
    kh, kw = ksize
    oh, ow, pads = _geometry(x.shape, ksize, strides, padding, dilation)
    xp = np.pad(x, pads, constant_values=pad_value)
    cols = np.empty((n, oh, ow, kh, kw, c))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[_window(i, j, oh, ow, strides, dilation)]
    return cols.reshape(n, oh, ow, kh * kw * c)


def _col2im(gcols, x_shape, ksize, strides, padding, dilation):
    """Adjoint of extract_patches: scatter-add patch gradients back onto the input."""
    n, h, w, c = x_shape
    kh, kw = ksize
    oh, ow, pads = _geometry(x_shape, ksize, strides, padding, dilation)
    gp = np.zeros((n, h + sum(pads[1]), w + sum(pads[2]), c))
    g = gcols.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            gp[_window(i, j, oh, ow, strides, dilation)] += g[:, :, :, i, j, :]
    (pt, _), (pl, _) = pads[1], pads[2]
    return gp[:, pt : pt + h, pl : pl + w, :]


def _pool_args(layer):
    return tuple(layer.pool), tuple(layer.strides or layer.pool), layer.padding, (1, 1)


# ----------------------------------------------------------------------------- forward
def _forward(layers, x):
    """Forward pass; caches[i] = (input of layer i, aux) with aux = pre-activation / argmax / ..."""
    x = np.asarray(x, F64)
    caches = []
    for layer in layers:
        a, aux = x, None
        if isinstance(layer, Dense):
            aux = x @ np.asarray(layer.W, F64) + np.asarray(layer.b, F64)  # z = xW + b
            x = np.maximum(aux, 0.0) if layer.activation == "relu" else aux
        elif isinstance(layer, Conv2D):
            K = np.asarray(layer.K, F64)
            cols = extract_patches(x, K.shape[:2], layer.strides, layer.padding, layer.dilation)
            aux = cols @ K.reshape(-1, K.shape[3]) + np.asarray(layer.b, F64)  # z = patches K + b
            x = np.maximum(aux, 0.0) if layer.activation == "relu" else aux
        elif isinstance(layer, ReLU):
            aux, x = x, np.maximum(x, 0.0)
        elif isinstance(layer, MaxPool2D):
            ks, st, pad, dil = _pool_args(layer)
            cols = extract_patches(x, ks, st, pad, dil, pad_value=-np.inf)
            cols = cols.reshape(*cols.shape[:3], ks[0] * ks[1], x.shape[3])
            aux = np.argmax(cols, axis=3)[:, :, :, None, :]  # first max wins
            x = np.take_along_axis(cols, aux, axis=3)[:, :, :, 0, :]
        elif isinstance(layer, AvgPool2D):
            ks, st, pad, dil = _pool_args(layer)
            cols = extract_patches(x, ks, st, pad, dil)
            cols = cols.reshape(*cols.shape[:3], ks[0] * ks[1], x.shape[3])
            aux = extract_patches(np.ones((1,) + x.shape[1:3] + (1,)), ks, st, pad, dil).sum(-1)
            x = cols.sum(axis=3) / aux[..., None]  # mean of real pixels
        elif isinstance(layer, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(layer, Softmax):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            x = aux = e / e.sum(axis=-1, keepdims=True)
        else:
            raise TypeError(f"unknown layer spec {layer!r}")
        caches.append((a, aux))
    return x, caches


def forward(layers, x):
    """Network output for batch x."""
    return _forward(layers, x)[0]


# ----------------------------------------------------------------------------- backward
def _relu_back(g, z, rule):
    # ordinary: g * 1[z > 0];  guided: g * 1[z > 0] * 1[g > 0]
    gate = z > 0
    if rule == "guided":
        gate = gate & (g > 0)
    return g * gate


def _kernel_patterns(layers, patterns):
    idx = [i for i, l in enumerate(layers) if isinstance(l, (Dense, Conv2D))]
    if patterns is None:
        return {}
    if len(patterns) != len(idx):
        raise ValueError(f"need {len(idx)} patterns (one per Dense/Conv2D), got {len(patterns)}")
    return {i: np.asarray(p, F64) for i, p in zip(idx, patterns)}


def _backward(layers, caches, g, rule, patterns):
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}")
    pats = _kernel_patterns(layers, patterns)
    if rule.startswith("pattern") and not pats:
        raise ValueError(f"rule {rule!r} needs patterns")
    for li in reversed(range(len(layers))):
        layer, (a, aux) = layers[li], caches[li]
        if isinstance(layer, (Dense, Conv2D)):
            if layer.activation == "relu":
                g = _relu_back(g, aux, rule)
            W = np.asarray(layer.W if isinstance(layer, Dense) else layer.K, F64)
            if rule == "pattern_attribution":
                W = W * pats[li]  # backward kernel W (*) P
            elif rule == "pattern_net":
                W = pats[li]  # backward kernel P
            if isinstance(layer, Dense):
                g = g @ W.T  # dL/dx = g W^T
            else:
                gcols = g @ W.reshape(-1, W.shape[3]).T
                g = _col2im(gcols, a.shape, W.shape[:2], layer.strides, layer.padding, layer.dilation)
        elif isinstance(layer, ReLU):
            g = _relu_back(g, aux, rule)
        elif isinstance(layer, MaxPool2D):
            ks, st, pad, dil = _pool_args(layer)
            n, oh, ow, c = g.shape
            gcols = np.zeros((n, oh, ow, ks[0] * ks[1], c))
            np.put_along_axis(gcols, aux, g[:, :, :, None, :], axis=3)  # route to the argmax
            g = _col2im(gcols, a.shape, ks, st, pad, dil)
        elif isinstance(layer, AvgPool2D):
            ks, st, pad, dil = _pool_args(layer)
            gcols = np.repeat((g / aux[..., None])[:, :, :, None, :], ks[0] * ks[1], axis=3)
            g = _col2im(gcols, a.shape, ks, st, pad, dil)
        elif isinstance(layer, Flatten):
            g = g.reshape(a.shape)
        elif isinstance(layer, Softmax):
            g = aux * (g - np.sum(g * aux, axis=-1, keepdims=True))  # J_softmax^T g
    return g


def backward(layers, x, targets, rule="gradient", patterns=None, seed="ones"):
    """Backprop of sum_n seed_n * out[n, t_n] to x under `rule`.
    seed="ones" uses 1.0, seed="value" uses the selected output value. Returns (grad, output)."""
    out, caches = _forward(layers, x)
    n = out.shape[0]
    flat = out.reshape(n, -1)
    t = np.broadcast_to(np.asarray(targets, dtype=np.int64).reshape(-1), (n,))
    rows = np.arange(n)
    g = np.zeros_like(flat)
    if seed == "ones":
        g[rows, t] = 1.0
    elif seed == "value":
        g[rows, t] = flat[rows, t]
    else:
        raise ValueError(f"unknown seed {seed!r}")
    return _backward(layers, caches, g.reshape(out.shape), rule, patterns), out


# ----------------------------------------------------------------------------- methods
def gradient(layers, x, targets):
    return backward(layers, x, targets, "gradient")[0]


def input_times_gradient(layers, x, targets):
    return np.asarray(x, F64) * gradient(layers, x, targets)


def guided_backprop(layers, x, targets):
    return backward(layers, x, targets, "guided")[0]


def path_rule(method, steps):
    """(alphas, weights) of an m-point rule on [0, 1], written out from the definitions:
    right/left/middle Riemann k/m, (k-1)/m, (k-1/2)/m with weight 1/m; trapezoid (k-1)/(m-1)
    with end weights 1/(2(m-1)) and inner 1/(m-1); Gauss-Legendre (1 + xi)/2 with weight omega/2."""
    m = steps
    if method == "riemann_right":
        return [k / m for k in range(1, m + 1)], [1 / m] * m
    if method == "riemann_left":
        return [(k - 1) / m for k in range(1, m + 1)], [1 / m] * m
    if method == "riemann_middle":
        return [(k - 0.5) / m for k in range(1, m + 1)], [1 / m] * m
    if method == "riemann_trapezoid":
        return [(k - 1) / (m - 1) for k in range(1, m + 1)], [
            (0.5 if k in (1, m) else 1.0) / (m - 1) for k in range(1, m + 1)
        ]
    if method == "gausslegendre":
        xi, omega = np.polynomial.legendre.leggauss(m)
        return list((1 + xi) / 2), list(omega / 2)
    raise ValueError(f"unknown method {method!r}")


def integrated_gradients(layers, x, targets, baseline=None, steps=50, rule="gradient", patterns=None, method=None):
    """Right Riemann sum: (x - x0) * (1/m) sum_{k=1..m} grad(x0 + k/m (x - x0)); with `method`
    (see `path_rule`): (x - x0) * sum_k w_k grad(x0 + alpha_k (x - x0))."""
    x = np.asarray(x, F64)
    x0 = np.zeros_like(x) if baseline is None else np.broadcast_to(np.asarray(baseline, F64), x.shape)
    total = np.zeros_like(x)
    if method is not None:
        for alpha, weight in zip(*path_rule(method, steps)):
            total += weight * backward(layers, x0 + alpha * (x - x0), targets, rule, patterns)[0]
        return (x - x0) * total
    for k in range(1, steps + 1):
        total += backward(layers, x0 + (k / steps) * (x - x0), targets, rule, patterns)[0]
    return (x - x0) * total / steps


def relu_path_breakpoints(layers, x, x0):
    """The alphas in [0, 1] between which every ReLU gate along x0 + alpha (x - x0) is constant (one sample).

    For nets of Dense, Conv2D, ReLU and Flatten: the pre-activation of a gate is affine in alpha
    between the breakpoints of the gates before it, so its zero crossings are found by linear
    interpolation, gate by gate.
    """
    for layer in layers:
        if not isinstance(layer, (Dense, Conv2D, ReLU, Flatten)):
            raise TypeError(f"breakpoints need a piecewise-linear net of Dense/Conv2D/ReLU/Flatten, got {layer!r}")
    x, x0 = np.asarray(x, F64), np.broadcast_to(np.asarray(x0, F64), np.shape(x))
    points = np.array([0.0, 1.0])
    for index, layer in enumerate(layers):
        gated = isinstance(layer, ReLU) or (isinstance(layer, (Dense, Conv2D)) and layer.activation == "relu")
        if not gated:
            continue
        path = x0[None] + points.reshape((-1,) + (1,) * x.ndim) * (x - x0)[None]
        z = _forward(layers[: index + 1], path)[1][index][1].reshape(len(points), -1)  # the gate's input
        z0, z1 = z[:-1], z[1:]
        crossing = z0 * z1 < 0
        fraction = np.where(crossing, z0 / np.where(crossing, z0 - z1, 1.0), 0.0)
        roots = (points[:-1, None] + fraction * np.diff(points)[:, None])[crossing]
        points = np.unique(np.concatenate([points, roots]))
    return points


def integrated_gradients_exact(layers, x, targets, baseline=None, rule="gradient", patterns=None):
    """The exact path integral (x - x0) * integral_0^1 grad(x0 + alpha (x - x0)) d alpha of a piecewise-linear
    ReLU net: the gradient is constant between the breakpoints (`relu_path_breakpoints`)."""
    x = np.asarray(x, F64)
    x0 = np.zeros_like(x) if baseline is None else np.broadcast_to(np.asarray(baseline, F64), x.shape)
    t = np.broadcast_to(np.asarray(targets, dtype=np.int64).reshape(-1), (len(x),))
    result = np.zeros_like(x)
    for i in range(len(x)):
        points = relu_path_breakpoints(layers, x[i], x0[i])
        middles = (points[:-1] + points[1:]) / 2
        path = x0[i][None] + middles.reshape((-1,) + (1,) * (x.ndim - 1)) * (x[i] - x0[i])[None]
        gradients = backward(layers, path, np.full(len(middles), t[i]), rule, patterns)[0]
        result[i] = (x[i] - x0[i]) * np.tensordot(np.diff(points), gradients, axes=1)
    return result


def pattern_net(layers, x, targets, patterns):
    return backward(layers, x, targets, "pattern_net", patterns, seed="value")[0]


def pattern_attribution(layers, x, targets, patterns):
    return backward(layers, x, targets, "pattern_attribution", patterns, seed="value")[0]


def pgig(layers, x, targets, patterns, baseline=None, steps=50, method=None):
    """Integrated gradients whose gradients use the pattern_attribution rule (seed 1.0)."""
    return integrated_gradients(layers, x, targets, baseline, steps, "pattern_attribution", patterns, method)


# ----------------------------------------------------------------------------- patterns (Eq. 2)
def patterns_dense(X, W, b=None, kind="relu", cap=np.inf, include_edges=(False, False)):
    """p_j = (E+[x y_j] - E+[x] E[y_j]) / w_j^T (E+[x y_j] - E+[x] E[y_j]),  y = X W (no bias).
    E+ averages over samples with 0 < (XW + b)_j < cap ("relu"; cap 6 for ReLU6) or over all
    samples ("linear"). Units with no active sample or a zero denominator get p_j = 0.
    `include_edges` = (z = 0 counts, z = cap counts): a deliberately wrong gate, to show a test can fail."""
    X = np.asarray(X, F64).reshape(len(X), -1)
    W = np.asarray(W, F64)
    b = np.zeros(W.shape[1]) if b is None else np.asarray(b, F64)
    y = X @ W  # (n, U)
    if kind == "relu":
        v = y + b
        above = v >= 0 if include_edges[0] else v > 0
        below = v <= cap if include_edges[1] else v < cap
        active = (above & below).astype(F64)
    elif kind == "linear":
        active = np.ones_like(y)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    n_plus = active.sum(axis=0)  # (U,)
    safe_n = np.maximum(n_plus, 1.0)
    Ex_plus = X.T @ active / safe_n  # E+[x]      (D, U)
    Exy_plus = X.T @ (active * y) / safe_n  # E+[x y_j]  (D, U)
    Ey = y.mean(axis=0)  # E[y_j] over ALL samples
    num = Exy_plus - Ex_plus * Ey  # (D, U)
    den = np.sum(W * num, axis=0)  # w_j^T num_j
    ok = (n_plus > 0) & (den != 0)
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def patterns_conv2d(X, K, b=None, strides=(1, 1), padding="valid", dilation=(1, 1), kind="relu"):
    """Eq. 2 with every receptive-field patch (incl. zero padding) as one sample."""
    K = np.asarray(K, F64)
    cols = extract_patches(X, K.shape[:2], strides, padding, dilation)
    P = patterns_dense(cols.reshape(-1, cols.shape[-1]), K.reshape(-1, K.shape[3]), b, kind)
    return P.reshape(K.shape)


def compute_patterns(layers, X, kind="relu"):
    """Patterns for each Dense/Conv2D layer (in order) from its forward-pass inputs on X.
    With kind="relu", a layer uses "relu" if its activation is relu or the next spec is ReLU()."""
    if kind not in ("relu", "linear"):
        raise ValueError(f"unknown kind {kind!r}")
    _, caches = _forward(layers, X)
    out = []
    for li, layer in enumerate(layers):
        if not isinstance(layer, (Dense, Conv2D)):
            continue
        gated = layer.activation == "relu" or (li + 1 < len(layers) and isinstance(layers[li + 1], ReLU))
        k = "relu" if (kind == "relu" and gated) else "linear"
        a = caches[li][0]
        if isinstance(layer, Dense):
            out.append(patterns_dense(a, layer.W, layer.b, k))
        else:
            out.append(patterns_conv2d(a, layer.K, layer.b, layer.strides, layer.padding, layer.dilation, k))
    return out
