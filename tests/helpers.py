"""Assertions and data makers shared by the test modules."""

import numpy as np

# Relative tolerances the kernels must meet against the float64 oracles.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype=None):
    """Compare a kernel result with an oracle result.

    The error is measured relative to the largest magnitude of the expected
    array (elementwise relative error is meaningless for sums that cancel).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    dtype = np.dtype(dtype or actual.dtype)
    if dtype in RTOL:
        assert actual.dtype == dtype, (actual.dtype, dtype)
    rtol = RTOL.get(dtype, 1e-10)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN positions differ"
    infinite = np.isinf(expected)
    assert np.array_equal(actual[infinite], expected[infinite]), "infinities differ"
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    err = float(np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]), initial=0.0))
    assert err <= rtol * scale, f"max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def numgrad(f, a, eps=1e-6):
    """Central finite-difference gradient of the scalar function ``f`` at ``a``
    (float64), one coordinate at a time."""
    a = np.array(a, dtype=np.float64)
    grad = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        fp = f(a)
        a.flat[i] = old - eps
        fm = f(a)
        a.flat[i] = old
        grad.flat[i] = (fp - fm) / (2 * eps)
    return grad
