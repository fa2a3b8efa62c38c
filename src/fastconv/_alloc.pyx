"""Cache-line aligned arrays for the kernels to write (``output_array``).

NumPy's own buffers are only 16-byte aligned, so a 32-byte vector store
into them straddles two cache lines every other time; for the pools' input
gradients (stores only) that cost 22-64 % in float64 (8x64x56x56, 2x2
stride 2, on the Intel machine of issue 3), and 13-23 % of the pools'
fwd+bwd.  :func:`aligned_empty` over-allocates a byte buffer
and returns an array over its first 64-byte boundary, as one NumPy call
would if it took an alignment.

Why Cython for a few lines: the same thing in Python needs the buffer's
address (``ndarray.ctypes.data`` or ``__array_interface__``) and three
array objects (slice, view, reshape).  Right after a kernel has streamed
megabytes through the caches, those Python paths run cache-cold: 9-12 us
per array against 2-3 us here (the 8x64x56x56 pools' outputs, measured
between their kernels), and the pools' forward + gradient ran 3-4 %
faster (9 alternating rounds, all eight suite cases).
"""

cimport numpy as cnp
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_INCREF, PyObject, PyTypeObject

import operator

import numpy as np

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    ctypedef struct Descr "PyArray_Descr"
    PyTypeObject PyArray_Type
    # steals the reference to descr (also on failure)
    object PyArray_NewFromDescr(PyTypeObject* subtype, Descr* descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)
    # steals the reference to obj (also on failure)
    int PyArray_SetBaseObject(cnp.ndarray arr, PyObject* obj) except -1

cdef enum:
    # alignment of every array aligned_empty returns, in bytes
    FC_ALIGNMENT = 64
    # largest rank accepted (NumPy 2's NPY_MAXDIMS; NumPy 1 allows 32)
    MAX_DIMS = 64

ALIGNMENT = FC_ALIGNMENT


def aligned_empty(shape, dtype, bint zero=False):
    """A new C-contiguous, writeable array whose data start on a 64-byte
    boundary.

    Parameters
    ----------
    shape : sequence of int
        Non-negative extents.
    dtype : dtype-like
        A fixed-size dtype that holds no Python objects.
    zero : bool, default False
        Zero-fill it; otherwise its contents are undefined.

    Returns
    -------
    ndarray
        Its ``base`` is the byte buffer that holds it (``ALIGNMENT - 1``
        bytes longer at most).

    Raises
    ------
    TypeError
        A dtype that holds Python objects or has no fixed size (``'S'``,
        ``'U'`` without a length), or an extent that is not an integer.
    ValueError
        A negative extent, more than 64 dimensions, or a size that does not
        fit in a ``Py_ssize_t``.
    """
    cdef cnp.dtype descr = np.dtype(dtype)
    cdef cnp.npy_intp dims[MAX_DIMS]
    cdef Py_ssize_t nd = len(shape)
    cdef Py_ssize_t i, extent
    cdef Py_ssize_t limit = PY_SSIZE_T_MAX - FC_ALIGNMENT
    # the bytes of the non-zero extents (checked even when another is zero)
    cdef Py_ssize_t span = descr.itemsize
    cdef bint empty = False
    if descr.hasobject or descr.itemsize == 0:
        # (an empty buffer of object pointers would be garbage; a 0-byte
        # item would silently drop what is stored)
        raise TypeError(f"aligned_empty: dtype {descr} is not a fixed-size dtype "
                        "of plain data")
    if nd > MAX_DIMS:
        raise ValueError(f"aligned_empty: {nd} dimensions, at most {MAX_DIMS}")
    for i in range(nd):
        value = shape[i]
        if type(value) is not int:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError(f"aligned_empty: extents must be integers, got shape "
                                f"{tuple(shape)}")
            value = operator.index(value)
        if value < 0:
            raise ValueError(f"aligned_empty: negative extent in shape {tuple(shape)}")
        if value > limit:
            raise ValueError(f"aligned_empty: shape {tuple(shape)} of {descr} is too large")
        extent = value
        if extent and span > limit // extent:
            raise ValueError(f"aligned_empty: shape {tuple(shape)} of {descr} is too large")
        dims[i] = extent
        if extent:
            span *= extent
        else:
            empty = True
    cdef cnp.npy_intp raw_len = (0 if empty else span) + FC_ALIGNMENT - 1
    cdef cnp.ndarray raw = (cnp.PyArray_ZEROS(1, &raw_len, cnp.NPY_UINT8, 0) if zero
                            else cnp.PyArray_EMPTY(1, &raw_len, cnp.NPY_UINT8, 0))
    cdef size_t address = <size_t>cnp.PyArray_DATA(raw)
    cdef char* data = (<char*>cnp.PyArray_DATA(raw)
                       + (FC_ALIGNMENT - address % FC_ALIGNMENT) % FC_ALIGNMENT)
    Py_INCREF(descr)
    cdef cnp.ndarray out = PyArray_NewFromDescr(&PyArray_Type, <Descr*>descr, <int>nd,
                                                dims, NULL, data, cnp.NPY_ARRAY_CARRAY, NULL)
    Py_INCREF(raw)
    PyArray_SetBaseObject(out, <PyObject*>raw)
    return out
