"""fastconv's C-level API (see ``cython_api.pxd`` for the frozen signatures).

Each entry point wraps the caller's buffers as NumPy arrays (no copy), calls
the validating Python function of the same name (so shapes are checked and
the kernel is chosen exactly as for Python callers), and copies the result
into the caller's output buffer.  Errors become negative status codes.
"""

import numpy as np

from fastconv import functional as F

# Hyper-parameters beyond this are refused by the output-size helpers (the
# Python layer's own limit on sizes is 2**62 bytes).
cdef Py_ssize_t _HUGE = (<Py_ssize_t>1) << 60


cdef Py_ssize_t conv2d_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                   Py_ssize_t pad, Py_ssize_t dilation) noexcept nogil:
    if not (0 <= size < _HUGE and 1 <= kernel < _HUGE and 1 <= stride < _HUGE
            and 0 <= pad < _HUGE and 1 <= dilation < _HUGE):
        return -1
    if dilation > (_HUGE - 1) // kernel:
        return -1
    cdef Py_ssize_t span = size + 2 * pad - dilation * (kernel - 1) - 1
    if span < 0:
        return -1
    return span // stride + 1


cdef Py_ssize_t pool2d_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                   Py_ssize_t pad, bint ceil_mode) noexcept nogil:
    if not (1 <= size < _HUGE and 1 <= kernel < _HUGE and 1 <= stride < _HUGE
            and 0 <= pad <= kernel // 2):
        return -1
    cdef Py_ssize_t span = size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)
    if span < 0:
        return -1
    cdef Py_ssize_t out = span // stride + 1      # span >= 0: floor division
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out if out >= 1 else -1


# --- helpers (GIL held) ------------------------------------------------------------

cdef object _wrap(const void* data, tuple shape, object dtype, bint writable):
    """A NumPy view of a caller's C-contiguous buffer (no copy)."""
    cdef Py_ssize_t count = 1, nbytes
    for d in shape:
        if d < 0:
            raise ValueError(f"negative size in shape {shape}")
        count *= d
    dtype = np.dtype(dtype)
    if count == 0:
        return np.empty(shape, dtype)
    if data == NULL:
        raise ValueError("NULL buffer")
    nbytes = count * dtype.itemsize
    arr = np.frombuffer(<char[:nbytes]> <char*> data, dtype=dtype).reshape(shape)
    if not writable:
        arr.flags.writeable = False
    return arr


cdef object _store(object result, void* out, Py_ssize_t out_size):
    """Copy ``result`` into the caller's buffer of ``out_size`` elements."""
    if result.size != out_size:
        raise ValueError(f"output buffer holds {out_size} elements, the result "
                         f"{result.shape} needs {result.size}")
    np.copyto(_wrap(out, result.shape, result.dtype, True), result)


cdef int _status(object exc) noexcept:
    if isinstance(exc, MemoryError):
        return STATUS_NO_MEMORY
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        return STATUS_INVALID
    return STATUS_ERROR


ctypedef fused floating:
    float
    double


# --- conv2d --------------------------------------------------------------------------

cdef int _conv2d(const floating* x, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                 const floating* weight, Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                 const floating* bias,
                 Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h, Py_ssize_t pad_w,
                 Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                 floating* y, Py_ssize_t y_size) noexcept nogil:
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            if groups < 1 or c_in % groups:
                raise ValueError("groups must divide c_in")
            xa = _wrap(x, (n, c_in, h, w), dt, False)
            wa = _wrap(weight, (c_out, c_in // groups, kh, kw), dt, False)
            ba = _wrap(bias, (c_out,), dt, False) if bias != NULL else None
            _store(F.conv2d(xa, wa, ba, (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w),
                            groups), y, y_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int conv2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                    const float* weight, Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                    const float* bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    float* y, Py_ssize_t y_size) noexcept nogil:
    return _conv2d(x, n, c_in, h, w, weight, c_out, kh, kw, bias, stride_h, stride_w,
                   pad_h, pad_w, dil_h, dil_w, groups, y, y_size)


cdef int conv2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                    const double* weight, Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                    const double* bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    double* y, Py_ssize_t y_size) noexcept nogil:
    return _conv2d(x, n, c_in, h, w, weight, c_out, kh, kw, bias, stride_h, stride_w,
                   pad_h, pad_w, dil_h, dil_w, groups, y, y_size)


cdef int _conv2d_grad_input(const floating* grad_out, const floating* weight,
                            Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                            Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w,
                            Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                            floating* dx, Py_ssize_t dx_size) noexcept nogil:
    cdef Py_ssize_t out_h = conv2d_output_size(h, kh, stride_h, pad_h, dil_h)
    cdef Py_ssize_t out_w = conv2d_output_size(w, kw, stride_w, pad_w, dil_w)
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            if out_h < 1 or out_w < 1 or groups < 1 or c_in % groups:
                raise ValueError("invalid geometry")
            ga = _wrap(grad_out, (n, c_out, out_h, out_w), dt, False)
            wa = _wrap(weight, (c_out, c_in // groups, kh, kw), dt, False)
            _store(F.conv2d_grad_input(ga, wa, (n, c_in, h, w), (stride_h, stride_w),
                                       (pad_h, pad_w), (dil_h, dil_w), groups), dx, dx_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int conv2d_grad_input_f32(const float* grad_out, const float* weight,
                               Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                               Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_h, Py_ssize_t pad_w,
                               Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                               float* dx, Py_ssize_t dx_size) noexcept nogil:
    return _conv2d_grad_input(grad_out, weight, n, c_in, h, w, c_out, kh, kw, stride_h,
                              stride_w, pad_h, pad_w, dil_h, dil_w, groups, dx, dx_size)


cdef int conv2d_grad_input_f64(const double* grad_out, const double* weight,
                               Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                               Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_h, Py_ssize_t pad_w,
                               Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                               double* dx, Py_ssize_t dx_size) noexcept nogil:
    return _conv2d_grad_input(grad_out, weight, n, c_in, h, w, c_out, kh, kw, stride_h,
                              stride_w, pad_h, pad_w, dil_h, dil_w, groups, dx, dx_size)


cdef int _conv2d_grad_weight(const floating* x, const floating* grad_out,
                             Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w,
                             Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                             floating* dw, Py_ssize_t dw_size) noexcept nogil:
    cdef Py_ssize_t out_h = conv2d_output_size(h, kh, stride_h, pad_h, dil_h)
    cdef Py_ssize_t out_w = conv2d_output_size(w, kw, stride_w, pad_w, dil_w)
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            if out_h < 1 or out_w < 1 or groups < 1 or c_in % groups:
                raise ValueError("invalid geometry")
            xa = _wrap(x, (n, c_in, h, w), dt, False)
            ga = _wrap(grad_out, (n, c_out, out_h, out_w), dt, False)
            _store(F.conv2d_grad_weight(xa, ga, (c_out, c_in // groups, kh, kw),
                                        (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w),
                                        groups), dw, dw_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int conv2d_grad_weight_f32(const float* x, const float* grad_out,
                                Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                                Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w,
                                Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                                float* dw, Py_ssize_t dw_size) noexcept nogil:
    return _conv2d_grad_weight(x, grad_out, n, c_in, h, w, c_out, kh, kw, stride_h, stride_w,
                               pad_h, pad_w, dil_h, dil_w, groups, dw, dw_size)


cdef int conv2d_grad_weight_f64(const double* x, const double* grad_out,
                                Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                                Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w,
                                Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                                double* dw, Py_ssize_t dw_size) noexcept nogil:
    return _conv2d_grad_weight(x, grad_out, n, c_in, h, w, c_out, kh, kw, stride_h, stride_w,
                               pad_h, pad_w, dil_h, dil_w, groups, dw, dw_size)


cdef int _conv2d_grad_bias(const floating* grad_out, Py_ssize_t n, Py_ssize_t c_out,
                           Py_ssize_t out_h, Py_ssize_t out_w,
                           floating* db, Py_ssize_t db_size) noexcept nogil:
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            ga = _wrap(grad_out, (n, c_out, out_h, out_w), dt, False)
            _store(F.conv2d_grad_bias(ga), db, db_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int conv2d_grad_bias_f32(const float* grad_out, Py_ssize_t n, Py_ssize_t c_out,
                              Py_ssize_t out_h, Py_ssize_t out_w,
                              float* db, Py_ssize_t db_size) noexcept nogil:
    return _conv2d_grad_bias(grad_out, n, c_out, out_h, out_w, db, db_size)


cdef int conv2d_grad_bias_f64(const double* grad_out, Py_ssize_t n, Py_ssize_t c_out,
                              Py_ssize_t out_h, Py_ssize_t out_w,
                              double* db, Py_ssize_t db_size) noexcept nogil:
    return _conv2d_grad_bias(grad_out, n, c_out, out_h, out_w, db, db_size)


# --- pooling ---------------------------------------------------------------------------

cdef int _max_pool2d(const floating* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                     floating* y, int64_t* indices, Py_ssize_t y_size) noexcept nogil:
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            xa = _wrap(x, (n, c, h, w), dt, False)
            ya, ia = F.max_pool2d(xa, (kh, kw), (stride_h, stride_w), (pad_h, pad_w),
                                  bool(ceil_mode))
            if ia.size and indices == NULL:
                raise ValueError("NULL indices buffer")
            _store(ya, y, y_size)
            _store(ia, indices, y_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int max_pool2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        float* y, int64_t* indices, Py_ssize_t y_size) noexcept nogil:
    return _max_pool2d(x, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, ceil_mode,
                       y, indices, y_size)


cdef int max_pool2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        double* y, int64_t* indices, Py_ssize_t y_size) noexcept nogil:
    return _max_pool2d(x, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, ceil_mode,
                       y, indices, y_size)


cdef int _max_pool2d_grad(const floating* grad_out, const int64_t* indices,
                          Py_ssize_t n, Py_ssize_t c, Py_ssize_t out_h, Py_ssize_t out_w,
                          Py_ssize_t h, Py_ssize_t w,
                          floating* dx, Py_ssize_t dx_size) noexcept nogil:
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            ga = _wrap(grad_out, (n, c, out_h, out_w), dt, False)
            ia = _wrap(indices, (n, c, out_h, out_w), np.int64, False)
            _store(F.max_pool2d_grad(ga, ia, (n, c, h, w)), dx, dx_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int max_pool2d_grad_f32(const float* grad_out, const int64_t* indices,
                             Py_ssize_t n, Py_ssize_t c, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t h, Py_ssize_t w,
                             float* dx, Py_ssize_t dx_size) noexcept nogil:
    return _max_pool2d_grad(grad_out, indices, n, c, out_h, out_w, h, w, dx, dx_size)


cdef int max_pool2d_grad_f64(const double* grad_out, const int64_t* indices,
                             Py_ssize_t n, Py_ssize_t c, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t h, Py_ssize_t w,
                             double* dx, Py_ssize_t dx_size) noexcept nogil:
    return _max_pool2d_grad(grad_out, indices, n, c, out_h, out_w, h, w, dx, dx_size)


cdef int _avg_pool2d(const floating* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                     bint count_include_pad, floating* y, Py_ssize_t y_size) noexcept nogil:
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            xa = _wrap(x, (n, c, h, w), dt, False)
            _store(F.avg_pool2d(xa, (kh, kw), (stride_h, stride_w), (pad_h, pad_w),
                                bool(ceil_mode), bool(count_include_pad)), y, y_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int avg_pool2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        bint count_include_pad, float* y, Py_ssize_t y_size) noexcept nogil:
    return _avg_pool2d(x, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, ceil_mode,
                       count_include_pad, y, y_size)


cdef int avg_pool2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        bint count_include_pad, double* y, Py_ssize_t y_size) noexcept nogil:
    return _avg_pool2d(x, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, ceil_mode,
                       count_include_pad, y, y_size)


cdef int _avg_pool2d_grad(const floating* grad_out, Py_ssize_t n, Py_ssize_t c,
                          Py_ssize_t h, Py_ssize_t w,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                          Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                          bint count_include_pad, floating* dx, Py_ssize_t dx_size) noexcept nogil:
    cdef Py_ssize_t out_h = pool2d_output_size(h, kh, stride_h, pad_h, ceil_mode)
    cdef Py_ssize_t out_w = pool2d_output_size(w, kw, stride_w, pad_w, ceil_mode)
    with gil:
        try:
            dt = np.float32 if floating is float else np.float64
            if out_h < 1 or out_w < 1:
                raise ValueError("invalid geometry")
            ga = _wrap(grad_out, (n, c, out_h, out_w), dt, False)
            _store(F.avg_pool2d_grad(ga, (n, c, h, w), (kh, kw), (stride_h, stride_w),
                                     (pad_h, pad_w), bool(ceil_mode), bool(count_include_pad)),
                   dx, dx_size)
        except BaseException as exc:
            return _status(exc)
    return STATUS_OK


cdef int avg_pool2d_grad_f32(const float* grad_out, Py_ssize_t n, Py_ssize_t c,
                             Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                             bint count_include_pad, float* dx, Py_ssize_t dx_size) noexcept nogil:
    return _avg_pool2d_grad(grad_out, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w,
                            ceil_mode, count_include_pad, dx, dx_size)


cdef int avg_pool2d_grad_f64(const double* grad_out, Py_ssize_t n, Py_ssize_t c,
                             Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                             bint count_include_pad, double* dx, Py_ssize_t dx_size) noexcept nogil:
    return _avg_pool2d_grad(grad_out, n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w,
                            ceil_mode, count_include_pad, dx, dx_size)
