"""Argument checking and normalization shared by the public API.

Every helper raises ``TypeError`` for a value of the wrong kind and
``ValueError`` for a value out of range, with a message that names the
function, the argument and the shapes involved.  Nothing here touches the
kernels: this is the "validate and normalize" half of the Python layer,
plus the allocation of the arrays the kernels write (:func:`output_array`).
"""

import operator

import numpy as np

from fastconv._alloc import aligned_empty

# Array sizes (in bytes) and hyper-parameters from this magnitude on are
# refused before any allocation: the kernels' 64-bit byte offsets of every
# array element then stay exact.  (Intermediate products of hyper-parameters
# near this bound may wrap, but the positions they index are exact.)
MAX_BYTES = 2**62


def as_array(value, name, fn):
    """``np.asarray(value)`` with a dtype fastconv can compute in.

    Floats (16/32/64-bit), integers and booleans are accepted; complex,
    object, string, datetime and extended-precision floats are refused.
    """
    if type(value) is np.ndarray:       # the common case, first (no np.asarray call)
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged nested lists, exotic objects
            raise TypeError(f"{fn}: {name} must be an array of real numbers ({exc})") from None
    dtype = arr.dtype
    kind = dtype.kind
    if kind in "iub" or (kind == "f" and dtype.itemsize <= 8):
        return arr
    if kind == "f":
        raise TypeError(f"{fn}: {name} has dtype {arr.dtype}; fastconv computes in "
                        "float32 or float64 only (convert explicitly)")
    raise TypeError(f"{fn}: {name} must hold real numbers, got dtype {arr.dtype}")


def check_ndim(arr, ndim, name, fn, layout):
    if arr.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {layout}, got shape {arr.shape}")


def dtypes(*arrays):
    """(compute dtype, result dtype) for a set of input arrays.

    NumPy's promotion rules apply to the arrays as given; a result that is
    not floating (integers and booleans only) becomes float64.  float16 is
    computed in float32 and the result cast back.
    """
    # NumPy's promotion of the arrays as given (as fastconv.reference does):
    # float32 with a bool or int8 array stays float32, float32 with int64
    # becomes float64; all-integer or all-boolean inputs give float64.
    result = arrays[0].dtype
    if not result.isnative or (len(arrays) > 1
                               and not all(a.dtype == result for a in arrays[1:])):
        result = np.result_type(*arrays)    # (the common case skipped: one native dtype)
    if result.kind != "f":
        result = _FLOAT64
    return (_FLOAT32 if result == _FLOAT16 else result), result


_FLOAT16, _FLOAT32, _FLOAT64 = (np.dtype(t) for t in (np.float16, np.float32, np.float64))


# Kernel outputs start on a cache-line boundary (why, and why in Cython:
# _alloc.pyx).
def output_array(shape, dtype, zero=False):
    """A new C-contiguous array for a kernel to write, starting on a cache line.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype-like
    zero : bool, default False
        Zero-fill it; otherwise its contents are undefined.

    Returns
    -------
    ndarray
        Writeable, C-contiguous, its data 64-byte aligned (a view of a
        slightly larger byte buffer).
    """
    return aligned_empty(shape, dtype, zero)


def contiguous(arr, dtype):
    """C-contiguous, native byte order copy (or view) of ``arr`` in ``dtype``."""
    return np.ascontiguousarray(arr, dtype=dtype)


def _scalar(value):
    """Unwrap a 0-d NumPy array into its Python scalar."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _integer(value, name, fn, what="an integer"):
    if type(value) is int and abs(value) < MAX_BYTES:
        return value    # the common case, checked first: it runs on every call
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be {what}, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be {what}, "
                        f"got {type(value).__name__} {value!r}") from None
    if abs(out) >= MAX_BYTES:
        raise ValueError(f"{fn}: {name}={out} is too large")
    return out


def _sequence(value):
    """True for the containers accepted as pairs and shapes (ordered ones)."""
    return isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim >= 1)


def int_value(value, name, fn, minimum):
    """A single integer >= ``minimum``."""
    out = _integer(value, name, fn)
    if out < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {out}")
    return out


def int_pair(value, name, fn, minimum):
    """An int or a length-2 tuple/list/array of ints, each >= ``minimum``."""
    what = "an integer or a pair of integers"
    if type(value) is int and minimum <= value < MAX_BYTES:
        return (value, value)   # the common case (see _integer)
    value = _scalar(value)
    if _sequence(value):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{fn}: {name} must be {what}, "
                             f"got {len(items)} values {tuple(items)!r}")
    else:
        items = [value, value]
    pair = tuple(_integer(v, name, fn, what) for v in items)
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return pair


def boolean(value, name, fn):
    """True/False (also NumPy bools, 0-d bool arrays and the integers 0 and 1)."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be a bool, got {value!r}")


def shape4(value, name, fn):
    """A 4-tuple of non-negative ints (an ``input_shape``/``weight_shape``)."""
    if type(value) is tuple and len(value) == 4:   # the common case (a .shape), first
        a, b, c, d = value
        if (type(a) is int and type(b) is int and type(c) is int and type(d) is int
                and 0 <= min(value) and max(value) < MAX_BYTES):
            return value
    if not _sequence(value):
        raise TypeError(f"{fn}: {name} must be a sequence of 4 integers, got {value!r}")
    items = list(value)
    if len(items) != 4:
        raise ValueError(f"{fn}: {name} must have 4 entries, got {tuple(items)!r}")
    shape = tuple(_integer(v, name, fn, "a sequence of 4 integers") for v in items)
    if min(shape) < 0:
        raise ValueError(f"{fn}: {name} must not have negative entries, got {shape}")
    return shape


def conv_padding(padding, kernel, dilation, stride, fn):
    """Normalize conv padding to ``(top, bottom, left, right)``.

    ``"valid"`` is no padding; ``"same"`` (stride 1 only, as in PyTorch)
    pads ``dilation*(k-1)`` in total per axis, the extra row/column of an
    odd total going to the bottom/right.
    """
    padding = _scalar(padding)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' requires stride 1, got stride={stride}")
            th, tw = (d * (k - 1) for d, k in zip(dilation, kernel))
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"{fn}: padding must be 'valid', 'same', an integer or a pair, "
                         f"got {padding!r}")
    ph, pw = int_pair(padding, "padding", fn, 0)
    return (ph, ph, pw, pw)


def conv_output_size(size, pad_lo, pad_hi, k, stride, dil):
    """Output extent of one spatial axis (may be <= 0 for a too-large kernel)."""
    return (size + pad_lo + pad_hi - dil * (k - 1) - 1) // stride + 1


def pool_output_size(size, k, stride, pad, ceil_mode):
    """PyTorch's pooling output size, ``ceil_mode`` rule included: the last
    window must start inside the input or its leading padding."""
    # floor division, as PyTorch's div_rtn: in ceil_mode a kernel slightly
    # larger than the padded input still yields one (clipped) window
    out = (size + 2 * pad - k + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def check_alloc(shape, dtype, what, fn):
    """Refuse arrays whose byte size overflows the kernels' index arithmetic."""
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * np.dtype(dtype).itemsize
    if nbytes >= MAX_BYTES:
        raise ValueError(f"{fn}: {what} of shape {tuple(shape)} would need {nbytes} bytes; "
                         "that is more than fastconv can address")
