"""The one place that sets the jit options of every CPU kernel (numba-stats style).

``cache=True``: compiled once per (function, argument types) and reused across processes.
``error_model="numpy"``: division by zero gives inf/nan as NumPy does, never an exception.
``nogil=True``: several Python threads may run kernels at once.
``fastmath={"contract"}``: lets LLVM fuse a*b+c into one FMA, which only removes a rounding.
No other fast-math flag is set: ``nnan``/``ninf`` would break the special-value semantics, and
``reassoc`` would break the Cody-Waite range reduction in ``exp.py``. The one sum that may be
reassociated (to vectorise) says so itself, through ``intrinsics.add_reassoc``.
"""

import functools
import hashlib
import os
import sys

import numpy as np
from numba import njit, prange
from numba.core import caching

from .intrinsics import fetch_add, get_threads, set_threads

_OPTIONS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})


# Numba keeps a function's cache entry while the function's own file is unchanged (a hash of
# its text). But a kernel here is compiled with building blocks of other files inlined in it
# (exp.py's exp, partials.py's sums, ...; the CUDA kernels with this directory's), and a
# change to one of them alone (an upgrade, a git pull, an edit) would leave the kernel's entry
# current and its machine code stale: the old version's arithmetic, found when a benchmark
# measured 2.5x slower code that an experiment, undone, had left in the cache. So the
# functions of this directory and of ../cuda are cached under one stamp of all their modules
# instead: a change to any of them recompiles every kernel.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COMPILED_DIRECTORIES = (os.path.join(_PACKAGE, "cpu"), os.path.join(_PACKAGE, "cuda"))


@functools.cache
def _sources_stamp():
    """A hash of the names and text of the modules of _COMPILED_DIRECTORIES (once a process);
    None where they cannot all be read (a frozen application, a zip import, an unreadable
    file), and Numba's own locators then serve, as before."""
    if getattr(sys, "frozen", False):
        return None  # Numba stamps the executable itself
    digest = hashlib.sha256()
    try:
        for directory in _COMPILED_DIRECTORIES:
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                # Modules, not an editor's lock file (Emacs's ".#log.py": a dangling link).
                if name.endswith(".py") and not name.startswith(".") and os.path.isfile(path):
                    with open(path, "rb") as source:
                        digest.update(f"{os.path.basename(directory)}/{name}".encode() + b"\0")
                        digest.update(source.read() + b"\0")
    except OSError:
        return None
    return digest.digest()


_WRITABLE_PATHS = set()  # the cache directories found writable in this process


class _StampedBySources:
    """A Numba cache locator, for the functions of _COMPILED_DIRECTORIES only, whose source
    stamp is ``_sources_stamp``; where the entries live is its base class's choice."""

    def get_source_stamp(self):
        return _sources_stamp()

    def ensure_cache_path(self):
        # Numba's makes the directory and writes a file in it, to see that it can: for each
        # of the ~130 kernels as it is defined, though they share a directory or two. The
        # file is written once per directory and process instead (~4 ms of the import);
        # the directory is still made each time, as Numba does before it saves an entry
        # (a cache removed meanwhile, say by ``git clean``, is made again).
        path = self.get_cache_path()
        if path in _WRITABLE_PATHS:
            os.makedirs(path, exist_ok=True)
        else:
            super().ensure_cache_path()
            _WRITABLE_PATHS.add(path)

    @classmethod
    def from_function(cls, py_func, py_file):
        if (os.path.dirname(os.path.abspath(py_file)) not in _COMPILED_DIRECTORIES
                or _sources_stamp() is None):
            return None
        return super().from_function(py_func, py_file)


def stamp_locators(caching_module):
    """Put a stamped version of the three file-backed locators of ``caching_module`` (Numba's,
    or numba-cuda's own) first in its list of locators, and return them. (A
    ``NUMBA_CACHE_LOCATOR_CLASSES`` setting replaces that list, and is obeyed as is: it may
    name this module's ``StampedBySources*`` classes.)"""
    def public_or_not(name):  # underscored in older versions
        return getattr(caching_module, name, None) or getattr(caching_module, "_" + name)

    locators = public_or_not("CacheImpl")._locator_classes
    stamped = [cls for cls in locators if issubclass(cls, _StampedBySources)]
    if not stamped:
        for kind in ("UserProvided", "InTree", "UserWide"):
            name = f"StampedBySources{kind}CacheLocator"
            base = public_or_not(f"{kind}CacheLocator")
            stamped.append(type(name, (_StampedBySources, base),
                                {"__module__": __name__, "__qualname__": name}))
        locators[:0] = stamped
    return stamped


globals().update((cls.__name__, cls) for cls in stamp_locators(caching))


def kernel(function=None, *, parallel=False):
    """Compile a loop kernel; ``parallel=True`` for the ones with a ``prange``.

    Where one caller passes an optional argument, the others pass it too, None included:
    Numba types a left-out argument ``omitted`` and a None ``none``, and compiles the kernel
    once for each (the test suite made ~30 such extra compiles, of seven kernels)."""
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


@inline_ir
def one_thread():
    """Whether the parallel loops that follow run on one thread (a small input, as
    ``threads_for`` decides, or a caller's ``numba.set_num_threads(1)``): a kernel may then
    take its tasks in a plain loop, since launching a parallel loop costs more than a small
    input's work (softmax of 100: 1.7 -> 0.7 us, 17 -> 7 us with the caches cold)."""
    return get_threads() == 1


# Dynamic scheduling.  Numba's prange splits a loop evenly between the threads up front (the
# omp layer's static schedule), so a call ends when its slowest thread does: one that starts
# late (a worker woken on a busy machine, or on a VM whose idle vCPU the host must reschedule)
# holds the call up, with the other thread idle.  The parallel kernels instead run one loop
# iteration per thread, and each thread takes its tasks from a shared counter as it goes.
# Each task's result depends on the task alone (never on the thread that ran it), so the
# results are the same bits as a static schedule's.  logsumexp of 1000x1e5 measured
# 1.04-1.36x faster (three A/B runs of three rounds each, interleaved with other libraries'
# calls as the benchmark does), the other cases 0.93-1.24x, most above 1.

# Tasks are taken in groups of at least this many elements: a take is an atomic add on a
# cache line the threads share (~50-100 ns), a group some microseconds of work.
TASK_ELEMENTS = 1 << 14
# A queue's counter, and its constants a cache line further (read by every thread at every
# task: kept off the line that the takes write).
_NEXT, _GROUP, _END = 0, 8, 9


@inline_ir
def task_queue(n_tasks, elements_per_task):
    """The tasks 0 .. n_tasks - 1 of a parallel loop, for its threads to take as they go,
    at least TASK_ELEMENTS elements at a time. Used as

        queue = task_queue(n_tasks, elements_per_task)
        for _ in prange(get_threads()):
            task = first_task(queue)
            while task >= 0:
                ...
                task = next_task(queue, task)
    """
    queue = np.empty(_END + 1, np.int64)
    # Stores, not np.zeros: Numba makes the fill of np.zeros a parallel loop of its own in
    # a parallel kernel, and dropped it where nothing it can see reads the array (fetch_add
    # is opaque to it): the counter then began at what a freed allocation had left there.
    queue[_NEXT] = 0
    queue[_GROUP] = max(1, TASK_ELEMENTS // max(1, elements_per_task))
    queue[_END] = n_tasks
    return queue


@inline_ir
def first_task(queue):
    """The calling thread's first task, or -1 when none is left."""
    first = fetch_add(queue, queue[_GROUP])
    return first if first < queue[_END] else -1


@inline_ir
def take_run(queue):
    """(first, end): the calling thread's next run of tasks first .. end - 1 (a group, as
    ``first_task`` takes it), or (-1, -1) when none is left (``run_tasks``)."""
    first = fetch_add(queue, queue[_GROUP])
    if first >= queue[_END]:
        return -1, -1
    return first, min(queue[_END], first + queue[_GROUP])


@inline_ir
def run_tasks(run, args, n_tasks, elements_per_task):
    """run(*args, first, end) over the tasks 0 .. n_tasks - 1 of a parallel kernel, for a
    function ``run`` that does a run of them: in one call where the loops run on one thread
    (``one_thread``: a small input, no parallel loop to launch), else in runs that each
    thread takes from a ``task_queue`` as it goes. Inlined in Numba's IR, so that its prange
    is the calling kernel's (once per kernel: inlined twice, it warns of its IR)."""
    if one_thread():
        # An int64, not a literal 0: run is then compiled once for both calls.
        run(*args, np.int64(0), n_tasks)
    else:
        queue = task_queue(n_tasks, elements_per_task)
        for _ in prange(get_threads()):
            first, end = take_run(queue)
            while first >= 0:
                run(*args, first, end)
                first, end = take_run(queue)


@inline_ir
def next_task(queue, task):
    """The task after ``task`` for the calling thread: the next of its group, or the first
    of a group taken now; -1 when none is left."""
    task += 1
    if task % queue[_GROUP] != 0 and task < queue[_END]:
        return task
    return first_task(queue)
