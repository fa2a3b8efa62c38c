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
    #if !defined(_WIN32)
    #include <unistd.h>
    #endif
    static long fastconv_l3_cache_bytes(void) {
    #if !defined(_WIN32) && defined(_SC_LEVEL3_CACHE_SIZE)
        /* glibc reads it from CPUID (a VM reports what its host lets it see) */
        long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
        return bytes > 0 ? bytes : 0;
    #else
        return 0;
    #endif
    }
    """
    long fastconv_l3_cache_bytes() nogil


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


def l3_cache_bytes():
    """Return the size of the L3 cache the OS reports, in bytes (0 if unknown).

    From ``sysconf(_SC_LEVEL3_CACHE_SIZE)`` (glibc); other C libraries
    report nothing here.
    """
    return int(fastconv_l3_cache_bytes())
