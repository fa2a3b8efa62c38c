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


def has_avx2_fma():
    """Return True if this CPU and OS can run AVX2 and FMA instructions."""
    return bool(fastconv_cpu_has_avx2_fma())
