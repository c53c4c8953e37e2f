"""The vectorisable exp of cpu/exp.py: error bound in ulps, special values, domain edges.

Reference: NumPy's long double exp (x87 80-bit, 64-bit significand, i.e. 11 more bits than
float64), checked against mpmath below. The exhaustive float32 sweep is perf/exp_accuracy.py.
"""

import mpmath
import numpy as np
import pytest
from numba import njit

from numba_lse.cpu import reduce
from numba_lse.cpu.exp import exp_nonpositive, exp_nonpositive_for_float32

HAS_LONG_DOUBLE = np.finfo(np.longdouble).nmant >= 63
needs_long_double = pytest.mark.skipif(
    not HAS_LONG_DOUBLE, reason="long double is not wider than double on this platform"
)


@njit
def exp_array(x):
    out = np.empty(x.shape, np.float64)
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i])
    return out


@njit
def exp_for_float32_array(x):
    out = np.empty(x.shape, np.float64)
    for i in range(x.size):
        out[i] = exp_nonpositive_for_float32(x[i])
    return out


def ulp_errors(x):
    """|exp_nonpositive(x) - exp(x)| in units of the float64 ulp of exp(x)."""
    computed = exp_array(x)
    exact = np.exp(x.astype(np.longdouble))
    spacing = np.spacing(exact.astype(np.float64)).astype(np.longdouble)
    return (np.abs(computed.astype(np.longdouble) - exact) / spacing).astype(np.float64)


def dense_sample(rng, n):
    """n points spread over the whole domain: uniform, log-uniform near 0, subnormal range."""
    return np.concatenate([
        rng.uniform(-745.2, 0.0, n // 2),
        -np.exp(rng.uniform(np.log(1e-300), np.log(700.0), n // 4)),
        rng.uniform(-745.2, -708.0, n - n // 2 - n // 4),  # results in the subnormal range
    ])


@needs_long_double
def test_long_double_reference_agrees_with_mpmath():
    x = np.array([-1e-10, -0.5, -1.0, -20.0, -100.5, -700.0, -740.0], np.float64)
    mpmath.mp.dps = 40
    for value in x:
        exact = mpmath.exp(mpmath.mpf(float(value)))
        ld = np.exp(np.longdouble(value))
        assert abs(mpmath.mpf(np.format_float_scientific(ld, unique=True)) - exact) <= abs(exact) * 2.0**-60 + mpmath.mpf(2) ** -1074


@needs_long_double
def test_float64_dense_sample_within_one_ulp():
    x = dense_sample(np.random.default_rng(0), 1_000_000)
    errors = ulp_errors(x)
    worst = int(np.argmax(errors))
    assert errors[worst] < 1.0, f"exp({x[worst]!r}) is off by {errors[worst]:.3f} ulp"


@needs_long_double
def test_float32_inputs_dense_sample_within_one_ulp():
    # float32 data is computed in float64: the same exp on float32-representable arguments.
    x = dense_sample(np.random.default_rng(1), 1_000_000).astype(np.float32).astype(np.float64)
    errors = ulp_errors(x)
    worst = int(np.argmax(errors))
    assert errors[worst] < 1.0, f"exp({x[worst]!r}) is off by {errors[worst]:.3f} ulp"


@needs_long_double
def test_float32_data_exp_relative_error_below_2_to_the_minus_31():
    # float32 data uses the shorter polynomial: its error is 1/128 of a float32 ulp at most.
    x = dense_sample(np.random.default_rng(2), 1_000_000).astype(np.float32).astype(np.float64)
    x = x[x > -103.0]  # below, exp(x) is under float32's smallest subnormal
    exact = np.exp(x.astype(np.longdouble))
    relative = np.abs(exp_for_float32_array(x).astype(np.longdouble) - exact) / exact
    worst = int(np.argmax(relative))
    assert relative[worst] < 2.0**-31, f"exp({x[worst]!r}) relative error {float(relative[worst]):.3g}"


@needs_long_double
def test_float32_data_exp_holds_its_bound_up_to_664():
    """The bound the certified sums take for each term (``partials.SHORT_SUM_ERROR``: 2^-34.16
    from the exps), on float64 arguments (a float32 entry less a shift) in [-700, 0] and in
    (0, 664], where the float32 columns' one-pass sums take their terms against a shift
    below the max (``reduce.column_sums``, at most ``reduce.SHIFT_LIMIT`` = 600 above)."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-708.0, 0.0, 300_000), rng.uniform(0.0, 664.0, 300_000),
                        rng.uniform(-1.0, 1.0, 100_000)])
    exact = np.exp(x.astype(np.longdouble))
    relative = np.abs(exp_for_float32_array(x).astype(np.longdouble) - exact) / exact
    worst = int(np.argmax(relative))
    assert relative[worst] < 2.0**-34.16, f"exp({x[worst]!r}) relative error {float(relative[worst]):.3g}"
    assert reduce.SHIFT_LIMIT < 664.0


@needs_long_double
def test_float32_data_exp_below_minus_708_is_within_2_to_the_minus_1021():
    """float32 data's exp keeps no result below 2^-1022 (one multiply by 2^k, k >= -1022):
    within 2^-1021 of the true value, 0 from -708.74 down, never negative, and the relative
    bound holds down to -708."""
    x = np.concatenate([np.linspace(-746.0, -700.0, 400_001), [-1e308, -np.inf]])
    computed = exp_for_float32_array(x)
    exact = np.exp(x.astype(np.longdouble))
    error = np.abs(computed.astype(np.longdouble) - exact)
    assert np.all(error <= 2.0**-34 * exact + 2.0**-1021)
    assert np.all(computed >= 0.0) and np.all(computed[x <= -708.75] == 0.0)
    kept = x >= -708.0
    assert np.all(error[kept] <= 2.0**-34 * exact[kept])


def test_entries_far_below_the_max_give_what_float64_gives():
    """Where float32 data's exp gives 0 for a term the full exp keeps (709-745 below the max),
    or a result that differs below 2^-1021, no float32 output's value shows it: softmax,
    log1m_softmax, log_softmax, logsumexp and cross_entropy with its gradient against
    float64's, rounded, within an ulp (and zeros exactly; their signs below)."""
    import numba_lse

    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 40))
    x[:, 1:20] -= rng.uniform(700.0, 760.0, (64, 19))
    x[::3, 20:] = -np.inf
    x[::2, 0] += 900.0  # a dominant entry
    low = x.astype(np.float32)
    exact = low.astype(np.float64)
    eps = np.finfo(np.float32).eps

    def check(got, expected, what):
        assert got.dtype == np.float32, what
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=eps, atol=0,
                                   err_msg=what)

    for name in ("softmax", "log1m_softmax", "log_softmax"):
        check(getattr(numba_lse, name)(low, axis=-1), getattr(numba_lse, name)(exact, axis=-1),
              name)
    check(numba_lse.logsumexp(low, axis=-1), numba_lse.logsumexp(exact, axis=-1), "logsumexp")
    t = rng.integers(0, 40, 64)
    loss, grad = numba_lse.cross_entropy(low, t, reduction="none", return_grad=True)
    loss64, grad64 = numba_lse.cross_entropy(exact, t, reduction="none", return_grad=True)
    check(loss, loss64, "cross_entropy")
    check(grad, grad64, "its gradient")


@pytest.mark.parametrize("exp", [exp_array, exp_for_float32_array], ids=["float64", "float32"])
def test_special_values_of_both(exp):
    x = np.array([0.0, -0.0, -np.inf, np.nan, -745.2, -746.0, -1e308])
    out = exp(x)
    assert out[0] == 1.0 and out[1] == 1.0, "exp(0) must be exactly 1 (ties contribute 1)"
    assert out[2] == 0.0 and np.isnan(out[3]) and out[4] == 0.0 and out[5] == 0.0 and out[6] == 0.0


def test_special_values():
    x = np.array([0.0, -0.0, -np.inf, np.nan, -745.2, -746.0, -1e308, -5e-324])
    out = exp_array(x)
    assert out[0] == 1.0 and out[1] == 1.0, "exp(0) must be exactly 1 (ties contribute 1)"
    assert out[2] == 0.0
    assert np.isnan(out[3])
    assert out[4] == 0.0 and out[5] == 0.0 and out[6] == 0.0
    assert out[7] == 1.0


def test_smallest_results_round_like_libm():
    # Around the underflow threshold the result is a subnormal, rounded once.
    x = np.linspace(-745.13, -740.0, 10_001)
    np.testing.assert_array_equal(exp_array(x), np.exp(x))


def test_integers_and_halves_match_numpy_exactly_or_within_one_ulp():
    x = -np.arange(0.0, 745.0, 0.5)
    computed, expected = exp_array(x), np.exp(x)
    assert np.all(np.abs(computed - expected) <= np.spacing(expected))


def test_zeros_from_entries_709_to_745_below_the_max_are_positive():
    """The one trace of float32 data's exp keeping nothing below 2^-1022 (documented in
    ``exp_nonpositive_for_float32``): a -tiny output that rounded to -0 is +0, as one from
    entries further below (or -inf) was before; -0 where the exp's result is kept."""
    import numba_lse

    far = np.array([0.0, -720.0], np.float32)
    near = np.array([0.0, -700.0], np.float32)
    for x, negative in ((far, False), (near, True)):
        assert numba_lse.log_softmax(x)[0] == 0.0
        assert np.signbit(numba_lse.log_softmax(x)[0]) == negative
        assert numba_lse.log1m_softmax(x)[1] == 0.0
        assert np.signbit(numba_lse.log1m_softmax(x)[1]) == negative
    assert not np.signbit(numba_lse.log1m_softmax(np.array([0.0, -np.inf], np.float32))[1])
