"""exp on [-inf, 0], written so that LLVM vectorises the loops that call it.

Numba's ``math.exp`` is a call into libm that LLVM cannot vectorise (llvmlite dropped SVML).
Every exponent this library takes is x - max(x) <= 0, so this exp needs only that domain
(but one: the float32 columns of a log-sum-exp are read once, their terms taken against a
shift that may lie below their max, by at most ``reduce.SHIFT_LIMIT``; the float32 data's
exp, below, holds its error up to 664).

Method (Cody & Waite range reduction, minimax polynomial):
    k = round(x / ln 2),  r = x - k ln 2 with ln 2 split in two,  |r| <= ln(2)/2
    exp(r) = 1 + q,  q = r + r^2 P(r),  P of degree 10 minimax for exp's relative error
    exp(x) = (exp(r) * 2^(k + 64)) * 2^-64
The polynomial's relative error is 7.2e-19 (0.003 ulp; ``perf/exp_polynomial.py`` computes
it); adding 1 last keeps the rounding error of q below a quarter ulp; 2^(k + 64) is normal
down to k = -1076, so the first product is exact and a subnormal result is rounded once, by
the second. k is rounded by adding 1.5 * 2^52 + 1087 and read, already biased as 2^(k + 64)'s
exponent, from the low bits of the sum, and x is clamped with a compare that lets nan
through, so no select for special values is left in the loop (the sum loop of a log-sum-exp:
about 30 vector instructions where a two-step scaling and float-to-int conversions took 46;
1.46x faster; the minimax polynomial, one FMA shorter than Taylor's to 1/13! and 7x more
accurate, and the bias in the rounding constant: 1.1x more). The max error, measured against
long-double ``expl`` on every float32 input and on 10^6 float64 samples per binade range
(``perf/exp_accuracy.py``, ``tests/test_exp.py``), is under 1 ulp.

``exp_of_difference(x, shift)`` = exp(float64(x) - shift) picks the polynomial by the dtype of
the data: float64 data gets the one above; float32 data gets the same method with P of degree
5, minimax too, and ln 2 in one piece (relative error 5.2e-11 = 2^-34.2, 1/1000 of a float32
ulp), five coefficients fewer, 1 + r + r^2 P(r) in Estrin's scheme (pairs, then powers r^2 and r^4:
three FMAs deep where Horner's is seven, so the loop's independent exps overlap more; sums and
softmax 1.03-1.13x faster on AVX2; its roundings, ~2^-52, are far below 2^-34; the float64
polynomial stays Horner's, faster there and within 1 ulp), and 2^k in one multiply (results
below 2^-1022 are not kept: none shows in a float32 output or a sum). The element-wise outputs
(softmax, log1m_softmax, gradients) use it, and so do the row sums that feed them
(``partials.term_exp``): each output's error stays far below its float32 ulp. The sums of a
log-sum-exp take the full exp, since an error of 2^-34 in the sum would be amplified by the
condition number where lse is near 0, except where the result is certified to be the same
float32 (``partials.certain_in_float32``: float32 rows whose max is >= 1;
``certain_everywhere``: bands of float32 columns and of short rows whose lse are likely
>= 1, ``reduce.lse_of_columns``).

Special values: exp(-inf) = 0, exp(nan) = nan, exp(x) = 0 below -745.14 (where the true value
rounds to 0; float32 data's: below -708.74), exp(0) = 1 exactly (so a tie with the max
contributes exactly 1).
"""

import numpy as np
from numba import types
from numba.extending import overload

from .intrinsics import bits_of_float64, float64_from_bits
from .jit import inline

_LOG2E = 1.4426950408889634
# ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with 32 significant bits, so k * _LN2_HI is exact.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LN2 = 0.6931471805599453
# 1.5 * 2^52 + 1087: adding it rounds a float64 below 2^51 in magnitude to an integer k, and
# the low 12 bits of the sum's bit pattern are then k + 1087 = k + 64 + 1023, the biased
# exponent of 2^(k + 64) (no float-to-int conversion, which nan would poison, and no add).
_EXPONENT_OFFSET = 1023 + 64
_ROUND = 6755399441055744.0 + _EXPONENT_OFFSET
# Arguments are clamped here: exp(-746) is below half the smallest subnormal, so it rounds to
# 0, and k = -1076 keeps 2^(k + 64) normal.
_CLAMP = -746.0
# float32 data's exp (``exp_nonpositive_for_float32``) builds 2^k itself: the sum's low bits
# are k + 1023, 2^k's biased exponent, and its arguments are clamped at -709, where k =
# -1023: a biased exponent of 0 and no significand bits, the float +0, so that exp(-inf) is 0.
_EXPONENT_BIAS = 1023
_ROUND_FOR_FLOAT32 = 6755399441055744.0 + _EXPONENT_BIAS
_CLAMP_FOR_FLOAT32 = -709.0
_TWO_TO_MINUS_64 = 5.421010862427522e-20
# exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2)/2: P of degree 10 (float64) and 5 (float32 data),
# each the minimax polynomial for the relative error of exp, its coefficients rounded to
# float64 (``perf/exp_polynomial.py``, Remez in mpmath, prints these). Relative error of the
# polynomials: 7.2e-19 = 2^-60.3 and 5.2e-11 = 2^-34.2; Taylor's 1/2!, ..., 1/13! and
# 1/2!, ..., 1/8! reached 5.2e-18 and 2.7e-10 with one FMA more each.
_P64 = (
    0.5, 0.16666666666666682, 0.041666666666666095, 0.008333333333317048,
    0.0013888888889115449, 0.0001984126989635104, 2.4801586926853068e-05,
    2.7557234895365985e-06, 2.7557581747198127e-07, 2.5112024956529917e-08,
    2.0826635950666955e-09,
)
_P32 = (
    0.5000000067643018, 0.1666666586940674, 0.041666295091777474, 0.00833349701033573,
    0.0013944648729553998, 0.00019790351526456981,
)


@inline
def _reduce_range(x, clamp, rounding):
    """(x, n, k) with x clamped to [clamp, 0], k = round(x / ln 2), and n the float64 whose
    bit pattern holds k + (rounding's offset: _EXPONENT_OFFSET or _EXPONENT_BIAS) in its low
    bits; nan stays nan through all three."""
    clamped = clamp if x < clamp else x
    n = clamped * _LOG2E + rounding
    return clamped, n, n - rounding


@inline
def _scale(n, p):
    """p * 2^k for k held by n: one multiply by 2^(k + 64), exact, and one by 2^-64, which
    rounds once, and only where the result is subnormal."""
    scale = float64_from_bits(bits_of_float64(n) << 52)
    return (p * scale) * _TWO_TO_MINUS_64


@inline
def exp_nonpositive(x):
    """exp(x) for float64 x in [-inf, 0] or nan, within 1 ulp; vectorisable."""
    x, n, k = _reduce_range(x, _CLAMP, _ROUND)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    c = _P64
    q = r + r * r * (c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (
        c[6] + r * (c[7] + r * (c[8] + r * (c[9] + r * c[10]))))))))))
    return _scale(n, 1.0 + q)


@inline
def exp_nonpositive_for_float32(x):
    """exp(x) for float64 x in [-inf, 0] or nan, relative error below 2^-34 down to -708;
    vectorisable. The same holds up to x = 664 (the range reduction's error, k 2^-55.3, stays
    below 2^-45), where ``reduce.column_sums`` takes it. Below -708 its results are p 2^-1022
    (k = -1022, down to -708.74: rounded once where subnormal) or 0 (k = -1023: from -708.74
    down, -inf included), not the true values' subnormals: within 2^-1021 of them. exp(0) = 1,
    exp(-inf) = 0 and exp(nan) = nan, as ``exp_nonpositive``.

    Where its results differ from the true ones (by less than 2^-1021) no value shows it: a
    sum it feeds holds a term of at least 1 (the max's), and an output it gives is float32,
    where both round to 0 (below 2^-150). Only the sign of a zero may: an output that the
    true exp makes -tiny, rounded to -0, is +0 (log_softmax's max entry, log1m_softmax's
    entries, where the others, or they, lie 708.74 to 745.13 below the max; further below,
    the full exp's underflow gives +0 too, and SciPy's float32 from ~104 below). So p * 2^k
    is one multiply, exact down to 2^-1022, where ``exp_nonpositive`` takes two to round its
    subnormal results once (the sums of float32 log-sum-exps 1.07x faster in L1; softmax and
    log1m_softmax of float32 rows of 4096 1.06x and 1.09x, from memory)."""
    x, n, k = _reduce_range(x, _CLAMP_FOR_FLOAT32, _ROUND_FOR_FLOAT32)
    # ln 2 in one piece, in one FMA (the kernels' contract flag): r within 1023 * 2^-55.3 +
    # 2^-55 < 2^-44 of x - k ln 2, where the polynomial's error is 2^-34.2.
    r = x - k * _LN2
    c = _P32
    # 1 + r + c0 r^2 + ... + c5 r^7 in Estrin's scheme: three FMAs deep after r^4, not seven.
    r2 = r * r
    r4 = r2 * r2
    p = ((1.0 + r) + r2 * (c[0] + r * c[1])) + r4 * ((c[2] + r * c[3]) + r2 * (c[4] + r * c[5]))
    return p * float64_from_bits(bits_of_float64(n) << 52)


def is_float32(x):
    """Whether x is a float32 scalar: a compile-time constant, so LLVM drops the other branch."""


@overload(is_float32, inline="always")
def _is_float32(x):
    answer = x == types.float32
    return lambda x: answer


@inline
def exp_of_difference(x, shift):
    """exp(float64(x) - shift), with the polynomial the dtype of the data x needs."""
    difference = np.float64(x) - shift
    if is_float32(x):
        return exp_nonpositive_for_float32(difference)
    return exp_nonpositive(difference)
