"""Independent test suite: ``numba_lse.logsumexp`` must match ``scipy.special.logsumexp``.

Every expected value comes from a *live* call to SciPy.  Values are compared with a
tolerance derived from the conditioning of the sum (see ``_tolerance``); everything
else a user can see -- result type (NumPy scalar vs ndarray), dtype, shape, positions
of nan/+inf/-inf and the sign output -- must match SciPy exactly.
"""
import itertools
import re
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from numpy.exceptions import AxisError
from scipy.special import logsumexp as scipy_logsumexp

from numba_lse import logsumexp as lse

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_,
          np.complex64, np.complex128]
SHAPES = [(), (5,), (3, 4), (2, 3, 4), (2, 1, 3, 5)]
B_KINDS = ["none", "same", "bcast", "trailing", "larger", "zeros", "negative"]
SPECIAL = [-np.inf, np.inf, np.nan, 0.0, 1.0, -1000.0, 1000.0, 1e308, -1e308]


def _rng(*key):
    """A deterministic RNG per test case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _name(dtype):
    return np.dtype(dtype).name


# --------------------------------------------------------------------------- helpers
def _tolerance(a, b, axis, keepdims, eps, k):
    """Absolute error bound per output element, and a mask of ill-conditioned outputs.

    A correct implementation (SciPy's included) has an error of a few eps times
    |max(a)| (+ |imag(a)| for complex input) plus the relative error of the sum,
    which is ~eps * log2(n) times cond = sum|b e^a| / |sum b e^a|.  Outputs whose sum
    is so ill-conditioned that even the sign is unreliable are flagged as ``ill``.
    """
    A = np.asarray(a)
    B = np.ones(()) if b is None else np.asarray(b)
    A, B = np.broadcast_arrays(A, B)
    if A.ndim == 0:
        A, B = A.reshape(1), B.reshape(1)
    A, B = A.astype(np.complex128), B.astype(np.complex128)
    axes = tuple(range(A.ndim)) if axis is None else tuple(
        int(ax) % A.ndim for ax in np.atleast_1d(axis))
    n = max(int(np.prod([A.shape[ax] for ax in axes])), 1)
    with np.errstate(all="ignore"):
        live = (B != 0) & np.isfinite(A)
        amax = np.max(np.where(live, A.real, -np.inf), axis=axes, keepdims=True,
                      initial=-np.inf)
        amax = np.where(np.isfinite(amax), amax, 0.0)
        imag = np.max(np.where(live, np.abs(A.imag), 0.0), axis=axes, keepdims=True,
                      initial=0.0)
        terms = np.where(live, B * np.exp(A - amax), 0)
        P = np.sum(np.abs(terms), axis=axes, keepdims=True)
        Q = np.abs(np.sum(terms, axis=axes, keepdims=True))
        growth = np.where(P == 0, 1.0, P / Q) * (1 + np.log2(n))
        tol = k * eps * (np.abs(amax) + imag + growth)
        ill = k * eps * growth > 0.1
    if not keepdims:
        tol, ill = np.squeeze(tol, axis=axes), np.squeeze(ill, axis=axes)
    return tol, ill


def _assert_values(res, ref, tol, rtol, ctx, ill=None, describe=None):
    """nan / +inf / -inf at the same places, finite values within tol + rtol*|ref|."""
    res, ref = np.asarray(res), np.asarray(ref)
    tol = np.broadcast_to(tol, ref.shape)
    keep = np.ones(ref.shape, bool) if ill is None else ~np.broadcast_to(ill, ref.shape)
    parts = ([("real part", res.real, ref.real), ("imag part", res.imag, ref.imag)]
             if ref.dtype.kind == "c" else [("value", res, ref)])
    for part, x, y in parts:
        x, y = x.astype(np.float64), y.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bound = tol + rtol * np.abs(y)
            close = np.isfinite(x) & np.isfinite(y) & (np.abs(x - y) <= bound)
        same_special = (np.isnan(x) & np.isnan(y)) | (np.isinf(y) & (x == y))
        bad = keep & ~(close | same_special)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            where = f" at index {idx}" if ref.ndim else ""
            inp = f" (input {describe(idx)})" if describe else ""
            allowed = f", allowed error {bound[idx]:.3g}" if np.isfinite(bound[idx]) else ""
            got, want = (v.real[idx] if part != "imag part" else v.imag[idx] for v in (res, ref))
            raise AssertionError(
                f"{ctx}: {part} differs{where}{inp}: numba_lse={got!r}, scipy={want!r}"
                f"{allowed} [{int(bad.sum())} of {bad.size} elements differ]")


def _assert_structure(res, ref, ctx):
    assert type(res) is type(ref), (
        f"{ctx}: scipy returns {type(ref).__name__}, numba_lse returns "
        f"{type(res).__name__} (NumPy scalar vs ndarray must match)")
    assert res.dtype == ref.dtype, f"{ctx}: dtype {res.dtype}, scipy gives {ref.dtype}"
    assert res.shape == ref.shape, f"{ctx}: shape {res.shape}, scipy gives {ref.shape}"


def scipy_lse(a, axis=None, b=None, keepdims=False, return_sign=False):
    """SciPy's logsumexp, with numba_lse's documented departures applied.

    Both are where SciPy's fallback log(sum(b * exp(a))) takes over from its accurate path
    (whenever that path's result is not finite), and numba_lse keeps the exact answer:
    * a zero weight drops its term always: SciPy's accurate path sets such a to -inf, but its
      fallback computes 0 * inf = nan when that a is inf or nan. The reference sets them to
      -inf before calling SciPy;
    * the fallback overflows (exp(1000) = inf: inf - inf = nan where weights cancel) or
      underflows (-1 * exp(-1000) = -0: log gives -inf for a negative sum). The reference
      calls SciPy on a shifted by the largest finite a of each reduction, and adds it back:
      the same sum, in SciPy's own arithmetic, without the overflow;
    * +inf entries are ties at the max: the result is +inf with the sign of the sum of their
      weights, nan if that sum is 0 (or a nan is present), as SciPy's accurate path has it;
      SciPy's fallback computes inf - inf = nan for any mixed signs.
    """
    plain = (not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray)  # (weak scalars)
             or a.dtype.kind != "f" or b.dtype.kind == "c"
             or not np.prod(np.broadcast_shapes(a.shape, b.shape)))
    if plain:
        return scipy_logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    a, b = np.broadcast_arrays(np.atleast_1d(a), np.atleast_1d(b))  # 0-d is 1-d, as SciPy
    a = np.where(b == 0, -np.inf, a).astype(a.dtype)
    with np.errstate(invalid="ignore"):
        shift = np.max(np.where(np.isfinite(a), a, -np.inf), axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0).astype(a.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        value, sign = scipy_logsumexp(a - shift, axis=axis, b=b, keepdims=True, return_sign=True)
        value = np.asarray(value + shift)
        sign = np.asarray(sign)
    at_inf = a == np.inf
    inf_weight = np.sum(np.where(at_inf, b, 0), axis=axis, keepdims=True)
    has_nan = np.any(np.isnan(a) | np.isnan(b), axis=axis, keepdims=True)
    ties_at_inf = np.any(at_inf, axis=axis, keepdims=True) & ~has_nan
    value = np.where(ties_at_inf, np.where(inf_weight != 0, np.inf, np.nan), value).astype(value.dtype)
    sign = np.where(ties_at_inf, np.sign(inf_weight), sign).astype(sign.dtype)
    sign = np.where(ties_at_inf & (inf_weight == 0), np.nan, sign).astype(sign.dtype)
    if not return_sign:
        # (-inf with sign -1 is SciPy's empty reduction, not a negative sum.)
        value = np.where((sign < 0) & (value != -np.inf), np.nan, value).astype(value.dtype)
    if not keepdims:
        axes = tuple(range(a.ndim)) if axis is None else axis
        value, sign = np.squeeze(value, axis=axes), np.squeeze(sign, axis=axes)
    value, sign = value[()] if value.ndim == 0 else value, sign[()] if sign.ndim == 0 else sign
    return (value, sign) if return_sign else value


def check_against_scipy(a, *, axis=None, b=None, keepdims=False, return_sign=False,
                        ctx="", k=None, mask_ill=True, describe=None):
    """Compare one call with the live SciPy call; raises AssertionError with context."""
    kw = dict(axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    ctx = ctx or f"a={a!r}, {kw}"
    with np.errstate(all="ignore"):
        ref = scipy_lse(a, **kw)
    res = lse(a, **kw)
    if return_sign:
        assert isinstance(res, tuple) and len(res) == 2, (
            f"{ctx}: return_sign=True must give a (value, sign) tuple, got {type(res)}")
        (val, sgn), (ref_val, ref_sgn) = res, ref
        _assert_structure(sgn, ref_sgn, ctx + " [sign]")
    else:
        val, ref_val = res, ref
    _assert_structure(val, ref_val, ctx + " [value]")
    eps = float(np.finfo(ref_val.dtype).eps)
    k = k or (8 if ref_val.dtype == np.float16 else 4)
    tol, ill = _tolerance(a, b, axis, keepdims, eps, k)
    ill = ill if mask_ill else None
    _assert_values(val, ref_val, tol, k * eps, ctx, ill, describe)
    if return_sign:
        exact = ref_sgn.dtype.kind != "c"  # real signs are exactly -1, 0, +1 or nan
        _assert_values(sgn, ref_sgn, 0.0 if exact else tol, 0.0, ctx + " [sign]", ill,
                       describe)
    return res, ref


def _axes(ndim):
    """None, every int axis, every negative axis, pairs (some negative), all axes."""
    out = [None, *range(ndim), *range(-ndim, 0)]
    out += [(i, j - ndim) if (i + j) % 2 else (i, j)
            for i, j in itertools.combinations(range(ndim), 2)]
    out += [tuple(range(ndim)), tuple(reversed(range(ndim)))]
    return list(dict.fromkeys(out))


def _make_a(rng, shape, dtype):
    kind = np.dtype(dtype).kind
    if kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    if kind in "iu":
        return np.asarray(rng.integers(-5, 6, size=shape), dtype=dtype)
    x = 3 * rng.standard_normal(shape)
    if kind == "c":
        x = x + 3j * rng.standard_normal(shape)
    return np.asarray(x, dtype=dtype)


def _make_b(rng, kind, shape, dtype):
    if kind == "none":
        return None
    bshape = {"bcast": tuple(1 if i % 2 == 0 else d for i, d in enumerate(shape)),
              "trailing": shape[1:], "larger": (2, *shape)}.get(kind, shape)
    bdtype = dtype if np.dtype(dtype).kind in "fc" else np.int64
    if bdtype == np.int64:
        lo = {"zeros": 0, "negative": -3}.get(kind, 1)
        return rng.integers(lo, 4, size=bshape)
    b = rng.uniform(-2 if kind == "negative" else 0.5, 2, size=bshape)
    if kind == "zeros":
        b = np.where(rng.random(bshape) < 0.4, 0.0, b)
    if kind == "negative" and np.dtype(dtype).kind == "c":
        b = b + 1j * rng.uniform(-2, 2, size=bshape)
    return np.asarray(b, dtype=bdtype)


# --------------------------------------------------------------------------- 1. semantics
class TestSemanticsGrid:
    @pytest.mark.parametrize("bkind", B_KINDS)
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("dtype", DTYPES, ids=_name)
    def test_matches_scipy(self, dtype, shape, bkind):
        rng = _rng(_name(dtype), shape, bkind)
        a = _make_a(rng, shape, dtype)
        b = _make_b(rng, bkind, shape, dtype)
        ndim = max(len(np.broadcast_shapes(shape, np.shape(b) if b is not None else ())), 1)
        errors, combos = [], list(itertools.product(_axes(ndim), (False, True), (False, True)))
        for axis, keepdims, return_sign in combos:
            ctx = (f"dtype={_name(dtype)} shape={shape} b={bkind} axis={axis} "
                   f"keepdims={keepdims} return_sign={return_sign}")
            try:
                check_against_scipy(a, axis=axis, b=b, keepdims=keepdims,
                                    return_sign=return_sign, ctx=ctx)
            except Exception as exc:  # collect every failing combination
                errors.append(f"{type(exc).__name__}: {exc}" if not
                              isinstance(exc, AssertionError) else str(exc))
        assert not errors, (f"{len(errors)} of {len(combos)} combinations differ:\n"
                            + "\n".join(errors[:12]))

    PROMOTION = {
        "f32-pyint": (np.float32, 2), "f32-pyfloat": (np.float32, 2.5),
        "f32-pycomplex": (np.float32, 1 + 1j), "f32-i64": (np.float32, np.int64),
        "f32-i32": (np.float32, np.int32), "f32-i8": (np.float32, np.int8),
        "f32-bool": (np.float32, np.bool_), "f32-np.float64": (np.float32, np.float64(2.0)),
        "f32-np.float32": (np.float32, np.float32(2.0)), "f32-0d-f64": (np.float32, np.array(2.0)),
        "f16-f32": (np.float16, np.float32), "f16-pyint": (np.float16, 3),
        "f16-i8": (np.float16, np.int8), "i8-f16": (np.int8, np.float16),
        "i32-f16": (np.int32, np.float16), "i64-f32": (np.int64, np.float32),
        "i32-pyint": (np.int32, 2), "i32-pyfloat": (np.int32, 2.5),
        "bool-bool": (np.bool_, np.bool_), "u8-none": (np.uint8, None),
        "i16-none": (np.int16, None), "u64-none": (np.uint64, None),
        "f64-c64": (np.float64, np.complex64), "c64-f64": (np.complex64, np.float64),
        "c64-f32": (np.complex64, np.float32), "pyfloat-f32": (3.0, np.float32),
        "list-f32": ([1, 2, 3, 4], np.float32), "list-pyfloat": ([1, 2, 3, 4], 0.5),
    }

    @pytest.mark.parametrize("case", PROMOTION)
    @pytest.mark.parametrize("axis", [None, -1])
    def test_mixed_dtype_promotion(self, case, axis):
        a_spec, b_spec = self.PROMOTION[case]
        a = (np.array([1, 0, 3, 2], dtype=a_spec) if isinstance(a_spec, type) else a_spec)
        b = (np.array([1, 2, 1, 3], dtype=b_spec) if isinstance(b_spec, type) else b_spec)
        check_against_scipy(a, b=b, axis=axis, ctx=f"promotion {case} axis={axis}")


# --------------------------------------------------------------------------- 2. layouts
def _readonly(x):
    x = x.copy()
    x.setflags(write=False)
    return x


VIEWS = {
    "strided_cols": lambda x: x[:, ::2], "strided_both": lambda x: x[1::2, ::3],
    "transposed": lambda x: x.T, "fortran": np.asfortranarray,
    "reversed_rows": lambda x: x[::-1], "reversed_cols": lambda x: x[:, ::-1],
    "reversed_strided": lambda x: x[::-1, ::-2], "readonly": _readonly,
    "broadcast_row": lambda x: np.broadcast_to(x[0], x.shape),
    "broadcast_col": lambda x: np.broadcast_to(x[:, :1], x.shape),
    "3d_transposed": lambda x: x.reshape(4, 3, 8).transpose(2, 0, 1),
    "3d_strided": lambda x: x.reshape(4, 3, 8)[::-1, ::2, 1::3],
}


class TestLayouts:
    @pytest.mark.parametrize("with_b", [False, True], ids=["no_b", "b_view"])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128], ids=_name)
    @pytest.mark.parametrize("view", VIEWS)
    def test_views_match_scipy(self, view, dtype, with_b):
        rng = _rng("layout", view, _name(dtype), with_b)
        a = VIEWS[view](_make_a(rng, (12, 8), dtype))
        b = VIEWS[view](_make_b(rng, "zeros", (12, 8), dtype)) if with_b else None
        for axis, return_sign in itertools.product(_axes(a.ndim), (False, True)):
            check_against_scipy(a, axis=axis, b=b, return_sign=return_sign,
                                ctx=f"view={view} dtype={_name(dtype)} b={with_b} "
                                    f"axis={axis} return_sign={return_sign}")

    @pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2", ">i4", ">c16"])
    def test_other_byte_order_as_scipy(self, dtype):
        """Data in the other byte order (big-endian FITS files, network order): SciPy computes
        it and returns results in the machine's order, as numba_lse must; and its bits are
        those of the same data in the machine's order."""
        rng = _rng("byte order", dtype)
        native = np.dtype(dtype).newbyteorder("=")
        a = _make_a(rng, (6, 7), native)
        a[0, 0], a[1, 1], a[2] = np.inf if native.kind in "fc" else 9, 0, a[2, 0]
        # Weights of a's own dtype where it is floating (float32 data with float64 weights
        # is not this test's question: ``scipy_lse`` subtracts its shift in float32 there).
        b_dtype = np.dtype(dtype) if native.kind == "f" else np.dtype(">f8")
        b = rng.uniform(-1, 2, (6, 7)).astype(b_dtype.newbyteorder("="))
        for axis, use_b in itertools.product([None, 0, 1, (0, 1)], [False, True]):
            ctx = f"dtype={dtype} axis={axis} b={use_b}"
            big_a, big_b = a.astype(dtype), b.astype(b_dtype) if use_b else None
            check_against_scipy(big_a, axis=axis, b=big_b, return_sign=use_b, ctx=ctx)
            got = lse(big_a, axis=axis, b=big_b, return_sign=use_b)
            want = lse(a, axis=axis, b=b if use_b else None, return_sign=use_b)
            for g, w in zip(got if use_b else (got,), want if use_b else (want,)):
                assert g.dtype.isnative and g.dtype == w.dtype, ctx
                assert np.asarray(g).tobytes() == np.asarray(w).tobytes(), ctx

    @pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128, np.int64],
                             ids=_name)
    def test_inputs_never_written(self, dtype):
        rng = _rng("nowrite", _name(dtype))
        a = _make_a(rng, (6, 7), dtype)
        if a.dtype.kind in "fc":
            a[0, 0], a[1, 2], a[2, 3], a[3, 4] = np.nan, np.inf, -np.inf, np.inf
        b = rng.uniform(-1, 2, (6, 7))
        b[0, 0] = b[1, 2] = b[4, 4] = 0.0
        a0, b0 = a.copy(), b.copy()
        for axis, keepdims, rs, use_b in itertools.product(
                [None, 0, 1, (0, 1)], [False, True], [False, True], [False, True]):
            ctx = f"axis={axis} keepdims={keepdims} return_sign={rs} b={use_b}"
            out = lse(a, axis=axis, b=b if use_b else None, keepdims=keepdims,
                      return_sign=rs)
            np.testing.assert_array_equal(a, a0, err_msg=f"{ctx}: a was modified")
            np.testing.assert_array_equal(b, b0, err_msg=f"{ctx}: b was modified")
            for o in (out if rs else (out,)):
                assert not np.may_share_memory(o, a) and not np.may_share_memory(o, b), (
                    f"{ctx}: result shares memory with an input")


# --------------------------------------------------------------------------- 3. python input
class TestPythonInputs:
    CASES = {
        "float": (3.0, {}), "int": (3, {}), "bool": (True, {}),
        "np_float32_scalar": (np.float32(2.5), {}), "list_int": ([1, 2, 3], {}),
        "list_float": ([0.5, -1.5, 2.0], {}), "tuple": ((1.0, 2.0), {}),
        "nested_axis1": ([[1, 2], [3, 4]], {"axis": 1}),
        "nested_axis0_keepdims": ([[1, 2], [3, 4]], {"axis": 0, "keepdims": True}),
        "list_b": ([1.0, 2.0, 3.0], {"b": [0.5, 0.0, 2.0]}),
        "list_b_signed": ([1.0, 2.0], {"b": [1, -1], "return_sign": True}),
        "scalar_b": ([1.0, 2.0], {"b": 3}),
        "nested_list_b_broadcast": ([[1, 2], [3, 4]], {"b": [[1], [2]], "axis": 1}),
        "scalar_a_list_b": (0.5, {"b": [1, 2, 3]}),
        "0d_keepdims": (np.array(3.0), {"keepdims": True}),
        "0d_axis0": (np.array(3.0), {"axis": 0}),
        "0d_axis_tuple": (np.array(3.0), {"axis": (-1,), "return_sign": True}),
    }

    @pytest.mark.parametrize("case", CASES)
    def test_python_input(self, case):
        a, kw = self.CASES[case]
        check_against_scipy(a, ctx=f"{case}: a={a!r} {kw}", **kw)


# --------------------------------------------------------------------------- 4. special values
class TestSpecialValues:
    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("length", [1, 2, 3])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_name)
    def test_special_grid(self, dtype, length, return_sign):
        with np.errstate(over="ignore"):  # 1e308 -> inf in float32, like the user would get
            A = np.array(list(itertools.product(SPECIAL, repeat=length)), dtype=dtype)
        describe = lambda idx: f"row {A[idx[0]].tolist()}"  # noqa: E731
        for data, axis in ((A, -1), (A.T, 0)):
            check_against_scipy(data, axis=axis, return_sign=return_sign, mask_ill=False,
                                ctx=f"special {_name(dtype)} axis={axis}", describe=describe)

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("length", [1, 2])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_name)
    def test_special_grid_with_weights(self, dtype, length, return_sign):
        rows = list(itertools.product(itertools.product(SPECIAL, repeat=length),
                                      itertools.product([1.0, -1.0, 0.0, 0.5], repeat=length)))
        with np.errstate(over="ignore"):
            A = np.array([r[0] for r in rows], dtype=dtype)
        B = np.array([r[1] for r in rows], dtype=dtype)
        describe = lambda idx: f"a={A[idx[0]].tolist()}, b={B[idx[0]].tolist()}"  # noqa: E731
        for (data, w), axis in (((A, B), -1), ((A.T, B.T), 0)):
            check_against_scipy(data, b=w, axis=axis, return_sign=return_sign,
                                mask_ill=False, describe=describe,
                                ctx=f"special+b {_name(dtype)} axis={axis}")

    # Rows (a, b) with infinite weights: each term b_i e^(a_i) is infinite where its weight
    # is and a_i > -inf; the sum is inf, nan where infinities of both signs meet, or an
    # infinite weight meets a -inf entry (inf 0) or a nan.
    INFINITE_WEIGHTS = [
        ([1.0, 2.0, 0.0], [np.inf, np.inf, 1.0]),
        ([1.0, 2.0, 0.0], [-np.inf, -np.inf, 1.0]),
        ([1.0, 2.0, 0.0], [np.inf, -np.inf, 1.0]),
        ([1000.0, 1.0, 0.0], [1.0, np.inf, 1.0]),  # e^(1 - 1000) underflows; the term is inf
        ([2.0, 2.0, 0.0], [np.inf, 1.0, 1.0]),  # at the max (a tie)
        ([-np.inf, 2.0, 0.0], [np.inf, 1.0, 1.0]),
        ([np.nan, 2.0, 0.0], [np.inf, 1.0, 1.0]),
        ([np.inf, 2.0, 0.0], [1.0, np.inf, 1.0]),
        ([np.inf, 2.0, 0.0], [-1.0, np.inf, 1.0]),
        ([1.0, 2.0, 0.0], [0.0, np.inf, 1.0]),
    ]

    @pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_name)
    def test_infinite_weights_as_scipy(self, dtype):
        """SciPy's results (live), with the sign, wherever the term lies: along rows, down
        columns, in another chunk of a long row, or in a partial merged by the accumulator."""
        A = np.array([a for a, _ in self.INFINITE_WEIGHTS], dtype=dtype)
        B = np.array([b for _, b in self.INFINITE_WEIGHTS], dtype=dtype)
        with np.errstate(all="ignore"):
            want, want_sign = scipy_logsumexp(A, b=B, axis=1, return_sign=True)
        for got, got_sign in (lse(A, b=B, axis=1, return_sign=True),
                              lse(A.T, b=B.T, axis=0, return_sign=True)):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_sign, want_sign)
        # The same terms far apart in a long row (zero-weighted padding between them), and
        # each term of a row in an accumulator of its own, merged.
        from numba_lse import LogSumExpAccumulator
        from numba_lse.cpu.reduce import CHUNK
        for (a, b), value, sign in zip(self.INFINITE_WEIGHTS, want, want_sign):
            long_a, long_b = np.zeros(3 * CHUNK, dtype), np.zeros(3 * CHUNK, dtype)
            long_a[[0, CHUNK + 5, 3 * CHUNK - 1]], long_b[[0, CHUNK + 5, 3 * CHUNK - 1]] = a, b
            got = lse(long_a, b=long_b, return_sign=True)
            merged = LogSumExpAccumulator()
            for i in range(3):
                merged.merge(LogSumExpAccumulator().update(np.array(a[i:i + 1], dtype),
                                                           b=np.array(b[i:i + 1], dtype)))
            for g in (got, merged.result(return_sign=True)):
                np.testing.assert_array_equal(np.array(g), np.array([value, sign]), err_msg=f"{a} {b}")

    def test_infinite_weights_where_scipys_fallback_fails(self):
        """The documented departures (``scipy_lse``), with infinite weights: where SciPy's
        fallback computes -inf e^(-1000) = -inf 0 = nan (its exp underflows), -e^1000 + inf
        = -inf + inf = nan (its exp overflows), or 0 e^inf = nan (a zero weight's term,
        which its accurate path drops), the exact sum is infinite. And entries all -inf
        give -inf whatever their weights."""
        assert lse([1.0, -1000.0], b=[1.0, -np.inf], return_sign=True) == (np.inf, -1.0)
        assert lse([1.0, -1000.0], b=[0.0, np.inf]) == np.inf
        assert lse([1000.0, 1.0, 0.0], b=[-1.0, np.inf, 1.0], return_sign=True) == (np.inf, 1.0)
        assert lse([np.inf, 2.0, 0.0], b=[0.0, np.inf, 1.0], return_sign=True) == (np.inf, 1.0)
        # Entries all -inf give -inf whatever their weights (SciPy: inf * 0 = nan for an
        # infinite one), as finite weights whose sum overflows must.
        assert lse([-np.inf, -np.inf], b=[np.inf, 1.0], return_sign=True) == (-np.inf, 0.0)
        assert lse([-np.inf, -np.inf], b=[1e308, 1e308], return_sign=True) == (-np.inf, 0.0)

    NAMED = {
        "all_neginf": ([-np.inf, -np.inf, -np.inf], None),
        "single_neginf": ([-np.inf], None),
        "posinf_present": ([1.0, np.inf, -2.0], None),
        "two_posinf": ([np.inf, np.inf], None),
        "nan_present": ([1.0, np.nan, 2.0], None),
        "nan_and_inf": ([np.nan, np.inf], None),
        "inf_and_neginf": ([np.inf, -np.inf], None),
        "b0_drops_nan": ([1.0, np.nan], [1, 0]),
        "b0_drops_inf": ([1.0, np.inf], [1, 0]),
        "b0_everywhere": ([1.0, 2.0], [0, 0]),
        "b0_everywhere_nonfinite": ([np.inf, np.nan, 1.0], [0, 0, 0]),
        "negative_total": ([1.0, 2.0], [1, -1]),
        "exact_cancellation": ([0.0, 0.0], [1, -1]),
        "inf_negative_weight": ([np.inf], [-1]),
        "inf_minus_inf": ([np.inf, np.inf], [1, -1]),
    }

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_name)
    @pytest.mark.parametrize("case", NAMED)
    def test_named_case(self, case, dtype, return_sign):
        a, b = self.NAMED[case]
        check_against_scipy(np.array(a, dtype=dtype), return_sign=return_sign,
                            b=None if b is None else np.array(b, dtype=dtype),
                            mask_ill=False, ctx=f"{case} {_name(dtype)} a={a} b={b}")

    COMPLEX_NAMED = {
        "all_neginf": ([-np.inf + 0j, -np.inf + 0j], None),
        "b0_everywhere": ([1 + 1j, 2j], [0, 0]),
        "b0_drops_one": ([1 + 1j, 2j], [0, 1]),
        "complex_weights": ([0j, 1 + 1j, -0.5 + 2j], [1j, 1 - 1j, -2 + 0.5j]),
        "imaginary_weight": ([0.0, 0.0, 0.0], [1j, 1j, 1j]),
        "phase_near_pi": ([3j, 3.1j, -3.1j], None),
        "large_imag": ([1 + 100j, 1 - 250j], None),
        # A dropped term far above the others: the shift is the max of the terms kept (it
        # was the max of all, which left the others nothing).
        "b0_far_above": ([1e17 + 0j, 0.5 + 0.25j], [0, 1]),
        "b0_above": ([40 + 0j, 0.5 + 0.25j], [0, 1]),
    }

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=_name)
    @pytest.mark.parametrize("case", COMPLEX_NAMED)
    def test_named_complex_case(self, case, dtype, return_sign):
        a, b = self.COMPLEX_NAMED[case]
        check_against_scipy(np.array(a, dtype=dtype), return_sign=return_sign,
                            b=None if b is None else np.array(b, dtype=dtype),
                            mask_ill=False, ctx=f"{case} {_name(dtype)} a={a} b={b}")

    @pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=_name)
    def test_complex_masked_entry_far_above(self, dtype):
        """where= drops a complex term whatever its value, as a zero weight in SciPy."""
        a = np.array([[0.5 + 0.25j, 0.1j], [60 + 0j, 1e20 + 0j], [1e17 + 0j, 0.5 + 0.25j]],
                     dtype=dtype)
        mask = np.array([[True, True], [True, False], [False, True]])
        got = lse(a, axis=1, where=mask)
        want = scipy_logsumexp(a, axis=1, b=mask.astype(a.real.dtype))
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(a.real.dtype).eps)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128], ids=_name)
    def test_zero_weight_drops_nonfinite(self, dtype):
        """b == 0 removes a term even where a is nan or +-inf (every row keeps a live term)."""
        rng = _rng("drop", _name(dtype))
        a = _make_a(rng, (4, 5, 6), dtype)
        b = rng.uniform(-1, 2, a.shape).astype(dtype)
        # drop only at odd i+j+k, so that no reduction loses all of its terms
        drop = (rng.random(a.shape) < 0.6) & (np.indices(a.shape).sum(axis=0) % 2 == 1)
        a[drop] = np.resize(np.array([np.nan, np.inf, -np.inf]), drop.sum())
        b[drop] = 0
        for axis, rs in itertools.product([None, 0, 1, 2, (0, 2), (1, 2)], [False, True]):
            check_against_scipy(a, b=b, axis=axis, return_sign=rs,
                                ctx=f"drop {_name(dtype)} axis={axis} return_sign={rs}")

    @pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_name)
    def test_every_weight_zero_where_exp_overflows(self, dtype):
        """a = [710], b = [0]: -inf (SciPy's fallback: 0 * exp(710) = nan), with sign 0 as
        for all -inf; with a live term beside it, that term alone (found by hypothesis in
        the accumulator's tests)."""
        for a, b in (([710.0], [0.0]), ([710.0, 1e30], [0.0, 0.0]), ([710.0, 2.0], [0.0, 1.0])):
            check_against_scipy(np.array(a, dtype=dtype), b=np.array(b, dtype=dtype),
                                return_sign=True, ctx=f"a={a} b={b}")
        assert lse(np.array([710.0], dtype=dtype), b=np.zeros(1, dtype)) == -np.inf

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("keepdims", [False, True])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.complex128],
                             ids=_name)
    @pytest.mark.parametrize("shape, axis", [((0, 3), 0), ((0, 3), 1), ((3, 0), 1),
                                             ((3, 0), -2), ((2, 0, 3), 1), ((2, 0, 3), -1),
                                             ((0,), None), ((0,), 0)])
    def test_zero_size(self, shape, axis, dtype, keepdims, return_sign):
        check_against_scipy(np.zeros(shape, dtype=dtype), axis=axis, keepdims=keepdims,
                            return_sign=return_sign, mask_ill=False,
                            ctx=f"zeros{shape} {_name(dtype)} axis={axis} "
                                f"keepdims={keepdims} return_sign={return_sign}")

    @pytest.mark.parametrize("return_sign", [False, True])
    def test_empty_list(self, return_sign):
        check_against_scipy([], return_sign=return_sign, mask_ill=False)

    def test_empty_weights_broadcast(self):
        check_against_scipy(np.zeros(3), b=np.zeros((0, 3)), axis=0, mask_ill=False)


class TestRegressions:
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=_name)
    def test_gh18295_small_second_term(self, dtype):
        a = np.array([0, -40], dtype=dtype)
        ref, res = scipy_lse(a), lse(a)
        assert res != 0, f"logsumexp({a}) lost the small term: got 0, scipy gives {ref!r}"
        assert abs(res - ref) <= 2 * np.spacing(ref), (
            f"logsumexp({a}) = {res!r}, scipy gives {ref!r} (> 2 ulp apart)")


# --------------------------------------------------------------------------- 5. large/extreme
class TestLargeAndExtreme:
    ROWS = {
        "plus_1000": [1000.0, 1000.0], "minus_1000": [-1000.0, -1000.0],
        "pm_1000": [1000.0, -1000.0, 999.0], "plus_1e308": [1e308, 1e308],
        "pm_1e308": [1e308, -1e308], "minus_1e308": [-1e308, -1e308, -1e308],
        "near_max": [np.finfo(np.float64).max] * 3, "f32_overflow_range": [88.0, 89.0, 3e38],
        "dominant": [0.0, -1000.0, -745.0, -30.0], "dominant_positive": [700.0, 0.0, -700.0],
        "ties": [5.0, 5.0, 5.0, 1.0], "ties_100": [5.0] * 100, "tiny_spread": [1e-300, -1e-300],
    }

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=_name)
    @pytest.mark.parametrize("row", ROWS)
    def test_extreme_rows(self, row, dtype, return_sign):
        with np.errstate(over="ignore", under="ignore"):
            a = np.array(self.ROWS[row], dtype=dtype)
        for b in (None, np.linspace(0.5, 2, a.size, dtype=dtype)):
            check_against_scipy(a, b=b, return_sign=return_sign, mask_ill=False,
                                ctx=f"{row} {_name(dtype)} b={b is not None}")

    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=_name)
    @pytest.mark.parametrize("case", ["1d", "rows", "cols", "weighted"])
    def test_long_rows(self, case, dtype):
        rng = _rng("long", case, _name(dtype))
        n = 100_000
        a = (10 * rng.standard_normal((3, n))).astype(dtype)
        b = rng.uniform(0.1, 2, (3, n)).astype(dtype) if case == "weighted" else None
        data, axis = {"1d": (a[0], None), "rows": (a, -1), "cols": (a.T, 0),
                      "weighted": (a, 1)}[case]
        ref, res = scipy_lse(data, axis=axis, b=b), lse(data, axis=axis, b=b)
        _assert_structure(res, ref, f"long {case} {_name(dtype)}")
        np.testing.assert_allclose(res, ref, rtol=8 * np.finfo(dtype).eps, atol=0,
                                   err_msg=f"long rows: case={case} dtype={_name(dtype)}")

    @pytest.mark.parametrize("return_sign", [False, True])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=_name)
    @pytest.mark.parametrize("weights", ["none", "signed"])
    @pytest.mark.parametrize("layout", ["packed", "strided"])
    def test_tall_columns_in_pieces(self, layout, weights, dtype, return_sign):
        # Few columns over a long axis 0: packed, their partials are taken on a view of
        # 18 rows a row and merged (``cpu._column_partials``: 40000 rows are 2222 such rows
        # and 4 left over); strided, the band is cut in pieces of rows, merged in order
        # (``reduce.column_pieces``; float32 without weights: its certified sums, in
        # ``reduce.certified_in_pieces``). Special values in some pieces (and groups of
        # rows) and not others.
        from numba_lse import cpu
        from numba_lse.cpu.reduce import column_pieces
        rng = _rng("tall", layout, weights, _name(dtype))
        a = 3 * rng.standard_normal((40_000, 7))
        a[35_000, 0] = np.nan                  # in the last piece only
        a[20_000, 1] = np.inf                  # the third's first row
        a[:, 2] = -np.inf                      # -inf in every piece
        a[15_000, 3] = 1000.0                  # one dominant term
        a[::9_000, 4] = 50.0                   # ties of the max in every piece
        a[:, 5] -= 1000.0                      # every piece's terms underflow against ...
        a[10, 5] = 0.0                         # ... the first piece's max
        a[30_000, 6] = np.finfo(dtype).max
        a = a.astype(dtype)
        assert column_pieces.py_func(a[None]) == (4, 10_000)
        b = None
        if weights == "signed":
            b = rng.uniform(-1, 2, a.shape).astype(dtype)
            b[20_000, 1] = 0.0                 # a zero weight drops its +inf
            b[30_000, 6] = -1.0
        if layout == "strided":
            a = np.repeat(a, 2, axis=1)[:, ::2]
            b = None if b is None else np.repeat(b, 2, axis=1)[:, ::2]
        assert cpu._rows_per_wide_row(a[None], None if b is None else b[None]) == (
            18 if layout == "packed" else 1)
        check_against_scipy(a, axis=0, b=b, return_sign=return_sign, mask_ill=True,
                            ctx=f"tall columns {weights} {_name(dtype)}")


# --------------------------------------------------------------------------- 6. bad input
def _dtype_pattern(dtype):
    dt = np.dtype(dtype)
    names = {dt.name, str(dt), dt.name.split("[")[0]}
    if dt == np.longdouble:
        names |= {"float128", "longdouble"}
    return "|".join(sorted(map(re.escape, names)))


class TestBadInput:
    @pytest.mark.parametrize("shape, axis, pattern", [
        ((3, 4), 2, r"\b2\b"), ((3, 4), 7, r"\b7\b"), ((3, 4), -3, r"-3\b"),
        ((3, 4), (0, 5), r"\b5\b"), ((), 1, r"\b1\b"), ((5,), (-2,), r"-2\b")])
    def test_axis_out_of_range(self, shape, axis, pattern):
        with pytest.raises(AxisError, match=pattern):
            lse(np.ones(shape), axis=axis)

    @pytest.mark.parametrize("axis, pattern", [((0, 0), r"\b0\b"), ((1, -2), r"\b1\b|-2\b"),
                                               ((2, 0, 2), r"\b2\b")])
    def test_repeated_axis(self, axis, pattern):
        with pytest.raises(ValueError, match=pattern):
            lse(np.ones((2, 3, 4)), axis=axis)

    @pytest.mark.parametrize("axis, pattern", [(1.5, r"1\.5"), ("0", r"'0'|\"0\""),
                                               ((0, 1.5), r"1\.5")])
    def test_non_integer_axis(self, axis, pattern):
        with pytest.raises(TypeError, match=pattern):
            lse(np.ones((2, 3)), axis=axis)

    @pytest.mark.parametrize("a_shape, b_shape", [((3,), (4,)), ((2, 3), (5,)),
                                                  ((2, 3), (3, 3))])
    def test_b_not_broadcastable(self, a_shape, b_shape):
        with pytest.raises(ValueError, match=re.escape(str(b_shape))):
            lse(np.ones(a_shape), b=np.ones(b_shape))

    BAD = {
        "object": np.array([1.0, 2.0], dtype=object), "str": np.array(["a"]),
        "datetime64": np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
        "timedelta64": np.array([1, 2], dtype="timedelta64[s]"),
        "longdouble": np.array([1.0, 2.0], dtype=np.longdouble),
    }

    @pytest.mark.parametrize("where", ["a", "b"])
    @pytest.mark.parametrize("case", BAD)
    def test_unsupported_dtype(self, case, where):
        bad = self.BAD[case]
        args = (bad, None) if where == "a" else (np.zeros(bad.shape), bad)
        with pytest.raises(TypeError, match=_dtype_pattern(bad.dtype)):
            lse(args[0], b=args[1])


# --------------------------------------------------------------------------- 7. properties
FINITE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
ROWS_ST = hnp.arrays(np.float64, st.integers(1, 30), elements=FINITE)
PROPS = settings(max_examples=80, deadline=None, derandomize=True, database=None)
EPS = np.finfo(np.float64).eps


def _scale(x, *vals):
    return max(1.0, float(np.max(np.abs(x))), *map(abs, vals)) + np.log2(x.size)


class TestProperties:
    @PROPS
    @given(x=ROWS_ST, c=st.floats(-50, 50))
    def test_shift_invariance(self, x, c):
        lhs, rhs = lse(x + c), lse(x) + c
        assert abs(lhs - rhs) <= 8 * EPS * (_scale(x, lhs) + abs(c)), (
            f"logsumexp(x + {c!r}) = {lhs!r} but logsumexp(x) + c = {rhs!r}, x={x.tolist()}")

    @PROPS
    @given(x=ROWS_ST, seed=st.integers(0, 2**32 - 1))
    def test_permutation_invariance(self, x, seed):
        y = np.random.default_rng(seed).permutation(x)
        r1, r2 = lse(x), lse(y)
        assert abs(r1 - r2) <= 4 * EPS * _scale(x, r1), (
            f"x={x.tolist()} gives {r1!r}, permuted {y.tolist()} gives {r2!r}")

    @PROPS
    @given(x=hnp.arrays(np.float64, st.integers(2, 30), elements=FINITE), data=st.data())
    def test_merge_of_halves(self, x, data):
        k = data.draw(st.integers(1, x.size - 1), label="split")
        whole, merged = lse(x), lse([lse(x[:k]), lse(x[k:])])
        assert abs(whole - merged) <= 8 * EPS * _scale(x, whole), (
            f"x={x.tolist()} split at {k}: whole={whole!r}, merged={merged!r}")

    @PROPS
    @given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                        elements=FINITE), data=st.data())
    def test_agrees_with_scipy(self, x, data):
        axis = data.draw(st.sampled_from([None, *range(-x.ndim, x.ndim)]), label="axis")
        b = data.draw(st.none() | hnp.arrays(np.float64, x.shape,
                                              elements=st.just(0.0) | st.floats(0.25, 2)),
                      label="b")
        check_against_scipy(x, axis=axis, b=b, keepdims=data.draw(st.booleans()),
                            return_sign=data.draw(st.booleans()))


# --------------------------------------------------------------------------- 8. threads
class TestThreads:
    def test_concurrent_calls(self):
        rng = _rng("threads")
        dtypes, axes = [np.float64, np.float32] * 4, [-1, 0, None, 1, 0, -1, None, (0, 1)]
        arrays = [(5 * rng.standard_normal((200, 5000))).astype(dt) for dt in dtypes]
        refs = [scipy_lse(x, axis=ax) for x, ax in zip(arrays, axes)]
        barrier = threading.Barrier(len(arrays))

        def work(i):
            barrier.wait(timeout=120)
            return [lse(arrays[i], axis=axes[i]) for _ in range(3)]

        with ThreadPoolExecutor(max_workers=len(arrays)) as pool:
            results = list(pool.map(work, range(len(arrays))))
        for i, (outs, ref) in enumerate(zip(results, refs)):
            for rep, out in enumerate(outs):
                ctx = f"thread {i} ({_name(dtypes[i])}, axis={axes[i]}) repetition {rep}"
                _assert_structure(out, ref, ctx)
                np.testing.assert_allclose(out, ref, rtol=8 * np.finfo(dtypes[i]).eps,
                                           err_msg=ctx)
