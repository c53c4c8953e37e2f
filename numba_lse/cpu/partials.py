"""The (max, ties, sum) partial of a log-sum-exp, and the one rule that merges two partials.

A partial of the weighted terms w_j exp(x_j) (w_j = 1 without weights) is three numbers:

    m  the max of the x_j whose weight is not zero (nan never wins: it reaches s instead),
    c  the sum of the weights of the entries equal to m (the count of ties, unweighted),
    s  the sum of w_j exp(x_j - m) over the other entries.

so that sum_j w_j exp(x_j) = exp(m) (c + s). Keeping the ties out of s is what makes
lse = m + log(c) + log1p(s / c) accurate when s is small (Blanchard, Higham & Higham 2021,
Thm 4.2; SciPy gh-18295). Threads, blocks, chunks and Dask blocks all combine partials with
``merge``; every backend loops differently but uses these functions.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .exp import exp_nonpositive, exp_of_difference, is_float32
from .intrinsics import add_reassoc, maxnum, prefer_wide_vectors, prefetch_bytes_after
from .jit import inline, inline_ir, kernel
from .log import log1p_nonnegative


def weight_at(w, index):
    """w[index] (an int or a tuple), or 1.0 when there are no weights (w is None)."""


def row_of(w, r):
    """Row r of the 2-D weights w, or None when there are none."""


def slice_of(w, lo, hi):
    """w[lo:hi] of the 1-D weights w, or None when there are none."""


def rows_in(w, r0, r1):
    """w[r0:r1] of the 2-D weights w, or None when there are none."""


def rows_of(w, o, k0, k1):
    """w[o, k0:k1] (of 3-D weights w: rows k0 .. k1 - 1 of slice o; of a 2-D array: part of
    its row o), or None when there is none."""


def part_of(w, o, k, j0, j1):
    """w[o, k, j0:j1] of the 3-D weights w, or None when there are none."""


def transposed(w, r0, r1):
    """The rows r0:r1 of the 2-D weights w, transposed (a copy) and shaped (1, n, r1 - r0)."""


def sample_of(array, o, j):
    """array[o, :, j] of a 3-D array, row o of a 2-D one (an (outer, n) view of a 3-D array
    whose inner size is 1: its rows keep a contiguous type, so their loops vectorise), or
    None when there is none."""


def zero_fill(array):
    """array[:] = 0, or nothing when there is no array."""


def store(array, i, value):
    """array[i] = value, or nothing when there is no array."""


def store_at(array, i, j, value):
    """array[i, j] = value, or nothing when there is no array."""


def is_present(array):
    """False when array is None: a constant, so LLVM removes the code it guards."""


def lowest(x):
    """-inf in the dtype of the array x."""


def prefetch_entries(x, lo, hi):
    """A hint to fetch x[lo:hi] of the contiguous 1-D x (entries lo .. hi - 1 in memory order
    of a C-ordered x of any shape) into the caches, where lo and hi may lie beyond x's end
    (the memory after it: the next row or chunk of the array x is a view of); nothing for
    other layouts, or when x is None."""


def prefetch_after(tile, half):
    """A hint to fetch half ``half`` (0, then 1) of as many entries as the C-ordered ``tile``
    holds, after its end: the next tile of rows of the array ``tile`` is a view of (beyond
    the array's end, the hints are dropped: a prefetch never faults), nothing for other
    layouts, or None. A tile of short rows is computed in L1, in passes bound by arithmetic
    (its max, its sums, its results), while the memory idles: one half between two passes,
    the other between the next two, and the next tile's rows are on their way (a hint per
    cache line; two halves of 80 or 160 lines measured 1.1x (float64) and 1.02x (float32)
    faster than all at once)."""


# No weights is a type (NoneType): each helper compiles to the plain or the weighted form,
# so the unweighted loops carry no weight at all.
@overload(weight_at, inline="always")
def _weight_at(w, index):
    if isinstance(w, types.NoneType):
        return lambda w, index: 1.0
    return lambda w, index: w[index]


@overload(row_of, inline="always")
def _row_of(w, r):
    if isinstance(w, types.NoneType):
        return lambda w, r: None
    return lambda w, r: w[r]


@overload(slice_of, inline="always")
def _slice_of(w, lo, hi):
    if isinstance(w, types.NoneType):
        return lambda w, lo, hi: None
    return lambda w, lo, hi: w[lo:hi]


@inline
def max_with(current, x, w):
    """The running max after seeing x; an entry with zero weight takes no part."""
    return maxnum(current, np.float64(x) if w != 0 else -np.inf)


@inline
def max_in_dtype(current, x, w):
    """``max_with`` for a running max of x's own dtype: a max is exact in any dtype, and a
    float32 loop has twice the vector lanes of a float64 one."""
    return maxnum(current, x if w != 0 else current)


# Marks the partials of a softmax-family output or a cross-entropy (``for_outputs``), as
# opposed to those of a log-sum-exp (None, the default): see ``term_exp``. A NumPy bool, not
# True: Numba types a global True as a literal, so a kernel given FOR_OUTPUTS by another
# kernel would be compiled apart from the same kernel given it by Python (typed bool).
FOR_OUTPUTS = np.bool_(True)
# Marks the partials of a cross-entropy's rows of float32 logits (``losses.loss_partial``):
# FOR_OUTPUTS's exp, and where the running max is finite, the ties in s (``block_terms``: c
# = 0, s the sum of every term, the max's exactly 1), without their compare, selects and
# count (float32 cross_entropy 1.1x faster). log1p((c - 1) + s) = log1p(s - 1), s - 1
# exact, is then the lse that ``softmax.row_constants`` takes, and c + s = s the softmax's
# scale. Only the digits of a small s - 1 suffer: ``losses.loss_partial`` sums those rows
# again with their ties counted. A NumPy float: a type of its own, not a literal.
TIES_IN_SUM = np.float64(1.0)


def term_exp(x, m, for_outputs):
    """exp(x - m) for a term of a partial: the full exp (``exp_nonpositive``) for a
    log-sum-exp; for the partials of element-wise outputs (``for_outputs`` FOR_OUTPUTS), the
    exp that x's dtype needs (``exp_of_difference``: float32 data, relative error below 2^-34).

    Why the outputs may: their sum c + s then has a relative error below 2^-31, which reaches
    softmax (c + s divides), log_softmax and the cross-entropy losses ((x - m) - log(c + s) and
    (m - x_y) + log(c + s), two terms of one sign: no cancellation) and log1m_softmax
    (log1p(-p), p <= 1/2) as a relative error below 2^-30, 1/64 of a float32 ulp. A log-sum-exp
    m + log(c + s) cancels where m ~ -log(c + s): its sums keep the full exp."""


@overload(term_exp)
def _term_exp(x, m, for_outputs):
    if isinstance(for_outputs, (types.Boolean, types.Float)):  # FOR_OUTPUTS, TIES_IN_SUM
        return lambda x, m, for_outputs: exp_of_difference(x, m)
    # None, and CERTIFIED wherever ``block_terms`` has not chosen for it.
    return lambda x, m, for_outputs: exp_nonpositive(np.float64(x) - m)


@inline
def add_term(c, s, x, w, m, for_outputs=None):
    """Add the term w exp(x - m) to the ties c or the sum s of a partial whose max is m
    (``term_exp`` says what ``for_outputs`` changes).

    A tie adds its weight to c exactly. A zero weight adds nothing, even where x is inf or nan
    (SciPy's rule). A nan x reaches s and makes the result nan.
    """
    tie = np.float64(x) == m
    w = np.float64(w)
    c = add_reassoc(c, w if tie else 0.0)
    s = add_reassoc(s, 0.0 if (tie or w == 0) else weighted(w, x, term_exp(x, m, for_outputs)))
    return c, s


@inline
def weighted(w, x, exp_x):
    """The term w exp(x - m), given exp_x = exp(x - m): w exp_x, but w itself (+-inf) for
    an infinite weight at any x above -inf, whose exp may have underflowed to 0 (inf 0 =
    nan, where the sum is infinite: SciPy's inf). x = -inf with it stays nan, as SciPy's.
    Without weights (w = 1) the select folds away."""
    return w if (abs(w) == np.inf and np.float64(x) > -np.inf) else w * exp_x


@inline
def rescaled(v, m_small, m):
    """v exp(m_small - m), m_small < m: the ties and sum v of a partial merged into one of a
    larger max; an infinite v of a partial above -inf stays infinite (``weighted``)."""
    return v if (abs(v) == np.inf and m_small > -np.inf) else v * exp_nonpositive(m_small - m)


@inline
def merge(m1, c1, s1, m2, c2, s2):
    """The partial of the union of two sets of terms.

    (m1, c1, s1) + (m2, c2, s2) = (m, c, s) with m = max(m1, m2); the ties of the smaller
    max become ordinary terms, rescaled by exp(m_small - m). -inf maxima (empty partials)
    merge to exactly the other partial, since exp(-inf) = 0.
    """
    if m1 == m2:
        return m1, c1 + c2, s1 + s2
    if m1 > m2:
        return m1, c1, s1 + rescaled(c2 + s2, m2, m1)
    return m2, c2, s2 + rescaled(c1 + s1, m1, m2)


@inline
def add_term_compensated(c, s, e, x, w, m, for_outputs=None, short=False):
    """``add_term`` with the sum s carried with its rounding error e (Neumaier's summation),
    for sums that run sequentially (a GPU thread's along its row): their error then stays of
    the order of an ulp whatever their length, as the vector lanes keep a row's. (float64
    data only.) ``short``: a sum of at most 31 terms, fewer than a row's lane sums take in
    sequence (32 per 1024-block), plain, as the CPU's (10 % faster on its rows of 10)."""
    tie = np.float64(x) == m
    w = np.float64(w)
    c = c + (w if tie else 0.0)
    v = 0.0 if (tie or w == 0) else weighted(w, x, term_exp(x, m, for_outputs))
    if is_float32(x) or short:
        # float64 sums of float32 data: n 2^-53 stays far below a float32 ulp; a short sum:
        # no longer in sequence than a row's lanes.
        return c, s + v, e
    s, e = add_compensated(s, e, v)
    return c, s, e


@inline
def add_compensated(s, e, v):
    """(s + v, e + the rounding error of s + v): one step of Neumaier's summation, whose sum
    is s + e at the end. An infinite or nan term leaves the error undefined: none is kept,
    so the sum is that of plain addition (inf, or nan).

    The error is Knuth's TwoSum: exact, as Neumaier's |s| >= |v| branch is, in six additions
    and no comparison (a gather's serial sum, ``nll_index``, measured ~10 % faster)."""
    t = s + v
    v_part = t - s
    error = (s - (t - v_part)) + (v - v_part)
    return t, e + (error if t - t == 0.0 else 0.0)


# Lanes of ``sum_compensated``: that many sums, each of every COMPENSATED_LANES-th value.
COMPENSATED_LANES = 32


@inline_ir
def sum_compensated(values):
    """(s, e): the sum s + e of the 1-D float64 ``values``, within about an ulp of the exact
    sum, as one sequential compensated sum (``add_compensated``) gives, in COMPENSATED_LANES
    compensated sums, each of every COMPENSATED_LANES-th value, merged in order at the end.
    The lanes' additions are independent, so they vectorise, where a sequential sum waits on
    each one (``losses.near_rows``)."""
    prefer_wide_vectors()
    lanes = np.empty((2, COMPENSATED_LANES))  # np.zeros: a parallel loop in a function
    sums, errors = lanes[0], lanes[1]           # compiled parallel=True (~30 us to set up)
    for j in range(COMPENSATED_LANES):
        sums[j], errors[j] = 0.0, 0.0
    n = values.shape[0]
    # Whole rounds of the lanes in a loop of a constant count, which LLVM vectorises fully
    # (a count of min(COMPENSATED_LANES, n - start): 0.75 ns per value, against 0.40-0.46),
    # then the last values, the same lanes in the same order.
    whole = n - n % COMPENSATED_LANES
    for start in range(0, whole, COMPENSATED_LANES):
        for j in range(COMPENSATED_LANES):
            sums[j], errors[j] = add_compensated(sums[j], errors[j], values[start + j])
    for j in range(n - whole):
        sums[j], errors[j] = add_compensated(sums[j], errors[j], values[whole + j])
    s, e = 0.0, 0.0
    for j in range(COMPENSATED_LANES):
        s, e = add_compensated(s, e + errors[j], sums[j])
    if s - s != 0.0:
        # inf or nan: lanes of huge terms of both signs may overflow where the sequential
        # sum does not (1e308 and -1e308 in turn: inf - inf = nan where it gives 0), so the
        # values are summed again in sequence, which gives inf or nan only where it must.
        s, e = 0.0, 0.0
        for i in range(n):
            s, e = add_compensated(s, e, values[i])
    return s, e


@inline
def log_abs_sum(m, c, s):
    """(log |exp(m) (c + s)|, sign of c + s) of a partial: the log-sum-exp and its sign.

    Special values as SciPy: nan anywhere -> nan; a +inf max -> +inf (nan if its weights
    cancel); every term -inf or weighted 0 -> (-inf, 0); exact cancellation -> (-inf, 0).
    """
    if s != s or c != c:
        return np.nan, np.nan
    if m == -np.inf:
        # Every term -inf (or weighted 0): their weights times exp(-inf) = 0. (An infinite
        # weight among them too: c cannot tell it from finite weights whose sum overflowed,
        # whose terms are 0; SciPy's inf * 0 gives nan there.)
        return -np.inf, 0.0
    if c == 0:
        # The weights at the max cancel exactly; what is left is s alone.
        if m == np.inf:
            return np.nan, np.nan
        if s == 0:
            return -np.inf, 0.0
        return m + math.log(abs(s)), math.copysign(1.0, s)
    if c - c != 0 or s - s != 0:
        # Infinite weights: an infinite sum (SciPy's inf), nan where infinities of both
        # signs meet (not inf / inf in s / c below). At a +inf max the ties' terms are
        # infinite whatever their weights.
        total = (c * np.inf if m == np.inf else c) + s
        return (np.inf, math.copysign(1.0, total)) if total == total else (np.nan, np.nan)
    t = s / c
    sign = math.copysign(1.0, c)
    # A unique max (c = 1) is the common case: one log call, not two.
    log_c = 0.0 if c == 1 else math.log(abs(c))
    if t < -1:
        # c + s has the opposite sign of c: log|c + s| = log|c| + log(-1 - t).
        return m + log_c + math.log(-1.0 - t), -sign
    if t == -1:
        return -np.inf, 0.0
    return m + log_c + (log1p_nonnegative(t) if t >= 0 else math.log1p(t)), sign


@inline
def is_plain(m, c, s):
    """Whether ``log_abs_sum(m, c, s)`` is (m + 0.0 + log1p_nonnegative(s), 1.0): one tie,
    nonnegative terms, a max above -inf. Every unweighted row but the special ones."""
    return c == 1.0 and s >= 0 and m > -np.inf


# Marks the partials of a float32 log-sum-exp whose results are certified (``lse_rows``):
# their blocks take float32's exp (``exp_of_difference``, relative error below 2^-34 per
# term; 1.4x faster, the float32 kernels being bound by float64 arithmetic) once the running
# max reaches CHEAP_FROM (``block_terms``), so that a slice whose max is lower, whose lse may
# be near 0, is summed exactly as with the full exp, and the lse of every other is >= 1.
# Columns and tiles of short rows (``reduce.lse_of_columns``) choose a band at a time: all
# its terms take float32's exp where at least half its lse will likely reach CHEAP_FROM.
# A NumPy int, not 1, for the reason FOR_OUTPUTS is a NumPy bool (no literal compile apart).
CERTIFIED = np.int64(1)
CHEAP_FROM = 1.0
# CHEAP_SUM_ERROR bounds the relative difference between a sum of unweighted terms that took
# float32's exp and the one the full exp gives: 2^-34 from the exps, and twice the float64
# roundings of a sum of at most 2^20 sequential additions (2^-32; a row's sum takes ~200 +
# n / 2^16). SHORT_SUM_ERROR bounds it for sums of fewer than 32 terms (a short row's):
# 2^-34.16 from the exps (5.2e-11, with the 2^-44 of their range reduction), 2^-52 from the
# full exp's, 2 * 31 * 2^-53 from the roundings: below 2^-34.1, with a factor 2 to spare;
# 8x fewer results near a float32 rounding boundary than CHEAP_SUM_ERROR would flag.
# (``reduce.column_sum_error`` takes it for the exps alone, and adds the roundings of a
# column of its length, for short rows' tiles and longer columns alike.)
# ROUNDING bounds the float64 roundings of m + log(c + s), relative to |m| + |lse|.
CHEAP_SUM_ERROR = 2.0 ** -30
SHORT_SUM_ERROR = 2.0 ** -33
ROUNDING = 2.0 ** -50


@inline
def rounds_alike(value, m, error):
    """Whether every value within error + the roundings of m + log(c + s) of ``value`` (a
    log-sum-exp whose sum c + s has a relative error of at most ``error``, so its log an
    absolute one) rounds to the float32 that ``value`` rounds to."""
    bound = error + ROUNDING * (abs(m) + abs(value))
    return np.float32(value - bound) == np.float32(value + bound)


@inline
def certain_in_float32(value, m, c, s):
    """Whether float32(value), value = log_abs_sum(m, c, s) of an unweighted CERTIFIED partial,
    is certainly the float32 that the full exp's sums would give.

    A max below CHEAP_FROM: the sums took the full exp. Otherwise c + s differs from the full
    exp's by at most CHEAP_SUM_ERROR * (c + s) (a row's sums hold its ties too, so their
    roundings are relative to c + s: ``block_terms``), so the log-sum-exps by at most
    CHEAP_SUM_ERROR (through log), plus their own roundings: where every value within that
    bound of ``value`` rounds to one float32, that float32 is both results. Not certain near a
    rounding boundary of float32 (lse >= 1: 2^-30 against an ulp of at least 2^-23, 1 slice
    in 64 at most, 1 in 300 to 1000 for rows of randn): those slices are summed again with
    the full exp. Special values (inf, nan) come out the same from either exp.
    """
    if m < CHEAP_FROM or not value - value == 0.0:
        return True
    return rounds_alike(value, m, CHEAP_SUM_ERROR)


@inline
def certain_everywhere(value, m, error):
    """``certain_in_float32`` for a partial every term of which took float32's exp, its ties
    among them, whatever its max (a CERTIFIED band of columns: ``reduce.lse_of_columns``),
    its sum's relative error at most ``error``. Never certain where the max is not finite
    (exp(inf - inf) is nan: the sum means nothing); where the lse is near 0, rarely (its
    float32 ulps are small): those are summed again with the full exp."""
    if not abs(m) < np.inf:
        return False
    if not value - value == 0.0:
        return True  # nan from a nan entry, which the full exp's sum holds too
    return rounds_alike(value, m, error)


def is_certain(value, m, c, s, error):
    """``certain_in_float32(value, m, c, s)`` where ``error`` is None (a row's partial, whose
    blocks chose their exp by its max), else ``certain_everywhere(value, m, error)``."""


@overload(is_certain, inline="always")
def _is_certain(value, m, c, s, error):
    if isinstance(error, (types.NoneType, types.Omitted)):
        return lambda value, m, c, s, error: certain_in_float32(value, m, c, s)
    return lambda value, m, c, s, error: certain_everywhere(value, m, error)


@kernel
def finish_slices(m, c, s, out, sign, uncertain=None, error=None):
    """out[i], sign[i] = log_abs_sum(m[i], c[i], s[i]) for 1-D arrays (sign None: the signs
    are not wanted, and not written): first the plain form for all, in a vector loop, then
    the exact function for the slices that are not plain, if any.

    ``uncertain``, for unweighted CERTIFIED partials into a float32 out: uncertain[i] =
    whether slice i must be summed again with the full exp (``is_certain``: ``error`` None
    for the partials of rows, the bound of the sums' error for those of ``certain_everywhere``);
    returns how many must (0 without it)."""
    prefer_wide_vectors()
    count = 0
    not_plain = 0
    for i in range(m.shape[0]):
        value = (m[i] + 0.0) + log1p_nonnegative(s[i])
        out[i] = value
        store(sign, i, 1.0)
        flag = not is_certain(value, m[i], c[i], s[i], error)
        store(uncertain, i, flag)
        plain = is_plain(m[i], c[i], s[i])
        count += flag and plain
        not_plain += not plain
    # Counted in the vector loop: the search is a scalar loop with a branch per slice, which,
    # run over every slice, took a tenth of a logsumexp of rows of 10.
    if not_plain:
        for i in range(m.shape[0]):
            if not is_plain(m[i], c[i], s[i]):
                value, sign_i = log_abs_sum(m[i], c[i], s[i])
                out[i] = value
                store(sign, i, sign_i)
                flag = not is_certain(value, m[i], c[i], s[i], error)
                store(uncertain, i, flag)
                count += flag
    return count if is_present(uncertain) else 0


# Elements per block: a block is read twice (max, then sum) while it sits in L1.
BLOCK = 1024


# ``block_max``'s vector loop takes MAX_TAIL_BYTES a step (four 512-bit vectors: 64 float32,
# 32 float64); the entries left over are read again with the step before them, in a loop of
# that constant length, which LLVM turns into vectors too.
MAX_TAIL_BYTES = 256


@kernel
def block_max(x, w, m):
    """max(m, the max of x over entries of nonzero weight).

    Where the vector loop leaves entries over, a scalar loop would take them one at a time,
    each step waiting on the one before (a max, a test for nan, a select): 40 % of a
    cross_entropy's loop over rows of 1000 float32 logits (40 left over). So the loop stops
    at a multiple of its step and a slice of at least one step takes its last step's worth
    again, in a loop of constant length: a max is idempotent, entries read twice change
    nothing (float32 cross_entropy on 4096x1000 1.09x faster)."""
    prefer_wide_vectors()
    step = MAX_TAIL_BYTES // x.itemsize
    block_m = lowest(x)
    n = x.shape[0]
    whole = n if n < step else n - n % step
    for i in range(whole):
        block_m = max_in_dtype(block_m, x[i], weight_at(w, i))
    if whole < n:
        last = n - step
        for i in range(step):
            block_m = max_in_dtype(block_m, x[last + i], weight_at(w, last + i))
    return maxnum(m, np.float64(block_m))


@kernel
def block_ties_sum(x, w, m, for_outputs=None):
    """(c, s) of the slice x for the max m: its ties' weights and the sum of the others."""
    prefer_wide_vectors()
    c = 0.0
    s = 0.0
    for i in range(x.shape[0]):
        c, s = add_term(c, s, x[i], weight_at(w, i), m, for_outputs)
    return c, s


@kernel
def exps_and_sum(x, w, m, exps):
    """(c, s) of the 1-D slice x (weights w: a mask, or None) for its max m, keeping the exps
    of its terms for the outputs: exps[i] = exp(x[i] - m) (``term_exp``, FOR_OUTPUTS).
    Without weights, the same sums as ``block_ties_sum(x, None, m, FOR_OUTPUTS)``,
    bit for bit (the same operations once w_i = 1 is folded; checked on slices of 1 to
    1024): a cross-entropy's loss is the same with its gradient, which keeps the exps, and
    without."""
    prefer_wide_vectors()
    c = 0.0
    s = 0.0
    for i in range(x.shape[0]):
        exp_x = term_exp(x[i], m, FOR_OUTPUTS)
        exps[i] = exp_x
        tie = np.float64(x[i]) == m
        w_i = np.float64(weight_at(w, i))
        # The tie's weight as a product, not ``w_i if tie else 0.0`` (as add_term): with no
        # weights that select of two constants kept LLVM from vectorising this loop.
        c = add_reassoc(c, np.float64(tie) * w_i)
        s = add_reassoc(s, 0.0 if (tie or w_i == 0) else w_i * exp_x)
    return c, s


@kernel
def block_sum(x, m, exps=None):
    """The sum of exp(x_i - m) over the whole slice x, ties included, with float32 data's
    exp (``exp_of_difference``): each tie adds exp(0) = 1, exactly. Keeping the exps where
    given, exps[i] = exp(x[i] - m): an unweighted softmax's terms, whose scale c + s needs no
    tie counted apart (float32 data only: ``softmax.terms_keeping_exps`` says why)."""
    prefer_wide_vectors()
    s = 0.0
    for i in range(x.shape[0]):
        exp_x = exp_of_difference(x[i], m)
        store(exps, i, exp_x)
        s = add_reassoc(s, exp_x)
    return s


def block_terms(x, w, m, for_outputs):
    """``block_ties_sum(x, w, m, for_outputs)``; for CERTIFIED partials, (0, ``block_sum(x,
    m)``), float32's exp and the ties in s, where the running max m has reached CHEAP_FROM
    (and is finite: exp(inf - inf) would be nan), the full exp below.

    Counting the ties apart keeps the digits of a small s in log1p(s / c) where lse may be
    near 0; a CERTIFIED slice whose max reaches CHEAP_FROM has lse >= 1, whose error is
    relative to c + s: its ties' compare, selects and count (4 of ~20 vector operations)
    are left out (float32 logsumexp rows 1.05-1.1x faster). ``ties_counted`` gives the
    slice's partial its one tie back.

    For TIES_IN_SUM partials (float32 x, unweighted), (0, ``block_sum(x, m)``) where the
    running max m is finite, else ``block_ties_sum(x, w, m, FOR_OUTPUTS)``."""


@overload(block_terms, inline="always")
def _block_terms(x, w, m, for_outputs):
    if isinstance(for_outputs, types.Float):
        if not (isinstance(w, types.NoneType) and x.dtype == types.float32):
            return None  # TIES_IN_SUM partials are float32's and unweighted

        def ties_in_sum(x, w, m, for_outputs):
            if -np.inf < m < np.inf:
                return 0.0, block_sum(x, m)
            return block_ties_sum(x, w, m, FOR_OUTPUTS)

        return ties_in_sum
    if isinstance(for_outputs, types.Integer):
        if not isinstance(w, types.NoneType):
            return None  # CERTIFIED partials are unweighted (``reduce.certified_for``)

        def certified(x, w, m, for_outputs):
            if CHEAP_FROM <= m < np.inf:
                return 0.0, block_sum(x, m)
            return block_ties_sum(x, w, m, None)

        return certified
    return lambda x, w, m, for_outputs: block_ties_sum(x, w, m, for_outputs)


def ties_counted(m, c, s, for_outputs):
    """The partial (m, c, s) of a whole slice; for CERTIFIED partials whose blocks kept their
    ties in s (c = 0, CHEAP_FROM <= m < inf: ``block_terms``), (m, 1, s - 1): the slice's max
    is one of its entries, whose term in s is exactly 1 (c + s the same, to a rounding of
    2^-53 (c + s))."""


@overload(ties_counted, inline="always")
def _ties_counted(m, c, s, for_outputs):
    if isinstance(for_outputs, types.Integer):
        def certified(m, c, s, for_outputs):
            if c == 0 and CHEAP_FROM <= m < np.inf:
                return m, 1.0, s - 1.0
            return m, c, s

        return certified
    return lambda m, c, s, for_outputs: (m, c, s)


def terms_of(x, w, m, for_outputs, exps):
    """``block_terms(x, w, m, for_outputs)``, or where ``exps`` is given (not None),
    ``exps_and_sum(x, w, m, exps)`` (FOR_OUTPUTS partials), or for TIES_IN_SUM partials
    ``block_sum(x, m, exps)`` where m is finite: the same sums, keeping the exps."""


@overload(terms_of, inline="always")
def _terms_of(x, w, m, for_outputs, exps):
    if isinstance(exps, types.NoneType):
        return lambda x, w, m, for_outputs, exps: block_terms(x, w, m, for_outputs)
    if isinstance(for_outputs, types.Float):
        if not (isinstance(w, types.NoneType) and x.dtype == types.float32):
            return None  # TIES_IN_SUM partials are float32's and unweighted

        def ties_in_sum(x, w, m, for_outputs, exps):
            if -np.inf < m < np.inf:
                return 0.0, block_sum(x, m, exps)
            return exps_and_sum(x, w, m, exps)

        return ties_in_sum
    if not isinstance(for_outputs, types.Boolean):
        return None  # kept exps are the outputs' (FOR_OUTPUTS), never a log-sum-exp's
    return lambda x, w, m, for_outputs, exps: exps_and_sum(x, w, m, exps)


# A block's sum fetches the entries PREFETCH_AHEAD after it (two blocks: 8 KiB of float32,
# 16 KiB of float64), PREFETCH_STEP entries at a time (one block ahead, 3 or 4, and steps of
# 256 measured slower or alike on float32 and float64 rows of 4096 and vectors, two threads).
PREFETCH_AHEAD = 2 * BLOCK
PREFETCH_STEP = 128


@inline_ir
def terms_fetching(x, w, m, for_outputs, exps):
    """(c, s) of the 1-D slice x for its max m (``terms_of``: exps kept where given),
    PREFETCH_STEP entries at a time, each step after a hint to fetch the entries
    PREFETCH_AHEAD after its own (``prefetch_entries``: the memory after x, where x ends).

    A slice's max is read from memory, its sum from L1, where it is bound by arithmetic,
    not by memory: the hints have the next entries arrive meanwhile, so that the next max
    reads from the cache too (float32 logsumexp of rows of 4096 1.3x faster, float64
    1.2x; all the hints of a block at once, before its sum, gained nothing)."""
    c = 0.0
    s = 0.0
    for lo in range(0, x.shape[0], PREFETCH_STEP):
        hi = min(lo + PREFETCH_STEP, x.shape[0])
        prefetch_entries(x, lo + PREFETCH_AHEAD, hi + PREFETCH_AHEAD)
        prefetch_entries(w, lo + PREFETCH_AHEAD, hi + PREFETCH_AHEAD)
        step_c, step_s = terms_of(x[lo:hi], slice_of(w, lo, hi), m, for_outputs,
                                  slice_of(exps, lo, hi))
        c += step_c
        s += step_s
    return c, s


@inline_ir
def partial_of_slice(x, w, for_outputs=None):
    """The partial of the 1-D slice x (weights w, same length, or None), block by block
    (``term_exp`` says what ``for_outputs`` changes), each block's sum fetching the block
    PREFETCH_AHEAD entries later (``terms_fetching``).

    The two loops are functions of their own, not inlined: LLVM vectorises each better
    alone (measured 25 % faster than the same loops written here).
    """
    m = -np.inf
    c = 0.0
    s = 0.0
    n = x.shape[0]
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        xb = x[lo:hi]
        wb = slice_of(w, lo, hi)
        block_m = block_max(xb, wb, m)
        block_c, block_s = terms_fetching(xb, wb, block_m, for_outputs, None)
        m, c, s = merge(m, c, s, block_m, block_c, block_s)
    return ties_counted(m, c, s, for_outputs)


@overload(rows_in, inline="always")
def _rows_in(w, r0, r1):
    if isinstance(w, types.NoneType):
        return lambda w, r0, r1: None
    return lambda w, r0, r1: w[r0:r1]


@overload(rows_of, inline="always")
def _rows_of(w, o, k0, k1):
    if isinstance(w, types.NoneType):
        return lambda w, o, k0, k1: None
    return lambda w, o, k0, k1: w[o, k0:k1]


@overload(part_of, inline="always")
def _part_of(w, o, k, j0, j1):
    if isinstance(w, types.NoneType):
        return lambda w, o, k, j0, j1: None
    return lambda w, o, k, j0, j1: w[o, k, j0:j1]


@overload(transposed, inline="always")
def _transposed(w, r0, r1):
    if isinstance(w, types.NoneType):
        return lambda w, r0, r1: None
    return lambda w, r0, r1: np.ascontiguousarray(w[r0:r1].T).reshape((1, w.shape[1], r1 - r0))


@overload(sample_of, inline="always")
def _sample_of(array, o, j):
    if isinstance(array, types.NoneType):
        return lambda array, o, j: None
    if array.ndim == 2:
        return lambda array, o, j: array[o]
    return lambda array, o, j: array[o, :, j]


@overload(zero_fill, inline="always")
def _zero_fill(array):
    if isinstance(array, types.NoneType):
        return lambda array: None

    def fill(array):
        array[:] = 0.0

    return fill


@overload(store, inline="always")
def _store(array, i, value):
    if isinstance(array, (types.NoneType, types.Omitted)):
        return lambda array, i, value: None

    def put(array, i, value):
        array[i] = value

    return put


@overload(store_at, inline="always")
def _store_at(array, i, j, value):
    if isinstance(array, types.NoneType):
        return lambda array, i, j, value: None

    def put(array, i, j, value):
        array[i, j] = value

    return put


@overload(is_present, inline="always")
def _is_present(array):
    present = not isinstance(array, (types.NoneType, types.Omitted))
    return lambda array: present


@overload(lowest, inline="always")
def _lowest(x):
    scalar = as_dtype(x.dtype).type
    return lambda x: scalar(-np.inf)


@overload(prefetch_after, inline="always")
def _prefetch_after(tile, half):
    if isinstance(tile, types.NoneType):
        return lambda tile, half: None

    def fetch(tile, half):
        size = tile.size
        prefetch_entries(tile, size + half * size // 2, size + (half + 1) * size // 2)

    return fetch


@overload(prefetch_entries, inline="always")
def _prefetch_entries(x, lo, hi):
    if isinstance(x, types.NoneType) or x.layout != "C":
        return lambda x, lo, hi: None

    def fetch(x, lo, hi):
        # One hint per 64-byte cache line.
        for offset in range(lo * x.itemsize, hi * x.itemsize, 64):
            prefetch_bytes_after(x, offset)

    return fetch
