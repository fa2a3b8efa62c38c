"""Python-level view of the OpenMP shim (see ``_openmp.pxd``)."""


def openmp_enabled():
    """Return True if the kernels were compiled with OpenMP support."""
    return bool(FASTCONV_HAVE_OPENMP)


def openmp_max_threads():
    """Return ``omp_get_max_threads()`` (1 for a serial build).

    This honours ``OMP_NUM_THREADS`` and limits set at run time through the
    OpenMP API (which is how threadpoolctl controls OpenMP libraries).
    """
    return omp_get_max_threads()



def openmp_spec():
    """The ``_OPENMP`` date the kernels were compiled against (201511 means
    OpenMP 4.5); 0 for a serial build."""
    return FASTCONV_OPENMP_SPEC
