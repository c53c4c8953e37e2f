"""Independent tests of ``softmax``, ``log_softmax`` and ``log1m_softmax`` (and ``where=``).

Every expected value comes from a *live* reference, never from a remembered number:

* SciPy (``scipy.special.softmax`` / ``log_softmax``) for everything a user can see: result
  type (NumPy scalar or ndarray), dtype, shape, exceptions, and the positions of nan/+-inf;
* mpmath at 50 digits for accuracy, measured in ulps of the exact value;
* JAX (``jax.nn.softmax(x, where=w)``) for the ``where=`` semantics, and PyTorch for the
  seed demonstration ``exp(log_softmax(x)) == softmax(x)`` (both optional: importorskip).

Accuracy claims under test (docstrings of ``numba_lse``): float32 within 1 ulp (computed in
float64, rounded once); float64 within ``2 ulp * max(1, cond)`` with the first-order relative
condition numbers below (softmax entries under 1e-300 are skipped: subnormal range).

Condition numbers (relative perturbations x_j -> x_j (1 + d_j), |d_j| <= eps, first order;
p = softmax(x); the derivatives are d log p_i / d x_j = delta_ij - p_j and
d log(1 - p_i) / d x_j = -p_i (j = i), p_i p_j / (1 - p_i) (j != i)):

* softmax_i:       cond_i = |x_i| (1 - p_i) + sum_{j != i} |x_j| p_j  (relative error of p_i)
* log_softmax_i:   cond_i = (|x_i| (1 - p_i) + sum_{j != i} |x_j| p_j) / |log_softmax_i|
  (the exact first-order number; it is <= (|x_i| + sum_j |x_j| p_j) / |log_softmax_i|, and much
  smaller when p_i ~ 1, where that cruder bound is ~1e20 and would accept anything)
* log1m_softmax_i: cond_i = (|x_i| p_i + p_i / (1 - p_i) sum_{j != i} |x_j| p_j)
  / |log(1 - p_i)|

An exact value of 0 (or -inf) must be met exactly (the ulp of 0 is the smallest subnormal);
an exact value that rounds beyond the largest float must come out as that infinity.
"""
import contextlib
import functools
import itertools
import re
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from mpmath import mp
from numpy.exceptions import AxisError
from scipy import special

import numba_lse as nl

DPS = 50
FUNCS = {"softmax": nl.softmax, "log_softmax": nl.log_softmax,
         "log1m_softmax": nl.log1m_softmax}
SCIPY = {"softmax": special.softmax, "log_softmax": special.log_softmax}
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_]
FLOATS = [np.float32, np.float64]
SPECIAL = [-np.inf, np.inf, np.nan, 0.0, 1.0, -1000.0, 1000.0]
AXES_FOR_SHAPE = {
    (): [None, 0, -1, ()],
    (5,): [None, 0, -1, (0,), ()],
    (3, 4): [None, 0, 1, -1, -2, (0, 1), (1, 0), (-1,)],
    (2, 3, 4): [None, 0, 1, 2, -1, (0, 2), (1, 2), (2, 0), (0, 1, 2)],
    (2, 1, 3, 5): [None, 1, 3, -1, (0, 2), (1, 3), (-1, -3), (0, 1, 2, 3)],
}
SHAPE_AXIS = [pytest.param(shape, axis, id=f"shape={shape}-axis={axis}")
              for shape, axes in AXES_FOR_SHAPE.items() for axis in axes]


# ======================================================================= helpers
def _name(dtype):
    return np.dtype(dtype).name


def _rng(*key):
    """A deterministic RNG per test case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@contextlib.contextmanager
def quiet():
    """Silence the warnings of reference computations (pytest turns warnings into errors)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _axes_tuple(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted({int(a) % max(ndim, 1) for a in items})) if ndim else ()


def as_rows(array, axis):
    """``array`` as (slices, n): one row per slice along ``axis`` (works for 0-d too)."""
    array = np.asarray(array)
    axes = _axes_tuple(axis, array.ndim)
    n = int(np.prod([array.shape[a] for a in axes])) if axes else 1
    moved = np.moveaxis(array, axes, tuple(range(array.ndim - len(axes), array.ndim)))
    return moved.reshape(-1, n)


def make_input(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind == "i":
        return rng.integers(-6, 7, size=shape).astype(dtype)
    return (3 * rng.standard_normal(shape)).astype(dtype)


def ulps(computed, exact, dtype):
    """|computed - exact| / np.spacing(|exact rounded to dtype|), evaluated in mpmath.

    ``exact`` is an mpmath number; +-inf must be met exactly (0 or inf ulps).
    """
    computed = float(computed)
    with np.errstate(over="ignore"):
        rounded = np.asarray(float(exact)).astype(dtype)  # may overflow to +-inf: then exact
    if mp.isinf(exact) or np.isinf(rounded) or np.isinf(computed) or np.isnan(computed):
        return 0.0 if computed == float(rounded) else float("inf")
    rounded = np.abs(rounded)
    with np.errstate(over="ignore"):
        ulp = np.spacing(rounded)  # np.spacing(0) is the smallest subnormal
    if np.isinf(ulp):
        ulp = rounded - np.nextafter(rounded, np.zeros((), dtype))
    with mp.workdps(DPS):
        return float(abs(mp.mpf(computed) - exact) / mp.mpf(float(ulp)))


# ------------------------------------------------------------ exact values (mpmath)
@functools.lru_cache(maxsize=None)
def _exact_row_cached(row):
    return _exact_row(list(row))


def exact_row(row):
    """Exact softmax, log_softmax, log1m_softmax and their condition numbers for one row.

    Returns {name: [(value, cond), ...]} with mpmath values, or None when the row's softmax
    is nan (a nan or +inf in it, or all -inf). ``row`` holds the very floats passed in.
    """
    return _exact_row_cached(tuple(float(v) for v in np.asarray(row, np.float64).ravel()))


def _exact_row(xs):
    if any(np.isnan(v) or v == np.inf for v in xs) or all(v == -np.inf for v in xs):
        return None
    with mp.workdps(DPS):
        live = [i for i, v in enumerate(xs) if v != -np.inf]
        m = max(xs[i] for i in live)
        X = {i: mp.mpf(xs[i]) for i in live}
        t = {i: mp.exp(X[i] - m) for i in live}          # exactly 1 at the ties
        ties = sum(1 for i in live if xs[i] == m)
        rest = mp.fsum(t[i] for i in live if xs[i] != m)
        total = ties + rest
        log_total = mp.log(ties) + mp.log1p(rest / ties)  # log(total) keeping a tiny rest
        abs_mean = mp.fsum(abs(X[i]) * t[i] for i in live) / total  # sum |x_j| p_j
        out = {"softmax": [], "log_softmax": [], "log1m_softmax": []}
        for i, v in enumerate(xs):
            if v == -np.inf:
                out["softmax"].append((mp.zero, mp.zero))
                out["log_softmax"].append((mp.ninf, mp.zero))
                out["log1m_softmax"].append((mp.zero, mp.zero))
                continue
            p = t[i] / total
            if p <= 0.5:
                q = 1 - p
                others_abs = abs_mean - abs(X[i]) * p             # sum_{j != i} |x_j| p_j
                log1m = mp.log1p(-p)
            else:  # the unique dominant entry: sum the others directly (no cancellation)
                others = mp.fsum(t[j] for j in live if j != i)
                q = others / total
                others_abs = mp.fsum(abs(X[j]) * t[j] for j in live if j != i) / total
                log1m = mp.log(others) - log_total if others != 0 else mp.ninf
            log_sm = (X[i] - m) - log_total
            numerator = abs(X[i]) * q + others_abs  # q = 1 - p without cancellation
            cond_ls = numerator / abs(log_sm) if log_sm != 0 else mp.zero
            if log1m == 0 or mp.isinf(log1m):
                cond_l1m = mp.zero
            else:
                cond_l1m = (abs(X[i]) * p + p / q * others_abs) / abs(log1m)
            out["softmax"].append((p, numerator))
            out["log_softmax"].append((log_sm, cond_ls))
            out["log1m_softmax"].append((log1m, cond_l1m))
        return out


def bound_ulps(dtype, cond, name=None):
    """The documented bound: 1 ulp below float64 (float32, float16), else 2 ulp * max(1, cond)
    for log_softmax, 4 ulp * max(1, cond) for softmax (p = exp(x - m) / (c + s): the exp's
    error under 1 ulp at the entry and in the sum, the sum's and the division's roundings,
    and an error relative to p is up to twice as many of its ulps; 3.3 seen on random rows),
    6 ulp * max(1, cond) for log1m_softmax (log1p(-p) carries p's errors with a gain of
    p / ((1 - p) |log1p(-p)|) <= 1.44, and adds its own, under 1 ulp; 4.2 seen)."""
    if np.dtype(dtype) != np.float64:
        return 1.0
    return {"log_softmax": 2.0, "log1m_softmax": 6.0}.get(name, 4.0) * max(1.0, float(cond))


def accuracy_failures(name, x, axis, computed, label="", limit=10):
    """Entries of ``computed`` (= name(x, axis)) beyond the documented bound vs mpmath."""
    dtype = np.asarray(computed).dtype
    xrows = as_rows(x, axis)
    crows = as_rows(computed, axis)
    failures = []
    for r, (xrow, crow) in enumerate(zip(xrows, crows)):
        exact = exact_row(xrow)
        if exact is None:
            bad = [k for k, c in enumerate(crow) if not np.isnan(c)]
            failures += [f"{label} slice {r} index {k}: computed={float(crow[k])!r} "
                         f"expected nan (softmax of the slice is nan)" for k in bad]
            continue
        for k, (value, cond) in enumerate(exact[name]):
            c = crow[k]
            if (name == "softmax" and dtype == np.float64 and abs(value) < mp.mpf("1e-300")):
                if not 0 <= c <= 2e-300:
                    failures.append(f"{label} slice {r} index {k}: computed={float(c)!r} "
                                    f"exact={float(value)!r} (subnormal range)")
                continue
            err = ulps(c, value, dtype)
            bound = bound_ulps(dtype, cond, name)
            if not err <= bound:
                failures.append(
                    f"{label} slice {r} index {k}: x={float(xrow[k])!r} computed={float(c)!r} "
                    f"exact={mp.nstr(value, 20)} error={err:.4g} ulp cond={float(cond):.4g} "
                    f"bound={bound:.4g} ulp")
    return failures[:limit] + ([f"... {len(failures) - limit} more"] if len(failures) > limit else [])


# ------------------------------------------------------------ comparison with SciPy
def scipy_call(name, x, axis):
    """SciPy's result or exception for ``name(x, axis)``; booleans go in as float64.

    (SciPy's softmax fails on booleans with 'numpy boolean subtract'; numba_lse documents that
    booleans give float64, i.e. exactly SciPy on the float64 cast.)
    """
    if np.asarray(x).dtype == np.bool_:
        x = np.asarray(x, dtype=np.float64)
    with quiet():
        try:
            return SCIPY[name](x, axis=axis), None
        except Exception as exc:  # the exception is part of what must be matched
            return None, exc


def value_mismatches(ours, ref, rtol, atol=0.0):
    """Indices where ours and ref differ: nan/inf positions exactly, finite values by tolerance."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
        finite = np.isfinite(ours) & np.isfinite(ref)
        close = finite & (np.abs(ours - ref) <= atol + rtol * np.abs(ref))
    return np.argwhere(~(same | close))


def describe(x, ours, ref, idx, limit=8):
    lines = []
    for i in idx[:limit]:
        i = tuple(i)
        lines.append(f"  at {i}: x={np.asarray(x)[i] if np.ndim(x) else x!r} "
                     f"ours={np.asarray(ours)[i]!r} ref={np.asarray(ref)[i]!r}")
    return "\n".join(lines)


def check_against_scipy(name, x, axis, ctx=""):
    """numba_lse's ``name`` matches SciPy's: exception, type, dtype, shape and values."""
    ref, exc = scipy_call(name, x, axis)
    if exc is not None:
        with pytest.raises(type(exc)):
            FUNCS[name](x, axis=axis)
        return
    ours = FUNCS[name](x, axis=axis)
    assert type(ours) is type(ref), f"{ctx}: type {type(ours)} != scipy's {type(ref)}"
    assert ours.dtype == ref.dtype, f"{ctx}: dtype {ours.dtype} != scipy's {ref.dtype}"
    assert ours.shape == ref.shape == np.shape(x), f"{ctx}: shape {ours.shape} != {ref.shape}"
    if ref.dtype == np.float16:
        # SciPy computes float16 in float16 (off by an ulp or two); numba_lse in float32.
        # Against SciPy in float64 rounded to float16: within 1 float16 ulp.
        exact, _ = scipy_call(name, np.asarray(x, dtype=np.float64), axis)
        expected = np.asarray(exact).astype(np.float16)
        tol = np.spacing(np.abs(expected)).astype(np.float64)
        bad = value_mismatches(ours, expected, rtol=0, atol=0)
        bad = [i for i in bad if not abs(float(np.asarray(ours)[tuple(i)])
                                         - float(expected[tuple(i)])) <= tol[tuple(i)]]
        assert not bad, f"{ctx}: float16 beyond 1 ulp:\n" + describe(x, ours, expected, bad)
        return
    eps = np.finfo(ref.dtype).eps
    scale = 1.0 + (float(np.max(np.abs(np.asarray(x, dtype=np.float64)))) if np.size(x) else 0.0)
    # log_softmax: absolute error ~ eps * |x|; softmax: relative, except in the subnormal
    # range, where 64 ulps of the smallest normal number are allowed.
    tiny = float(np.finfo(ref.dtype).tiny)
    atol = 16 * eps * scale if name == "log_softmax" else 64 * eps * tiny
    bad = value_mismatches(ours, ref, rtol=64 * eps, atol=atol)
    assert not len(bad), f"{ctx}: values differ from SciPy:\n" + describe(x, ours, ref, bad)


def check_log1m(x, axis, ctx=""):
    """log1m_softmax: type/dtype/shape as SciPy's softmax, values within the bound (mpmath)."""
    ref, exc = scipy_call("softmax", x, axis)
    if exc is not None:
        with pytest.raises(type(exc)):
            nl.log1m_softmax(x, axis=axis)
        return
    ours = nl.log1m_softmax(x, axis=axis)
    assert type(ours) is type(ref), f"{ctx}: type {type(ours)} != scipy softmax's {type(ref)}"
    assert ours.dtype == ref.dtype, f"{ctx}: dtype {ours.dtype} != {ref.dtype}"
    assert ours.shape == ref.shape, f"{ctx}: shape {ours.shape} != {ref.shape}"
    # The bound holds for the values handed to the kernel: float16/ints/bools as cast.
    failures = accuracy_failures("log1m_softmax", np.asarray(x).astype(
        np.float32 if ref.dtype == np.float16 else ref.dtype), axis, ours, ctx)
    assert not failures, "\n".join(failures)


# ======================================================================= 1. semantics
class TestSemanticsGrid:
    """Shapes x axes x dtypes against SciPy: type, dtype, shape and values."""

    @pytest.mark.parametrize("shape, axis", SHAPE_AXIS)
    @pytest.mark.parametrize("dtype", DTYPES, ids=_name)
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_matches_scipy(self, name, dtype, shape, axis):
        x = make_input(_rng(name, _name(dtype), shape), shape, dtype)
        check_against_scipy(name, x, axis, f"{name} {_name(dtype)} shape={shape} axis={axis}")

    @pytest.mark.parametrize("shape, axis", SHAPE_AXIS)
    @pytest.mark.parametrize("dtype", DTYPES, ids=_name)
    def test_log1m_softmax(self, dtype, shape, axis):
        x = make_input(_rng("log1m", _name(dtype), shape), shape, dtype)
        check_log1m(x, axis, f"log1m_softmax {_name(dtype)} shape={shape} axis={axis}")

    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    @pytest.mark.parametrize("value", [3.0, np.float64(3.0), np.float32(-2.5), np.float16(1.5),
                                       np.int32(4), 7, np.array(2.0), np.array(2.0, np.float32)],
                             ids=lambda v: f"{type(v).__name__}({v})")
    def test_scalar_input(self, name, value):
        check_against_scipy(name, value, None, f"{name}({value!r})")

    PYTHON_INPUTS = {
        "float": 3.0, "int": 3, "negative_float": -2.5, "list_float": [1.0, 2.0, 3.0],
        "list_int": [1, 2, 3], "list_mixed": [1, 2.5, -1], "nested_list": [[1, 2], [3, 4.5]],
        "nested_single": [[1.0]], "tuple": (0.5, 1.5),
    }

    @pytest.mark.parametrize("axis", [None, -1])
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    @pytest.mark.parametrize("case", PYTHON_INPUTS)
    def test_python_input(self, case, name, axis):
        check_against_scipy(name, self.PYTHON_INPUTS[case], axis, f"{name}({case}, axis={axis})")

    @pytest.mark.parametrize("case", PYTHON_INPUTS)
    def test_python_input_log1m(self, case):
        check_log1m(self.PYTHON_INPUTS[case], None, f"log1m_softmax({case})")

    ZERO_SIZE = [((0, 3), 0), ((0, 3), 1), ((0, 3), None), ((0, 3), -1), ((0, 3), (0, 1)),
                 ((2, 0, 3), 1), ((2, 0, 3), 2), ((2, 0, 3), (0, 2)), ((0,), None), ((0,), 0)]

    @pytest.mark.parametrize("shape, axis", ZERO_SIZE, ids=[f"{s}-axis={a}" for s, a in ZERO_SIZE])
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_zero_size(self, name, shape, axis):
        # SciPy raises ValueError when a reduced axis has length 0 (its max has no identity),
        # and returns an empty array otherwise: numba_lse must do the same.
        check_against_scipy(name, np.zeros(shape), axis, f"{name}(zeros{shape}, axis={axis})")

    @pytest.mark.parametrize("shape, axis", ZERO_SIZE, ids=[f"{s}-axis={a}" for s, a in ZERO_SIZE])
    def test_zero_size_log1m(self, shape, axis):
        check_log1m(np.zeros(shape), axis, f"log1m_softmax(zeros{shape}, axis={axis})")

    def test_empty_list(self):
        for name in SCIPY:
            check_against_scipy(name, [], None, f"{name}([])")


# ======================================================================= layouts
def _readonly(x):
    x = x.copy()
    x.setflags(write=False)
    return x


VIEWS = {
    "strided_slice": lambda x: x[1::2, ::3],
    "column_slice": lambda x: x[:, 2:9],
    "transposed": lambda x: x.T,
    "fortran": np.asfortranarray,
    "negative_rows": lambda x: x[::-1],
    "negative_strided": lambda x: x[::-1, ::-2],
    "readonly": _readonly,
    "broadcast_row": lambda x: np.broadcast_to(x[0], x.shape),
    "broadcast_col": lambda x: np.broadcast_to(x[:, :1], x.shape),
    "3d_transposed": lambda x: x.reshape(4, 3, 10).transpose(2, 0, 1),
    "3d_strided_middle": lambda x: x.reshape(4, 3, 10)[:, ::2, ::-3],
}


class TestLayouts:
    @pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)], ids=lambda a: f"axis={a}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("view", VIEWS)
    def test_view_matches_scipy(self, view, dtype, axis):
        base = (3 * _rng("layout", view, _name(dtype)).standard_normal((12, 10))).astype(dtype)
        x = VIEWS[view](base)
        before = x.copy()
        for name in SCIPY:
            check_against_scipy(name, x, axis, f"{name} view={view} axis={axis}")
        check_log1m(x, axis, f"log1m_softmax view={view} axis={axis}")
        np.testing.assert_array_equal(x, before)

    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_long_rows_same_bits_whole_or_chunked(self, name, dtype):
        # Rows longer than a CHUNK: log_softmax's are one task each when there are enough of
        # them (16 here), chunk by chunk otherwise (2 rows), with the same partials;
        # softmax's and log1m_softmax's are one task each either way. The same bits.
        from numba_lse.cpu.reduce import CHUNK
        rng = _rng("long rows", name, _name(dtype))
        x = (30 * rng.standard_normal((16, CHUNK + 1000))).astype(dtype)
        x[3, 5] = 400.0  # a dominant entry (log1m_softmax's own pass)
        where = rng.random(x.shape) < 0.9
        np.testing.assert_array_equal(FUNCS[name](x, axis=1)[:2], FUNCS[name](x[:2], axis=1))
        np.testing.assert_array_equal(FUNCS[name](x, axis=1, where=where)[:2],
                                      FUNCS[name](x[:2], axis=1, where=where[:2]))

    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("layout", ["packed", "strided"])
    def test_tall_columns_in_pieces(self, layout, name, dtype):
        # Few columns over a long axis. Packed, their partials and outputs are taken on a
        # view of 18 rows a row, each wide column given its column's partial
        # (``cpu._column_partials``: 30000 rows, 1666 such rows and 12 left over); strided,
        # the band is cut in pieces of rows, their partials merged
        # (``reduce.column_pieces``). Special values in some pieces (and groups of rows)
        # and not others, a dominant entry (log1m_softmax's own pass), and a mask over a
        # whole piece.
        from numba_lse import cpu
        # softmax and log_softmax against SciPy in long double on the rows of the transposed
        # copy (SciPy's own float64 sums down a strided axis run in sequence: 50 ulp here);
        # all three against our rows of that copy (tested against mpmath), specials exactly.
        from numba_lse.cpu.reduce import column_pieces
        rng = _rng("tall columns", layout, name, _name(dtype))
        x = 3 * rng.standard_normal((2, 30_000, 7))
        x[0, 25_000, 0] = np.nan
        x[0, 12_000, 1] = np.inf
        x[1, :, 2] = -np.inf
        x[1, 15_000, 3] = 1000.0
        x[1, ::7_000, 4] = 40.0
        x[0, :, 5] -= 1000.0
        x[0, 5, 5] = 0.0
        x = x.astype(dtype)
        assert column_pieces.py_func(x) == (3, 10_000)
        if layout == "strided":
            x = np.repeat(x, 2, axis=2)[:, :, ::2]
        assert cpu._rows_per_wide_row(x) == (18 if layout == "packed" else 1)
        ours = FUNCS[name](x, axis=1)
        # The documented bound, 2 ulp * max(1, cond), with cond <= |x_i| + max |x_j| (module
        # docstring); float32 within 1 ulp of the reference rounded; log_softmax absolute.
        eps = np.finfo(dtype).eps
        finite = np.abs(np.where(np.isfinite(x), x, 0.0))
        scale = 1.0 + float(np.max(finite))
        rtol = 2 * eps * (1.0 + finite + scale) if dtype == np.float64 else 2 * eps
        atol = 4 * eps * scale if name == "log_softmax" else 4 * eps * float(np.finfo(dtype).tiny)
        if name in SCIPY:
            ref, _ = scipy_call(name, np.swapaxes(x, 1, 2).astype(np.longdouble), 2)
            ref = np.swapaxes(ref, 1, 2).astype(dtype)
            assert ours.dtype == ref.dtype and ours.shape == ref.shape
            bad = value_mismatches(ours, ref, rtol=rtol, atol=atol)
            assert not len(bad), describe(x, ours, ref, bad)
        rows = FUNCS[name](np.ascontiguousarray(np.swapaxes(x, 1, 2)), axis=2)
        expected = np.swapaxes(rows, 1, 2)
        bad = value_mismatches(ours, expected, rtol=2 * rtol, atol=2 * atol)
        assert not len(bad), describe(x, ours, expected, bad)
        where = np.ones(x.shape, dtype=bool)
        where[0, 10_000:20_000, :] = False     # the middle piece of every column of slice 0
        masked = FUNCS[name](x, axis=1, where=where)
        rows = FUNCS[name](np.ascontiguousarray(np.swapaxes(x, 1, 2)), axis=2,
                           where=np.ascontiguousarray(np.swapaxes(where, 1, 2)))
        expected = np.swapaxes(rows, 1, 2)
        bad = value_mismatches(masked, expected, rtol=2 * rtol, atol=2 * atol)
        assert not len(bad), describe(x, masked, expected, bad)

    @pytest.mark.parametrize("name", FUNCS)
    def test_streamed_outputs_same_bits_as_stored(self, name):
        # Short rows of an output of STREAM_FROM bytes or more are written by streaming
        # stores, a block of 16 rows (whole cache lines) at a time; a smaller output by
        # stores: every row the same bits either way (a row's values depend on it alone).
        from numba_lse.cpu.reduce import STREAM_FROM
        rng = _rng("streamed", name)
        for n in (3, 10, 16):
            rows = STREAM_FROM // (4 * n) + 21  # the last tile not a whole number of blocks
            x = (30 * rng.standard_normal((rows, n))).astype(np.float32)
            x[5, 1] = 400.0  # a dominant entry
            x[rows - 3] = np.inf
            where = rng.random(x.shape) < 0.9
            for kwargs in ({}, {"where": where}):
                whole = FUNCS[name](x, axis=1, **kwargs)
                pieces = [FUNCS[name](x[r:r + 99_840], axis=1,
                                      **{k: v[r:r + 99_840] for k, v in kwargs.items()})
                          for r in range(0, rows, 99_840)]
                np.testing.assert_array_equal(whole, np.concatenate(pieces), err_msg=f"n={n}")

    @pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2", ">i4"])
    def test_other_byte_order_as_scipy(self, dtype):
        """Data in the other byte order (big-endian FITS files, network order): SciPy computes
        it and returns results in the machine's order, as numba_lse must; every op, with and
        without ``where``, gives the bits of the same data in the machine's order."""
        rng = _rng("byte order", dtype)
        native = np.dtype(dtype).newbyteorder("=")
        x = (3 * rng.standard_normal((6, 9))).astype(native)
        x[0, 0] = 400 if native.kind == "f" else 90  # a dominant entry
        if native.kind == "f" and native.itemsize > 2:  # (the float16 check takes finite rows)
            x[1, 1], x[2] = np.inf, -np.inf
        where = rng.random(x.shape) < 0.8
        big = x.astype(dtype)
        for axis in (None, 0, 1):
            for name in SCIPY:
                check_against_scipy(name, big, axis, f"{name} {dtype} axis={axis}")
            for name in FUNCS:
                for kwargs in ({}, {"where": where}):
                    got, want = FUNCS[name](big, axis=axis, **kwargs), FUNCS[name](x, axis=axis, **kwargs)
                    assert got.dtype.isnative and got.dtype == want.dtype, (name, axis)
                    assert got.tobytes() == want.tobytes(), (name, axis, kwargs)

    @pytest.mark.parametrize("name", FUNCS)
    def test_inputs_never_written(self, name):
        rng = _rng("never written", name)
        x = (3 * rng.standard_normal((5, 7))).astype(np.float64)
        x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -np.inf
        w = rng.random((5, 7)) < 0.7
        x_before, w_before = x.copy(), w.copy()
        for kwargs in ({}, {"axis": 0}, {"axis": 1}, {"where": w}, {"axis": 0, "where": w}):
            out = FUNCS[name](x, **kwargs)
            assert not np.shares_memory(out, x)
            np.testing.assert_array_equal(x, x_before)
            np.testing.assert_array_equal(w, w_before)


# ======================================================================= 2. special values
def _grid(length, dtype):
    return np.array(list(itertools.product(SPECIAL, repeat=length)), dtype=dtype)


def _row_report(rows, ours, ref, bad_rows, limit=10):
    return "\n".join(f"  row {rows[r].tolist()}: ours={np.asarray(ours)[r].tolist()} "
                     f"scipy={np.asarray(ref)[r].tolist()}" for r in bad_rows[:limit])


class TestSpecialValues:
    @pytest.mark.parametrize("layout", ["rows_axis_-1", "columns_axis_0", "one_row_at_a_time"])
    @pytest.mark.parametrize("length", [1, 2, 3], ids=lambda n: f"length{n}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_grid_matches_scipy(self, name, dtype, length, layout):
        rows = _grid(length, dtype)
        ref, exc = scipy_call(name, rows, -1)
        assert exc is None
        fn = FUNCS[name]
        if layout == "rows_axis_-1":
            ours = fn(rows, axis=-1)
        elif layout == "columns_axis_0":
            ours = fn(np.ascontiguousarray(rows.T), axis=0).T
        else:
            ours = np.stack([fn(row) for row in rows])
        assert ours.dtype == ref.dtype
        bad = value_mismatches(ours, ref, rtol=4 * np.finfo(dtype).eps)
        bad_rows = sorted({int(i[0]) for i in bad})
        assert not bad_rows, (f"{name} {_name(dtype)} {layout}: {len(bad_rows)} rows differ "
                              f"from SciPy:\n" + _row_report(rows, ours, ref, bad_rows))

    @pytest.mark.parametrize("layout", ["rows_axis_-1", "columns_axis_0", "one_row_at_a_time"])
    @pytest.mark.parametrize("length", [1, 2, 3], ids=lambda n: f"length{n}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_grid_log1m_softmax(self, dtype, length, layout):
        # nan wherever SciPy's softmax of the row has a nan; otherwise the exact value.
        rows = _grid(length, dtype)
        sm, _ = scipy_call("softmax", rows, -1)
        if layout == "rows_axis_-1":
            ours = nl.log1m_softmax(rows, axis=-1)
        elif layout == "columns_axis_0":
            ours = nl.log1m_softmax(np.ascontiguousarray(rows.T), axis=0).T
        else:
            ours = np.stack([nl.log1m_softmax(row) for row in rows])
        assert ours.dtype == rows.dtype
        nan_rows = np.isnan(sm).any(axis=-1)
        wrong_nan = [r for r in range(len(rows))
                     if nan_rows[r] != np.isnan(ours[r]).all() or
                     (not nan_rows[r] and np.isnan(ours[r]).any())]
        assert not wrong_nan, "nan pattern differs from SciPy's softmax:\n" + _row_report(
            rows, ours, sm, wrong_nan)
        failures = accuracy_failures("log1m_softmax", rows[~nan_rows], -1, ours[~nan_rows],
                                     f"log1m_softmax {_name(dtype)}")
        assert not failures, "\n".join(failures)

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", ["softmax", "log_softmax", "log1m_softmax"])
    def test_grid_among_finite_entries(self, name, dtype):
        """Rows of SHORT_ROW to CHUNK entries take a path of their own (softmax and
        log1m_softmax keep the exps of the sum for the outputs): the grid's special rows
        again, spread over rows of 40 finite entries. Where and which values are not finite
        as SciPy (on the float64 cast), the others within the bound against mpmath."""
        rows = _grid(3, dtype)
        x = 3 * _rng("among", name, _name(dtype)).standard_normal((len(rows), 40))
        x = x.astype(dtype)
        x[:, [0, 20, 39]] = rows
        ours = FUNCS[name](x, axis=-1)
        assert ours.dtype == x.dtype and ours.shape == x.shape
        sm, _ = scipy_call("softmax", x.astype(np.float64), -1)
        nan_rows = np.isnan(sm).any(axis=-1)
        if name == "log1m_softmax":
            wrong = [r for r in range(len(x)) if np.isnan(ours[r]).any() != nan_rows[r]
                     or (nan_rows[r] and not np.isnan(ours[r]).all())]
            ref = sm
        else:
            ref, _ = scipy_call(name, x.astype(np.float64), -1)
            special = ~np.isfinite(ref)
            wrong = sorted({int(i[0]) for i in np.argwhere(
                special != ~np.isfinite(ours) | (special & (ours.astype(np.float64) != ref)
                                                 & ~(np.isnan(ours) & np.isnan(ref))))})
        assert not wrong, "non-finite values differ from SciPy's:\n" + _row_report(
            x[:, [0, 20, 39]], ours[:, [0, 20, 39]], ref[:, [0, 20, 39]], wrong)
        failures = accuracy_failures(name, x[~nan_rows], -1, ours[~nan_rows],
                                     f"{name} {_name(dtype)} among 40")
        assert not failures, "\n".join(failures)

    @staticmethod
    def _extreme_rows(dtype):
        fmax, tiny = float(np.finfo(dtype).max), float(np.finfo(dtype).tiny)
        smallest = float(np.nextafter(dtype(0), dtype(1)))
        return {
            "fmax_pair": [fmax, fmax], "neg_fmax_pair": [-fmax, -fmax],
            "fmax_neg_fmax_0": [fmax, -fmax, 0.0], "neg_fmax_0": [-fmax, 0.0],
            "fmax_and_neighbour": [fmax, float(np.nextafter(dtype(fmax), dtype(0)))],
            "tiny_0": [tiny, 0.0], "subnormals": [smallest, -smallest],
        }

    @pytest.mark.parametrize("key", ["fmax_pair", "neg_fmax_pair", "fmax_neg_fmax_0",
                                     "neg_fmax_0", "fmax_and_neighbour", "tiny_0", "subnormals"])
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_extreme_finite_rows(self, dtype, key):
        # Differences that overflow (fmax - -fmax) or are subnormal: SciPy's semantics, and
        # the documented accuracy against mpmath.
        row = np.array(self._extreme_rows(dtype)[key], dtype=dtype)
        for name in SCIPY:
            check_against_scipy(name, row, None, f"{name}({key})")
        for name, fn in FUNCS.items():
            failures = accuracy_failures(name, row, None, fn(row), key)
            assert not failures, f"{name}:\n" + "\n".join(failures)

    NAMED = {
        "softmax_inf_1": ("softmax", [np.inf, 1.0], [np.nan, np.nan]),
        "log_softmax_inf_1": ("log_softmax", [np.inf, 1.0], [np.nan, -np.inf]),
        "softmax_all_neg_inf": ("softmax", [-np.inf, -np.inf], [np.nan, np.nan]),
        "log_softmax_all_neg_inf": ("log_softmax", [-np.inf, -np.inf, -np.inf], [np.nan] * 3),
        "log1m_softmax_all_neg_inf": ("log1m_softmax", [-np.inf, -np.inf], [np.nan, np.nan]),
        "log_softmax_neg_inf_1": ("log_softmax", [-np.inf, 1.0], [-np.inf, 0.0]),
        "softmax_neg_inf_1": ("softmax", [-np.inf, 1.0], [0.0, 1.0]),
        "softmax_nan_1": ("softmax", [np.nan, 1.0], [np.nan, np.nan]),
        "log_softmax_nan_1": ("log_softmax", [np.nan, 1.0], [np.nan, np.nan]),
        "log1m_softmax_nan_1": ("log1m_softmax", [np.nan, 1.0], [np.nan, np.nan]),
        "log1m_softmax_inf_1": ("log1m_softmax", [np.inf, 1.0], [np.nan, np.nan]),
    }

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("case", NAMED)
    def test_named_case(self, case, dtype):
        name, row, expected = self.NAMED[case]
        row = np.array(row, dtype=dtype)
        ours = FUNCS[name](row)
        np.testing.assert_array_equal(ours, np.array(expected, dtype=dtype), err_msg=case)
        if name in SCIPY:  # the named expectation is SciPy's live behaviour
            ref, _ = scipy_call(name, row, None)
            np.testing.assert_array_equal(ours, ref, err_msg=f"{case} vs scipy")
        else:
            sm, _ = scipy_call("softmax", row, None)
            assert np.isnan(sm).all()


# ======================================================================= 3. accuracy (mpmath)
def _accuracy_rows(dtype):
    rng = np.random.default_rng(20240611)
    f64 = np.dtype(dtype) == np.float64
    rows = {
        "ties_5_5_5_1": [5.0, 5.0, 5.0, 1.0],
        "ties_zeros_7": [0.0] * 7,
        "ties_pair_3": [3.0, 3.0],
        "ties_max_1000_1000_m1000": [1000.0, 1000.0, -1000.0],
        "pm1000_mix": [1000.0, -1000.0, 999.5, -999.5, 0.0],
        "pm1000_ties": [-1000.0, -1000.0, 1000.0, 1000.0],
        "acceptance_m1000_m1000_1000": [-1000.0, -1000.0, 1000.0],
        "dominant_1000_0_0": [1000.0, 0.0, 0.0],
        "neg_inf_entry": [1.0, -np.inf, 2.0],
        "single": [5.0],
        "single_zero": [0.0],
        "one_two_three": [1.0, 2.0, 3.0],
        "tiny_values": [0.3, 1e-20, -0.7],
        "near_equal": [1.0, 1.0 + 2**-40, 1.0 - 2**-40],
        "wide_range_1001": np.linspace(-700, 700, 1001) if f64 else np.linspace(-80, 80, 1001),
    }
    for alpha in (1e-8, 1.0, 30.0, 300.0 if f64 else 40.0):
        rows[f"alpha_{alpha:g}_m1_0_1"] = [-alpha, 0.0, alpha]
    for d in ((10, 20, 50, 100, 300, 700) if f64 else (10, 20, 50, 80)):
        rows[f"dominant_by_{d}"] = [float(d), 0.0, 0.0, 0.0]
        rows[f"dominant_pair_0_m{d}"] = [0.0, -float(d)]
        rows[f"dominant_negative_m{d}_m2{d}"] = [-float(d), -2.0 * d, -2.0 * d - 1]
    for seed in range(3):
        rows[f"randn10_1000_seed{seed}"] = 10 * np.random.default_rng(seed).standard_normal(1000)
    rows["randn3_50_shifted_700"] = 3 * rng.standard_normal(50) + (700 if f64 else 80)
    return {k: np.asarray(v, dtype=np.float64).astype(dtype) for k, v in rows.items()}


ACC_ROWS = {_name(dt): _accuracy_rows(dt) for dt in FLOATS}
ACC_CASES = [pytest.param(d, k, id=f"{d}-{k}") for d in ACC_ROWS for k in ACC_ROWS[d]]


def _embed_as_column(row):
    """``row`` as column 1 of an (n, 3) array (columns 0 and 2: other data): inner kernel."""
    return np.stack([row[::-1], row, np.zeros_like(row)], axis=1)

def _float64_reference(name, x, axis):
    """The op of float64 data x along ``axis`` in float64, in forms that keep its relative
    error near 2^-50 (log1p where the sum is close to 1; the entry above 1/2 of
    log1m_softmax as log(s) - log1p(s), s the sum of the others): finite rows only."""
    m = x.max(axis=axis, keepdims=True)
    ties = (x == m).sum(axis=axis, keepdims=True)
    s = np.where(x == m, 0.0, np.exp(x - m)).sum(axis=axis, keepdims=True)
    if name == "softmax":
        return np.exp(x - m) / (ties + s)
    if name == "log_softmax":
        return (x - m) - (np.log(ties) + np.log1p(s / ties))
    p = np.exp(x - m) / (ties + s)
    with np.errstate(divide="ignore"):  # the unused branch of np.where: log1p(-1), log(0)
        return np.where((x == m) & (ties == 1) & (s < 1), np.log(s) - np.log1p(s), np.log1p(-p))



class TestAccuracy:
    def test_fused_divide_gives_the_bits_of_a_division(self):
        """``softmax.divide`` (float64 tiles of short rows: q = a r, q + (a - q b) r with
        two FMAs, a scaled by 2^200): a / b's bits wherever the quotient is normal, within a
        subnormal ulp below it, for a in [0, 1] and b >= 1, as a softmax value has them."""
        from numba import njit
        from numba_lse.cpu.softmax import divide

        @njit
        def quotients(a, b):
            out = np.empty(a.size)
            for i in range(a.size):
                out[i] = divide(a[i], b[i], 1.0 / b[i])
            return out

        rng = np.random.default_rng(5)
        n = 400_000
        a = np.concatenate([rng.random(n), np.exp(-rng.random(n) * 750.0),
                            np.ldexp(rng.random(n), -1022), [0.0, 1.0, 5e-324, np.nan]])
        b = np.concatenate([1 + rng.random(n) * 10.0 ** rng.integers(0, 9, n),
                            np.nextafter(np.ldexp(1.0, rng.integers(1, 40, n)), 0),
                            1 + rng.random(n), [1.0, 1.0, 3.0, 2.0]])
        computed, exact = quotients(a, b), a / b
        assert np.isnan(computed[-1])
        computed, exact = computed[:-1], exact[:-1]
        normal = exact >= np.finfo(np.float64).tiny
        np.testing.assert_array_equal(computed[normal], exact[normal])
        assert np.all(np.abs(computed[~normal] - exact[~normal]) <= 5e-324)
        assert normal.sum() > n and (~normal).sum() > n // 2  # both ranges are tried

    @pytest.mark.parametrize("layout", ["row", "column"])
    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("dtype_name, key", ACC_CASES)
    def test_within_documented_bound(self, dtype_name, key, name, layout):
        row = ACC_ROWS[dtype_name][key]
        if layout == "row":
            computed = FUNCS[name](row)
        else:
            computed = FUNCS[name](_embed_as_column(row), axis=0)[:, 1]
        assert computed.dtype == row.dtype
        failures = accuracy_failures(name, row, None, computed, f"{key} ({layout})")
        assert not failures, f"{name} {dtype_name} beyond bound:\n" + "\n".join(failures)

    def test_float32_softmax_beats_scipy_on_rows_of_1000(self):
        # SciPy's float32 softmax works in float32 (a few ulp off); ours is within 1 ulp.
        lines, ours_worst, scipy_worst, ours_total, scipy_total = [], 0.0, 0.0, 0.0, 0.0
        for seed in range(4):
            row = (10 * np.random.default_rng(100 + seed).standard_normal(1000)).astype(np.float32)
            exact = [v for v, _ in exact_row(row)["softmax"]]
            with quiet():
                theirs = special.softmax(row)
            ours = nl.softmax(row)
            e_ours = [ulps(c, v, np.float32) for c, v in zip(ours, exact)]
            e_theirs = [ulps(c, v, np.float32) for c, v in zip(theirs, exact)]
            ours_worst, scipy_worst = max(ours_worst, max(e_ours)), max(scipy_worst, max(e_theirs))
            ours_total, scipy_total = ours_total + sum(e_ours), scipy_total + sum(e_theirs)
            lines.append(f"seed {100 + seed}: ours max {max(e_ours):.3g} ulp, "
                         f"scipy max {max(e_theirs):.3g} ulp")
        msg = "\n".join(lines)
        assert ours_worst <= 1.0, msg
        assert ours_worst < scipy_worst and ours_total < scipy_total, msg

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("n", [256, 4096, 65536])
    def test_one_dominant_entry_over_many_small_ones(self, n, dtype):
        # softmax of [0, -20, ..., -20]: the max's term 1 and n - 1 terms of e^-20. Summed in
        # one sum, the 1 makes its lane's later additions round relative to 1: float64 lost
        # up to 1286 ulp at the max (n = 65536) that way; float32 rows may (far below their
        # ulp), float64 rows keep the max's term apart. Within the documented bounds.
        x = np.full(n, -20.0, dtype)
        x[0] = 0
        computed = nl.softmax(x)
        with mp.workdps(DPS):
            total = 1 + (n - 1) * mp.exp(mp.mpf(float(x[1])))
            exact = [1 / total, mp.exp(mp.mpf(float(x[1]))) / total]
        bound = 0.5 + 1 / 16 if dtype == np.float32 else 2.0
        assert ulps(computed[0], exact[0], dtype) <= bound
        assert ulps(computed[-1], exact[1], dtype) <= bound

    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("shape, axis", [((3000, 10), -1), ((64, 1000), -1),
                                             ((2, 70000), -1), ((1000, 64), 0)])
    def test_float32_is_a_float64_value_rounded_once(self, name, shape, axis):
        # float32 results are float64 computations rounded once: within 1/2 ulp plus the
        # float64 computation's own error, whose budget is 1/16 ulp (2^-28): its float32 exp
        # (2^-31 relative, in the row sums too) gains at most 2 through log1m_softmax's
        # log1p(-p), p <= 1/2. Every kernel layout: tiles of short rows, rows, chunked long
        # rows, columns. The float64 reference (log1p forms; relative error ~2^-50) is exact
        # at this scale.
        rng = _rng("rounded once", name, shape, axis)
        scales = np.array([0.01, 1.0, 10.0, 50.0])
        x = rng.standard_normal(shape)
        if axis == -1:
            x *= scales[np.arange(shape[0]) % 4][:, None]
        else:
            x *= scales[np.arange(shape[1]) % 4][None, :]
        x = x.astype(np.float32)
        computed = FUNCS[name](x, axis=axis).astype(np.float64)
        ref = _float64_reference(name, x.astype(np.float64), axis)
        ulp = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
        error = np.abs(computed - ref) / ulp
        worst = np.unravel_index(np.argmax(error), error.shape)
        assert error.max() <= 0.5 + 1 / 16, (worst, x[worst], computed[worst], ref[worst], error.max())

    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_2d_random_batches(self, name, dtype):
        # Many rows at once along both kernels (rows and inner), with a wide spread per row.
        rng = _rng("batch", name, _name(dtype))
        x = (rng.standard_normal((6, 40)) * np.array([[0.1], [1], [10], [30], [100], [300]])
             ).astype(dtype)
        for axis, data in ((1, x), (0, np.ascontiguousarray(x.T))):
            failures = accuracy_failures(name, data, axis, FUNCS[name](data, axis=axis),
                                         f"axis={axis}")
            assert not failures, f"{name} {_name(dtype)}:\n" + "\n".join(failures)


    @pytest.mark.parametrize("name", FUNCS)
    @pytest.mark.parametrize("n", [10, 31, 1000])
    def test_float64_random_rows_within_bound(self, name, n):
        # Plain randn rows, of every way (tiles of short rows, rows): their softmax was up to
        # 3.3 ulp x max(1, cond) off (exp's and the sum's errors add up), beyond the 2 ulp
        # the bound stated until session 34; log1m_softmax's 4.2, beyond its 3.
        rng = _rng("random rows", name, n)
        x = (rng.standard_normal((40 if n < 100 else 6, n)) * np.array([1.0, 3.0])[
            np.arange(40 if n < 100 else 6) % 2][:, None])
        failures = accuracy_failures(name, x, 1, FUNCS[name](x, axis=1), f"n={n}")
        assert not failures, "\n".join(failures)

    LONG_ROW = 16384  # rows up to a CHUNK (65536) are one task, their sum in blocks

    @staticmethod
    def _long_row_views(row):
        """The 1-D ``row`` as itself, as a [::2] view, and reversed ([::-1] of its reverse)."""
        spread = np.zeros(2 * row.size, row.dtype)
        spread[::2] = row
        return {"contiguous": row, "strided": spread[::2], "reversed": row[::-1].copy()[::-1]}

    @pytest.mark.parametrize("name", ["softmax", "log1m_softmax"])
    def test_float64_long_row_of_equal_terms(self, name):
        # 1 and 16383 terms of e^-5: a plain sum of the row in one loop (8 lanes, or one
        # sequence where a strided row's loop did not vectorise) was 30 ulp off at entry 0,
        # hundreds on the views; the documented bound here is ~10 (cond ~5).
        row = np.full(self.LONG_ROW, -5.0)
        row[0] = 0.0
        exact = exact_row(row)[name]
        for label, view in self._long_row_views(row).items():
            computed = FUNCS[name](view)
            for k in (0, 1, self.LONG_ROW - 1):
                value, cond = exact[k]
                err = ulps(computed[k], value, np.float64)
                assert err <= bound_ulps(np.float64, cond, name), (label, k, err, float(cond))

    @pytest.mark.parametrize("name", ["softmax", "log1m_softmax"])
    @pytest.mark.parametrize("n", [33, 1000, 1025, 65536])
    def test_strided_float64_rows_give_the_bits_of_their_copy(self, name, n):
        # Rows of up to a CHUNK: a block of a strided float64 row is copied before its sums,
        # so a view gives the very bits of its C-ordered copy, weights (where=) broadcast or
        # not. (A Fortran-ordered array is read down its columns: sums of another order.)
        rng = _rng("strided-bits", name, n)
        base = 3 * rng.standard_normal((3, 2 * n))
        mask = rng.random(n) < 0.9
        for view in (base[:, ::2], base[::-1, ::-2]):  # rows of stride 2 and -2
            copy = np.ascontiguousarray(view)
            np.testing.assert_array_equal(FUNCS[name](view, axis=1), FUNCS[name](copy, axis=1))
            np.testing.assert_array_equal(FUNCS[name](view, axis=1, where=mask),
                                          FUNCS[name](copy, axis=1, where=mask))


# ======================================================================= 4. log1m_softmax
class TestLog1mSoftmax:
    def test_acceptance_float64(self):
        x = np.array([-1000.0, -1000.0, 1000.0])
        out = nl.log1m_softmax(x)
        exact = [v for v, _ in exact_row(x)["log1m_softmax"]]
        with mp.workdps(DPS):
            assert mp.almosteq(exact[2], mp.log(2) - 2000, rel_eps=mp.mpf(10) ** -40)
        for k in range(3):
            assert ulps(out[k], exact[k], np.float64) <= 1.0, (k, out[k], exact[k])
        assert out[0] == 0 and out[1] == 0

    def test_acceptance_float32(self):
        x = np.array([-100.0, -100.0, 100.0], dtype=np.float32)
        out = nl.log1m_softmax(x)
        assert out.dtype == np.float32
        exact = [v for v, _ in exact_row(x)["log1m_softmax"]]
        with mp.workdps(DPS):
            assert mp.almosteq(exact[2], mp.log(2) - 200, rel_eps=mp.mpf(10) ** -40)
        for k in range(3):
            assert ulps(out[k], exact[k], np.float32) <= 1.0, (k, out[k], exact[k])
        assert out[0] == 0 and out[1] == 0

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_length_one_axis_is_minus_inf(self, dtype):
        x = (3 * _rng("len1", _name(dtype)).standard_normal((4, 1, 3))).astype(dtype)
        out = nl.log1m_softmax(x, axis=1)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert np.all(out == -np.inf)
        assert nl.log1m_softmax(dtype(2.5)) == -np.inf
        assert np.all(nl.log1m_softmax(np.array([[1.0, 2.0, -3.0]], dtype), axis=0) == -np.inf)

    NAN_ROWS = {"nan": [1.0, np.nan, 2.0], "pos_inf": [1.0, np.inf, 2.0],
                "all_neg_inf": [-np.inf, -np.inf, -np.inf], "single_nan": [np.nan],
                "single_pos_inf": [np.inf], "single_neg_inf": [-np.inf],
                "two_pos_inf": [np.inf, np.inf, 0.0]}

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("case", NAN_ROWS)
    def test_nan_softmax_row_gives_nan_row(self, case, dtype):
        row = np.array(self.NAN_ROWS[case], dtype=dtype)
        sm, _ = scipy_call("softmax", row, None)
        assert np.isnan(sm).all()  # the premise, live from SciPy
        assert np.isnan(nl.log1m_softmax(row)).all()
        batch = np.stack([row, np.zeros_like(row)])  # only the special row is nan
        out = nl.log1m_softmax(batch, axis=1)
        assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()
        out = nl.log1m_softmax(np.ascontiguousarray(batch.T), axis=0)
        assert np.isnan(out[:, 0]).all() and not np.isnan(out[:, 1]).any()

    @pytest.mark.parametrize("axis", [-1, 0, None])
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_agrees_with_log1p_of_scipy_softmax(self, dtype, axis):
        # log1p(-p) is well conditioned for p <= 1/2; SciPy's p is accurate for moderate x.
        x = (3 * _rng("log1p", _name(dtype), axis).standard_normal((7, 9))).astype(dtype)
        sm, _ = scipy_call("softmax", x, axis)
        with quiet():
            ref = np.log1p(-sm)
        ours = nl.log1m_softmax(x, axis=axis)
        ok = sm <= 0.5
        rtol = 1e-5 if dtype == np.float32 else 1e-13
        bad = value_mismatches(ours[ok], ref[ok], rtol=rtol)
        assert not len(bad), describe(x[ok], ours[ok], ref[ok], bad)

    @pytest.mark.parametrize("scale", [0.1, 3.0, 100.0, 1000.0], ids=lambda s: f"scale{s:g}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_length_two_axis_is_reversed_log_softmax(self, dtype, scale):
        # log(1 - p_0) = log p_1 on a length-2 axis.
        rng = _rng("pair", _name(dtype), scale)
        x = (scale * rng.standard_normal((50, 2))).astype(dtype)
        x[0] = [1.0, 1.0]
        x[1] = [0.0, -scale * 5]
        for axis, data, flip in ((1, x, lambda a: a[:, ::-1]),
                                 (0, np.ascontiguousarray(x.T), lambda a: a[::-1, :])):
            l1m = nl.log1m_softmax(data, axis=axis)
            ls_reversed = flip(nl.log_softmax(data, axis=axis))
            tol = 2 * np.spacing(np.maximum(np.abs(l1m), np.abs(ls_reversed)))
            bad = np.argwhere(~(np.abs(l1m - ls_reversed) <= tol) & ~(l1m == ls_reversed))
            assert not len(bad), describe(data, l1m, ls_reversed, bad)

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_dominant_rows_exhaustive(self, dtype):
        # One entry above 1/2: gaps from 1e-3 to beyond underflow, either side of the sum
        # below which the runner-up pass takes the sum of the others again (KEPT_SUM =
        # 2^-900, a gap of 623.8), each row alone and as a column (the strided kernel).
        gaps = [1e-3, 0.5, 1, 2, 5, 10, 17, 20, 37, 50, 88, 104, 150, 300, 600, 623, 623.8,
                623.9, 624, 650, 700, 720, 740, 745, 746, 1000, 1500]
        failures = []
        for gap in gaps:
            for tail in ([0.0], [0.0, 0.0], [0.0, -1.0, -3.0], [0.0, -gap]):
                for top in (0.0, 1.0, -50.0, 500.0 if dtype == np.float64 else 50.0):
                    row = np.array([top + gap] + [top + t for t in tail], dtype=dtype)
                    for label, out in (("row", nl.log1m_softmax(row)),
                                       ("column", nl.log1m_softmax(row[:, None], axis=0)[:, 0])):
                        failures += accuracy_failures("log1m_softmax", row, None, out,
                                                      f"{label} {row.tolist()}")
        assert not failures, "\n".join(failures[:20])

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_dominant_rows_few_or_many_in_a_tile(self, dtype):
        # A tile of 512 short rows takes its dominant entries' values in a vector loop where
        # a sixteenth of its rows or more have one, else row by row: the same values either
        # way (8 dominant rows of 512, then all 512), runner-up rows (gap 700) included.
        rng = _rng("dominant tile", _name(dtype))
        gaps = np.array([0.7, 2.0, 20.0, 700.0])
        many = rng.standard_normal((512, 10))
        many[:, 0] = many[:, 1:].max(axis=1) + gaps[np.arange(512) % 4]
        picked = np.arange(8) * 64 + np.arange(8) % 4  # every gap, twice
        few = 0.1 * rng.standard_normal((512, 10))
        few[::64] = many[picked]
        many, few = many.astype(dtype), few.astype(dtype)
        out_many, out_few = nl.log1m_softmax(many, axis=-1), nl.log1m_softmax(few, axis=-1)
        assert np.array_equal(out_many[picked], out_few[::64])
        failures = accuracy_failures("log1m_softmax", many[::4], -1, out_many[::4], "many")
        failures += accuracy_failures("log1m_softmax", few[::64], -1, out_few[::64], "few")
        assert not failures, "\n".join(failures[:20])

    @pytest.mark.parametrize("layout", ["row", "column"])
    def test_dominant_entry_of_a_long_slice(self, layout):
        # The dominant entry 1000 above the others: their sum underflows against it, and is
        # taken again against the runner-up. That pass summed in sequence: 38 ulp on a row
        # of 300,000 (cond ~1, bound ~3 ulp), 8 on a column of 65536.
        n = 300_000 if layout == "row" else 65536
        x = np.full(n, -5.0)
        x[1] = x[2] = 0.0
        x[0] = 1000.0
        computed = nl.log1m_softmax(x) if layout == "row" else nl.log1m_softmax(
            np.stack([x, np.zeros(n)], axis=1), axis=0)[:, 0]
        with mp.workdps(DPS):
            others = 2 + (n - 3) * mp.exp(-5)  # the sum over the others, against 0
            exact = mp.log(others) - 1000 - mp.log1p(mp.exp(-1000) * others)
        assert ulps(computed[0], exact, np.float64) <= 3.0, (computed[0], mp.nstr(exact, 20))


# ======================================================================= 5. where=
def _where_case(dtype, shape=(6, 7), seed="where"):
    """(x, w, x_clean): masked entries of x hold garbage (nan, +-inf, huge); x_clean has 0s."""
    rng = _rng(seed, _name(dtype), shape)
    x_clean = (3 * rng.standard_normal(shape)).astype(dtype)
    w = rng.random(shape) < 0.6
    w[2] = False          # a fully masked row
    w[3] = True           # a full row
    w[4] = False
    w[4, 3] = True        # a single live entry
    x_clean[~w] = 0
    garbage = np.resize(np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], dtype=dtype), shape)
    x = np.where(w, x_clean, garbage).astype(dtype)
    return x, w, x_clean


MASKED_VALUE = {"softmax": 0.0, "log_softmax": -np.inf, "log1m_softmax": 0.0}


class TestWhere:
    @pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)], ids=lambda a: f"axis={a}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", FUNCS)
    def test_masked_entries_take_no_part(self, name, dtype, axis):
        x, w, x_clean = _where_case(dtype)
        ours = FUNCS[name](x, axis=axis, where=w)
        assert ours.dtype == x.dtype and ours.shape == x.shape
        np.testing.assert_array_equal(ours, FUNCS[name](x_clean, axis=axis, where=w))
        assert np.all(ours[~w] == MASKED_VALUE[name])

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", FUNCS)
    def test_matches_scipy_on_unmasked_entries(self, name, dtype):
        x, w, _ = _where_case(dtype, seed="unmasked")
        ours = FUNCS[name](x, axis=1, where=w)
        for r in range(x.shape[0]):
            live = x[r, w[r]]
            if not live.size:
                continue
            if name in SCIPY:
                ref, _ = scipy_call(name, live, None)
                eps = np.finfo(dtype).eps
                bad = value_mismatches(ours[r, w[r]], ref, rtol=64 * eps, atol=64 * eps)
                assert not len(bad), f"row {r}:\n" + describe(live, ours[r, w[r]], ref, bad)
            else:
                np.testing.assert_array_equal(ours[r, w[r]], nl.log1m_softmax(live))

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", FUNCS)
    def test_fully_masked_slice(self, name, dtype):
        x, w, _ = _where_case(dtype)
        ours = FUNCS[name](x, axis=1, where=w)
        assert np.all(ours[2] == MASKED_VALUE[name])
        out = FUNCS[name](x, where=np.zeros(x.shape, bool))
        assert np.all(out == MASKED_VALUE[name])

    @pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)], ids=lambda a: f"axis={a}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_matches_jax(self, name, dtype, axis):
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        x, w, _ = _where_case(dtype, seed="jax")
        with quiet():
            ref = np.asarray(getattr(jax.nn, name)(x, axis=axis, where=w))
        ours = FUNCS[name](x, axis=axis, where=w)
        assert ours.dtype == ref.dtype
        eps = np.finfo(dtype).eps
        bad = value_mismatches(ours, ref, rtol=64 * eps, atol=64 * eps)
        assert not len(bad), describe(x, ours, ref, bad)

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_matches_jax_random_masks(self, name, dtype):
        # 12 random (4, 6) problems stacked on axis 0 (one JAX compilation per axis), with
        # mask densities from 0.1 to 0.9 and the first row of each problem fully masked.
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        rng = _rng("jax random", name, _name(dtype))
        x = (5 * rng.standard_normal((12, 4, 6))).astype(dtype)
        w = rng.random((12, 4, 6)) < rng.uniform(0.1, 0.9, size=(12, 1, 1))
        w[:, 0, :] = False
        eps = np.finfo(dtype).eps
        for axis in (-1, 1, (1, 2)):
            with quiet():
                ref = np.asarray(getattr(jax.nn, name)(x, axis=axis, where=w))
            ours = FUNCS[name](x, axis=axis, where=w)
            bad = value_mismatches(ours, ref, rtol=64 * eps, atol=64 * eps)
            assert not len(bad), f"axis {axis}:\n" + describe(x, ours, ref, bad)

    @pytest.mark.parametrize("w_shape", [(1, 7), (6, 1), (7,), ()], ids=str)
    @pytest.mark.parametrize("name", FUNCS)
    def test_broadcast_where(self, name, w_shape):
        rng = _rng("bcast", name, w_shape)
        x = 3 * rng.standard_normal((6, 7))
        w_small = rng.random(w_shape) < 0.6
        if w_small.ndim:
            w_small.flat[0] = True
        w_full = np.broadcast_to(w_small, x.shape).copy()
        for axis in (-1, 0, None):
            # The mask is read in place (a 0-stride view): the vectoriser may sum its row in
            # another order than the contiguous copy's, so the last bit may differ.
            np.testing.assert_allclose(FUNCS[name](x, axis=axis, where=w_small),
                                       FUNCS[name](x, axis=axis, where=w_full),
                                       rtol=2 * np.finfo(x.dtype).eps, atol=0)

    @pytest.mark.parametrize("name", FUNCS)
    def test_where_as_list_and_all_true(self, name):
        x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
        np.testing.assert_array_equal(FUNCS[name](x, axis=1, where=[True, False, True]),
                                      FUNCS[name](x, axis=1, where=np.array([[1, 0, 1]] * 2) == 1))
        np.testing.assert_array_equal(FUNCS[name](x, axis=1, where=np.ones(x.shape, bool)),
                                      FUNCS[name](x, axis=1))

    # ---------------------------------------------------------------- logsumexp(where=)
    @pytest.mark.parametrize("axis", [-1, 0, None], ids=lambda a: f"axis={a}")
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_logsumexp_where_equals_scipy_with_b(self, dtype, axis):
        x, w, x_clean = _where_case(dtype, seed="lse")
        with quiet():
            ref = special.logsumexp(x_clean, axis=axis, b=w.astype(dtype))
        ours = nl.logsumexp(x, axis=axis, where=w)  # garbage in the masked entries
        assert np.shape(ours) == np.shape(ref) and ours.dtype == ref.dtype
        eps = np.finfo(dtype).eps
        bad = value_mismatches(ours, ref, rtol=16 * eps, atol=16 * eps)
        assert not len(bad), describe(np.zeros(np.shape(ref)), ours, ref, bad)
        if axis == -1:
            assert ours[2] == -np.inf

    def test_logsumexp_where_broadcast_and_fully_masked(self):
        x = 3 * _rng("lse bcast").standard_normal((5, 4))
        w = np.array([[True, False, True, True]])
        with quiet():
            ref = special.logsumexp(x, axis=1, b=np.broadcast_to(w, x.shape).astype(float))
        np.testing.assert_allclose(nl.logsumexp(x, axis=1, where=w), ref, rtol=1e-14)
        assert nl.logsumexp(x, where=np.zeros(x.shape, bool)) == -np.inf
        out = nl.logsumexp(x, axis=0, where=np.array([[True], [False], [False], [False], [False]]))
        np.testing.assert_array_equal(out, x[0])

    # ---------------------------------------------------------------- bad where
    @pytest.mark.parametrize("bad", [np.ones((3, 4), np.int64), np.ones((3, 4), np.float64),
                                     np.ones((3, 4), np.uint8), [[1, 0, 1, 0]]],
                             ids=["int64", "float64", "uint8", "list_of_ints"])
    @pytest.mark.parametrize("name", [*FUNCS, "logsumexp"])
    def test_non_boolean_where(self, name, bad):
        fn = nl.logsumexp if name == "logsumexp" else FUNCS[name]
        with pytest.raises(TypeError, match=re.escape(np.asarray(bad).dtype.name)):
            fn(np.ones((3, 4)), where=bad)

    @pytest.mark.parametrize("w_shape", [(3,), (4, 1), (2, 3, 4)], ids=str)
    @pytest.mark.parametrize("name", [*FUNCS, "logsumexp"])
    def test_non_broadcastable_where(self, name, w_shape):
        fn = nl.logsumexp if name == "logsumexp" else FUNCS[name]
        x_shape = (3, 4)
        with pytest.raises(ValueError) as info:
            fn(np.ones(x_shape), where=np.ones(w_shape, bool))
        assert str(w_shape) in str(info.value) and str(x_shape) in str(info.value), info.value


# ======================================================================= 6. bad input
UNSUPPORTED = {
    "object": np.array([1.0, 2.0], dtype=object),
    "str": np.array(["a", "b"]),
    "bytes": np.array([b"a", b"b"]),
    "datetime64": np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"),
    "timedelta64": np.array([1, 2], dtype="timedelta64[s]"),
    "longdouble": np.array([1.0, 2.0], dtype=np.longdouble),
    "complex64": np.array([1 + 1j, 2.0], dtype=np.complex64),
    "complex128": np.array([1 + 1j, 2.0], dtype=np.complex128),
    "clongdouble": np.array([1 + 1j, 2.0], dtype=np.clongdouble),
}


class TestBadInput:
    @pytest.mark.parametrize("axis", [2, -3, (0, 2), (-3, 1)], ids=str)
    @pytest.mark.parametrize("name", FUNCS)
    def test_axis_out_of_range(self, name, axis):
        x = np.ones((3, 4))
        if name in SCIPY:
            with pytest.raises(AxisError), quiet():
                SCIPY[name](x, axis=axis)
        with pytest.raises(AxisError):
            FUNCS[name](x, axis=axis)

    @pytest.mark.parametrize("axis", [(0, 0), (1, -1), (0, 1, 0)], ids=str)
    @pytest.mark.parametrize("name", FUNCS)
    def test_repeated_axis(self, name, axis):
        x = np.ones((3, 4))
        if name in SCIPY:
            with pytest.raises(ValueError), quiet():
                SCIPY[name](x, axis=axis)
        with pytest.raises(ValueError):
            FUNCS[name](x, axis=axis)

    @pytest.mark.parametrize("axis", [1.0, "0", (0, 1.5), True, np.float64(0)], ids=repr)
    @pytest.mark.parametrize("name", FUNCS)
    def test_non_integer_axis(self, name, axis):
        x = np.ones((3, 4))
        if name in SCIPY:
            with pytest.raises(TypeError), quiet():
                SCIPY[name](x, axis=axis)
        with pytest.raises(TypeError):
            FUNCS[name](x, axis=axis)

    @pytest.mark.parametrize("case", UNSUPPORTED)
    @pytest.mark.parametrize("name", FUNCS)
    def test_unsupported_dtype(self, name, case):
        x = UNSUPPORTED[case]
        if case == "longdouble" and x.dtype == np.float64:
            pytest.skip("long double is double on this platform")
        if case == "clongdouble" and x.dtype == np.complex128:
            pytest.skip("long double is double on this platform")
        with pytest.raises(TypeError, match=re.escape(x.dtype.name)):
            FUNCS[name](x)
        with pytest.raises(TypeError, match=re.escape(x.dtype.name)):
            FUNCS[name](x, axis=0, where=np.ones(x.shape, bool))


# ======================================================================= 7. properties
FINITE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)


@st.composite
def array_and_axis(draw, elements=FINITE):
    x = draw(hnp.arrays(np.float64, SHAPES, elements=elements))
    axis = draw(st.one_of(
        st.none(), st.integers(-x.ndim, x.ndim - 1),
        st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True).map(tuple)))
    return x, axis


def _slice_size(x, axis):
    return as_rows(x, axis).shape[1]


# Multiples of 2**-20 in [-1e3, 1e3]: x + c and x_i - x_j are exact for integer |c| <= 100.
GRID = st.integers(-1000 * 2**20, 1000 * 2**20).map(lambda k: k / 2**20)


class TestProperties:
    @PROPERTY
    @given(array_and_axis())
    def test_exp_log_softmax_is_softmax(self, case):
        x, axis = case
        sm = nl.softmax(x, axis=axis)
        ls = nl.log_softmax(x, axis=axis)
        big = sm > 1e-300
        np.testing.assert_allclose(np.exp(ls[big]), sm[big], rtol=1e-13, atol=0)

    @PROPERTY
    @given(array_and_axis())
    def test_softmax_sums_to_one(self, case):
        x, axis = case
        n = _slice_size(x, axis)
        total = np.sum(nl.softmax(x, axis=axis), axis=axis)
        assert np.all(np.abs(total - 1) <= n * np.finfo(np.float64).eps), (total, n)

    @PROPERTY
    @given(array_and_axis(elements=GRID), st.integers(-100, 100))
    def test_shift_invariance_exact(self, case, c):
        # With x + c exact, every x_i - max(x) is the same float: results must be identical.
        x, axis = case
        for name, fn in FUNCS.items():
            np.testing.assert_array_equal(fn(x + c, axis=axis), fn(x, axis=axis), err_msg=name)

    @PROPERTY
    @given(array_and_axis(), st.floats(-100, 100))
    def test_shift_invariance_rounded(self, case, c):
        # x + c rounds: each x_i + c moves by <= u (X + |c|) (X = max |x|), and each x_i - max
        # is rounded in both computations (<= 2 u (X + |c|) each), so every x_i - max moves by
        # <= 6 u (X + |c|): softmax_i by twice that relatively, log_softmax_i absolutely.
        x, axis = case
        u = np.finfo(np.float64).eps / 2
        tol = 16 * u * (np.max(np.abs(x)) + abs(c)) + 16 * u
        sm0, sm1 = nl.softmax(x, axis=axis), nl.softmax(x + c, axis=axis)
        big = sm0 > 1e-290
        np.testing.assert_allclose(sm1[big], sm0[big], rtol=tol, atol=0)
        np.testing.assert_allclose(nl.log_softmax(x + c, axis=axis), nl.log_softmax(x, axis=axis),
                                   rtol=0, atol=tol)

    @PROPERTY
    @given(array_and_axis())
    def test_log1m_is_log1p_minus_softmax_where_p_le_half(self, case):
        x, axis = case
        sm = nl.softmax(x, axis=axis)
        l1m = nl.log1m_softmax(x, axis=axis)
        ok = sm <= 0.5
        np.testing.assert_allclose(l1m[ok], np.log1p(-sm[ok]), rtol=4 * np.finfo(float).eps,
                                   atol=0)
        assert np.all(l1m <= 0)

    @PROPERTY
    @given(array_and_axis())
    def test_agrees_with_scipy(self, case):
        x, axis = case
        for name in SCIPY:
            check_against_scipy(name, x, axis, f"{name} axis={axis}")

    @PROPERTY
    @given(array_and_axis())
    def test_agrees_with_torch(self, case):
        torch = pytest.importorskip("torch")
        x, axis = case
        dim = axis if isinstance(axis, int) else -1
        t = torch.from_numpy(x)
        ref_sm = torch.softmax(t, dim=dim).numpy()
        ref_ls = torch.log_softmax(t, dim=dim).numpy()
        ours_sm, ours_ls = nl.softmax(x, axis=dim), nl.log_softmax(x, axis=dim)
        np.testing.assert_allclose(ours_sm, ref_sm, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(ours_ls, ref_ls, rtol=1e-12,
                                   atol=1e-14 * (1 + np.max(np.abs(x))))


class TestTorchSeedDemo:
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_exp_log_softmax_equals_softmax_randn_2_3(self, dtype):
        torch = pytest.importorskip("torch")
        torch.manual_seed(2)
        t = torch.randn(2, 3, dtype=getattr(torch, dtype))
        # The demonstration itself, in torch:
        assert torch.allclose(torch.exp(torch.log_softmax(t, dim=-1)), torch.softmax(t, dim=-1))
        x = t.numpy()
        sm, ls = nl.softmax(x, axis=-1), nl.log_softmax(x, axis=-1)
        assert sm.dtype == ls.dtype == x.dtype
        rtol = 4e-7 if dtype == "float32" else 1e-15
        np.testing.assert_allclose(np.exp(ls.astype(np.float64)), sm, rtol=rtol)
        np.testing.assert_allclose(sm, torch.softmax(t, dim=-1).numpy(), rtol=rtol)
        np.testing.assert_allclose(ls, torch.log_softmax(t, dim=-1).numpy(), rtol=rtol)
        np.testing.assert_allclose(sm.sum(axis=-1), 1, rtol=rtol)
