"""Cross-entropy with class-index or class-probability targets, and its gradient, fused.

One sample is a 1-D slice x of C logits (a row of (N, C), or x[o, :, j] of (N, C, d)). From
the sample's partial (m, c, s) of ``reduce.py``, with ``row_constants`` of log_softmax,
log p_k = (x_k - shift) - L exactly as ``log_softmax`` computes it, and

  class index y, weights w, smoothing eps:
    loss  = (1 - eps) w_y (-log p_y) + (eps / C) sum_k w_k (-log p_k)
    dloss/dx_k = (1 - eps) w_y (p_k - [k = y]) + (eps / C) (W p_k - w_k),  W = sum_k w_k
  class probabilities t, smoothed t'_k = (1 - eps) t_k + eps / C:
    loss  = sum_k w_k t'_k (-log p_k)
    dloss/dx_k = T p_k - w_k t'_k,  T = sum_k w_k t'_k

with p_k = exp(x_k - m) / (c + s). The gradient is written in the same sweep that reads the
logits for the second time, times the reduction's scale (1, or 1 / the mean's denominator);
nothing of the size of the logits is allocated besides the gradient itself. Where the kernel
reduces rows of SHORT_ROW to CHUNK logits itself, it keeps the exps of their sums (a block of
rows, FUSED_BYTES of float64, or one row) and the gradient scales them, one exp per logit,
not two, as softmax does (``partial_keeping_exps``: the same sums, so the loss is the same
with the gradient and without).
"""


import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .intrinsics import prefer_wide_vectors, prefetch, prefetch_bytes_after
from .jit import (TASK_ELEMENTS, inline, inline_ir, kernel, restore_threads, run_tasks,
                  threads_for)
from .exp import exp_nonpositive
from .partials import (BLOCK, FOR_OUTPUTS, TIES_IN_SUM, add_compensated, block_max, is_present,
                       merge, row_of, sample_of, store, store_at, sum_compensated, terms_fetching,
                       weight_at, zero_fill)
from .reduce import CHUNK, SHORT_ROW, TILE_ROWS, chunked_partial, tile_partials
from .softmax import LOG_SOFTMAX, SOFTMAX, element, element_of_exp, row_constants


# Each loss is a sum of one term per class and each gradient one value per class: the
# scalar functions below. The CPU loops over the classes of a sample on one thread; the GPU
# (``cuda/kernels.py``) spreads them over a group of threads and adds the sums in shared
# memory.

@inline
def smoothing_term(x_k, w_k, log_shift, lse, share):
    """share w_k (-log p_k), share = eps / C: a term of the label-smoothing sum of a
    class-index sample, scaled before it is summed, so that the sum overflows only where
    the loss does (three logits of -1e308 and a 0 with eps = 1: 6.7e307, not inf)."""
    return (share * np.float64(w_k)) * (lse - (np.float64(x_k) - log_shift))


@inline
def index_target_loss(x_y, w_y, eps, n_classes, log_shift, lse, smooth):
    """The loss of a sample with class index y, given its smoothing sum (``smoothing_term``'s,
    scaled by eps / C)."""
    loss = (1.0 - eps) * np.float64(w_y) * (lse - (np.float64(x_y) - log_shift))
    if eps > 0:
        # Only with smoothing: a -inf logit makes its own term infinite, as in torch.
        loss += smooth
    return loss


@inline
def index_target_grad(x_k, is_y, w_y, w_k, eps, n_classes, p_shift, total, total_weight, scale):
    """scale * dloss/dx_k of a sample with class index y (``is_y``: whether k = y)."""
    p = element(SOFTMAX, x_k, 1.0, p_shift, total, np.nan)
    return index_target_grad_at(p, is_y, w_y, w_k, eps, n_classes, total_weight, scale)


@inline
def index_target_grad_at(p, is_y, w_y, w_k, eps, n_classes, total_weight, scale):
    """``index_target_grad`` given the softmax p = p_k of the sample at class k."""
    g = (1.0 - eps) * np.float64(w_y) * (p - (1.0 if is_y else 0.0))
    if eps > 0:
        g += eps / n_classes * (total_weight * p - np.float64(w_k))
    return scale * g


def softmax_at(x, exps, k, shift, total):
    """softmax at x[k] of a sample with constants (shift, total): from exps[k], its exp kept
    by the sums (``partial_keeping_exps``), or computed where exps is None."""


@overload(softmax_at, inline="always")
def _softmax_at(x, exps, k, shift, total):
    if isinstance(exps, types.NoneType):
        return lambda x, exps, k, shift, total: element(SOFTMAX, x[k], 1.0, shift, total, np.nan)
    return lambda x, exps, k, shift, total: element_of_exp(SOFTMAX, x[k], 1.0, exps[k], shift,
                                                           total, 1.0 / total, np.nan)


@inline_ir
def index_target_sample(x, y, w, eps, constants, scale, grad, exps):
    """Loss of one sample with class index y; writes scale * dloss/dx into grad (or not),
    from the exps of its sums where kept (``softmax_at``)."""
    log_shift, lse, p_shift, total = constants
    n_classes = x.shape[0]
    smooth, smooth_error = 0.0, 0.0
    total_weight, weight_error = 0.0, 0.0
    if eps > 0:
        # Sums over the classes, in sequence: compensated for float64 data (``add_loss``),
        # whose plain sums lost 40-80 ulp of a smoothed loss over 32000-70000 classes.
        plain = sums_in_sequence(x)
        for k in range(n_classes):
            smooth, smooth_error = add_loss(smooth, smooth_error,
                                            smoothing_term(x[k], weight_at(w, k), log_shift, lse,
                                                           eps / n_classes),
                                            plain)
            total_weight, weight_error = add_loss(total_weight, weight_error,
                                                  np.float64(weight_at(w, k)), plain)
        smooth += smooth_error
        total_weight += weight_error
    if is_present(grad):
        for k in range(n_classes):
            store(grad, k, index_target_grad_at(softmax_at(x, exps, k, p_shift, total), k == y,
                                                weight_at(w, y), weight_at(w, k), eps, n_classes,
                                                total_weight, scale))
    return index_target_loss(x[y], weight_at(w, y), eps, n_classes, log_shift, lse, smooth)


@inline
def smoothed_weight(w_k, t_k, eps, n_classes):
    """w_k t'_k, with t'_k = (1 - eps) t_k + eps / C."""
    return np.float64(w_k) * ((1.0 - eps) * np.float64(t_k) + eps / n_classes)


@inline
def probability_target_terms(x_k, t_k, w_k, eps, n_classes, log_shift, lse):
    """(w_k t'_k (-log p_k), w_k t'_k): the terms of class k of a probability-target loss
    and of its gradient's total."""
    wt = smoothed_weight(w_k, t_k, eps, n_classes)
    return -(wt * ((np.float64(x_k) - log_shift) - lse)), wt


@inline
def probability_target_grad(x_k, t_k, w_k, eps, n_classes, p_shift, total, weighted_total, scale):
    """scale * dloss/dx_k of a sample with class probabilities t."""
    p = element(SOFTMAX, x_k, 1.0, p_shift, total, np.nan)
    return probability_target_grad_at(p, t_k, w_k, eps, n_classes, weighted_total, scale)


@inline
def probability_target_grad_at(p, t_k, w_k, eps, n_classes, weighted_total, scale):
    """``probability_target_grad`` given the softmax p = p_k of the sample at class k."""
    return scale * (weighted_total * p - smoothed_weight(w_k, t_k, eps, n_classes))


@inline_ir
def probability_target_sample(x, t, w, eps, constants, scale, grad, exps):
    """Loss of one sample with class probabilities t; writes scale * dloss/dx into grad, from
    the exps of its sums where kept (``softmax_at``)."""
    log_shift, lse, p_shift, total = constants
    n_classes = x.shape[0]
    loss, loss_error = 0.0, 0.0
    weighted_total, total_error = 0.0, 0.0
    plain = sums_in_sequence(x)  # compensated for float64 data, as ``index_target_sample``'s
    for k in range(n_classes):
        term, wt = probability_target_terms(x[k], t[k], weight_at(w, k), eps, n_classes, log_shift, lse)
        loss, loss_error = add_loss(loss, loss_error, term, plain)
        weighted_total, total_error = add_loss(weighted_total, total_error, wt, plain)
    loss += loss_error
    weighted_total += total_error
    if is_present(grad):
        for k in range(n_classes):
            store(grad, k, probability_target_grad_at(softmax_at(x, exps, k, p_shift, total), t[k],
                                                      weight_at(w, k), eps, n_classes,
                                                      weighted_total, scale))
    return loss


@inline
def sample_constants(m, c, s):
    """(shift, lse) of log_softmax and (shift, total) of softmax, for one sample's partial.

    A sample with a +inf logit has lse nan, so its loss is nan, as torch's (whose
    log_softmax is nan throughout such a row), and as its gradient is: not the +inf that
    ``log_softmax``'s -inf at the row's finite entries (SciPy's) would give."""
    log_shift, lse = row_constants(LOG_SOFTMAX, m, c, s)
    p_shift, total = row_constants(SOFTMAX, m, c, s)
    return log_shift, (np.nan if m == np.inf else lse), p_shift, total


# Samples per task of the cross-entropy kernels. Their constants are computed a block at a
# time in a vector loop (one sample at a time, the logs and divides of the constants cost
# more than its loss); for short rows, their partials too, a transposed tile at a time.
SAMPLE_BLOCK = TILE_ROWS
# Where the kernels reduce longer rows themselves, a block holds at most this many bytes of
# logits, so that the sweep after the partials (loss, gradient) reads them from L2.
FUSED_BYTES = 1 << 18


# Marks (``cross_entropy_samples``' ``keep``) rows the kernel reduces itself, m None, whose
# sums keep their exps for the gradient (``keeps_exps``); None for the others.
KEEP_EXPS = True
# Marks (``cross_entropy_samples``' m) rows shorter than SHORT_ROW that the kernel reduces
# itself, a transposed tile at a time (m None: longer rows, one by one). An int: a type of
# its own, so that a kernel compiles the one way it takes (cross_entropy of 64x100 float32,
# nothing cached: 9.3 s with both ways in one kernel).
SHORT_TILES = 0


def keeps_exps(n):
    """Whether rows of n logits, reduced by the kernel itself, keep the exps of their sums for
    a gradient: rows of SHORT_ROW to CHUNK entries (``partial_keeping_exps``)."""
    return SHORT_ROW <= n <= CHUNK


@kernel
def rescale(exps, factor):
    """exps *= factor, with 0 where factor is 0 (an exp kept as nan, exp(-inf - -inf), of an
    entry whose block had only -inf so far, is 0 against the row's max)."""
    prefer_wide_vectors()
    for i in range(exps.shape[0]):
        exps[i] = 0.0 if factor == 0 else exps[i] * factor


@inline_ir
def partial_keeping_exps(row, exps, for_outputs):
    """``chunked_partial(row, None, for_outputs)`` of a row of at most CHUNK logits
    (FOR_OUTPUTS or TIES_IN_SUM), the same bits, keeping the exps of its terms for the row's
    max m: exps[i] = exp(row[i] - m).

    Its blocks sum as ``partials.partial_of_slice``'s do (``terms_fetching``, whose
    ``exps_and_sum`` gives ``block_ties_sum``'s sums, bit for bit, and for TIES_IN_SUM
    ``block_sum`` keeps its exps as it sums), each block's exps taken
    for its running max, then rescaled to m where that was lower: one multiply more (a
    rounding of 2^-53) for the blocks before the row's max."""
    n = row.shape[0]
    n_blocks = -(-n // BLOCK)
    maxima = np.empty(n_blocks)
    m, c, s = -np.inf, 0.0, 0.0
    for b in range(n_blocks):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        block_m = block_max(row[lo:hi], None, m)
        block_c, block_s = terms_fetching(row[lo:hi], None, block_m, for_outputs, exps[lo:hi])
        m, c, s = merge(m, c, s, block_m, block_c, block_s)
        maxima[b] = block_m
    # The last block's running max is the row's: its exps are kept as they are.
    for b in range(n_blocks - 1):
        if maxima[b] < m:
            rescale(exps[b * BLOCK:(b + 1) * BLOCK], exp_nonpositive(maxima[b] - m))
    return m, c, s


def row_partial(row, exps, for_outputs):
    """``chunked_partial(row, None, for_outputs)``, or where exps is given (not None),
    ``partial_keeping_exps(row, exps, for_outputs)``: the same sums."""


@overload(row_partial)
def _row_partial(row, exps, for_outputs):
    if isinstance(exps, types.NoneType):
        return lambda row, exps, for_outputs: chunked_partial(row, None, for_outputs)
    return lambda row, exps, for_outputs: partial_keeping_exps(row, exps, for_outputs)


# A float32 row's TIES_IN_SUM sum s: each term goes through at most 144 + n / 128 roundings
# of 2^-53 (relative) on its way into s (128 additions within a 128-entry step of
# ``partials.terms_fetching``, were its loop not split across vector lanes at all, 8 steps'
# sums per block, and an exp, a product and a sum, 4, per merge of a block or a chunk), so
# s is within E = (144 + n / 128) 2^-53 s of the exact sum of its terms (to first order).
# Its lse, log1p(s - 1), then has a relative error of at most E / (s - 1) (log s >= (s - 1)
# / s) from the roundings, below 2^-31 where s - 1 >= (144 + n / 128) SMALL_SUM s, and 2^-34
# from the exps (the max's term is exact): 1/100 of a float32 ulp. Below that (a loss under
# (144 + n / 128) 2^-22: 3.6e-5 for 1000 classes, its target ~17 above 999 others), the row
# is summed again with its ties counted.
SMALL_SUM = 2.0 ** -22


def loss_partial(row, exps):
    """The partial (m, c, s) of a row of logits (``row_partial``, exps kept where given):
    FOR_OUTPUTS; for float32 logits TIES_IN_SUM (``partials.TIES_IN_SUM``: c = 0 and the ties
    in s where the max is finite), except where s - 1 is too small for its digits (SMALL_SUM),
    which are summed again as FOR_OUTPUTS. With exps or without, the same partial: the loss
    is the same with the gradient and without."""


@overload(loss_partial)
def _loss_partial(row, exps):
    if row.dtype != types.float32:
        return lambda row, exps: row_partial(row, exps, FOR_OUTPUTS)

    def ties_in_sum(row, exps):
        m, c, s = row_partial(row, exps, TIES_IN_SUM)
        if c == 0 and not s - 1.0 >= (144.0 + row.shape[0] / 128.0) * SMALL_SUM * s:
            return row_partial(row, exps, FOR_OUTPUTS)  # a nan sum too, nan again
        return m, c, s

    return ties_in_sum


def block_partials(x, m, c, s, lo, hi, exps):
    """The partials (m, c, s) of samples lo..hi: slices of the 1-D m, c, s, or those of the
    rows x[lo:hi] of the 2-D x, computed here: a transposed tile (``tile_partials``) where m
    is SHORT_TILES, else (m None) row by row, with the exps of their sums kept in row r - lo
    of exps where it is given (``exps_buffer``): the same sums, so the loss is the same
    with the gradient and without."""


@overload(block_partials, inline="always")
def _block_partials(x, m, c, s, lo, hi, exps):
    if isinstance(m, types.Array):
        return lambda x, m, c, s, lo, hi, exps: (m[lo:hi], c[lo:hi], s[lo:hi])
    if isinstance(m, types.Integer):  # SHORT_TILES
        def tile(x, m, c, s, lo, hi, exps):
            bm = np.empty(hi - lo)
            bc = np.empty(hi - lo)
            bs = np.empty(hi - lo)
            tile_partials(x, None, lo, hi, bm, bc, bs, FOR_OUTPUTS)
            return bm, bc, bs
        return tile

    def rows(x, m, c, s, lo, hi, exps):
        bm = np.empty(hi - lo)
        bc = np.empty(hi - lo)
        bs = np.empty(hi - lo)
        for r in range(lo, hi):
            bm[r - lo], bc[r - lo], bs[r - lo] = loss_partial(x[r], row_of(exps, r - lo))
        return bm, bc, bs
    return rows


def samples_per_block(x, m, keep):
    """SAMPLE_BLOCK, or fewer where the kernel reduces rows of SHORT_ROW or more itself (m
    None): as many as FUSED_BYTES hold (of their exps, float64, where it keeps them), at
    least one."""


@overload(samples_per_block, inline="always")
def _samples_per_block(x, m, keep):
    if isinstance(m, types.NoneType):
        keeps = not isinstance(keep, (types.NoneType, types.Omitted))
        itemsize = 8 if keeps else as_dtype(x.dtype).itemsize
        return lambda x, m, keep: max(1, min(SAMPLE_BLOCK,
                                             FUSED_BYTES // (x.shape[1] * itemsize)))
    return lambda x, m, keep: SAMPLE_BLOCK


def exps_buffer(x, keep, grad, block):
    """Where rows keep the exps of their sums (``keep`` KEEP_EXPS) for a gradient (grad not
    None), the buffer that ``block_partials`` keeps them in, a row per sample of a block;
    else None."""


@overload(exps_buffer, inline="always")
def _exps_buffer(x, keep, grad, block):
    if isinstance(keep, (types.NoneType, types.Omitted)) or isinstance(grad, types.NoneType):
        return lambda x, keep, grad, block: None
    return lambda x, keep, grad, block: np.empty((block, x.shape[1]))


@inline
def next_sample(o, j, inner):
    """The index (o, j) of the sample after (o, j), without an integer divide per sample."""
    j += 1
    if j == inner:
        return o + 1, 0
    return o, j


@kernel
def block_constants(m, c, s):
    """``sample_constants`` of each partial (m, c, s)[i], as four arrays: a vector loop."""
    prefer_wide_vectors()
    log_shift = np.empty(m.shape[0])
    lse = np.empty(m.shape[0])
    p_shift = np.empty(m.shape[0])
    total = np.empty(m.shape[0])
    for i in range(m.shape[0]):
        log_shift[i], lse[i], p_shift[i], total[i] = sample_constants(m[i], c[i], s[i])
    return log_shift, lse, p_shift, total


@inline_ir
def sample_block(x, m, c, s, b, block, size, inner, exps):
    """(count, o, j, constants) of block b of the samples (``block`` per block): its number of
    samples, the index (o, j) of its first, and the four arrays of its ``block_constants``
    (exps: as ``block_partials`` keeps them)."""
    lo = b * block
    hi = min(size, lo + block)
    bm, bc, bs = block_partials(x, m, c, s, lo, hi, exps)
    o = lo // inner
    return hi - lo, o, lo - o * inner, block_constants(bm, bc, bs)


def sample_loss(x, target, w, ignore_index, eps, constants, scale, grad, o, j, exps):
    """The loss of sample (o, j) of logits x (outer, C, inner) with its ``sample_constants``,
    writing scale * dloss/dx to its part of grad (unless None; from exps, the exps of its
    sums, where kept): ``index_target_sample`` for class indices (an ignored sample's loss
    and gradient 0), or ``probability_target_sample`` for class probabilities, as the
    target's dtype says."""


@overload(sample_loss, inline="always")
def _sample_loss(x, target, w, ignore_index, eps, constants, scale, grad, o, j, exps):
    if isinstance(target.dtype, types.Float):
        def probabilities(x, target, w, ignore_index, eps, constants, scale, grad, o, j, exps):
            return probability_target_sample(sample_of(x, o, j), sample_of(target, o, j), w, eps,
                                             constants, scale, sample_of(grad, o, j), exps)
        return probabilities

    def index(x, target, w, ignore_index, eps, constants, scale, grad, o, j, exps):
        g = sample_of(grad, o, j)
        y = target[o, j]
        if y == ignore_index:
            zero_fill(g)
            return 0.0
        return index_target_sample(sample_of(x, o, j), y, w, eps, constants, scale, g, exps)
    return index


@kernel
def samples_run(x, target, w, ignore_index, eps, m, c, s, scale, loss, grad, keep, block, first,
                end):
    """Blocks first .. end - 1 of ``block`` samples of ``cross_entropy_samples``."""
    prefer_wide_vectors()
    outer, inner = loss.shape
    exps = exps_buffer(x, keep, grad, block)
    for b in range(first, end):
        count, o, j, (log_shift, lse, p_shift, total) = sample_block(x, m, c, s, b, block, outer * inner,
                                                                     inner, exps)
        for i in range(count):
            constants = (log_shift[i], lse[i], p_shift[i], total[i])
            loss[o, j] = sample_loss(x, target, w, ignore_index, eps, constants, scale, grad, o, j,
                                     row_of(exps, i))
            o, j = next_sample(o, j, inner)


@kernel
def cross_entropy_samples(x, target, w, ignore_index, eps, m, c, s, scale, loss, grad, keep=None):
    """Per-sample losses of logits x (outer, C, inner); target: class indices (outer, inner),
    or class probabilities like x (``sample_loss``; ignore_index then unused).

    m, c, s: the samples' partials, 1-D (sample o * inner + j); or, where x is 2-D with
    rows that are best reduced here, a block at a time (``block_partials``; the rows that
    ``softmax.rows_way`` does not take CHUNKED), m SHORT_TILES for rows shorter than
    SHORT_ROW, else None, and c, s None; loss: (outer, inner) output; grad: like x, or
    None. An ignored sample's loss and gradient are 0 and its logits are never read (bar
    the partials computed here). Where inner is 1, x, a probability target and grad may be
    given as (outer, C) instead (``sample_of``).
    keep: KEEP_EXPS where m is None, grad is wanted and the rows ``keeps_exps``, else None.
    """
    threads = threads_for(x.size)
    block = samples_per_block(x, m, keep)
    n_blocks = -(-loss.size // block)
    run_tasks(samples_run, (x, target, w, ignore_index, eps, m, c, s, scale, loss, grad, keep,
                            block), n_blocks, block * x.shape[1])
    restore_threads(threads)


@inline
def keep_alive(x):
    """Nothing: a use of x after a branch that reads it, so that Numba releases its reference
    once, after the branch, not at the end of each way (an NRT_incref and _decref per
    sample that LLVM could not prune: the gather of a serial kernel 2-8x slower)."""


@inline
def nll_sample(x_y, w_y):
    """(loss, weight kept) of a sample whose log-probability at its class is x_y."""
    w_y = np.float64(w_y)
    return -(w_y * np.float64(x_y)), w_y


# Samples per task of ``nll_index`` (whole rows of (N, C, d) data: a row of d > NLL_BLOCK
# samples is a block, summed in pieces of NLL_BLOCK): its sums run in a fixed order within a
# block (``nll_block``), then over blocks in order, so the result does not depend on the
# number of threads.
NLL_BLOCK = 4096
# How many samples ahead ``nll_block`` prefetches (16 to 64 measured alike; 8 slower).
NLL_AHEAD = 32
# Rows this far apart or more are gathered as far (``gathers_far``); from memory, rows a
# cache line apart or more (FAR_LINE_BYTES) too.
FAR_ROW_BYTES = 1024
FAR_LINE_BYTES = 64
# ``near_rows`` hints the cache lines of the next FETCH_ROWS rows as it gathers, where x holds
# at least FETCH_ROWS_FROM bytes (data that comes from memory: as large as the outputs that
# ``reduce.transpose_back`` streams past the caches). In a prototype, steps of 32 to 128
# rows, or the whole block at once, measured alike from memory, and steps of 32 cost least
# where x was in the L3 after all (7-11 %; 64-128: 15-40 %; the whole block: 20-45 %).
FETCH_ROWS = 32
FETCH_ROWS_FROM = 1 << 24


@inline_ir
def nll_of_sample(x, target, w, ignore_index, loss, o, j):
    """(loss, weight kept) of the sample (o, j), (0, 0) where its target is ignore_index,
    the loss written to ``loss`` too (unless None). Its class index was checked
    (``_validate.check_classes``: kernels never check), so it is read unsigned, with no
    wraparound for a negative index: one outside [0, C) would read outside x. So are o and
    j (never negative): Numba's wraparound of a signed index, a shift, an and and an add
    per index, made the loop of a gather of near rows, bound by how many of its loads are
    under way, 1.1-1.2x slower."""
    row, column = np.uint64(o), np.uint64(j)
    y = target[row, column]
    value, w_y = 0.0, 0.0
    if y != ignore_index:
        value, w_y = nll_sample(x[row, np.uint64(y), column], weight_at(w, y))
    store_at(loss, o, j, value)
    keep_alive(x)
    keep_alive(w)
    return value, w_y


def sums_in_sequence(x):
    """Whether the sums of ``nll_index`` over the log-probabilities x, and those of a
    cross-entropy sample over its classes x, are plain sums in sequence (float32 x), not
    compensated ones (float64 x): a constant."""


@overload(sums_in_sequence, inline="always")
def _sums_in_sequence(x):
    plain = x.dtype == types.float32
    return lambda x: plain


@inline
def add_loss(total, error, value, plain):
    """(total, error) with value added: plainly where ``plain`` (``sums_in_sequence``), else
    compensated (``add_compensated``).

    Why float32 data's may be plain: a sum in sequence of at most NLL_BLOCK float64 terms
    (exact: products of two float32) is within 4095 2^-53 < 2^-41 of the sum of their
    magnitudes, and the blocks' sums are merged compensated. That is 2^-17 of a float32
    ulp where the losses share a sign (log-probabilities, nonnegative weights), and, with
    the kept weights' sum, the division and the rounding to float32, within one ulp while
    the sum of their magnitudes is at most 2^15 times the magnitude of their sum. The
    compensated sum's six additions more per sample made the gather of a million rows of
    10 1.3-1.5x slower (its loop is bound by how many of its loads are under way), and its
    buffer of losses, summed after in vector lanes, 1.2-1.4x; a float64 result needs them."""
    if plain:
        return total + value, error
    return add_compensated(total, error, value)


@inline_ir
def add_nll_sample(x, target, w, ignore_index, loss, o, j, total, total_error, kept, kept_error):
    """The sums (total, its error, kept weight, its error) with the sample (o, j) added,
    writing its loss to ``loss`` (unless None)."""
    value, w_y = nll_of_sample(x, target, w, ignore_index, loss, o, j)
    plain = sums_in_sequence(x)
    total, total_error = add_loss(total, total_error, value, plain)
    if is_present(w):
        kept, kept_error = add_loss(kept, kept_error, w_y, plain)
    else:
        kept += w_y  # a count (w_y is 0 or 1): exact below 2^53
    return total, total_error, kept, kept_error


@inline
def gathers_far(x):
    """Whether ``nll_block`` gathers (N, C) data x (of shape (N, C, 1)) as rows far apart
    (``far_rows``): rows FAR_ROW_BYTES or more apart, or, where x comes from memory (it
    holds FETCH_ROWS_FROM bytes or more), FAR_LINE_BYTES or more. Rows of a cache line or
    more leave lines that the gather never reads, which ``near_rows``' hints fetched all the
    same: on the Zen 3 VM of session 41, from memory, ``far_rows`` (the one entry per row
    that the gather reads, hinted NLL_AHEAD samples ahead) was 1.25-1.45x faster on float64
    rows of 8 to 30 entries and 2.4-2.8x on rows of 100; narrower rows measured best with
    the hints (1e6x10 float32: 0.92-0.96x without them or with ``far_rows``; 4e6x4 float64
    0.88-0.97x). In the caches, ``near_rows``' buffered sums stay faster for float64 data
    (1e5x10: ``far_rows`` 0.87x)."""
    step = abs(x.strides[0])
    return step >= FAR_ROW_BYTES or (step >= FAR_LINE_BYTES and x.size * x.itemsize >= FETCH_ROWS_FROM)


@kernel
def far_rows(x, target, w, ignore_index, loss, lo, hi):
    """``nll_block`` of (N, C) data (x of shape (N, C, 1)) whose rows are far apart
    (``gathers_far``), in a loop of its own (j a constant: 10-30 % faster than the general one), and a
    kernel of its own (in ``nll_block``'s body, its loop kept the array's shape, strides and
    address on the stack: 1.06-1.12x slower). Each load waits on memory, so the loop asks
    for the entry NLL_AHEAD samples on while it sums (4096x1000, caches cold: 1.6x faster),
    and sums as it goes (a gather first, as ``near_rows``, and the sums after it measured
    1.25x slower: the sums no longer hide in the loads' wait)."""
    total, total_error, kept, kept_error = 0.0, 0.0, 0.0, 0.0
    for o in range(lo, hi):
        if o + NLL_AHEAD < hi:
            y = target[np.uint64(o + NLL_AHEAD), 0]  # unsigned: no wraparound
            if 0 <= y < x.shape[1]:
                prefetch(x, o + NLL_AHEAD, y, 0)
        total, total_error, kept, kept_error = add_nll_sample(
            x, target, w, ignore_index, loss, o, 0, total, total_error, kept, kept_error)
    return total, total_error, kept, kept_error


@kernel
def nll_block(x, target, w, ignore_index, loss, lo, hi):
    """The sums (total, its error, kept weight, its error) of ``nll_index`` over the samples
    of rows lo:hi (``add_loss``), writing their losses to ``loss`` (unless None).

    A kernel of its own, called by ``nll_index``'s one-block path and its threads'
    ``nll_blocks_run``, not inlined in ``nll_index``: inlined in its parallel loop (a prange
    then), Numba's parallel passes made ``nll_index``'s first compile take 20 s, not 6
    (perf/HISTORY.md session 38)."""
    if x.shape[2] == 1 and not gathers_far(x):
        return near_rows(x, target, w, ignore_index, loss, lo, hi)
    if x.shape[2] == 1:
        return far_rows(x, target, w, ignore_index, loss, lo, hi)
    total, total_error, kept, kept_error = 0.0, 0.0, 0.0, 0.0
    # Each row's samples, in pieces of at most NLL_BLOCK, merged as the blocks are: a
    # block is one row (``nll_index``) where a row holds more, and no sum in sequence
    # is longer (``add_loss``).
    for o in range(lo, hi):
        for j0 in range(0, x.shape[2], NLL_BLOCK):
            part, part_error, part_kept, part_kept_error = 0.0, 0.0, 0.0, 0.0
            for j in range(j0, min(x.shape[2], j0 + NLL_BLOCK)):
                part, part_error, part_kept, part_kept_error = add_nll_sample(
                    x, target, w, ignore_index, loss, o, j, part, part_error, part_kept,
                    part_kept_error)
            total, total_error = add_compensated(total, total_error + part_error, part)
            kept, kept_error = add_compensated(kept, kept_error + part_kept_error, part_kept)
    return total, total_error, kept, kept_error


@inline
def fetches_ahead(x):
    """Whether ``near_rows`` hints the next rows' lines as it gathers x (3-D, rows near): x
    holds FETCH_ROWS_FROM bytes or more, and its rows are packed, each within its step from
    the next and filling at least half of it. (A transposed array's rows interleave: a
    step's lines would be the whole array's. A few columns of wide rows would hint lines
    that the gather never reads.)"""
    row_span = abs((x.shape[1] - 1) * x.strides[1]) + x.itemsize
    row_step = abs(x.strides[0])
    return x.size * x.itemsize >= FETCH_ROWS_FROM and row_span <= row_step <= 2 * row_span


@inline_ir
def fetch_rows(x, lo, hi):
    """A hint per cache line of the rows lo:hi of the 3-D x (rows of any stride, of either
    sign, the memory between them included); nothing where hi <= lo."""
    if hi <= lo:
        return
    row_step = x.strides[0]
    entries = (x.shape[1] - 1) * x.strides[1]
    start = min(lo * row_step, (hi - 1) * row_step) + min(0, entries)
    end = max(lo * row_step, (hi - 1) * row_step) + max(0, entries) + x.itemsize
    # One offset per line from start's, to the line of end - 1 (or, where start is a
    # line's first byte and end - start a multiple of 64, one line further: harmless).
    for offset in range(start, end + 63, 64):
        prefetch_bytes_after(x, offset)


@inline_ir
def gather_samples(x, target, w, ignore_index, loss, first, end, values, weights, lo, sums):
    """``near_rows``'s gather of the samples first:end, from and to ``sums`` (total, its
    error, kept weight, its error). Where its sums run in sequence (``sums_in_sequence``),
    each sample is added to them as it is read; else its loss goes to values[o - lo] (and
    its kept weight to weights[o - lo], where w is given), and only the count of the kept
    samples (without w) to sums. One loop for both, whose branches LLVM removes: Numba
    inlines a building block's IR at every call site and compiles it there, and a loop of
    each way made nll_loss's first compile 1.3x longer."""
    total, total_error, kept, kept_error = sums
    plain = sums_in_sequence(x)
    for o in range(first, end):
        value, w_y = nll_of_sample(x, target, w, ignore_index, loss, o, 0)
        if plain:
            total, total_error = add_loss(total, total_error, value, plain)
        else:
            values[o - lo] = value
        if is_present(w):
            if plain:
                kept, kept_error = add_loss(kept, kept_error, w_y, plain)
            else:
                weights[o - lo] = w_y
        else:
            kept += w_y  # a count (w_y is 0 or 1): exact below 2^53
    return total, total_error, kept, kept_error


@inline_ir
def near_rows(x, target, w, ignore_index, loss, lo, hi):
    """``nll_block`` of (N, C) data (x of shape (N, C, 1)) whose rows are near (streamed by
    the hardware). float32 data's sums run in sequence in the gather's loop
    (``add_loss``); float64 data's losses (and kept weights) go to a buffer, summed after
    in compensated vector lanes (``sum_compensated``), where a compensated sum in the
    gather's loop waits on each addition (4096x10 in the caches: 1.2x faster; from memory,
    rows a cache line apart or more go to ``far_rows``, ``gathers_far`` says why). Where x
    holds FETCH_ROWS_FROM bytes or more in packed rows (``fetches_ahead``), the gather goes
    FETCH_ROWS samples at a time, each step after a hint per cache line of the next step's
    rows: the hardware's prefetcher alone kept too few lines under way (1e6x10 from memory,
    two threads: 1.15-1.2x faster on an Intel VM, float32 1.07-1.09x on the Zen 3 VM; up
    to 1.15x slower where x was still in a large L3 after all)."""
    buffered = not sums_in_sequence(x)
    values = np.empty(hi - lo if buffered else 0)
    weights = np.empty(hi - lo if buffered and is_present(w) else 0)
    sums = (0.0, 0.0, 0.0, 0.0)
    # One loop for both ways, in steps with their hints or in one step without: Numba
    # inlines one gather here, not two (each took ~1.5 s of nll_loss's first compile).
    fetching = fetches_ahead(x)
    steps = FETCH_ROWS if fetching else max(1, hi - lo)
    for step in range(lo, hi, steps):
        end = min(hi, step + steps)
        if fetching:
            fetch_rows(x, step if step == lo else end, min(hi, end + FETCH_ROWS))
        sums = gather_samples(x, target, w, ignore_index, loss, step, end, values, weights, lo,
                              sums)
    if not buffered:
        return sums
    total, total_error = sum_compensated(values)
    if is_present(w):
        kept, kept_error = sum_compensated(weights)
        return total, total_error, kept, kept_error
    return total, total_error, sums[2], 0.0


@kernel
def nll_blocks_run(x, target, w, ignore_index, loss, rows, sums, first, end):
    """sums[b] = ``nll_block`` of the blocks b = first .. end - 1 of ``rows`` rows of x, for
    ``nll_index``."""
    outer = x.shape[0]
    for b in range(first, end):
        sums[b, 0], sums[b, 1], sums[b, 2], sums[b, 3] = nll_block(
            x, target, w, ignore_index, loss, b * rows, min(outer, (b + 1) * rows))


@kernel
def nll_index(x, target, w, ignore_index, loss):
    """(sum, mean) of the per-sample losses -w[y] x[o, y, j], y = target[o, j], over the
    samples not ignored (the mean's denominator: the sum of their w[y]); each loss is written
    to loss[o, j] too, unless loss is None. An ignored sample's loss is 0 and its
    log-probabilities are never read, nan or not. A gather, in blocks of samples run in
    parallel; the sums are float64's: float64 data's compensated (Neumaier), so within an
    ulp or so of the exact sums whatever their length; float32 data's in sequence within a
    block, within 2^-41 of the sum of the losses' magnitudes (``add_loss``); the blocks'
    sums are merged compensated, in order. One block (up to NLL_BLOCK samples) is summed
    without a parallel loop, whose set-up cost a quarter of the call (4096 samples: 24 -> 19
    us)."""
    outer, n_classes, inner = x.shape
    rows = max(1, NLL_BLOCK // max(1, inner))
    n_blocks = -(-outer // rows)
    if n_blocks <= 1:
        total, total_error, kept, kept_error = nll_block(x, target, w, ignore_index, loss,
                                                         np.int64(0), outer)
    else:
        threads = threads_for(outer * inner)
        sums = np.empty((n_blocks, 4))
        # A block of gathers per task, at least TASK_ELEMENTS of them per take.
        run_tasks(nll_blocks_run, (x, target, w, ignore_index, loss, rows, sums), n_blocks,
                  TASK_ELEMENTS)
        restore_threads(threads)
        total, total_error, kept, kept_error = 0.0, 0.0, 0.0, 0.0
        for b in range(n_blocks):
            total, total_error = add_compensated(total, total_error + sums[b, 1], sums[b, 0])
            kept, kept_error = add_compensated(kept, kept_error + sums[b, 3], sums[b, 2])
    total += total_error
    # IEEE division: an all-ignored mean is 0 / 0 = nan, as torch's.
    return total, total / (kept + kept_error)


@kernel
def kept_weight(target, w, ignore_index):
    """The sum of w[y] (1 without weights) over the class indices y of the 2-D target that
    are not ignore_index: the denominator of a 'mean'. Without weights an exact count; with
    them a compensated float64 sum (Neumaier)."""
    if not is_present(w):
        prefer_wide_vectors()
        count = 0
        if target.shape[1] == 1:
            # (N,) targets: a loop of their own, without the inner loop of one (3x faster).
            for o in range(target.shape[0]):
                count += target[o, 0] != ignore_index
        else:
            for o in range(target.shape[0]):
                for j in range(target.shape[1]):
                    count += target[o, j] != ignore_index
        return np.float64(count)
    total, error = 0.0, 0.0
    for o in range(target.shape[0]):
        for j in range(target.shape[1]):
            y = target[o, j]
            if y != ignore_index:
                total, error = add_compensated(total, error, np.float64(weight_at(w, y)))
    return total + error


# ``first_out_of_bounds`` counts the bad class indices on the threads from this many on, in
# tasks of CHECK_BLOCK: below, waking the pool costs what the second thread saves (1e5 of
# them, two threads: 0.84-0.86x; 1e6: 1.07-1.10x the speed of nll_loss of 1e6x10 float32).
CHECK_PARALLEL_FROM = 1 << 19
CHECK_BLOCK = 1 << 16


@inline
def count_out_of_bounds(target, ignore_index, n_classes, lo, hi):
    """How many of the class indices target[lo:hi] are outside [0, n_classes) and not
    ignore_index: in a loop without an exit, which vectorises."""
    bad = 0
    for i in range(lo, hi):
        y = target[i]
        bad += (y != ignore_index) & ((y < 0) | (y >= n_classes))
    return bad


@kernel
def out_of_bounds_run(target, ignore_index, n_classes, counts, first, end):
    """counts[b] = ``count_out_of_bounds`` of the blocks b = first .. end - 1 of CHECK_BLOCK
    class indices, for ``first_out_of_bounds``."""
    prefer_wide_vectors()
    n = target.shape[0]
    for b in range(first, end):
        counts[b] = count_out_of_bounds(target, ignore_index, n_classes, b * CHECK_BLOCK,
                                        min(n, (b + 1) * CHECK_BLOCK))


@kernel
def first_out_of_bounds(target, ignore_index, n_classes):
    """The position of the first entry of the 1-D int64 target outside [0, n_classes) and not
    ignore_index, or -1: the check of ``_validate.check_classes``. A count first, which
    vectorises (4096 targets: 2.7 -> 0.7 us; 1e6: 0.60 -> 0.30 ms), on the threads from
    CHECK_PARALLEL_FROM targets on; the position is looked for only when there is one."""
    prefer_wide_vectors()
    n = target.shape[0]
    if n < CHECK_PARALLEL_FROM:
        bad = count_out_of_bounds(target, ignore_index, n_classes, 0, n)
    else:
        n_blocks = -(-n // CHECK_BLOCK)
        counts = np.empty(n_blocks, np.int64)
        threads = threads_for(n)
        run_tasks(out_of_bounds_run, (target, ignore_index, n_classes, counts), n_blocks,
                  CHECK_BLOCK)
        restore_threads(threads)
        bad = counts.sum()
    if bad == 0:
        return -1
    for i in range(n):
        y = target[i]
        if y != ignore_index and (y < 0 or y >= n_classes):
            return i
    return -1


@kernel
def checked_nll(x, target, ignore_index):
    """(first, total, mean): ``first_out_of_bounds`` of the (N,) class indices, then, only
    where it is -1 (every index good), ``nll_index`` of the (N, C) log-probabilities x
    without weights; (first, nan, nan) otherwise, and x is not read. The check and the gather
    of the common call in one compiled call: one dispatch, and none of the Python between
    two (a batch of 256 with its caches cold: 2x faster). The check still reads every
    target before the gather reads anything; ``nll_index`` itself never checks."""
    first = first_out_of_bounds(target, ignore_index, x.shape[1])
    if first >= 0:
        return first, np.nan, np.nan
    total, mean = nll_index(x[:, :, None], target[:, None], None, ignore_index, None)
    return first, total, mean
