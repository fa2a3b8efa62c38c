# fastconv's C-level API, for other Cython extensions:
#
#     from fastconv.cython_api cimport conv2d_f32, STATUS_OK
#
# in the style of scipy.linalg.cython_blas.  These signatures are FROZEN:
# they may gain siblings, never change.  All arrays are C-contiguous NCHW
# buffers (weights (C_out, C_in/groups, kh, kw)) with the semantics of the
# Python functions of the same names (fastconv.conv2d, ...), which they call:
# results are identical, bit for bit.  Padding is symmetric (pad_h rows top
# and bottom, pad_w columns left and right).
#
# Every function may be called without the GIL.  It takes the GIL briefly to
# validate and plan (as the Python API does), and the kernels release it
# while they compute on fastconv.get_num_threads() threads.  Each output
# buffer comes with its element count; a count that does not match the
# geometry is refused before anything is written.  Functions return
# STATUS_OK (0) or a negative status, never raise.

from libc.stdint cimport int64_t

cdef enum:
    STATUS_OK = 0
    STATUS_INVALID = -1      # bad shapes / hyper-parameters / buffer sizes / NULL
    STATUS_NO_MEMORY = -2    # an allocation failed
    STATUS_ERROR = -3        # anything else (a bug: please report it)

# Output size of one axis: conv (PyTorch's formula) and pooling (with
# ceil_mode as PyTorch defines it); -1 if the arguments are invalid.
cdef Py_ssize_t conv2d_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                   Py_ssize_t pad, Py_ssize_t dilation) noexcept nogil
cdef Py_ssize_t pool2d_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                   Py_ssize_t pad, bint ceil_mode) noexcept nogil

# y (N, C_out, Ho, Wo) = conv2d(x (N, C_in, H, W), weight, bias); bias may be NULL.
cdef int conv2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                    const float* weight, Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                    const float* bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    float* y, Py_ssize_t y_size) noexcept nogil
cdef int conv2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                    const double* weight, Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                    const double* bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    double* y, Py_ssize_t y_size) noexcept nogil

# dx (N, C_in, H, W) from grad_out (N, C_out, Ho, Wo) and weight.
cdef int conv2d_grad_input_f32(const float* grad_out, const float* weight,
                               Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                               Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_h, Py_ssize_t pad_w,
                               Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                               float* dx, Py_ssize_t dx_size) noexcept nogil
cdef int conv2d_grad_input_f64(const double* grad_out, const double* weight,
                               Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                               Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_h, Py_ssize_t pad_w,
                               Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                               double* dx, Py_ssize_t dx_size) noexcept nogil

# dw (C_out, C_in/groups, kh, kw) from x (N, C_in, H, W) and grad_out.
cdef int conv2d_grad_weight_f32(const float* x, const float* grad_out,
                                Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                                Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w,
                                Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                                float* dw, Py_ssize_t dw_size) noexcept nogil
cdef int conv2d_grad_weight_f64(const double* x, const double* grad_out,
                                Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                                Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w,
                                Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                                double* dw, Py_ssize_t dw_size) noexcept nogil

# db (C_out,) from grad_out (N, C_out, Ho, Wo).
cdef int conv2d_grad_bias_f32(const float* grad_out, Py_ssize_t n, Py_ssize_t c_out,
                              Py_ssize_t out_h, Py_ssize_t out_w,
                              float* db, Py_ssize_t db_size) noexcept nogil
cdef int conv2d_grad_bias_f64(const double* grad_out, Py_ssize_t n, Py_ssize_t c_out,
                              Py_ssize_t out_h, Py_ssize_t out_w,
                              double* db, Py_ssize_t db_size) noexcept nogil

# y and int64 indices (N, C, Ho, Wo) = max_pool2d(x (N, C, H, W)).
cdef int max_pool2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        float* y, int64_t* indices, Py_ssize_t y_size) noexcept nogil
cdef int max_pool2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        double* y, int64_t* indices, Py_ssize_t y_size) noexcept nogil

# dx (N, C, H, W) from grad_out and indices (N, C, Ho, Wo).
cdef int max_pool2d_grad_f32(const float* grad_out, const int64_t* indices,
                             Py_ssize_t n, Py_ssize_t c, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t h, Py_ssize_t w,
                             float* dx, Py_ssize_t dx_size) noexcept nogil
cdef int max_pool2d_grad_f64(const double* grad_out, const int64_t* indices,
                             Py_ssize_t n, Py_ssize_t c, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t h, Py_ssize_t w,
                             double* dx, Py_ssize_t dx_size) noexcept nogil

# y (N, C, Ho, Wo) = avg_pool2d(x (N, C, H, W)).
cdef int avg_pool2d_f32(const float* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        bint count_include_pad, float* y, Py_ssize_t y_size) noexcept nogil
cdef int avg_pool2d_f64(const double* x, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                        bint count_include_pad, double* y, Py_ssize_t y_size) noexcept nogil

# dx (N, C, H, W) from grad_out (N, C, Ho, Wo).
cdef int avg_pool2d_grad_f32(const float* grad_out, Py_ssize_t n, Py_ssize_t c,
                             Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                             bint count_include_pad, float* dx, Py_ssize_t dx_size) noexcept nogil
cdef int avg_pool2d_grad_f64(const double* grad_out, Py_ssize_t n, Py_ssize_t c,
                             Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w, bint ceil_mode,
                             bint count_include_pad, double* dx, Py_ssize_t dx_size) noexcept nogil
