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
import importlib
import os
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import caching, cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target
from numba.extending import intrinsic
from numba.np.ufunc.parallel import _launch_threads

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


class Deferred:
    """A function of this package compiled by Numba, whose dispatcher is made at its first use.

    Making a Numba dispatcher costs about half a millisecond (the function's signature, its
    cache's locators); this package has ~150, and a call of one op uses a few of them, since
    a kernel loaded from the on-disk cache needs no dispatcher of the functions compiled into
    it. Made as the modules were imported, they were two thirds of ``import numba_lse``
    (60-90 ms). Each is made instead when first needed: a call from Python, Numba typing
    a function that calls it (``_numba_type_``), or any other attribute of a dispatcher
    (``signatures``, ``stats``, ...), all forwarded to it. ``py_func`` needs none.

    Once made, the dispatcher takes this object's place in the package's modules
    (``_put_in_place``), so that Python calls it directly: a call through this object costs
    ~0.3 us more (a small cross_entropy 0.91x). Made under Numba's compiler lock
    (reentrant: a compile in progress may need one), so two threads never make two.
    """

    def __init__(self, function, options):
        functools.update_wrapper(self, function)
        self.py_func = function
        self._options = options
        self._dispatcher = None

    @property
    def dispatcher(self):
        """The Numba dispatcher, made at the first use."""
        if self._dispatcher is None:
            # A dispatcher needs Numba's CPU context, whose lazy set-up takes the compiler
            # lock under the context's own lock: set up first, not under the compiler lock
            # (a thread decorating its first @njit function meanwhile would wait on the one
            # lock while holding the other).
            cpu_target.target_context
            with global_compiler_lock:
                self._make()
                _put_in_place()
        return self._dispatcher

    def _make(self):
        if self._dispatcher is None:
            self._dispatcher = njit(**self._options)(self.py_func)

    def __call__(self, *args, **kwargs):
        return self.dispatcher(*args, **kwargs)

    def __getattr__(self, name):  # only names this object lacks: the dispatcher's
        if name.startswith("__") or name in ("_dispatcher", "_options", "py_func"):
            raise AttributeError(name)  # Python's protocols, and one half made (copy, pickle)
        return getattr(self.dispatcher, name)

    def __reduce__(self):  # by reference, as a function (or a dispatcher, once made)
        return _global_named, (self.__module__, self.__qualname__)

    def __repr__(self):
        return f"<numba_lse kernel {self.__module__}.{self.__qualname__}>"


def _global_named(module, name):
    return getattr(importlib.import_module(module), name)


def _namespaces():
    """The globals of the package's modules imported so far."""
    package = __name__.partition(".")[0]
    return [vars(module) for name, module in list(sys.modules.items())
            if module is not None and name.partition(".")[0] == package]


def _put_in_place():
    """Put each made dispatcher in place of its ``Deferred`` in the package's modules."""
    for namespace in _namespaces():
        for key, value in list(namespace.items()):
            if isinstance(value, Deferred) and value._dispatcher is not None:
                namespace[key] = value._dispatcher


def make_dispatchers():
    """Make the dispatcher of every function of this package now, in place of its
    ``Deferred``. For the CUDA backend: numba-cuda compiles a CPU function that a CUDA
    kernel calls (and those it calls) as a device function only if it finds a Numba
    ``Dispatcher`` there (``CUDATypingContext.resolve_value_type``)."""
    with global_compiler_lock:
        for namespace in _namespaces():
            for value in list(namespace.values()):
                if isinstance(value, Deferred):
                    value._make()
        _put_in_place()


def kernel(function):
    """Compile a loop kernel. None is parallel in Numba's sense (no ``prange``): the ones
    that run on the threads start them through ``run_tasks``.

    Where one caller passes an optional argument, the others pass it too, None included:
    Numba types a left-out argument ``omitted`` and a None ``none``, and compiles the kernel
    once for each (the test suite made ~30 such extra compiles, of seven kernels)."""
    return Deferred(function, _OPTIONS)


def inline(function):
    """Compile a scalar building block that is inlined into every kernel that calls it.

    Inlined by LLVM (``forceinline``: the ``alwaysinline`` attribute), so it is typed and
    compiled once per argument types and shared by every kernel that calls it. Numba's own
    inlining (``inline="always"``) types and lowers the function again at each call site,
    its callees with it: that was two thirds of the cold compile time (softmax_rows 39 -> 15 s
    for its first signature), for the same machine code (measured, every benchmark case).
    """
    return Deferred(function, dict(forceinline=True, **_OPTIONS))


def inline_ir(function):
    """Compile a building block that is inlined into its callers in Numba's IR (at each call
    site): the ones that take arrays (LLVM-inlined, the short-row kernels that make and pass
    views per row ran 1.2x slower), and the ones that call the threading layer, which a
    parallel kernel's cache entry sets up before it is loaded, but a function of its own not."""
    return Deferred(function, dict(inline="always", **_OPTIONS))


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
# holds the call up, with the other thread idle.  The parallel kernels instead start each
# thread once (``run_in_parallel``), and each takes its tasks from a shared counter as it goes.
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
    at least TASK_ELEMENTS elements at a time (``take_run``; ``run_tasks`` makes one)."""
    queue = np.empty(_END + 1, np.int64)
    # Stores, not np.zeros: Numba makes the fill of np.zeros a parallel loop of its own in
    # a function compiled with parallel=True (a user's, calling the public functions in its
    # @njit code; the kernels were, once), and dropped it where nothing it can see reads the
    # array (fetch_add is opaque to it): the counter then began at what a freed allocation
    # had left there.
    queue[_NEXT] = 0
    queue[_GROUP] = max(1, TASK_ELEMENTS // max(1, elements_per_task))
    queue[_END] = n_tasks
    return queue


@inline_ir
def take_run(queue):
    """(first, end): the calling thread's next run of tasks first .. end - 1 (a group of
    the queue's, by one atomic add), or (-1, -1) when none is left (``run_in_parallel``)."""
    first = fetch_add(queue, queue[_GROUP])
    if first >= queue[_END]:
        return -1, -1
    return first, min(queue[_END], first + queue[_GROUP])


@inline_ir
def run_tasks(run, args, n_tasks, elements_per_task):
    """run(*args, first, end) over the tasks 0 .. n_tasks - 1 of a parallel kernel, for a
    function ``run`` that does a run of them: in one call where the loops run on one thread
    (``one_thread``: a small input, no parallel loop to launch), else in runs that each
    thread takes from a ``task_queue`` as it goes (``run_in_parallel``)."""
    if one_thread():
        # An int64, not a literal 0: run is then compiled once for both calls.
        run(*args, np.int64(0), n_tasks)
    else:
        run_in_parallel(run, args, task_queue(n_tasks, elements_per_task))


@intrinsic
def run_in_parallel(typingctx, run, args, queue):
    """On each thread of the pool (``get_threads``), at once: run(*args, first, end) on runs
    of tasks taken from ``queue`` (a ``task_queue``, by ``take_run``) until none is left;
    returns when all are done.

    The threading layer's ``parallel_for`` called as Numba's parfor lowering calls it, with
    a function of its own that takes the tasks, in the calling kernel's module. A ``prange``
    over the threads did the same, but Numba makes a gufunc of its body and two wrappers
    of that, each a module of its own that links ``run`` and generates its machine code
    again: with the kernel's own and ``run``'s, its code was generated five times for each
    signature, not twice. A ``run`` that fails (a kernel's only failure is an allocation's)
    stops its thread, and the call raises MemoryError once all threads are done, as a
    parfor's."""
    if not (isinstance(run, types.Dispatcher) and isinstance(args, types.BaseTuple)
            and isinstance(queue, types.Array)):
        return None
    _launch_threads()  # registers the threading layer's symbols
    run_sig = typingctx.resolve_function_type(run, (*args.types, types.int64, types.int64), {})
    take_sig = types.UniTuple(types.int64, 2)(queue)

    def codegen(context, builder, signature, llargs):
        _, args_value, queue_value = llargs
        run_compiled = run.dispatcher.overloads[run_sig.args]
        context.active_code_library.add_linking_library(run_compiled.library)
        take = context.compile_subroutine(builder, take_run.py_func, take_sig)
        module = builder.module
        byte_ptr = ir.IntType(8).as_pointer()
        intp = cgutils.intp_t
        # The threads' arrays without their meminfos, as a gufunc's (which Numba makes again
        # from their pointers): the caller holds the references while the threads run, and
        # a run's reference counts then write no cache line that the threads share (with
        # them, float64 cross_entropy of 4096x1000 ran 0.88-0.91x a prange's on two threads).
        def borrowed(array_type, value):
            array = context.make_array(array_type)(context, builder, value)
            array.meminfo = cgutils.get_null_value(array.meminfo.type)
            return array._getvalue()

        args_value = context.make_tuple(builder, args, [
            borrowed(t, v) if isinstance(t, types.Array) else v
            for t, v in zip(args.types, cgutils.unpack_tuple(builder, args_value))])
        queue_value = borrowed(queue, queue_value)
        # The arguments, on the caller's stack for the threads (it waits for them), and a
        # flag that a thread sets if its run failed.
        flag = ir.IntType(32)
        data_type = ir.LiteralStructType([args_value.type, queue_value.type, flag])
        data = cgutils.alloca_once(builder, data_type)
        builder.store(args_value, cgutils.gep_inbounds(builder, data, 0, 0))
        builder.store(queue_value, cgutils.gep_inbounds(builder, data, 0, 1))
        failed = cgutils.gep_inbounds(builder, data, 0, 2)
        builder.store(flag(0), failed)
        # The function each thread calls, void (char **, intp *, intp *, void *data):
        #     while (first, end = take_run(queue)) != (-1, -1): run(*args, first, end)
        worker_type = ir.FunctionType(ir.VoidType(), [byte_ptr.as_pointer(), intp.as_pointer(),
                                                      intp.as_pointer(), byte_ptr])
        worker = ir.Function(module, worker_type, module.get_unique_name("numba_lse.worker"))
        worker.linkage = "internal"
        inner = ir.IRBuilder(worker.append_basic_block("entry"))
        its = inner.bitcast(worker.args[3], data_type.as_pointer())
        arguments = cgutils.unpack_tuple(inner, inner.load(cgutils.gep_inbounds(inner, its, 0, 0)))
        queue_here = inner.load(cgutils.gep_inbounds(inner, its, 0, 1))
        taking, running, failing, done = (worker.append_basic_block(name)
                                          for name in ("take", "run", "failed", "done"))
        inner.branch(taking)
        inner.position_at_end(taking)
        _, first_end = context.call_internal_no_propagate(inner, take.fndesc, take_sig,
                                                          [queue_here])
        first, end = cgutils.unpack_tuple(inner, first_end)
        inner.cbranch(inner.icmp_signed("<", first, first.type(0)), done, running)
        inner.position_at_end(running)
        status, _ = context.call_internal_no_propagate(inner, run_compiled.fndesc, run_sig,
                                                       arguments + [first, end])
        inner.cbranch(status.is_error, failing, taking)
        inner.position_at_end(failing)
        inner.store_atomic(flag(1), cgutils.gep_inbounds(inner, its, 0, 2), "monotonic", 4)
        inner.branch(done)
        inner.position_at_end(done)
        inner.ret_void()
        # parallel_for(fn, args, dims, steps, data, inner_ndim, array_count, num_threads)
        # calls fn dims[0] times across num_threads threads; no arrays, so no args or steps.
        parallel_for = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [byte_ptr] * 5 + [intp] * 3),
            "numba_parallel_for")
        get_num_threads = cgutils.get_or_insert_function(module, ir.FunctionType(intp, []),
                                                         "get_num_threads")
        threads = builder.call(get_num_threads, [])
        dims = cgutils.alloca_once_value(builder, threads)
        steps = cgutils.alloca_once_value(builder, intp(0))
        no_arrays = cgutils.alloca_once(builder, byte_ptr)
        builder.call(parallel_for, [builder.bitcast(worker, byte_ptr),
                                    builder.bitcast(no_arrays, byte_ptr),
                                    builder.bitcast(dims, byte_ptr),
                                    builder.bitcast(steps, byte_ptr),
                                    builder.bitcast(data, byte_ptr),
                                    intp(0), intp(0), threads])
        with builder.if_then(builder.icmp_unsigned("!=", builder.load(failed), flag(0)),
                             likely=False):
            context.call_conv.return_user_exc(builder, MemoryError,
                                              ("a parallel task ran out of memory",))
        # A cache entry of the kernel launches the threading layer when loaded, before
        # its code runs (as Numba's parfors do: ``typed_passes._reload_parfors``).
        context.active_code_library._reload_init.add(_launch_threads)
        return context.get_dummy_value()

    return types.none(run, args, queue), codegen
