"""The C-level API (fastconv.cython_api), called the way a C or Cython
extension calls it: through the function pointers the module exports in
``__pyx_capi__``, here via ctypes (which also drops the GIL around each
call, as a ``nogil`` caller would).  Results must equal the Python API's,
bit for bit; bad arguments must return a status, never write or raise."""

import ctypes
import re
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _validation
from fastconv import cython_api

OK, INVALID = 0, -1

_CTYPES = {"Py_ssize_t": ctypes.c_ssize_t, "int": ctypes.c_int}


def _function(name):
    """A ctypes function for the exported C function ``name``, typed from the
    signature string Cython stores in the capsule name."""
    capsule = cython_api.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    sig = get_name(capsule).decode()
    ret, args = re.fullmatch(r"(\w+) \((.*)\)", sig).groups()
    argtypes = [ctypes.c_void_p if "*" in a else _CTYPES[a.strip()] for a in args.split(", ")]
    proto = ctypes.CFUNCTYPE(_CTYPES[ret], *argtypes)
    return proto(get_ptr(capsule, get_name(capsule)))


def _p(a):
    return None if a is None else a.ctypes.data


SUFFIX = {np.float32: "f32", np.float64: "f64"}


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def test_every_declared_function_is_exported():
    names = set(cython_api.__pyx_capi__)
    for base in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias",
                 "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad"):
        assert {f"{base}_f32", f"{base}_f64"} <= names
    assert {"conv2d_output_size", "pool2d_output_size"} <= names


def test_conv_kernels_match_the_python_api(rng, dtype):
    s = SUFFIX[dtype]
    n, c_in, h, w, c_out, kh, kw, g = 2, 4, 9, 8, 6, 3, 2, 2
    geo = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=g)
    hyper = (2, 1, 1, 2, 1, 2, g)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    y_ref = fastconv.conv2d(x, wt, b, **geo)
    y = np.full(y_ref.shape, np.nan, dtype)
    assert _function(f"conv2d_{s}")(_p(x), n, c_in, h, w, _p(wt), c_out, kh, kw, _p(b),
                                    *hyper, _p(y), y.size) == OK
    np.testing.assert_array_equal(y, y_ref)
    assert _function(f"conv2d_{s}")(_p(x), n, c_in, h, w, _p(wt), c_out, kh, kw, None,
                                    *hyper, _p(y), y.size) == OK
    np.testing.assert_array_equal(y, fastconv.conv2d(x, wt, None, **geo))

    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    dx = np.empty_like(x)
    assert _function(f"conv2d_grad_input_{s}")(_p(gy), _p(wt), n, c_in, h, w, c_out, kh, kw,
                                               *hyper, _p(dx), dx.size) == OK
    np.testing.assert_array_equal(dx, fastconv.conv2d_grad_input(gy, wt, x.shape, **geo))
    dw = np.empty_like(wt)
    assert _function(f"conv2d_grad_weight_{s}")(_p(x), _p(gy), n, c_in, h, w, c_out, kh, kw,
                                                *hyper, _p(dw), dw.size) == OK
    np.testing.assert_array_equal(dw, fastconv.conv2d_grad_weight(x, gy, wt.shape, **geo))
    db = np.empty_like(b)
    assert _function(f"conv2d_grad_bias_{s}")(_p(gy), n, c_out, *gy.shape[2:], _p(db),
                                              db.size) == OK
    np.testing.assert_array_equal(db, fastconv.conv2d_grad_bias(gy))


def test_pool_kernels_match_the_python_api(rng, dtype):
    s = SUFFIX[dtype]
    n, c, h, w = 2, 3, 9, 7
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    args = (3, 2, 2, 2, 1, 1, True)        # kh kw sh sw ph pw ceil_mode
    y_ref, i_ref = fastconv.max_pool2d(x, (3, 2), 2, 1, True)
    y, idx = np.empty_like(y_ref), np.empty_like(i_ref)
    assert _function(f"max_pool2d_{s}")(_p(x), n, c, h, w, *args, _p(y), _p(idx),
                                        y.size) == OK
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, i_ref)
    dx = np.empty_like(x)
    assert _function(f"max_pool2d_grad_{s}")(_p(y), _p(idx), n, c, *y.shape[2:], h, w,
                                             _p(dx), dx.size) == OK
    np.testing.assert_array_equal(dx, fastconv.max_pool2d_grad(y, idx, x.shape))
    for include in (True, False):
        a_ref = fastconv.avg_pool2d(x, (3, 2), 2, 1, True, include)
        a = np.empty_like(a_ref)
        assert _function(f"avg_pool2d_{s}")(_p(x), n, c, h, w, *args, include, _p(a),
                                            a.size) == OK
        np.testing.assert_array_equal(a, a_ref)
        assert _function(f"avg_pool2d_grad_{s}")(_p(a), n, c, h, w, *args, include, _p(dx),
                                                 dx.size) == OK
        np.testing.assert_array_equal(
            dx, fastconv.avg_pool2d_grad(a, x.shape, (3, 2), 2, 1, True, include))


def test_bad_arguments_return_invalid_and_write_nothing(rng):
    conv = _function("conv2d_f64")
    x = rng.standard_normal((1, 2, 5, 5))
    wt = rng.standard_normal((3, 2, 3, 3))
    y = np.full((1, 3, 3, 3), 7.0)
    hyper = (1, 1, 0, 0, 1, 1, 1)
    # output buffer of the wrong size
    assert conv(_p(x), 1, 2, 5, 5, _p(wt), 3, 3, 3, None, *hyper, _p(y), y.size - 1) == INVALID
    # NULL input, kernel larger than the input, groups not dividing C_in, zero stride
    assert conv(None, 1, 2, 5, 5, _p(wt), 3, 3, 3, None, *hyper, _p(y), y.size) == INVALID
    assert conv(_p(x), 1, 2, 2, 2, _p(wt), 3, 3, 3, None, *hyper, _p(y), y.size) == INVALID
    assert conv(_p(x), 1, 2, 5, 5, _p(wt), 3, 3, 3, None, 1, 1, 0, 0, 1, 1, 3,
                _p(y), y.size) == INVALID
    assert conv(_p(x), 1, 2, 5, 5, _p(wt), 3, 3, 3, None, 0, 1, 0, 0, 1, 1, 1,
                _p(y), y.size) == INVALID
    assert np.all(y == 7.0)
    # an out-of-range max-pool index
    grad = np.ones((1, 1, 2, 2))
    idx = np.array([0, 1, 2, 99], np.int64).reshape(1, 1, 2, 2)
    dx = np.full((1, 1, 4, 4), 7.0)
    assert _function("max_pool2d_grad_f64")(_p(grad), _p(idx), 1, 1, 2, 2, 4, 4, _p(dx),
                                            dx.size) == INVALID
    assert np.all(dx == 7.0)


def test_output_size_helpers_match_python(rng):
    conv_size = _function("conv2d_output_size")
    pool_size = _function("pool2d_output_size")
    for _ in range(2000):
        size, k, s = (int(v) for v in rng.integers(1, 12, 3))
        d, p = int(rng.integers(1, 4)), int(rng.integers(0, 6))
        want = _validation.conv_output_size(size, p, p, k, s, d)
        assert conv_size(size, k, s, p, d) == (want if want >= 1 else -1)
        p = int(rng.integers(0, k // 2 + 1))
        for ceil in (False, True):
            want = _validation.pool_output_size(size, k, s, p, ceil)
            assert pool_size(size, k, s, p, ceil) == (want if want >= 1 else -1)
    assert conv_size(5, 0, 1, 0, 1) == -1 and conv_size(5, 3, 0, 0, 1) == -1
    assert conv_size(2**62, 3, 1, 0, 1) == -1 and pool_size(5, 2, 1, 2, False) == -1


def test_callable_from_several_threads_at_once(rng):
    conv = _function("conv2d_f32")
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    wt = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    ref = fastconv.conv2d(x, wt, padding=1)
    outs = [np.empty_like(ref) for _ in range(4)]
    codes = [None] * 4

    def work(i):
        codes[i] = conv(_p(x), 4, 8, 16, 16, _p(wt), 8, 3, 3, None, 1, 1, 1, 1, 1, 1, 1,
                        _p(outs[i]), ref.size)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [OK] * 4
    for out in outs:
        np.testing.assert_array_equal(out, ref)
