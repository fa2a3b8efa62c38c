"""A downstream extension that calls fastconv's kernels through its C API."""

import numpy as np

from fastconv.cython_api cimport (STATUS_OK, conv2d_f32, conv2d_f64, conv2d_output_size)


def conv2d(x, weight, bias=None, int stride=1, int padding=0):
    """``fastconv.conv2d`` for float32/float64 NCHW arrays, via ``cimport``."""
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    cdef Py_ssize_t n = x.shape[0], c_in = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t out_h = conv2d_output_size(h, kh, stride, padding, 1)
    cdef Py_ssize_t out_w = conv2d_output_size(w, kw, stride, padding, 1)
    if out_h < 1 or out_w < 1:
        raise ValueError("kernel larger than the padded input")
    groups = c_in // weight.shape[1]
    y = np.empty((n, c_out, out_h, out_w), dtype=x.dtype)
    cdef int status
    if x.dtype == np.float32:
        status = _conv_f32(x, weight, bias, stride, padding, groups, y)
    elif x.dtype == np.float64:
        status = _conv_f64(x, weight, bias, stride, padding, groups, y)
    else:
        raise TypeError("float32 or float64 only")
    if status != STATUS_OK:
        raise ValueError(f"fastconv C API returned status {status}")
    return y


cdef int _conv_f32(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias,
                   Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t groups,
                   float[:, :, :, ::1] y):
    cdef const float[::1] b
    cdef const float* bp = NULL
    if bias is not None:
        b = np.ascontiguousarray(bias, dtype=np.float32)
        bp = &b[0]
    with nogil:        # the entry points may be called without the GIL
        return conv2d_f32(&x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.shape[3],
                          &w[0, 0, 0, 0], w.shape[0], w.shape[2], w.shape[3], bp,
                          stride, stride, pad, pad, 1, 1, groups,
                          &y[0, 0, 0, 0], y.shape[0] * y.shape[1] * y.shape[2] * y.shape[3])


cdef int _conv_f64(const double[:, :, :, ::1] x, const double[:, :, :, ::1] w, bias,
                   Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t groups,
                   double[:, :, :, ::1] y):
    cdef const double[::1] b
    cdef const double* bp = NULL
    if bias is not None:
        b = np.ascontiguousarray(bias, dtype=np.float64)
        bp = &b[0]
    with nogil:
        return conv2d_f64(&x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.shape[3],
                          &w[0, 0, 0, 0], w.shape[0], w.shape[2], w.shape[3], bp,
                          stride, stride, pad, pad, 1, 1, groups,
                          &y[0, 0, 0, 0], y.shape[0] * y.shape[1] * y.shape[2] * y.shape[3])
