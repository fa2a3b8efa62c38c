# The one wrapper that owns BLAS.  Kernels call ``gemm`` and nothing else.
#
# Matrices are row-major (C order).  ``gemm`` computes
#     C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n]
# through the optimized BLAS that NumPy itself ships (found at import time),
# or through a portable built-in loop when no usable BLAS is found or
# ``FASTCONV_BLAS=builtin`` is set.
#
# Threading contract: kernels call ``gemm`` from inside their own OpenMP
# regions, so BLAS must run single-threaded meanwhile.  A kernel's ``def``
# entry point brackets its parallel region with ``blas_serial_enter()`` /
# ``blas_serial_exit()`` (GIL held), which pin BLAS to one thread and restore
# the caller's setting afterwards; nested or concurrent kernel calls are
# reference-counted.

from cython cimport floating

cdef enum Transpose:
    NO_TRANS = 111    # values of CBLAS_TRANSPOSE
    TRANS = 112

cdef void gemm(Transpose trans_a, Transpose trans_b,
               Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil

cdef bint own_gemm_takes(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         size_t itemsize) noexcept nogil

cdef void blas_serial_enter()
cdef void blas_serial_exit()
