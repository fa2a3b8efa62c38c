"""What the CPU (and the OS) can run: the probe behind ``fastconv._simd``."""

cdef extern from *:
    """
    static int fastconv_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        /* libgcc's probe also checks that the OS saves the AVX state (XCR0) */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    int fastconv_cpu_has_avx2_fma() nogil


cdef extern from *:
    """
    static int fastconv_cpu_has_avx512f(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    #else
        return 0;
    #endif
    }
    """
    int fastconv_cpu_has_avx512f() nogil


cdef extern from *:
    """
    #if defined(__clang__)
    #define FASTCONV_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTCONV_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTCONV_COMPILER "msvc " Py_STRINGIFY(_MSC_VER)
    #else
    #define FASTCONV_COMPILER "unknown"
    #endif
    """
    const char* FASTCONV_COMPILER


def compiler():
    """The C compiler (and version) the extensions were built with."""
    return FASTCONV_COMPILER.decode("ascii", "replace")


def has_avx2_fma():
    """Return True if this CPU and OS can run AVX2 and FMA instructions."""
    return bool(fastconv_cpu_has_avx2_fma())


def has_avx512f():
    """Return True if this CPU and OS can run AVX-512F instructions."""
    return bool(fastconv_cpu_has_avx512f())
