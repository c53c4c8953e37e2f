"""softmax, log_softmax and log(1 - softmax) over the canonical (outer, n, inner) view.

Two reads of the input: the partials of ``reduce.py`` (one blocked pass: each block is read
twice while in L1), then one pass that writes each output once. A row of up to a CHUNK, or
up to WHOLE_ROW_BYTES (``rows_way``), and a tile of short rows, is one parallel task through
both, so its second read is from the cache; longer rows are read twice from memory. There,
softmax and log1m_softmax take one exp per element, not two: the row's max first, then the
exps of its sum, kept (``partials.exps_and_sum``; a tile's in ``column_partials``) and
scaled by the outputs.
Strided axes are read three times: their partials take two passes over a band of columns
(``reduce.inner_partials``), then the outputs one (narrow columns of packed rows through a
wider view: ``cpu._column_partials``). float64 softmax and log1m_softmax there take one exp
per element: the maxima first, then the terms, their exps kept in the output, from which a
last pass makes the outputs (``softmax_keeping_exps``).
From a row's partial (m, c, s) each function needs two constants, then one expression per
element:

    softmax_i      = exp(x_i - m) / (c + s)                  (Blanchard et al., Thm 4.3)
    log_softmax_i  = (x_i - m) - log1p((c - 1) + s)           (never log(softmax))
    log1m_softmax_i = log1p(-softmax_i)                      where softmax_i <= 1/2
                    = log(sum_{j != i} e^(x_j - m)) - log1p(s)  for the one entry above 1/2

The entry above 1/2 is the unique max (c = 1, s < 1), and its value is log(s) - log1p(s):
s is the sum over the others. Its terms may underflow when the max dominates by more than
~745 (~708.7 for float32 data, whose exp keeps no result below 2^-1022); so for rows whose
s is below KEPT_SUM only, one more pass computes that sum shifted by the runner-up:
log(sum_{j != i} e^(x_j - m2)) + (m2 - m).

Special rows, as SciPy: a nan gives a row of nan; softmax of a row with +inf or of all -inf is
nan; log_softmax of a row with +inf is nan at the infs and -inf elsewhere, of all -inf nan.
Masked-out entries (weight 0, from ``where``) give 0, -inf, 0.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from .exp import exp_nonpositive, exp_of_difference, is_float32
from .log import log1p_nonnegative, log1p_nonpositive, log1p_nonpositive_for_float32, log_normal
from .intrinsics import fma, has_512_bit_vectors, maxnum, prefer_wide_vectors
from .jit import inline, inline_ir, kernel, restore_threads, run_tasks, threads_for
from .partials import (BLOCK, FOR_OUTPUTS, add_compensated, block_max, block_sum, exps_and_sum,
                       part_of, row_of, rows_in, rows_of, sample_of, slice_of, transposed,
                       weight_at)
from .reduce import (CHUNK, INNER_BAND, SHORT_ROW, STREAM_FROM, TILE_ROWS, by_blocks,
                     chunked_partial, column_max, column_partials, column_pieces, column_terms,
                     inner_partials, piece_at, row_partials, tie_or_term, transpose_back,
                     transpose_tile)

SOFTMAX = 0
LOG_SOFTMAX = 1
LOG1M_SOFTMAX = 2
# Rows of (outer, n, inner) per parallel task when writing along axis 1 (inner > 1).
WRITE_ROWS = 16
# Rows longer than a CHUNK are still one task each, start to end, when they hold up to
# WHOLE_ROW_BYTES (so that their second read comes from the cache): softmax's and
# log1m_softmax's always, since they keep the row's exps (one exp per entry; ``rows_way``);
# log_softmax's where there are enough of them to keep the threads busy, their partial
# merged chunk by chunk, as row_partials merges it: the same bits as the chunked path's.
WHOLE_ROW_BYTES = 1 << 20
WHOLE_ROWS_FROM = 16


@inline
def row_constants(op, m, c, s):
    """(shift, scale) of a row whose partial is (m, c, s), for the element formulas."""
    if s != s:
        return 0.0, np.nan
    if op == LOG_SOFTMAX:
        if m == np.inf or m == -np.inf:
            # shift 0 and log-sum inf / -inf give SciPy's nan at the infs, -inf elsewhere.
            return 0.0, m
        # log(c + s) as log1p((c - 1) + s): c - 1 is exact (c counts ties, >= 1 here), the
        # sum rounds once (2^-53 of it, so at most 2^-53 through log1p, as log c + log1p(s / c)
        # with its divide and two log1p took): the digits of a small s (c = 1) kept, one log1p
        # (short rows' constants 2.7x faster), no libm call, so a loop of them vectorises.
        # c = 0 (``partials.TIES_IN_SUM``: the ties in s, so s >= 1): s - 1, exact.
        return m, log1p_nonnegative((c - 1.0) + s)
    if m == np.inf or m == -np.inf:
        return 0.0, np.nan
    return m, c + s


@inline
def element(op, x, w, shift, scale, dominant):
    """The output for entry x (weight w) of a row with constants (shift, scale, dominant)."""
    return element_by_reciprocal(op, x, w, shift, scale, 1.0 / scale, dominant)


@inline
def element_by_reciprocal(op, x, w, shift, scale, reciprocal, dominant):
    """``element``, given 1 / scale as well: float32 data multiplies by it where float64
    divides (its 2^-52 error vanishes in the float32 rounding, and a vector divide costs ten
    multiplies). A loop whose scale varies per lane (columns) passes them precomputed;
    elsewhere LLVM hoists ``element``'s 1 / scale out of the loop, or drops it (float64)."""
    if op == LOG_SOFTMAX:
        return (np.float64(x) - shift) - scale if w != 0 else -np.inf
    return element_of_exp(op, x, w, exp_of_difference(x, shift), shift, scale, reciprocal,
                          dominant)


# Scales of ``divide``: its remainder is exact for any dividend a * _UP (it could round below
# 2^-969), and the quotient's product by _DOWN is exact wherever it is normal.
_UP, _DOWN = 2.0**200, 2.0**-200


@inline
def divide(a, b, reciprocal):
    """a / b for a float64 a in [0, 1] and b >= 1 (a softmax value: exp(x - m) over its
    row's scale), given reciprocal = 1 / b: the bits of a / b wherever the quotient is
    normal, and within a subnormal ulp below 2^-1022 (a second rounding), in two FMAs and
    three products where a vector divide costs ~16 cycles per 8 lanes (``write_tile``:
    float64 softmax of short rows 1.13x faster). Markstein's theorem: with r = 1 / b
    correctly rounded and q within an ulp of a / b, the remainder a - q b is exact in an
    FMA and q + (a - q b) r, rounded once, is a / b correctly rounded (P. Markstein, IBM J.
    Res. Dev. 34(1), 1990; Muller et al., Handbook of Floating-Point Arithmetic, on division
    with an FMA); it needs the remainder above the subnormal range, hence a scaled by 2^200.
    nan in, nan out."""
    scaled = a * _UP
    quotient = scaled * reciprocal
    return fma(fma(-quotient, b, scaled), reciprocal, quotient) * _DOWN


@inline
def element_of_exp(op, x, w, exp_x, shift, scale, reciprocal, dominant, by_fma=False):
    """``element_by_reciprocal`` of softmax or log1m_softmax, given exp_x = exp(x - m) for
    the row's max m (where the row is not special, its shift is m; where it is, its scale is
    nan, and so is every output that is not masked out, whatever exp_x is). ``by_fma``:
    float64's p by ``divide``, for the loops that its divide bounds (tiles of short rows:
    rows of 4096 measured 0.96x, columns 0.98x that way, where the divide is hidden)."""
    if w == 0:
        return 0.0
    if is_float32(x):
        p = exp_x * reciprocal
    else:
        p = divide(exp_x, scale, reciprocal) if by_fma else exp_x / scale
    if op == SOFTMAX:
        return p
    if np.float64(x) == shift and dominant == dominant:
        return dominant
    # p <= 1/2 here (the one entry above 1/2 is the dominant one; another exceeds it by a
    # rounding at most); log1p(-0) is +0, as log(1 - 0). float32 data: one polynomial.
    if is_float32(x):
        return log1p_nonpositive_for_float32(-p)
    return log1p_nonpositive(-p)


# A row sum s at or above this holds every term to far below its rounding: each term's exp is
# within 2^-1075 of its value (subnormal, or 0 below -745; float32 data's: within 2^-1021,
# 0 below -708.74), and any count of them is far below 2^-53 s. Below it, a dominant entry's sum over the others is taken again, shifted.
KEPT_SUM = 2.0 ** -900


@inline
def is_dominant(op, m, c, s):
    """Whether log1m_softmax of this row has an entry above 1/2 (its ``dominant_value``)."""
    return op == LOG1M_SOFTMAX and c == 1 and s < 1 and math.isfinite(m)


@inline
def needs_runner_up(op, m, c, s):
    """Whether the row's dominant entry needs the partial of the entries below the max (the
    runner-up pass): its sum over the others, s, may have lost terms to underflow."""
    return is_dominant(op, m, c, s) and not s >= KEPT_SUM


@inline
def log_relative_sum(m0, c, s, m):
    """log(exp(m0) (c + s)) - m for a partial (m0, c, s) of positive terms (c > 0), -inf for
    an empty one: the offset m0 - m first, exact or rounded once, so that no rounding of
    log(sum) ~ m (an ulp of 1000 is 500 ulps of 0.3) enters a result that is small."""
    if m0 == -np.inf:
        return -np.inf
    return (m0 - m) + math.log(c) + math.log1p(s / c)


@inline
def dominant_value(m, s, below_m, below_c, below_s):
    """log1m_softmax at the dominant entry of a slice whose partial is (m, 1, s): log(the sum
    over the others) - lse, -inf when there are none. That sum is s itself where s is at
    least KEPT_SUM; below, it comes from the partial (below_*) of the entries below m, which
    is read only there (``needs_runner_up``)."""
    if s >= KEPT_SUM:
        return kept_dominant_value(s)
    return log_relative_sum(below_m, below_c, below_s, m) - math.log1p(s)


@inline
def kept_dominant_value(s):
    """``dominant_value`` where s >= KEPT_SUM: log(s) - log1p(s), two negative terms (s < 1),
    each within an ulp, by ``log.py``'s vectorisable functions, so that a loop over the rows
    of a tile vectorises (``tile_constants``: a libm call per dominant row cost float64
    log1m_softmax of randn rows of 10 about 5 %, and of peaked ones, 73 % dominant, 25 %)."""
    return log_normal(s) - log1p_nonnegative(s)


@inline_ir
def partial_below(x, w, m):
    """The partial (runner-up, c, s) of the weighted entries of x below m: (-inf, 0, 0) when
    there are none."""
    runner_up = -np.inf
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        if weight_at(w, i) != 0 and xi < m:
            runner_up = maxnum(runner_up, xi)
    c = 0.0
    s = 0.0
    error = 0.0
    if runner_up != -np.inf:
        # Compensated (Neumaier): the loop runs in sequence, and a long slice's plain sum
        # lost its digits (a row of 300,000: 38 ulp of the dominant entry's value). A rare
        # pass (rows whose sum over the others underflows), so its six additions cost nothing.
        for i in range(x.shape[0]):
            xi = np.float64(x[i])
            wi = weight_at(w, i) if xi < m else 0.0
            ci, si = tie_or_term(xi, wi, runner_up, exp_nonpositive(xi - runner_up))
            c += ci
            s, error = add_compensated(s, error, si)
    return runner_up, c, s + error


@inline_ir
def dominant_of_slice(op, x, w, m, c, s):
    """log1m_softmax's value at the dominant entry of the 1-D slice x (weights w) whose
    partial is (m, c, s), nan where it has none; x is read again only if s needs it."""
    if not is_dominant(op, m, c, s):
        return np.nan
    below_m, below_c, below_s = -np.inf, 0.0, 0.0
    if needs_runner_up(op, m, c, s):
        below_m, below_c, below_s = partial_below(x, w, m)
    return dominant_value(m, s, below_m, below_c, below_s)


@kernel
def write_slice(op, x, w, out, shift, scale, dominant):
    """out[i] = the op's value at x[i]: a function of its own, so LLVM vectorises it alone."""
    prefer_wide_vectors()
    if op == SOFTMAX:
        for i in range(x.shape[0]):
            out[i] = element(SOFTMAX, x[i], weight_at(w, i), shift, scale, dominant)
    elif op == LOG_SOFTMAX:
        for i in range(x.shape[0]):
            out[i] = element(LOG_SOFTMAX, x[i], weight_at(w, i), shift, scale, dominant)
    else:
        for i in range(x.shape[0]):
            out[i] = element(LOG1M_SOFTMAX, x[i], weight_at(w, i), shift, scale, dominant)


@kernel
def write_exps(op, x, w, exps, out, shift, scale, dominant):
    """out[i] = softmax's or log1m_softmax's value at x[i] (1-D), from exps[i] (as
    ``partials.exps_and_sum`` keeps them) and the slice's constants."""
    prefer_wide_vectors()
    reciprocal = 1.0 / scale
    if op == SOFTMAX:
        for i in range(x.shape[0]):
            out[i] = element_of_exp(SOFTMAX, x[i], weight_at(w, i), exps[i], shift, scale,
                                    reciprocal, dominant)
    else:
        for i in range(x.shape[0]):
            out[i] = element_of_exp(LOG1M_SOFTMAX, x[i], weight_at(w, i), exps[i], shift, scale,
                                    reciprocal, dominant)


@kernel
def write_columns(op, x, w, out, shift, scale, dominant):
    """out[k, j] = the op's value at x[k, j] (2-D, weights w like x or None) for the slices
    along axis 0, whose constants are shift[j], scale[j], dominant[j]: a row at a time, so
    the vector lanes run along a contiguous row, across slices."""
    prefer_wide_vectors()
    reciprocal = 1.0 / scale
    for k in range(x.shape[0]):
        xk = x[k]
        wk = row_of(w, k)
        out_k = out[k]
        if op == SOFTMAX:
            for j in range(xk.shape[0]):
                out_k[j] = element_by_reciprocal(SOFTMAX, xk[j], weight_at(wk, j), shift[j], scale[j],
                                                 reciprocal[j], dominant[j])
        elif op == LOG_SOFTMAX:
            for j in range(xk.shape[0]):
                out_k[j] = element(LOG_SOFTMAX, xk[j], weight_at(wk, j), shift[j], scale[j], dominant[j])
        else:
            for j in range(xk.shape[0]):
                out_k[j] = element_by_reciprocal(LOG1M_SOFTMAX, xk[j], weight_at(wk, j), shift[j],
                                                 scale[j], reciprocal[j], dominant[j])


@kernel
def write_tile(op, xt, wt, exps, out, shift, scale, dominant, stream):
    """out[r, k] = the op's value at xt[0, k, r], a transposed tile of short rows (see
    ``reduce.transpose_tile``), from the exps column_partials kept of it (log_softmax reads
    neither them nor ``dominant``): computed across rows, in place of the tile (rounded to
    its dtype, which must be out's: ``cpu.softmax_family`` allocates out so; the same
    rounding as a store to out), then transposed back (``reduce.transpose_back``;
    ``stream`` as there)."""
    prefer_wide_vectors()
    _, n, width = xt.shape
    reciprocal = 1.0 / scale
    tile = xt[0]
    for k in range(n):
        xk = tile[k]
        wk = part_of(wt, 0, k, 0, width)
        if op == SOFTMAX:
            values = exps[k]
            for j in range(width):
                xk[j] = element_of_exp(SOFTMAX, xk[j], weight_at(wk, j), values[j], shift[j],
                                       scale[j], reciprocal[j], dominant[j], True)
        elif op == LOG_SOFTMAX:
            for j in range(width):
                xk[j] = element(LOG_SOFTMAX, xk[j], weight_at(wk, j), shift[j], scale[j], np.nan)
        else:
            values = exps[k]
            for j in range(width):
                xk[j] = element_of_exp(LOG1M_SOFTMAX, xk[j], weight_at(wk, j), values[j],
                                       shift[j], scale[j], reciprocal[j], dominant[j], True)
    transpose_back(xt, out, stream)


@kernel
def write_log_softmax_rows(x, w, out, shift, scale):
    """out[j, k] = log_softmax at x[j, k] for short rows j (2-D, weights w or None) with the
    constants shift[j], scale[j]: one subtraction per element, so written along the rows,
    without a transposed tile (7-12 % faster on rows of 10, the same values), except where
    the tile's blocks stream (``by_tile``)."""
    prefer_wide_vectors()
    for j in range(x.shape[0]):
        for k in range(x.shape[1]):
            out[j, k] = element(LOG_SOFTMAX, x[j, k], weight_at(w, (j, k)), shift[j], scale[j], np.nan)


@kernel
def tile_constants(op, x, w, m, c, s):
    """(shift, scale, dominant)[j] = ``slice_constants`` of row j of x (2-D, weights w or
    None) from its partial (m, c, s)[j]: the first two in a vector loop, the third
    (log1m_softmax only) where a row has a dominant entry."""
    prefer_wide_vectors()
    shift = np.empty(m.shape[0])
    scale = np.empty(m.shape[0])
    dominant = np.empty(m.shape[0])
    if op == SOFTMAX:
        for j in range(m.shape[0]):
            shift[j], scale[j] = row_constants(SOFTMAX, m[j], c[j], s[j])
    elif op == LOG_SOFTMAX:
        for j in range(m.shape[0]):
            shift[j], scale[j] = row_constants(LOG_SOFTMAX, m[j], c[j], s[j])
    else:
        for j in range(m.shape[0]):
            shift[j], scale[j] = row_constants(LOG1M_SOFTMAX, m[j], c[j], s[j])
    if op != LOG1M_SOFTMAX:
        dominant[:] = np.nan
        return shift, scale, dominant
    # Where a sixteenth of the rows or more have a dominant entry, a vector loop takes the
    # values of those whose sum over the others is s (``kept_dominant_value``, ~2.5 ns a row),
    # and a pass over the rows the rare ones that need more; elsewhere each dominant row is
    # taken alone, a branch and a scalar call (~40 ns a row).
    count = 0
    for j in range(m.shape[0]):
        count += is_dominant(op, m[j], c[j], s[j])
    if count * 16 >= m.shape[0]:
        for j in range(m.shape[0]):
            kept = is_dominant(op, m[j], c[j], s[j]) and s[j] >= KEPT_SUM
            dominant[j] = kept_dominant_value(s[j]) if kept else np.nan
        for j in range(m.shape[0]):
            if needs_runner_up(op, m[j], c[j], s[j]):
                dominant[j] = dominant_of_slice(op, x[j], row_of(w, j), m[j], c[j], s[j])
    else:
        for j in range(m.shape[0]):
            dominant[j] = dominant_of_slice(op, x[j], row_of(w, j), m[j], c[j], s[j])
    return shift, scale, dominant


@inline_ir
def slice_constants(op, x, w, m, c, s):
    """(shift, scale, dominant) of the 1-D slice x (weights w) whose partial is (m, c, s):
    ``row_constants``, and log1m_softmax's value at a dominant entry (nan where none)."""
    shift, scale = row_constants(op, m, c, s)
    return shift, scale, dominant_of_slice(op, x, w, m, c, s)


def by_tile(op, x, stream):
    """Whether ``short_rows_run`` writes the op's outputs from the transposed tile: always
    for softmax and log1m_softmax; for log_softmax only where its tile would go back by
    ``reduce.transpose_back``'s blocks (float32 rows of up to 16 entries) with streaming
    stores (``stream``), 1.09x faster on float32 rows of 10 than the stores along the rows
    (``write_log_softmax_rows``), which are otherwise as fast or faster (a tile that goes
    back an entry at a time: 7-12 %; by blocks, not streamed: ~3 %). That was with AVX-512's
    blocks; AVX2's, in 8 x 8 pieces, streamed, measured 0.98x (AMD Zen 3, rows of 10 and
    16): there log_softmax keeps its stores along the rows."""


@overload(by_tile, inline="always")
def _by_tile(op, x, stream):
    if by_blocks(x, types.Array(x.dtype, 3, "C")) and has_512_bit_vectors():
        return lambda op, x, stream: op != LOG_SOFTMAX or (stream and x.shape[1] <= 16)
    return lambda op, x, stream: op != LOG_SOFTMAX


# How the rows of a 2-D view are taken (``rows_way``): tiles of short rows, transposed
# (``softmax_short_rows``); a row at a time, start to end (``softmax_rows``); rows in chunks
# (``softmax_chunked_rows``). A kernel each, chosen by the caller from the shape, so that a
# call compiles the one its shape takes (softmax of 64x100 float64, nothing cached: 6 s
# that way, 23 s with the other ways in the same kernel).
SHORT_ROWS, ROWS, CHUNKED = 0, 1, 2


@inline
def rows_way(rows, n, itemsize, keeps_exps):
    """SHORT_ROWS, ROWS or CHUNKED: how ``rows`` rows of n entries (of itemsize bytes) are
    taken, and so which kernel. ROWS where each row is best one task, start to end (its
    partial, then its outputs, whose read of the row comes from the cache), not chunks.
    keeps_exps: the op keeps a row's exps for its outputs (softmax, log1m_softmax:
    ``rows_run``), so that a row of up to WHOLE_ROW_BYTES takes one exp per entry whole,
    and two in chunks; it is then whole however many rows there are, and its values do
    not depend on them. Python calls ``rows_way.py_func``: the same arithmetic without a
    Numba dispatch (which cost a softmax of 100 entries about 0.2 us of its 4)."""
    if n < SHORT_ROW:
        return SHORT_ROWS
    fits = n * itemsize <= WHOLE_ROW_BYTES
    if n <= CHUNK or (fits and (keeps_exps or rows >= WHOLE_ROWS_FROM)):
        return ROWS
    return CHUNKED


@kernel
def short_rows_run(op, x, w, out, first, end):
    """Tiles first .. end - 1 of TILE_ROWS short rows, as ``short_row_partials`` takes them:
    each transposed, so the vector lanes run across rows. A function of its own, called from
    the kernel's serial and parallel loops alike (compiled once)."""
    prefer_wide_vectors()
    rows, n = x.shape
    stream = out.size * out.itemsize >= STREAM_FROM
    origin = np.int64(0)  # not a literal (``reduce.tile_partials``)
    for t in range(first, end):
        r0 = t * TILE_ROWS
        r1 = min(rows, r0 + TILE_ROWS)
        xt = transpose_tile(x, r0, r1)
        wt = transposed(w, r0, r1)
        m = np.empty(r1 - r0)
        c = np.empty(r1 - r0)
        s = np.empty(r1 - r0)
        if op == LOG_SOFTMAX:
            column_partials(xt, wt, origin, origin, m, c, s, FOR_OUTPUTS)
            shift, scale, _ = tile_constants(op, x[r0:r1], rows_in(w, r0, r1), m, c, s)
            if by_tile(op, x, stream):
                # (log_softmax reads no exps, nor a dominant value: placeholders of their types)
                write_tile(op, xt, wt, xt[0], out[r0:r1], shift, scale, shift, stream)
            else:
                write_log_softmax_rows(x[r0:r1], rows_in(w, r0, r1), out[r0:r1], shift, scale)
        else:
            # The exps of the sums, kept: one block of rows, so they are exp(x - m).
            exps = np.empty((n, r1 - r0))
            column_partials(xt, wt, origin, origin, m, c, s, FOR_OUTPUTS, exps)
            shift, scale, dominant = tile_constants(op, x[r0:r1], rows_in(w, r0, r1), m, c, s)
            write_tile(op, xt, wt, exps, out[r0:r1], shift, scale, dominant, stream)  # over xt


def terms_keeping_exps(op, x, w, m, exps):
    """(c, s) of the slice x (weights w, or None) for its max m, keeping the exps of its
    terms: ``partials.exps_and_sum``; for an unweighted softmax of float32 data, whose scale
    is c + s alone, (0, the sum of every term, ties included: ``partials.block_sum``),
    without the ties' compare, selects and count. (A row of -inf, +inf or nan: a nan sum
    here, a nan scale from ``row_constants`` there, a softmax of nan either way.)

    float32 data only: a tie's exact 1 in a lane makes that lane's later additions round
    relative to 1, not to the small terms: up to n/16 ulps of c + s (2^-38 for rows of up to
    2^18 entries), far below a float32 ulp, but a float64 softmax's max entry lost up to 80 ulps on
    rows of 4096 (1 against 4095 terms of e^-20; ``tests/test_softmax.py``)."""


@overload(terms_keeping_exps, inline="always")
def _terms_keeping_exps(op, x, w, m, exps):
    if isinstance(w, types.NoneType) and x.dtype == types.float32:
        def unweighted(op, x, w, m, exps):
            if op == SOFTMAX:
                return 0.0, block_sum(x, m, exps)
            return exps_and_sum(x, w, m, exps)

        return unweighted
    return lambda op, x, w, m, exps: exps_and_sum(x, w, m, exps)


def block_buffer(array, x):
    """A work array of BLOCK entries of ``array``'s dtype (x, or its weights: 2-D, or None)
    where x's data is float64 and ``array`` is not C-ordered, for ``contiguous_block``;
    else None."""


@overload(block_buffer, inline="always")
def _block_buffer(array, x):
    if isinstance(array, types.Array) and array.layout != "C" and x.dtype != types.float32:
        return lambda array, x: np.empty(BLOCK, array.dtype)
    return lambda array, x: None


def contiguous_block(block, buffer):
    """The 1-D ``block`` as a C-ordered array: itself where its type is, else its copy in
    ``buffer`` (``block_buffer``); None for None."""


@overload(contiguous_block, inline="always")
def _contiguous_block(block, buffer):
    if isinstance(block, types.Array) and block.layout != "C":
        def copy(block, buffer):
            part = buffer[:block.shape[0]]
            part[:] = block
            return part
        return copy
    return lambda block, buffer: block


def row_terms_keeping_exps(op, row, w, m, exps, x_block, w_block):
    """``terms_keeping_exps`` of a row of up to WHOLE_ROW_BYTES for its max m.

    float64 data: a BLOCK at a time, the blocks' sums added compensated (Neumaier), so
    that a lane of the vectorised loop sums at most 32 terms in sequence per block (as
    ``partials.partial_of_slice``'s do); a block of a strided row, whose loop would not
    vectorise and so summed its terms in sequence, is first copied (``contiguous_block``,
    into x_block, w_block): the sums of the row's C-ordered copy, bit for bit. The whole row
    in one loop lost the digits of a float64 softmax: 214 ulp on a row of 65536, 4155 on its
    strided view. float32 data: the whole row in one loop, whose error, up to n/16 ulps of
    c + s in float64 (2^-38 for rows of up to WHOLE_ROW_BYTES, 2^18 entries), vanishes in a
    float32 output (in blocks: rows of 4096 1.025x slower)."""


@overload(row_terms_keeping_exps, inline="always")
def _row_terms_keeping_exps(op, row, w, m, exps, x_block, w_block):
    if row.dtype == types.float32:
        return lambda op, row, w, m, exps, x_block, w_block: terms_keeping_exps(op, row, w, m, exps)

    def blocks(op, row, w, m, exps, x_block, w_block):
        n = row.shape[0]
        c = 0.0
        s = 0.0
        error = 0.0
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            block_c, block_s = terms_keeping_exps(op, contiguous_block(row[lo:hi], x_block),
                                                  contiguous_block(slice_of(w, lo, hi), w_block),
                                                  m, exps[lo:hi])
            c += block_c
            s, error = add_compensated(s, error, block_s)
        return c, s + error

    return blocks


@kernel
def rows_run(op, x, w, out, first, end):
    """Rows first .. end - 1, each start to end: its partial, then its outputs, whose read of
    the row comes from the cache. Runs long enough that the call costs nothing (a call per
    row cost rows of 50 up to a third)."""
    prefer_wide_vectors()
    n = x.shape[1]
    if op != LOG_SOFTMAX:
        # A row in one pass of exps: its max, then the exps of its terms, kept (in L1 or L2)
        # while they are summed, then scaled: one exp per element, not two (rows of up to
        # WHOLE_ROW_BYTES: ``rows_way``; softmax and log1m_softmax of 1000x1e5, whose rows
        # took two before, 1.26-1.77x faster).
        exps = np.empty(n)
        x_block = block_buffer(x, x)
        w_block = block_buffer(w, x)
        for r in range(first, end):
            row = x[r]
            weights = row_of(w, r)
            m = block_max(row, weights, -np.inf)
            c, s = row_terms_keeping_exps(op, row, weights, m, exps, x_block, w_block)
            shift, scale, dominant = slice_constants(op, row, weights, m, c, s)
            write_exps(op, row, weights, exps, out[r], shift, scale, dominant)
    else:
        for r in range(first, end):
            row = x[r]
            weights = row_of(w, r)
            m, c, s = chunked_partial(row, weights, FOR_OUTPUTS)
            shift, scale, dominant = slice_constants(op, row, weights, m, c, s)
            write_slice(op, row, weights, out[r], shift, scale, dominant)


@kernel
def softmax_short_rows(op, x, w, out):
    """out[r, i] = the op's value at x[r, i], for a 2-D view x (rows, n) of rows too short
    to vectorise along (n < SHORT_ROW): a tile of TILE_ROWS rows per task."""
    rows, n = x.shape
    threads = threads_for(x.size)
    run_tasks(short_rows_run, (op, x, w, out), -(-rows // TILE_ROWS), TILE_ROWS * n)
    restore_threads(threads)


@kernel
def softmax_rows(op, x, w, out):
    """out[r, i] = the op's value at x[r, i], along rows of the 2-D view x (rows, n), a row
    per task, start to end (the rows that ``rows_way`` takes as ROWS)."""
    threads = threads_for(x.size)
    run_tasks(rows_run, (op, x, w, out), x.shape[0], x.shape[1])
    restore_threads(threads)


@kernel
def row_constants_run(op, x, w, m, c, s, shift, scale, dominant, first, end):
    """shift, scale and dominant of rows first .. end - 1 (``slice_constants``), for
    ``softmax_chunked_rows``."""
    for r in range(first, end):
        shift[r], scale[r], dominant[r] = slice_constants(op, x[r], row_of(w, r), m[r], c[r], s[r])


@kernel
def chunks_run(op, x, w, out, shift, scale, dominant, first, end):
    """The outputs of chunks first .. end - 1 (chunk k of row r: task r * chunks + k), for
    ``softmax_chunked_rows``."""
    n = x.shape[1]
    n_chunks = -(-n // CHUNK)
    for task in range(first, end):
        r, lo, hi = piece_at(task, n_chunks, n, CHUNK)
        write_slice(op, x[r, lo:hi], slice_of(row_of(w, r), lo, hi), out[r, lo:hi],
                    shift[r], scale[r], dominant[r])


@kernel
def softmax_chunked_rows(op, x, w, out):
    """out[r, i] = the op's value at x[r, i], along long rows of the 2-D view x (rows, n):
    each row's chunks in parallel, their partials merged in order, then its outputs.
    (Rows of 1e5 done whole measured no better here: lost in this VM's noise.)"""
    rows, n = x.shape
    threads = threads_for(x.size)
    m, c, s = row_partials(x, w, FOR_OUTPUTS)
    shift = np.empty(rows)
    scale = np.empty(rows)
    dominant = np.empty(rows)
    run_tasks(row_constants_run, (op, x, w, m, c, s, shift, scale, dominant), rows, n)
    run_tasks(chunks_run, (op, x, w, out, shift, scale, dominant), rows * -(-n // CHUNK),
              min(n, CHUNK))
    restore_threads(threads)


@inline_ir
def softmax_of_rows(op, x, w, out):
    """The op along the rows of the 2-D view x, by the kernel ``rows_way`` picks: for Numba
    code (a Python caller picks it itself, and compiles only that one)."""
    rows, n = x.shape
    way = rows_way(rows, n, x.itemsize, op != LOG_SOFTMAX)
    if way == SHORT_ROWS:
        softmax_short_rows(op, x, w, out)
    elif way == ROWS:
        softmax_rows(op, x, w, out)
    else:
        softmax_chunked_rows(op, x, w, out)


@kernel
def dominants_run(op, x, w, m, c, s, dominant, first, end):
    """dominant of the slices first .. end - 1 along axis 1 of x (outer, n, inner), slice
    o * inner + j (``dominant_of_slice``), for ``softmax_inner``."""
    inner = x.shape[2]
    for t in range(first, end):
        o, j, _ = piece_at(t, inner, inner, 1)
        dominant[o, j] = dominant_of_slice(op, x[o, :, j], sample_of(w, o, j), m[o, j], c[o, j], s[o, j])


@kernel
def dominants(op, x, w, m, c, s):
    """dominant[o, j]: log1m_softmax's value at the dominant entry of the slice x[o, :, j]
    (weights w like x, or None) whose partial is (m, c, s)[o, j], nan where it has none
    (``dominant_of_slice``; all nan for the other ops)."""
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    dominant = np.empty((outer, inner))
    run_tasks(dominants_run, (op, x, w, m, c, s, dominant), outer * inner, n)
    restore_threads(threads)
    return dominant


@kernel
def softmax_inner(op, x, w, out):
    """out[o, k, j] = the op's value at x[o, k, j], along axis 1 of x (outer, n, inner)."""
    m, c, s = inner_partials(x, w, FOR_OUTPUTS)
    apply_partials(op, x, w, out, m, c, s, dominants(op, x, w, m, c, s))


@kernel
def maxima_run(x, w, m, rows, first, end):
    """Tasks first .. end - 1 of ``softmax_keeping_exps``'s maxima: bands of INNER_BAND
    columns of a piece of ``rows`` rows (``reduce.column_pieces``; task (o * pieces + p) *
    bands + b, as ``reduce.partials_run``), whose maxima go to m[o, p] (``column_max``),
    taken in an array of the thread's own."""
    n_bands = -(-x.shape[2] // INNER_BAND)
    pieces = m.shape[1]
    run_m = np.empty(min(x.shape[2], INNER_BAND))
    for task in range(first, end):
        slab, j0, j1 = piece_at(task, n_bands, x.shape[2], INNER_BAND)
        o, k0, k1 = piece_at(slab, pieces, x.shape[1], rows)
        column_max(x, w, o, j0, run_m[:j1 - j0], k1, k0)
        m[o, slab - o * pieces, j0:j1] = run_m[:j1 - j0]


@kernel
def kept_terms_run(x, w, out, m, c, s, rows, first, end):
    """Tasks first .. end - 1 of ``softmax_keeping_exps``'s terms (as ``maxima_run``): each
    piece's terms against the max m[o, j] of its column's every row, (c, s)[o, p] (taken in
    arrays of the thread's own), their exps kept in out (``column_terms``)."""
    n_bands = -(-x.shape[2] // INNER_BAND)
    pieces = c.shape[1]
    width = min(x.shape[2], INNER_BAND)
    run_c, run_s = np.empty(width), np.empty(width)
    for task in range(first, end):
        slab, j0, j1 = piece_at(task, n_bands, x.shape[2], INNER_BAND)
        o, k0, k1 = piece_at(slab, pieces, x.shape[1], rows)
        p = slab - o * pieces
        k = j1 - j0
        column_terms(x, w, o, j0, m[o, j0:j1], run_c[:k], run_s[:k], FOR_OUTPUTS, (k0, k1), out)
        c[o, p, j0:j1] = run_c[:k]
        s[o, p, j0:j1] = run_s[:k]


@kernel
def scale_run(op, x, w, out, shift, scale, dominant, first, end):
    """The outputs of blocks first .. end - 1 of WRITE_ROWS rows of ``softmax_keeping_exps``
    (block o * blocks + b), from the exps that out holds: for softmax each divided by its
    column's scale (0 where w is 0; w like x, or None), for log1m_softmax log1p of minus
    that (``element_of_exp``, given the column's constants)."""
    prefer_wide_vectors()
    n, inner = out.shape[1], out.shape[2]
    n_blocks = -(-n // WRITE_ROWS)
    for t in range(first, end):
        o, k0, k1 = piece_at(t, n_blocks, n, WRITE_ROWS)
        shift_o, scale_o, dominant_o = shift[o], scale[o], dominant[o]
        for k in range(k0, k1):
            xk = x[o, k]
            wk = part_of(w, o, k, 0, inner)
            out_k = out[o, k]
            if op == SOFTMAX:
                for j in range(inner):
                    out_k[j] = out_k[j] / scale_o[j] if weight_at(wk, j) != 0 else 0.0
            else:
                for j in range(inner):
                    out_k[j] = element_of_exp(LOG1M_SOFTMAX, xk[j], weight_at(wk, j), out_k[j],
                                              shift_o[j], scale_o[j], 1.0 / scale_o[j],
                                              dominant_o[j])


@kernel
def column_maxima(x, w):
    """The max of each column of x (outer, n, inner) over axis 1 (weights w like x or None;
    -inf where none), (outer, inner): a max per piece of rows (``reduce.column_pieces``,
    ``maxima_run``), then theirs."""
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    pieces, rows = column_pieces(x)
    m = np.empty((outer, pieces, inner))
    run_tasks(maxima_run, (x, w, m, rows), outer * pieces * -(-inner // INNER_BAND),
              rows * min(inner, INNER_BAND))
    top = m[:, 0].copy()
    for p in range(1, pieces):
        top[:] = np.maximum(top, m[:, p])
    restore_threads(threads)
    return top


@kernel
def kept_terms(x, w, out, top):
    """(c, s), each (outer, inner): the ties' weights and the sum of the other terms of each
    column of x (outer, n, inner) along axis 1 for its max ``top`` (``column_maxima``), the
    rest of its partial, whose terms' exps it keeps in out (``kept_terms_run``); in the
    pieces of rows of ``column_maxima``, added in order."""
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    pieces, rows = column_pieces(x)
    c = np.empty((outer, pieces, inner))
    s = np.empty((outer, pieces, inner))
    run_tasks(kept_terms_run, (x, w, out, top, c, s, rows),
              outer * pieces * -(-inner // INNER_BAND), rows * min(inner, INNER_BAND))
    c_all = c[:, 0].copy()
    s_all = s[:, 0].copy()
    for p in range(1, pieces):
        c_all += c[:, p]
        s_all += s[:, p]
    restore_threads(threads)
    return c_all, s_all


@kernel
def scale_exps(op, x, w, out, top, c, s, dominant):
    """out = softmax or log1m_softmax (``op``) along axis 1 of x (outer, n, inner), from the
    exps that out holds (``kept_terms``), each column's partial (top, c, s) and, for
    log1m_softmax, its ``dominant`` value (nan where none; ``dominants``), each (outer,
    inner): ``scale_run``."""
    outer, n, inner = out.shape
    threads = threads_for(out.size)
    shift = np.empty((outer, inner))
    scale = np.empty((outer, inner))
    run_tasks(constants_run, (op, top, c, s, shift, scale), outer * inner, 1)
    run_tasks(scale_run, (op, x, w, out, shift, scale, dominant), outer * -(-n // WRITE_ROWS),
              WRITE_ROWS * inner)
    restore_threads(threads)


@kernel
def softmax_keeping_exps(op, x, w, out):
    """out = softmax or log1m_softmax (``op``) along axis 1 of float64 x (outer, n, inner)
    (weights w like x or None), with one exp per entry where ``softmax_inner`` takes two:
    the columns' maxima first, over every piece of rows (``column_maxima``), then each
    piece's terms against them, their exps kept in out (``kept_terms``), then the outputs
    from them (``scale_exps``). The same outputs, bit for bit, where a band is one piece;
    where it is cut in pieces, their sums are each against the column's max, added in
    order, where ``inner_partials`` takes each against its piece's max and rescales them as
    it merges. Its last pass reads and writes out again, where the exps' pass costs more
    than that: float64 only (float32 data's exps, 2^-34 apart, would round to float32 in a
    float32 output). Whole calls over axis 0, against ``softmax_inner``'s two exps, Zen 2,
    two threads: softmax of (4096, 4096) 1.40x, (4096, 256) 1.29x, (20000, 512) 1.51x,
    (1024, 1024) 1.36x; narrow columns widened (``cpu._softmax_keeping_exps``): (10^6, 3)
    1.08x, (10^5, 10) 1.18x; log1m_softmax 1.56x, 1.59x, 1.79x, 1.51x, 1.39x, 1.47x."""
    top = column_maxima(x, w)
    c, s = kept_terms(x, w, out, top)
    scale_exps(op, x, w, out, top, c, s, dominants(op, x, w, top, c, s))


@kernel
def constants_run(op, m, c, s, shift, scale, first, end):
    """shift and scale of the slices first .. end - 1 of ``apply_partials`` (slice
    o * inner + j; ``row_constants``)."""
    inner = m.shape[1]
    for t in range(first, end):
        o, j, _ = piece_at(t, inner, inner, 1)
        shift[o, j], scale[o, j] = row_constants(op, m[o, j], c[o, j], s[o, j])


@kernel
def slices_run(op, x, w, out, shift, scale, dominant, first, end):
    """The outputs of slices first .. end - 1 of ``apply_partials`` where inner is 1."""
    for o in range(first, end):
        write_slice(op, x[o, :, 0], sample_of(w, o, 0), out[o, :, 0],
                    shift[o, 0], scale[o, 0], dominant[o, 0])


@kernel
def column_blocks_run(op, x, w, out, shift, scale, dominant, first, end):
    """The outputs of blocks first .. end - 1 of ``apply_partials`` (WRITE_ROWS entries of
    each slice of a row o of x: block o * blocks + b)."""
    n = x.shape[1]
    n_blocks = -(-n // WRITE_ROWS)
    for t in range(first, end):
        o, k0, k1 = piece_at(t, n_blocks, n, WRITE_ROWS)
        write_columns(op, x[o, k0:k1], rows_of(w, o, k0, k1), out[o, k0:k1],
                      shift[o], scale[o], dominant[o])


@kernel
def apply_partials(op, x, w, out, m, c, s, dominant):
    """out = the op along axis 1 of x (outer, n, inner), from each slice's partial (m, c, s)
    and, for log1m_softmax, its ``dominant`` value (nan where none), each (outer, inner).

    The second half of ``softmax_inner``; on its own for partials merged across the blocks
    of a Dask array.
    """
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    shift = np.empty((outer, inner))
    scale = np.empty((outer, inner))
    run_tasks(constants_run, (op, m, c, s, shift, scale), outer * inner, 1)
    if inner == 1:
        run_tasks(slices_run, (op, x, w, out, shift, scale, dominant), outer, n)
    else:
        run_tasks(column_blocks_run, (op, x, w, out, shift, scale, dominant),
                  outer * -(-n // WRITE_ROWS), WRITE_ROWS * inner)
    restore_threads(threads)


@kernel
def runner_up_needed(m, c, s, out):
    """out[i] = whether the dominant entry of slice i, whose partial is (m, c, s)[i], needs
    the partial of its entries below the max (``needs_runner_up``; 1-D arrays)."""
    for i in range(m.shape[0]):
        out[i] = needs_runner_up(LOG1M_SOFTMAX, m[i], c[i], s[i])


@kernel
def dominant_from(m, c, s, below_m, below_c, below_s, out):
    """out[i] = log1m_softmax's value at the dominant entry of slice i, or nan where the slice
    has none: from its partial (m, c, s) and the partial (below_*) of its entries below m
    (1-D arrays). What ``dominant_of_slice`` gives for a slice held in one piece."""
    for i in range(m.shape[0]):
        out[i] = np.nan
        if is_dominant(LOG1M_SOFTMAX, m[i], c[i], s[i]):
            out[i] = dominant_value(m[i], s[i], below_m[i], below_c[i], below_s[i])
