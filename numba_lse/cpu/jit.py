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

from .intrinsics import get_threads, set_threads

_OPTIONS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})


def kernel(function=None, *, parallel=False):
    """Compile a loop kernel; ``parallel=True`` for the ones with a ``prange``."""
    decorate = njit(parallel=parallel, **_OPTIONS)
    return decorate if function is None else decorate(function)


def inline(function):
    """Compile a scalar building block that is inlined into every kernel that calls it.

    Inlined by LLVM (``forceinline``: the ``alwaysinline`` attribute), so it is typed and
    compiled once per argument types and shared by every kernel that calls it. Numba's own
    inlining (``inline="always"``) types and lowers the function again at each call site,
    its callees with it: that was two thirds of the cold compile time (softmax_rows 39 -> 15 s
    for its first signature), for the same machine code (measured, every benchmark case).
    """
    return njit(forceinline=True, **_OPTIONS)(function)


def inline_ir(function):
    """Compile a building block that is inlined into its callers in Numba's IR (at each call
    site): the ones that take arrays (LLVM-inlined, the short-row kernels that make and pass
    views per row ran 1.2x slower), and the ones that call the threading layer, which a
    parallel kernel's cache entry sets up before it is loaded, but a function of its own not."""
    return njit(inline="always", **_OPTIONS)(function)


# Below this many elements a kernel runs on the calling thread alone: waking the pool costs
# more than the work (about 200 us with OMP_WAIT_POLICY=PASSIVE, against ~10 us for the call).
SERIAL_BELOW = 1 << 15


@inline_ir
def threads_for(size):
    """Run the parallel loops that follow on one thread if ``size`` is small; returns the
    caller's thread count, for ``restore_threads``. Set inside the kernel (thread-local, as
    ``numba.set_num_threads``), since setting it from Python costs more than a small input."""
    threads = get_threads()
    if size < SERIAL_BELOW:
        set_threads(1)
    return threads


@inline_ir
def restore_threads(threads):
    """Give the caller back the thread count ``threads_for`` returned."""
    set_threads(threads)
