"""Independent tests of ``numba_lse.LogSumExpAccumulator``: a streaming log-sum-exp.

Whatever the chunking, the merge order and the pickling along the way, ``result()`` must
equal the log-sum-exp of the concatenated chunks. References are called live:
``scipy.special.logsumexp`` in float64 for the semantics (special values, signs, shapes),
``numba_lse.logsumexp`` of the concatenation (the well-tested CPU path) where numba_lse
documents a departure from SciPy, and mpmath (exact, 40 digits) for the values.

Tolerances (``assert_lse_close``), with m the largest finite entry of a reduction:

* float64: ``|res - ref| <= 4 eps64 max(1, |ref|, |m|)`` (logsumexp's own bound is 2 ulp
  relative to max(1, |lse|) for well-conditioned sums; |m| <= |lse| + log n covers the rest);
* float32: ``|res - ref| <= 2 ulp32(ref) + 8 eps64 max(1, |m|)``: computed in float64 and
  rounded once, so within an ulp, plus an absolute floor near 0;
* nan, +inf and -inf at exactly the reference's places.

With weights that cancel, the bound is multiplied by the condition number of the sum
``sum |b e^a| / |sum b e^a|``.
"""

import concurrent.futures
import functools
import math
import multiprocessing
import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from mpmath import mp
from numpy.exceptions import AxisError
from scipy.special import logsumexp as scipy_logsumexp

import numba_lse as nl
from numba_lse import LogSumExpAccumulator

EPS64 = float(np.finfo(np.float64).eps)
FLOATS = [np.float32, np.float64]
PROPS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


# ------------------------------------------------------------------------------ helpers

def _rng(*key):
    """A deterministic generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _name(dtype):
    return np.dtype(dtype).name


def _finite_max(x, axis):
    """|largest finite entry| of each reduction (0 where there is none), float64."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        m = np.max(np.where(np.isfinite(x), x, -np.inf), axis=axis, initial=-np.inf)
    return np.where(np.isfinite(m), np.abs(m), 0.0)


def assert_lse_close(res, ref, dtype, *, scale=0.0, cond=1.0, what="result"):
    """``res`` (of ``dtype``) against the float64 reference ``ref`` (module docstring)."""
    dtype = np.dtype(dtype)
    res_arr = np.asarray(res)
    assert res_arr.dtype == dtype, f"{what}: dtype {res_arr.dtype}, expected {dtype}"
    ref = np.asarray(ref, dtype=np.float64)
    assert res_arr.shape == ref.shape, f"{what}: shape {res_arr.shape}, expected {ref.shape}"
    got = res_arr.astype(np.float64)
    for label, test in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = test(got) != test(ref)
        if mismatch.any():
            i = tuple(int(k) for k in np.argwhere(mismatch)[0])
            raise AssertionError(f"{what}: {label} positions differ, first at {i}: "
                                 f"accumulator {got[i]!r}, reference {ref[i]!r}")
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), ref.shape)
    cond = np.broadcast_to(np.asarray(cond, dtype=np.float64), ref.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype == np.float64:
            tol = 4 * EPS64 * np.maximum.reduce([np.ones(ref.shape), np.abs(ref), scale]) * cond
        else:
            spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
            tol = (2 * spacing + 8 * EPS64 * np.maximum(1.0, scale)) * cond
        err = np.abs(got - ref)
        bad = np.isfinite(ref) & ~(err <= tol)
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} element(s) out of tolerance, first at {i}: "
            f"accumulator {got[i]!r}, reference {ref[i]!r}, |error| {err[i]:.3g} > {tol[i]:.3g}")


def exact_lse(values):
    """log(sum(exp(values))) of a 1-D float64 array, exact (mpmath), with SciPy's special
    values: any nan -> nan, any +inf -> +inf, empty or all -inf -> -inf."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(values).any():
        return math.nan
    if np.isposinf(values).any():
        return math.inf
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -math.inf
    with mp.workdps(40):
        m = mp.mpf(float(finite.max()))
        total = mp.fsum(mp.exp(mp.mpf(float(v)) - m) for v in finite)
        return float(m + mp.log(total))


def exact_lse_axis0(x):
    """exact_lse of each column of a 2-D array."""
    x = np.asarray(x, dtype=np.float64)
    return np.array([exact_lse(x[:, j]) for j in range(x.shape[1])])


def scipy_ref(a, axis=None, b=None, return_sign=False):
    """SciPy's logsumexp in float64 (the live reference for semantics)."""
    with np.errstate(all="ignore"):
        return scipy_logsumexp(np.asarray(a, dtype=np.float64), axis=axis,
                               b=None if b is None else np.asarray(b, dtype=np.float64),
                               return_sign=return_sign)


def weight_cond(a, b, axis):
    """Condition number of sum b e^a: sum |b e^(a-m)| / |sum b e^(a-m)| (1 when no cancellation)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    with np.errstate(all="ignore"):
        live = (b != 0) & np.isfinite(a)
        m = np.max(np.where(live, a, -np.inf), axis=axis, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0.0)
        terms = np.where(live, b * np.exp(a - m), 0.0)
        p = np.sum(np.abs(terms), axis=axis)
        q = np.abs(np.sum(terms, axis=axis))
        return np.where(p == 0, 1.0, p / q)


def accumulate(chunks, axis=None, bs=None):
    acc = LogSumExpAccumulator()
    for i, chunk in enumerate(chunks):
        returned = acc.update(chunk, axis=axis, b=None if bs is None else bs[i])
        assert returned is acc, "update() must return the accumulator itself"
    return acc


def split(x, cuts, axis=0):
    """x cut into pieces at the sorted indices ``cuts`` along ``axis`` (views, maybe empty)."""
    return np.split(x, sorted(cuts), axis=axis)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def state_bits(acc):
    """What an accumulator gives, as bytes: (result, sign), to compare states."""
    out, sign = acc.result(return_sign=True)
    return np.asarray(out).tobytes() + np.asarray(sign).tobytes(), np.asarray(out).dtype


# ------------------------------------------------------------------------------ basics

class TestBasics:
    def test_readme_example(self):
        acc = LogSumExpAccumulator()
        for chunk in np.array_split(np.arange(10.0), 3):
            acc.update(chunk)
        res = acc.result()
        assert isinstance(res, np.float64), f"expected a NumPy float64 scalar, got {type(res)}"
        assert_lse_close(res, scipy_ref(np.arange(10.0)), np.float64, scale=9.0)

    def test_fresh_accumulator_gives_minus_inf_float64(self):
        res = LogSumExpAccumulator().result()
        assert isinstance(res, np.generic) and np.ndim(res) == 0, type(res)
        assert res.dtype == np.float64
        assert res == -np.inf
        out, _sign = LogSumExpAccumulator().result(return_sign=True)
        assert out == -np.inf and np.asarray(out).dtype == np.float64

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_scalar_result_is_numpy_scalar_of_the_dtype(self, dtype):
        x = _rng("scalar", _name(dtype)).standard_normal((4, 6)).astype(dtype)
        res = accumulate([x[:1], x[1:3], x[3:]]).result()
        ref = nl.logsumexp(x)
        assert type(res) is type(ref), f"accumulator {type(res)}, logsumexp {type(ref)}"
        assert res.dtype == np.dtype(dtype)
        assert_lse_close(res, scipy_ref(x), dtype, scale=_finite_max(x, None))

    def test_merge_returns_self_and_leaves_other_unchanged(self):
        rng = _rng("merge")
        x, y = rng.standard_normal(20), 3 * rng.standard_normal(30)
        left, right = accumulate([x]), accumulate([y])
        before = state_bits(right)
        assert left.merge(right) is left
        assert state_bits(right) == before, "merge() changed the accumulator merged in"
        assert_lse_close(left.result(), exact_lse(np.concatenate([x, y])), np.float64,
                         scale=_finite_max(np.concatenate([x, y]), None))
        # `right` stays usable on its own and independent of `left`.
        right.update(np.array([50.0]))
        assert_lse_close(right.result(), exact_lse(np.concatenate([y, [50.0]])), np.float64, scale=50)
        assert_lse_close(left.result(), exact_lse(np.concatenate([x, y])), np.float64,
                         scale=_finite_max(np.concatenate([x, y]), None))

    def test_merge_with_fresh_accumulators(self):
        x = _rng("fresh-merge").standard_normal(25)
        ref = exact_lse(x)
        a = accumulate([x]).merge(LogSumExpAccumulator())
        assert_lse_close(a.result(), ref, np.float64, scale=_finite_max(x, None))
        b = LogSumExpAccumulator().merge(accumulate([x]))
        assert_lse_close(b.result(), ref, np.float64, scale=_finite_max(x, None))
        assert LogSumExpAccumulator().merge(LogSumExpAccumulator()).result() == -np.inf

    def test_result_does_not_consume(self):
        rng = _rng("not-consumed")
        chunks = [rng.standard_normal(k) * 10 for k in (5, 1, 17, 8)]
        acc = LogSumExpAccumulator()
        seen = []
        for chunk in chunks:
            acc.update(chunk)
            seen.append(chunk)
            whole = np.concatenate(seen)
            first = acc.result()
            second = acc.result()
            assert same_bits(first, second), "result() twice in a row differs"
            assert_lse_close(first, exact_lse(whole), np.float64, scale=_finite_max(whole, None))

    def test_python_lists_and_0d_chunks(self):
        acc = LogSumExpAccumulator().update([1.0, 2.0]).update(np.float64(3.0)).update(np.array(-1.0))
        assert_lse_close(acc.result(), exact_lse([1.0, 2.0, 3.0, -1.0]), np.float64, scale=3)

    def test_repr_does_not_raise(self):
        assert "LogSumExpAccumulator" in repr(LogSumExpAccumulator())
        assert "LogSumExpAccumulator" in repr(accumulate([np.ones((2, 3))], axis=0))


# ------------------------------------------------------------------------------ axes

class TestAxes:
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_axis0_chunks_concatenate(self, dtype):
        rng = _rng("axis0", _name(dtype))
        x = (rng.standard_normal((23, 5)) * 30).astype(dtype)
        chunks = split(x, [4, 5, 5, 16])  # sizes 4, 1, 0, 11, 7 (an empty chunk too)
        res = accumulate(chunks, axis=0).result()
        assert isinstance(res, np.ndarray) and res.shape == (5,)
        assert_lse_close(res, exact_lse_axis0(x), dtype, scale=_finite_max(x, 0))
        assert_lse_close(res, scipy_ref(x, axis=0), dtype, scale=_finite_max(x, 0))

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_tall_narrow_chunks(self, dtype):
        # Chunks of 5 columns and 2^15 entries or more: their partials are taken through
        # a view of 25 rows a row, merged (``cpu._column_partials``), then across chunks.
        from numba_lse import cpu
        rng = _rng("tall narrow", _name(dtype))
        x = (rng.standard_normal((40_000, 5)) * 30).astype(dtype)
        x[30_000, 2] = 1000.0  # one dominant term, in the second chunk's widened rows
        chunks = split(x, [12_345])
        assert all(cpu._rows_per_wide_row(c[None]) == 25 for c in chunks)
        res = accumulate(chunks, axis=0).result()
        assert_lse_close(res, exact_lse_axis0(x), dtype, scale=_finite_max(x, 0))

    @pytest.mark.parametrize("axis", [1, -1])
    def test_last_axis_chunks(self, axis):
        rng = _rng("axis1", axis)
        x = rng.standard_normal((4, 31)) * 5
        chunks = split(x, [3, 10, 30], axis=1)
        res = accumulate(chunks, axis=axis).result()
        assert res.shape == (4,)
        assert_lse_close(res, exact_lse_axis0(x.T), np.float64, scale=_finite_max(x, 1))

    def test_tuple_axis(self):
        # Chunks of a 3-D stream reduced over axes (0, 2): the kept axis 1 must agree.
        rng = _rng("tuple-axis")
        chunks = [rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 3, 1)) * 4,
                  rng.standard_normal((1, 3, 6)) - 3]
        res = accumulate(chunks, axis=(0, 2)).result()
        assert res.shape == (3,)
        flat = np.concatenate([np.moveaxis(c, 1, 0).reshape(3, -1) for c in chunks], axis=1)
        assert_lse_close(res, scipy_ref(flat, axis=1), np.float64, scale=_finite_max(flat, 1))
        assert_lse_close(res, exact_lse_axis0(flat.T), np.float64, scale=_finite_max(flat, 1))

    def test_axis_none_reduces_chunks_of_any_shape(self):
        rng = _rng("none-shapes")
        chunks = [rng.standard_normal((2, 3)), rng.standard_normal(7), rng.standard_normal((2, 2, 2))]
        whole = np.concatenate([c.ravel() for c in chunks])
        res = accumulate(chunks).result()
        assert np.ndim(res) == 0
        assert_lse_close(res, exact_lse(whole), np.float64, scale=_finite_max(whole, None))

    def test_non_contiguous_chunks(self):
        rng = _rng("strided")
        base = np.asfortranarray(rng.standard_normal((40, 12)) * 20)
        x = base[::2, ::-1]                      # (20, 12), strided and reversed
        chunks = [x[:7], x[7:8], x[8:]]
        res = accumulate(chunks, axis=0).result()
        assert_lse_close(res, exact_lse_axis0(x), np.float64, scale=_finite_max(x, 0))
        # Transposed chunks reduced over their last axis.
        res_t = accumulate([c.T for c in chunks], axis=1).result()
        assert_lse_close(res_t, exact_lse_axis0(x), np.float64, scale=_finite_max(x, 0))

    def test_kept_shape_mismatch_raises_naming_both_shapes(self):
        acc = accumulate([np.zeros((3, 5))], axis=0)
        before = state_bits(acc)
        with pytest.raises(ValueError) as info:
            acc.update(np.zeros((3, 6)), axis=0)
        message = str(info.value)
        assert "(5,)" in message and "(6,)" in message, (
            f"the message should name both kept shapes (5,) and (6,): {message!r}")
        assert state_bits(acc) == before, "a rejected chunk changed the accumulator"
        acc.update(np.ones((2, 5)), axis=0)  # still usable
        whole = np.concatenate([np.zeros((3, 5)), np.ones((2, 5))])
        assert_lse_close(acc.result(), exact_lse_axis0(whole), np.float64, scale=1)

    def test_kept_shape_mismatch_3d(self):
        acc = accumulate([np.zeros((2, 3, 4))], axis=(0, 2))
        with pytest.raises(ValueError):
            acc.update(np.zeros((2, 4, 4)), axis=(0, 2))

    def test_axis_differs_from_first_update_raises(self):
        acc = accumulate([np.zeros((4, 4))], axis=0)
        before = state_bits(acc)
        with pytest.raises(ValueError):
            acc.update(np.zeros((4, 4)), axis=1)
        with pytest.raises(ValueError):
            acc.update(np.zeros((4, 4)), axis=None)
        assert state_bits(acc) == before
        scalar = accumulate([np.zeros(4)])
        with pytest.raises(ValueError):
            scalar.update(np.zeros((4, 4)), axis=0)

    def test_merge_of_incompatible_accumulators_raises(self):
        a = accumulate([np.zeros((2, 5))], axis=0)
        b = accumulate([np.zeros((2, 6))], axis=0)
        before = state_bits(a)
        with pytest.raises(ValueError):
            a.merge(b)
        assert state_bits(a) == before
        with pytest.raises(ValueError):
            a.merge(accumulate([np.zeros(3)]))

    @pytest.mark.parametrize("axis", [2, -3, (0, 2)])
    def test_bad_axis_raises_axis_error_and_changes_nothing(self, axis):
        fresh = LogSumExpAccumulator()
        with pytest.raises(AxisError):
            fresh.update(np.zeros((3, 4)), axis=axis)
        # The failed first update fixed nothing: any axis is still accepted.
        assert fresh.result() == -np.inf
        fresh.update(np.ones(3))
        assert_lse_close(fresh.result(), exact_lse(np.ones(3)), np.float64, scale=1)
        used = accumulate([np.zeros((3, 4))], axis=0)
        before = state_bits(used)
        with pytest.raises(AxisError):
            used.update(np.zeros((3, 4)), axis=axis)
        assert state_bits(used) == before


# ------------------------------------------------------------------------------ weights

class TestWeights:
    def test_broadcast_weights(self):
        rng = _rng("bcast")
        x = rng.standard_normal((9, 5)) * 4
        b = rng.uniform(0.1, 3.0, (1, 5))
        chunks = split(x, [2, 6])
        res = accumulate(chunks, axis=0, bs=[b, b, b]).result()
        ref = scipy_ref(x, axis=0, b=np.broadcast_to(b, x.shape))
        assert_lse_close(res, ref, np.float64, scale=_finite_max(x, 0))
        # Scalar weights, and weights of the chunk's own shape, axis=None.
        res = accumulate(chunks, bs=[2.0, np.full((4, 5), 0.5), 1.0]).result()
        w = np.concatenate([np.full((2, 5), 2.0), np.full((4, 5), 0.5), np.ones((3, 5))])
        assert_lse_close(res, scipy_ref(x, b=w), np.float64, scale=_finite_max(x, None))

    def test_zero_weights_drop_terms(self):
        x = np.array([1.0, 500.0, -2.0, 3.0])
        b = np.array([1.0, 0.0, 1.0, 1.0])
        res = accumulate([x[:2], x[2:]], bs=[b[:2], b[2:]]).result()
        assert_lse_close(res, exact_lse([1.0, -2.0, 3.0]), np.float64, scale=3)

    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_negative_weights_sign_and_nan(self, dtype):
        # Column totals: positive, negative (two with cancellation), all weights negative.
        x = np.array([[0.0, 1.0, 2.0, 5.0],
                      [1.0, 2.0, 3.0, 4.0],
                      [-1.0, 0.5, -3.0, 4.0]], dtype=dtype)
        b = np.array([[1.0, -1.0, 2.0, -1.0],
                      [1.0, 1.0, -1.0, -2.0],
                      [-1.0, -3.0, 0.5, -1.0]], dtype=dtype)
        acc = accumulate([x[:1], x[1:]], axis=0, bs=[b[:1], b[1:]])
        out, sign = acc.result(return_sign=True)
        ref_out, ref_sign = scipy_ref(x, axis=0, b=b, return_sign=True)
        cond = weight_cond(x, b, 0)
        assert_lse_close(out, ref_out, dtype, scale=_finite_max(x, 0), cond=cond)
        assert np.asarray(sign).dtype == np.dtype(dtype)
        np.testing.assert_array_equal(sign, ref_sign)
        plain = acc.result()
        ref_plain = scipy_ref(x, axis=0, b=b)
        assert np.array_equal(np.isnan(plain), ref_sign < 0), "nan must mark the negative totals"
        assert np.isnan(ref_plain[ref_sign < 0]).all()
        keep = ref_sign > 0
        assert_lse_close(np.asarray(plain)[keep], ref_plain[keep], dtype,
                         scale=_finite_max(x, 0)[keep], cond=cond[keep])

    def test_negative_total_scalar(self):
        acc = accumulate([np.array([1.0]), np.array([2.0])], bs=[np.array([1.0]), np.array([-1.0])])
        out, sign = acc.result(return_sign=True)
        ref_out, ref_sign = scipy_ref([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
        assert sign == ref_sign == -1
        assert_lse_close(out, ref_out, np.float64, scale=2, cond=weight_cond([1.0, 2.0], [1.0, -1.0], None))
        assert np.isnan(acc.result())

    def test_weights_cancelling_at_a_huge_max_as_numba_lse(self):
        # SciPy's fallback gives nan here (inf - inf); numba_lse.logsumexp documents (-inf, 0).
        acc = accumulate([np.array([1000.0]), np.array([1000.0])],
                         bs=[np.array([1.0]), np.array([-1.0])])
        out, sign = acc.result(return_sign=True)
        ref_out, ref_sign = nl.logsumexp(np.array([1000.0, 1000.0]), b=np.array([1.0, -1.0]),
                                         return_sign=True)
        assert same_bits(out, ref_out) and same_bits(sign, ref_sign), (out, sign, ref_out, ref_sign)

    def test_bad_weights_shape_raises_and_changes_nothing(self):
        acc = accumulate([np.zeros((3, 4))], axis=0)
        before = state_bits(acc)
        with pytest.raises(ValueError):
            acc.update(np.zeros((3, 4)), axis=0, b=np.ones(3))
        assert state_bits(acc) == before


# ------------------------------------------------------------------------------ dtypes

class TestDtypes:
    def test_float32_only_stays_float32(self):
        rng = _rng("f32")
        chunks = [rng.standard_normal(n).astype(np.float32) for n in (3, 8, 1)]
        res = accumulate(chunks).result()
        assert isinstance(res, np.float32), type(res)
        out, sign = accumulate(chunks).result(return_sign=True)
        assert np.asarray(out).dtype == np.float32 and np.asarray(sign).dtype == np.float32
        res0 = accumulate([c.reshape(-1, 1) for c in chunks], axis=0).result()
        assert res0.dtype == np.float32 and res0.shape == (1,)

    @pytest.mark.parametrize("order", ["f32-first", "f64-first"])
    def test_any_float64_chunk_gives_float64(self, order):
        rng = _rng("mixed", order)
        c32 = rng.standard_normal(6).astype(np.float32)
        c64 = rng.standard_normal(4)
        chunks = [c32, c64] if order == "f32-first" else [c64, c32]
        res = accumulate(chunks).result()
        assert res.dtype == np.float64
        whole = np.concatenate([c32.astype(np.float64), c64])
        assert_lse_close(res, exact_lse(whole), np.float64, scale=_finite_max(whole, None))

    def test_int_chunks_give_float64(self):
        res = accumulate([np.arange(5, dtype=np.int32)]).result()
        assert res.dtype == np.float64
        assert_lse_close(res, scipy_ref(np.arange(5)), np.float64, scale=4)
        mixed = accumulate([np.ones(3, np.float32), np.arange(4, dtype=np.int64)]).result()
        assert mixed.dtype == np.float64
        assert_lse_close(mixed, exact_lse([1, 1, 1, 0, 1, 2, 3]), np.float64, scale=3)

    def test_merge_promotes_dtype(self):
        a = accumulate([np.ones(3, np.float32)])
        b = accumulate([np.zeros(2)])
        assert a.merge(b).result().dtype == np.float64
        c = accumulate([np.ones(3, np.float32)]).merge(accumulate([np.zeros(2, np.float32)]))
        assert c.result().dtype == np.float32

    @pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=_name)
    def test_complex_raises_type_error_and_changes_nothing(self, dtype):
        acc = accumulate([np.ones(3, np.float32)])
        before = state_bits(acc)
        with pytest.raises(TypeError):
            acc.update(np.ones(3, dtype=dtype))
        assert state_bits(acc) == before
        assert acc.result().dtype == np.float32
        with pytest.raises(TypeError):
            LogSumExpAccumulator().update(np.array([1 + 1j]))

    @pytest.mark.parametrize("make", [
        pytest.param(lambda: np.ones(3, dtype=np.longdouble), id="longdouble"),
        pytest.param(lambda: np.array([1.0, 2.0], dtype=object), id="object"),
        pytest.param(lambda: np.array(["a", "b"]), id="str"),
    ])
    def test_unsupported_dtype_raises_type_error_naming_it(self, make):
        x = make()
        if x.dtype == np.float64:
            pytest.skip("long double is float64 on this platform")
        acc = accumulate([np.arange(3.0)])
        before = state_bits(acc)
        with pytest.raises(TypeError) as info:
            acc.update(x)
        message = str(info.value)
        assert x.dtype.name in message or str(x.dtype) in message, (
            f"the message should name the dtype {x.dtype.name}: {message!r}")
        assert state_bits(acc) == before
        fresh = LogSumExpAccumulator()
        with pytest.raises(TypeError):
            fresh.update(x)
        assert fresh.result() == -np.inf and fresh.result().dtype == np.float64


# ------------------------------------------------------------------------------ empty chunks

class TestEmpty:
    @pytest.mark.parametrize("dtype", FLOATS, ids=_name)
    def test_empty_chunks_change_nothing(self, dtype):
        rng = _rng("empty", _name(dtype))
        x = rng.standard_normal(12).astype(dtype)
        plain = accumulate([x[:5], x[5:]])
        padded = accumulate([np.empty(0, dtype), x[:5], np.empty((0, 3), dtype), x[5:],
                             np.empty(0, dtype)])
        assert state_bits(plain) == state_bits(padded)
        after = accumulate([x]).update(np.empty(0, dtype))
        assert state_bits(after) == state_bits(accumulate([x]))

    def test_empty_chunks_along_axis(self):
        rng = _rng("empty-axis")
        x = rng.standard_normal((6, 4))
        plain = accumulate([x[:2], x[2:]], axis=0)
        padded = accumulate([x[:2], np.empty((0, 4)), x[2:], x[6:]], axis=0)
        assert state_bits(plain) == state_bits(padded)

    def test_only_empty_chunks_gives_minus_inf(self):
        acc = LogSumExpAccumulator().update(np.empty(0)).update(np.empty((0, 2)))
        res = acc.result()
        assert np.ndim(res) == 0 and res == -np.inf and res.dtype == np.float64

    def test_only_empty_chunks_sign_as_logsumexp_of_nothing(self):
        # logsumexp of a zero-size reduction has sign -1 (SciPy's), entries all -inf sign 0:
        # the accumulator's result is that of the concatenation, through merges and pickles.
        for chunks, axis in (([np.empty(0), np.empty((0, 2))], None),
                             ([np.empty((0, 3)), np.empty((0, 3))], 0),
                             ([np.empty((0, 3)), np.full((2, 3), -np.inf)], 0)):
            data = (np.concatenate([c.ravel() for c in chunks]) if axis is None
                    else np.concatenate(chunks, axis=0))
            whole = nl.logsumexp(data, axis=axis, return_sign=True)
            merged = LogSumExpAccumulator()
            for c in chunks:
                merged.merge(pickle.loads(pickle.dumps(LogSumExpAccumulator().update(c, axis=axis))))
            for acc in (accumulate(chunks, axis=axis), merged):
                for got, want in zip(acc.result(return_sign=True), whole):
                    assert np.array_equal(got, want), (axis, got, want)
                assert np.array_equal(acc.result(), nl.logsumexp(data, axis=axis))


# ------------------------------------------------------------------------------ special values

SPECIAL_CASES = {
    # name: chunks; the reference is the whole concatenation
    "ties-across-chunks": [[1000.0], [1000.0], [1000.0]],
    "dominant-then-tiny": [[0.0], [-40.0]],
    "tiny-then-dominant": [[-40.0], [0.0]],
    "pm1000": [[1000.0, -1000.0], [-1000.0], [999.0]],
    "minus1000-only": [[-1000.0], [-1000.0, -1001.0]],
    "huge": [[1e308], [1e308], [-1e308]],
    "huge-negative": [[-1e308, -1e308], [-1e308]],
    "minus-inf-chunk": [[-np.inf, -np.inf], [0.5, -np.inf], [-np.inf]],
    "all-minus-inf": [[-np.inf], [-np.inf, -np.inf]],
    "plus-inf": [[1.0, 2.0], [np.inf], [1e308]],
    "plus-inf-twice": [[np.inf], [np.inf]],
    "nan-later": [[1.0], [np.nan], [2.0]],
    "inf-then-nan": [[np.inf], [np.nan]],
    "nan-then-minus-inf": [[np.nan], [-np.inf]],
    "zeros-many-chunks": [[0.0] * 10] * 7,
    "wide-range": [[-700.0, 700.0], [0.0, -1e-300], [709.0, 1e-300]],
}
SPECIAL_CASES_32 = {
    "ties-across-chunks": [[80.0], [80.0], [80.0]],
    "huge": [[3e38], [3e38], [-3e38]],
    "dominant-then-tiny": [[0.0], [-20.0]],
    "pm1000": [[1000.0, -1000.0], [-1000.0], [999.0]],
    "minus-inf-chunk": [[-np.inf, -np.inf], [0.5, -np.inf], [-np.inf]],
    "plus-inf": [[1.0, 2.0], [np.inf], [3e38]],
    "nan-later": [[1.0], [np.nan], [2.0]],
}


class TestSpecialValues:
    @pytest.mark.parametrize("case", SPECIAL_CASES)
    def test_float64_vs_scipy_and_mpmath(self, case):
        chunks = [np.array(c, dtype=np.float64) for c in SPECIAL_CASES[case]]
        whole = np.concatenate(chunks)
        acc = accumulate(chunks)
        res = acc.result()
        assert_lse_close(res, scipy_ref(whole), np.float64, scale=_finite_max(whole, None),
                         what=f"{case} vs scipy")
        assert_lse_close(res, exact_lse(whole), np.float64, scale=_finite_max(whole, None),
                         what=f"{case} vs mpmath")
        ref_sign = scipy_ref(whole, return_sign=True)[1]
        out, sign = acc.result(return_sign=True)
        assert same_bits(out, res)
        np.testing.assert_array_equal(sign, ref_sign)

    def test_dominant_term_keeps_relative_digits(self):
        # log1p(e^-40) = 4.25e-18: a streaming lse that merges by log(e^a + e^b) gives 0.
        for chunks in ([[0.0], [-40.0]], [[-40.0], [0.0]], [[-40.0], [], [0.0]]):
            res = accumulate([np.array(c) for c in chunks]).result()
            exact = exact_lse([0.0, -40.0])
            assert abs(res - exact) <= 4 * EPS64 * exact, (chunks, res, exact)
        # Merged rather than updated.
        res = accumulate([np.array([0.0])]).merge(accumulate([np.array([-40.0])])).result()
        assert abs(res - exact) <= 4 * EPS64 * exact, res

    @pytest.mark.parametrize("case", SPECIAL_CASES_32)
    def test_float32(self, case):
        chunks = [np.array(c, dtype=np.float32) for c in SPECIAL_CASES_32[case]]
        whole = np.concatenate(chunks)
        res = accumulate(chunks).result()
        assert isinstance(res, np.float32)
        assert_lse_close(res, exact_lse(whole), np.float32, scale=_finite_max(whole, None))
        # The CPU path on the concatenation (computed in float64, rounded once): within an ulp.
        ref = nl.logsumexp(whole)
        assert_lse_close(res, ref.astype(np.float64), np.float32, scale=_finite_max(whole, None),
                         what=f"{case} vs numba_lse.logsumexp")

    def test_columns_with_special_values(self):
        x = np.array([[-np.inf, np.inf, np.nan, 1e308, -1000.0, -np.inf],
                      [-np.inf, 1.0, 0.0, 1e308, -1000.0, 2.0],
                      [-np.inf, np.nan, 0.0, -1e308, 1000.0, -np.inf]])
        for cuts in ([1], [2], [1, 2], [0, 3]):
            chunks = split(x, cuts)
            acc = accumulate(chunks, axis=0)
            res = acc.result()
            assert_lse_close(res, scipy_ref(x, axis=0), np.float64, scale=_finite_max(x, 0))
            assert_lse_close(res, exact_lse_axis0(x), np.float64, scale=_finite_max(x, 0))
            _, sign = acc.result(return_sign=True)
            np.testing.assert_array_equal(sign, scipy_ref(x, axis=0, return_sign=True)[1])


# ------------------------------------------------------------------------------ pickling

class TestPickle:
    def test_fresh_accumulator_pickles(self):
        acc = pickle.loads(pickle.dumps(LogSumExpAccumulator()))
        assert acc.result() == -np.inf
        acc.update(np.arange(3.0))
        assert_lse_close(acc.result(), exact_lse(np.arange(3.0)), np.float64, scale=2)

    @pytest.mark.parametrize("axis", [None, 0])
    @pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
    def test_round_trip_at_every_point_continues_identically(self, axis, protocol):
        rng = _rng("pickle", axis, protocol)
        chunks = [rng.standard_normal((k, 3)) * 50 for k in (2, 5, 1, 3)]
        chunks[2] = chunks[2].astype(np.float32)
        for stop in range(len(chunks) + 1):
            original = accumulate(chunks[:stop], axis=axis)
            copy = pickle.loads(pickle.dumps(original, protocol=protocol))
            assert state_bits(copy) == state_bits(original), f"after {stop} chunks"
            for chunk in chunks[stop:]:
                original.update(chunk, axis=axis)
                copy.update(chunk, axis=axis)
                assert state_bits(copy) == state_bits(original)
            whole = np.concatenate([c.astype(np.float64) for c in chunks])
            ref = exact_lse(whole) if axis is None else exact_lse_axis0(whole)
            assert_lse_close(copy.result(), ref, np.float64, scale=_finite_max(whole, axis))

    def test_pickled_copy_is_independent(self):
        acc = accumulate([np.array([1.0, 2.0])])
        copy = pickle.loads(pickle.dumps(acc))
        copy.update(np.array([100.0]))
        assert_lse_close(acc.result(), exact_lse([1.0, 2.0]), np.float64, scale=2)
        assert_lse_close(copy.result(), exact_lse([1.0, 2.0, 100.0]), np.float64, scale=100)

    def test_pickle_after_result_and_rejected_update(self):
        acc = accumulate([np.array([[1.0, 2.0]])], axis=0)
        acc.result()
        with pytest.raises(ValueError):
            acc.update(np.zeros((1, 3)), axis=0)
        copy = pickle.loads(pickle.dumps(acc))
        copy.update(np.array([[3.0, -4.0]]), axis=0)
        assert_lse_close(copy.result(), exact_lse_axis0(np.array([[1.0, 2.0], [3.0, -4.0]])),
                         np.float64, scale=4)

    def test_merge_of_unpickled_accumulators(self):
        rng = _rng("merge-pickled")
        x = rng.standard_normal((10, 4)) * 100
        parts = [pickle.loads(pickle.dumps(accumulate([c], axis=0))) for c in split(x, [3, 7])]
        total = parts[2].merge(parts[0]).merge(parts[1])
        assert_lse_close(total.result(), exact_lse_axis0(x), np.float64, scale=_finite_max(x, 0))

    def test_two_worker_processes(self):
        # Each worker (a spawned process: no fork of Numba's thread pool) accumulates half of
        # the chunks, starting from an accumulator sent from here; the parent merges.
        rng = _rng("processes")
        x = rng.standard_normal(400) * 30
        chunks = split(x, [50, 120, 200, 260, 333])
        halves = [chunks[:3], chunks[3:]]
        starts = [LogSumExpAccumulator(), LogSumExpAccumulator().update(np.array([-5.0]))]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            futures = [pool.submit(functools.reduce, LogSumExpAccumulator.update, half, start)
                       for half, start in zip(halves, starts)]
            results = [f.result(timeout=120) for f in futures]
        total = LogSumExpAccumulator().merge(results[1]).merge(results[0])
        whole = np.concatenate([x, [-5.0]])
        assert_lse_close(total.result(), exact_lse(whole), np.float64, scale=_finite_max(whole, None))
        local = accumulate([*chunks, np.array([-5.0])])
        assert_lse_close(total.result(), local.result(), np.float64, scale=_finite_max(whole, None))


# ------------------------------------------------------------------------------ properties

FINITE64 = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
FINITE32 = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
SPECIALS = [-np.inf, -np.inf, np.inf, np.nan]


@st.composite
def streams(draw, ndim=1, specials=True):
    """(data, dtype, chunks, axis): data cut at random points along axis 0, possibly with
    empty chunks and a few special values."""
    dtype = draw(st.sampled_from(FLOATS))
    n = draw(st.integers(1, 80))
    shape = (n,) if ndim == 1 else (n, draw(st.integers(1, 3)))
    elements = FINITE32 if dtype == np.float32 else FINITE64
    flat = draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    x = np.array(flat, dtype=dtype).reshape(shape)
    if specials and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            index = tuple(draw(st.integers(0, s - 1)) for s in shape)
            x[index] = draw(st.sampled_from(SPECIALS))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    return x, dtype, split(x, cuts), (None if ndim == 1 else 0)


def reference(x, axis):
    return exact_lse(x) if axis is None else exact_lse_axis0(x)


def merge_tree(draw, accumulators):
    """Merge the accumulators in a random binary tree; returns the root."""
    pool = list(accumulators)
    while len(pool) > 1:
        i = draw(st.integers(0, len(pool) - 1))
        left = pool.pop(i)
        j = draw(st.integers(0, len(pool) - 1))
        right = pool.pop(j)
        if draw(st.booleans()):  # sometimes a pickle round trip on the way
            right = pickle.loads(pickle.dumps(right))
        pool.append(left.merge(right))
    return pool[0]


class TestProperties:
    @PROPS
    @given(streams())
    def test_any_chunking_equals_the_whole(self, stream):
        x, dtype, chunks, axis = stream
        res = accumulate(chunks, axis=axis).result()
        assert res.dtype == np.dtype(dtype) and np.ndim(res) == 0
        assert_lse_close(res, reference(x, axis), dtype, scale=_finite_max(x, axis))
        assert_lse_close(res, scipy_ref(x, axis=axis), dtype, scale=_finite_max(x, axis))

    @PROPS
    @given(streams(ndim=2))
    def test_any_chunking_along_axis0(self, stream):
        x, dtype, chunks, axis = stream
        res = accumulate(chunks, axis=axis).result()
        assert res.dtype == np.dtype(dtype) and res.shape == x.shape[1:]
        assert_lse_close(res, reference(x, axis), dtype, scale=_finite_max(x, axis))

    @PROPS
    @given(streams(ndim=2), st.integers(1, 6), st.data())
    def test_any_merge_tree_equals_the_whole(self, stream, k, data):
        x, dtype, chunks, axis = stream
        accumulators = [LogSumExpAccumulator() for _ in range(k)]
        for chunk in chunks:  # each chunk to a random accumulator, some stay fresh
            accumulators[data.draw(st.integers(0, k - 1))].update(chunk, axis=axis)
        root = merge_tree(data.draw, accumulators)
        res = root.result()
        if all(chunk.size == 0 for chunk in chunks):
            return  # nothing seen (n >= 1 makes this impossible, but keep it explicit)
        assert_lse_close(res, reference(x, axis), dtype, scale=_finite_max(x, axis))
        # The same data in one update: the result of the CPU path, within the same bound.
        whole = nl.logsumexp(x, axis=axis)
        assert_lse_close(res, whole.astype(np.float64), dtype, scale=_finite_max(x, axis))

    @PROPS
    @given(streams(specials=False), st.integers(-100, 100))
    def test_shift_invariance(self, stream, t):
        x, _dtype, chunks, axis = stream
        chunks = [np.asarray(c, dtype=np.float64) for c in chunks]  # (x + t in float64)
        shifted = [c + t for c in chunks]
        res = accumulate(chunks, axis=axis).result()
        res_shifted = accumulate(shifted, axis=axis).result()
        # x + t is rounded: its error is within the scale |m| + |t| of the bound.
        scale = _finite_max(x, axis) + abs(t)
        assert_lse_close(res_shifted, res + t, np.float64, scale=scale)

    @PROPS
    @given(streams(specials=False), st.data())
    def test_positive_weights_any_chunking(self, stream, data):
        x, dtype, chunks, axis = stream
        bs = [np.asarray(data.draw(st.lists(st.floats(0.0, 4.0), min_size=c.size, max_size=c.size)),
                         dtype=np.float64).reshape(c.shape) for c in chunks]
        res = accumulate(chunks, axis=axis, bs=bs).result()
        b = np.concatenate(bs) if bs else np.ones(0)
        # A zero weight drops its term (logsumexp's documented departure: SciPy's fallback
        # takes 0 * exp(710) = nan where every weight is 0), so its entry is -inf for SciPy.
        ref = scipy_ref(np.where(b.reshape(x.shape) == 0, -np.inf, x), axis=axis, b=b)
        assert res.dtype == np.float64  # float64 weights promote, as logsumexp
        assert_lse_close(res, ref, np.float64, scale=_finite_max(x, axis) + 2)
        assert_lse_close(res, nl.logsumexp(x, b=b), np.float64, scale=_finite_max(x, axis) + 2)
