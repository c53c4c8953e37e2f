"""@cuda.jit kernels over the canonical (outer, n, inner) view, mirroring ``numba_lse.cpu``.

The mathematics is the CPU backend's, called as device functions: the (max, ties, sum)
partial and its one merge rule (``cpu/partials.py``: ``max_with``, ``add_term``, ``merge``,
``log_abs_sum``) and the softmax-family formulas (``cpu/softmax.py``: ``row_constants``,
``element``, ``is_dominant``). numba-cuda compiles those ``@njit`` functions for the device
(their ``@intrinsic``/``@overload`` helpers lower on the CUDA target too); under the CUDA
simulator the kernels are Python and call them as ordinary compiled CPU functions. Every float
operation of a kernel goes through them, so the simulator never does float arithmetic in
Python (which would warn on inf - inf where the compiled code quietly gives nan).

Two loop shapes:

``rows``     inner == 1 (reduce the contiguous last axis): one block per row (grid-stride over
             rows). Each thread walks the row with stride blockDim (coalesced), keeping its
             own partial: a max pass, then a ties/sum pass against that max. The partials
             meet in shared memory and are merged by a tree of ``merge`` (no warp shuffles:
             the simulator has none), so all threads then know the row's partial.
``columns``  inner > 1: one thread per (outer, inner) column, walking n (adjacent threads read
             adjacent memory).

Weights (``b``, or ``where`` as a bool mask) and the softmax-family op are compile-time
constants of each kernel (closures built once per combination), so the unweighted kernels
never read a weight and each op's kernel holds only its own formula. Without weights the
kernel's ``w`` argument is any array (it is never read). Data of any float dtype is
computed in float64 and rounded once where it is stored.
"""

import functools
import math

import numpy as np
from numba import cuda, float64

from ..cpu.jit import inline
from ..cpu.partials import add_term, log_abs_sum, max_with, merge
from ..cpu.softmax import LOG1M_SOFTMAX, element, row_constants

# Threads per block: the row kernels' most (shared arrays are sized by it), the column
# kernels' usual. A power of two (the tree reduction halves it).
BLOCK = 128
# The fewest threads of a row block on a GPU: one warp.
WARP = 32
# Blocks at most in a launch; kernels stride over the rest.
MAX_BLOCKS = 1 << 16


def row_block(n, simulator=False):
    """Threads per block for rows of length n: the power of two >= n, within [WARP, BLOCK].

    Under the simulator (each thread a Python thread) the floor is 1 instead of a warp.
    """
    threads = 1
    while threads < n and threads < BLOCK:
        threads *= 2
    return threads if simulator else max(threads, WARP)


def column_launch(columns, simulator=False):
    """(blocks, threads) for one thread per column, ``columns`` > 0 of them."""
    threads = row_block(columns, simulator)
    return min(MAX_BLOCKS, -(-columns // threads)), threads


@inline
def is_dominant(op, m, c, s):
    """``cpu.softmax.is_dominant``'s twin: whether log1m_softmax of this slice needs its
    entries below the max (one entry above 1/2). numba-cuda has no ``np.isfinite`` ufunc on
    the device, so ``math.isfinite`` here."""
    return op == LOG1M_SOFTMAX and c == 1 and s < 1 and math.isfinite(m)


@inline
def dominant_value(m, s, below_m, below_c, below_s):
    """log1m_softmax at the dominant entry of a slice whose partial is (m, 1, s), given the
    partial (below_*) of its entries below m: log(sum below) - lse, as ``cpu.softmax``'s
    ``log_sum_below(...) - log1p(s)`` computes it."""
    if below_m == -np.inf:
        return -np.inf
    return ((below_m - m) + math.log(below_c) + math.log1p(below_s / below_c)) - math.log1p(s)


@functools.lru_cache(maxsize=None)
def _device_functions(weighted):
    """The device functions of the (un)weighted kernels: weight reads and slice partials."""
    if weighted:
        @cuda.jit(device=True)
        def weight2(w, r, k):
            return np.float64(w[r, k])

        @cuda.jit(device=True)
        def weight3(w, o, k, j):
            return np.float64(w[o, k, j])
    else:
        @cuda.jit(device=True)
        def weight2(w, r, k):
            return 1.0

        @cuda.jit(device=True)
        def weight3(w, o, k, j):
            return 1.0

    @cuda.jit(device=True)
    def row_partial(x, w, r, below, cut, sm, sc, ss):
        """The partial (m, c, s) of row r of x (rows, n), reduced by the whole block; with
        ``cut``, of its entries below ``below`` only. Every thread returns it; the caller
        syncs before it uses sm, sc, ss again."""
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        n = x.shape[1]
        m = -np.inf
        for k in range(tid, n, step):
            wk = weight2(w, r, k)
            if cut and not (x[r, k] < below):
                wk = 0.0
            m = max_with(m, x[r, k], wk)
        c = 0.0
        s = 0.0
        for k in range(tid, n, step):
            wk = weight2(w, r, k)
            if cut and not (x[r, k] < below):
                wk = 0.0
            c, s = add_term(c, s, x[r, k], wk, m)
        sm[tid] = m
        sc[tid] = c
        ss[tid] = s
        cuda.syncthreads()
        half = step // 2
        while half > 0:
            if tid < half:
                sm[tid], sc[tid], ss[tid] = merge(sm[tid], sc[tid], ss[tid],
                                                  sm[tid + half], sc[tid + half], ss[tid + half])
            cuda.syncthreads()
            half //= 2
        return sm[0], sc[0], ss[0]

    @cuda.jit(device=True)
    def column_partial(x, w, o, j, below, cut):
        """The partial (m, c, s) of x[o, :, j] (x: (outer, n, inner)), by one thread; with
        ``cut``, of its entries below ``below`` only."""
        n = x.shape[1]
        m = -np.inf
        for k in range(n):
            wk = weight3(w, o, k, j)
            if cut and not (x[o, k, j] < below):
                wk = 0.0
            m = max_with(m, x[o, k, j], wk)
        c = 0.0
        s = 0.0
        for k in range(n):
            wk = weight3(w, o, k, j)
            if cut and not (x[o, k, j] < below):
                wk = 0.0
            c, s = add_term(c, s, x[o, k, j], wk, m)
        return m, c, s

    return weight2, weight3, row_partial, column_partial


@functools.lru_cache(maxsize=None)
def lse_rows(weighted):
    """Kernel (x, w, out, sign): out[r], sign[r] = log|sum_k w[r, k] exp(x[r, k])| and its
    sign, for x (rows, n); launch with ``row_block(n)`` threads."""
    _, _, row_partial, _ = _device_functions(weighted)

    @cuda.jit
    def kernel(x, w, out, sign):
        sm = cuda.shared.array(BLOCK, float64)
        sc = cuda.shared.array(BLOCK, float64)
        ss = cuda.shared.array(BLOCK, float64)
        for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, c, s = row_partial(x, w, r, 0.0, False, sm, sc, ss)
            if cuda.threadIdx.x == 0:
                out[r], sign[r] = log_abs_sum(m, c, s)
            cuda.syncthreads()

    return kernel


@functools.lru_cache(maxsize=None)
def lse_columns(weighted):
    """Kernel (x, w, out, sign): out[o, j], sign[o, j] = log|sum_k w exp(x[o, k, j])| and
    its sign, for x (outer, n, inner); one thread per column (``column_launch``)."""
    _, _, _, column_partial = _device_functions(weighted)

    @cuda.jit
    def kernel(x, w, out, sign):
        inner = x.shape[2]
        columns = x.shape[0] * inner
        start = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
        stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
        for t in range(start, columns, stride):
            o = t // inner
            j = t - o * inner
            m, c, s = column_partial(x, w, o, j, 0.0, False)
            out[o, j], sign[o, j] = log_abs_sum(m, c, s)

    return kernel


@functools.lru_cache(maxsize=None)
def softmax_rows(op, weighted):
    """Kernel (x, w, out): out[r, k] = the op (``cpu.softmax``'s SOFTMAX, LOG_SOFTMAX or
    LOG1M_SOFTMAX) at x[r, k] along the rows of x (rows, n); ``row_block(n)`` threads."""
    weight2, _, row_partial, _ = _device_functions(weighted)
    log1m = op == LOG1M_SOFTMAX

    @cuda.jit
    def kernel(x, w, out):
        sm = cuda.shared.array(BLOCK, float64)
        sc = cuda.shared.array(BLOCK, float64)
        ss = cuda.shared.array(BLOCK, float64)
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        n = x.shape[1]
        for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, c, s = row_partial(x, w, r, 0.0, False, sm, sc, ss)
            shift, scale = row_constants(op, m, c, s)
            dominant = np.nan
            # The same answer in every thread of the block, so the syncs inside are safe.
            if log1m and is_dominant(op, m, c, s):
                cuda.syncthreads()
                below_m, below_c, below_s = row_partial(x, w, r, m, True, sm, sc, ss)
                dominant = dominant_value(m, s, below_m, below_c, below_s)
            for k in range(tid, n, step):
                out[r, k] = element(op, x[r, k], weight2(w, r, k), shift, scale, dominant)
            cuda.syncthreads()

    return kernel


@functools.lru_cache(maxsize=None)
def softmax_columns(op, weighted):
    """Kernel (x, w, out): out[o, k, j] = the op at x[o, k, j] along axis 1 of x (outer, n,
    inner); one thread per column (``column_launch``)."""
    _, weight3, _, column_partial = _device_functions(weighted)
    log1m = op == LOG1M_SOFTMAX

    @cuda.jit
    def kernel(x, w, out):
        n = x.shape[1]
        inner = x.shape[2]
        columns = x.shape[0] * inner
        start = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
        stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
        for t in range(start, columns, stride):
            o = t // inner
            j = t - o * inner
            m, c, s = column_partial(x, w, o, j, 0.0, False)
            shift, scale = row_constants(op, m, c, s)
            dominant = np.nan
            if log1m and is_dominant(op, m, c, s):
                below_m, below_c, below_s = column_partial(x, w, o, j, m, True)
                dominant = dominant_value(m, s, below_m, below_c, below_s)
            for k in range(n):
                out[o, k, j] = element(op, x[o, k, j], weight3(w, o, k, j), shift, scale, dominant)

    return kernel


_COPY_SOURCE = '''
def kernel(src, dst, strides):
    start = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    for f in range(start, {flat}.shape[0], step):
{indices}
        {assignment}
'''


@functools.lru_cache(maxsize=None)
def permuted_copy(ndim, gather):
    """Kernel (src, dst, strides) copying between an ``ndim``-D array and a flat C-ordered
    buffer that holds the same elements with the axes permuted.

    ``strides[a]`` is the step (in elements) of axis ``a`` of the N-D array in the flat
    buffer. ``gather``: src N-D (any strides), dst the flat buffer; else src is the flat
    buffer and dst the N-D array. Launch over the buffer's length (``column_launch``).
    Generated per ndim: a kernel cannot build an index tuple of variable length.
    """
    nd = "src" if gather else "dst"
    indices = "\n".join(f"        i{a} = (f // strides[{a}]) % {nd}.shape[{a}]" for a in range(ndim))
    index = ", ".join(f"i{a}" for a in range(ndim))
    assignment = f"dst[f] = src[{index}]" if gather else f"dst[{index}] = src[f]"
    source = _COPY_SOURCE.format(flat="dst" if gather else "src", indices=indices,
                                 assignment=assignment)
    namespace = {"cuda": cuda, "np": np}
    exec(compile(source, f"<numba_lse.cuda permuted_copy ndim={ndim}>", "exec"), namespace)
    return cuda.jit(namespace["kernel"])


@cuda.jit
def nan_where_negative(out, sign):
    """out[i] = nan where sign[i] < 0 (1-D arrays): the log of a negative sum, without
    return_sign. Element-wise, grid-stride."""
    start = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    for i in range(start, out.shape[0], stride):
        if sign[i] < 0:
            out[i] = math.nan
