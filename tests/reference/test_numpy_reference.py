"""Self-tests of the numpy reference implementation (finite differences, hand formulas)."""

import numpy as np
import pytest

import numpy_reference as nr


def _dense(rng, d_in, d_out, act="linear"):
    return nr.Dense(rng.normal(size=(d_in, d_out)) / np.sqrt(d_in), rng.normal(size=d_out) * 0.3, act)


def _conv(rng, kh, kw, cin, cout, **opts):
    K = rng.normal(size=(kh, kw, cin, cout)) / np.sqrt(kh * kw * cin)
    return nr.Conv2D(K, rng.normal(size=cout) * 0.3, **opts)


def _nets(rng):
    """(name, layers, input shape) for the finite-difference checks."""
    return [
        (
            "conv_same_s2_asym_pad+maxpool+dil2_valid",
            [
                _conv(rng, 3, 3, 2, 3, strides=(2, 2), padding="same", activation="relu"),  # 10->5, pad (0,1)
                nr.MaxPool2D((2, 2), strides=(1, 1)),  # 5->4
                _conv(rng, 2, 2, 3, 4, padding="valid", dilation=(2, 2)),  # 4->2
                nr.ReLU(),
                nr.Flatten(),
                _dense(rng, 16, 5, "relu"),
                _dense(rng, 5, 3),
                nr.Softmax(),
            ],
            (2, 10, 10, 2),
        ),
        (
            "conv_valid_s2+avgpool+maxpool_same",
            [
                _conv(rng, 3, 3, 2, 3, strides=(2, 2), padding="valid"),  # 11->5
                nr.AvgPool2D((2, 2), strides=(1, 1)),  # 5->4
                _conv(rng, 3, 3, 3, 3, padding="same", dilation=(2, 2), activation="relu"),  # 4->4
                nr.MaxPool2D((2, 2), strides=(2, 2), padding="same"),  # 4->2
                nr.Flatten(),
                _dense(rng, 12, 4),
                nr.Softmax(),
            ],
            (2, 11, 11, 2),
        ),
        (
            "maxpool_same_neg_values+avgpool_same",
            [
                _conv(rng, 2, 2, 1, 2, padding="same"),  # linear -> negatives
                nr.MaxPool2D((2, 2), strides=(2, 2), padding="same"),  # 7->4, pad (0,1)
                nr.AvgPool2D((3, 3), strides=(2, 2), padding="same"),  # 4->2
                nr.Flatten(),
                _dense(rng, 8, 3),
            ],
            (2, 7, 7, 1),
        ),
        ("dense_only", [_dense(rng, 6, 5, "relu"), nr.ReLU(), _dense(rng, 5, 4), nr.ReLU(), _dense(rng, 4, 3)], (3, 6)),
    ]


def _finite_diff(layers, x, t, eps=1e-6):
    def f(z):
        out = nr.forward(layers, z).reshape(len(z), -1)
        return out[np.arange(len(z)), t].sum()

    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("idx", range(4))
def test_gradient_matches_finite_differences(idx):
    rng = np.random.default_rng(idx)
    name, layers, shape = _nets(rng)[idx]
    x = rng.normal(size=shape)
    out = nr.forward(layers, x)
    t = rng.integers(0, out.shape[-1], size=shape[0])
    g = nr.gradient(layers, x, t)
    fd = _finite_diff(layers, x, t)
    assert np.abs(g).max() > 1e-3, name
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8, err_msg=name)


def _conv_loops(x, K, b, strides, padding, dilation):
    """Explicit loop cross-correlation with TF padding (written independently)."""
    n, h, w, c = x.shape
    kh, kw, _, co = K.shape
    (sh, sw), (dh, dw) = strides, dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = int(np.ceil(h / sh)), int(np.ceil(w / sw))
        ph, pw = max((oh - 1) * sh + ekh - h, 0), max((ow - 1) * sw + ekw - w, 0)
        xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = int(np.ceil((h - ekh + 1) / sh)), int(np.ceil((w - ekw + 1) / sw))
        xp = x
    out = np.zeros((n, oh, ow, co))
    patches = np.zeros((n, oh, ow, kh * kw * c))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * sh : i * sh + ekh : dh, j * sw : j * sw + ekw : dw, :]  # (n, kh, kw, c)
            patches[:, i, j] = patch.reshape(n, -1)
            out[:, i, j] = np.einsum("nabc,abco->no", patch, K) + b
    return out, patches


@pytest.mark.parametrize(
    "strides,padding,dilation,hw",
    [
        ((1, 1), "valid", (1, 1), (6, 5)),
        ((2, 2), "same", (1, 1), (8, 7)),
        ((2, 1), "valid", (1, 2), (9, 8)),
        ((1, 2), "same", (2, 2), (6, 7)),
    ],
)
def test_conv_forward_and_patches_match_loops(strides, padding, dilation, hw):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, *hw, 3))
    layer = _conv(rng, 3, 2, 3, 4, strides=strides, padding=padding, dilation=dilation)
    ref, ref_patches = _conv_loops(x, layer.K, layer.b, strides, padding, dilation)
    np.testing.assert_allclose(nr.forward([layer], x), ref, atol=1e-12)
    cols = nr.extract_patches(x, (3, 2), strides, padding, dilation)
    np.testing.assert_allclose(cols, ref_patches, atol=0)
    np.testing.assert_allclose(cols @ layer.K.reshape(-1, 4) + layer.b, ref, atol=1e-12)


def test_same_padding_extra_goes_after_by_hand():
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 4, 1)
    conv = nr.Conv2D(np.array([1.0, 10]).reshape(1, 2, 1, 1), np.zeros(1), padding="same")
    np.testing.assert_allclose(nr.forward([conv], x).ravel(), [21, 32, 43, 4])
    # max pool "same": padding never wins, even against negative values
    pool = nr.MaxPool2D((1, 2), strides=(1, 2), padding="same")
    np.testing.assert_allclose(nr.forward([pool], -x[:, :, :3]).ravel(), [-1, -3])


def test_pattern_attribution_with_unit_patterns_is_value_times_gradient():
    rng = np.random.default_rng(2)
    _, layers, shape = _nets(rng)[0]
    x = rng.normal(size=shape)
    t = np.array([0, 2])
    ones = [
        np.ones_like(l.W if isinstance(l, nr.Dense) else l.K) for l in layers if isinstance(l, (nr.Dense, nr.Conv2D))
    ]
    weights = [l.W if isinstance(l, nr.Dense) else l.K for l in layers if isinstance(l, (nr.Dense, nr.Conv2D))]
    val = nr.forward(layers, x)[np.arange(2), t].reshape(2, 1, 1, 1)
    expected = nr.gradient(layers, x, t) * val
    np.testing.assert_allclose(nr.pattern_attribution(layers, x, t, ones), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(nr.pattern_net(layers, x, t, weights), expected, rtol=1e-12, atol=1e-15)


def test_pattern_methods_and_guided_by_hand_on_two_layer_relu_net():
    rng = np.random.default_rng(3)
    l1, l2 = _dense(rng, 5, 4, "relu"), _dense(rng, 4, 3)
    P1, P2 = rng.normal(size=(5, 4)), rng.normal(size=(4, 3))
    x, t = rng.normal(size=(6, 5)), rng.integers(0, 3, size=6)
    z1 = x @ l1.W + l1.b
    y = (np.maximum(z1, 0) @ l2.W + l2.b)[np.arange(6), t]
    g_pa = (y[:, None] * (l2.W * P2)[:, t].T) * (z1 > 0)
    np.testing.assert_allclose(nr.pattern_attribution([l1, l2], x, t, [P1, P2]), g_pa @ (l1.W * P1).T)
    g_pn = (y[:, None] * P2[:, t].T) * (z1 > 0)
    np.testing.assert_allclose(nr.pattern_net([l1, l2], x, t, [P1, P2]), g_pn @ P1.T)
    g = l2.W[:, t].T
    np.testing.assert_allclose(nr.guided_backprop([l1, l2], x, t), (g * (z1 > 0) * (g > 0)) @ l1.W.T)
    np.testing.assert_allclose(nr.input_times_gradient([l1, l2], x, t), x * ((g * (z1 > 0)) @ l1.W.T))
    assert not np.allclose(nr.guided_backprop([l1, l2], x, t), nr.gradient([l1, l2], x, t))


def test_pgig_on_linear_dense_is_pattern_scaled_ig():
    rng = np.random.default_rng(4)
    layer = _dense(rng, 6, 3)
    P = rng.normal(size=(6, 3))
    x, x0, t = rng.normal(size=(4, 6)), rng.normal(size=6), np.array([0, 1, 2, 1])
    ig = nr.integrated_gradients([layer], x, t, x0, steps=7)
    np.testing.assert_allclose(ig, (x - x0) * layer.W[:, t].T)  # exact for a linear model
    np.testing.assert_allclose(nr.pgig([layer], x, t, [P], x0, steps=7), P[:, t].T * ig)


def test_ig_and_pgig_use_right_riemann_points_and_unit_seed():
    rng = np.random.default_rng(9)
    layers = [_dense(rng, 5, 6, "relu"), _dense(rng, 6, 3), nr.Softmax()]
    P = [rng.normal(size=(5, 6)), rng.normal(size=(6, 3))]
    x, x0, t = rng.normal(size=(4, 5)), rng.normal(size=5), np.array([0, 1, 2, 0])
    mid = x0 + 0.5 * (x - x0)
    expected = (x - x0) * (nr.gradient(layers, mid, t) + nr.gradient(layers, x, t)) / 2  # k = 1, 2 of m = 2
    np.testing.assert_allclose(nr.integrated_gradients(layers, x, t, x0, steps=2), expected, rtol=1e-12)
    val = nr.forward(layers, x)[np.arange(4), t][:, None]
    np.testing.assert_allclose(
        nr.pgig(layers, x, t, P, x0, steps=1), (x - x0) * nr.pattern_attribution(layers, x, t, P) / val, rtol=1e-10
    )


def test_integrated_gradients_completeness_on_relu_net():
    rng = np.random.default_rng(5)
    layers = [_dense(rng, 8, 16, "relu"), _dense(rng, 16, 16), nr.ReLU(), _dense(rng, 16, 2)]
    x, x0, t = rng.normal(size=(3, 8)) * 2, np.zeros(8), np.array([0, 1, 1])
    delta = (nr.forward(layers, x) - nr.forward(layers, np.zeros_like(x)))[np.arange(3), t]
    err = {m: np.abs(nr.integrated_gradients(layers, x, t, x0, m).sum(1) - delta).max() for m in (4, 2000)}
    assert np.abs(delta).min() > 0.1
    assert err[2000] < 2e-3 * np.abs(delta).max()
    assert err[2000] < err[4] / 20


def _by_hand_pattern(X, w, b, relu):
    """Eq. 2 for one unit written out with boolean indexing."""
    y = X @ w
    on = (y + b > 0) if relu else np.ones(len(X), bool)
    if not on.any():
        return np.zeros(X.shape[1])
    num = (X[on] * y[on, None]).mean(0) - X[on].mean(0) * y.mean()
    return num / (w @ num)


def test_patterns_dense_signal_recovery_by_hand_and_dead_unit():
    rng = np.random.default_rng(6)
    a, d = np.array([1.0, 0.0]), np.array([1.0, 1.0])  # signal / distractor directions
    s, eps = rng.normal(size=500), rng.normal(size=500)
    s, eps = np.r_[s, s], np.r_[eps, -eps]  # symmetric noise: uncorrelated with s on any s-set
    X = s[:, None] * a + eps[:, None] * d
    W = np.array([[1.0, 2.0, 1.0, 0.0], [-1.0, 0.5, -1.0, 0.0]])  # unit 0 cancels d; unit 2 dead; unit 3 zero
    b = np.array([0.2, -0.1, -100.0, 0.0])
    for kind in ("relu", "linear"):
        P = nr.patterns_dense(X, W, b, kind)
        assert P.shape == W.shape and np.all(np.isfinite(P))
        np.testing.assert_allclose(P[:, 0], a, atol=1e-10)  # the true signal direction
        for j in range(2):
            np.testing.assert_allclose(
                P[:, j], _by_hand_pattern(X, W[:, j], b[j], kind == "relu"), rtol=1e-10, atol=1e-12
            )
        np.testing.assert_array_equal(P[:, 3], 0.0)  # zero denominator -> 0
    np.testing.assert_array_equal(nr.patterns_dense(X, W, b, "relu")[:, 2], 0.0)  # dead unit -> 0
    assert np.all(nr.patterns_dense(X, W, b, "linear")[:, 2] != 0)  # not dead when linear
    # normalisation w_j^T p_j = 1 for every live unit
    np.testing.assert_allclose(np.sum(W * nr.patterns_dense(X, W, b, "relu"), 0)[:2], 1.0)


@pytest.mark.parametrize("padding,strides,dilation", [("same", (2, 2), (1, 1)), ("valid", (1, 1), (2, 2))])
def test_patterns_conv2d_equals_dense_on_patches(padding, strides, dilation):
    rng = np.random.default_rng(7)
    layer = _conv(rng, 3, 3, 2, 3, strides=strides, padding=padding, dilation=dilation)
    X = rng.normal(size=(3, 9, 8, 2))
    _, patches = _conv_loops(X, layer.K, layer.b, strides, padding, dilation)
    for kind in ("relu", "linear"):
        P = nr.patterns_conv2d(X, layer.K, layer.b, strides, padding, dilation, kind)
        ref = nr.patterns_dense(patches.reshape(-1, 18), layer.K.reshape(18, 3), layer.b, kind)
        assert P.shape == layer.K.shape
        np.testing.assert_allclose(P, ref.reshape(layer.K.shape), rtol=1e-10)
        np.testing.assert_allclose(
            P[:, :, :, 1],
            _by_hand_pattern(patches.reshape(-1, 18), layer.K[..., 1].ravel(), layer.b[1], kind == "relu").reshape(
                3, 3, 2
            ),
        )


def test_compute_patterns_kind_selection():
    rng = np.random.default_rng(8)
    c1 = _conv(rng, 3, 3, 1, 2, padding="same")
    layers = [c1, nr.ReLU(), nr.Flatten(), _dense(rng, 32, 4, "relu"), _dense(rng, 4, 3), nr.Softmax()]
    X = rng.normal(size=(20, 4, 4, 1))
    h = nr.forward(layers[:3], X)
    h2 = nr.forward(layers[:4], X)
    for kind, kinds in (("relu", ("relu", "relu", "linear")), ("linear", ("linear",) * 3)):
        P = nr.compute_patterns(layers, X, kind)
        assert len(P) == 3
        np.testing.assert_allclose(P[0], nr.patterns_conv2d(X, c1.K, c1.b, padding="same", kind=kinds[0]))
        np.testing.assert_allclose(P[1], nr.patterns_dense(h, layers[3].W, layers[3].b, kinds[1]))
        np.testing.assert_allclose(P[2], nr.patterns_dense(h2, layers[4].W, layers[4].b, kinds[2]))
    assert not np.allclose(nr.compute_patterns(layers, X, "relu")[0], nr.compute_patterns(layers, X, "linear")[0])


def test_integration_rules_of_the_reference_path():
    rng = np.random.default_rng(10)
    layers = [_dense(rng, 5, 6, "relu"), _dense(rng, 6, 3)]
    x, x0, t = rng.normal(size=(3, 5)), rng.normal(size=5), np.array([0, 2, 1])
    right = nr.integrated_gradients(layers, x, t, x0, steps=5)
    np.testing.assert_allclose(nr.integrated_gradients(layers, x, t, x0, 5, method="riemann_right"), right, rtol=1e-13)
    # the trapezoid rule is the mean of the left and right sums with one more interval
    trapezoid = nr.integrated_gradients(layers, x, t, x0, 6, method="riemann_trapezoid")
    left = nr.integrated_gradients(layers, x, t, x0, 5, method="riemann_left")
    np.testing.assert_allclose(trapezoid, (left + right) / 2, rtol=1e-12, atol=1e-14)
    for method in ("riemann_left", "riemann_middle", "gausslegendre"):
        assert not np.allclose(nr.integrated_gradients(layers, x, t, x0, 5, method=method), right)


@pytest.mark.parametrize("idx", [0, 1])
def test_exact_relu_path_integral_is_complete_and_the_limit_of_the_sums(idx):
    rng = np.random.default_rng(11)
    if idx == 0:
        layers = [_dense(rng, 5, 8, "relu"), _dense(rng, 8, 8), nr.ReLU(), _dense(rng, 8, 3)]
        shape = (3, 5)
    else:
        layers = [_conv(rng, 3, 3, 2, 3, padding="same", activation="relu"), nr.Flatten(), _dense(rng, 48, 3, "relu")]
        layers.append(_dense(rng, 3, 2))
        shape = (2, 4, 4, 2)
    x, x0 = rng.normal(0, 2, size=shape), rng.normal(0, 0.5, size=shape[1:])
    t = np.arange(shape[0]) % 2
    exact = nr.integrated_gradients_exact(layers, x, t, x0)
    delta = nr.forward(layers, x)[np.arange(shape[0]), t] - nr.forward(layers, np.broadcast_to(x0, x.shape))[0, t]
    np.testing.assert_allclose(exact.reshape(shape[0], -1).sum(1), delta, rtol=1e-10, atol=1e-12)
    assert min(len(nr.relu_path_breakpoints(layers, x[i], x0)) for i in range(shape[0])) > 4  # kinks inside
    fine = nr.integrated_gradients(layers, x, t, x0, 2000, method="riemann_middle")
    coarse = nr.integrated_gradients(layers, x, t, x0, 8, method="riemann_middle")
    scale = np.abs(exact).max()
    assert np.abs(fine - exact).max() < 2e-3 * scale < np.abs(coarse - exact).max()
