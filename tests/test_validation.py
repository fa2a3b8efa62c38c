"""Argument validation of the public API.

Every malformed call must raise ``TypeError`` (a value of the wrong kind) or
``ValueError`` (a value out of range / shapes that disagree) -- never crash,
hang, write out of bounds or return silently wrong numbers -- and the message
must name the offending argument and, where shapes are involved, the shapes.
Well-formed but unusual spellings (NumPy integer scalars, 0-d arrays, lists,
NumPy arrays for pairs) must be accepted and give the same result as plain
Python ints.
"""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import reference


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Validation does not depend on the thread count; one thread keeps the
    many tiny calls here fast on a busy machine."""
    fc.set_num_threads(1)
    yield
    fc.set_num_threads(None)


# ---------------------------------------------------------------------------
# A valid baseline for every function; tests perturb one argument at a time.
# ---------------------------------------------------------------------------

X_SHAPE = (2, 3, 8, 8)
W_SHAPE = (4, 3, 3, 3)
GO_SHAPE = (2, 4, 6, 6)          # conv2d(X, W) with the defaults
PGO_SHAPE = (2, 3, 4, 4)         # pooling with kernel_size=2 (stride defaults to 2)

X = np.arange(np.prod(X_SHAPE), dtype=np.float64).reshape(X_SHAPE) % 11 - 5  # not h<->w symmetric
W = np.arange(np.prod(W_SHAPE), dtype=np.float64).reshape(W_SHAPE) % 5 - 2
GO = np.ones(GO_SHAPE)
PGO = np.ones(PGO_SHAPE)
IDX = fc.max_pool2d(X, 2)[1]

CONV_FNS = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight"]
POOL_FNS = ["max_pool2d", "avg_pool2d", "avg_pool2d_grad"]


def _pattern(shape):
    """A deterministic, non-uniform, not h<->w symmetric array."""
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 5 + 1


def conv_call(name, x=X, weight=W, grad_out=None, **kw):
    """Call one of the three conv functions on the baseline geometry.

    When ``grad_out`` is not given for a gradient, it is given the shape the
    forward pass produces for these hyper-parameters (or the baseline shape if
    the forward call itself is invalid), so that only the perturbed argument
    can be at fault.
    """
    if name == "conv2d":
        return fc.conv2d(x, weight, **kw)
    if grad_out is None:
        try:
            grad_out = _pattern(fc.conv2d(x, weight, **kw).shape)
        except (TypeError, ValueError):
            grad_out = GO
    if name == "conv2d_grad_input":
        return fc.conv2d_grad_input(grad_out, weight, x.shape, **kw)
    return fc.conv2d_grad_weight(x, grad_out, weight.shape, **kw)


def pool_call(name, kernel_size=2, x=X, **kw):
    if name == "max_pool2d":
        return fc.max_pool2d(x, kernel_size, **kw)
    if name == "avg_pool2d":
        return fc.avg_pool2d(x, kernel_size, **kw)
    try:
        grad_out = _pattern(fc.avg_pool2d(x, kernel_size, **kw).shape)
    except (TypeError, ValueError):
        grad_out = PGO
    return fc.avg_pool2d_grad(grad_out, x.shape, kernel_size, **kw)


def test_baseline_calls_are_valid():
    assert fc.conv2d(X, W).shape == GO_SHAPE
    assert fc.conv2d_grad_input(GO, W, X_SHAPE).shape == X_SHAPE
    assert fc.conv2d_grad_weight(X, GO, W_SHAPE).shape == W_SHAPE
    assert fc.conv2d_grad_bias(GO).shape == (4,)
    y, idx = fc.max_pool2d(X, 2)
    assert y.shape == idx.shape == PGO_SHAPE
    assert fc.max_pool2d_grad(PGO, idx, X_SHAPE).shape == X_SHAPE
    assert fc.avg_pool2d(X, 2).shape == PGO_SHAPE
    assert fc.avg_pool2d_grad(PGO, X_SHAPE, 2).shape == X_SHAPE


# ---------------------------------------------------------------------------
# 1. Array ranks
# ---------------------------------------------------------------------------

NDIM_CASES = [
    # (id, call, argument name, shape regex)
    ("conv2d-x-3d", lambda: fc.conv2d(np.ones((3, 8, 8)), W), "x", r"\(3, 8, 8\)"),
    ("conv2d-x-5d", lambda: fc.conv2d(np.ones((1, 2, 3, 8, 8)), W), "x", r"\(1, 2, 3, 8, 8\)"),
    ("conv2d-weight-5d", lambda: fc.conv2d(X, np.ones((4, 3, 3, 3, 1))), "weight",
     r"\(4, 3, 3, 3, 1\)"),
    ("conv2d-weight-2d", lambda: fc.conv2d(X, np.ones((3, 3))), "weight", r"\(3, 3\)"),
    ("conv2d-bias-2d", lambda: fc.conv2d(X, W, bias=np.ones((1, 4))), "bias", r"\(1, 4\)"),
    ("conv2d-bias-0d", lambda: fc.conv2d(X, W, bias=1.0), "bias", r"\(\)"),
    ("grad_input-grad_out-3d", lambda: fc.conv2d_grad_input(np.ones((4, 6, 6)), W, X_SHAPE),
     "grad_out", r"\(4, 6, 6\)"),
    ("grad_input-weight-5d",
     lambda: fc.conv2d_grad_input(GO, np.ones((4, 3, 3, 3, 1)), X_SHAPE), "weight",
     r"\(4, 3, 3, 3, 1\)"),
    ("grad_weight-x-3d", lambda: fc.conv2d_grad_weight(np.ones((3, 8, 8)), GO, W_SHAPE), "x",
     r"\(3, 8, 8\)"),
    ("grad_weight-grad_out-3d",
     lambda: fc.conv2d_grad_weight(X, np.ones((4, 6, 6)), W_SHAPE), "grad_out", r"\(4, 6, 6\)"),
    ("grad_bias-grad_out-3d", lambda: fc.conv2d_grad_bias(np.ones((4, 6, 6))), "grad_out",
     r"\(4, 6, 6\)"),
    ("grad_bias-grad_out-5d", lambda: fc.conv2d_grad_bias(np.ones((1, 2, 4, 6, 6))), "grad_out",
     r"\(1, 2, 4, 6, 6\)"),
    ("max_pool2d-x-3d", lambda: fc.max_pool2d(np.ones((3, 8, 8)), 2), "x", r"\(3, 8, 8\)"),
    ("max_pool2d_grad-grad_out-3d",
     lambda: fc.max_pool2d_grad(np.ones((3, 4, 4)), np.zeros((3, 4, 4), np.int64), X_SHAPE),
     "grad_out", r"\(3, 4, 4\)"),
    ("avg_pool2d-x-3d", lambda: fc.avg_pool2d(np.ones((3, 8, 8)), 2), "x", r"\(3, 8, 8\)"),
    ("avg_pool2d-x-2d", lambda: fc.avg_pool2d(np.ones((8, 8)), 2), "x", r"\(8, 8\)"),
    ("avg_pool2d_grad-grad_out-3d",
     lambda: fc.avg_pool2d_grad(np.ones((3, 4, 4)), X_SHAPE, 2), "grad_out", r"\(3, 4, 4\)"),
]


@pytest.mark.parametrize("call, name, shape", [c[1:] for c in NDIM_CASES],
                         ids=[c[0] for c in NDIM_CASES])
def test_wrong_ndim(call, name, shape):
    with pytest.raises(ValueError, match=rf"\b{name}\b.*{shape}"):
        call()


# ---------------------------------------------------------------------------
# 2. Channels and groups
# ---------------------------------------------------------------------------

def test_conv2d_channel_mismatch():
    x = np.ones((2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"weight \(4, 3, 3, 3\).*x \(2, 5, 8, 8\)"):
        fc.conv2d(x, W)


def test_grad_input_channel_mismatch():
    with pytest.raises(ValueError, match=r"weight.*\(4, 3, 3, 3\).*input_shape \(2, 5, 8, 8\)"):
        fc.conv2d_grad_input(GO, W, (2, 5, 8, 8))


def test_grad_weight_channel_mismatch():
    x = np.ones((2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"weight_shape \(4, 3, 3, 3\).*x \(2, 5, 8, 8\)"):
        fc.conv2d_grad_weight(x, GO, W_SHAPE)
    with pytest.raises(ValueError, match=r"weight_shape \(4, 2, 3, 3\).*x \(2, 3, 8, 8\)"):
        fc.conv2d_grad_weight(X, GO, (4, 2, 3, 3))


@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("groups", [0, -1, -4])
def test_groups_not_positive(name, groups):
    with pytest.raises(ValueError, match=r"groups"):
        conv_call(name, groups=groups)


@pytest.mark.parametrize("name", CONV_FNS)
def test_groups_not_dividing_c_in(name):
    # C_in = 3 is not divisible by 2 (C_out = 4 is)
    w = np.ones((4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"groups=2.*C=3.*\(2, 3, 8, 8\)"):
        conv_call(name, weight=w, grad_out=GO, groups=2)


@pytest.mark.parametrize("name", CONV_FNS)
def test_groups_not_dividing_c_out(name):
    x = np.ones((2, 4, 8, 8))
    w = np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"groups=2.*C_out=3.*\(3, 2, 3, 3\)"):
        conv_call(name, x=x, weight=w, grad_out=np.ones((2, 3, 6, 6)), groups=2)


@pytest.mark.parametrize("name", CONV_FNS)
def test_groups_weight_c_in_mismatch(name):
    # groups=3 divides C_in = 3 and C_out = 3, but the weight's C_in/groups is 3, not 1
    w = np.ones((3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"groups=3"):
        conv_call(name, weight=w, grad_out=np.ones((2, 3, 6, 6)), groups=3)


@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("groups", [2.0, "2", True, False, None, [1], np.float64(1.0),
                                    np.bool_(True), 1 + 0j],
                         ids=repr)
def test_groups_not_integer(name, groups):
    with pytest.raises(TypeError, match=r"groups"):
        conv_call(name, groups=groups)


# ---------------------------------------------------------------------------
# 3. stride / dilation / padding ranges and spellings
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("arg", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (0, 1), (-2, 1), [1, -1]], ids=repr)
def test_conv_stride_dilation_not_positive(name, arg, value):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        conv_call(name, **{arg: value})


@pytest.mark.parametrize("name", POOL_FNS)
@pytest.mark.parametrize("arg, value", [("stride", 0), ("stride", -1), ("stride", (1, 0)),
                                        ("kernel_size", 0), ("kernel_size", -2),
                                        ("kernel_size", (2, 0))], ids=repr)
def test_pool_stride_kernel_not_positive(name, arg, value):
    kw = {"kernel_size": 2, arg: value}
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        pool_call(name, **kw)


@pytest.mark.parametrize("name", CONV_FNS + POOL_FNS)
@pytest.mark.parametrize("value", [-1, (0, -1), (-1, 0), [-3, -3]], ids=repr)
def test_negative_padding(name, value):
    call = conv_call if name in CONV_FNS else pool_call
    with pytest.raises(ValueError, match=r"padding"):
        call(name, padding=value)


@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("value", ["full", "", "causal", "same ", "valid!"])
def test_conv_bad_padding_string(name, value):
    with pytest.raises(ValueError, match=r"padding.*" + re.escape(repr(value))):
        conv_call(name, padding=value)


@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("value", ["same", "valid", "SAME", "Valid"])
def test_conv_padding_strings_accepted(name, value):
    out = conv_call(name, padding=value)
    mode = value.lower()
    ref = conv_call(name, padding=1 if mode == "same" else 0)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", POOL_FNS)
@pytest.mark.parametrize("value", ["same", "valid", "1"])
def test_pool_padding_string_refused(name, value):
    with pytest.raises(TypeError, match=r"padding"):
        pool_call(name, kernel_size=3, padding=value)


@pytest.mark.parametrize("name", CONV_FNS)
@pytest.mark.parametrize("stride", [2, (1, 2), (2, 1), [3, 3]], ids=repr)
def test_conv_same_requires_stride_1(name, stride):
    with pytest.raises(ValueError, match=r"same.*stride"):
        conv_call(name, padding="same", stride=stride)


@pytest.mark.parametrize("name", POOL_FNS)
@pytest.mark.parametrize("kernel_size, padding", [(3, 2), (2, 2), ((4, 2), (2, 2)),
                                                  ((2, 4), (2, 1)), (1, 1)],
                         ids=repr)
def test_pool_padding_more_than_half_kernel(name, kernel_size, padding):
    with pytest.raises(ValueError, match=r"padding.*kernel_size"):
        pool_call(name, kernel_size=kernel_size, padding=padding)


@pytest.mark.parametrize("name", POOL_FNS)
def test_pool_padding_exactly_half_kernel_is_fine(name):
    assert pool_call(name, kernel_size=(4, 3), stride=1, padding=(2, 1)) is not None


# ---------------------------------------------------------------------------
# 4. Kernel larger than the padded input
# ---------------------------------------------------------------------------

def test_conv2d_kernel_larger_than_input():
    w = np.ones((4, 3, 9, 9))
    with pytest.raises(ValueError, match=r"9x9.*weight \(4, 3, 9, 9\).*8x8.*x \(2, 3, 8, 8\)"):
        fc.conv2d(X, w)
    # padding makes it fit
    assert fc.conv2d(X, w, padding=1).shape == (2, 4, 2, 2)


def test_conv2d_dilated_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"9x9.*weight \(4, 3, 3, 3\).*8x8.*\(2, 3, 8, 8\)"):
        fc.conv2d(X, W, dilation=4)
    with pytest.raises(ValueError, match=r"3x9.*8x8"):
        fc.conv2d(X, W, dilation=(1, 4))


def test_grad_input_kernel_larger_than_input_shape():
    with pytest.raises(ValueError, match=r"3x3.*2x2.*input_shape \(2, 3, 2, 2\)"):
        fc.conv2d_grad_input(GO, W, (2, 3, 2, 2))


def test_grad_weight_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"9x9.*weight_shape \(4, 3, 9, 9\).*\(2, 3, 8, 8\)"):
        fc.conv2d_grad_weight(X, GO, (4, 3, 9, 9))


@pytest.mark.parametrize("name", CONV_FNS)
def test_conv_empty_kernel(name):
    w = np.ones((4, 3, 0, 3))
    with pytest.raises(ValueError, match=r"weight.*\(4, 3, 0, 3\)"):
        conv_call(name, weight=w, grad_out=GO)


@pytest.mark.parametrize("name", POOL_FNS)
@pytest.mark.parametrize("kernel_size, padding, pattern", [
    (9, 0, r"kernel_size \(9, 9\).*8x8.*\(2, 3, 8, 8\)"),
    ((2, 9), 0, r"kernel_size \(2, 9\).*\(2, 3, 8, 8\)"),
    (12, 1, r"kernel_size \(12, 12\).*10x10.*\(2, 3, 8, 8\)"),
], ids=["9", "2x9", "12-pad1"])
def test_pool_kernel_larger_than_input(name, kernel_size, padding, pattern):
    with pytest.raises(ValueError, match=pattern):
        pool_call(name, kernel_size=kernel_size, padding=padding)


# ---------------------------------------------------------------------------
# 5. Bias
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3,), (5,), (4, 1), (1, 4), (), (0,)], ids=repr)
def test_bias_wrong_shape(shape):
    bias = np.ones(shape)
    shape_re = re_shape(shape)
    with pytest.raises(ValueError, match=rf"bias.*\(4,\).*{shape_re}"):
        fc.conv2d(X, W, bias=bias)


def re_shape(shape):
    """Regex for ``repr(tuple(shape))``."""
    return re.escape(repr(tuple(shape)))


@pytest.mark.parametrize("bias", [[1, 2, 3, 4], (0.5,) * 4, np.arange(4, dtype=np.int32)],
                         ids=["list", "tuple", "int32"])
def test_bias_array_likes_accepted(bias):
    expected = fc.conv2d(X, W) + np.asarray(bias, dtype=np.float64)[:, None, None]
    np.testing.assert_allclose(fc.conv2d(X, W, bias=bias), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# 6. input_shape / weight_shape that disagree with the tensors
# ---------------------------------------------------------------------------

SHAPE_ARG_CASES = [
    # conv2d_grad_input: grad_out must be the output of input_shape
    ("gi-N", lambda s: fc.conv2d_grad_input(GO, W, s), (3, 3, 8, 8), ValueError,
     r"grad_out.*\(2, 4, 6, 6\).*input_shape \(3, 3, 8, 8\).*\(3, 4, 6, 6\)"),
    ("gi-C", lambda s: fc.conv2d_grad_input(GO, W, s), (2, 6, 8, 8), ValueError,
     r"input_shape \(2, 6, 8, 8\)"),
    ("gi-HW", lambda s: fc.conv2d_grad_input(GO, W, s), (2, 3, 9, 9), ValueError,
     r"grad_out.*\(2, 4, 6, 6\).*input_shape \(2, 3, 9, 9\).*\(2, 4, 7, 7\)"),
    ("gi-W-only", lambda s: fc.conv2d_grad_input(GO, W, s), (2, 3, 8, 10), ValueError,
     r"grad_out.*\(2, 4, 6, 6\).*\(2, 4, 6, 8\)"),
    # conv2d_grad_weight: grad_out must be the output of x with weight_shape
    ("gw-Cout", lambda s: fc.conv2d_grad_weight(X, GO, s), (5, 3, 3, 3), ValueError,
     r"grad_out.*\(2, 4, 6, 6\).*weight_shape \(5, 3, 3, 3\).*\(2, 5, 6, 6\)"),
    ("gw-Cin", lambda s: fc.conv2d_grad_weight(X, GO, s), (4, 1, 3, 3), ValueError,
     r"weight_shape \(4, 1, 3, 3\).*x \(2, 3, 8, 8\)"),
    ("gw-k", lambda s: fc.conv2d_grad_weight(X, GO, s), (4, 3, 5, 5), ValueError,
     r"grad_out.*\(2, 4, 6, 6\).*weight_shape \(4, 3, 5, 5\).*\(2, 4, 4, 4\)"),
    ("gw-k0", lambda s: fc.conv2d_grad_weight(X, GO, s), (4, 3, 3, 0), ValueError,
     r"weight_shape \(4, 3, 3, 0\)"),
    # max_pool2d_grad: N and C must agree
    ("mpg-N", lambda s: fc.max_pool2d_grad(PGO, IDX, s), (1, 3, 8, 8), ValueError,
     r"input_shape \(1, 3, 8, 8\).*grad_out \(2, 3, 4, 4\)"),
    ("mpg-C", lambda s: fc.max_pool2d_grad(PGO, IDX, s), (2, 4, 8, 8), ValueError,
     r"input_shape \(2, 4, 8, 8\).*grad_out \(2, 3, 4, 4\)"),
    # avg_pool2d_grad: grad_out must be the output of input_shape
    ("apg-N", lambda s: fc.avg_pool2d_grad(PGO, s, 2), (3, 3, 8, 8), ValueError,
     r"grad_out.*\(2, 3, 4, 4\).*input_shape \(3, 3, 8, 8\).*\(3, 3, 4, 4\)"),
    ("apg-C", lambda s: fc.avg_pool2d_grad(PGO, s, 2), (2, 1, 8, 8), ValueError,
     r"grad_out.*\(2, 3, 4, 4\).*input_shape \(2, 1, 8, 8\)"),
    ("apg-HW", lambda s: fc.avg_pool2d_grad(PGO, s, 2), (2, 3, 10, 8), ValueError,
     r"grad_out.*\(2, 3, 4, 4\).*\(2, 3, 5, 4\)"),
]


@pytest.mark.parametrize("call, shape, exc, pattern", [c[1:] for c in SHAPE_ARG_CASES],
                         ids=[c[0] for c in SHAPE_ARG_CASES])
def test_shape_argument_disagrees(call, shape, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(shape)


SHAPE_ARG_CALLS = {
    "conv2d_grad_input": ("input_shape", lambda s: fc.conv2d_grad_input(GO, W, s)),
    "conv2d_grad_weight": ("weight_shape", lambda s: fc.conv2d_grad_weight(X, GO, s)),
    "max_pool2d_grad": ("input_shape", lambda s: fc.max_pool2d_grad(PGO, IDX, s)),
    "avg_pool2d_grad": ("input_shape", lambda s: fc.avg_pool2d_grad(PGO, s, 2)),
}
GOOD_SHAPE = {"conv2d_grad_input": X_SHAPE, "conv2d_grad_weight": W_SHAPE,
              "max_pool2d_grad": X_SHAPE, "avg_pool2d_grad": X_SHAPE}


@pytest.mark.parametrize("fn", list(SHAPE_ARG_CALLS))
@pytest.mark.parametrize("mutate, exc", [
    (lambda s: s[:3], ValueError),                           # length 3
    (lambda s: s + (1,), ValueError),                        # length 5
    (lambda s: (), ValueError),                              # empty
    (lambda s: (s[0], s[1], -s[2], s[3]), ValueError),       # negative entry
    (lambda s: (-1,) + s[1:], ValueError),                   # negative N
    (lambda s: (s[0], s[1], float(s[2]), s[3]), TypeError),  # float entry
    (lambda s: (s[0], s[1], np.float64(s[2]), s[3]), TypeError),
    (lambda s: (s[0], s[1], str(s[2]), s[3]), TypeError),    # string entry
    (lambda s: (s[0], s[1], None, s[3]), TypeError),         # None entry
    (lambda s: (s[0], s[1], (s[2],), s[3]), TypeError),      # nested
    (lambda s: (s[0], s[1], True, s[3]), TypeError),         # bool entry
    (lambda s: "".join(map(str, s)), TypeError),             # a string
    (lambda s: None, TypeError),
    (lambda s: 8, TypeError),                                # a bare int
    (lambda s: 8.0, TypeError),
    (lambda s: (s[0], s[1], 2**62, s[3]), ValueError),       # too large
    (lambda s: (s[0], s[1], 2**80, s[3]), ValueError),
], ids=["len3", "len5", "empty", "neg-H", "neg-N", "float", "np.float64", "str-entry",
        "None-entry", "nested", "bool", "string", "None", "int", "float-scalar", "2**62",
        "2**80"])
def test_shape_argument_malformed(fn, mutate, exc):
    name, call = SHAPE_ARG_CALLS[fn]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call(mutate(GOOD_SHAPE[fn]))


@pytest.mark.parametrize("fn", list(SHAPE_ARG_CALLS))
@pytest.mark.parametrize("spell", [list, np.array, lambda s: tuple(np.int64(v) for v in s),
                                   lambda s: tuple(np.uint16(v) for v in s),
                                   lambda s: np.array(s, dtype=np.int32)],
                         ids=["list", "ndarray", "np.int64", "np.uint16", "int32-array"])
def test_shape_argument_spellings_accepted(fn, spell):
    _, call = SHAPE_ARG_CALLS[fn]
    good = GOOD_SHAPE[fn]
    np.testing.assert_array_equal(call(spell(good)), call(good))


@pytest.mark.parametrize("fn", list(SHAPE_ARG_CALLS))
def test_shape_argument_0d_array_names_argument(fn):
    name, call = SHAPE_ARG_CALLS[fn]
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        call(np.array(8))


# ---------------------------------------------------------------------------
# 7. Dtypes that fastconv cannot compute in
# ---------------------------------------------------------------------------

def _bad_dtype_arrays():
    cases = [
        ("complex128", lambda a: a.astype(np.complex128)),
        ("complex64", lambda a: a.astype(np.complex64)),
        ("object", lambda a: a.astype(object)),
        ("str", lambda a: a.astype(str)),
        ("bytes", lambda a: a.astype("S4")),
        ("datetime64", lambda a: a.astype(np.int64).astype("datetime64[s]")),
        ("timedelta64", lambda a: a.astype(np.int64).astype("timedelta64[s]")),
        ("structured", lambda a: np.zeros(a.shape, dtype=[("v", "f8")])),
    ]
    if np.dtype(np.longdouble).itemsize > 8:
        cases.append(("longdouble", lambda a: a.astype(np.longdouble)))
    return cases


BAD_DTYPES = _bad_dtype_arrays()

ARRAY_ARGS = [
    # (function, argument name, call taking the replacement array)
    ("conv2d", "x", lambda a: fc.conv2d(a, W)),
    ("conv2d", "weight", lambda a: fc.conv2d(X, a)),
    ("conv2d", "bias", lambda a: fc.conv2d(X, W, bias=a)),
    ("conv2d_grad_input", "grad_out", lambda a: fc.conv2d_grad_input(a, W, X_SHAPE)),
    ("conv2d_grad_input", "weight", lambda a: fc.conv2d_grad_input(GO, a, X_SHAPE)),
    ("conv2d_grad_weight", "x", lambda a: fc.conv2d_grad_weight(a, GO, W_SHAPE)),
    ("conv2d_grad_weight", "grad_out", lambda a: fc.conv2d_grad_weight(X, a, W_SHAPE)),
    ("conv2d_grad_bias", "grad_out", lambda a: fc.conv2d_grad_bias(a)),
    ("max_pool2d", "x", lambda a: fc.max_pool2d(a, 2)),
    ("max_pool2d_grad", "grad_out", lambda a: fc.max_pool2d_grad(a, IDX, X_SHAPE)),
    ("avg_pool2d", "x", lambda a: fc.avg_pool2d(a, 2)),
    ("avg_pool2d_grad", "grad_out", lambda a: fc.avg_pool2d_grad(a, X_SHAPE, 2)),
]
VALID_ARRAY = {
    ("conv2d", "x"): X, ("conv2d", "weight"): W, ("conv2d", "bias"): np.ones(4),
    ("conv2d_grad_input", "grad_out"): GO, ("conv2d_grad_input", "weight"): W,
    ("conv2d_grad_weight", "x"): X, ("conv2d_grad_weight", "grad_out"): GO,
    ("conv2d_grad_bias", "grad_out"): GO, ("max_pool2d", "x"): X,
    ("max_pool2d_grad", "grad_out"): PGO, ("avg_pool2d", "x"): X,
    ("avg_pool2d_grad", "grad_out"): PGO,
}


@pytest.mark.parametrize("fn, name, call", ARRAY_ARGS, ids=[f"{a[0]}-{a[1]}" for a in ARRAY_ARGS])
@pytest.mark.parametrize("make", [c[1] for c in BAD_DTYPES], ids=[c[0] for c in BAD_DTYPES])
def test_unsupported_dtype(fn, name, call, make):
    bad = make(VALID_ARRAY[fn, name])
    with pytest.raises(TypeError, match=rf"{fn}: {name}\b"):
        call(bad)


@pytest.mark.parametrize("fn, name, call", ARRAY_ARGS, ids=[f"{a[0]}-{a[1]}" for a in ARRAY_ARGS])
def test_non_array_garbage(fn, name, call):
    # ragged nested lists, None and arbitrary objects are not arrays of real numbers
    for junk in ([[1.0], [1.0, 2.0]], None, object(), "abc", {"a": 1}):
        if junk is None and name == "bias":
            continue                      # bias=None means "no bias"
        with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
            call(junk)


@pytest.mark.parametrize("fn, name, call", ARRAY_ARGS, ids=[f"{a[0]}-{a[1]}" for a in ARRAY_ARGS])
def test_array_likes_accepted(fn, name, call):
    good = VALID_ARRAY[fn, name]
    expected = call(good)
    for spelled in (good.tolist(), good.astype(np.float32), np.asfortranarray(good),
                    good.astype(">f8"), good.astype(np.int64) if np.all(good == good.round())
                    else good):
        got = call(spelled)
        if isinstance(expected, tuple):
            got, expected_ = got[0], expected[0]
        else:
            expected_ = expected
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected_, rtol=1e-5)


# ---------------------------------------------------------------------------
# 8. Malformed tuples and non-integer hyper-parameters
# ---------------------------------------------------------------------------

HYPER_CALLS = (
    [(fn, arg) for fn in CONV_FNS for arg in ("stride", "padding", "dilation")]
    + [(fn, arg) for fn in POOL_FNS for arg in ("kernel_size", "stride", "padding")]
)


def hyper_call(fn, arg, value):
    if fn in CONV_FNS:
        return conv_call(fn, **{arg: value})
    kw = {"kernel_size": 2}
    kw[arg] = value
    return pool_call(fn, **kw)


MALFORMED = [
    ((1, 1, 1), ValueError),
    ([1, 1, 1], ValueError),
    ((), ValueError),
    ([], ValueError),
    ((1,), ValueError),
    (((1, 1), 1), TypeError),
    ((1, (1,)), TypeError),
    ([[1, 1]], ValueError),
    (np.array([[1, 1]]), ValueError),
    ("11", TypeError),
    (("1", "1"), TypeError),
    (b"\x01\x01", TypeError),
    (1.5, TypeError),
    (1.0, TypeError),
    ((1.0, 1), TypeError),
    (np.float64(1.0), TypeError),
    (np.float32(1.0), TypeError),
    (np.array(1.0), TypeError),
    (np.array([1.0, 1.0]), TypeError),
    (float("nan"), TypeError),
    (float("inf"), TypeError),
    (True, TypeError),
    ((True, 1), TypeError),
    (np.bool_(True), TypeError),
    (1 + 0j, TypeError),
    (object(), TypeError),
    (2**62, ValueError),
    (2**63, ValueError),
    (2**64 + 1, ValueError),
    (-(2**63), ValueError),
    (np.uint64(2**64 - 1), ValueError),
]


@pytest.mark.parametrize("fn, arg", HYPER_CALLS, ids=[f"{f}-{a}" for f, a in HYPER_CALLS])
def test_malformed_hyper_parameters(fn, arg):
    for value, exc in MALFORMED:
        if arg == "padding" and fn in CONV_FNS and isinstance(value, str):
            exc = ValueError  # a string is a padding *mode* for conv; "11" is not one
        if arg == "stride" and fn in POOL_FNS and isinstance(value, (tuple, list)) and not value:
            continue          # an empty pool stride means kernel_size, as in PyTorch
        with pytest.raises(exc, match=rf"\b{arg}\b"):
            hyper_call(fn, arg, value)


@pytest.mark.parametrize("empty", [(), []], ids=["tuple", "list"])
def test_empty_pool_stride_means_kernel_size(empty):
    x = np.arange(2 * 3 * 7 * 6, dtype=np.float64).reshape(2, 3, 7, 6)
    y, idx = fc.max_pool2d(x, (3, 2), empty)
    y_ref, idx_ref = fc.max_pool2d(x, (3, 2), None)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(fc.avg_pool2d(x, 3, empty), fc.avg_pool2d(x, 3))


@pytest.mark.parametrize("fn, arg", HYPER_CALLS, ids=[f"{f}-{a}" for f, a in HYPER_CALLS])
def test_none_not_allowed(fn, arg):
    if fn in POOL_FNS and arg == "stride":
        # stride=None means "same as kernel_size"
        np.testing.assert_array_equal(_first(hyper_call(fn, arg, None)),
                                      _first(hyper_call(fn, arg, 2)))
        return
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        hyper_call(fn, arg, None)


@pytest.mark.parametrize("fn", CONV_FNS)
def test_conv_huge_hyper_parameters_refused(fn):
    # the output would need more bytes than 64-bit indexing can address
    with pytest.raises(ValueError, match=r"output|grad_out"):
        conv_call(fn, grad_out=GO, padding=2**40)
    with pytest.raises(ValueError, match=r"padding"):
        conv_call(fn, padding=2**62)
    with pytest.raises(ValueError, match=r"dilation"):
        conv_call(fn, dilation=2**62)
    with pytest.raises(ValueError, match=r"stride"):
        conv_call(fn, stride=2**100)
    with pytest.raises(ValueError, match=r"groups"):
        conv_call(fn, groups=2**62)


def test_conv2d_padding_overflow_message_names_shape():
    with pytest.raises(ValueError, match=r"conv2d: the output of shape \(2, 4, 2199023255558, "
                                         r"2199023255558\)"):
        fc.conv2d(X, W, padding=2**40)


# ---------------------------------------------------------------------------
# 9. Accepted spellings of the hyper-parameters
# ---------------------------------------------------------------------------

def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("fn, arg", HYPER_CALLS, ids=[f"{f}-{a}" for f, a in HYPER_CALLS])
def test_hyper_parameter_spellings_accepted(fn, arg):
    plain = 1 if arg == "padding" else 2
    expected = _first(hyper_call(fn, arg, plain))
    for spelled in (np.int64(plain), np.int32(plain), np.uint8(plain), np.intp(plain),
                    np.array(plain), np.array(plain, dtype=np.int16),
                    (plain, plain), [plain, plain], np.array([plain, plain]),
                    (np.int64(plain), np.int8(plain))):
        np.testing.assert_array_equal(_first(hyper_call(fn, arg, spelled)), expected,
                                      err_msg=f"{arg}={spelled!r}")


@pytest.mark.parametrize("fn, arg", HYPER_CALLS, ids=[f"{f}-{a}" for f, a in HYPER_CALLS])
def test_hyper_parameter_pairs_are_ordered(fn, arg):
    """(h, w) pairs apply to height then width, whatever their spelling."""
    a, b = (1, 0) if arg == "padding" else (2, 1)
    expected = _first(hyper_call(fn, arg, (a, b)))
    for spelled in ([a, b], np.array([a, b]), (np.int64(a), np.int64(b))):
        np.testing.assert_array_equal(_first(hyper_call(fn, arg, spelled)), expected)
    swapped = _first(hyper_call(fn, arg, (b, a)))
    assert swapped.shape != expected.shape or not np.array_equal(swapped, expected)


@pytest.mark.parametrize("fn", CONV_FNS)
@pytest.mark.parametrize("groups", [np.int64(1), np.int32(1), np.array(1), np.uint8(1),
                                    np.array(1, dtype=np.int8)], ids=repr)
def test_groups_spellings_accepted(fn, groups):
    np.testing.assert_array_equal(conv_call(fn, groups=groups), conv_call(fn, groups=1))


@pytest.mark.parametrize("fn", CONV_FNS)
def test_groups_numpy_scalar_depthwise(fn):
    x = np.arange(2 * 4 * 6 * 6, dtype=np.float64).reshape(2, 4, 6, 6) % 5
    w = np.arange(8 * 1 * 3 * 3, dtype=np.float64).reshape(8, 1, 3, 3) % 3
    expected = conv_call(fn, x=x, weight=w, groups=4)
    for groups in (np.int64(4), np.array(4), np.uint32(4)):
        np.testing.assert_array_equal(conv_call(fn, x=x, weight=w, groups=groups), expected)


# ---------------------------------------------------------------------------
# 10. ceil_mode / count_include_pad
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", POOL_FNS)
@pytest.mark.parametrize("value", ["yes", "True", 2, -1, 0.0, 1.0, None, [True], np.int64(2),
                                   np.float64(1.0)], ids=repr)
def test_ceil_mode_not_bool(name, value):
    with pytest.raises(TypeError, match=r"ceil_mode"):
        pool_call(name, kernel_size=3, ceil_mode=value)


@pytest.mark.parametrize("name", ["avg_pool2d", "avg_pool2d_grad"])
@pytest.mark.parametrize("value", ["yes", "no", 2, -1, 1.0, None, (True,), np.int8(5)], ids=repr)
def test_count_include_pad_not_bool(name, value):
    with pytest.raises(TypeError, match=r"count_include_pad"):
        pool_call(name, kernel_size=3, padding=1, count_include_pad=value)


@pytest.mark.parametrize("name", POOL_FNS)
def test_bool_flags_accepted(name):
    kw = dict(kernel_size=3, stride=2, padding=1)
    for flag, expected in [(True, True), (False, False), (1, True), (0, False),
                           (np.bool_(True), True), (np.bool_(False), False),
                           (np.int64(1), True)]:
        np.testing.assert_array_equal(_first(pool_call(name, ceil_mode=flag, **kw)),
                                      _first(pool_call(name, ceil_mode=expected, **kw)))
        if name != "max_pool2d":
            np.testing.assert_array_equal(
                pool_call(name, count_include_pad=flag, **kw),
                pool_call(name, count_include_pad=expected, **kw))


@pytest.mark.parametrize("name", POOL_FNS)
def test_bool_flags_accept_0d_arrays(name):
    kw = dict(kernel_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(_first(pool_call(name, ceil_mode=np.array(True), **kw)),
                                  _first(pool_call(name, ceil_mode=True, **kw)))
    if name != "max_pool2d":
        np.testing.assert_array_equal(pool_call(name, count_include_pad=np.array(False), **kw),
                                      pool_call(name, count_include_pad=False, **kw))


# ---------------------------------------------------------------------------
# 11. max_pool2d_grad indices
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4), (2, 3, 16), (1, 3, 4, 4), ()],
                         ids=repr)
def test_max_pool2d_grad_indices_wrong_shape(shape):
    idx = np.zeros(shape, dtype=np.int64)
    with pytest.raises(ValueError, match=rf"indices.*{re_shape(shape)}.*grad_out.*"
                                         r"\(2, 3, 4, 4\)"):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.bool_, np.complex128,
                                   object, "U3", "datetime64[s]"], ids=str)
def test_max_pool2d_grad_indices_not_integer(dtype):
    # the brief allows ValueError; the package documents TypeError for "wrong kind"
    idx = IDX.astype(dtype)
    with pytest.raises((TypeError, ValueError), match=r"indices"):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)
    with pytest.raises(TypeError, match=r"max_pool2d_grad: indices"):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)


@pytest.mark.parametrize("bad", [-1, 64, 65, 2**31, 2**40, 2**62, -(2**63), 2**63 - 1],
                         ids=repr)
@pytest.mark.parametrize("where", ["first", "last", "all"])
def test_max_pool2d_grad_indices_out_of_range(bad, where):
    idx = IDX.copy()
    if where == "first":
        idx.flat[0] = bad
    elif where == "last":
        idx.flat[-1] = bad
    else:
        idx[...] = bad
    with pytest.raises(ValueError, match=r"indices"):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)


@pytest.mark.parametrize("dtype, bad", [(np.uint64, 2**64 - 1), (np.uint64, 2**63),
                                        (np.uint64, 64), (np.int32, -1), (np.int32, 64),
                                        (np.uint32, 2**32 - 1), (np.int8, -128)], ids=repr)
def test_max_pool2d_grad_indices_out_of_range_other_dtypes(dtype, bad):
    idx = IDX.astype(dtype)
    idx.flat[5] = bad
    with pytest.raises(ValueError, match=r"indices"):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)


def test_max_pool2d_grad_index_range_is_per_plane():
    # H*W - 1 = 63 is the largest valid index; it is relative to each plane
    idx = np.full(PGO_SHAPE, 63, dtype=np.int64)
    dx = fc.max_pool2d_grad(PGO, idx, X_SHAPE)
    expected = np.zeros(X_SHAPE)
    expected[:, :, 7, 7] = 16
    np.testing.assert_array_equal(dx, expected)
    # same indices into a smaller plane are out of range
    with pytest.raises(ValueError, match=r"indices"):
        fc.max_pool2d_grad(PGO, idx, (2, 3, 8, 7))


def test_max_pool2d_grad_empty_plane():
    with pytest.raises(ValueError, match=r"indices.*input_shape \(2, 3, 0, 8\)"):
        fc.max_pool2d_grad(PGO, np.zeros(PGO_SHAPE, np.int64), (2, 3, 0, 8))


def test_max_pool2d_grad_indices_array_likes_accepted():
    expected = fc.max_pool2d_grad(PGO, IDX, X_SHAPE)
    for idx in (IDX.tolist(), IDX.astype(np.int32), IDX.astype(np.uint16),
                np.asfortranarray(IDX), IDX.astype(">i8")):
        np.testing.assert_array_equal(fc.max_pool2d_grad(PGO, idx, X_SHAPE), expected)


def test_max_pool2d_grad_still_works_after_bad_indices():
    idx = IDX.copy()
    idx[0, 0, 0, 0] = -5
    with pytest.raises(ValueError):
        fc.max_pool2d_grad(PGO, idx, X_SHAPE)
    np.testing.assert_array_equal(fc.max_pool2d_grad(PGO, IDX, X_SHAPE),
                                  fc.reference.max_pool2d_grad(PGO, IDX, X_SHAPE))


# ---------------------------------------------------------------------------
# 12. Sizes that overflow 64-bit arithmetic or cannot be allocated
# ---------------------------------------------------------------------------

def test_grad_input_huge_input_shape_refused_before_allocating():
    # zero-size tensors consistent with a (2**31, 2**31, 4, 4) input
    grad_out = np.empty((2**31, 0, 4, 4))
    weight = np.empty((0, 2**31, 1, 1))
    with pytest.raises((ValueError, MemoryError), match=r"input_shape|allocate"):
        fc.conv2d_grad_input(grad_out, weight, (2**31, 2**31, 4, 4))


def test_grad_weight_huge_weight_shape_refused_before_allocating():
    x = np.empty((0, 2**31, 4, 4))
    grad_out = np.empty((0, 2**31, 4, 4))
    with pytest.raises((ValueError, MemoryError)):
        fc.conv2d_grad_weight(x, grad_out, (2**31, 2**31, 1, 1))


def _overcommit_always():
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


# 2**20 x 2**20 float64 = 8 TiB (refused by the kernel's heuristic overcommit);
# 2**23 x 2**23 = 512 TiB, more than a 47-bit user address space.
@pytest.mark.parametrize("side", [2**20, 2**23], ids=["8TiB", "512TiB"])
@pytest.mark.parametrize("fn", ["conv2d_grad_input", "max_pool2d_grad", "avg_pool2d_grad",
                                "conv2d_grad_weight"])
def test_unallocatable_result(fn, side):
    if side == 2**20 and _overcommit_always():
        pytest.skip("vm.overcommit_memory=1: an 8 TiB calloc may succeed")
    one = np.ones((1, 1, 1, 1))
    with pytest.raises((MemoryError, ValueError)):
        if fn == "conv2d_grad_input":
            fc.conv2d_grad_input(one, one, (1, 1, side, side), stride=side)
        elif fn == "max_pool2d_grad":
            fc.max_pool2d_grad(one, np.zeros((1, 1, 1, 1), np.int64), (1, 1, side, side))
        elif fn == "avg_pool2d_grad":
            fc.avg_pool2d_grad(one, (1, 1, side, side), side)
        else:
            n = side * side
            fc.conv2d_grad_weight(np.empty((0, 1, 4, 4)), np.empty((0, n, 4, 4)), (n, 1, 1, 1))


def test_huge_but_cheap_geometry_is_computed_exactly():
    # stride and padding near 2**62 with a tiny output are valid; only the
    # middle window (rows/cols big*1 - big = 0..2) touches the input
    x = np.arange(64, dtype=np.float64).reshape(1, 1, 8, 8)
    w = np.ones((1, 1, 3, 3))
    big = 2**62 - 1
    y = fc.conv2d(x, w, stride=big, padding=big)
    assert y.shape == (1, 1, 3, 3)
    expected = np.zeros((3, 3))
    expected[1, 1] = x[0, 0, :3, :3].sum()
    np.testing.assert_array_equal(y[0, 0], expected)
    dw = fc.conv2d_grad_weight(x, np.ones((1, 1, 3, 3)), (1, 1, 3, 3), stride=big, padding=big)
    np.testing.assert_array_equal(dw[0, 0], x[0, 0, :3, :3])


def test_pool_huge_kernel_max_is_exact():
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    y, idx = fc.max_pool2d(x, 2**61, padding=2**60)
    assert y.shape == (1, 2, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], x.max(axis=(2, 3)))
    np.testing.assert_array_equal(idx[..., 0, 0], x.reshape(1, 2, 64).argmax(axis=2))


@pytest.mark.parametrize("kernel_size, padding", [(2**32, 2**31), ((2**40, 2**23), (2**39, 2**22)),
                                                  (2**61, 2**60)], ids=["2**32", "2**40x2**23",
                                                                       "2**61"])
def test_avg_pool_huge_window_area(kernel_size, padding):
    x = np.ones((1, 1, 8, 8))
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    area = float(kh) * float(kw)          # the whole window lies in the padded input
    try:
        y = fc.avg_pool2d(x, kernel_size, padding=padding)
    except ValueError:
        return                            # refusing such a window is acceptable too
    np.testing.assert_allclose(y, 64.0 / area, rtol=1e-12)
    dx = fc.avg_pool2d_grad(np.ones((1, 1, 1, 1)), (1, 1, 8, 8), kernel_size, padding=padding)
    np.testing.assert_allclose(dx, 1.0 / area, rtol=1e-12)


def test_grad_input_huge_stride_does_not_hang():
    code = textwrap.dedent("""
        import numpy as np, fastconv as fc
        dx = fc.conv2d_grad_input(np.ones((1, 1, 1, 1)), np.ones((1, 1, 3, 3)), (1, 1, 8, 8),
                                  stride=2**40)
        expected = np.zeros((1, 1, 8, 8)); expected[0, 0, :3, :3] = 1
        assert np.array_equal(dx, expected), dx
        print("ok")
    """)
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("conv2d_grad_input(stride=2**40) did not finish within 5 s")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ---------------------------------------------------------------------------
# 13. Hypothesis: random junk in the hyper-parameters
# ---------------------------------------------------------------------------

# Integers are either small (-3..10) or far too large to allocate anything
# with (>= 2**40), so that a junk call can never start a multi-GiB
# computation.  (A huge stride is not combined with a matching grad_out for
# conv2d_grad_input, see test_grad_input_huge_stride_does_not_hang.)
_ints = st.one_of(st.integers(-3, 10),
                  st.sampled_from([2**40, 2**61, 2**62, 2**63, 2**64, 10**30, -(2**63)]))
_atoms = st.one_of(
    _ints,
    _ints.map(lambda v: np.int64(v) if -(2**63) <= v < 2**63 else v),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.sampled_from(["same", "valid", "full", "SAME", "", b"same"]),
    st.sampled_from([np.float64(2.0), np.array(2), np.array([1, 2]), np.array(1.5),
                     np.array([[1, 1]]), np.bool_(False), 1 + 1j, object()]),
)
junk = st.one_of(_atoms, st.lists(_atoms, max_size=4).map(tuple),
                 st.lists(st.lists(_ints, max_size=3), max_size=3))
_OMIT = object()                                   # "leave the argument out"
# Omitted and plausible values are mixed in so that some calls get past the
# first check and exercise the later ones (and some succeed).
_plausible = st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)))
maybe = st.one_of(st.just(_OMIT), _plausible, junk)

FUZZ_SIGNATURES = {
    "conv2d": ("stride", "padding", "dilation", "groups"),
    "conv2d_grad_input": ("stride", "padding", "dilation", "groups", "input_shape"),
    "conv2d_grad_weight": ("stride", "padding", "dilation", "groups", "weight_shape"),
    "max_pool2d": ("kernel_size", "stride", "padding", "ceil_mode"),
    "max_pool2d_grad": ("input_shape",),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "avg_pool2d_grad": ("input_shape", "kernel_size", "stride", "padding", "ceil_mode",
                        "count_include_pad"),
    "conv2d_grad_bias": (),
}
_SMALL_X = np.arange(1 * 2 * 5 * 5, dtype=np.float64).reshape(1, 2, 5, 5)
_SMALL_W = np.ones((2, 2, 2, 2))
_SMALL_GO = np.ones((1, 2, 4, 4))
_SMALL_PGO = np.ones((1, 2, 2, 2))
_SMALL_IDX = np.zeros((1, 2, 2, 2), dtype=np.int64)


def _fuzz_call(fn, kw):
    if fn == "conv2d":
        return fc.conv2d(_SMALL_X, _SMALL_W, **kw)
    if fn == "conv2d_grad_input":
        kw.setdefault("input_shape", _SMALL_X.shape)
        return fc.conv2d_grad_input(_SMALL_GO, _SMALL_W, **kw)
    if fn == "conv2d_grad_weight":
        kw.setdefault("weight_shape", _SMALL_W.shape)
        return fc.conv2d_grad_weight(_SMALL_X, _SMALL_GO, **kw)
    if fn == "max_pool2d":
        kw.setdefault("kernel_size", 2)
        return fc.max_pool2d(_SMALL_X, **kw)
    if fn == "max_pool2d_grad":
        kw.setdefault("input_shape", _SMALL_X.shape)
        return fc.max_pool2d_grad(_SMALL_PGO, _SMALL_IDX, **kw)
    if fn == "avg_pool2d":
        kw.setdefault("kernel_size", 2)
        return fc.avg_pool2d(_SMALL_X, **kw)
    if fn == "avg_pool2d_grad":
        kw.setdefault("input_shape", _SMALL_X.shape)
        kw.setdefault("kernel_size", 2)
        return fc.avg_pool2d_grad(_SMALL_PGO, **kw)
    return fc.conv2d_grad_bias(_SMALL_GO)


@st.composite
def fuzz_cases(draw):
    fn = draw(st.sampled_from(sorted(FUZZ_SIGNATURES)))
    kw = {}
    for arg in FUZZ_SIGNATURES[fn]:
        value = draw(maybe)
        if value is not _OMIT:
            kw[arg] = value
    return fn, kw


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_cases())
def test_junk_hyper_parameters_never_crash(case):
    fn, kw = case
    try:
        out = _fuzz_call(fn, dict(kw))
    except (TypeError, ValueError) as exc:
        event(f"{fn}: {type(exc).__name__}")
        return
    except MemoryError:
        # only for a legitimately addressable but unallocatable size
        event(f"{fn}: MemoryError")
        return
    event(f"{fn}: ok")
    for arr in (out if isinstance(out, tuple) else (out,)):
        assert isinstance(arr, np.ndarray)
        assert arr.flags.c_contiguous


@pytest.mark.parametrize("shape", [(1, 1, 0, 4), (2, 3, 4, 0)])
def test_pool_empty_plane_is_refused(shape):
    """A window must hold one real element: empty planes are refused (as in
    PyTorch, and by the oracle), even where padding would make windows."""
    x = np.zeros(shape)
    for call in (lambda: fc.max_pool2d(x, 2, 1, 1),
                 lambda: fc.avg_pool2d(x, 2, 1, 1, count_include_pad=False),
                 lambda: fc.avg_pool2d_grad(np.zeros(shape[:2] + (1, 1)), shape, 2, 1, 1),
                 lambda: reference.max_pool2d(x, 2, 1, 1)):
        with pytest.raises(ValueError, match=r"empty"):
            call()


# ---------------------------------------------------------------------------
# The arrays the kernels write (_validation.output_array over
# _alloc.aligned_empty), and the fast paths of the shape and dtype helpers.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5), (0, 4), (), (2, 3, 4, 5), (1, 1, 1, 1), (7,)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("zero", [False, True])
def test_output_array_is_an_aligned_writeable_c_array(shape, dtype, zero):
    from fastconv._validation import output_array
    arr = output_array(shape, dtype, zero)
    assert arr.shape == shape and arr.dtype == np.dtype(dtype)
    assert arr.ctypes.data % 64 == 0
    assert arr.flags.c_contiguous and arr.flags.writeable and arr.flags.aligned
    # it is a view of a byte buffer at most 63 bytes longer, which it keeps alive
    assert arr.base.dtype == np.uint8 and 0 <= arr.base.nbytes - arr.nbytes < 64
    if zero:
        assert not arr.any()
    arr[...] = 1
    assert (arr == 1).all()


def test_output_array_numpy_integer_extents_and_refusals():
    from fastconv._alloc import aligned_empty
    arr = aligned_empty((np.int64(2), np.int32(3)), "f8")
    assert arr.shape == (2, 3)
    assert aligned_empty((2, 3), ">f8").dtype == np.dtype(">f8")
    assert aligned_empty((2,), "S3").dtype == np.dtype("S3")
    descr = np.dtype(np.float64)
    refs = sys.getrefcount(descr)
    for _ in range(200):
        with pytest.raises(ValueError, match="negative"):
            aligned_empty((2, -1), descr)
        with pytest.raises(ValueError, match="too large"):
            aligned_empty((2**40, 2**40), descr)
        with pytest.raises(ValueError, match="too large"):
            aligned_empty((0, 2**62, 2**62), descr)    # (zero elements, still refused)
        with pytest.raises(ValueError, match="too large"):
            aligned_empty((2**63,), descr)
        with pytest.raises(ValueError, match="dimensions"):
            aligned_empty((1,) * 65, descr)
        with pytest.raises(TypeError, match="integers"):
            aligned_empty((True, 2), descr)
        with pytest.raises(TypeError):
            aligned_empty((2.0, 2), descr)
        aligned_empty((2, 3), descr)
    assert sys.getrefcount(descr) == refs
    for dtype in (object, "S", "U", [("a", "f8"), ("b", object)]):
        with pytest.raises(TypeError, match="plain data"):
            aligned_empty((3,), dtype)


def test_shape4_and_dtypes_fast_paths_agree_with_the_general_ones():
    from fastconv._validation import dtypes, shape4
    assert shape4((1, 2, 3, 4), "s", "f") == (1, 2, 3, 4)
    assert shape4([1, 2, 3, 4], "s", "f") == (1, 2, 3, 4)
    assert shape4((np.int64(1), 2, 3, 4), "s", "f") == (1, 2, 3, 4)
    for bad in [(1, 2, 3, -4), (True, 2, 3, 4), (1, 2, 3, 2**62)]:
        with pytest.raises((TypeError, ValueError), match="s"):
            shape4(bad, "s", "f")
    cases = [("f4",), ("f8",), (">f8",), ("f2",), ("i8",), ("?",), ("f4", "f4"), ("f4", "f8"),
             ("f4", "i8"), (">f4", ">f4"), ("f2", "f2"), ("i4", "i4"), ("f4", "?"),
             ("f8", ">f8"), ("i1", "f4")]
    for names in cases:
        for ndim in (0, 1, 4):     # (0-d: NumPy 1.x's value-based promotion)
            arrays = [np.zeros((2,) * ndim, d) for d in names]
            result = np.result_type(*arrays)
            result = result if result.kind == "f" else np.dtype(np.float64)
            compute = np.dtype(np.float32) if result == np.float16 else result
            assert dtypes(*arrays) == (compute, result), (names, ndim)
            assert all(d.isnative for d in dtypes(*arrays)), (names, ndim)
