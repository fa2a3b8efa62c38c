"""``layout="NHWC"`` (channels last) on the public API and the layers (issue 7).

Every one of the eight functions, given NHWC data, must

* return what the NCHW function returns on the transposed data, transposed back
  (to 1e-12 of the largest magnitude in float64, 1e-5 in float32: the native
  channels-last kernels may sum in another order), and
* agree with the NHWC branch of its oracle (``fastconv.reference``) within the
  suite's tolerances (``helpers.assert_close``),

on hypothesis-drawn geometries (dense, grouped and depthwise convolutions with
channel multiplier 1 and 2, stride, dilation, padding including "same", pooling
with ceil_mode and count_include_pad), in both dtypes and on 1 and 2 threads.
The input gradient is checked in both of its evaluation orders (gather and
scatter, forced by the ``grad_input_method`` fixture).
Named cases cover the kernel choice (NHWC calls only the ``*_nhwc`` kernels, the
direct depthwise ones only for multiplier 1 and finite values), 1x1 convolutions,
wide channel counts and small tiles, bitwise thread-count independence,
non-finite weights on depthwise layers, max-pool NaNs and ties, bad indices, the
``layout`` argument and the messages for shapes in the wrong layout, memory
layouts, dtypes, empty sizes, and the layers (a channels-last network against its
NCHW twin, gradcheck, summaries and state dicts).
"""

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional
from fastconv import reference as ref
from fastconv.layers import (AvgPool2D, Conv2D, Flatten, Linear, MaxPool2D, ReLU,
                             Sequential)
from helpers import DTYPES, assert_close

EXAMPLES = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

FUNCTIONS = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias",
             "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad"]
GRAD_TOL = 1e-5     # fastconv.gradcheck in float64, as tests/test_layers.py


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def nchw(a):
    """(N, H, W, C) -> (N, C, H, W)."""
    return np.asarray(a).transpose(0, 3, 1, 2)


def nhwc(a):
    """(N, C, H, W) -> (N, H, W, C)."""
    return np.asarray(a).transpose(0, 2, 3, 1)


def oihw(w):
    """(kh, kw, C_in/g, C_out) -> (C_out, C_in/g, kh, kw)."""
    return np.asarray(w).transpose(3, 2, 0, 1)


def hwio(w):
    """(C_out, C_in/g, kh, kw) -> (kh, kw, C_in/g, C_out)."""
    return np.asarray(w).transpose(2, 3, 1, 0)


def shape_nchw(shape):
    n, h, w, c = shape
    return (n, c, h, w)


def shape_oihw(shape):
    kh, kw, cg, o = shape
    return (o, cg, kh, kw)


def assert_same_as_nchw(actual, expected):
    """NHWC result against the NCHW result transposed: same shape, dtype, NaN
    and infinity positions; values to 1e-12 (float64) / 1e-5 (float32) of the
    largest magnitude."""
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.flags.c_contiguous
    tol = 1e-12 if actual.dtype == np.float64 else 1e-5
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN positions differ"
    finite = np.isfinite(expected)
    assert np.array_equal(actual[~finite & ~np.isnan(expected)],
                          expected[~finite & ~np.isnan(expected)]), "infinities differ"
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    err = float(np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]),
                       initial=0.0))
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol:.0e} * {scale:.3e}"


class KernelSpy:
    """Stands in for ``functional._kernels`` and records which kernels are
    used (not the layout-free helpers: ``all_finite``, the weights' check)."""

    HELPERS = {"all_finite"}

    def __init__(self, real):
        self._real = real
        self.used = []

    def __getattr__(self, name):
        if name not in self.HELPERS:
            self.used.append(name)
        return getattr(self._real, name)


@pytest.fixture
def spy(monkeypatch):
    s = KernelSpy(functional._kernels)
    monkeypatch.setattr(functional, "_kernels", s)
    return s


# ---------------------------------------------------------------------------
# 1. hypothesis: each function against NCHW-through-transposes and the oracle
# ---------------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "multiplier2", "1x1"]))
    if kind in ("dense", "1x1"):
        groups, cg, og = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "grouped":
        groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    elif kind == "depthwise":           # channel multiplier 1: the direct NHWC loops
        # channel counts below, at and past the AVX2 pixel's vectors
        groups, cg, og = draw(st.sampled_from([2, 3, 4, 5, 8, 9, 17, 33])), 1, 1
    else:                               # depthwise with channel multiplier 2: the GEMM
        groups, cg, og = draw(st.integers(2, 3)), 1, 2
    kh, kw = (1, 1) if kind == "1x1" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    choices = [0, 1, (1, 0), (0, 2), "valid"] + (["same"] if stride == (1, 1) else [])
    padding = draw(st.sampled_from(choices))
    # the smallest input the (dilated) kernel fits in once padded
    if padding == "same":
        need = (1, 1)
    else:
        p = (0, 0) if padding == "valid" else ((padding, padding)
                                               if isinstance(padding, int) else padding)
        need = (max(1, dilation[0] * (kh - 1) + 1 - 2 * p[0]),
                max(1, dilation[1] * (kw - 1) + 1 - 2 * p[1]))
    h = need[0] + draw(st.integers(0, 4))
    w = need[1] + draw(st.integers(0, 4))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(x_shape=(n, h, w, groups * cg), w_shape=(kh, kw, cg, groups * og), bias=bias,
                seed=seed, kw=dict(stride=stride, padding=padding, dilation=dilation,
                                   groups=groups))


@EXAMPLES
@given(case=conv_cases())
def test_conv_functions_nhwc(case, n_threads, grad_input_method, grad_weight_blocks):
    rng = np.random.default_rng(case["seed"])
    x64 = rng.standard_normal(case["x_shape"])
    w64 = rng.standard_normal(case["w_shape"])
    b64 = rng.standard_normal(case["w_shape"][3]) if case["bias"] else None
    kw = case["kw"]
    for dtype in DTYPES:
        x, w = x64.astype(dtype), w64.astype(dtype)
        b = None if b64 is None else b64.astype(dtype)
        y = fastconv.conv2d(x, w, b, layout="NHWC", **kw)
        assert_same_as_nchw(y, nhwc(fastconv.conv2d(nchw(x), oihw(w), b, **kw)))
        assert_close(y, ref.conv2d(x, w, b, layout="NHWC", **kw), dtype)

        g = rng.standard_normal(y.shape).astype(dtype)
        dx = fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
        assert_same_as_nchw(dx, nhwc(fastconv.conv2d_grad_input(
            nchw(g), oihw(w), shape_nchw(x.shape), **kw)))
        assert_close(dx, ref.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw), dtype)

        dw = fastconv.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw)
        assert_same_as_nchw(dw, hwio(fastconv.conv2d_grad_weight(
            nchw(x), nchw(g), shape_oihw(w.shape), **kw)))
        assert_close(dw, ref.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw), dtype)

        db = fastconv.conv2d_grad_bias(g, layout="NHWC")
        assert_same_as_nchw(db, fastconv.conv2d_grad_bias(nchw(g)))
        assert_close(db, ref.conv2d_grad_bias(g, layout="NHWC"), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("limit", [4096, 2048, 1500], ids=["tap", "2-per-tap", "3-per-tap"])
@pytest.mark.parametrize("hyper", [dict(padding=1), dict(stride=2, dilation=(2, 1), groups=2)],
                         ids=["pad1", "stride2-dil-groups"])
def test_nhwc_filter_gradient_tap_blocks(hyper, limit, dtype, n_threads):
    """A kernel row's gradient over the block limit cuts the NHWC filter
    gradient into blocks of one tap's channels: the whole tap (64
    channels), two of 32, or three of 22, 22 and 20 (the packing then
    transposed, under 32 channels): the oracle's result."""
    from fastconv._simd import kernels
    rng = np.random.default_rng(23)
    groups = hyper.get("groups", 1)
    x = rng.standard_normal((3, 9, 8, 64 * groups))
    w_shape = (3, 3, 64, 8 * groups)                   # a kernel row: 3 * 64 * 8 elements
    g = rng.standard_normal(ref.conv2d(x, np.zeros(w_shape), layout="NHWC", **hyper).shape)
    saved = kernels._tuning()["gw_row_block_bytes"]
    try:
        kernels._tuning(gw_row_block_bytes=limit * np.dtype(dtype).itemsize // 8)
        dw = fastconv.conv2d_grad_weight(x.astype(dtype), g.astype(dtype), w_shape,
                                         layout="NHWC", **hyper)
    finally:
        kernels._tuning(gw_row_block_bytes=saved)
    assert_close(dw, ref.conv2d_grad_weight(x, g, w_shape, layout="NHWC", **hyper), dtype)


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = max(1, k[0] - 2 * pad[0]) + draw(st.integers(0, 4))
    w = max(1, k[1] - 2 * pad[1]) + draw(st.integers(0, 4))
    # channel counts below, at and past the pixel kernels' AVX2 / AVX-512 vectors
    shape = (draw(st.integers(1, 2)), h, w,
             draw(st.sampled_from([1, 2, 3, 4, 5, 8, 9, 16, 17, 33])))
    return dict(shape=shape, kernel_size=k, stride=stride, padding=pad,
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                ties=draw(st.booleans()), specials=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@EXAMPLES
@given(case=pool_cases())
def test_pool_functions_nhwc(case, n_threads):
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    if case["ties"]:        # few distinct values: tied maxima in most windows
        x64 = rng.integers(-2, 3, size=shape).astype(np.float64)
    else:
        x64 = rng.standard_normal(shape)
    if case["specials"]:    # a NaN and a -inf somewhere
        flat = x64.reshape(-1)
        flat[rng.integers(flat.size)] = -np.inf
        flat[rng.integers(flat.size)] = np.nan
    geo = (case["kernel_size"], case["stride"], case["padding"], case["ceil_mode"])
    include = case["count_include_pad"]
    for dtype in DTYPES:
        x = x64.astype(dtype)
        y, idx = fastconv.max_pool2d(x, *geo, layout="NHWC")
        y_c, idx_c = fastconv.max_pool2d(nchw(x), *geo)
        y_ref, idx_ref = ref.max_pool2d(x, *geo, layout="NHWC")
        # a max is exact: values and indices equal, NaNs included
        assert y.dtype == dtype and idx.dtype == np.int64
        assert y.flags.c_contiguous and idx.flags.c_contiguous
        np.testing.assert_array_equal(y, nhwc(y_c))
        np.testing.assert_array_equal(idx, nhwc(idx_c))
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)

        g = rng.standard_normal(y.shape).astype(dtype)
        dx = fastconv.max_pool2d_grad(g, idx, x.shape, layout="NHWC")
        assert_same_as_nchw(dx, nhwc(fastconv.max_pool2d_grad(nchw(g), nchw(idx),
                                                              shape_nchw(x.shape))))
        assert_close(dx, ref.max_pool2d_grad(g, idx, x.shape, layout="NHWC"), dtype)

        a = fastconv.avg_pool2d(x, *geo, include, layout="NHWC")
        assert_same_as_nchw(a, nhwc(fastconv.avg_pool2d(nchw(x), *geo, include)))
        assert_close(a, ref.avg_pool2d(x, *geo, include, layout="NHWC"), dtype)

        ga = rng.standard_normal(a.shape).astype(dtype)
        da = fastconv.avg_pool2d_grad(ga, x.shape, *geo, include, layout="NHWC")
        assert_same_as_nchw(da, nhwc(fastconv.avg_pool2d_grad(nchw(ga), shape_nchw(x.shape),
                                                              *geo, include)))
        assert_close(da, ref.avg_pool2d_grad(ga, x.shape, *geo, include, layout="NHWC"),
                     dtype)


# ---------------------------------------------------------------------------
# 2. kernel choice: native channels-last kernels only
# ---------------------------------------------------------------------------

def _conv_all(x, w, kw, g=None):
    y = fastconv.conv2d(x, w, np.ones(w.shape[3]), layout="NHWC", **kw)
    g = np.ones(y.shape) if g is None else g
    fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    fastconv.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw)
    fastconv.conv2d_grad_bias(g, layout="NHWC")
    return y


@pytest.mark.parametrize("case, w_shape, kw, direct", [
    ("dense", (3, 3, 4, 6), dict(padding=1), False),
    ("1x1", (1, 1, 4, 6), {}, False),
    ("grouped", (3, 3, 2, 6), dict(groups=2, stride=2), False),
    ("depthwise", (3, 3, 1, 4), dict(groups=4, padding=1), True),
    ("depthwise strided dilated", (3, 2, 1, 4), dict(groups=4, stride=2, dilation=2), True),
    ("multiplier 2", (3, 3, 1, 8), dict(groups=4, padding=1), False),
])
def test_nhwc_calls_only_nhwc_kernels(spy, monkeypatch, case, w_shape, kw, direct):
    monkeypatch.setattr(functional, "_FORCE_GRAD_INPUT_METHOD", "gather")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 4))
    _conv_all(x, rng.standard_normal(w_shape), kw)
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, True, layout="NHWC")
    fastconv.max_pool2d_grad(y, idx, x.shape, layout="NHWC")
    a = fastconv.avg_pool2d(x, 2, layout="NHWC")
    fastconv.avg_pool2d_grad(a, x.shape, 2, layout="NHWC")
    assert spy.used and all(name.endswith("_nhwc") for name in spy.used), spy.used
    conv = [name for name in spy.used if "pool" not in name]
    expected = (["depthwise_forward_nhwc", "depthwise_grad_input_nhwc",
                 "depthwise_grad_weight_nhwc"] if direct else
                ["conv2d_forward_nhwc", "conv2d_grad_input_nhwc", "conv2d_grad_weight_nhwc"])
    assert conv == expected + ["conv2d_grad_bias_nhwc"]
    assert spy.used[len(conv):] == ["max_pool2d_forward_nhwc", "max_pool2d_backward_nhwc",
                                    "avg_pool2d_forward_nhwc", "avg_pool2d_backward_nhwc"]


def test_scatter_order_input_gradient_kernel(spy, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 4))
    w = rng.standard_normal((3, 3, 2, 6))
    kw = dict(stride=2, padding=1, groups=2)
    g = rng.standard_normal((2, 4, 3, 6))
    monkeypatch.setattr(functional, "_FORCE_GRAD_INPUT_METHOD", "scatter")
    dx = fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    assert spy.used == ["conv2d_grad_input_scatter_nhwc"]
    assert_close(dx, ref.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw))
    # the cost model alone (shape-only) picks one of the two NHWC kernels
    monkeypatch.setattr(functional, "_FORCE_GRAD_INPUT_METHOD", None)
    fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    assert spy.used[-1] in ("conv2d_grad_input_nhwc", "conv2d_grad_input_scatter_nhwc")
    # ... and the depthwise and non-finite rules come first
    monkeypatch.setattr(functional, "_FORCE_GRAD_INPUT_METHOD", "scatter")
    w_dw = rng.standard_normal((3, 3, 1, 4))
    g_dw = rng.standard_normal((2, 7, 6, 4))
    fastconv.conv2d_grad_input(g_dw, w_dw, x.shape, padding=1, groups=4, layout="NHWC")
    w[1, 1, 0, 0] = np.inf
    fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    assert spy.used[-2:] == ["depthwise_grad_input_nhwc", "conv2d_grad_input_nhwc"]


def test_non_finite_weights_take_the_gemm_kernels_on_depthwise_layers(spy):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 5, 3))
    w = rng.standard_normal((3, 3, 1, 3))
    w[0, 0, 0, 1] = np.inf
    kw = dict(groups=3, padding=1)
    g = np.ones((1, 5, 5, 3))
    g[0, 2, 2, 0] = np.nan
    _conv_all(x, w, kw, g)
    # (the depthwise filter gradient multiplies dY by the zero padding, as
    # the textbook does, so a non-finite dY needs no GEMM)
    assert spy.used == ["conv2d_forward_nhwc", "conv2d_grad_input_nhwc",
                        "depthwise_grad_weight_nhwc", "conv2d_grad_bias_nhwc"]


def test_nchw_still_calls_the_nchw_kernels(spy):
    x = np.ones((1, 4, 5, 5))
    fastconv.conv2d(x, np.ones((4, 1, 3, 3)), groups=4)
    fastconv.max_pool2d(x, 2)
    assert spy.used == ["depthwise_forward", "max_pool2d_forward"]


# ---------------------------------------------------------------------------
# 3. named cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, dict(stride=2), dict(groups=2)],
                         ids=["plain", "strided", "grouped"])
def test_1x1_conv(kw, dtype, n_threads):
    """A 1x1 NHWC convolution is a plain GEMM of the (N*H*W, C) matrix."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 4, 6)).astype(dtype)
    w = rng.standard_normal((1, 1, 6 // kw.get("groups", 1), 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = fastconv.conv2d(x, w, b, layout="NHWC", **kw)
    assert_close(y, ref.conv2d(x, w, b, layout="NHWC", **kw), dtype)
    assert_same_as_nchw(y, nhwc(fastconv.conv2d(nchw(x), oihw(w), b, **kw)))
    if not kw:
        expected = x.reshape(-1, 6).astype(np.float64) @ w[0, 0] + b
        assert_close(y, expected.reshape(2, 5, 4, 4).astype(dtype), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw),
                 ref.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw), dtype)
    assert_close(fastconv.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw),
                 ref.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw), dtype)


@pytest.fixture(params=["default_tiles", "small_tiles"])
def tiles(request):
    """The kernels' default tiling, then tiles of a few hundred bytes (many
    tiles per image, partial last tiles)."""
    kernels = functional._kernels
    saved = kernels._tuning()
    if request.param == "small_tiles":
        kernels._tuning(tile_bytes=512, min_tile=1, min_items=64)
    yield request.param
    kernels._tuning(tile_bytes=saved["tile_bytes"], min_tile=saved["min_tile"],
                    min_items=saved["min_items"])


WIDE_CASES = {
    # name: (x shape, weight shape, hyper-parameters); C_in/groups * kw >= 32
    # packs NHWC patch rows (fewer channels take the transposed packing that
    # the hypothesis shapes cover)
    "dense_whole_rows": ((2, 9, 8, 40), (3, 3, 40, 16), dict(padding=1)),
    "dense_strided_dilated": ((2, 9, 8, 40), (3, 2, 40, 8),
                              dict(stride=2, dilation=2, padding=(2, 1))),
    "grouped": ((2, 8, 7, 64), (3, 3, 32, 12), dict(stride=2, padding=1, groups=2)),
    "1x1_single_gemm": ((2, 9, 8, 40), (1, 1, 40, 24), {}),
    "1x1_strided": ((2, 9, 8, 40), (1, 1, 40, 24), dict(stride=2)),
    # more channels than one channel block (256) of the NHWC reductions
    "depthwise_300": ((1, 5, 4, 300), (3, 3, 1, 300), dict(padding=1, groups=300)),
}


@pytest.mark.parametrize("case", sorted(WIDE_CASES))
def test_wide_channels_and_tiles(case, tiles, n_threads, grad_input_method,
                                 grad_weight_blocks):
    x_shape, w_shape, kw = WIDE_CASES[case]
    rng = np.random.default_rng(13)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[3])
    for dtype in DTYPES:
        xd, wd, bd = x.astype(dtype), w.astype(dtype), b.astype(dtype)
        y = fastconv.conv2d(xd, wd, bd, layout="NHWC", **kw)
        assert_same_as_nchw(y, nhwc(fastconv.conv2d(nchw(xd), oihw(wd), bd, **kw)))
        g = rng.standard_normal(y.shape).astype(dtype)
        dx = fastconv.conv2d_grad_input(g, wd, x_shape, layout="NHWC", **kw)
        assert_same_as_nchw(dx, nhwc(fastconv.conv2d_grad_input(
            nchw(g), oihw(wd), shape_nchw(x_shape), **kw)))
        dw = fastconv.conv2d_grad_weight(xd, g, w_shape, layout="NHWC", **kw)
        assert_same_as_nchw(dw, hwio(fastconv.conv2d_grad_weight(
            nchw(xd), nchw(g), shape_oihw(w_shape), **kw)))
        db = fastconv.conv2d_grad_bias(g, layout="NHWC")
        assert_same_as_nchw(db, fastconv.conv2d_grad_bias(nchw(g)))
        if dtype == np.float64 and tiles == "default_tiles" and n_threads == 2:
            assert_close(y, ref.conv2d(x, w, b, layout="NHWC", **kw))
            assert_close(dx, ref.conv2d_grad_input(g, w, x_shape, layout="NHWC", **kw))
            assert_close(dw, ref.conv2d_grad_weight(x, g, w_shape, layout="NHWC", **kw))
            assert_close(db, ref.conv2d_grad_bias(g, layout="NHWC"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pools_over_more_than_one_channel_block(dtype, n_threads):
    rng = np.random.default_rng(14)
    x = rng.integers(-3, 4, size=(2, 5, 6, 300)).astype(dtype)     # ties too
    for geo in [(2, None, 0, False), (3, 2, 1, True)]:
        y, idx = fastconv.max_pool2d(x, *geo, layout="NHWC")
        y_ref, idx_ref = ref.max_pool2d(x, *geo, layout="NHWC")
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        g = rng.standard_normal(y.shape).astype(dtype)
        assert_close(fastconv.max_pool2d_grad(g, idx, x.shape, layout="NHWC"),
                     ref.max_pool2d_grad(g, idx, x.shape, layout="NHWC"), dtype)
        a = fastconv.avg_pool2d(x, *geo, False, layout="NHWC")
        assert_close(a, ref.avg_pool2d(x, *geo, False, layout="NHWC"), dtype)
        assert_close(fastconv.avg_pool2d_grad(g, x.shape, *geo, False, layout="NHWC"),
                     ref.avg_pool2d_grad(g, x.shape, *geo, False, layout="NHWC"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ch", [3, 4, 8, 13, 64])
def test_2x2_pool_gradients_written_once(dtype, ch, n_threads):
    """2x2 / stride-2 gradients written pixel block by pixel block (the
    max gradient by an AVX2 kernel along C where compiled; channel counts
    below, at and past one vector): equal to the oracle, also when one
    channel's index leaves its 2x2 block (the image falls back to the
    scatter) and when one is out of range (ValueError)."""
    rng = np.random.default_rng(ch)
    for h, w in [(6, 8), (7, 9)]:
        x = rng.standard_normal((2, h, w, ch)).astype(dtype)
        y, idx = fastconv.max_pool2d(x, 2, layout="NHWC")
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(fastconv.max_pool2d_grad(g, idx, x.shape, layout="NHWC"),
                                      ref.max_pool2d_grad(g, idx, x.shape, layout="NHWC"))
        for pos in [(0, 0, 0, 0), (1, 2, 3, ch - 1), (1, 1, 1, ch // 2)]:
            odd = idx.copy()
            odd[pos] = (odd[pos] + 2) % (h * w)
            np.testing.assert_array_equal(
                fastconv.max_pool2d_grad(g, odd, x.shape, layout="NHWC"),
                ref.max_pool2d_grad(g, odd, x.shape, layout="NHWC"))
            odd[pos] = h * w
            with pytest.raises(ValueError, match="indices"):
                fastconv.max_pool2d_grad(g, odd, x.shape, layout="NHWC")
        for include in (True, False):
            np.testing.assert_array_equal(
                fastconv.avg_pool2d_grad(g, x.shape, 2, count_include_pad=include,
                                         layout="NHWC"),
                ref.avg_pool2d_grad(g, x.shape, 2, count_include_pad=include, layout="NHWC"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ch", [1, 4, 13])
def test_3x3_stride2_avg_gradient_is_the_nchw_one(dtype, ch, n_threads):
    """3x3 / stride-2 / unpadded average gradients are separable in both
    layouts with the same sums: NHWC equals NCHW bit for bit, over one and
    several chunks of output rows, and is close to the oracle."""
    rng = np.random.default_rng(ch)
    for h, w in [(7, 9), (8, 8), (21, 10), (40, 7)]:
        shape = (2, h, w, ch)
        out = ((h - 3) // 2 + 1, (w - 3) // 2 + 1)
        g = rng.standard_normal((2, out[0], out[1], ch)).astype(dtype)
        for include in (True, False):
            dx = fastconv.avg_pool2d_grad(g, shape, 3, 2, count_include_pad=include,
                                          layout="NHWC")
            dx_nchw = fastconv.avg_pool2d_grad(nchw(g), (2, ch, h, w), 3, 2,
                                               count_include_pad=include)
            np.testing.assert_array_equal(dx, dx_nchw.transpose(0, 2, 3, 1))
            assert_close(dx, ref.avg_pool2d_grad(g, shape, 3, 2, count_include_pad=include,
                                                 layout="NHWC"), dtype)


POOL_GEOMETRIES = [(2, 2, 0, False), (3, 2, 0, False), (3, 2, 1, True), (2, 2, 1, True),
                   (3, 1, 1, False), (2, 1, 0, False), (3, 3, 1, True), (4, 2, 2, False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ch", [1, 4, 8, 13])
def test_nhwc_pools_equal_general_loops_and_nchw_bitwise(dtype, ch, n_threads):
    """Every NHWC pooling result -- fast paths on or off -- has the bits of
    the NCHW result: the same window order for max, the same summation
    order for averages and their gradients (ties, NaN and inf included)."""
    from fastconv._simd import kernels as _kernels
    rng = np.random.default_rng(ch)
    x = rng.integers(-2, 3, size=(2, 13, 17, ch)).astype(dtype)
    x[rng.random(x.shape) < 0.03] = np.nan
    x[rng.random(x.shape) < 0.03] = np.inf
    for k, st_, pad, ceil in POOL_GEOMETRIES:
        args = (k, st_, pad, ceil)
        runs = []
        for fast in (True, False):
            _kernels._tuning(pool_fast_paths=fast)
            try:
                y, idx = fastconv.max_pool2d(x, *args, layout="NHWC")
                g = rng.standard_normal(y.shape).astype(dtype) if not runs else runs[0][-1]
                a = fastconv.avg_pool2d(x, *args, layout="NHWC")
                runs.append([y, idx, fastconv.max_pool2d_grad(g, idx, x.shape, layout="NHWC"),
                             a, fastconv.avg_pool2d_grad(g, x.shape, *args, layout="NHWC"), g])
            finally:
                _kernels._tuning(pool_fast_paths=True)
        for fast, general in zip(*runs):
            np.testing.assert_array_equal(fast, general, err_msg=str(args))
        y, idx, dmax, a, davg, g = runs[0]
        xn, gn = nchw(x), nchw(g)
        y_n, idx_n = fastconv.max_pool2d(xn, *args)
        for nhwc_result, nchw_result in [
                (y, y_n), (idx, idx_n), (a, fastconv.avg_pool2d(xn, *args)),
                (dmax, fastconv.max_pool2d_grad(gn, idx_n, xn.shape)),
                (davg, fastconv.avg_pool2d_grad(gn, xn.shape, *args))]:
            np.testing.assert_array_equal(nhwc_result, nchw_result.transpose(0, 2, 3, 1),
                                          err_msg=str(args))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding="same", dilation=2),
                                dict(stride=2, padding=(1, 2))],
                         ids=["pad1", "same-dilated", "strided"])
def test_non_finite_weight_on_a_depthwise_layer(value, kw, n_threads, grad_input_method):
    """The textbook multiplies the zero padding too: 0 * inf = NaN at the
    border.  The NHWC result must have NaN exactly where the oracle has."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((3, 3, 1, 4))
    w[2, 0, 0, 1] = value
    kw = dict(kw, groups=4)
    y = fastconv.conv2d(x, w, layout="NHWC", **kw)
    expected = ref.conv2d(x, w, layout="NHWC", **kw)
    assert np.isnan(expected).any()
    assert_close(y, expected)
    g = rng.standard_normal(y.shape)
    dx = fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    dx_ref = ref.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    if kw.get("stride", 1) == 1:
        assert_close(dx, dx_ref)
    else:
        # As in tests/test_conv.py (NCHW): the kernels may skip the zeros the
        # stride dilation inserts (SPEC.md allows it), which the literal loop
        # multiplies by the inf/NaN weight; everywhere else they agree.
        known = ~np.isnan(dx_ref)
        assert_close(dx[known], dx_ref[known])
    # a non-finite sensitivity on the weight gradient
    g[0, 0, 0, 2] = value
    assert_close(fastconv.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw),
                 ref.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [(0, 0), (-1, -1), (1, 2)], ids=["corner", "far-corner", "inner"])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding="same", dilation=2),
                                dict(stride=2, padding=(1, 2))],
                         ids=["pad1", "same-dilated", "strided"])
def test_depthwise_filter_gradient_multiplies_non_finite_sensitivities_by_the_padding(
        value, where, kw, n_threads, spy):
    """The NHWC depthwise filter gradient keeps its direct loops for an
    inf/NaN sensitivity: a tap in the zero padding adds ``dY * 0`` as the
    textbook does, so the NaNs land where the oracle's do (border pixels)
    and nowhere else (an inner pixel's inf stays an inf)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 5, 4))
    w_shape = (3, 3, 1, 4)
    kw = dict(kw, groups=4)
    g = rng.standard_normal(ref.conv2d(x, np.ones(w_shape), layout="NHWC", **kw).shape)
    g[(1,) + where + (2,)] = value
    expected = ref.conv2d_grad_weight(x, g, w_shape, layout="NHWC", **kw)
    for dtype in DTYPES:
        got = fastconv.conv2d_grad_weight(x.astype(dtype), g.astype(dtype), w_shape,
                                          layout="NHWC", **kw)
        assert_close(got, expected, dtype)
    assert set(spy.used) == {"depthwise_grad_weight_nhwc"}


def test_max_pool_nan_ties_and_minus_inf(n_threads):
    """Ties go to the first maximum in row-major order, a NaN wins (the last
    NaN of a window), an all -inf window reports its first in-bounds element;
    channels are independent planes."""
    x = np.zeros((1, 4, 4, 3))
    x[0, :, :, 0] = 1.0                                   # all tied
    x[0, :, :, 1] = np.arange(16.0).reshape(4, 4) % 3     # ties within windows
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 1] = np.nan                                # two NaNs in window (0, 0)
    x[0, :, :, 2] = -np.inf
    for dtype in DTYPES:
        xd = x.astype(dtype)
        for args in [(2,), (3, 2, 1, True), (2, 1)]:
            y, idx = fastconv.max_pool2d(xd, *args, layout="NHWC")
            y_ref, idx_ref = ref.max_pool2d(xd, *args, layout="NHWC")
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(idx, idx_ref)
            g = np.arange(1.0, y.size + 1).reshape(y.shape).astype(dtype)
            assert_close(fastconv.max_pool2d_grad(g, idx, xd.shape, layout="NHWC"),
                         ref.max_pool2d_grad(g, idx, xd.shape, layout="NHWC"), dtype)
        y, idx = fastconv.max_pool2d(xd, 2, layout="NHWC")
        assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 4      # the last NaN: (1, 0)
        np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 2], [8, 10]])
        np.testing.assert_array_equal(idx[0, :, :, 2], [[0, 2], [8, 10]])
        assert np.all(y[..., 2] == -np.inf)


@pytest.mark.parametrize("bad", [-1, 20, 2**40])
def test_out_of_range_max_pool_index_raises(bad, n_threads):
    x = np.random.default_rng(4).standard_normal((2, 4, 5, 3))
    y, idx = fastconv.max_pool2d(x, 2, layout="NHWC")
    idx = idx.copy()
    idx[1, 1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"max_pool2d_grad: indices.*input_shape "
                                         r"\(2, 4, 5, 3\)"):
        fastconv.max_pool2d_grad(y, idx, x.shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"indices"):
        fastconv.max_pool2d_grad(y, idx.astype(np.uint64) if bad >= 0 else idx, x.shape,
                                 layout="NHWC")


def test_max_pool_indices_match_pytorch_channels_last():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(5).standard_normal((2, 7, 6, 3))
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, True, layout="NHWC")
    t = torch.from_numpy(np.ascontiguousarray(nchw(x))).to(memory_format=torch.channels_last)
    ty, ti = torch.nn.functional.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(y, nhwc(ty.numpy()))
    np.testing.assert_array_equal(idx, nhwc(ti.numpy()))


# ---------------------------------------------------------------------------
# 4. the layout argument and shape errors
# ---------------------------------------------------------------------------

def _nhwc_calls(layout):
    """Each function with valid NHWC arguments and the given layout."""
    x = np.zeros((1, 4, 4, 2))
    w = np.zeros((3, 3, 2, 2))
    g = np.zeros((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    return {
        "conv2d": lambda: fastconv.conv2d(x, w, layout=layout),
        "conv2d_grad_input": lambda: fastconv.conv2d_grad_input(g, w, x.shape, layout=layout),
        "conv2d_grad_weight": lambda: fastconv.conv2d_grad_weight(x, g, w.shape, layout=layout),
        "conv2d_grad_bias": lambda: fastconv.conv2d_grad_bias(g, layout=layout),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 2, layout=layout),
        "max_pool2d_grad": lambda: fastconv.max_pool2d_grad(g, idx, x.shape, layout=layout),
        "avg_pool2d": lambda: fastconv.avg_pool2d(x, 2, layout=layout),
        "avg_pool2d_grad": lambda: fastconv.avg_pool2d_grad(g, x.shape, 2, layout=layout),
    }


@pytest.mark.parametrize("name", FUNCTIONS)
def test_layout_is_the_last_parameter_defaulting_to_nchw(name):
    last = list(inspect.signature(getattr(fastconv, name)).parameters.values())[-1]
    assert (last.name, last.default, last.kind) == (
        "layout", "NCHW", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    _nhwc_calls("NHWC")[name]()                        # valid NHWC arguments


def test_layout_can_be_passed_positionally():
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((1, 5, 5, 2)), rng.standard_normal((3, 3, 1, 4))
    np.testing.assert_array_equal(fastconv.conv2d(x, w, None, 2, 1, 1, 2, "NHWC"),
                                  fastconv.conv2d(x, w, stride=2, padding=1, groups=2,
                                                  layout="NHWC"))
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, True, "NHWC")
    np.testing.assert_array_equal(fastconv.max_pool2d_grad(y, idx, x.shape, "NHWC"),
                                  fastconv.max_pool2d_grad(y, idx, x.shape, layout="NHWC"))


@pytest.mark.parametrize("bad", ["nhwc", "NCWH", "", "channels_last", None, ("NHWC",), 1,
                                 b"NHWC"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_bad_layout_raises_naming_layout(name, bad):
    with pytest.raises(ValueError, match="layout") as exc:
        _nhwc_calls(bad)[name]()
    assert repr(bad) in str(exc.value)
    assert str(exc.value).startswith(name + ":")


@pytest.mark.parametrize("call", ["conv2d", "conv2d_grad_input", "conv2d_grad_weight"])
def test_nchw_ordered_weight_with_nhwc_layout_names_the_shapes(call):
    """(C_out, C_in/g, kh, kw) = (2, 4, 3, 3) given with layout="NHWC" reads as
    kh=2, kw=4, C_in/g=3, C_out=3: the message shows both shapes as given and
    the layout's axes."""
    x = np.zeros((1, 5, 5, 4))
    w = np.zeros((2, 4, 3, 3))
    g = np.zeros((1, 4, 2, 3))
    with pytest.raises(ValueError) as exc:
        if call == "conv2d":
            fastconv.conv2d(x, w, layout="NHWC")
        elif call == "conv2d_grad_input":
            fastconv.conv2d_grad_input(g, w, x.shape, layout="NHWC")
        else:
            fastconv.conv2d_grad_weight(x, g, w.shape, layout="NHWC")
    msg = str(exc.value)
    assert msg.startswith(call + ":"), msg
    assert "(1, 5, 5, 4)" in msg and "(2, 4, 3, 3)" in msg, msg
    assert "(N, H, W, C)" in msg and "(kh, kw, C_in/groups, C_out)" in msg, msg
    assert ("weight_shape (2, 4, 3, 3)" if call == "conv2d_grad_weight"
            else "weight (2, 4, 3, 3)") in msg, msg


def test_wrong_nhwc_shapes_name_the_argument_and_shapes():
    x = np.zeros((1, 5, 5, 4))
    w = np.zeros((3, 3, 4, 2))
    g_nchw = np.zeros((1, 2, 3, 3))                     # NCHW order: wrong here
    with pytest.raises(ValueError, match=r"conv2d_grad_input: grad_out has shape \(1, 2, 3, 3\)"
                                         r".*\(1, 3, 3, 2\).*grad_out is \(N, Ho, Wo, C_out\)"):
        fastconv.conv2d_grad_input(g_nchw, w, x.shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"grad_out has shape \(1, 2, 3, 3\).*\(1, 3, 3, 2\)"):
        fastconv.conv2d_grad_weight(x, g_nchw, w.shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"grad_out has shape \(1, 4, 2, 2\).*\(1, 2, 2, 4\)"
                                         r".*\(N, Ho, Wo, C\)"):
        fastconv.avg_pool2d_grad(np.zeros((1, 4, 2, 2)), x.shape, 2, layout="NHWC")
    with pytest.raises(ValueError, match=r"input_shape \(1, 5, 5, 4\) and grad_out "
                                         r"\(1, 4, 2, 2\) must agree on N and C.*"
                                         r"\(N, H, W, C\)"):
        fastconv.max_pool2d_grad(np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 2), np.int64),
                                 x.shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(C_out,\) = \(2,\)"
                                         r".*\(3, 3, 4, 2\).*got \(4,\)"):
        fastconv.conv2d(x, w, np.zeros(4), layout="NHWC")
    with pytest.raises(ValueError, match=r"max_pool2d: x must be 4-D \(N, H, W, C\)"):
        fastconv.max_pool2d(np.zeros((5, 5, 4)), 2, layout="NHWC")
    with pytest.raises(ValueError, match=r"weight must be 4-D \(kh, kw, C_in/groups, C_out\)"):
        fastconv.conv2d(x, np.zeros((3, 3, 4)), layout="NHWC")
    with pytest.raises(ValueError, match=r"grad_out must be 4-D \(N, Ho, Wo, C_out\)"):
        fastconv.conv2d_grad_bias(np.zeros((3, 4)), layout="NHWC")
    with pytest.raises(ValueError, match=r"groups=3 must divide the input channels C=4 of "
                                         r"x \(1, 5, 5, 4\)"):
        fastconv.conv2d(x, np.zeros((3, 3, 1, 3)), groups=3, layout="NHWC")
    with pytest.raises(ValueError, match=r"kernel 7x7 of weight \(7, 7, 4, 2\).*5x5 of "
                                         r"x \(1, 5, 5, 4\)"):
        fastconv.conv2d(x, np.zeros((7, 7, 4, 2)), layout="NHWC")
    with pytest.raises(ValueError, match=r"input planes of x \(1, 0, 5, 4\) are empty"):
        fastconv.avg_pool2d(np.zeros((1, 0, 5, 4)), 2, layout="NHWC")
    with pytest.raises(ValueError, match=r"kernel_size \(7, 7\).*of input_shape \(1, 5, 5, 4\)"):
        fastconv.avg_pool2d_grad(np.zeros((1, 1, 1, 4)), x.shape, 7, layout="NHWC")


# ---------------------------------------------------------------------------
# 5. memory layouts, dtypes and empty sizes
# ---------------------------------------------------------------------------

def _all_nhwc(x, w, b, g, gp, idx, ga):
    """Every function's NHWC result on these inputs (3x3 conv, groups 2,
    stride 2, padding 1; 3x3/2 pools with padding 1 and ceil_mode)."""
    kw = dict(stride=2, padding=1, groups=2, layout="NHWC")
    shape = np.shape(x)
    return {
        "conv2d": fastconv.conv2d(x, w, b, **kw),
        "conv2d_grad_input": fastconv.conv2d_grad_input(g, w, shape, **kw),
        "conv2d_grad_weight": fastconv.conv2d_grad_weight(x, g, np.shape(w), **kw),
        "conv2d_grad_bias": fastconv.conv2d_grad_bias(g, layout="NHWC"),
        "max_pool2d": fastconv.max_pool2d(x, 3, 2, 1, True, layout="NHWC")[0],
        "max_pool2d_grad": fastconv.max_pool2d_grad(gp, idx, shape, layout="NHWC"),
        "avg_pool2d": fastconv.avg_pool2d(x, 3, 2, 1, True, False, layout="NHWC"),
        "avg_pool2d_grad": fastconv.avg_pool2d_grad(ga, shape, 3, 2, 1, True, False,
                                                    layout="NHWC"),
    }


def _inputs(rng, dtype=np.float64):
    x = rng.standard_normal((2, 7, 6, 4)).astype(dtype)
    w = rng.standard_normal((3, 3, 2, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    g = rng.standard_normal((2, 4, 3, 6)).astype(dtype)
    _, idx = fastconv.max_pool2d(x, 3, 2, 1, True, layout="NHWC")
    gp = rng.standard_normal(idx.shape).astype(dtype)
    ga = rng.standard_normal(idx.shape).astype(dtype)
    return x, w, b, g, gp, idx, ga


@pytest.mark.parametrize("memory", ["F", "reversed", "strided", "readonly", "big-endian"])
def test_any_memory_layout_gives_the_contiguous_result(memory):
    rng = np.random.default_rng(6)
    arrays = _inputs(rng)
    expected = _all_nhwc(*arrays)

    def convert(a):
        if memory == "F":
            return np.asfortranarray(a)
        if memory == "reversed":        # a negative-stride view of the same values
            return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        if memory == "strided":
            big = np.zeros(a.shape + (2,), a.dtype)
            big[..., 0] = a
            return big[..., 0]
        if memory == "readonly":
            a = a.copy()
            a.flags.writeable = False
            return a
        return a.astype(a.dtype.newbyteorder(">"))

    converted = [convert(a) for a in arrays]
    for a, c in zip(arrays, converted):
        np.testing.assert_array_equal(a, c)
    got = _all_nhwc(*converted)
    for name in FUNCTIONS:
        assert got[name].flags.c_contiguous, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_results_do_not_depend_on_the_thread_count(monkeypatch, grad_input_method):
    """Bitwise the same on 1, 2 and 3 threads (the work split is by shape)."""
    from fastconv import _threads
    monkeypatch.setattr(_threads, "SMALL_WORK", 0)

    def run():
        rng = np.random.default_rng(15)
        out = []
        for dtype in DTYPES:
            out += list(_all_nhwc(*_inputs(rng, dtype)).values())
            for case in ("dense_whole_rows", "grouped", "depthwise_300"):
                x_shape, w_shape, kw = WIDE_CASES[case]
                x = rng.standard_normal(x_shape).astype(dtype)
                w = rng.standard_normal(w_shape).astype(dtype)
                y = fastconv.conv2d(x, w, layout="NHWC", **kw)
                g = rng.standard_normal(y.shape).astype(dtype)
                out += [y, fastconv.conv2d_grad_input(g, w, x_shape, layout="NHWC", **kw),
                        fastconv.conv2d_grad_weight(x, g, w_shape, layout="NHWC", **kw),
                        fastconv.conv2d_grad_bias(g, layout="NHWC")]
        return out

    try:
        results = []
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            results.append(run())
    finally:
        fastconv.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def test_float16_and_integer_inputs_follow_the_nchw_dtype_rules():
    rng = np.random.default_rng(7)
    x, w, b, g, gp, idx, ga = _inputs(rng)
    # float16: computed in float32, returned as float16
    half = _all_nhwc(*(a.astype(np.float16) if a.dtype.kind == "f" else a
                       for a in (x, w, b, g, gp, idx, ga)))
    single = _all_nhwc(*(a.astype(np.float16).astype(np.float32) if a.dtype.kind == "f" else a
                         for a in (x, w, b, g, gp, idx, ga)))
    for name in FUNCTIONS:
        assert half[name].dtype == np.float16, name
        np.testing.assert_array_equal(half[name], single[name].astype(np.float16),
                                      err_msg=name)
    # integers: float64
    ints = [np.round(3 * a).astype(np.int32) for a in (x, w, b, g, gp, ga)]
    got = _all_nhwc(*ints[:5], idx, ints[5])
    floats = [a.astype(np.float64) for a in ints]
    expected = _all_nhwc(*floats[:5], idx, floats[5])
    for name in FUNCTIONS:
        assert got[name].dtype == np.float64, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # NumPy promotion of the arrays as given, as in NCHW
    x32 = x.astype(np.float32)
    assert fastconv.conv2d(x32, w.astype(np.int64), padding=1, groups=2,
                           layout="NHWC").dtype == np.float64
    assert fastconv.conv2d(x32, w.astype(np.float32), b.astype(np.int8), groups=2,
                           layout="NHWC").dtype == np.float32
    y = fastconv.conv2d(x32, w, groups=2, layout="NHWC")
    assert y.dtype == fastconv.conv2d(nchw(x32), oihw(w), groups=2).dtype == np.float64
    with pytest.raises(TypeError, match=r"conv2d: x"):
        fastconv.conv2d(x.astype(np.complex128), w, groups=2, layout="NHWC")


def test_empty_sizes_match_nchw():
    rng = np.random.default_rng(8)

    def conv_both(x_shape, w_shape, bias=True, **kw):
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[3]) if bias else None
        y = fastconv.conv2d(x, w, b, layout="NHWC", **kw)
        assert_same_as_nchw(y, nhwc(fastconv.conv2d(nchw(x), oihw(w), b, **kw)))
        g = rng.standard_normal(y.shape)
        assert_same_as_nchw(fastconv.conv2d_grad_input(g, w, x_shape, layout="NHWC", **kw),
                            nhwc(fastconv.conv2d_grad_input(nchw(g), oihw(w),
                                                            shape_nchw(x_shape), **kw)))
        assert_same_as_nchw(fastconv.conv2d_grad_weight(x, g, w_shape, layout="NHWC", **kw),
                            hwio(fastconv.conv2d_grad_weight(nchw(x), nchw(g),
                                                             shape_oihw(w_shape), **kw)))
        assert_same_as_nchw(fastconv.conv2d_grad_bias(g, layout="NHWC"),
                            fastconv.conv2d_grad_bias(nchw(g)))
        return y

    assert conv_both((0, 5, 5, 3), (3, 3, 3, 2), padding=1).shape == (0, 5, 5, 2)
    y = conv_both((2, 5, 5, 0), (3, 3, 0, 2))             # no input channels: the bias
    assert y.shape == (2, 3, 3, 2) and np.all(y == y[0, 0, 0])
    assert conv_both((2, 5, 5, 0), (3, 3, 0, 2), bias=False).any() == False  # noqa: E712
    assert conv_both((2, 5, 5, 3), (3, 3, 3, 0)).shape == (2, 3, 3, 0)
    assert conv_both((2, 0, 5, 3), (1, 3, 3, 2), padding=(1, 0)).shape == (2, 2, 3, 2)
    assert conv_both((2, 5, 5, 0), (3, 3, 0, 0), groups=2).shape == (2, 3, 3, 0)

    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        x = rng.standard_normal(shape)
        y, idx = fastconv.max_pool2d(x, 2, layout="NHWC")
        assert y.shape == idx.shape == (shape[0], 2, 2, shape[3])
        dx = fastconv.max_pool2d_grad(y, idx, shape, layout="NHWC")
        assert dx.shape == shape
        a = fastconv.avg_pool2d(x, 2, layout="NHWC")
        assert a.shape == y.shape
        assert fastconv.avg_pool2d_grad(a, shape, 2, layout="NHWC").shape == shape
    # indices into an empty plane
    with pytest.raises(ValueError, match=r"empty"):
        fastconv.max_pool2d_grad(np.ones((1, 1, 1, 2)), np.zeros((1, 1, 1, 2), np.int64),
                                 (1, 0, 3, 2), layout="NHWC")


# ---------------------------------------------------------------------------
# 6. layers
# ---------------------------------------------------------------------------

def _nets(layout_rng=0, dtype=np.float64):
    """The same Conv2D -> ReLU -> MaxPool2D -> Flatten -> Linear network in both
    layouts; the NHWC Linear's columns follow the (H, W, C) flatten order."""
    def net(layout):
        return Sequential(Conv2D(2, 4, 3, padding=1, groups=2, dtype=dtype, rng=layout_rng,
                                 layout=layout),
                          ReLU(), MaxPool2D(2, layout=layout), Flatten(),
                          Linear(4 * 3 * 3, 5, dtype=dtype, rng=layout_rng + 1))
    a, b = net("NCHW"), net("NHWC")
    lin = a[4].params["weight"]
    b[4].params["weight"][...] = lin.reshape(5, 4, 3, 3).transpose(0, 2, 3, 1).reshape(5, -1)
    return a, b


def _distinct(rng, shape, step=0.05):
    """Pairwise-distinct values away from 0: no ReLU kinks, no tied maxima."""
    size = int(np.prod(shape))
    vals = (rng.permutation(size) - size / 2 + 0.5) * step
    return vals.reshape(shape)


def test_seeded_nhwc_conv_is_the_nchw_conv_transposed():
    for init in ("he", "xavier"):
        a = Conv2D(6, 4, (3, 2), groups=2, rng=11, init=init)
        b = Conv2D(6, 4, (3, 2), groups=2, rng=11, init=init, layout="NHWC")
        assert b.params["weight"].shape == (3, 2, 3, 4)
        assert b.params["weight"].flags.c_contiguous
        assert b.params["weight"].dtype == a.params["weight"].dtype == np.float32
        np.testing.assert_array_equal(b.params["weight"], hwio(a.params["weight"]))
    assert "layout='NHWC'" in repr(b) and "layout" not in repr(a)


def test_nhwc_network_matches_the_nchw_network(n_threads):
    rng = np.random.default_rng(9)
    a, b = _nets()
    x = _distinct(rng, (3, 2, 6, 6))
    y_a = a.forward(x)
    y_b = b.forward(nhwc(x))
    assert_same_as_nchw(y_b, y_a)
    dout = rng.standard_normal(y_a.shape)
    dx_a = a.backward(dout)
    dx_b = b.backward(dout)
    assert_same_as_nchw(dx_b, nhwc(dx_a))
    assert_same_as_nchw(b.grads["0.weight"], hwio(a.grads["0.weight"]))
    assert_same_as_nchw(b.grads["0.bias"], a.grads["0.bias"])
    assert_same_as_nchw(b.grads["4.weight"], a.grads["4.weight"].reshape(5, 4, 3, 3)
                        .transpose(0, 2, 3, 1).reshape(5, -1))
    assert_same_as_nchw(b.grads["4.bias"], a.grads["4.bias"])
    # the float32 default: the same function too
    a32, b32 = _nets(dtype=np.float32)
    assert_same_as_nchw(b32.forward(nhwc(x)), a32.forward(x).astype(np.float32))


def test_nhwc_network_passes_gradcheck():
    rng = np.random.default_rng(10)
    _, net = _nets()
    x = _distinct(rng, (2, 6, 6, 2))
    worst, errors = fastconv.gradcheck(net, x, details=True)
    assert worst < GRAD_TOL, errors
    assert {"input0", "0.weight", "0.bias", "4.weight", "4.bias"} <= set(errors)


@pytest.mark.parametrize("make", [lambda lay: AvgPool2D(3, 2, 1, True, False, layout=lay),
                                  lambda lay: MaxPool2D((3, 2), (2, 1), (1, 0), True,
                                                        layout=lay)],
                         ids=["avg", "max"])
def test_pool_layers_nhwc(make, rng):
    x = _distinct(rng, (2, 3, 7, 6))
    a, b = make("NCHW"), make("NHWC")
    y = b.forward(nhwc(x))
    assert_same_as_nchw(y, nhwc(a.forward(x)))
    g = rng.standard_normal(y.shape)
    assert_same_as_nchw(b.backward(g), nhwc(a.backward(nchw(g))))
    assert b.describe((2, 7, 6, 3))[0] == y.shape
    assert fastconv.gradcheck(b, np.ascontiguousarray(nhwc(x))) < GRAD_TOL
    assert "layout='NHWC'" in repr(b)


def test_nhwc_describe_and_summary():
    a, b = _nets()
    out_a, macs_a = a.describe((8, 2, 6, 6))
    out_b, macs_b = b.describe((8, 6, 6, 2))
    assert out_a == out_b == (8, 5) and macs_a == macs_b
    assert b[0].describe((8, 6, 6, 2)) == ((8, 6, 6, 4), a[0].describe((8, 2, 6, 6))[1])
    assert b[2].describe((8, 6, 6, 4)) == ((8, 3, 3, 4), 0)
    s_a, s_b = a.summary((8, 2, 6, 6)), b.summary((8, 6, 6, 2))
    assert [r[1] for r in s_b.rows] == [(8, 6, 6, 4), (8, 6, 6, 4), (8, 3, 3, 4), (8, 36),
                                        (8, 5)]
    assert (s_a.total_params, s_a.total_macs, s_a.total_activations) == \
        (s_b.total_params, s_b.total_macs, s_b.total_activations)
    x = np.zeros((8, 6, 6, 2))
    assert b.describe(x.shape)[0] == b.forward(x).shape
    with pytest.raises(ValueError, match=r"conv2d_cost:.*input_shape \(8, 2, 6, 6\).*"
                                         r"\(N, H, W, C\)"):
        b.describe((8, 2, 6, 6))                     # an NCHW shape given to NHWC layers


def test_nhwc_state_dicts_are_in_pytorch_layout(tmp_path):
    a, b = _nets()
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_b["0.weight"].shape == (4, 1, 3, 3)       # (C_out, C_in/g, kh, kw)
    np.testing.assert_array_equal(state_b["0.weight"], state_a["0.weight"])
    # loading the NCHW net's state dict transposes the conv weight in
    fresh = _nets(layout_rng=5)[1]
    weight = fresh.params["0.weight"]
    fresh.load_state_dict(state_a)
    assert fresh.params["0.weight"] is weight               # updated in place
    np.testing.assert_array_equal(weight, hwio(state_a["0.weight"]))
    # save / load round trip
    b.params["0.bias"][...] = [1, 2, 3, 4]
    b.save(tmp_path / "net.npz")
    other = _nets(layout_rng=7)[1].load(tmp_path / "net.npz")
    for k in b.params:
        np.testing.assert_array_equal(other.params[k], b.params[k])
    # the NHWC-shaped weight is not a state-dict shape: all or nothing
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=r"0.weight has shape \(3, 3, 1, 4\), the model "
                                         r"expects \(4, 1, 3, 3\)"):
        fresh.load_state_dict(dict(state_a, **{"0.weight": hwio(state_a["0.weight"]),
                                               "0.bias": np.full(4, 9.0)}))
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_pytorch_state_dict_loads_into_an_nhwc_conv():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tconv = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)).double()
    net = Sequential(Conv2D(4, 6, 3, padding=1, groups=2, dtype=np.float64, layout="NHWC"))
    net.load_state_dict({k: v.detach().numpy() for k, v in tconv.state_dict().items()})
    x = np.random.default_rng(11).standard_normal((2, 5, 5, 4))
    expected = tconv(torch.from_numpy(np.ascontiguousarray(nchw(x)))).detach().numpy()
    assert_same_as_nchw(net.forward(x), nhwc(expected))


def test_layers_reject_a_bad_layout():
    for make in (lambda: Conv2D(2, 2, 3, layout="nhwc"), lambda: MaxPool2D(2, layout=None),
                 lambda: AvgPool2D(2, layout="CHWN")):
        with pytest.raises(ValueError, match=r"layout must be 'NCHW' or 'NHWC'"):
            make()
