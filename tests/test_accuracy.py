"""Accuracy of logsumexp against mpmath, in ulps, on adversarial rows.

The claims under test (docstring of ``numba_lse.logsumexp``):

* float32 results are within 1 ulp * max(1, cond * 2^-27) of the exact value: they are
  computed in float64, whose own error (a few float64 ulps, times cond) stays below a float32
  ulp until cond reaches about 1e8;
* float64 results are within 2 ulp * max(1, cond), cond = sum |a_i| e^{a_i} / (|lse| sum e^{a_i})
  (Blanchard, Higham & Higham 2021); with positive weights, e^{a_i} becomes b_i e^{a_i};
* weights that cancel multiply the bound by cond_b = sum |b_i| e^{a_i} / |sum b_i e^{a_i}|.

"Exact" is the log-sum-exp of the very floats passed in (float32 data converted exactly),
computed by mpmath at 50 digits (40 for the 2-D sweeps). The ulp of an exact value x is
``np.spacing(|round(x)|)`` in the result dtype. An exact 0 (or a value that rounds to 0) has
the ulp ``np.spacing(0)``, the smallest subnormal: the result must then be 0 to within a
subnormal or two, i.e. there is no absolute tolerance.
"""

import functools
import warnings

import numpy as np
import pytest
from mpmath import mp
from scipy import special

import numba_lse as nl
from numba_lse.cpu.reduce import LSE_SHORT_ROW, SHORT_ROW

DPS = 50
DPS_2D = 40  # 30 fails the self-check in `reference` on the lse ~ 1e-16 entries
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------- reference (mpmath) helpers

def reference(row, b=None, dps=DPS):
    """(lse, sign, cond, cond_b) of log|sum b_i exp(a_i)|, each an mpmath mpf.

    cond = sum |a_i| |b_i| e^{a_i} / (|lse| sum |b_i| e^{a_i}) (the Blanchard-Higham-Higham
    condition number; equal to the unweighted one for b = 1), cond_b = sum |b_i| e^{a_i} /
    |sum b_i e^{a_i}| (1 without cancellation). Everything is shifted by the max, so rows near
    +-1e308 need no huge exponentials.
    """
    a = np.asarray(row, dtype=np.float64).ravel()  # exact for float32 and float64 data
    if b is None:
        # Equal entries share one exponential: (value, count) pairs, the counts exact.
        values, counts = np.unique(a[a != -np.inf], return_counts=True)
        pairs = zip(values.tolist(), counts.tolist())
    else:
        w = np.asarray(b, dtype=np.float64).ravel()
        keep = (w != 0) & (a != -np.inf)
        pairs = zip(a[keep].tolist(), w[keep].tolist())
    with mp.workdps(dps):
        live = [(mp.mpf(x), mp.mpf(v)) for x, v in pairs]
        if not live:
            return mp.ninf, mp.zero, mp.zero, mp.one
        m = max(x for x, _ in live)
        terms = [v * mp.exp(x - m) for x, v in live]
        ties = mp.fsum(v for x, v in live if x == m)
        rest = mp.fsum(t for (x, _), t in zip(live, terms) if x != m)
        total = ties + rest
        magnitude = mp.fsum(abs(t) for t in terms)
        if ties != 0 and abs(rest) <= abs(ties) / 2:
            # log(ties + rest) at 50 digits would drop a rest below 1e-50 (e.g. [0, -700]).
            log_part = mp.log(abs(ties)) + mp.log1p(rest / ties)
            slack = abs(mp.log(abs(ties))) + abs(log_part)
        else:
            log_part = mp.log(abs(total))
            slack = abs(log_part) + magnitude / abs(total)  # cancellation in the total
        lse = m + log_part
        # Self-check: the rounding error of the reference must stay below 1e-19 |lse|, so
        # that the ulp errors below are exact to 1e-3 ulp.
        slack = (slack + abs(lse)) * mp.mpf(10) ** (19 - dps)
        assert slack <= abs(lse) or (lse == 0 and m == 0), f"reference too coarse for {a[:5]}"
        numerator = mp.fsum(abs(x) * abs(t) for (x, _), t in zip(live, terms) if t != 0)
        if numerator == 0:
            cond = mp.zero  # every contributing a_i is 0: relative perturbations change nothing
        elif lse == 0:
            cond = mp.inf
        else:
            cond = numerator / (abs(lse) * magnitude)
        return lse, mp.sign(total), cond, magnitude / abs(total)


def exact_lse(row, b=None):
    """The exact log-sum-exp of ``row`` (weights ``b``) as an mpmath mpf (50 digits)."""
    return reference(row, b)[0]


def lse_condition(row, b=None):
    """The condition number of the log-sum-exp of ``row`` (see ``reference``), as an mpf."""
    return reference(row, b)[2]


def ulp_error(computed, exact, dtype):
    """|computed - exact| in units of the ``dtype`` ulp of ``exact`` (see the module docstring)."""
    rounded = np.abs(np.asarray(float(exact)).astype(dtype))  # float(mpf) rounds to nearest
    with np.errstate(over="ignore"):
        ulp = np.spacing(rounded)  # np.spacing(0) is the smallest subnormal
    if np.isinf(ulp):  # the largest float: the spacing of its own binade
        ulp = rounded - np.nextafter(rounded, 0 * rounded)
    with mp.workdps(DPS):
        return float(abs(mp.mpf(float(computed)) - exact) / mp.mpf(float(ulp)))


def bound_ulps(dtype, cond, cond_b=1):
    """The documented bound: float32 1 ulp * max(1, cond * 2^-27) (the float64 computation's
    error in float32 ulps), float64 2 ulp * max(1, cond) * cond_b."""
    if np.dtype(dtype) == np.float32:
        return max(1.0, float(cond) * 2.0**-27) * float(cond_b)
    return 2.0 * max(1.0, float(cond)) * float(cond_b)


# ---------------------------------------------------------------- adversarial rows

def make_rows(dtype):
    """{id: row} for ``dtype``; each row is cast to ``dtype`` once, and then it is the input."""
    rng = np.random.default_rng(20240611)
    f64 = np.dtype(dtype) == np.float64
    big = 1e308 if f64 else 3e38
    fmax = float(np.finfo(dtype).max)
    n = 10**5
    rows = {
        "dominant_1000_0_0": [1000.0, 0.0, 0.0],
        "gh18295_0_m40": [0.0, -40.0],
        "dominant_0_m20_m30": [0.0, -20.0, -30.0],
        "ties_5_5_5_1": [5.0, 5.0, 5.0, 1.0],
        "ties_zeros_7": [0.0] * 7,
        "single_zero": [0.0],
        "zero_and_neg_inf": [0.0, -np.inf],
        "neg_inf_entry": [1.0, -np.inf, 2.0],
        "pm1000_mix": [1000.0, -1000.0, 999.5, -999.5, 0.0],
        "pm1000_ties": [-1000.0, -1000.0, 1000.0, 1000.0],
        "huge_pair": [big, big],
        "huge_pm": [big, -big],
        "huge_neg_one_ulp_apart": [-big, float(np.nextafter(dtype(-big), dtype(0)))],
        "huge_neg_pair": [-big, -big],
        "fmax_pair": [fmax, fmax],
        "neg_fmax_pair": [-fmax, -fmax],
        "wide_range_1001": np.linspace(-700.0, 700.0, 1001) if f64 else np.linspace(-80.0, 80.0, 1001),
        "long_normal_1e5": rng.standard_normal(n),
        "long_equal_1e5": np.full(n, 1.25),
        "long_equal_1e5_lse_near_0": np.full(n, -np.log(n)),
        "long_tiny_spread_1e5": 1.0 + 1e-3 * rng.standard_normal(n),
        "near_0_log_half_pair": [np.log(0.5)] * 2,
        "near_0_log_third_triple": [np.log(1 / 3)] * 3,
    }
    for d in (10, 20, 50, 100, 300, 700):
        rows[f"dominant_by_{d}"] = [float(d), 0.0, 0.0, 0.0]
        rows[f"tail_0_m{d}"] = [0.0, -float(d)]
    for size in (3, 10, 1000):
        x = rng.standard_normal(size) * 3
        rows[f"near_0_shifted_random_{size}"] = x - special.logsumexp(x)
    return {key: np.asarray(value, dtype=np.float64).astype(dtype) for key, value in rows.items()}


ROWS = {np.dtype(dt).name: make_rows(dt) for dt in DTYPES}
ROW_CASES = [pytest.param(name, key, id=f"{name}-{key}") for name in ROWS for key in ROWS[name]]


@functools.cache
def row_reference(dtype_name, key):
    return reference(ROWS[dtype_name][key])


def report(label, computed, exact, err, cond, bound):
    return (f"{label}: computed={float(computed)!r} exact={float(exact)!r} "
            f"error={err:.4g} ulp cond={float(cond):.4g} bound={bound:.4g} ulp")


# ---------------------------------------------------------------- 1-D tests

@pytest.mark.parametrize("dtype_name, key", ROW_CASES)
def test_row_within_documented_bound(dtype_name, key):
    row = ROWS[dtype_name][key]
    exact, _, cond, _ = row_reference(dtype_name, key)
    computed = nl.logsumexp(row)
    assert computed.dtype == row.dtype
    err = ulp_error(computed, exact, row.dtype)
    bound = bound_ulps(row.dtype, cond)
    assert err <= bound, report(key, computed, exact, err, cond, bound)


def test_float32_every_row_within_bound_scipy_for_context():
    # SciPy's float32 logsumexp works in float32 and is not always within 1 ulp; its error is
    # shown in the message for context only (nothing is asserted about SciPy).
    failures = []
    for key, row in ROWS["float32"].items():
        exact, _, cond, _ = row_reference("float32", key)
        ours = ulp_error(nl.logsumexp(row), exact, np.float32)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            theirs = ulp_error(special.logsumexp(row), exact, np.float32)
        if not ours <= bound_ulps(np.float32, cond):
            failures.append(f"{key}: ours {ours:.4g} ulp, scipy {theirs:.4g} ulp")
    assert not failures, "float32 rows beyond the bound:\n" + "\n".join(failures)


def test_gh18295_small_second_term():
    computed = nl.logsumexp(np.array([0.0, -40.0]))
    exact = exact_lse([0.0, -40.0])
    err = ulp_error(computed, exact, np.float64)
    assert computed > 0
    assert err <= 1.0, report("[0, -40]", computed, exact, err, lse_condition([0.0, -40.0]), 1.0)


# ---------------------------------------------------------------- weights

WEIGHTED_CASES = [
    pytest.param(3, 1.0, id="n3_scale1"),
    pytest.param(48, 5.0, id="n48_scale5"),  # a tile's row (``reduce.LSE_SHORT_ROW``)
    pytest.param(100, 5.0, id="n100_scale5"),
    pytest.param(1000, 30.0, id="n1000_scale30"),
    # Longer than a chunk (65536): the weighted partials are merged. mpmath takes seconds.
    pytest.param(10**5, 1.0, id="n100000_scale1", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dt: np.dtype(dt).name)
@pytest.mark.parametrize("size, scale", WEIGHTED_CASES)
def test_positive_weights_within_bound(dtype, size, scale):
    rng = np.random.default_rng(size)
    a = (scale * rng.standard_normal(size)).astype(dtype)
    b = rng.uniform(0.1, 10.0, size).astype(dtype)
    exact, _, cond, _ = reference(a, b)
    computed = nl.logsumexp(a, b=b)
    err = ulp_error(computed, exact, dtype)
    bound = bound_ulps(dtype, cond)
    assert err <= bound, report(f"n={size} scale={scale}", computed, exact, err, cond, bound)


CANCELLATION_CASES = {
    "partial_cancel_0_m1e-10_1": ([0.0, -1e-10, 1.0], [1.0, -1.0, 1.0]),
    "sharp_0_m1e-10": ([0.0, -1e-10], [1.0, -1.0]),
    "negative_sum": ([1.0, 2.0], [1.0, -1.0]),
}


@pytest.mark.parametrize("key", CANCELLATION_CASES)
def test_cancelling_weights_within_scaled_bound(key):
    a, b = (np.array(v) for v in CANCELLATION_CASES[key])
    exact, exact_sign, cond, cond_b = reference(a, b)
    computed, sign = nl.logsumexp(a, b=b, return_sign=True)
    assert sign == float(exact_sign)
    err = ulp_error(computed, exact, np.float64)
    bound = bound_ulps(np.float64, cond, cond_b)
    assert err <= bound, report(f"{key} (cond_b={float(cond_b):.4g})", computed, exact, err, cond, bound)


# ---------------------------------------------------------------- 2-D reductions

def make_matrix(dtype, shape=(64, 1000)):
    """Rows of eight kinds (normal, wide normal, dominant term, ties, wide range, tiny spread,
    lse near 0, one term over a -40 floor); the columns mix them all."""
    rng = np.random.default_rng(7)
    rows, n = shape
    span = 700.0 if np.dtype(dtype) == np.float64 else 80.0
    out = np.empty(shape)
    for i in range(rows):
        x = rng.standard_normal(n)
        kind = i % 8
        if kind == 1:
            x *= 30
        elif kind == 2:
            x[rng.integers(n)] = x.max() + 10 * (1 + i // 8)
        elif kind == 3:
            x[::97] = x.max() + 1
        elif kind == 4:
            x = rng.permutation(np.linspace(-span, span, n))
        elif kind == 5:
            x = 1 + 1e-3 * x
        elif kind == 6:
            x -= special.logsumexp(x)
        elif kind == 7:
            x = np.full(n, -40.0)
            x[rng.integers(n)] = 0.0
        out[i] = x
    return out.astype(dtype)


@functools.cache
def matrix_reference(dtype_name, axis):
    """(matrix, [(lse, cond) for each output entry]) of the reduction of ``axis``."""
    a = make_matrix(np.dtype(dtype_name))
    lines = a if axis == 1 else a.T
    expected = []
    for line in lines:
        lse, _, cond, _ = reference(line, dps=DPS_2D)
        expected.append((lse, cond))
    return a, expected


LAYOUTS = {
    "C": lambda a, axis: (a, axis),
    "transpose": lambda a, axis: (a.T, 1 - axis),
    "fortran": lambda a, axis: (np.asfortranarray(a), axis),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dt: np.dtype(dt).name)
def test_matrix_every_entry_within_bound(dtype, axis, layout):
    a, expected = matrix_reference(np.dtype(dtype).name, axis)
    view, view_axis = LAYOUTS[layout](a, axis)
    computed = nl.logsumexp(view, axis=view_axis)
    assert computed.shape == (len(expected),) and computed.dtype == np.dtype(dtype)
    failures = []
    for j, (value, (exact, cond)) in enumerate(zip(computed, expected)):
        err = ulp_error(value, exact, dtype)
        bound = bound_ulps(dtype, cond)
        if not err <= bound:
            failures.append(report(f"entry {j}", value, exact, err, cond, bound))
    assert not failures, f"{len(failures)} entries beyond the bound:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("n", [SHORT_ROW, 48, LSE_SHORT_ROW - 1, LSE_SHORT_ROW])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dt: np.dtype(dt).name)
def test_rows_about_the_tiles_length_within_bound(dtype, n):
    # Rows shorter than LSE_SHORT_ROW go a tile at a time, as columns (``reduce.
    # lse_short_rows``: compensated float64 sums from SHORT_ROW rows on), the others along
    # the rows: the eight kinds of rows of the matrices above, of lengths either side.
    a = make_matrix(dtype, (64, n))
    computed = nl.logsumexp(a, axis=1)
    failures = []
    for j, row in enumerate(a):
        exact, _, cond, _ = reference(row, dps=DPS_2D)
        err = ulp_error(computed[j], exact, dtype)
        bound = bound_ulps(dtype, cond)
        if not err <= bound:
            failures.append(report(f"row {j}", computed[j], exact, err, cond, bound))
    assert not failures, f"{len(failures)} rows beyond the bound:\n" + "\n".join(failures[:10])
