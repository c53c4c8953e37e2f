"""log1p on [-1/2, 0] and on [0, inf], and log: written so that LLVM vectorises their loops.

Numba's ``math.log1p`` is a call into libm that LLVM cannot vectorise. log1m_softmax takes
log1p(-p) for every entry whose softmax p is at most 1/2 (the one entry above 1/2 has its
own formula): ``log1p_nonpositive``, y = -p in [-1/2, 0] (float64 data; float32 data's
results take ``log1p_nonpositive_for_float32``, below). A log-sum-exp takes log1p(s / c)
for every row, s / c >= 0: ``log1p_nonnegative``, so that short rows (a million rows of 10)
finish in a vector loop, not a libm call per row; and log1m_softmax's value at a row's
dominant entry takes ``log_normal`` of its sum over the others, for the same reason.

Method (fdlibm's ``log`` and ``log1p``, branches turned into selects):
    u = 1 + y, rounded; c = ((1 + y) - u) / u corrects the rounding (the error of 1 + y is
        computed exactly, Fast2Sum): log1p(y) = log(u) + c to first order
    u = 2^k f with f in [sqrt(2)/2, sqrt(2)], read from u's exponent bits; d = f - 1 (exact).
    On [-1/2, 0] no rounding needs correcting: 1 + y = 2^k (1 + d) with d exact, d = y
        (k = 0) from sqrt(2)/2 - 1 up, else d = 1 + 2y (k = -1; exact by Sterbenz's lemma,
        2y in [-1, -1/2]), so c = 0 and one compare chooses k
    log f = d - (d^2/2 - s (d^2/2 + R(s^2))),  s = d / (2 + d),  R fdlibm's minimax
            polynomial (degree 7 in s^2, error below 2^-58.45 on this range)
    log1p(y) = k ln 2_hi + (d - (d^2/2 - (s (d^2/2 + R) + k ln 2_lo + c))), ln 2 split in
        two so that k ln 2_hi is exact; the small corrections are added before d.
The leading term d is exact, so the rounding errors are those of the small corrections; the
max error, measured against mpmath on samples in every binade (``tests/test_log.py``: p from
2^-1074 to 1/2, y from 2^-1074 to 2^1023, and log's x from 2^-1022 to 2^1024), is under 1 ulp.

Results rounded to float32 (log1m_softmax of float32 data) take one polynomial instead,
``log1p_nonpositive_for_float32``: y + y^2 R(y) on [-1/2, 0], R of degree 11, minimax for the
relative error (2^-36.0, ``perf/log_polynomial.py``): no range reduction, no rounding
correction (y is exact) and no divide.

Special values: log1p(-0) = +0 (log1m_softmax wants 0: log(1 - 0)), log1p(inf) = inf,
log(inf) = inf, nan in, nan out.
"""

import numpy as np

from .intrinsics import bits_of_float64, float64_from_bits, fma
from .jit import inline

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.7071067811865476
_SQRT_TWO = 1.4142135623730951
_MANTISSA = (1 << 52) - 1
_ONE_BITS = 1023 << 52
_EXPONENT_BIAS = 1023
# fdlibm e_log.c: R(z) ~ (log((1+s)/(1-s)) - 2s) / s, z = s^2, |s| <= 0.1716
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@inline
def _log1p_reduced(k, d, c):
    """log1p(y) = k ln 2 + log(1 + d) + c, where u = 2^k (1 + d) is 1 + y or its rounding,
    d exact, 1 + d in [sqrt(2)/2, sqrt(2)], and c = ((1 + y) - u) / u corrects the rounding
    (0 where there is none; the method above)."""
    s = d / (2.0 + d)
    z = s * s
    w = z * z
    r = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    half_square = 0.5 * d * d
    return k * _LN2_HI - ((half_square - (s * (half_square + r) + (k * _LN2_LO + c))) - d)


@inline
def _rounding_error(y, u):
    """(1 + y) - u for u = 1 + y rounded, exactly (Fast2Sum, the larger operand first)."""
    return (y - (u - 1.0)) if y <= 1.0 else (1.0 - (u - y))


@inline
def log1p_nonpositive(y):
    """log1p(y) for float64 y in [-1/2, 0] or nan, within 1 ulp; vectorisable. d is exact
    (the method above), so no correction: 1.15-1.2x faster than the rounded u = 1 + y and
    its correction took (its error / u, by Newton's steps for 1 / u: eight vector operations
    more). log1p(-0) = +0 (the + 0.0)."""
    low = y < _SQRT_HALF - 1.0
    return _log1p_reduced(-1.0 if low else 0.0, fma(2.0, y, 1.0) if low else y, 0.0) + 0.0


# log1p(y) = y + y^2 R(y) on [-1/2, 0] (a hair wider), R of degree 11, the minimax polynomial
# for the relative error of log1p, its coefficients rounded to float64
# (``perf/log_polynomial.py``, Remez in mpmath, prints these): relative error 1.45e-11 = 2^-36.0.
_R32 = (
    -0.4999999939074579, 0.3333341426965492, -0.2499626546635615, 0.2008597729357478,
    -0.15514386022505225, 0.24031207086211984, 0.41797738966072306, 2.139452448168088,
    4.953722730435545, 8.207195347423653, 7.616784363822414, 3.4667921978125498,
)


@inline
def log1p_nonpositive_for_float32(y):
    """log1p(y) for float64 y in [-1/2, 0] or nan, relative error below 2^-35.9, for results
    rounded to float32 (far below their ulp, and below the 2^-34.2 of float32 data's exp that
    gives log1m_softmax its p): y + y^2 R(y), one polynomial, with no range reduction, no
    rounding correction and no divide: 16 vector operations where ``log1p_nonpositive``
    takes about 25 and a divide (log1m_softmax of float32 data was bound by them: 1.2-1.4x
    faster). y is exact and y^2 R(y) at most 0.39 |y| (|R| <= 0.78 on the range), so the
    float64 roundings add below 2^-49 relative. log1p(-0) = +0 (the + 0.0), nan -> nan.
    Outside [-1/2, 0] (a hair wider) it is not log1p: at y = -1 it gives -3.5, not -inf."""
    r = _R32
    # R in Estrin's scheme: pairs, then powers y^2, y^4, y^8, four FMAs deep after y^8 where
    # Horner's is eleven, so the loop's independent entries overlap more.
    y2 = y * y
    y4 = y2 * y2
    q = (((r[0] + y * r[1]) + y2 * (r[2] + y * r[3]))
         + y4 * ((r[4] + y * r[5]) + y2 * (r[6] + y * r[7])))
    q += (y4 * y4) * ((r[8] + y * r[9]) + y2 * (r[10] + y * r[11]))
    return (y + y2 * q) + 0.0


@inline
def _exponent_and_fraction(u):
    """(k, d) with u = 2^k (1 + d), 1 + d in [sqrt(2)/2, sqrt(2)], d exact, for a normal u >
    0: k read from u's exponent bits, 1 + d from its mantissa (or half of it, exact)."""
    bits = bits_of_float64(u)
    f = float64_from_bits((bits & _MANTISSA) | _ONE_BITS)  # in [1, 2)
    high = f > _SQRT_TWO
    k = np.float64((bits >> 52) - _EXPONENT_BIAS) + (1.0 if high else 0.0)
    return k, (0.5 * f if high else f) - 1.0


@inline
def log1p_nonnegative(y):
    """log1p(y) for float64 y >= 0 (inf and nan too), within 1 ulp; vectorisable: the
    log1p(s / c) of a log-sum-exp, row by row."""
    u = 1.0 + y
    k, d = _exponent_and_fraction(u)
    value = _log1p_reduced(k, d, _rounding_error(y, u) / u)
    return value if y < np.inf else y


@inline
def log_normal(x):
    """log(x) for a normal float64 x > 0 (inf and nan too), within 1 ulp; vectorisable: x is
    2^k (1 + d) exactly, so no correction (log1m_softmax at a row's dominant entry)."""
    k, d = _exponent_and_fraction(x)
    return _log1p_reduced(k, d, 0.0) if x < np.inf else x
