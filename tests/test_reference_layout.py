"""The channels-last (``layout="NHWC"``) branches of the oracles in ``fastconv.reference``.

NHWC is only a memory layout: every oracle given NHWC data must return what its NCHW
branch returns on the transposed data, transposed back (arrays ``(N, C, H, W)`` <->
``(N, H, W, C)``, conv weights ``(C_out, C_in/g, kh, kw)`` <-> ``(kh, kw, C_in/g, C_out)``).
The NHWC branches are separate channels-last loops, so this is checked on
hypothesis-drawn small geometries and on named edge cases: to 1e-12 in float64 (the
two branches may sum in a different order) and exactly for max-pool values and
indices.  Also covered: max-pool indices keep the in-plane ``h*W + w`` numbering
(checked by hand and, when importable, against PyTorch on a channels_last tensor),
dtypes, the ``layout`` argument's validation and the messages for shapes given in
the wrong layout.
"""

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference as ref
from helpers import randn

# Few, small examples: the oracles are slow Python loops and each example runs
# every oracle in both layouts.
FEW = settings(max_examples=25, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])

ORACLES = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias",
           "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def nchw(a):
    """(N, H, W, C) -> (N, C, H, W)."""
    return a.transpose(0, 3, 1, 2)


def nhwc(a):
    """(N, C, H, W) -> (N, H, W, C)."""
    return a.transpose(0, 2, 3, 1)


def oihw(w):
    """NHWC filters (kh, kw, C_in/g, C_out) -> NCHW filters (C_out, C_in/g, kh, kw)."""
    return w.transpose(3, 2, 0, 1)


def hwio(w):
    """NCHW filters (C_out, C_in/g, kh, kw) -> NHWC filters (kh, kw, C_in/g, C_out)."""
    return w.transpose(2, 3, 1, 0)


def shape_nchw(shape):
    n, h, w, c = shape
    return n, c, h, w


def assert_agree(actual, expected):
    """Same shape and dtype; values equal up to the summation order (1e-12 of the
    largest magnitude in float64, a few float32 ulps in float32)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    tol = 1e-12 if actual.dtype == np.float64 else 1e-6
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def check_conv(x, w, b, rng, **kw):
    """All four conv oracles: NHWC ``x``, ``w`` against NCHW through transposes."""
    y = ref.conv2d(x, w, b, layout="NHWC", **kw)
    assert_agree(y, nhwc(ref.conv2d(nchw(x), oihw(w), b, **kw)))
    g = randn(rng, y.shape, y.dtype)
    dx = ref.conv2d_grad_input(g, w, x.shape, layout="NHWC", **kw)
    assert dx.shape == x.shape
    assert_agree(dx, nhwc(ref.conv2d_grad_input(nchw(g), oihw(w), shape_nchw(x.shape), **kw)))
    dw = ref.conv2d_grad_weight(x, g, w.shape, layout="NHWC", **kw)
    assert dw.shape == w.shape
    assert_agree(dw, hwio(ref.conv2d_grad_weight(nchw(x), nchw(g), oihw(w).shape, **kw)))
    db = ref.conv2d_grad_bias(g, layout="NHWC")
    assert db.shape == (w.shape[3],)
    assert_agree(db, ref.conv2d_grad_bias(nchw(g)))


def check_max_pool(x, rng, **kw):
    """max_pool2d (exactly) and max_pool2d_grad in NHWC against NCHW."""
    y, idx = ref.max_pool2d(x, layout="NHWC", **kw)
    y_c, idx_c = ref.max_pool2d(nchw(x), **kw)
    assert y.dtype == y_c.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, nhwc(y_c))        # NaN == NaN here
    np.testing.assert_array_equal(idx, nhwc(idx_c))
    # the indices number each channel's plane h*W + w and point at the values
    N, H, W, C = x.shape
    Ho, Wo = y.shape[1:3]
    picked = np.take_along_axis(x.reshape(N, H * W, C), idx.reshape(N, Ho * Wo, C), axis=1)
    np.testing.assert_array_equal(picked, y.reshape(N, Ho * Wo, C))
    g = randn(rng, y.shape, y.dtype)
    dx = ref.max_pool2d_grad(g, idx, x.shape, layout="NHWC")
    assert_agree(dx, nhwc(ref.max_pool2d_grad(nchw(g), idx_c, shape_nchw(x.shape))))


def check_avg_pool(x, rng, **kw):
    """avg_pool2d and avg_pool2d_grad in NHWC against NCHW."""
    y = ref.avg_pool2d(x, layout="NHWC", **kw)
    assert_agree(y, nhwc(ref.avg_pool2d(nchw(x), **kw)))
    g = randn(rng, y.shape, y.dtype)
    dx = ref.avg_pool2d_grad(g, x.shape, layout="NHWC", **kw)
    assert_agree(dx, nhwc(ref.avg_pool2d_grad(nchw(g), shape_nchw(x.shape), **kw)))


def pool_input(kind, shape, rng, dtype=np.float64):
    """Normal values, many ties ({0, 1, 2}), or ties with NaNs and infinities."""
    if kind == "normal":
        return randn(rng, shape, dtype)
    x = rng.integers(0, 3, size=shape).astype(dtype)
    if kind == "nan":
        x[rng.random(shape) < 0.2] = np.nan
        x[rng.random(shape) < 0.1] = -np.inf
    return x


# ---------------------------------------------------------------------------
# hypothesis strategies (small: every example runs the slow loops twice)
# ---------------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    """A valid NHWC conv problem: (x shape, w shape, keyword arguments)."""
    n = draw(st.sampled_from([0, 1, 1, 2]))
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 2))               # 1 with groups > 1: depthwise
    og = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["valid", "same"])))
    if padding == "same":                      # stride 1; output size = input size
        sh = sw = 1
        min_h = min_w = 1
    else:
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if padding == "valid":
            ph = pw = 0
        elif isinstance(padding, int):
            ph = pw = padding
        else:
            ph, pw = padding
        # at least one window: the dilated kernel fits the padded input
        min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
        min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, min_h + 4))
    w = draw(st.integers(min_w, min_w + 4))
    kwargs = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups)
    return (n, h, w, cg * groups), (kh, kw, cg, og * groups), kwargs


@st.composite
def pool_cases(draw):
    """A valid NHWC pooling problem: (x shape, keyword arguments)."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    n = draw(st.sampled_from([0, 1, 1, 2]))
    c = draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    kwargs = dict(kernel_size=(kh, kw), stride=stride, padding=(ph, pw),
                  ceil_mode=draw(st.booleans()))
    return (n, h, w, c), kwargs


seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------
# 1. NHWC == NCHW through transposes, on drawn geometries
# ---------------------------------------------------------------------------

@FEW
@given(case=conv_cases(), seed=seeds, with_bias=st.booleans())
def test_conv_oracles_nhwc_match_nchw_drawn(case, seed, with_bias):
    x_shape, w_shape, kw = case
    rng = np.random.default_rng(seed)
    b = randn(rng, (w_shape[3],)) if with_bias else None
    check_conv(randn(rng, x_shape), randn(rng, w_shape), b, rng, **kw)


@FEW
@given(case=pool_cases(), seed=seeds, kind=st.sampled_from(["normal", "ties", "nan"]))
def test_max_pool_oracles_nhwc_match_nchw_drawn(case, seed, kind):
    x_shape, kw = case
    rng = np.random.default_rng(seed)
    check_max_pool(pool_input(kind, x_shape, rng), rng, **kw)


@FEW
@given(case=pool_cases(), seed=seeds, count_include_pad=st.booleans())
def test_avg_pool_oracles_nhwc_match_nchw_drawn(case, seed, count_include_pad):
    x_shape, kw = case
    rng = np.random.default_rng(seed)
    check_avg_pool(randn(rng, x_shape), rng, count_include_pad=count_include_pad, **kw)


# ---------------------------------------------------------------------------
# 2. named edge cases
# ---------------------------------------------------------------------------

CONV_CASES = {
    # name: (x shape NHWC, w shape (kh, kw, C_in/g, C_out), keyword arguments)
    "groups2": ((2, 6, 5, 4), (3, 3, 2, 6), dict(padding=1, groups=2)),
    "depthwise": ((2, 6, 6, 3), (3, 3, 1, 3), dict(padding=1, groups=3)),
    "depthwise_multiplier2": ((1, 5, 5, 2), (3, 3, 1, 4), dict(groups=2)),
    "stride2_dilation2": ((2, 9, 8, 3), (3, 2, 3, 4), dict(stride=2, padding=(1, 0),
                                                           dilation=2)),
    "stride23_dilation21_groups2": ((1, 9, 8, 4), (3, 2, 2, 6),
                                    dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1),
                                         groups=2)),
    "same_even_kernel": ((1, 5, 6, 2), (2, 4, 2, 3), dict(padding="same")),
    "same_even_kernel_dilated_grouped": ((1, 6, 7, 6), (2, 4, 2, 6),
                                         dict(padding="same", dilation=(1, 2), groups=3)),
    "kernel_1x1": ((2, 4, 5, 3), (1, 1, 3, 5), {}),
    "kernel_1x1_stride3_valid_groups2": ((2, 7, 6, 2), (1, 1, 1, 4),
                                         dict(stride=3, padding="valid", groups=2)),
    "stride_remainder_unreached_rows": ((1, 8, 8, 2), (3, 3, 2, 3), dict(stride=2)),
    "kernel_covers_padded_input": ((1, 3, 3, 2), (5, 5, 2, 2), dict(padding=1)),
    "empty_batch": ((0, 5, 5, 4), (3, 3, 2, 4), dict(stride=2, padding=1, groups=2)),
}


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_oracles_nhwc_match_nchw_named(name, with_bias):
    x_shape, w_shape, kw = CONV_CASES[name]
    rng = np.random.default_rng(1)
    b = randn(rng, (w_shape[3],)) if with_bias else None
    check_conv(randn(rng, x_shape), randn(rng, w_shape), b, rng, **kw)


def test_same_padding_keeps_the_spatial_size_in_nhwc():
    x = randn(np.random.default_rng(2), (1, 5, 6, 2))
    w = randn(np.random.default_rng(3), (2, 4, 2, 3))
    assert ref.conv2d(x, w, padding="same", layout="NHWC").shape == (1, 5, 6, 3)
    # total padding (1, 3): top 0 / bottom 1, left 1 / right 2, as in NCHW
    xp = np.pad(x, ((0, 0), (0, 1), (1, 2), (0, 0)))
    assert_agree(ref.conv2d(x, w, padding="same", layout="NHWC"),
                 ref.conv2d(xp, w, layout="NHWC"))


POOL_CASES = {
    # name: (x shape NHWC, kernel_size, stride, padding, ceil_mode)
    "k2_default_stride": ((2, 6, 6, 3), 2, None, 0, False),
    "k3_s2_p1": ((2, 7, 7, 2), 3, 2, 1, False),
    "k3_s2_p1_ceil": ((2, 6, 6, 2), 3, 2, 1, True),
    "ceil_shrunk_by_start_rule": ((1, 5, 5, 2), 3, 3, 1, True),
    "ceil_half_windows": ((1, 7, 6, 2), 2, None, 0, True),
    "heavy_overlap": ((1, 5, 5, 2), 3, 1, 1, False),
    "rectangular_ceil": ((2, 8, 7, 1), (3, 2), (2, 1), (1, 1), True),
    "rectangular_pad2_ceil": ((1, 9, 5, 2), (4, 3), (3, 2), (2, 0), True),
    "kernel_1x1": ((1, 4, 3, 3), 1, 1, 0, False),
    "empty_batch": ((0, 6, 6, 3), 3, 2, 1, True),
}


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_max_pool_oracles_nhwc_match_nchw_named(name, kind):
    x_shape, k, s, p, ceil = POOL_CASES[name]
    rng = np.random.default_rng(4)
    check_max_pool(pool_input(kind, x_shape, rng), rng, kernel_size=k, stride=s,
                   padding=p, ceil_mode=ceil)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_avg_pool_oracles_nhwc_match_nchw_named(name, count_include_pad):
    x_shape, k, s, p, ceil = POOL_CASES[name]
    rng = np.random.default_rng(5)
    check_avg_pool(randn(rng, x_shape), rng, kernel_size=k, stride=s, padding=p,
                   ceil_mode=ceil, count_include_pad=count_include_pad)


def test_max_pool_ties_and_nan_by_hand_in_nhwc():
    """The hand-worked NCHW tie and NaN planes (tests/test_reference.py), as the two
    channels of one NHWC array: same values, same in-plane indices."""
    nan = np.nan
    ties = [[1.0, 3.0, 3.0, 0.0],
            [3.0, 3.0, 0.0, 3.0],
            [2.0, 2.0, 5.0, 5.0],
            [2.0, 2.0, 5.0, 5.0]]
    nans = [[1.0, nan, 7.0, 2.0],
            [nan, 0.0, 1.0, nan],
            [-1.0, -2.0, 4.0, 4.0],
            [-3.0, -4.0, 4.0, 9.0]]
    x = np.stack([ties, nans], axis=-1)[None]            # (1, 4, 4, 2)
    y, idx = ref.max_pool2d(x, 2, layout="NHWC")
    assert y.shape == idx.shape == (1, 2, 2, 2) and idx.dtype == np.int64
    # ties go to the first maximum in row-major order
    np.testing.assert_array_equal(y[0, :, :, 0], [[3.0, 3.0], [2.0, 5.0]])
    np.testing.assert_array_equal(idx[0, :, :, 0], [[1, 2], [8, 10]])
    # NaN beats numbers; of several NaNs the last one is reported
    np.testing.assert_array_equal(y[0, :, :, 1], [[nan, nan], [-1.0, 9.0]])
    np.testing.assert_array_equal(idx[0, :, :, 1], [[4, 7], [8, 15]])
    # the gradient goes to the recorded (first) maximum only
    dx = ref.max_pool2d_grad(np.ones((1, 2, 2, 2)), idx, x.shape, layout="NHWC")
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1.0
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    check_max_pool(x, np.random.default_rng(6), kernel_size=2)


def test_avg_pool_count_include_pad_by_hand_in_nhwc():
    x = np.ones((1, 3, 3, 2))
    y = ref.avg_pool2d(x, 2, 2, 1, count_include_pad=True, layout="NHWC")
    for c in range(2):
        np.testing.assert_allclose(y[0, :, :, c], [[0.25, 0.5], [0.5, 1.0]])
    y = ref.avg_pool2d(x, 2, 2, 1, count_include_pad=False, layout="NHWC")
    np.testing.assert_allclose(y, np.ones((1, 2, 2, 2)))


def test_max_pool_indices_match_torch_channels_last():
    """PyTorch's max_pool2d on a channels_last tensor returns the same in-plane
    ``h*W + w`` indices (its (N, C, Ho, Wo) view, permuted to NHWC)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for kind in ["normal", "ties", "nan"]:
        x = pool_input(kind, (2, 7, 6, 3), rng)
        tx = torch.tensor(nchw(x)).contiguous(memory_format=torch.channels_last)
        ty, tidx = torch.nn.functional.max_pool2d(tx, 3, 2, 1, ceil_mode=True,
                                                  return_indices=True)
        y, idx = ref.max_pool2d(x, 3, 2, 1, True, layout="NHWC")
        np.testing.assert_array_equal(y, ty.permute(0, 2, 3, 1).numpy())
        np.testing.assert_array_equal(idx, tidx.permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------
# 3. dtypes
# ---------------------------------------------------------------------------

def _nhwc_outputs(dtype, rng):
    """Every NHWC oracle on one grouped, strided problem, inputs of ``dtype``."""
    x = (rng.standard_normal((2, 6, 6, 2)) * 4).astype(dtype)
    w = (rng.standard_normal((3, 3, 1, 2)) * 4).astype(dtype)
    b = (rng.standard_normal(2) * 4).astype(dtype)
    g = (rng.standard_normal((2, 3, 3, 2)) * 4).astype(dtype)
    kw = dict(stride=2, padding=1, groups=2, layout="NHWC")
    y_mp, idx = ref.max_pool2d(x, 3, 2, 1, True, layout="NHWC")
    gp = (rng.standard_normal(y_mp.shape) * 4).astype(dtype)
    return {
        "conv2d": ref.conv2d(x, w, b, **kw),
        "conv2d_grad_input": ref.conv2d_grad_input(g, w, x.shape, **kw),
        "conv2d_grad_weight": ref.conv2d_grad_weight(x, g, w.shape, **kw),
        "conv2d_grad_bias": ref.conv2d_grad_bias(g, layout="NHWC"),
        "max_pool2d": y_mp,
        "max_pool2d_grad": ref.max_pool2d_grad(gp, idx, x.shape, layout="NHWC"),
        "avg_pool2d": ref.avg_pool2d(x, 3, 2, 1, True, False, layout="NHWC"),
        "avg_pool2d_grad": ref.avg_pool2d_grad(gp, x.shape, 3, 2, 1, True, False,
                                               layout="NHWC"),
    }, idx


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.int64, np.float64),
])
def test_nhwc_dtype_rules(dtype, expected):
    outs, idx = _nhwc_outputs(dtype, np.random.default_rng(8))
    assert idx.dtype == np.int64
    assert set(outs) == set(ORACLES)
    for name, out in outs.items():
        assert out.dtype == expected, name


def test_float32_nhwc_matches_float32_nchw():
    rng = np.random.default_rng(9)
    x = randn(rng, (2, 7, 6, 4), np.float32)
    w = randn(rng, (3, 2, 2, 4), np.float32)
    b = randn(rng, (4,), np.float32)
    check_conv(x, w, b, rng, stride=2, padding=(1, 0), dilation=(1, 2), groups=2)
    check_max_pool(pool_input("ties", x.shape, rng, np.float32), rng, kernel_size=3,
                   stride=2, padding=1, ceil_mode=True)
    check_avg_pool(x, rng, kernel_size=3, stride=2, padding=1, ceil_mode=True,
                   count_include_pad=False)


# ---------------------------------------------------------------------------
# 4. the layout argument and shape errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ORACLES)
def test_layout_is_a_trailing_keyword_defaulting_to_nchw(name):
    """Every oracle has the API's parameters (see tests/test_api.py), the last
    being ``layout="NCHW"`` (which the API has too since it gained NHWC)."""
    params = list(inspect.signature(getattr(ref, name)).parameters.values())
    api = list(inspect.signature(getattr(fastconv, name)).parameters.values())
    assert params == api
    assert params[-1].name == "layout" and params[-1].default == "NCHW"
    assert params[-1].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def _calls(layout):
    """Each oracle called with valid NCHW arguments and the given layout."""
    x = np.zeros((1, 2, 4, 4))
    w = np.zeros((2, 2, 3, 3))
    g = np.zeros((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    return {
        "conv2d": lambda: ref.conv2d(x, w, layout=layout),
        "conv2d_grad_input": lambda: ref.conv2d_grad_input(g, w, x.shape, layout=layout),
        "conv2d_grad_weight": lambda: ref.conv2d_grad_weight(x, g, w.shape, layout=layout),
        "conv2d_grad_bias": lambda: ref.conv2d_grad_bias(g, layout=layout),
        "max_pool2d": lambda: ref.max_pool2d(x, 2, layout=layout),
        "max_pool2d_grad": lambda: ref.max_pool2d_grad(g, idx, x.shape, layout=layout),
        "avg_pool2d": lambda: ref.avg_pool2d(x, 2, layout=layout),
        "avg_pool2d_grad": lambda: ref.avg_pool2d_grad(g, x.shape, 2, layout=layout),
    }


@pytest.mark.parametrize("bad", ["nhwc", "NCWH", "", "channels_last", None, ("NHWC",), 1])
@pytest.mark.parametrize("name", ORACLES)
def test_bad_layout_raises_naming_layout(name, bad):
    with pytest.raises(ValueError, match="layout") as exc:
        _calls(bad)[name]()
    assert repr(bad) in str(exc.value)


@pytest.mark.parametrize("call", ["conv2d", "conv2d_grad_input", "conv2d_grad_weight"])
def test_nchw_ordered_weight_with_nhwc_layout_names_the_shapes(call):
    """A weight in NCHW order (C_out, C_in/g, kh, kw) = (2, 4, 3, 3) passed with
    layout="NHWC" reads as kh=2, kw=4, C_in/g=3, C_out=3 and does not fit a 4-channel
    NHWC input: the message shows both shapes as given and how they were read."""
    x = np.zeros((1, 5, 5, 4))
    w = np.zeros((2, 4, 3, 3))
    g = np.zeros((1, 3, 3, 2))
    with pytest.raises(ValueError) as exc:
        if call == "conv2d":
            ref.conv2d(x, w, layout="NHWC")
        elif call == "conv2d_grad_input":
            ref.conv2d_grad_input(g, w, x.shape, layout="NHWC")
        else:
            ref.conv2d_grad_weight(x, g, w.shape, layout="NHWC")
    msg = str(exc.value)
    assert "(1, 5, 5, 4)" in msg and "(2, 4, 3, 3)" in msg, msg
    assert "(N, H, W, C)" in msg and "(kh, kw, C_in/groups, C_out)" in msg, msg


def test_grad_out_in_the_wrong_layout_shows_the_expected_nhwc_shape():
    x_shape = (1, 5, 5, 4)
    w = np.zeros((3, 3, 4, 2))
    g_nchw = np.zeros((1, 2, 3, 3))                      # right for NCHW, wrong here
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 3, 3, 2\), "
                                         r"got \(1, 2, 3, 3\)"):
        ref.conv2d_grad_input(g_nchw, w, x_shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"\(1, 3, 3, 2\), got \(1, 2, 3, 3\)"):
        ref.conv2d_grad_weight(np.zeros(x_shape), g_nchw, w.shape, layout="NHWC")
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 4\), got \(1, 4, 2, 2\)"):
        ref.avg_pool2d_grad(np.zeros((1, 4, 2, 2)), x_shape, 2, layout="NHWC")
    with pytest.raises(ValueError, match=r"\(1, 4, 2, 2\) does not match input_shape "
                                         r"\(1, 5, 5, 4\)"):
        ref.max_pool2d_grad(np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 2), np.int64),
                            x_shape, layout="NHWC")


def test_non_4d_input_names_the_nhwc_axes():
    with pytest.raises(ValueError, match=r"4-D \(N, H, W, C\)"):
        ref.max_pool2d(np.zeros((5, 5, 4)), 2, layout="NHWC")
    with pytest.raises(ValueError, match=r"4-D \(kh, kw, C_in/groups, C_out\)"):
        ref.conv2d(np.zeros((1, 5, 5, 4)), np.zeros((3, 3, 4)), layout="NHWC")
