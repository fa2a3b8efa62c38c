# The one place that knows whether fastconv was compiled with OpenMP.
#
# Kernels cimport these names instead of including <omp.h> themselves, so a
# compiler without OpenMP still builds them: prange then runs serially and the
# helpers below report a single thread.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCONV_HAVE_OPENMP 1
    #define FASTCONV_OPENMP_SPEC _OPENMP
    #else
    #define FASTCONV_HAVE_OPENMP 0
    #define FASTCONV_OPENMP_SPEC 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    #endif
    /* Cython ends a prange inside a parallel block with no barrier (its
       "omp for" is nowait): a phase whose results the next phase's other
       threads read calls this after it, in every thread. */
    static inline void fc_omp_barrier(void) {
    #ifdef _OPENMP
        #pragma omp barrier
    #endif
    }
    """
    bint FASTCONV_HAVE_OPENMP
    long FASTCONV_OPENMP_SPEC       # the _OPENMP date (201511 = OpenMP 4.5), 0 if none
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    void fc_omp_barrier() noexcept nogil
