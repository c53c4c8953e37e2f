"""@cuda.jit kernels over the canonical (outer, n, inner) view, mirroring ``numba_lse.cpu``.

The mathematics is the CPU backend's, called as device functions: the (max, ties, sum)
partial and its one merge rule (``cpu/partials.py``: ``max_with``, ``add_term``, ``merge``,
``log_abs_sum``), the softmax-family formulas (``cpu/softmax.py``: ``row_constants``,
``element``, ``is_dominant``, ``needs_runner_up``, ``dominant_value``) and the per-sample
losses and gradients (``cpu/losses.py``). numba-cuda compiles those ``@njit`` functions for the device (their
``@overload`` helpers lower on the CUDA target too); under the CUDA simulator the kernels are
Python and call them as compiled CPU functions. Every float operation of a kernel goes
through them, so the simulator never does float arithmetic in Python (which would warn on
inf - inf where the compiled code quietly gives nan).

One loop shape serves every slice of the view (a row when inner == 1, a column x[o, :, j]
when inner > 1): a *group* of threads per slice, several groups per block (``launch``).

  rows     a group of up to BLOCK threads (the power of two >= n): each thread walks the
           row with stride ``group`` (adjacent threads read adjacent memory), keeping its
           own partial, which the group merges in shared memory by a tree of ``merge`` (no
           warp shuffles: the simulator has none). Short rows share a block.
  short    rows of at most SHORT_ROW entries: a group of one thread per row, which walks
           it alone (a warp reads 32 adjacent rows, and no tree merges 10 entries).
  columns  a group of one thread per column (adjacent threads read adjacent columns).

A thread loads UNROLL entries of its slice before it uses any (``entries``), in the order
of the plain loop (the same bits): a GPU hides memory latency with loads in flight, and one
load per thread at a time left the first kernels on an H200 at 12-31 % of its bandwidth,
their time set by the count of entries, not of bytes.

Blocks stride over the slices until all are done; a group past the last slice stays idle
but still reaches every ``syncthreads``, so the block never diverges at a barrier.
Slices too few to fill the GPU (``FILL`` threads) and long enough (a few long rows, as
axis=None on a big vector; a few thousand long columns, as axis 0 of a square matrix) are
split in parts: a partial per part (``partials``), merged per slice (``merge_parts``), then
``apply``.

Weights (``b``, or ``where`` as a bool mask) and the cut for log1m_softmax are None when
absent: None is a type, so those kernels compile without the code that reads them (on a GPU
a None argument is passed as the null pointer its data model is: ``NoneArguments``). Data is
read in its dtype, computed in float64 and rounded once where it is stored. Indices are
int64 where products of sizes appear. Every kernel is compiled once per argument types and
cached on disk (``cache=True``), under the stamp of every module they are built from
(``cpu.jit.stamp_locators``).
"""

import math

import numpy as np
from numba import config, cuda, float64, types

from ..cpu.jit import inline, stamp_locators
from ..cpu.losses import (
    index_target_grad,
    index_target_loss,
    nll_sample,
    probability_target_grad,
    probability_target_terms,
    sample_constants,
    smoothing_term,
)
from ..cpu.partials import add_term, log_abs_sum, max_with, merge
from ..cpu.softmax import LOG1M_SOFTMAX, dominant_value, element, is_dominant, needs_runner_up, row_constants

# Threads per block at most (the shared arrays' size); a power of two.
BLOCK = 128
# Blocks at most in a launch; kernels stride over the rest.
MAX_BLOCKS = 1 << 16
# Rows of at most this many entries get a thread each (see the module's docstring): on an
# H200 rows of 10 in groups of 16 threads ran at 1-2 % of its bandwidth, 18x torch's time.
SHORT_ROW = 16
# Slices whose groups hold fewer threads than FILL leave a big GPU mostly idle (an H100 or
# H200 holds 132 x 2048 threads at once): they are split in parts, of at least PART_ROW
# entries for rows (a group of up to BLOCK threads reduces a part) and PART_COLUMN for
# columns (a thread does).
FILL = 1 << 18
PART_ROW = 1 << 11
PART_COLUMN = 32
# Entries a thread loads before it uses them (see the module's docstring); ``entries`` and
# the loops that call it are written out for four.
UNROLL = 4


def launch(slices, n, inner):
    """(blocks, threads, group) for ``slices`` > 0 slices of length ``n``: a group of
    threads per slice (the power of two >= n up to BLOCK for rows, inner == 1, of more than
    SHORT_ROW entries; one thread for shorter rows and for columns), as many groups per
    block as fit, no more than there are slices."""
    group = 1
    while inner == 1 and n > SHORT_ROW and group < n and group < BLOCK:
        group *= 2
    per_block = min(BLOCK // group, slices)
    return min(MAX_BLOCKS, -(-slices // per_block)), group * per_block, group


def flat_launch(size):
    """(blocks, threads) for a thread per element of ``size`` > 0 elements."""
    threads = min(BLOCK, size)
    return min(MAX_BLOCKS, -(-size // threads)), threads


def parts_of(slices, n, inner):
    """How many parts each of ``slices`` slices of length ``n`` is split into: enough that
    the launch has FILL threads, each part of at least PART_ROW (rows, inner == 1) or
    PART_COLUMN (columns) entries; 1 where that is not 2 or more."""
    threads = slices * launch(slices, n, inner)[2]
    shortest = PART_ROW if inner == 1 else PART_COLUMN
    parts = min(-(-FILL // threads), n // shortest, MAX_BLOCKS)
    return parts if parts >= 2 else 1


class NoneArguments:
    """A launch extension: numba-cuda types a None argument (``types.none``, whose data model
    is an opaque pointer, one u64 kernel parameter) but its launch has no case for passing
    one (``NotImplementedError: (none, None)``), so None goes as that pointer, null. The
    simulator takes None as it is and has no extensions."""

    def prepare_args(self, ty, val, stream=None, retr=None):
        return (types.uintp, 0) if ty == types.none else (ty, val)


try:  # numba-cuda's own caching (Numba's built-in CUDA target caches with Numba's: stamped)
    from numba.cuda.core import caching as _cuda_caching
except ImportError:
    pass
else:
    stamp_locators(_cuda_caching)

# @cuda.jit options of every kernel (the generated permuted copies: without the disk cache).
LAUNCH = {} if config.ENABLE_CUDASIM else dict(extensions=[NoneArguments()])
KERNEL = dict(cache=True, **LAUNCH)


@inline
def add_pair(a, b, x, y):
    """(a + x, b + y): two running sums (in compiled code, as every float operation)."""
    return a + np.float64(x), b + np.float64(y)


@inline
def reciprocal(d):
    """1 / d, or 0 where d is 0 (an all-ignored mean: nan loss, zero gradient, as torch)."""
    return 1.0 / d if d != 0 else 0.0


@inline
def cut_weight(x, w, below, cut):
    """The weight of entry x, or 0 with ``cut`` unless x < below (log1m_softmax's entries
    below the max)."""
    return 0.0 if cut and not (x < below) else np.float64(w)


# Kernels call the CPU's @njit functions with scalars only (under the simulator a kernel is
# Python and a device array cannot enter compiled code), so weights are read here: with
# w None that branch is compiled away.
@cuda.jit(device=True)
def weight_of(w, o, k, j):
    """w[o, k, j] as float64, or 1 without weights."""
    return 1.0 if w is None else np.float64(w[o, k, j])


@cuda.jit(device=True)
def class_weight(w, k):
    """The weight w[k] of class k as float64, or 1 without class weights."""
    return 1.0 if w is None else np.float64(w[k])


@cuda.jit(device=True)
def group_merge(sm, sc, ss, group):
    """Merge the partials the threads left in shared memory at their own index, in each
    group of ``group`` (a power of two) consecutive threads; every thread gets its group's
    partial. Every thread of the block calls it (it syncs).

    Plain sums ride along as partials with a common max 0, which merge by adding (c, s).
    """
    t = cuda.threadIdx.x
    lane = t % group
    cuda.syncthreads()
    half = group // 2
    while half > 0:
        if lane < half:
            sm[t], sc[t], ss[t] = merge(sm[t], sc[t], ss[t], sm[t + half], sc[t + half], ss[t + half])
        cuda.syncthreads()
        half //= 2
    base = t - lane
    m, c, s = sm[base], sc[base], ss[base]
    cuda.syncthreads()
    return m, c, s


@cuda.jit(device=True)
def group_sums(a, b, group, sm, sc, ss):
    """(sum of a, sum of b) over each group of threads (see ``group_merge``)."""
    t = cuda.threadIdx.x
    sm[t], sc[t], ss[t] = 0.0, a, b
    _, a, b = group_merge(sm, sc, ss, group)
    return a, b


@cuda.jit(device=True)
def entries(x, w, o, k, j, group, below, cut):
    """x[o, k + i group, j] for i < UNROLL (= 4) and their weights (``cut_weight``), every
    entry loaded before any is used: four loads in flight."""
    x0, x1, x2, x3 = x[o, k, j], x[o, k + group, j], x[o, k + 2 * group, j], x[o, k + 3 * group, j]
    return (x0, x1, x2, x3,
            cut_weight(x0, weight_of(w, o, k, j), below, cut),
            cut_weight(x1, weight_of(w, o, k + group, j), below, cut),
            cut_weight(x2, weight_of(w, o, k + 2 * group, j), below, cut),
            cut_weight(x3, weight_of(w, o, k + 3 * group, j), below, cut))


@cuda.jit(device=True)
def slice_partial(x, w, o, j, lo, hi, active, group, below, cut, sm, sc, ss):
    """The partial (m, c, s) of x[o, lo:hi, j] (x: (outer, n, inner), weights w like x or
    None), with ``cut`` of its entries below ``below`` only, reduced by the slice's group;
    an inactive group gives an empty partial. Every thread of the block calls it. Each
    thread takes its entries (lo + lane, stride group) UNROLL at a time, then the rest."""
    lane = cuda.threadIdx.x % group
    m = -np.inf
    c = 0.0
    s = 0.0
    if active:
        k = lo + lane
        while k + (UNROLL - 1) * group < hi:
            x0, x1, x2, x3, w0, w1, w2, w3 = entries(x, w, o, k, j, group, below, cut)
            m = max_with(max_with(max_with(max_with(m, x0, w0), x1, w1), x2, w2), x3, w3)
            k += UNROLL * group
        for k in range(k, hi, group):
            m = max_with(m, x[o, k, j], cut_weight(x[o, k, j], weight_of(w, o, k, j), below, cut))
        k = lo + lane
        while k + (UNROLL - 1) * group < hi:
            x0, x1, x2, x3, w0, w1, w2, w3 = entries(x, w, o, k, j, group, below, cut)
            c, s = add_term(c, s, x0, w0, m)
            c, s = add_term(c, s, x1, w1, m)
            c, s = add_term(c, s, x2, w2, m)
            c, s = add_term(c, s, x3, w3, m)
            k += UNROLL * group
        for k in range(k, hi, group):
            c, s = add_term(c, s, x[o, k, j], cut_weight(x[o, k, j], weight_of(w, o, k, j), below, cut), m)
    t = cuda.threadIdx.x
    sm[t], sc[t], ss[t] = m, c, s
    return group_merge(sm, sc, ss, group)


@cuda.jit(device=True)
def write_entries(op, x, w, o, j, lo, hi, group, shift, scale, dominant, out):
    """out[o, k, j] = the op at x[o, k, j] for k = lo, lo + group, ... below hi (a thread's
    entries of a slice), from the slice's constants; UNROLL entries at a time, then the rest."""
    k = lo
    while k + (UNROLL - 1) * group < hi:
        x0, x1, x2, x3, w0, w1, w2, w3 = entries(x, w, o, k, j, group, 0.0, False)
        out[o, k, j] = element(op, x0, w0, shift, scale, dominant)
        out[o, k + group, j] = element(op, x1, w1, shift, scale, dominant)
        out[o, k + 2 * group, j] = element(op, x2, w2, shift, scale, dominant)
        out[o, k + 3 * group, j] = element(op, x3, w3, shift, scale, dominant)
        k += UNROLL * group
    for k in range(k, hi, group):
        out[o, k, j] = element(op, x[o, k, j], weight_of(w, o, k, j), shift, scale, dominant)


@cuda.jit(device=True)
def block_slices(group):
    """(start, step, slot, lane): this block's first slice, the stride between its turns,
    and this thread's group (slot) and place in it (lane)."""
    per_block = cuda.blockDim.x // group
    slot = cuda.threadIdx.x // group
    lane = cuda.threadIdx.x % group
    return np.int64(cuda.blockIdx.x) * per_block, np.int64(cuda.gridDim.x) * per_block, slot, lane


@cuda.jit(device=True)
def slice_index(q, slices, inner):
    """(o, j) of slice q, or of the last slice for an idle group (q >= slices), so that
    views taken of it stay inside the array."""
    q = min(q, slices - 1)
    o = q // inner
    return o, q - o * inner


@cuda.jit(device=True)
def flat_range():
    """(start, step) of a grid-stride loop, a thread per element."""
    return (np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x,
            np.int64(cuda.gridDim.x) * cuda.blockDim.x)


@cuda.jit(**KERNEL)
def lse(x, w, group, out, sign):
    """out[o, j], sign[o, j] = log|sum_k w exp(x[o, k, j])| and its sign (``launch``)."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    outer, n, inner = x.shape
    slices = outer * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, slices, step):
        q = first + slot
        o = q // inner
        j = q - o * inner
        m, c, s = slice_partial(x, w, o, j, 0, n, q < slices, group, 0.0, False, sm, sc, ss)
        if q < slices and lane == 0:
            out[o, j], sign[o, j] = log_abs_sum(m, c, s)


@cuda.jit(**KERNEL)
def softmax(x, w, op, group, out):
    """out[o, k, j] = the op (``cpu.softmax``'s SOFTMAX, LOG_SOFTMAX or LOG1M_SOFTMAX) at
    x[o, k, j] over axis 1 (``launch``)."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    outer, n, inner = x.shape
    slices = outer * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, slices, step):
        q = first + slot
        o = q // inner
        j = q - o * inner
        active = q < slices
        m, c, s = slice_partial(x, w, o, j, 0, n, active, group, 0.0, False, sm, sc, ss)
        shift, scale = row_constants(op, m, c, s)
        dominant = np.nan
        if op == LOG1M_SOFTMAX:
            # Every group takes part (the syncs); only those whose dominant entry needs the
            # runner-up pass read.
            needed = active and needs_runner_up(op, m, c, s)
            bm, bc, bs = slice_partial(x, w, o, j, 0, n, needed, group, m, True, sm, sc, ss)
            if active and is_dominant(op, m, c, s):
                dominant = dominant_value(m, s, bm, bc, bs)
        if active:
            write_entries(op, x, w, o, j, lane, n, group, shift, scale, dominant, out)


@cuda.jit(**KERNEL)
def partials(x, w, group, cm, cc, cs, pm, pc, ps):
    """pm[o, p, j], pc, ps = the partial of part p of slice (o, j) (parts: pm.shape[1] of
    equal length). With the slices' partials cm, cc, cs (else None): the partial of the
    entries below the max, for slices whose dominant entry needs it only (log1m_softmax)."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    outer, n, inner = x.shape
    parts = pm.shape[1]
    length = -(-n // parts)
    tasks = outer * parts * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, tasks, step):
        q = first + slot
        active = q < tasks
        o = q // (parts * inner)
        p = (q // inner) % parts
        j = q % inner
        below = np.inf
        cut = cm is not None
        if cut and active:
            active = needs_runner_up(LOG1M_SOFTMAX, cm[o, j], cc[o, j], cs[o, j])
            below = cm[o, j] if active else np.inf
        lo = p * length
        m, c, s = slice_partial(x, w, o, j, lo, min(n, lo + length), active, group, below, cut, sm, sc, ss)
        if q < tasks and lane == 0:
            pm[o, p, j], pc[o, p, j], ps[o, p, j] = m, c, s


@cuda.jit(**KERNEL)
def merge_parts(pm, pc, ps, m, c, s, out, sign):
    """m[o, j], c, s = the merge of the parts pm[o, :, j], ...; with ``out`` (else None),
    out[o, j], sign[o, j] = its log-sum-exp and sign. A thread per slice."""
    outer, parts, inner = pm.shape
    start, step = flat_range()
    for q in range(start, outer * inner, step):
        o = q // inner
        j = q - o * inner
        mm, cc, ss = -np.inf, 0.0, 0.0
        for p in range(parts):
            mm, cc, ss = merge(mm, cc, ss, pm[o, p, j], pc[o, p, j], ps[o, p, j])
        m[o, j], c[o, j], s[o, j] = mm, cc, ss
        if out is not None:
            out[o, j], sign[o, j] = log_abs_sum(mm, cc, ss)


@cuda.jit(**KERNEL)
def apply(x, w, op, parts, group, m, c, s, bm, bc, bs, out):
    """out[o, k, j] = the op at x[o, k, j], from its slice's partial m, c, s (and for
    log1m_softmax bm, bc, bs: that of the entries below the max). The slices in ``parts``
    parts and a group of threads per part, as in ``partials``: each thread takes its slice's
    constants once, then its entries."""
    outer, n, inner = x.shape
    length = -(-n // parts)
    tasks = outer * parts * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, tasks, step):
        q = first + slot
        if q < tasks:
            o = q // (parts * inner)
            p = (q // inner) % parts
            j = q % inner
            shift, scale = row_constants(op, m[o, j], c[o, j], s[o, j])
            dominant = np.nan
            if is_dominant(op, m[o, j], c[o, j], s[o, j]):
                dominant = dominant_value(m[o, j], s[o, j], bm[o, j], bc[o, j], bs[o, j])
            lo = p * length
            write_entries(op, x, w, o, j, lo + lane, min(n, lo + length), group, shift, scale,
                          dominant, out)


@cuda.jit(**KERNEL)
def class_weights(target, w, ignore_index, n_classes, kept, error):
    """kept[o, j] = w[y] (1 without weights) for y = target[o, j], 0 where ignored. A class
    index outside [0, n_classes) keeps 0 and sets error = (1, that index): the host raises
    IndexError after the kernels, which read no logit of such a sample."""
    outer, inner = target.shape
    start, step = flat_range()
    for q in range(start, outer * inner, step):
        o = q // inner
        j = q - o * inner
        y = target[o, j]
        kept[o, j] = 0.0
        if y != ignore_index:
            if 0 <= y < n_classes:
                kept[o, j] = class_weight(w, y)
            else:
                error[0] = 1
                error[1] = y


@cuda.jit(**KERNEL)
def nll(x, target, w, ignore_index, loss, kept):
    """loss[o, j], kept[o, j] = -w_y x[o, y, j] and w_y, 0 and 0 where ignored or out of
    range (``class_weights`` reports those). A thread per sample."""
    outer, n_classes, inner = x.shape
    start, step = flat_range()
    for q in range(start, outer * inner, step):
        o = q // inner
        j = q - o * inner
        y = target[o, j]
        loss[o, j], kept[o, j] = 0.0, 0.0
        if y != ignore_index and 0 <= y < n_classes:
            loss[o, j], kept[o, j] = nll_sample(x[o, y, j], class_weight(w, y))


@cuda.jit(device=True)
def index_grad(xk, k, y, w, w_y, eps, n_classes, p_shift, total, total_weight, scale):
    """The gradient at logit xk of class k of a sample of class y (``index_target_grad``)."""
    return index_target_grad(xk, k == y, w_y, class_weight(w, k), eps, n_classes, p_shift, total,
                             total_weight, scale)


@cuda.jit(**KERNEL)
def cross_entropy_index(x, target, w, ignore_index, eps, scale, denominator, group, loss, grad):
    """Per-sample cross-entropy of logits x (outer, C, inner) with class indices target
    (outer, inner) into loss (outer, inner), and scale * its gradient into grad (like x, or
    None); scale is 1 / denominator[0] when a denominator (the mean's) is given. A sample
    ignored or out of range has loss and gradient 0. A group of threads per sample."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    if denominator is not None:
        scale = reciprocal(denominator[0])
    outer, n_classes, inner = x.shape
    slices = outer * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, slices, step):
        q = first + slot
        o, j = slice_index(q, slices, inner)
        y = target[o, j] if q < slices else ignore_index
        live = q < slices and y != ignore_index and 0 <= y < n_classes
        m, c, s = slice_partial(x, None, o, j, 0, n_classes, live, group, 0.0, False, sm, sc, ss)
        log_shift, lse, p_shift, total = sample_constants(m, c, s)
        smooth, total_weight = 0.0, 0.0
        if eps > 0:
            if live:
                for k in range(lane, n_classes, group):
                    w_k = class_weight(w, k)
                    smooth, total_weight = add_pair(
                        smooth, total_weight,
                        smoothing_term(x[o, k, j], w_k, log_shift, lse, eps / n_classes), w_k)
            smooth, total_weight = group_sums(smooth, total_weight, group, sm, sc, ss)
        if live:
            w_y = class_weight(w, y)
            if lane == 0:
                loss[o, j] = index_target_loss(x[o, y, j], w_y, eps, n_classes, log_shift, lse, smooth)
            if grad is not None:
                k = lane
                while k + (UNROLL - 1) * group < n_classes:
                    x0, x1, x2, x3, _, _, _, _ = entries(x, None, o, k, j, group, 0.0, False)
                    grad[o, k, j] = index_grad(x0, k, y, w, w_y, eps, n_classes, p_shift, total,
                                               total_weight, scale)
                    grad[o, k + group, j] = index_grad(x1, k + group, y, w, w_y, eps, n_classes,
                                                       p_shift, total, total_weight, scale)
                    grad[o, k + 2 * group, j] = index_grad(x2, k + 2 * group, y, w, w_y, eps, n_classes,
                                                           p_shift, total, total_weight, scale)
                    grad[o, k + 3 * group, j] = index_grad(x3, k + 3 * group, y, w, w_y, eps, n_classes,
                                                           p_shift, total, total_weight, scale)
                    k += UNROLL * group
                for k in range(k, n_classes, group):
                    grad[o, k, j] = index_grad(x[o, k, j], k, y, w, w_y, eps, n_classes, p_shift,
                                               total, total_weight, scale)
        elif q < slices:
            if lane == 0:
                loss[o, j] = 0.0
            if grad is not None:
                for k in range(lane, n_classes, group):
                    grad[o, k, j] = 0.0


@cuda.jit(**KERNEL)
def cross_entropy_probability(x, target, w, eps, scale, group, loss, grad):
    """Per-sample cross-entropy of logits x (outer, C, inner) with class probabilities
    target (like x) into loss (outer, inner), and scale * its gradient into grad (like x,
    or None). A group of threads per sample."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    outer, n_classes, inner = x.shape
    slices = outer * inner
    start, step, slot, lane = block_slices(group)
    for first in range(start, slices, step):
        q = first + slot
        o, j = slice_index(q, slices, inner)
        live = q < slices
        m, c, s = slice_partial(x, None, o, j, 0, n_classes, live, group, 0.0, False, sm, sc, ss)
        log_shift, lse, p_shift, total = sample_constants(m, c, s)
        value, weighted_total = 0.0, 0.0
        if live:
            for k in range(lane, n_classes, group):
                term, wt = probability_target_terms(x[o, k, j], target[o, k, j], class_weight(w, k),
                                                    eps, n_classes, log_shift, lse)
                value, weighted_total = add_pair(value, weighted_total, term, wt)
        value, weighted_total = group_sums(value, weighted_total, group, sm, sc, ss)
        if live:
            if lane == 0:
                loss[o, j] = value
            if grad is not None:
                for k in range(lane, n_classes, group):
                    grad[o, k, j] = probability_target_grad(
                        x[o, k, j], target[o, k, j], class_weight(w, k), eps, n_classes, p_shift,
                        total, weighted_total, scale)


@cuda.jit(**KERNEL)
def total(values, denominator, divisor, out):
    """out[0] = the sum of values (2-D) / denominator[0] (or / divisor when denominator is
    None). One block."""
    sm = cuda.shared.array(BLOCK, float64)
    sc = cuda.shared.array(BLOCK, float64)
    ss = cuda.shared.array(BLOCK, float64)
    outer, inner = values.shape
    tally, unused = 0.0, 0.0
    for q in range(cuda.threadIdx.x, outer * inner, cuda.blockDim.x):
        o = q // inner
        tally, unused = add_pair(tally, unused, values[o, q - o * inner], 0.0)
    tally, unused = group_sums(tally, unused, cuda.blockDim.x, sm, sc, ss)
    if denominator is not None:
        divisor = denominator[0]
    if cuda.threadIdx.x == 0:
        out[0] = divided(tally, divisor)


@inline
def divided(a, b):
    """a / b with NumPy's special values (0 / 0 is nan), in compiled code."""
    return a / b


_COPY_SOURCE = '''
def kernel(src, dst, strides):
    start = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    for f in range(start, {flat}.shape[0], step):
{indices}
        {assignment}
'''


_COPIES = {}


def permuted_copy(ndim, gather):
    """Kernel (src, dst, strides) copying between an ``ndim``-D array and a flat C-ordered
    buffer that holds the same elements with the axes permuted (and converting the dtype).

    ``strides[a]`` is the step (in elements) of axis ``a`` of the N-D array in the flat
    buffer. ``gather``: src N-D (any strides), dst the flat buffer; else src is the flat
    buffer and dst the N-D array. Launch over the buffer's length (``flat_launch``).
    Generated per ndim: a kernel cannot build an index tuple of variable length.
    """
    key = (ndim, gather)
    if key not in _COPIES:
        nd = "src" if gather else "dst"
        indices = "\n".join(f"        i{a} = (f // strides[{a}]) % {nd}.shape[{a}]" for a in range(ndim))
        index = ", ".join(f"i{a}" for a in range(ndim))
        assignment = f"dst[f] = src[{index}]" if gather else f"dst[{index}] = src[f]"
        source = _COPY_SOURCE.format(flat="dst" if gather else "src", indices=indices,
                                     assignment=assignment)
        namespace = {"cuda": cuda, "np": np}
        exec(compile(source, f"<numba_lse.cuda permuted_copy ndim={ndim}>", "exec"), namespace)
        _COPIES[key] = cuda.jit(namespace["kernel"], **LAUNCH)
    return _COPIES[key]


@cuda.jit(**KERNEL)
def nan_where_negative(out, sign):
    """out[i] = nan where sign[i] < 0 (1-D arrays): the log of a negative sum, without
    return_sign. A thread per element."""
    start, step = flat_range()
    for i in range(start, out.shape[0], step):
        if sign[i] < 0:
            out[i] = math.nan
