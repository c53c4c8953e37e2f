"""Properties of the CPU kernels that no reference library can check: threads, size, layout."""

import ctypes
import itertools
import mmap
import pathlib
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from scipy import special

import numba_lse as nl
from numba_lse import _outputs
from numba_lse._layout import CanonicalView
from numba_lse.cpu import softmax as softmax_kernels
from numba_lse.cpu.intrinsics import get_threads, store_fence, transpose_block, transpose_block_back
from numba_lse.cpu.partials import MAX_TAIL_BYTES, block_max
from numba_lse.cpu import jit
from numba_lse.cpu.jit import TASK_ELEMENTS, run_tasks, take_run, task_queue
from numba_lse.cpu.losses import CHECK_BLOCK, CHECK_PARALLEL_FROM, first_out_of_bounds
from numba_lse.cpu.reduce import CHUNK


def test_result_does_not_depend_on_thread_count():
    x = np.random.default_rng(0).normal(size=5 * CHUNK + 17)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nl.logsumexp(x)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = nl.logsumexp(x)
    finally:
        numba.set_num_threads(before)
    assert one == many


@numba.njit(parallel=True)
def _count_runs_taken_as_runs(runs, elements_per_task):
    """runs[task] += 1 for every task of a queue of len(runs) tasks, taken a run at a time
    (``take_run``) in a prange's threads."""
    queue = task_queue(runs.shape[0], elements_per_task)
    for _ in numba.prange(get_threads()):
        first, end = take_run(queue)
        while first >= 0:
            for task in range(first, end):
                runs[task] += 1
            first, end = take_run(queue)


@numba.njit
def _count_run(runs, first, end):
    for task in range(first, end):
        runs[task] += 1


@numba.njit
def _count_runs_by_run_tasks(runs, elements_per_task):
    """As _count_runs_taken_as_runs, through ``run_tasks``, as the kernels take them (the
    threads of ``run_in_parallel``, no prange)."""
    run_tasks(_count_run, (runs,), runs.shape[0], elements_per_task)


@pytest.mark.parametrize("taken", [_count_runs_taken_as_runs, _count_runs_by_run_tasks],
                         ids=["prange", "run_tasks"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("elements_per_task", [1, 3000, TASK_ELEMENTS, TASK_ELEMENTS + 1, 10**9])
@pytest.mark.parametrize("n_tasks", [0, 1, 2, 5, 6, 7, 1000, 4097])
def test_task_queue_runs_every_task_once(n_tasks, elements_per_task, threads, taken):
    """Groups of 1, 5 or 5461 tasks per take; task counts below, at and past a group."""
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    before = numba.get_num_threads()
    runs = np.zeros(n_tasks, np.int64)
    try:
        numba.set_num_threads(threads)
        taken(runs, elements_per_task)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(runs, 1)


@numba.njit
def _failing_run(runs, first, end):
    for task in range(first, end):
        if task == runs.shape[0] - 1:
            raise MemoryError("the last task's allocation")
        runs[task] += 1


@numba.njit
def _runs_failing_at_the_end(runs):
    run_tasks(_failing_run, (runs,), runs.shape[0], TASK_ELEMENTS)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_failed_task_raises_after_the_others(threads):
    # A kernel's only failure is an allocation's: on the threads too, it must raise, not
    # leave the failed run's outputs unwritten and return as if all were done.
    before = numba.get_num_threads()
    runs = np.zeros(50, np.int64)
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        with pytest.raises(MemoryError):
            _runs_failing_at_the_end(runs)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(runs[:-1], 1)  # one task per take: all the others ran


def _first_bad(target, ignore_index, n_classes):
    """The reference: NumPy's position of the first bad class index, or -1."""
    bad = np.flatnonzero((target != ignore_index) & ((target < 0) | (target >= n_classes)))
    return int(bad[0]) if bad.size else -1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", [[], [0], [5], [CHECK_BLOCK - 1, CHECK_BLOCK],
                                 [3 * CHECK_BLOCK + 17, CHECK_BLOCK + 2], [-1]],
                         ids=["none", "first", "in_the_first_block", "across_two_blocks",
                              "first_in_a_later_task", "last"])
def test_the_class_check_on_the_threads_finds_the_first_bad_index(bad, threads):
    """``first_out_of_bounds`` counts in tasks of CHECK_BLOCK from CHECK_PARALLEL_FROM class
    indices on: the first bad one is found wherever the bad ones lie, forwards and
    backwards (a strided view), on one thread or two; with ignore_index 9, the entries 9
    are no longer bad."""
    n = CHECK_PARALLEL_FROM + CHECK_BLOCK // 2 + 3  # a partial last block
    rng = np.random.default_rng(3)
    target = rng.integers(0, 9, n)
    target[rng.integers(0, n, 1000)] = -100
    for k, position in enumerate(bad):
        target[position] = (9, -1, 10**12)[k % 3]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        for t in (target, target[::-1]):
            for ignore_index in (-100, 9):
                assert first_out_of_bounds(t, ignore_index, 9) == _first_bad(t, ignore_index, 9)
    finally:
        numba.set_num_threads(before)
    assert _first_bad(target, -100, 9) == (-1 if not bad else min(p % n for p in bad))


@pytest.mark.parametrize("threads", [1, 2])
def test_partials_merged_and_finished_on_the_threads(threads):
    """``merge_partials`` and ``lse_of_partials``, on the threads in tasks from SERIAL_BELOW
    partials on, give the bits of the one merge rule applied in order and of ``log_abs_sum``,
    partial by partial, on one thread or two (special values among the terms)."""
    from numba_lse import cpu
    from numba_lse.cpu.partials import log_abs_sum, merge

    rng = np.random.default_rng(11)
    a = rng.standard_normal((150, 3, 90, 8)) * 30
    for value in (np.inf, -np.inf, np.nan):
        a.flat[rng.integers(0, a.size, 40)] = value
    a[0, :, 0] = -np.inf  # a partial of nothing but -inf, merged
    m, c, s = cpu.lse_partials(a, None, (3,))
    assert m.size >= jit.SERIAL_BELOW
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        merged = cpu.merge_partials(m, c, s, (1,))
        out, sign = cpu.lse_from_partials(m, c, s)
    finally:
        numba.set_num_threads(before)
    expected = np.empty((3,) + m.shape[:1] + m.shape[2:])
    for o in range(m.shape[0]):
        for j in range(m.shape[2]):
            partial = (-np.inf, 0.0, 0.0)
            for k in range(m.shape[1]):
                partial = merge(*partial, m[o, k, j], c[o, k, j], s[o, k, j])
            expected[:, o, j] = partial
    for got, want in zip(merged, expected):
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    finished = np.array([log_abs_sum(*p) for p in zip(m.flat, c.flat, s.flat)]).T
    np.testing.assert_array_equal(out.reshape(-1).view(np.int64), finished[0].view(np.int64))
    np.testing.assert_array_equal(sign.reshape(-1).view(np.int64), finished[1].view(np.int64))


@pytest.mark.parametrize("shape", [(9, 257, 37), (2, 300, 2100), (1, 70, 5000)])
def test_softmax_keeping_exps_gives_the_bits_of_two_exps_where_a_band_is_one_piece(shape):
    """float64 softmax and log1m_softmax along a strided axis keep their exps in the output
    and make the outputs from them after (``softmax_keeping_exps``): where each band of
    columns is one piece of rows, the same bits as ``softmax_inner``'s, which takes them
    again (special values, dominant entries, a mask, a column all -inf or masked out)."""
    from numba_lse.cpu.reduce import column_pieces

    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape) * 20
    for value in (np.inf, -np.inf, np.nan, 800.0, -1e308):
        x.flat[rng.integers(0, x.size, 5)] = value
    x[0, :, 1] = -np.inf
    where = rng.random(shape) < 0.9
    where[-1, :, 2] = False
    assert column_pieces.py_func(x)[0] == 1
    for op, w in itertools.product((softmax_kernels.SOFTMAX, softmax_kernels.LOG1M_SOFTMAX),
                                   (None, where)):
        kept, twice = np.empty_like(x), np.empty_like(x)
        softmax_kernels.softmax_keeping_exps(op, x, w, kept)
        softmax_kernels.softmax_inner(op, x, w, twice)
        # nan where the other's is (the sign of a nan aside), else the same bits.
        np.testing.assert_array_equal(np.isnan(kept), np.isnan(twice))
        numbers = ~np.isnan(kept)
        np.testing.assert_array_equal(kept[numbers].view(np.int64), twice[numbers].view(np.int64))
        shown = np.ones(shape, dtype=bool) if w is None else w
        assert np.isnan(kept[0, :, 1][shown[0, :, 1]]).all()
        assert (kept[~shown] == 0).all()


def _every_kernel_path(dtype):
    """One result per loop that takes tasks from a queue: short rows (tiles), rows in one
    piece, rows in chunks, a vector, columns (axis 0, and a middle axis; bands in pieces of
    rows: (700, 600), (50000, 3), the losses' (1, 700, 200)), the losses."""
    rng = np.random.default_rng(7)
    results = []
    for shape, axis in [((3000, 10), 1), ((300, 700), 1), ((3, 3 * CHUNK + 5), 1),
                        ((4 * CHUNK + 3,), None), ((700, 600), 0), ((40, 50, 30), 1),
                        ((50_000, 3), 0)]:
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        for op in (nl.logsumexp, nl.softmax, nl.log_softmax, nl.log1m_softmax):
            results.append(op(x, axis=axis))
    for shape in [(20_000, 10), (600, 700), (3, 3 * CHUNK + 5), (300, 40, 20), (1, 700, 200)]:
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        target = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        results.extend(nl.cross_entropy(x, target, reduction="none", return_grad=True))
        results.extend(nl.cross_entropy(x, nl.softmax(x, axis=1), reduction="none",
                                        return_grad=True))
        results.append(nl.nll_loss(nl.log_softmax(x, axis=1), target, reduction="none"))
    results.append(nl.nll_loss(rng.standard_normal((100_000, 3)), rng.integers(0, 3, 100_000)))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_parallel_path_gives_the_same_bits_on_any_thread_count(dtype):
    """The threads take their tasks as they go: which thread runs a task must not matter."""
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _every_kernel_path(dtype)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = _every_kernel_path(dtype)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_eight_threads_at_once():
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(64, 3000)) * (i + 1) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: nl.logsumexp(x, axis=1), inputs * 4))
    for x, got in zip(inputs * 4, results):
        np.testing.assert_allclose(got, special.logsumexp(x, axis=1), rtol=1e-14)


def test_eight_threads_under_the_workqueue_layer():
    # Numba's workqueue layer aborts the process on concurrent parallel launches; numba_lse
    # must serialise its launches there instead.
    script = textwrap.dedent("""
        from concurrent.futures import ThreadPoolExecutor
        import numba, numpy as np, numba_lse as nl
        x = np.random.default_rng(0).normal(size=(64, 3000))
        expected = nl.logsumexp(x, axis=1)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: nl.logsumexp(x, axis=1), range(64)))
        assert all((r == expected).all() for r in results)
        print(numba.threading_layer())
    """)
    env = {"NUMBA_THREADING_LAYER": "workqueue", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workqueue"


def test_a_kernel_compiled_on_top_of_another_process_cache(tmp_path):
    # Building blocks are compiled (and cached) on their own, then inlined by LLVM. One that
    # calls the threading layer, loaded from the cache into a process whose threads were
    # not started yet, would abort that process (LLVM: symbol get_num_threads not found).
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for dtype in ("float64", "float32"):
        script = ("import numpy as np, numba_lse as nl;"
                  f"print(float(nl.logsumexp(np.zeros(4, np.{dtype}))))")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        assert float(done.stdout) == float(np.dtype(dtype).type(np.log(4)))


def test_a_change_to_any_module_of_the_kernels_compiles_them_again(tmp_path):
    # A kernel is compiled with the building blocks of other files inlined (exp.py's exp,
    # log.py's log1p, ...), so its cache entry must go stale when any of those files changes,
    # not only its own (Numba's rule): a copy of the package, a kernel cached, then a line
    # added to log.py alone.
    shutil.copytree(pathlib.Path(nl.__file__).parent, tmp_path / "numba_lse",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # An editor's lock file (Emacs: a dangling link named like a module) is no module.
    (tmp_path / "numba_lse" / "cpu" / ".#log.py").symlink_to("user@host.123")
    script = textwrap.dedent(f"""
        import numpy as np, numba_lse as nl
        from numba_lse.cpu import reduce
        assert nl.__file__.startswith({str(tmp_path)!r})
        assert nl.logsumexp(np.zeros(4)) == np.log(4)
        stats = reduce.lse_short_rows.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    """)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}  # in-tree caches, the copy's

    def hits_and_misses():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert hits_and_misses() == ["0", "1"]  # compiled
    assert hits_and_misses() == ["1", "0"]  # loaded
    with open(tmp_path / "numba_lse" / "cpu" / "log.py", "a") as log:
        log.write("# a change\n")
    assert hits_and_misses() == ["0", "1"]  # compiled again, not loaded stale
    assert hits_and_misses() == ["1", "0"]


@pytest.mark.parametrize("kind", ["UserProvided", "InTree", "UserWide"])
def test_a_cache_directory_removed_meanwhile_is_made_again(kind, tmp_path, monkeypatch):
    # The stamped locators check a directory's writability once per process (``jit``), but
    # must still make it again before an entry is saved, as Numba's do: a cache removed while
    # a process runs (``git clean``, a temporary NUMBA_CACHE_DIR) failed the next compile.
    locator_class = getattr(jit, f"StampedBySources{kind}CacheLocator")
    locator = locator_class.__new__(locator_class)
    path = tmp_path / kind / "cache"
    monkeypatch.setattr(locator, "get_cache_path", lambda: str(path))
    locator.ensure_cache_path()
    assert path.is_dir() and str(path) in jit._WRITABLE_PATHS
    path.rmdir()
    locator.ensure_cache_path()
    assert path.is_dir()


def test_a_call_compiles_only_the_kernels_its_shape_takes(tmp_path):
    # Each way of taking rows is a kernel of its own, picked in Python from the shape, so
    # that a first call compiles (or loads) that one alone: softmax of rows of 100 compiled
    # in 6 s so, 23 s with every way in one kernel.
    script = textwrap.dedent("""
        import numpy as np, numba_lse as nl
        from numba_lse.cpu import reduce, softmax
        nl.softmax(np.ones((4, 100)), axis=1)
        nl.logsumexp(np.ones((4, 100)), axis=1)
        # The kernels called, then the other ways' (none compiled, not even as callees).
        kernels = (softmax.softmax_rows, reduce.lse_rows, softmax.softmax_short_rows,
                   softmax.softmax_chunked_rows, reduce.lse_short_rows, reduce.short_row_partials)
        print(" ".join(str(len(k.signatures)) for k in kernels))
    """)
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}  # nothing cached
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "0", "0", "0", "0"]


def test_the_import_leaves_numba_to_the_first_call():
    # ``import numba_lse`` imports no Numba (0.2-0.4 s): the first call does, and only one
    # thread of many arriving at once imports the backend, the others waiting for all of it.
    script = textwrap.dedent("""
        import sys, threading, numpy as np, numba_lse as nl
        print(sorted(m for m in sys.modules if m == "numba" or m.startswith(("numba.", "llvmlite"))
                     or m == "numba_lse.cpu") or "none")
        x = np.linspace(-800.0, 800.0, 1001)
        results = [None] * 8
        def call(i):
            results[i] = nl.logsumexp(x), nl.softmax(x)[-1], nl.nll_loss(x[None], np.array([3]))
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        from scipy import special
        want = special.logsumexp(x), special.softmax(x)[-1]
        print(all(r == results[0] for r in results),
              np.allclose(results[0][:2], want, rtol=1e-14, atol=0) and results[0][2] == -x[3],
              "numba" in sys.modules, nl._dispatch.cpu() is sys.modules["numba_lse.cpu"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["none", "True", "True", "True", "True"]


def test_the_import_makes_no_dispatcher_and_a_call_those_of_its_kernels(tmp_path):
    # A Numba dispatcher costs ~0.5 ms to make; there are ~150, and a call needs the ones it
    # launches: a kernel loaded from the cache needs none of the functions compiled into it.
    script = textwrap.dedent("""
        import sys, numpy as np, numba_lse as nl
        from numba_lse.cpu import reduce
        from numba_lse.cpu.jit import Deferred
        functions = {id(v): v for name, m in list(sys.modules.items())
                     if name.startswith("numba_lse") for v in vars(m).values()
                     if isinstance(v, Deferred)}.values()
        def made():
            return sorted(f.__qualname__ for f in functions if f._dispatcher is not None)
        at_import = made()
        nl.logsumexp(np.ones((3, 100)), axis=1)
        # Made, and in the Deferred's place: Python calls the dispatcher itself.
        assert reduce.lse_rows is [f for f in functions if f.__name__ == "lse_rows"][0]._dispatcher
        print(len(functions), at_import, made())
    """)
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        total, rest = done.stdout.split(" ", 1)
        return int(total), rest.strip()

    total, compiling = run()  # nothing cached: typing makes the callees' dispatchers too
    assert total > 100 and compiling.startswith("[] [") and "merge" in compiling
    assert run() == (total, "[] ['lse_rows']")  # loaded from the cache


def test_every_dispatcher_made_at_once_for_the_gpu():
    # numba-cuda compiles a CPU function called from a CUDA kernel only if it finds a Numba
    # Dispatcher there: ``make_dispatchers`` (numba_lse.cuda's import) puts one in place of
    # every ``Deferred``, in every module that holds it.
    script = textwrap.dedent("""
        import sys, numpy as np, numba_lse as nl
        from numba.core.dispatcher import Dispatcher
        from numba_lse.cpu import jit, partials, reduce
        deferred = partials.merge
        before = nl.logsumexp(np.arange(5.0))
        jit.make_dispatchers()
        left = [name for name, m in list(sys.modules.items()) if name.startswith("numba_lse")
                for v in vars(m).values() if isinstance(v, jit.Deferred)]
        assert not left, left
        assert reduce.merge is partials.merge is deferred.dispatcher
        assert isinstance(reduce.lse_rows, Dispatcher)
        assert nl.logsumexp(np.arange(5.0)) == before
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"]


def test_a_deferred_function_is_made_once_and_pickled_by_reference():
    import pickle

    from numba_lse.cpu import reduce

    def double(x):
        return 2 * x

    function = jit.kernel(double)
    with ThreadPoolExecutor(8) as pool:  # made by the first thread, seen by every other
        made = set(map(id, pool.map(lambda _: function.dispatcher, range(64))))
    assert len(made) == 1 and function(3.0) == 6.0 and function.signatures
    # By name: the Deferred, or once made the dispatcher that took its place.
    assert pickle.loads(pickle.dumps(reduce.lse_short_rows)) is reduce.lse_short_rows
    deferred = jit.Deferred(reduce.lse_rows.py_func, {})
    deferred.__module__ = reduce.__name__
    assert pickle.loads(pickle.dumps(deferred)) is reduce.lse_rows


def test_a_read_only_input_compiles_no_kernel_of_its_own():
    x = np.random.default_rng(2).normal(size=(5, 7))
    mask = x > -1
    nl.softmax(x, axis=1, where=mask)
    compiled = len(softmax_kernels.softmax_short_rows.signatures)
    read_only = x.copy()
    read_only.flags.writeable = False
    got = nl.softmax(read_only, axis=1, where=np.broadcast_to(mask, x.shape))  # both read-only
    assert len(softmax_kernels.softmax_short_rows.signatures) == compiled
    np.testing.assert_array_equal(got, nl.softmax(x, axis=1, where=mask))


@pytest.mark.slow
def test_more_than_2_to_the_31_elements():
    # A broadcast (zero-stride) view: 2**31 + 3 elements without the memory.
    n = 2**31 + 3
    x = np.broadcast_to(np.float32(0.25), (n,))
    # Every entry ties at the max: lse = 0.25 + log(n), the count n exact in float64.
    assert nl.logsumexp(x) == np.float32(0.25 + np.log(n))


@numba.njit
def _block_max(x, w, m):
    return block_max(x, w, m)


@numba.njit
def _block_to_tile(rows, r, tile, i):
    transpose_block(rows, r, tile, i)


@numba.njit
def _block_to_rows(tile, i, rows, r, stream):
    transpose_block_back(tile, i, rows, r, stream)
    if stream:
        store_fence()


def _rows_before_a_guard_page(count, n, dtype):
    """A (count, n) array whose last entry ends where an inaccessible page begins (Linux), and
    the mapping that holds it: a read or write past its end faults."""
    nbytes = count * n * np.dtype(dtype).itemsize
    size = (-(-nbytes // mmap.PAGESIZE) + 1) * mmap.PAGESIZE
    memory = mmap.mmap(-1, size)
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(start + size - mmap.PAGESIZE),
                                      ctypes.c_size_t(mmap.PAGESIZE), 0) == 0
    offset = size - mmap.PAGESIZE - nbytes
    return np.frombuffer(memory, dtype, count * n, offset).reshape(count, n), memory


def check_block_transposes(dtype):
    """The blocks of a tile's transposes (``reduce.transpose_rows``, ``transpose_back``), for
    every row length up to a block's 64 bytes: ``transpose_block`` loads whole vectors per
    row, masked at the rows' length, and ``transpose_block_back`` stores whole vectors into
    a copy, past each row's end, then writes the block's lines out. The last row of the
    array is followed by a page that faults, and the entries around a block stay as they
    were, the rows after it too."""
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    for n in range(1, lanes + 1):
        rows, memory = _rows_before_a_guard_page(lanes + 3, n, dtype)
        rows[:] = rng.normal(size=rows.shape)
        tile = np.full((1, n, lanes + 5), np.nan, dtype)
        _block_to_tile(rows, 3, tile, 2)  # rows 3 .. the last
        np.testing.assert_array_equal(tile[0, :, 2:2 + lanes], rows[3:].T)
        assert np.isnan(tile[0, :, :2]).all() and np.isnan(tile[0, :, 2 + lanes:]).all()

        # Into rows 3 .. the last: whole cache lines (they end at a page), so streamed
        # where asked.
        for stream in (False, True):
            tile = rng.normal(size=(1, n, lanes + 5)).astype(dtype)
            rows[:] = -1.0
            _block_to_rows(tile, 1, rows, 3, stream)
            np.testing.assert_array_equal(rows[3:], tile[0, :, 1:1 + lanes].T)
            assert (rows[:3] == -1.0).all()
        # Into rows 0 .. lanes - 1, three rows after them (not streamed).
        rows[:] = -1.0
        _block_to_rows(tile, 4, rows[:lanes], 0, False)
        np.testing.assert_array_equal(rows[:lanes], tile[0, :, 4:4 + lanes].T)
        assert (rows[lanes:] == -1.0).all()
        del rows
        memory.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc: Linux")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_transposes_touch_no_entry_beyond_the_rows(dtype):
    check_block_transposes(dtype)


def _narrower_targets():
    """NUMBA_CPU_FEATURES of the host without its widest vectors, as (the vector bits it
    leaves, the features): a block's transposes go in groups of as many lanes
    (``intrinsics.vector_bits``), each width a way of its own."""
    features = numba.core.codegen.get_host_cpu_features().split(",")
    if "+avx2" not in features:
        return []

    def without(prefixes):
        return ",".join("-" + f[1:] if f[1:].startswith(prefixes) else f for f in features)

    targets = [(128, without(("avx", "fma", "f16c", "vaes", "vpclmul")))]
    if "+avx512f" in features:
        targets.append((256, without(("avx512",))))
    return targets


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _narrower_targets(),
                    reason="x86 with AVX2 on Linux")
@pytest.mark.parametrize("bits, features", _narrower_targets())
def test_block_transposes_of_narrower_vectors(bits, features):
    # The same checks compiled for vectors of fewer lanes (in a process of its own: the
    # target is chosen once): 128-bit vectors take float32 blocks in four groups of columns.
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import test_kernels
        from numba_lse.cpu.intrinsics import vector_bits
        assert vector_bits() == {bits}, vector_bits()
        for dtype in (np.float32, np.float64):
            test_kernels.check_block_transposes(dtype)
        print("checked")
    """)
    env = {"NUMBA_CPU_FEATURES": features, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "checked"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc: Linux")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_max_finds_the_max_anywhere_and_reads_only_its_slice(dtype):
    # ``partials.block_max`` reads the entries after its vector loop's last whole step again
    # with the ones before them: every length up to three steps, the max (or a nan, or the
    # one entry of nonzero weight) at every position, the slice ending at a faulting page.
    step = MAX_TAIL_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(5)
    for n in range(1, 3 * step + 2):
        x, memory = _rows_before_a_guard_page(1, n, dtype)
        x = x[0]
        for at in range(n):
            x[:] = rng.normal(size=n)
            x[at] = 10.0
            assert _block_max(x, None, -np.inf) == 10.0
            assert _block_max(x, None, 20.0) == 20.0
            if n > 1:
                x[at] = np.nan  # nan never wins a max (the sums see it)
                assert _block_max(x, None, -np.inf) == np.max(np.delete(x, at))
            weights = np.zeros(n, dtype)
            weights[at] = 1.0
            x[:] = rng.normal(size=n) + 100.0
            x[at] = -1.0  # the one entry of nonzero weight
            assert _block_max(x, weights, -np.inf) == -1.0
            strided = np.repeat(rng.normal(size=n).astype(dtype), 2)[::-2]  # stride -2
            strided[at] = 10.0
            assert _block_max(strided, None, -np.inf) == 10.0
        del x
        memory.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_block_off_the_cache_lines_is_stored_by_rows_when_streaming_is_asked(dtype):
    # Streaming stores write whole 64-byte lines: a block of rows that does not start one
    # takes the masked stores, and nothing around it is written.
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(4)
    for n in range(1, lanes + 1):
        memory = _outputs._aligned_block((lanes + 4) * n * np.dtype(dtype).itemsize)
        rows = memory.view(dtype).reshape(lanes + 4, n)
        rows[:] = -1.0
        tile = rng.normal(size=(1, n, lanes + 2)).astype(dtype)
        _block_to_rows(tile, 2, rows, 1, True)  # rows[1] is off its line unless n = lanes
        np.testing.assert_array_equal(rows[1:1 + lanes], tile[0, :, 2:2 + lanes].T)
        assert (rows[0] == -1.0).all() and (rows[1 + lanes:] == -1.0).all()


class TestCanonicalView:
    @pytest.mark.parametrize(
        "shape, axes, expected",
        [
            ((3, 4, 5), (2,), (12, 5, 1)),
            ((3, 4, 5), (0,), (1, 3, 20)),
            ((3, 4, 5), (1,), (3, 4, 5)),
            ((3, 4, 5), (0, 1), (1, 12, 5)),
            ((3, 4, 5), (0, 2), (4, 15, 1)),
            ((3, 4, 5), (), (60, 1, 1)),
        ],
    )
    def test_shape(self, shape, axes, expected):
        x = np.zeros(shape)
        layout = CanonicalView(x.shape, x.strides, axes)
        assert (layout.outer, layout.n, layout.inner) == expected

    @pytest.mark.parametrize("make", [
        lambda x: x, lambda x: x.T, lambda x: np.asfortranarray(x), lambda x: x[::-1, :, ::-1],
        lambda x: x.transpose(1, 2, 0),
    ], ids=["C", "T", "F", "reversed", "rolled"])
    @pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 1), (1, 2)])
    def test_contiguous_axes_give_a_view_and_round_trip(self, make, axes):
        x = make(np.arange(60.0).reshape(3, 4, 5))
        layout = CanonicalView(x.shape, x.strides, axes)
        view = layout.view(x)
        if len(axes) == 1 or x.flags.c_contiguous or x.flags.f_contiguous:
            assert np.shares_memory(view, x)
        np.testing.assert_array_equal(layout.full(view.copy()), x)
        reduced = view.sum(axis=1)
        np.testing.assert_array_equal(layout.reduced(reduced), x.sum(axis=axes))
