"""The one place that sets the jit options of every CPU kernel (numba-stats style).

``cache=True``: compiled once per (function, argument types) and reused across processes.
``error_model="numpy"``: division by zero gives inf/nan as NumPy does, never an exception.
``nogil=True``: several Python threads may run kernels at once.
``fastmath={"contract"}``: lets LLVM fuse a*b+c into one FMA, which only removes a rounding.
No other fast-math flag is set: ``nnan``/``ninf`` would break the special-value semantics, and
``reassoc`` would break the Cody-Waite range reduction in ``exp.py``. The one sum that may be
reassociated (to vectorise) says so itself, through ``intrinsics.add_reassoc``.
"""

from numba import njit

_OPTIONS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})


def kernel(function=None, *, parallel=False):
    """Compile a loop kernel; ``parallel=True`` for the ones with a ``prange``."""
    decorate = njit(parallel=parallel, **_OPTIONS)
    return decorate if function is None else decorate(function)


def inline(function):
    """Compile a scalar building block that is inlined into every kernel that calls it."""
    return njit(inline="always", **_OPTIONS)(function)
