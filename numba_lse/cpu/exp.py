"""exp on [-inf, 0], written so that LLVM vectorises the loops that call it.

Numba's ``math.exp`` is a call into libm that LLVM cannot vectorise (llvmlite dropped SVML).
Every exponent this library takes is x - max(x) <= 0, so this exp needs only that domain.

Method (Cody & Waite range reduction, Taylor polynomial):
    k = round(x / ln 2),  r = x - k ln 2 with ln 2 split in two,  |r| <= ln(2)/2
    exp(r) = 1 + q,  q = r + r^2 (1/2! + r/3! + ... + r^11/13!)
    exp(x) = exp(r) * 2^(k1) * 2^(k2),  k1 + k2 = k
The Taylor remainder |r|^14/14! < 4.3e-18 (0.02 ulp); adding 1 last keeps the rounding error of
q below a quarter ulp; the two-step scaling keeps 2^k1 and 2^k2 normal down to k = -1075, so a
subnormal result is rounded once. The max error, measured against long-double ``expl`` on every
float32 input and on 10^6 float64 samples per binade range (``perf/exp_accuracy.py``,
``tests/test_exp.py``), is under 1 ulp.

``exp_of_difference(x, shift)`` = exp(float64(x) - shift) picks the polynomial by the dtype of
the data: float64 data gets the one above; float32 data gets the same method truncated after
r^8/8! (remainder below 2^-31 relative, 1/128 of a float32 ulp), five fewer FMAs. Only the
element-wise outputs (softmax, log1m_softmax, gradients) use it: each output's own error
stays far below its float32 ulp. The sums of a log-sum-exp always take the full exp, since
an error of 2^-31 in the sum would be amplified by the condition number where lse is near 0.

Special values: exp(-inf) = 0, exp(nan) = nan, exp(x) = 0 below -745.2 (where the true value
rounds to 0), exp(0) = 1 exactly (so a tie with the max contributes exactly 1).
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from .intrinsics import float64_from_bits
from .jit import inline

_LOG2E = 1.4426950408889634
# ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with 32 significant bits, so k * _LN2_HI is exact.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Below this, exp underflows to 0 (exp(-745.1332...) is half the smallest subnormal).
_UNDERFLOW = -745.2
_EXPONENT_BIAS = 1023


@inline
def _reduce_range(x):
    """(k, r) with x = k ln 2 + r, |r| <= ln(2)/2, for x clamped to [_UNDERFLOW, 0]."""
    # Clamp first: converting nan or -inf to an integer below would be undefined.
    clamped = x if x > _UNDERFLOW else _UNDERFLOW
    k = math.floor(clamped * _LOG2E + 0.5)
    return k, (clamped - k * _LN2_HI) - k * _LN2_LO


@inline
def _scale(x, k, q):
    """(1 + q) * 2^k, with the special values of x; the last step of both exps."""
    k_int = np.int64(k)
    k_half = k_int >> 1
    scale_1 = float64_from_bits((k_half + _EXPONENT_BIAS) << 52)
    scale_2 = float64_from_bits((k_int - k_half + _EXPONENT_BIAS) << 52)
    result = ((1.0 + q) * scale_1) * scale_2
    result = result if x > _UNDERFLOW else 0.0
    # nan in, nan out (every comparison with nan above was false).
    return result if x == x else x


@inline
def exp_nonpositive(x):
    """exp(x) for float64 x in [-inf, 0] or nan, within 1 ulp; vectorisable."""
    k, r = _reduce_range(x)
    q = r + r * r * (
        1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (
            1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (
                1.0 / 39916800 + r * (1.0 / 479001600 + r * (1.0 / 6227020800)))))))))))
    )
    return _scale(x, k, q)


@inline
def exp_nonpositive_for_float32(x):
    """exp(x) for float64 x in [-inf, 0] or nan, relative error below 2^-31; vectorisable."""
    k, r = _reduce_range(x)
    q = r + r * r * (
        1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (
            1.0 / 5040 + r * (1.0 / 40320)))))))
    return _scale(x, k, q)


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
