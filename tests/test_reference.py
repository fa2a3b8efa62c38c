"""Tests of the reference oracles in ``fastconv.reference``.

The oracles are the specification, so they are checked against things that do not
share their code: SPEC.md's worked example, central finite differences, the adjoint
identities of the linear maps, hand-worked pooling cases, and PyTorch (when it is
installed; those tests skip otherwise).
"""

import numpy as np
import pytest

from fastconv import reference as ref
from helpers import SPEC_DELTA, SPEC_DW, SPEC_O, numgrad


def _rng(seed=0):
    return np.random.default_rng(seed)




# ---------------------------------------------------------------------------
# 1. SPEC.md worked example
# ---------------------------------------------------------------------------



def test_spec_worked_filter_gradient():
    dw = ref.conv2d_grad_weight(SPEC_O.reshape(1, 1, 5, 5), SPEC_DELTA.reshape(1, 1, 4, 4),
                                (1, 1, 2, 2))
    assert dw.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(dw[0, 0], SPEC_DW, atol=5e-7)
    np.testing.assert_array_equal(np.round(dw[0, 0], 6), SPEC_DW)


def test_spec_worked_example_is_correlation_with_delta():
    # ∂E/∂w = correlate2d(o, δ, 'valid') for one channel, stride 1, no padding.
    expected = np.array([[np.sum(SPEC_O[u:u + 4, v:v + 4] * SPEC_DELTA) for v in range(2)]
                         for u in range(2)])
    dw = ref.conv2d_grad_weight(SPEC_O[None, None], SPEC_DELTA[None, None], (1, 1, 2, 2))
    np.testing.assert_allclose(dw[0, 0], expected, rtol=1e-14, atol=1e-16)


def test_conv2d_hand_example():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    y = ref.conv2d(x, w, bias=np.array([0.5]))
    # x[i, j] - x[i+1, j+1] = -5 everywhere
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), -4.5))
    y2 = ref.conv2d(x, w, stride=2, padding=1)
    # padded 6x6, windows at rows/cols 0, 2, 4
    xp = np.pad(x[0, 0], 1)
    exp = np.array([[xp[i, j] - xp[i + 1, j + 1] for j in (0, 2, 4)] for i in (0, 2, 4)])
    np.testing.assert_array_equal(y2[0, 0], exp)


def test_conv2d_dilation_and_groups_by_hand():
    rng = _rng(1)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 2, 3))
    y = ref.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(3, 2), groups=2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    Ho = (7 + 2 - 3 * 1 - 1) // 2 + 1
    Wo = (6 + 4 - 2 * 2 - 1) // 1 + 1
    assert y.shape == (2, 6, Ho, Wo)
    for n in range(2):
        for o in range(6):
            g = o // 3
            for p in range(Ho):
                for q in range(Wo):
                    s = 0.0
                    for c in range(2):
                        for u in range(2):
                            for v in range(3):
                                s += w[o, c, u, v] * xp[n, 2 * g + c, 2 * p + 3 * u, q + 2 * v]
                    assert abs(y[n, o, p, q] - s) < 1e-12


def test_same_padding_is_asymmetric_for_even_kernels():
    rng = _rng(2)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 2, 4))
    y = ref.conv2d(x, w, padding="same", dilation=(1, 1))
    assert y.shape == (1, 3, 5, 6)
    # total padding (1, 3): top 0 / bottom 1, left 1 / right 2
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)))
    np.testing.assert_allclose(y, ref.conv2d(xp, w), rtol=1e-13, atol=1e-13)
    # with dilation 3 on a width-4 kernel: total 9 -> left 4, right 5
    y = ref.conv2d(x, w, padding="same", dilation=(2, 3))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (4, 5)))
    np.testing.assert_allclose(y, ref.conv2d(xp, w, dilation=(2, 3)), rtol=1e-13, atol=1e-13)
    # 'valid' is padding 0
    np.testing.assert_array_equal(ref.conv2d(x, w, padding="valid"), ref.conv2d(x, w))


def test_conv_argument_errors():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ValueError):
        ref.conv2d(x, np.zeros((2, 2, 3, 3)), padding="same", stride=2)
    with pytest.raises(ValueError):
        ref.conv2d(x, np.zeros((3, 2, 3, 3)), groups=2)      # O not divisible
    with pytest.raises(ValueError):
        ref.conv2d(x, np.zeros((2, 3, 3, 3)), groups=2)      # wrong C/g
    with pytest.raises(ValueError):
        ref.conv2d(x, np.zeros((2, 4, 7, 3)))                # kernel too big
    with pytest.raises(ValueError):
        ref.conv2d(x, np.zeros((2, 4, 3, 3)), padding="full")


# ---------------------------------------------------------------------------
# 2. finite differences and adjoint identities
# ---------------------------------------------------------------------------

CONV_FD_CASES = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 4, 7, 7), (4, 2, 3, 3), 2, 1, 2, 2),
    ((1, 2, 6, 7), (4, 1, 3, 2), (2, 3), (1, 0), (2, 1), 2),
    ((1, 3, 5, 4), (2, 3, 2, 2), 1, "same", 1, 1),
]


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV_FD_CASES)
def test_conv_gradients_finite_differences(xs, ws, stride, padding, dilation, groups):
    rng = _rng(3)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = ref.conv2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape)

    def loss_x(a):
        return np.sum(ref.conv2d(a, w, b, **kw) * g)

    def loss_w(a):
        return np.sum(ref.conv2d(x, a, b, **kw) * g)

    def loss_b(a):
        return np.sum(ref.conv2d(x, w, a, **kw) * g)

    dx = ref.conv2d_grad_input(g, w, x.shape, **kw)
    dw = ref.conv2d_grad_weight(x, g, w.shape, **kw)
    db = ref.conv2d_grad_bias(g)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    np.testing.assert_allclose(dx, numgrad(loss_x, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numgrad(loss_w, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numgrad(loss_b, b), rtol=1e-6, atol=1e-7)


ADJOINT_CASES = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 2, 8, 8), (3, 2, 3, 3), 2, 0, 1, 1),          # H=8,k=3,s=2: last row unreached
    ((1, 4, 9, 8), (6, 2, 3, 2), (2, 3), (1, 2), (2, 1), 2),
    ((2, 6, 7, 9), (3, 2, 3, 3), 3, 1, 2, 3),          # stride remainder with dilation
    ((1, 6, 6, 7), (6, 2, 2, 4), 1, "same", (1, 2), 3),  # asymmetric 'same'
    ((1, 2, 7, 7), (2, 2, 4, 4), 1, "same", 1, 1),
    ((2, 2, 7, 6), (4, 1, 1, 1), 3, "valid", 1, 2),
    ((1, 2, 5, 5), (2, 2, 5, 5), 2, 2, 1, 1),          # padding as wide as the kernel
]


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", ADJOINT_CASES)
def test_conv_adjoint_identities(xs, ws, stride, padding, dilation, groups):
    rng = _rng(4)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = ref.conv2d(x, w, **kw)
    g = rng.standard_normal(y.shape)
    lhs = np.sum(y * g)
    dx = ref.conv2d_grad_input(g, w, x.shape, **kw)
    dw = ref.conv2d_grad_weight(x, g, w.shape, **kw)
    assert dx.shape == x.shape and dw.shape == w.shape
    scale = np.sum(np.abs(y * g))
    assert abs(lhs - np.sum(x * dx)) <= 1e-12 * scale
    assert abs(lhs - np.sum(w * dw)) <= 1e-12 * scale


def test_unreached_rows_get_zero_gradient():
    rng = _rng(5)
    w = rng.standard_normal((2, 1, 3, 3))
    g = rng.standard_normal((1, 2, 3, 3))            # (8 - 3) // 2 + 1 = 3
    dx = ref.conv2d_grad_input(g, w, (1, 1, 8, 8), stride=2)
    assert np.all(dx[..., 7, :] == 0) and np.all(dx[..., :, 7] == 0)
    assert np.any(dx[..., 6, :] != 0)


def test_conv_grad_input_stride1_is_full_convolution():
    # one channel, stride 1: dx = convolve2d(δ, w, 'full') = correlate(pad(δ), rot180(w))
    rng = _rng(6)
    w = rng.standard_normal((1, 1, 2, 3))
    g = rng.standard_normal((1, 1, 4, 3))
    dx = ref.conv2d_grad_input(g, w, (1, 1, 5, 5))
    full = np.zeros((5, 5))
    for p in range(4):
        for q in range(3):
            full[p:p + 2, q:q + 3] += g[0, 0, p, q] * w[0, 0]
    np.testing.assert_allclose(dx[0, 0], full, rtol=1e-13, atol=1e-14)


def test_conv_grad_bias():
    g = np.arange(24.0).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(ref.conv2d_grad_bias(g), g.sum(axis=(0, 2, 3)))


POOL_FD_CASES = [
    # (x shape, kernel, stride, padding, ceil_mode)
    ((2, 2, 6, 6), 3, 2, 1, False),
    ((2, 2, 6, 6), 3, 2, 1, True),
    ((1, 2, 5, 7), (2, 3), (2, 2), (1, 1), True),
    ((1, 2, 5, 5), 3, 1, 1, False),                   # heavy overlap
    ((1, 1, 7, 6), 2, None, 0, True),                 # ceil: half windows at the edge
]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("xs, k, s, p, ceil", POOL_FD_CASES)
def test_avg_pool_gradient_finite_differences(xs, k, s, p, ceil, count_include_pad):
    rng = _rng(7)
    x = rng.standard_normal(xs)
    kw = dict(stride=s, padding=p, ceil_mode=ceil, count_include_pad=count_include_pad)
    y = ref.avg_pool2d(x, k, **kw)
    g = rng.standard_normal(y.shape)
    dx = ref.avg_pool2d_grad(g, x.shape, k, **kw)
    num = numgrad(lambda a: np.sum(ref.avg_pool2d(a, k, **kw) * g), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)
    # linear map: adjoint identity too
    assert abs(np.sum(y * g) - np.sum(x * dx)) <= 1e-12 * np.sum(np.abs(y * g))


@pytest.mark.parametrize("xs, k, s, p, ceil", POOL_FD_CASES)
def test_max_pool_gradient_finite_differences(xs, k, s, p, ceil):
    rng = _rng(8)
    # distinct values, at least 1 apart, so a small step never changes an argmax
    x = rng.permutation(int(np.prod(xs))).reshape(xs).astype(np.float64) - 10.0
    y, idx = ref.max_pool2d(x, k, stride=s, padding=p, ceil_mode=ceil)
    g = rng.standard_normal(y.shape)
    dx = ref.max_pool2d_grad(g, idx, x.shape)
    num = numgrad(lambda a: np.sum(ref.max_pool2d(a, k, stride=s, padding=p,
                                                   ceil_mode=ceil)[0] * g), x, eps=1e-3)
    np.testing.assert_allclose(dx, num, rtol=1e-9, atol=1e-9)
    # indices point at the values
    N, C, H, W = xs
    flat = x.reshape(N, C, H * W)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(N, C, -1), axis=2),
                                  y.reshape(N, C, -1))


# ---------------------------------------------------------------------------
# pooling: hand-worked cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("H, k, s, p, ceil, expected", [
    (6, 3, 2, 1, False, 3),
    (6, 3, 2, 1, True, 4),     # (6+2-3)/2 = 2.5 -> 3 + 1
    (5, 3, 3, 1, True, 2),     # ceil gives 3, but window 2 would start at 6 >= 5+1
    (6, 2, 4, 1, True, 2),     # ceil gives 3, window 2 would start at 8 >= 6+1
    (7, 2, 2, 0, True, 4),
    (7, 2, 2, 0, False, 3),
    (2, 2, 2, 1, True, 2),
])
def test_pool_output_size(H, k, s, p, ceil, expected):
    x = np.zeros((1, 1, H, H))
    assert ref.avg_pool2d(x, k, s, p, ceil).shape == (1, 1, expected, expected)
    assert ref.max_pool2d(x, k, s, p, ceil)[0].shape == (1, 1, expected, expected)


def test_pool_argument_errors():
    x = np.zeros((1, 1, 6, 6))
    with pytest.raises(ValueError):
        ref.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError):
        ref.avg_pool2d(x, (2, 4), padding=(1, 3))
    with pytest.raises(ValueError):
        ref.avg_pool2d_grad(np.zeros((1, 1, 3, 3)), x.shape, 2, padding=2)
    with pytest.raises(ValueError):
        ref.max_pool2d(x, 7)


def test_pool_stride_defaults_to_kernel():
    x = _rng(9).standard_normal((1, 2, 6, 4))
    y1, i1 = ref.max_pool2d(x, (3, 2))
    y2, i2 = ref.max_pool2d(x, (3, 2), stride=(3, 2))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(ref.avg_pool2d(x, 2), ref.avg_pool2d(x, 2, 2))


def test_max_pool_ties_take_first_and_gradient_goes_to_first_only():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 3.0, 0.0, 3.0],
                    [2.0, 2.0, 5.0, 5.0],
                    [2.0, 2.0, 5.0, 5.0]]]])
    y, idx = ref.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[3.0, 3.0], [2.0, 5.0]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 2], [8, 10]])
    assert idx.dtype == np.int64
    dx = ref.max_pool2d_grad(np.ones((1, 1, 2, 2)), idx, x.shape)
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1.0
    np.testing.assert_array_equal(dx[0, 0], expected)   # not to every tied maximum


def test_max_pool_nan_rule():
    nan = np.nan
    x = np.array([[[[1.0, nan, 7.0, 2.0],
                    [nan, 0.0, 1.0, nan],
                    [-1.0, -2.0, 4.0, 4.0],
                    [-3.0, -4.0, 4.0, 9.0]]]])
    y, idx = ref.max_pool2d(x, 2)
    # window 0: NaN beats numbers, and a later NaN replaces an earlier one
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4
    # window 1: a NaN after the maximum still wins
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 7
    assert y[0, 0, 1, 0] == -1.0 and idx[0, 0, 1, 0] == 8
    assert y[0, 0, 1, 1] == 9.0 and idx[0, 0, 1, 1] == 15


def test_max_pool_padding_is_minus_infinity():
    x = np.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = -5.0
    y, idx = ref.max_pool2d(x, 3, stride=1, padding=1)
    # all -inf windows report -inf and their first in-bounds element
    assert y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == 0
    assert y[0, 0, 0, 2] == -np.inf and idx[0, 0, 0, 2] == 1
    assert y[0, 0, 1, 1] == -5.0 and idx[0, 0, 1, 1] == 8
    # negative values beat the padding
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, idx = ref.max_pool2d(x, 2, stride=2, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_avg_pool_divisors_by_hand():
    x = np.ones((1, 1, 3, 3))
    # k=2, s=2, p=1: every window has 1, 2 or 4 real elements, pool_size 4
    y = ref.avg_pool2d(x, 2, 2, 1, count_include_pad=True)
    np.testing.assert_allclose(y[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    y = ref.avg_pool2d(x, 2, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(y[0, 0], np.ones((2, 2)))
    # ceil_mode: the part of a window past H + p is not counted even with count_include_pad
    x = np.ones((1, 1, 5, 5))
    y = ref.avg_pool2d(x, 2, 2, 0, ceil_mode=True, count_include_pad=True)
    np.testing.assert_allclose(y[0, 0], np.ones((3, 3)))
    x = np.ones((1, 1, 4, 4))
    y = ref.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    # window rows [-1,2), [1,4), [3,5) (end clipped to H+p=5): pool sizes 3, 3, 2
    # holding 2, 3, 1 real rows
    rows = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(y[0, 0], np.outer(rows, rows))
    dx = ref.avg_pool2d_grad(np.ones((1, 1, 3, 3)), x.shape, 3, 2, 1, ceil_mode=True)
    rowg = np.array([1 / 3, 1 / 3 + 1 / 3, 1 / 3, 1 / 3 + 1 / 2])
    np.testing.assert_allclose(dx[0, 0], np.outer(rowg, rowg))


# ---------------------------------------------------------------------------
# 3. agreement with PyTorch
# ---------------------------------------------------------------------------

TORCH_CONV_CASES = [
    # (x shape, w shape, bias, stride, padding, dilation, groups)
    ((2, 3, 7, 7), (4, 3, 3, 3), True, 1, 0, 1, 1),
    ((2, 4, 7, 7), (4, 2, 3, 3), True, 2, 1, 2, 2),
    ((2, 2, 8, 8), (3, 2, 3, 3), False, 2, 0, 1, 1),
    ((1, 4, 9, 8), (6, 2, 3, 2), True, (2, 3), (1, 2), (2, 1), 2),
    ((2, 6, 7, 9), (3, 2, 3, 3), True, 3, 1, 2, 3),
    ((1, 6, 6, 7), (6, 2, 2, 4), True, 1, "same", (1, 2), 3),
    ((2, 2, 7, 7), (2, 2, 4, 4), False, 1, "same", 1, 1),
    ((1, 3, 5, 6), (2, 3, 3, 1), True, 1, "same", 2, 1),
    ((2, 2, 7, 6), (4, 1, 1, 1), True, 3, "valid", 1, 2),
    ((1, 4, 6, 6), (4, 1, 3, 3), True, 1, 1, 1, 4),    # depthwise
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs, ws, bias, stride, padding, dilation, groups", TORCH_CONV_CASES)
def test_conv_matches_torch(xs, ws, bias, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(10)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = F.conv2d(tx, tw, tb, **kw)
    y = ref.conv2d(x, w, b, **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ref.conv2d_grad_input(g, w, x.shape, **kw),
                               tx.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ref.conv2d_grad_weight(x, g, w.shape, **kw),
                               tw.grad.numpy(), rtol=0, atol=1e-10)
    if bias:
        np.testing.assert_allclose(ref.conv2d_grad_bias(g), tb.grad.numpy(),
                                   rtol=0, atol=1e-10)


POOL_TORCH_CASES = [
    # (x shape, kernel, stride, padding, ceil_mode)
    ((2, 3, 6, 6), 2, None, 0, False),
    ((2, 2, 7, 7), 3, 2, 1, False),
    ((2, 2, 7, 7), 3, 2, 1, True),
    ((2, 2, 6, 6), 3, 2, 1, True),
    ((1, 2, 5, 5), 3, 3, 1, True),       # ceil output shrunk by the start-inside rule
    ((1, 2, 6, 6), 2, 4, 1, True),
    ((1, 2, 7, 6), 2, None, 0, True),
    ((1, 2, 5, 5), 3, 1, 1, False),      # heavy overlap
    ((2, 1, 8, 7), (3, 2), (2, 1), (1, 1), True),
    ((1, 2, 9, 5), (4, 3), (3, 2), (2, 0), True),
]


def _pool_input(kind, shape, rng):
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "ties":
        return rng.integers(0, 3, size=shape).astype(np.float64)
    if kind == "nan":
        x = rng.integers(-2, 3, size=shape).astype(np.float64)
        x[rng.random(shape) < 0.2] = np.nan
        return x
    if kind == "inf":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.6] = -np.inf
        x[rng.random(shape) < 0.1] = np.inf
        return x
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "inf"])
@pytest.mark.parametrize("xs, k, s, p, ceil", POOL_TORCH_CASES)
def test_max_pool_matches_torch(xs, k, s, p, ceil, kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(11)
    x = _pool_input(kind, xs, rng)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(tx, k, stride=s, padding=p, ceil_mode=ceil, return_indices=True)
    y, idx = ref.max_pool2d(x, k, stride=s, padding=p, ceil_mode=ceil)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(y, ty.detach().numpy())          # NaN == NaN here
    np.testing.assert_array_equal(idx, tidx.numpy())
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ref.max_pool2d_grad(g, idx, x.shape), tx.grad.numpy(),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("xs, k, s, p, ceil", POOL_TORCH_CASES)
def test_avg_pool_matches_torch(xs, k, s, p, ceil, count_include_pad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(12)
    x = rng.standard_normal(xs)
    kw = dict(stride=s, padding=p, ceil_mode=ceil, count_include_pad=count_include_pad)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(tx, k, **kw)
    y = ref.avg_pool2d(x, k, **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ref.avg_pool2d_grad(g, x.shape, k, **kw), tx.grad.numpy(),
                               rtol=0, atol=1e-10)


def test_float32_matches_torch_float32():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(13)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    y = ref.conv2d(x, w, stride=2, padding=1, groups=2)
    ty = F.conv2d(torch.tensor(x), torch.tensor(w), stride=2, padding=1, groups=2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-5, atol=1e-5)
    ym, im = ref.max_pool2d(x, 3, 2, 1, True)
    tym, tim = F.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(ym, tym.numpy())
    np.testing.assert_array_equal(im, tim.numpy())


# ---------------------------------------------------------------------------
# 4. dtype rules
# ---------------------------------------------------------------------------

def _all_outputs(dtype, rng):
    x = (rng.standard_normal((2, 2, 6, 6)) * 4).astype(dtype)
    w = (rng.standard_normal((2, 1, 3, 3)) * 4).astype(dtype)
    b = (rng.standard_normal(2) * 4).astype(dtype)
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    g = (rng.standard_normal((2, 2, 3, 3)) * 4).astype(dtype)
    y_mp, idx = ref.max_pool2d(x, 3, 2, 1, True)
    gp = (rng.standard_normal(y_mp.shape) * 4).astype(dtype)
    return {
        "conv2d": ref.conv2d(x, w, b, **kw),
        "conv2d_grad_input": ref.conv2d_grad_input(g, w, x.shape, **kw),
        "conv2d_grad_weight": ref.conv2d_grad_weight(x, g, w.shape, **kw),
        "conv2d_grad_bias": ref.conv2d_grad_bias(g),
        "max_pool2d": y_mp,
        "max_pool2d_grad": ref.max_pool2d_grad(gp, idx, x.shape),
        "avg_pool2d": ref.avg_pool2d(x, 3, 2, 1, True, False),
        "avg_pool2d_grad": ref.avg_pool2d_grad(gp, x.shape, 3, 2, 1, True, False),
    }, idx


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.int64, np.float64),
    (np.int32, np.float64),
])
def test_dtype_rules(dtype, expected):
    outs, idx = _all_outputs(dtype, _rng(14))
    assert idx.dtype == np.int64
    for name, out in outs.items():
        assert out.dtype == expected, name


def test_float32_results_close_to_float64():
    o32, _ = _all_outputs(np.float32, _rng(15))
    o64, _ = _all_outputs(np.float64, _rng(15))
    for name in o32:
        # same random draws, rounded to float32 before the computation
        assert o32[name].shape == o64[name].shape, name
        np.testing.assert_allclose(o32[name], o64[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_int_input_equals_float_input():
    rng = _rng(16)
    x = rng.integers(-5, 5, size=(1, 2, 5, 5))
    w = rng.integers(-3, 3, size=(3, 2, 2, 2))
    np.testing.assert_array_equal(ref.conv2d(x, w), ref.conv2d(x.astype(float), w.astype(float)))
    y, i = ref.max_pool2d(x, 2, 1)
    yf, i_f = ref.max_pool2d(x.astype(float), 2, 1)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, yf)
    np.testing.assert_array_equal(i, i_f)


def test_mixed_precision_promotes():
    rng = _rng(17)
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 1, 2, 2))
    assert ref.conv2d(x, w).dtype == np.float64
    assert ref.conv2d(x, w.astype(np.float32)).dtype == np.float32
