"""The textbook's single-channel 2-D correlation and convolution, as
``scipy.signal.correlate2d`` / ``convolve2d`` compute them with zero fill.

Both run on fastconv's conv2d kernels (one image, one channel): correlation
is conv2d itself, convolution is conv2d with the kernel rotated by 180°.
"""

import numpy as np

from fastconv import functional as F
from fastconv._validation import as_array, dtypes

__all__ = ["correlate2d", "convolve2d"]

_MODES = ("full", "valid", "same")


def _prepare(in1, in2, mode, fn):
    if mode not in _MODES:
        raise ValueError(f"{fn}: mode must be 'full', 'valid' or 'same', got {mode!r}")
    a = as_array(in1, "in1", fn)
    b = as_array(in2, "in2", fn)
    for name, arr in (("in1", a), ("in2", b)):
        if arr.ndim != 2:
            raise ValueError(f"{fn}: {name} must be 2-D, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{fn}: {name} of shape {arr.shape} is empty")
    swap = False
    if mode == "valid":
        a_ge = a.shape[0] >= b.shape[0] and a.shape[1] >= b.shape[1]
        b_ge = b.shape[0] >= a.shape[0] and b.shape[1] >= a.shape[1]
        if not (a_ge or b_ge):
            raise ValueError(f"{fn}: in 'valid' mode one input must be at least as large as "
                             f"the other in every dimension, got in1 {a.shape} and in2 "
                             f"{b.shape}")
        swap = not a_ge      # SciPy's rule: in2 is the larger one, so they trade places
    _, result = dtypes(a, b)
    return a, b, swap, result


def _correlate(a, b, padding):
    """Plain 2-D cross-correlation of ``a`` with the kernel ``b`` via conv2d."""
    return F.conv2d(a[None, None], b[None, None], padding=padding)[0, 0]


def correlate2d(in1, in2, mode="full"):
    """Cross-correlate two 2-D arrays, as ``scipy.signal.correlate2d(in1, in2,
    mode)`` with ``boundary='fill', fillvalue=0``.

    ``out[i, j] = sum_{k,l} in1[i + k - p, j + l - q] * in2[k, l]`` with zero
    fill outside ``in1``; the offsets ``p, q`` depend on the mode.

    Parameters
    ----------
    in1, in2 : array_like, 2-D
        Real numbers (float32/float64 computed as given, integers and booleans
        in float64).
    mode : {'full', 'valid', 'same'}, default 'full'
        ``'full'``: every overlap, shape ``in1.shape + in2.shape - 1``.
        ``'valid'``: only windows inside ``in1``, shape ``in1.shape - in2.shape
        + 1``; if ``in2`` is the larger array in every dimension the inputs
        trade places and the result is reversed in both axes (SciPy's rule).
        ``'same'``: shape of ``in1``, centred on the ``'full'`` output.

    Returns
    -------
    out : ndarray, 2-D
    """
    a, b, swap, result = _prepare(in1, in2, mode, "correlate2d")
    if mode == "full":
        out = _correlate(a, b, (b.shape[0] - 1, b.shape[1] - 1))
    elif mode == "same":
        out = _correlate(a, b, "same")  # PyTorch's 'same': the extra pad goes after
    elif swap:
        out = _correlate(b, a, 0)[::-1, ::-1]
    else:
        out = _correlate(a, b, 0)
    return np.ascontiguousarray(out, dtype=result)


def convolve2d(in1, in2, mode="full"):
    """Convolve two 2-D arrays, as ``scipy.signal.convolve2d(in1, in2, mode)``
    with ``boundary='fill', fillvalue=0``.

    ``out[i, j] = sum_{k,l} in1[i - k + p, j - l + q] * in2[k, l]``: the
    correlation with ``in2`` rotated by 180°.  The ``'full'`` convolution is
    commutative.

    Parameters
    ----------
    in1, in2 : array_like, 2-D
    mode : {'full', 'valid', 'same'}, default 'full'
        As in :func:`correlate2d`; in ``'valid'`` mode with ``in2`` the larger
        array in every dimension the inputs trade places (the convolution is
        commutative, so nothing is reversed), and ``'same'`` centres as SciPy
        does, which for even kernel sizes differs by one from
        :func:`correlate2d`'s centring.

    Returns
    -------
    out : ndarray, 2-D
    """
    a, b, swap, result = _prepare(in1, in2, mode, "convolve2d")
    if swap:
        a, b = b, a
    rot = b[::-1, ::-1]
    if mode == "valid":
        out = _correlate(a, rot, 0)
    else:
        out = _correlate(a, rot, (b.shape[0] - 1, b.shape[1] - 1))
        if mode == "same":
            top, left = (b.shape[0] - 1) // 2, (b.shape[1] - 1) // 2
            out = out[top:top + a.shape[0], left:left + a.shape[1]]
    return np.ascontiguousarray(out, dtype=result)
