"""Thread count for fastconv's kernels.

fastconv's OpenMP regions own the cores while a kernel runs (BLAS is pinned
to one thread meanwhile, see ``_blas.pxd``).  The count is, in order:

1. the value given to :func:`set_num_threads`, if any;
2. otherwise ``omp_get_max_threads()``, which honours ``OMP_NUM_THREADS``
   and limits set through the OpenMP API -- so
   ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` works too.
"""

import operator

from fastconv._openmp import openmp_enabled, openmp_max_threads

_requested = None
# an OpenMP thread count is a C int; no machine has more cores than this
MAX_THREADS = 1 << 16


def set_num_threads(n):
    """Set the number of threads fastconv's kernels use.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to go back to the default
        (``OMP_NUM_THREADS`` / ``omp_get_max_threads()``).

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` is smaller than 1.
    """
    global _requested
    if n is None:
        _requested = None
        return
    if isinstance(n, bool):
        raise TypeError(f"n must be a positive integer, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be a positive integer, got {type(n).__name__} {n!r}") from None
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"n must be between 1 and {MAX_THREADS}, got {value}")
    _requested = value


def get_num_threads():
    """Return the number of threads the next kernel call will use.

    Returns
    -------
    int
        1 for a build without OpenMP; otherwise the value set with
        :func:`set_num_threads`, or ``omp_get_max_threads()``.
    """
    if not openmp_enabled():
        return 1
    if _requested is not None:
        return _requested
    return max(1, openmp_max_threads())


# Below this much work (multiply-adds or elements touched) a kernel runs on
# one thread: waking a second one costs more than it saves, and on a busy
# machine a descheduled helper thread can stall a tiny call for a whole time
# slice.  Results do not depend on the choice (the work split is by shape).
SMALL_WORK = 1 << 17


def threads_for(work):
    """Thread count for a kernel call doing about ``work`` units of work."""
    return 1 if work < SMALL_WORK else get_num_threads()
