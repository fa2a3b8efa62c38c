"""The BLAS wrapper: ``gemm`` for the kernels, backed by NumPy's own BLAS.

NumPy wheels vendor an optimized OpenBLAS (``scipy-openblas``, with runtime
CPU dispatch) but expose no C API for it.  At import time this module looks
the library up in the running process with :mod:`ctypes`, takes the
addresses of ``cblas_sgemm``/``cblas_dgemm`` (in whichever of the usual
symbol spellings and integer widths the library uses) and checks them on a
tiny product before trusting them.  OpenBLAS is adopted (its integer width
is read from its configuration string, and it can be pinned to one thread);
so is Intel oneMKL, by its ILP64 entry points: on request
(``FASTCONV_BLAS=mkl``, with the ``mkl`` wheel or another libmkl_rt
installed), or when NumPy itself runs on MKL and ships no OpenBLAS.  If none
is found -- or ``FASTCONV_BLAS=builtin`` is set -- a portable built-in GEMM
is used, so fastconv's only runtime dependency stays NumPy.

While a kernel runs, the BLAS's thread count is process-wide 1 (restored
afterwards): NumPy BLAS calls made meanwhile from other Python threads run
single-threaded.  (A oneMKL that fastconv loads itself runs sequentially
throughout.)
"""

import ctypes
import glob
import os
import sys

from libc.stdint cimport int32_t, int64_t, INT32_MAX

# --- function pointer types of the CBLAS entry points -----------------------

ctypedef void (*sgemm32_t)(int, int, int, int32_t, int32_t, int32_t,
                           float, const float*, int32_t, const float*, int32_t,
                           float, float*, int32_t) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int32_t, int32_t, int32_t,
                           double, const double*, int32_t, const double*, int32_t,
                           double, double*, int32_t) noexcept nogil
ctypedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t,
                           float, const float*, int64_t, const float*, int64_t,
                           float, float*, int64_t) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t,
                           double, const double*, int64_t, const double*, int64_t,
                           double, double*, int64_t) noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil

cdef enum:
    CBLAS_ROW_MAJOR = 101

cdef void* _sgemm = NULL
cdef void* _dgemm = NULL
cdef bint _int64 = False
cdef set_threads_t _set_threads = NULL
cdef get_threads_t _get_threads = NULL

cdef extern from "_gemm_avx512.h" nogil:
    int fc_gemm_avx512_cpu()
    int fc_gemm_avx512_d(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         double alpha, const double* a, Py_ssize_t lda,
                         const double* b, Py_ssize_t ldb, double beta,
                         double* c, Py_ssize_t ldc)
    int fc_gemm_avx512_s(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         float alpha, const float* a, Py_ssize_t lda,
                         const float* b, Py_ssize_t ldb, float beta,
                         float* c, Py_ssize_t ldc)

# fastconv's own GEMM (_gemm_avx512.h) for mid-sized products on AVX-512
# CPUs, in front of OpenBLAS or the built-in loop (not of oneMKL, which is
# faster still); FASTCONV_GEMM=blas turns it off
cdef bint _own_gemm = False
cdef bint _own_gemm_every_shape = False      # tests: skip _own_gemm_fits

cdef int _serial_depth = 0
cdef int _saved_threads = 1

_info = {"name": "builtin", "path": None, "int_bits": None, "thread_control": False,
         "config": None}


# --- the entry point the kernels use ----------------------------------------

cdef inline bint _fits_int32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, Py_ssize_t lda,
                             Py_ssize_t ldb, Py_ssize_t ldc) noexcept nogil:
    return (m <= INT32_MAX and n <= INT32_MAX and k <= INT32_MAX and
            lda <= INT32_MAX and ldb <= INT32_MAX and ldc <= INT32_MAX)


cdef void gemm(Transpose trans_a, Transpose trans_b,
               Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C`` (see _blas.pxd)."""
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        _scale(m, n, beta, c, ldc)
        return
    if own_gemm_takes(m, n, k, sizeof(floating)):
        if floating is float:
            if fc_gemm_avx512_s(trans_a == TRANS, trans_b == TRANS, m, n, k,
                                alpha, a, lda, b, ldb, beta, c, ldc) == 0:
                return
        else:
            if fc_gemm_avx512_d(trans_a == TRANS, trans_b == TRANS, m, n, k,
                                alpha, a, lda, b, ldb, beta, c, ldc) == 0:
                return
    if floating is float:
        if _sgemm != NULL:
            if _int64:
                (<sgemm64_t>_sgemm)(CBLAS_ROW_MAJOR, trans_a, trans_b, m, n, k,
                                    alpha, a, lda, b, ldb, beta, c, ldc)
                return
            elif _fits_int32(m, n, k, lda, ldb, ldc):
                (<sgemm32_t>_sgemm)(CBLAS_ROW_MAJOR, trans_a, trans_b,
                                    <int32_t>m, <int32_t>n, <int32_t>k,
                                    alpha, a, <int32_t>lda, b, <int32_t>ldb,
                                    beta, c, <int32_t>ldc)
                return
    else:
        if _dgemm != NULL:
            if _int64:
                (<dgemm64_t>_dgemm)(CBLAS_ROW_MAJOR, trans_a, trans_b, m, n, k,
                                    alpha, a, lda, b, ldb, beta, c, ldc)
                return
            elif _fits_int32(m, n, k, lda, ldb, ldc):
                (<dgemm32_t>_dgemm)(CBLAS_ROW_MAJOR, trans_a, trans_b,
                                    <int32_t>m, <int32_t>n, <int32_t>k,
                                    alpha, a, <int32_t>lda, b, <int32_t>ldb,
                                    beta, c, <int32_t>ldc)
                return
    _builtin_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline bint _own_gemm_fits(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                size_t itemsize) noexcept nogil:
    """Whether ``_gemm_avx512.h`` takes this product: every side >= 32 and
    m*n*k >= 2**19 multiply-adds in float64, 2**20 in float32 (which runs
    them twice as fast), where its per-call packing pays off -- the suite's
    lenet products and the float32 64x128x64 are smaller, and OpenBLAS ran
    them faster -- and C within 2 MiB (an L2): the kernel has no cache
    blocking beyond that (2048^3 ran at 54 GFLOP/s, OpenBLAS at 78)."""
    return (m >= 32 and n >= 32 and k >= 32 and m * n * <Py_ssize_t>itemsize <= (1 << 21)
            and m * n * k >= ((1 << 19) if itemsize == 8 else (1 << 20)))


cdef bint own_gemm_takes(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         size_t itemsize) noexcept nogil:
    """Whether ``gemm`` sends an ``m x n x k`` product of ``itemsize``-byte
    values to the own GEMM (which may still hand it on, without a
    workspace)."""
    return _own_gemm and (_own_gemm_every_shape or _own_gemm_fits(m, n, k, itemsize))


cdef void _scale(Py_ssize_t m, Py_ssize_t n, floating beta,
                 floating* c, Py_ssize_t ldc) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            # beta == 0 overwrites (BLAS semantics: C may hold garbage/NaN)
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]


cdef void _builtin_gemm(Transpose trans_a, Transpose trans_b,
                        Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                        floating alpha, const floating* a, Py_ssize_t lda,
                        const floating* b, Py_ssize_t ldb,
                        floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Portable fallback: correct for every transpose combination.

    The two layouts the kernels use most (NN and NT with a row-major A) get
    loops with a contiguous innermost index so the compiler vectorizes them.
    """
    cdef Py_ssize_t i, j, p
    cdef floating aip, acc
    cdef floating* crow
    _scale(m, n, beta, c, ldc)
    if trans_b == NO_TRANS:
        for i in range(m):
            crow = c + i * ldc
            for p in range(k):
                if trans_a == NO_TRANS:
                    aip = alpha * a[i * lda + p]
                else:
                    aip = alpha * a[p * lda + i]
                for j in range(n):
                    crow[j] += aip * b[p * ldb + j]
    else:
        for i in range(m):
            crow = c + i * ldc
            for j in range(n):
                acc = 0
                if trans_a == NO_TRANS:
                    for p in range(k):
                        acc += a[i * lda + p] * b[j * ldb + p]
                else:
                    for p in range(k):
                        acc += a[p * lda + i] * b[j * ldb + p]
                crow[j] += alpha * acc


# --- single-threaded BLAS while a kernel owns the cores ---------------------

cdef void blas_serial_enter():
    """Pin BLAS to one thread (call with the GIL held, pair with exit)."""
    global _serial_depth, _saved_threads
    if _set_threads == NULL or _get_threads == NULL:
        return
    if _serial_depth == 0:
        _saved_threads = _get_threads()
        if _saved_threads != 1:
            _set_threads(1)
    _serial_depth += 1


cdef void blas_serial_exit():
    """Undo ``blas_serial_enter`` once the last concurrent kernel is done."""
    global _serial_depth
    if _set_threads == NULL or _get_threads == NULL:
        return
    _serial_depth -= 1
    if _serial_depth == 0 and _saved_threads != 1:
        _set_threads(_saved_threads)


# --- finding NumPy's BLAS ----------------------------------------------------

# (prefix, suffix, 64-bit integers) of the OpenBLAS symbol spellings:
# scipy-openblas64 (NumPy >= 2 wheels), scipy-openblas32, a system
# libopenblas64_ and a plain system libopenblas.
_SPELLINGS = (
    ("scipy_", "64_", True),
    ("scipy_", "", False),
    ("", "64_", True),
    ("", "", False),
)


def _mapped_libraries(word):
    """Paths of the shared libraries mapped into this process whose file
    name contains ``word`` (Linux; empty elsewhere)."""
    found = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    fields = line.split()
                    path = fields[5] if len(fields) >= 6 else ""
                    if word in os.path.basename(path).lower() and path not in found:
                        found.append(path)
        except OSError:
            pass
    return found


def _candidate_libraries():
    """Paths of BLAS libraries NumPy ships or the process already mapped."""
    import numpy

    pkg = os.path.dirname(numpy.__file__)
    seen = []
    for folder in (os.path.join(os.path.dirname(pkg), "numpy.libs"),
                   os.path.join(pkg, ".dylibs"), pkg):
        for path in sorted(glob.glob(os.path.join(folder, "*"))):
            if "openblas" in os.path.basename(path).lower() and path not in seen:
                seen.append(path)
    # a NumPy linked against a system BLAS: look at what is mapped
    seen += [path for path in _mapped_libraries("openblas") if path not in seen]
    return seen


def _mkl_libraries():
    """Paths of Intel oneMKL's single dynamic library (libmkl_rt): one this
    process already mapped (a NumPy or SciPy built on MKL), then the one
    the ``mkl`` wheel installs in ``<prefix>/lib``, then the loader's."""
    import ctypes.util

    seen = _mapped_libraries("libmkl_rt")
    for folder in (os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")):
        for pattern in ("libmkl_rt.so*", "libmkl_rt*.dylib"):
            for path in sorted(glob.glob(os.path.join(folder, pattern))):
                if path not in seen:
                    seen.append(path)
    found = ctypes.util.find_library("mkl_rt")
    if found and found not in seen:
        seen.append(found)
    return seen


cdef bint _self_test():
    """Multiply a 2x3 by a 3x2 in both precisions; True if the BLAS is right."""
    cdef float sa[6]
    cdef float sb[6]
    cdef float sc[4]
    cdef double da[6]
    cdef double db[6]
    cdef double dc[4]
    cdef int i
    for i in range(6):
        sa[i] = i + 1
        sb[i] = 6 - i
        da[i] = i + 1
        db[i] = 6 - i
    for i in range(4):
        sc[i] = -1
        dc[i] = -1
    gemm(NO_TRANS, NO_TRANS, 2, 2, 3, <float>1, sa, 3, sb, 2, <float>0, sc, 2)
    gemm(NO_TRANS, TRANS, 2, 2, 3, <double>1, da, 3, db, 3, <double>0, dc, 2)
    # [[1,2,3],[4,5,6]] @ [[6,5],[4,3],[2,1]] and @ [[6,5,4],[3,2,1]].T
    return (sc[0] == 20 and sc[1] == 14 and sc[2] == 56 and sc[3] == 41 and
            dc[0] == 28 and dc[1] == 10 and dc[2] == 73 and dc[3] == 28)


def _address(lib, name):
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _openblas_config(lib, prefix, suffix):
    """OpenBLAS's configuration string, or None if this is not OpenBLAS."""
    try:
        get_config = getattr(lib, prefix + "openblas_get_config" + suffix)
    except AttributeError:
        return None
    get_config.restype = ctypes.c_char_p
    get_config.argtypes = []
    config = get_config()
    return config.decode("ascii", "replace") if config else None


cdef bint _try_library(str path):
    """Adopt the OpenBLAS at ``path`` if its gemm passes the self-test.

    Only OpenBLAS is used: its configuration string says whether its
    integers are 64-bit (a wrong guess would pass garbage sizes to gemm),
    and it can be pinned to one thread inside fastconv's parallel regions,
    which keeps results independent of the thread count.  Anything else
    falls back to the built-in GEMM.
    """
    global _sgemm, _dgemm, _int64, _set_threads, _get_threads
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return False
    for prefix, suffix, int64 in _SPELLINGS:
        config = _openblas_config(lib, prefix, suffix)
        if config is None or ("USE64BITINT" in config) != int64:
            continue
        s_addr = _address(lib, prefix + "cblas_sgemm" + suffix)
        d_addr = _address(lib, prefix + "cblas_dgemm" + suffix)
        set_addr = _address(lib, prefix + "openblas_set_num_threads" + suffix)
        get_addr = _address(lib, prefix + "openblas_get_num_threads" + suffix)
        if not (s_addr and d_addr and set_addr and get_addr):
            continue
        _sgemm = <void*><size_t>s_addr
        _dgemm = <void*><size_t>d_addr
        _int64 = int64
        if _self_test():
            _set_threads = <set_threads_t><size_t>set_addr
            _get_threads = <get_threads_t><size_t>get_addr
            _info.update(name=os.path.basename(path), path=path,
                         int_bits=64 if int64 else 32, thread_control=True,
                         config=config.strip())
            return True
        _sgemm = NULL
        _dgemm = NULL
    return False


cdef enum:
    MKL_THREADING_SEQUENTIAL = 1    # values of oneMKL's MKL_THREADING_LAYER


cdef bint _try_mkl(str path):
    """Adopt the oneMKL at ``path`` (``FASTCONV_BLAS=mkl``, or a NumPy
    without OpenBLAS) if its gemm passes the self-test.

    Only its ILP64 entry points (``cblas_sgemm_64``; tested with the
    ``mkl`` wheel 2026.2.1) are used: their integer width does not depend
    on the interface layer that the environment may select for the plain
    names.  When no MKL is in the process yet, the one loaded here is
    switched to its sequential threading layer (gemm then always runs on
    the calling thread, and no second OpenMP runtime is loaded next to
    fastconv's); an MKL the process already uses keeps its layer and is
    pinned to one thread inside the kernels, as OpenBLAS is.
    """
    global _sgemm, _dgemm, _int64, _set_threads, _get_threads
    mapped = bool(_mapped_libraries("libmkl_rt"))
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return False
    s_addr = _address(lib, "cblas_sgemm_64")
    d_addr = _address(lib, "cblas_dgemm_64")
    set_addr = _address(lib, "MKL_Set_Num_Threads")
    get_addr = _address(lib, "MKL_Get_Max_Threads")
    if not (s_addr and d_addr and set_addr and get_addr):
        return False
    if not mapped:
        set_layer = lib.MKL_Set_Threading_Layer
        set_layer.argtypes = [ctypes.c_int]
        set_layer.restype = ctypes.c_int
        set_layer(MKL_THREADING_SEQUENTIAL)
    _sgemm = <void*><size_t>s_addr
    _dgemm = <void*><size_t>d_addr
    _int64 = True
    if not _self_test():
        _sgemm = NULL
        _dgemm = NULL
        return False
    if mapped:
        _set_threads = <set_threads_t><size_t>set_addr
        _get_threads = <get_threads_t><size_t>get_addr
    version = ctypes.create_string_buffer(256)
    try:
        lib.MKL_Get_Version_String(version, len(version))
        config = version.value.decode("ascii", "replace").strip()
    except AttributeError:
        config = None
    _info.update(name=os.path.basename(path), path=path, int_bits=64,
                 thread_control=bool(mapped), config=config)
    return True


def _load():
    choice = os.environ.get("FASTCONV_BLAS", "").lower()
    if choice == "builtin":
        return
    if choice == "mkl":
        for path in _mkl_libraries():
            if _try_mkl(path):
                return
        import warnings
        warnings.warn("FASTCONV_BLAS=mkl: no usable oneMKL found (a libmkl_rt with the "
                      "ILP64 entry points cblas_sgemm_64/cblas_dgemm_64, as in the `mkl` "
                      "wheel: pip install mkl==2026.2.1); using NumPy's OpenBLAS",
                      RuntimeWarning, stacklevel=2)
    for path in _candidate_libraries():
        if _try_library(path):
            return
    # a NumPy built on MKL ships no OpenBLAS: use the MKL it already mapped
    for path in _mapped_libraries("libmkl_rt"):
        if _try_mkl(path):
            return


def blas_info():
    """Describe the BLAS behind ``gemm``.

    Returns
    -------
    dict
        ``name`` (library file or ``"builtin"``), ``path``, ``int_bits``
        (32 or 64, None for the built-in), ``thread_control`` (whether
        fastconv pins it to one thread inside its parallel regions) and
        ``config`` (OpenBLAS's own configuration string); ``own_gemm``
        says whether fastconv's AVX-512 GEMM takes the mid-sized products
        in front of that library.
    """
    return dict(_info, own_gemm=bool(_own_gemm))


cdef Py_ssize_t _leading_dimension(const floating[:, :] x, str name) except -1:
    """Row stride of a matrix whose rows are contiguous (rows may be padded)."""
    if x.shape[1] > 1 and x.strides[1] != sizeof(floating):
        raise ValueError(f"_gemm_serial: {name} needs contiguous rows")
    if x.shape[0] > 1 and (x.strides[0] < x.shape[1] * <Py_ssize_t>sizeof(floating)
                           or x.strides[0] % sizeof(floating)):
        raise ValueError(f"_gemm_serial: {name} needs rows one after another")
    return max(1, x.shape[1], x.strides[0] // <Py_ssize_t>sizeof(floating))


def _gemm_serial(bint trans_a, bint trans_b, const floating[:, :] a,
                 const floating[:, :] b, floating[:, :] c, double alpha, double beta):
    """For tests and bench/: ``c = alpha * op(a) @ op(b) + beta * c`` through
    ``gemm``, single-threaded as the kernels call it; each matrix may be a
    row slice of a wider one (leading dimension above its row length)."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != m or \
            (b.shape[1] if trans_b else b.shape[0]) != k or \
            (b.shape[0] if trans_b else b.shape[1]) != n:
        raise ValueError("_gemm_serial: shapes do not match")
    cdef Py_ssize_t lda = _leading_dimension(a, "a")
    cdef Py_ssize_t ldb = _leading_dimension(b, "b")
    cdef Py_ssize_t ldc = _leading_dimension(c, "c")
    if m == 0 or n == 0:
        return
    cdef const floating* pa = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
    cdef const floating* pb = &b[0, 0] if b.shape[0] and b.shape[1] else NULL
    blas_serial_enter()
    try:
        with nogil:
            gemm(TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, m, n, k,
                 <floating>alpha, pa, lda, pb, ldb, <floating>beta, &c[0, 0], ldc)
    finally:
        blas_serial_exit()


def _set_own_gemm(bint on, bint every_shape=False):
    """For tests and bench/: switch the own GEMM on (where the CPU has AVX-512F) or off,
    for the products ``_own_gemm_fits`` picks or for every shape, whatever
    ``FASTCONV_GEMM`` and the BLAS in use say; returns the previous
    ``(on, every_shape)``."""
    global _own_gemm, _own_gemm_every_shape
    previous = (bool(_own_gemm), bool(_own_gemm_every_shape))
    _own_gemm = on and bool(fc_gemm_avx512_cpu())
    _own_gemm_every_shape = every_shape
    return previous


def _init_own_gemm():
    global _own_gemm
    _own_gemm = (os.environ.get("FASTCONV_GEMM", "").strip().lower() != "blas"
                 and not (_info["name"] or "").startswith("libmkl")
                 and bool(fc_gemm_avx512_cpu()))


_load()
_init_own_gemm()
