"""The vectorisable log1p and log of cpu/log.py against mpmath: error bounds in ulps, special
values.

log1m_softmax calls it with y = -p, p a softmax value in [0, 1/2], so the samples cover
every binade of p from the smallest subnormal to 1/2, densely around the two places where
the method changes: u = 1 + y crossing sqrt(1/2) (the range reduction) and y near 0 (where
1 + y rounds).
"""

import mpmath
import numpy as np
import pytest
from numba import njit

from numba_lse.cpu.log import (log1p_nonnegative, log1p_nonpositive, log1p_nonpositive_for_float32,
                               log_normal)

BOUND_ULPS = 1.0


def elementwise(function):
    """A jitted loop applying the scalar ``function`` to each entry of a float64 array."""
    @njit
    def apply(y):
        out = np.empty(y.shape, np.float64)
        for i in range(y.size):
            out[i] = function(y[i])
        return out
    return apply


log1p_array = elementwise(log1p_nonpositive)
log1p_for_float32_array = elementwise(log1p_nonpositive_for_float32)
log1p_nonnegative_array = elementwise(log1p_nonnegative)
log_array = elementwise(log_normal)


def ulp_errors(y, log1p=log1p_array, exact_function=mpmath.log1p):
    """|log1p(y) - the exact log1p(y)| in ulps of the exact value (mpmath, 120 bits); or of
    another function and its exact value."""
    computed = log1p(y)
    errors = np.empty(y.size)
    with mpmath.workprec(120):
        for i, (yi, ci) in enumerate(zip(y.tolist(), computed.tolist())):
            exact = exact_function(mpmath.mpf(yi))
            ulp = np.spacing(abs(float(exact))) if exact != 0 else np.nextafter(0.0, 1.0)
            errors[i] = abs(float((mpmath.mpf(ci) - exact) / ulp))
    return errors


def samples_per_binade(count, seed=0):
    rng = np.random.default_rng(seed)
    exponents = np.arange(-1074, 0)
    p = np.ldexp(rng.uniform(1.0, 2.0, (exponents.size, count)), exponents[:, None]).ravel()
    return -p[p <= 0.5]


def test_every_binade_within_one_ulp():
    y = samples_per_binade(40)
    assert ulp_errors(y).max() <= BOUND_ULPS


@pytest.mark.parametrize("center", [1.0 - np.sqrt(0.5), 0.5, 2.0**-27, 2.0**-53])
def test_near_the_method_changes(center):
    """Around p where u = 1 - p crosses sqrt(1/2), the ends of the domain, and where 1 - p
    rounds to 1."""
    steps = np.arange(-2000, 2001)
    y = -np.clip(center + steps * np.spacing(center) * 7, 0.0, 0.5)
    assert ulp_errors(y).max() <= BOUND_ULPS


def test_special_values():
    out = log1p_array(np.array([0.0, -0.0, np.nan, -0.5, -5e-324]))
    assert out[0] == 0.0 and out[1] == 0.0
    assert np.isnan(out[2])
    assert out[3] == np.float64(mpmath.log(0.5))
    assert out[4] == -5e-324


# log1p_nonnegative: log1p(s / c) of a log-sum-exp, s / c anywhere in [0, inf].

def test_nonnegative_every_binade_within_one_ulp():
    rng = np.random.default_rng(1)
    exponents = np.arange(-1074, 1024)
    y = np.ldexp(rng.uniform(1.0, 2.0, (exponents.size, 30)), exponents[:, None]).ravel()
    y = y[np.isfinite(y)]
    assert ulp_errors(y, log1p_nonnegative_array).max() <= BOUND_ULPS


@pytest.mark.parametrize("center", [np.sqrt(2.0) - 1, 1.0, 2.0, np.sqrt(2.0) * 2**20 - 1,
                                    2.0**-27, 2.0**-53, 2.0**53, 2.0**1000])
def test_nonnegative_near_the_method_changes(center):
    """Around y where u = 1 + y crosses sqrt(2) 2^k (the range reduction), where the exact
    error of 1 + y changes formula (y = 1), where 1 + y rounds to 1, and where it rounds to y."""
    steps = np.arange(-2000, 2001)
    y = np.clip(center + steps * np.spacing(center) * 7, 0.0, None)
    assert ulp_errors(y, log1p_nonnegative_array).max() <= BOUND_ULPS


def test_nonnegative_special_values():
    out = log1p_nonnegative_array(np.array([0.0, -0.0, np.inf, np.nan, 5e-324, 1.0, 1.7976931348623157e308]))
    assert out[0] == 0.0 and out[1] == 0.0
    assert out[2] == np.inf
    assert np.isnan(out[3])
    assert out[4] == 5e-324
    assert out[5] == np.float64(mpmath.log(2))
    assert out[6] == np.float64(mpmath.log1p(mpmath.mpf(1.7976931348623157e308)))


# log_normal: log(s) of a dominant entry's sum over the others, s in [2^-900, 1); any normal x.

def test_log_every_binade_within_one_ulp():
    rng = np.random.default_rng(3)
    exponents = np.arange(-1022, 1024)
    x = np.ldexp(rng.uniform(1.0, 2.0, (exponents.size, 30)), exponents[:, None]).ravel()
    x = x[np.isfinite(x)]
    assert ulp_errors(x, log_array, mpmath.log).max() <= BOUND_ULPS


@pytest.mark.parametrize("center", [np.sqrt(2.0), np.sqrt(0.5), np.sqrt(2.0) * 2.0**-900, 1.0,
                                    1.0 + 2.0**-30, 1.0 - 2.0**-30, 2.0**-1022 * 1.5])
def test_log_near_the_method_changes(center):
    """Around x = sqrt(2) 2^k (the range reduction) and x = 1 (log x small, d exact)."""
    steps = np.arange(-2000, 2001)
    x = center + steps * np.spacing(center) * 7
    x = x[x != 1.0]
    assert ulp_errors(x, log_array, mpmath.log).max() <= BOUND_ULPS


def test_log_special_values():
    out = log_array(np.array([1.0, np.nan, 2.0, 0.5, 2.2250738585072014e-308, np.inf]))
    assert out[0] == 0.0 and not np.signbit(out[0])
    assert np.isnan(out[1]) and out[5] == np.inf
    assert out[2] == np.float64(mpmath.log(2)) and out[3] == -out[2]
    assert out[4] == np.float64(mpmath.log(mpmath.mpf(2.2250738585072014e-308)))


FLOAT32_BOUND = 2.0**-35.9  # the polynomial's 2^-36.0 and the roundings of its sum (log.py)


def relative_errors(y, log1p):
    """|log1p(y) - the exact log1p(y)| / |the exact log1p(y)| (mpmath, 120 bits; y != 0)."""
    computed = log1p(y)
    errors = np.empty(y.size)
    with mpmath.workprec(120):
        for i, (yi, ci) in enumerate(zip(y.tolist(), computed.tolist())):
            exact = mpmath.log1p(mpmath.mpf(yi))
            errors[i] = abs(float((mpmath.mpf(ci) - exact) / exact))
    return errors


def test_for_float32_within_its_relative_bound():
    """The variant for float32 results, one polynomial y + y^2 R(y): relative error at most
    2^-35.9 (2^-11.9 of a float32 ulp) in every binade of p and across the range, where
    the polynomial's error oscillates (ends included, and just beyond 1/2)."""
    y = np.concatenate([samples_per_binade(20, seed=2), -np.linspace(0.0, 0.5, 4001)[1:],
                        [np.nextafter(-0.5, -1.0), -0.5 * (1 + 2.0**-21)]])
    assert relative_errors(y, log1p_for_float32_array).max() <= FLOAT32_BOUND


def test_for_float32_special_values():
    out = log1p_for_float32_array(np.array([-0.0, 0.0, np.nan, -5e-324]))
    assert out[0] == 0.0 and not np.signbit(out[0])  # log(1 - 0) = +0, as log1p_nonpositive
    assert out[1] == 0.0 and not np.signbit(out[1])
    assert np.isnan(out[2])
    assert out[3] == -5e-324
