"""log1p on [-1/2, 0], written so that LLVM vectorises the loops that call it.

Numba's ``math.log1p`` is a call into libm that LLVM cannot vectorise. log1m_softmax takes
log1p(-p) for every entry whose softmax p is at most 1/2 (the one entry above 1/2 has its
own formula), so this log1p needs only y = -p in [-1/2, 0].

Method (fdlibm's ``log`` and ``log1p``, branches turned into selects):
    u = 1 + y in [1/2, 1], rounded; c = (y - (u - 1)) / u corrects the rounding (u - 1 is
        exact by Sterbenz's lemma): log1p(y) = log(u) + c to first order
    u = 2^k f with k in {-1, 0}, f in [sqrt(2)/2, sqrt(2)); d = f - 1 (exact)
    log f = d - (d^2/2 - s (d^2/2 + R(s^2))),  s = d / (2 + d),  R fdlibm's minimax
            polynomial (degree 7 in s^2, error below 2^-58.45 on this range)
    log1p(y) = k ln 2_hi + (d - (d^2/2 - (s (d^2/2 + R) + k ln 2_lo + c))), ln 2 split in
        two so that k ln 2_hi is exact; the small corrections are added before d.
The leading term d is exact, so the rounding errors are those of the small corrections; the
max error, measured against mpmath on 10^5 samples per binade of p from 2^-1074 to 1/2
(``tests/test_log.py``), is under 1 ulp.

Special values: log1p(-0) = +0 (log1m_softmax wants 0: log(1 - 0)), nan in, nan out.
"""

from .jit import inline

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.7071067811865476
# fdlibm e_log.c: R(z) ~ (log((1+s)/(1-s)) - 2s) / s, z = s^2, |s| <= 0.1716
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@inline
def log1p_nonpositive(y):
    """log1p(y) for float64 y in [-1/2, 0] or nan, within 1 ulp; vectorisable."""
    u = 1.0 + y
    c = (y - (u - 1.0)) / u  # log1p(y) = log(u) + c to first order
    low = u < _SQRT_HALF
    k = -1.0 if low else 0.0
    f = u + u if low else u
    d = f - 1.0
    s = d / (2.0 + d)
    z = s * s
    w = z * z
    r = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    half_square = 0.5 * d * d
    return k * _LN2_HI - ((half_square - (s * (half_square + r) + (k * _LN2_LO + c))) - d)
