"""exp on [-inf, 0], written so that LLVM vectorises the loops that call it.

Numba's ``math.exp`` is a call into libm that LLVM cannot vectorise (llvmlite dropped SVML).
Every exponent this library takes is x - max(x) <= 0, so this exp needs only that domain.

Method (Cody & Waite range reduction, Taylor polynomial):
    k = round(x / ln 2),  r = x - k ln 2 with ln 2 split in two,  |r| <= ln(2)/2
    exp(r) = 1 + q,  q = r + r^2 (1/2! + r/3! + ... + r^11/13!)
    exp(x) = (exp(r) * 2^(k + 64)) * 2^-64
The Taylor remainder |r|^14/14! < 4.3e-18 (0.02 ulp); adding 1 last keeps the rounding error of
q below a quarter ulp; 2^(k + 64) is normal down to k = -1076, so the first product is exact
and a subnormal result is rounded once, by the second. k is rounded by adding 1.5 * 2^52 and
read from the bits of the sum, and x is clamped with a compare that lets nan through, so no
select for special values is left in the loop (the sum loop of a log-sum-exp: about 30 vector
instructions where a two-step scaling and float-to-int conversions took 46; 1.46x faster, the
same bits). The max error, measured against long-double ``expl`` on every float32 input and
on 10^6 float64 samples per binade range (``perf/exp_accuracy.py``, ``tests/test_exp.py``),
is under 1 ulp.

``exp_of_difference(x, shift)`` = exp(float64(x) - shift) picks the polynomial by the dtype of
the data: float64 data gets the one above; float32 data gets the same method truncated after
r^8/8! (remainder below 2^-31 relative, 1/128 of a float32 ulp), five fewer FMAs. The
element-wise outputs (softmax, log1m_softmax, gradients) use it, and so do the row sums
that feed them (``partials.term_exp``): each output's error stays far below its float32
ulp. The sums of a log-sum-exp take the full exp, since an error of 2^-31 in the sum would be
amplified by the condition number where lse is near 0, except where the result is certified
to be the same float32 (``partials.certain_in_float32``: float32 rows whose max is >= 1).

Special values: exp(-inf) = 0, exp(nan) = nan, exp(x) = 0 below -745.14 (where the true value
rounds to 0), exp(0) = 1 exactly (so a tie with the max contributes exactly 1).
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
# 1.5 * 2^52: adding it rounds a float64 below 2^51 in magnitude to an integer, which is then
# the low bits of the sum's bit pattern (no float-to-int conversion, which nan would poison).
_ROUND = 6755399441055744.0
# Arguments are clamped here: exp(-746) is below half the smallest subnormal, so it rounds to
# 0, and k = -1076 keeps 2^(k + 64) normal.
_CLAMP = -746.0
_EXPONENT_BIAS = 1023
_TWO_TO_MINUS_64 = 5.421010862427522e-20


@inline
def _reduce_range(x):
    """(n, k, r) with x = k ln 2 + r, |r| <= ln(2)/2 (x clamped to [_CLAMP, 0]), and n the
    float64 whose bit pattern holds k in its low bits; nan stays nan through all three."""
    clamped = _CLAMP if x < _CLAMP else x
    n = clamped * _LOG2E + _ROUND
    k = n - _ROUND
    return n, k, (clamped - k * _LN2_HI) - k * _LN2_LO


@inline
def _scale(n, q):
    """(1 + q) * 2^k for k held by n: one multiply by 2^(k + 64), exact, and one by 2^-64,
    which rounds once, and only where the result is subnormal."""
    scale = float64_from_bits((bits_of_float64(n) + (_EXPONENT_BIAS + 64)) << 52)
    return ((1.0 + q) * scale) * _TWO_TO_MINUS_64


@inline
def exp_nonpositive(x):
    """exp(x) for float64 x in [-inf, 0] or nan, within 1 ulp; vectorisable."""
    n, k, r = _reduce_range(x)
    q = r + r * r * (
        1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (
            1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (
                1.0 / 39916800 + r * (1.0 / 479001600 + r * (1.0 / 6227020800)))))))))))
    )
    return _scale(n, q)


@inline
def exp_nonpositive_for_float32(x):
    """exp(x) for float64 x in [-inf, 0] or nan, relative error below 2^-31; vectorisable."""
    n, k, r = _reduce_range(x)
    q = r + r * r * (
        1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (
            1.0 / 5040 + r * (1.0 / 40320)))))))
    return _scale(n, q)


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
