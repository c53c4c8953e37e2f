"""Independent tests of numba_lse on Dask arrays: lazy results equal to the NumPy (CPU) path.

Every function takes ``dask.array.Array`` arguments and returns a lazy Dask array (0-d for a
scalar, tuples for ``return_sign`` / ``return_grad``); nothing runs at call time, errors that
metadata reveal are raised at call time with the NumPy path's exception types, and
``.compute()`` equals numba_lse's CPU result on the same data as NumPy arrays (itself tested
against SciPy and torch; a few checks here call SciPy and torch live too).

The chunks always split the reduced axis (and the class axis of the losses, in some cases),
so the blocks' partials must be merged. The Dask result and the CPU result are computed in a
different order, so they may differ by rounding:

* logsumexp: ``|res - ref| <= k ulp(ref) + k eps64 max(1, |m|)`` (m: the largest finite entry
  of the reduction; the floor is the absolute error of a float64 computation near 0), k = 4
  for float64 and 2 for float32 (computed in float64, rounded once); times the condition
  number ``sum |b e^a| / |sum b e^a|`` where weights cancel;
* softmax, log_softmax: 4 ulp (float64), 2 ulp (float32); log1m_softmax 8 / 2;
* losses: 4 ulp of each value (float64) plus 4 eps64 times the sum of |per-sample losses|
  for 'sum' and 'mean'; float32 2 ulp; gradients 4 ulp plus 4 eps64 max |grad|;
* nan, +inf and -inf always at exactly the CPU result's places.

Warnings are errors in this suite (pyproject.toml), Dask's PerformanceWarning included.
"""

import subprocess
import sys
import textwrap
import threading
import zlib

import numpy as np
import pytest
from numpy.exceptions import AxisError
from scipy import special

import numba_lse as nl

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

EPS64 = float(np.finfo(np.float64).eps)
FLOATS = [np.float32, np.float64]
SOFTMAX_FAMILY = ["softmax", "log_softmax", "log1m_softmax"]
SOFTMAX_ULPS = {("softmax", 8): 4, ("log_softmax", 8): 4, ("log1m_softmax", 8): 8,
                ("softmax", 4): 2, ("log_softmax", 4): 2, ("log1m_softmax", 4): 2}


# ------------------------------------------------------------------------------ helpers

def _rng(*key):
    """A deterministic generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _name(dtype):
    return np.dtype(dtype).name


@pytest.fixture(params=["threads", "synchronous"])
def scheduler(request):
    """Run the test's computations under Dask's threaded, then its synchronous scheduler."""
    with dask.config.set(scheduler=request.param):
        yield request.param


def to_dask(x, chunks):
    return da.from_array(np.asarray(x), chunks=chunks)


def computed(result):
    """result.compute() as a NumPy array, after checking it is a lazy Dask array."""
    assert isinstance(result, da.Array), f"expected a dask.array.Array, got {type(result)}"
    return np.asarray(result.compute())


def finite_max(x, axis=None, keepdims=False):
    """|largest finite entry| of each reduction, 0 where there is none (float64)."""
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim)) if axis is None else axis
    with np.errstate(invalid="ignore"):
        m = np.max(np.where(np.isfinite(x), x, -np.inf), axis=axes, keepdims=keepdims,
                   initial=-np.inf)
    return np.where(np.isfinite(m), np.abs(m), 0.0)


def weight_cond(a, b, axis=None, keepdims=False):
    """Condition number of sum b e^a over axis (1 without cancellation)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    axes = tuple(range(a.ndim)) if axis is None else axis
    with np.errstate(all="ignore"):
        live = (b != 0) & np.isfinite(a)
        m = np.max(np.where(live, a, -np.inf), axis=axes, keepdims=True, initial=-np.inf)
        terms = np.where(live, b * np.exp(a - np.where(np.isfinite(m), m, 0.0)), 0.0)
        p = np.sum(np.abs(terms), axis=axes, keepdims=keepdims)
        q = np.abs(np.sum(terms, axis=axes, keepdims=keepdims))
        return np.where(p == 0, 1.0, p / q)


def assert_close(res, ref, *, ulps, floor=0.0, cond=1.0, what="result"):
    """``res`` (Dask, computed) against ``ref`` (the CPU result): same dtype and shape, the
    same special values at the same places, finite values within
    ``(ulps * ulp(ref) + ulps * eps64 * floor) * cond``."""
    res, ref = np.asarray(res), np.asarray(ref)
    assert res.dtype == ref.dtype, f"{what}: dtype {res.dtype}, CPU path gives {ref.dtype}"
    assert res.shape == ref.shape, f"{what}: shape {res.shape}, CPU path gives {ref.shape}"
    got, want = res.astype(np.float64), ref.astype(np.float64)
    for label, test in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = test(got) != test(want)
        if mismatch.any():
            i = tuple(int(k) for k in np.argwhere(mismatch)[0])
            raise AssertionError(f"{what}: {label} positions differ, first at {i}: "
                                 f"dask {got[i]!r}, CPU {want[i]!r}")
    with np.errstate(invalid="ignore", over="ignore"):
        spacing = np.spacing(np.abs(ref)).astype(np.float64)
        tol = (ulps * spacing + ulps * EPS64 * np.asarray(floor, np.float64)) * cond
        err = np.abs(got - want)
        bad = np.isfinite(want) & ~(err <= tol)
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        tol = np.broadcast_to(tol, bad.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} element(s) out of tolerance, first at {i}: "
            f"dask {got[i]!r}, CPU {want[i]!r}, |error| {err[i]:.3g} > {tol[i]:.3g}")


def lse_ulps(dtype):
    return 4 if np.dtype(dtype) == np.float64 else 2


def check_lse(x, chunks, *, what="", b=None, b_chunks=None, where=None, where_chunks=None,
              **kwargs):
    """nl.logsumexp on Dask arrays against the same call on the NumPy arrays."""
    xd = to_dask(x, chunks)
    bd = b if b_chunks is None else to_dask(b, b_chunks)
    wd = where if where_chunks is None else to_dask(where, where_chunks)
    res = nl.logsumexp(xd, b=bd, where=wd, **kwargs)
    ref = nl.logsumexp(x, b=b, where=where, **kwargs)
    axis, keepdims = kwargs.get("axis"), kwargs.get("keepdims", False)
    floor = np.maximum(1.0, finite_max(x if b is None else np.broadcast_arrays(x, b)[0],
                                       axis, keepdims))
    weights = np.ones(()) if b is None else b
    if where is not None:
        weights = np.where(where, weights, 0.0)
    cond = weight_cond(x, weights, axis, keepdims)
    if kwargs.get("return_sign"):
        assert isinstance(res, tuple) and len(res) == 2, f"{what}: expected (lse, sign), got {type(res)}"
        assert all(isinstance(r, da.Array) for r in res), f"{what}: {[type(r) for r in res]}"
        (out, sign), (ref_out, ref_sign) = dask.compute(*res), ref
        assert_close(out, ref_out, ulps=lse_ulps(x.dtype), floor=floor, cond=cond, what=what)
        assert_close(sign, ref_sign, ulps=0, what=what + " [sign]")
        return out, sign
    out = computed(res)
    if np.ndim(ref) == 0:
        assert res.ndim == 0, f"{what}: a scalar result must be a 0-d Dask array, got ndim {res.ndim}"
    assert_close(out, ref, ulps=lse_ulps(x.dtype), floor=floor, cond=cond, what=what)
    return out


# A counter of the calls of a block function, to see when Dask runs the graph.
_CALLS = {}
_CALLS_LOCK = threading.Lock()


def _counted(block, key):
    with _CALLS_LOCK:
        _CALLS[key] = _CALLS.get(key, 0) + 1
    return block


def counting(x, chunks, key):
    """A Dask array of x whose blocks count their computations under _CALLS[key]."""
    x = np.asarray(x)
    _CALLS[key] = 0
    base = da.from_array(x, chunks=chunks)
    return da.map_blocks(_counted, base, key=key, dtype=x.dtype,
                         meta=np.empty((0,) * x.ndim, dtype=x.dtype))


def special_matrix(dtype):
    """(7, 13), chunks (3, 4) split it into 3 x 4 blocks; block (0, 0) is all -inf."""
    rng = _rng("special", _name(dtype))
    x = rng.standard_normal((7, 13)) * 3
    huge = 1e308 if np.dtype(dtype) == np.float64 else 3e38
    x[0:3, 0:4] = -np.inf                 # a whole block of -inf ...
    x[0, :] = -np.inf                     # ... and a whole row of them across blocks
    x[3, 5] = np.inf
    x[4, 11] = np.nan
    x[5, :] = [1000.0, -1000.0] * 6 + [1000.0]
    x[6, 2], x[6, 9] = huge, -huge
    x[1, 12] = -1000.0
    return x.astype(dtype)


# ------------------------------------------------------------------------------ laziness

def _lazy_cases():
    rng = _rng("lazy")
    x = rng.standard_normal((7, 13))
    b = rng.uniform(-1.0, 2.0, (7, 13))
    mask = rng.random((7, 13)) < 0.7
    logits = rng.standard_normal((11, 5))
    target = np.array([0, 1, 2, 3, 4, -100, 1, 2, 3, 4, 0])
    probs = special.softmax(rng.standard_normal((11, 5)), axis=1)

    def lse(c):
        return nl.logsumexp(c(x, (3, 4)), axis=1)

    def lse_all(c):
        return nl.logsumexp(c(x, (3, 4)), b=c(b, (4, 3)), where=c(mask, (3, 13)),
                            return_sign=True)

    def lse_b_only(c):
        return nl.logsumexp(x, axis=0, b=c(b, (3, 4)))

    def lse_where_only(c):
        return nl.logsumexp(x, axis=(0, 1), where=c(mask, (3, 4)))

    def soft(name, axis):
        return lambda c: getattr(nl, name)(c(x, (3, 4)), axis=axis)

    def soft_where(c):
        return nl.softmax(x, axis=1, where=c(mask, (3, 4)))

    def ce_grad(c):
        return nl.cross_entropy(c(logits, (4, 2)), c(target, 3), weight=np.linspace(0.5, 2, 5),
                                label_smoothing=0.1, return_grad=True)

    def ce_prob(c):
        return nl.cross_entropy(c(logits, (4, 5)), c(probs, (4, 5)), reduction="sum",
                                return_grad=True)

    def ce_target_only(c):
        return nl.cross_entropy(logits, c(target, 4), reduction="none")

    def nll(c):
        return nl.nll_loss(c(nl.log_softmax(logits, axis=1), (4, 2)), c(target, 3))

    def ce_dask_weight(c):
        return nl.cross_entropy(c(logits, (4, 5)), c(target, 4), weight=c(np.linspace(0.5, 2, 5), 2),
                                return_grad=True)

    def nll_dask_weight_only(c):
        return nl.nll_loss(nl.log_softmax(logits, axis=1), target, weight=c(np.linspace(0.5, 2, 5), 2))

    return {
        "logsumexp": lse, "logsumexp-b-where-sign": lse_all, "logsumexp-dask-b-only": lse_b_only,
        "logsumexp-dask-where-only": lse_where_only,
        "softmax-split": soft("softmax", 1), "softmax-whole-axis": soft("softmax", 0),
        "softmax-axis-None": soft("softmax", None),
        "log_softmax-split": soft("log_softmax", 1),
        "log1m_softmax-split": soft("log1m_softmax", 1),
        "log1m_softmax-axis-None": soft("log1m_softmax", None),
        "softmax-dask-where-only": soft_where,
        "cross_entropy-grad": ce_grad, "cross_entropy-probabilities": ce_prob,
        "cross_entropy-dask-target-only": ce_target_only, "nll_loss": nll,
        "cross_entropy-dask-weight": ce_dask_weight, "nll_loss-dask-weight-only": nll_dask_weight_only,
    }


LAZY_CASES = _lazy_cases()


def test_building_a_graph_imports_no_numba():
    # Dask calls a block's function on empty arrays to learn what it returns, unless given
    # ``meta``: that would import Numba and load (or compile) kernels as the graph is built,
    # in a client that may never compute a block itself.
    script = textwrap.dedent("""
        import sys, numpy as np, dask, dask.array as da, numba_lse as nl
        rng = np.random.default_rng(0)
        x = da.from_array(rng.standard_normal((12, 10)), chunks=(4, 5))
        mask = da.from_array(rng.random((12, 10)) < 0.8, chunks=(4, 10))
        t = da.from_array(rng.integers(0, 10, 12), chunks=4)
        graphs = [nl.logsumexp(x, axis=1), nl.logsumexp(x, return_sign=True)[1],
                  nl.softmax(x.rechunk((4, 10)), axis=1),
                  nl.log_softmax(x.rechunk((4, 10)), axis=1, where=mask),
                  nl.softmax(x, axis=1), nl.log1m_softmax(x, axis=0),
                  nl.cross_entropy(x, t), nl.cross_entropy(x, t, return_grad=True)[1],
                  nl.nll_loss(x, t, reduction="none"), nl.nll_loss(x, t)]
        print("numba" in sys.modules)
        results = dask.compute(*graphs, scheduler="sync")
        x, t = x.compute(), t.compute()
        # (Within rounding: Dask merges the blocks' partials in another order.)
        print(np.allclose(results[0], nl.logsumexp(x, axis=1), rtol=1e-14, atol=0),
              np.allclose(results[-1], nl.nll_loss(x, t), rtol=1e-14, atol=0),
              "numba" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "True"]


@pytest.mark.parametrize("case", LAZY_CASES)
def test_nothing_is_computed_at_call_time(case):
    keys = []

    def counted_input(x, chunks):
        key = f"{case}-{len(keys)}"
        keys.append(key)
        return counting(x, chunks, key)

    result = LAZY_CASES[case](counted_input)
    results = result if isinstance(result, tuple) else (result,)
    assert all(isinstance(r, da.Array) for r in results), (
        f"{case}: expected Dask arrays, got {[type(r).__name__ for r in results]}")
    calls = {key: _CALLS[key] for key in keys}
    assert not any(calls.values()), f"{case}: blocks computed at call time: {calls}"
    dask.compute(*results)
    assert any(_CALLS[key] for key in keys), f"{case}: compute() ran none of the input blocks"


def test_scalar_results_are_0d_dask_arrays():
    x = _rng("0d").standard_normal((7, 13))
    lse, sign = nl.logsumexp(to_dask(x, (3, 4)), return_sign=True)
    assert isinstance(lse, da.Array) and lse.ndim == 0 and lse.shape == ()
    assert isinstance(sign, da.Array) and sign.ndim == 0
    logits, target = to_dask(x, (3, 13)), to_dask(np.arange(7) % 13, 3)
    for reduction in ("sum", "mean"):
        loss = nl.cross_entropy(logits, target, reduction=reduction)
        assert isinstance(loss, da.Array) and loss.ndim == 0, reduction
        loss = nl.nll_loss(logits, target, reduction=reduction)
        assert isinstance(loss, da.Array) and loss.ndim == 0, reduction


# ------------------------------------------------------------------------------ logsumexp

LSE_GRID = [
    pytest.param((7, 13), (3, 4), axis, id=f"7x13-axis={axis}")
    for axis in [None, 0, 1, -1, -2, (0, 1), (1, 0)]
] + [
    pytest.param((5, 6, 7), (2, 3, 4), axis, id=f"5x6x7-axis={axis}")
    for axis in [None, 0, 1, 2, -1, (0, 2), (2, 0), (-1, 1), (0, 1, 2)]
]


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
@pytest.mark.parametrize("shape, chunks, axis", LSE_GRID)
def test_logsumexp_matches_cpu(scheduler, shape, chunks, axis, dtype):
    x = (_rng("lse", shape, axis, _name(dtype)).standard_normal(shape) * 10).astype(dtype)
    for keepdims in (False, True):
        out = check_lse(x, chunks, axis=axis, keepdims=keepdims,
                        what=f"{scheduler} shape={shape} axis={axis} keepdims={keepdims}")
        assert out.dtype == np.dtype(dtype)


def test_logsumexp_matches_scipy():
    x = _rng("lse-scipy").standard_normal((5, 6, 7)) * 30
    for axis in (None, 1, (0, 2)):
        res = computed(nl.logsumexp(to_dask(x, (2, 3, 4)), axis=axis))
        ref = special.logsumexp(x, axis=axis)
        floor = np.maximum(1.0, finite_max(x, axis))
        assert_close(res, np.asarray(ref), ulps=4, floor=floor, what=f"vs scipy axis={axis}")
        res, sign = dask.compute(*nl.logsumexp(to_dask(x, (2, 3, 4)), axis=axis,
                                               b=-np.ones(7), return_sign=True))
        ref, ref_sign = special.logsumexp(x, axis=axis, b=-np.ones(7), return_sign=True)
        assert_close(res, np.asarray(ref), ulps=4, floor=floor, what=f"vs scipy b=-1 axis={axis}")
        np.testing.assert_array_equal(sign, ref_sign)


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_logsumexp_weights(scheduler, dtype):
    rng = _rng("lse-b", _name(dtype))
    x = (rng.standard_normal((7, 13)) * 3).astype(dtype)
    b_neg = rng.uniform(0.2, 2.0, (7, 13)) * np.where(rng.random((7, 13)) < 0.3, -1, 1)
    b_neg[2] = -np.abs(b_neg[2])                       # a row with a negative total
    b_neg[4, :4] = 0.0                                 # zeros in one block
    b_neg = b_neg.astype(dtype)
    for axis in (None, 0, 1, (0, 1)):
        for return_sign in (False, True):
            ctx = f"{scheduler} axis={axis} return_sign={return_sign}"
            # b a Dask array chunked like a, and chunked differently.
            check_lse(x, (3, 4), b=b_neg, b_chunks=(3, 4), axis=axis, return_sign=return_sign,
                      what=ctx + " b dask (3, 4)")
            check_lse(x, (3, 4), b=b_neg, b_chunks=(4, 5), axis=axis, return_sign=return_sign,
                      what=ctx + " b dask (4, 5)")
    # Broadcastable weights: NumPy (1, 13), Dask (7, 1), a scalar; and a NumPy a with a Dask b.
    row = rng.uniform(0.5, 2.0, (1, 13)).astype(dtype)
    col = -rng.uniform(0.5, 2.0, (7, 1)).astype(dtype)
    check_lse(x, (3, 4), b=row, axis=1, what="numpy b (1, 13)")
    check_lse(x, (3, 4), b=col, b_chunks=(2, 1), axis=1, return_sign=True, what="dask b (7, 1)")
    check_lse(x, (3, 4), b=col, b_chunks=(2, 1), axis=1, what="dask b (7, 1), nan where negative")
    check_lse(x, (3, 4), b=2.0, axis=0, what="scalar b")
    res = nl.logsumexp(x, b=to_dask(b_neg, (3, 4)), axis=1, return_sign=True)
    assert all(isinstance(r, da.Array) for r in res)
    ref = nl.logsumexp(x, b=b_neg, axis=1, return_sign=True)
    out, sign = dask.compute(*res)
    assert_close(out, ref[0], ulps=lse_ulps(dtype), floor=finite_max(x, 1) + 1,
                 cond=weight_cond(x, b_neg, 1), what="numpy a, dask b")
    assert_close(sign, ref[1], ulps=0, what="numpy a, dask b [sign]")


def test_logsumexp_where(scheduler):
    rng = _rng("lse-where")
    x = rng.standard_normal((7, 13)) * 5
    mask = rng.random((7, 13)) < 0.6
    mask[3] = False                                    # a fully masked row -> -inf
    mask[:, 6] = False
    for axis in (None, 0, 1, -1):
        check_lse(x, (3, 4), where=mask, where_chunks=(3, 4), axis=axis, what=f"axis={axis}")
        check_lse(x, (3, 4), where=mask, where_chunks=(2, 13), axis=axis,
                  what=f"axis={axis} mask chunked (2, 13)")
    row = rng.random((1, 13)) < 0.5
    check_lse(x, (3, 4), where=row, axis=1, what="numpy where (1, 13)")
    check_lse(x, (3, 4), where=row, where_chunks=(1, 5), axis=0, what="dask where (1, 13)")
    b = rng.uniform(-1.0, 2.0, (7, 13))
    check_lse(x, (3, 4), b=b, b_chunks=(3, 4), where=mask, where_chunks=(3, 4), axis=1,
              return_sign=True, what="b and where")
    out = computed(nl.logsumexp(x, axis=1, where=to_dask(mask, (3, 4))))
    assert_close(out, nl.logsumexp(x, axis=1, where=mask), ulps=4,
                 floor=finite_max(x, 1) + 1, what="numpy a, dask where")
    assert out[3] == -np.inf


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_logsumexp_special_values(scheduler, dtype):
    x = special_matrix(dtype)
    for axis in (None, 0, 1, (1, 0)):
        for return_sign in (False, True):
            check_lse(x, (3, 4), axis=axis, return_sign=return_sign,
                      what=f"{scheduler} axis={axis} return_sign={return_sign}")
    # Without the nan and +inf, the whole reduction is finite (dominated by the huge entry).
    clean = np.where(np.isnan(x) | np.isposinf(x), 0, x).astype(dtype)
    out = check_lse(clean, (3, 4), what="no nan/+inf")
    assert np.isfinite(out)
    # Row 0 is all -inf across blocks: -inf, sign 0, as the CPU path (and SciPy).
    out, sign = check_lse(x, (3, 4), axis=1, return_sign=True, what="signs")
    assert out[0] == -np.inf
    if dtype == np.float64:
        with np.errstate(all="ignore"):  # (SciPy's own overflow in x - max at +-1e308)
            ref, ref_sign = special.logsumexp(x, axis=1, return_sign=True)
        assert_close(out, ref, ulps=4, floor=np.maximum(1.0, finite_max(x, 1)), what="vs scipy")
        np.testing.assert_array_equal(sign, ref_sign)


def test_logsumexp_one_dominant_term_across_chunks():
    # log1p(e^-40): the digits of the small term must survive the merge of the blocks.
    x = np.full(13, -np.inf)
    x[1], x[10] = 0.0, -40.0
    res = computed(nl.logsumexp(to_dask(x, 4)))
    exact = 4.248354255291589e-18  # log1p(e^-40), mpmath: 4.24835425529158899...e-18
    assert abs(res - exact) <= 4 * EPS64 * exact, res
    assert abs(res - nl.logsumexp(x)) <= 4 * EPS64 * exact, (res, nl.logsumexp(x))


def test_logsumexp_layouts_and_dtypes():
    rng = _rng("layouts")
    base = np.asfortranarray(rng.standard_normal((13, 14)) * 4)
    for view, label in ((base.T, "transposed"), (base[::-2, 1::3], "negative/step strides")):
        for axis in (None, 0, 1):
            check_lse(view, (3, 2), axis=axis, what=f"{label} axis={axis}")
    d = to_dask(np.ascontiguousarray(base), (4, 5)).T  # a transposed Dask array
    assert_close(computed(nl.logsumexp(d, axis=1)), nl.logsumexp(base.T, axis=1), ulps=4,
                 floor=finite_max(base, 0) + 1, what="dask .T")
    ints = rng.integers(-5, 6, (7, 13))
    out = check_lse(ints, (3, 4), axis=1, what="int64")
    assert out.dtype == np.float64
    mixed = nl.logsumexp(to_dask(ints.astype(np.float32), (3, 4)), axis=0,
                         b=to_dask(np.ones((7, 13)), (3, 4)))
    assert mixed.dtype == np.float64  # float32 with float64 weights promotes, as NumPy


def test_other_byte_order_as_numpy():
    # Big-endian blocks (FITS files): converted, as the NumPy path converts them; results in
    # the machine's order with the bits of the same data in it.
    rng = _rng("byte order")
    x = (rng.standard_normal((7, 13)) * 4).astype(np.float32)
    big = to_dask(x.astype(">f4"), (3, 4))
    for name in ("logsumexp", "softmax", "log_softmax", "log1m_softmax"):
        got, want = computed(getattr(nl, name)(big, axis=1)), getattr(nl, name)(x, axis=1)
        assert got.dtype == want.dtype and got.dtype.isnative, name
        assert got.tobytes() == want.tobytes(), name
    t = rng.integers(0, 13, 7)
    for name in ("nll_loss", "cross_entropy"):
        got = computed(getattr(nl, name)(big, to_dask(t.astype(">i8"), 3), reduction="none"))
        want = getattr(nl, name)(x, t, reduction="none")
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name


def test_logsumexp_zero_size_axis():
    x = np.empty((0, 4))
    check_lse(x, (2, 2), axis=0, what="empty axis 0")
    check_lse(x, (2, 2), axis=0, return_sign=True, what="empty axis 0, sign")


def test_logsumexp_complex_dask_raises_type_error():
    # Documented in the README: complex Dask input is not supported (NumPy complex is).
    z = to_dask(np.ones((4, 4)) + 1j, (2, 2))
    with pytest.raises(TypeError):
        nl.logsumexp(z, axis=1)


# ------------------------------------------------------------------------------ softmax family

SOFTMAX_GRID = [
    pytest.param((7, 13), (3, 4), 1, id="7x13-axis=1-split"),
    pytest.param((7, 13), (3, 4), 0, id="7x13-axis=0-split"),
    pytest.param((7, 13), (3, 4), -1, id="7x13-axis=-1-split"),
    pytest.param((7, 13), (3, 4), None, id="7x13-axis=None"),
    pytest.param((7, 13), (3, 4), (0, 1), id="7x13-axis=(0,1)"),
    pytest.param((7, 13), (3, 13), 1, id="7x13-axis=1-one-chunk"),
    pytest.param((5, 6, 7), (2, 3, 4), (0, 2), id="5x6x7-axis=(0,2)"),
    pytest.param((5, 6, 7), (2, 3, 4), 1, id="5x6x7-axis=1"),
    pytest.param((5, 6, 7), (2, 3, 4), None, id="5x6x7-axis=None"),
]


def check_softmax(name, x, chunks, axis, *, where=None, where_chunks=None, what=""):
    wd = where if where_chunks is None else to_dask(where, where_chunks)
    res = getattr(nl, name)(to_dask(x, chunks), axis=axis, where=wd)
    ref = getattr(nl, name)(x, axis=axis, where=where)
    out = computed(res)
    ulps = SOFTMAX_ULPS[(name, np.dtype(ref.dtype).itemsize)]
    assert_close(out, ref, ulps=ulps, what=f"{name} {what}")
    return out


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
@pytest.mark.parametrize("shape, chunks, axis", SOFTMAX_GRID)
@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
def test_softmax_family_matches_cpu(scheduler, name, shape, chunks, axis, dtype):
    x = (_rng("softmax", name, shape, axis, _name(dtype)).standard_normal(shape) * 6).astype(dtype)
    out = check_softmax(name, x, chunks, axis, what=f"{scheduler} axis={axis}")
    assert out.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_matches_scipy(name):
    x = _rng("softmax-scipy", name).standard_normal((5, 6, 7)) * 20
    for axis in (None, 1, (0, 2)):
        res = computed(getattr(nl, name)(to_dask(x, (2, 3, 4)), axis=axis))
        ref = getattr(special, name)(x, axis=axis)
        # SciPy's own float64 error is a few ulp, and an absolute eps near 0 for log_softmax.
        assert_close(res, ref, ulps=8, floor=(1.0 if name == "log_softmax" else 0.0),
                     what=f"{name} vs scipy axis={axis}")


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
def test_softmax_family_special_values(scheduler, name, dtype):
    x = special_matrix(dtype)
    for axis in (1, 0, None):
        check_softmax(name, x, (3, 4), axis, what=f"{scheduler} special axis={axis}")
    clean = np.where(np.isnan(x) | np.isposinf(x), 0, x).astype(dtype)
    out = check_softmax(name, clean, (3, 4), None, what="no nan/+inf, axis=None")
    assert not np.isnan(out).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
@pytest.mark.parametrize("position", [0, 5, 12])
@pytest.mark.parametrize("big", [800.0, 30.0, 5.0])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_log1m_softmax_dominant_entry_split(dtype, position, big, offset):
    # Each row: twelve entries at `offset` and one dominant entry `big` above them, the row
    # split in 4 chunks. At offset 1000, log(sum below) - max must not be formed from two
    # numbers near 1000 (an ulp of 1000 is hundreds of ulps of the result).
    if dtype == np.float32 and big == 800.0:
        big = 80.0
    row = np.zeros(13)
    row[position] = big
    x = (np.stack([row, np.roll(row, 4), -row, row * 0.5]) + offset).astype(dtype)
    out = check_softmax("log1m_softmax", x, (2, 4), 1, what=f"dominant {big} at {position}")
    # The dominant entry: log(1 - p) = log(12) - log(12 + e^big), exactly (float64 reference).
    exact = np.log(12.0) - np.logaddexp(np.log(12.0), float(np.asarray(big, dtype)))
    value = float(out[0, position])
    assert abs(value - exact) <= 4 * float(np.finfo(dtype).eps) * abs(exact), (value, exact)
    # And a tie at the max across chunks: no dominant entry, each tied entry log(1 - p).
    tie = np.full(13, offset)
    tie[1] = tie[11] = offset + big
    check_softmax("log1m_softmax", tie.astype(dtype)[None], (1, 4), 1, what="tie across chunks")


@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
def test_softmax_family_where(scheduler, name):
    rng = _rng("softmax-where", name)
    x = rng.standard_normal((7, 13)) * 4
    mask = rng.random((7, 13)) < 0.6
    mask[:, 0] = True
    mask[2] = False                                    # a fully masked row, split in 4 chunks
    mask[5] = False
    mask[5, 12] = True                                 # one kept entry, in the last chunk
    for axis in (1, 0, None):
        check_softmax(name, x, (3, 4), axis, where=mask, where_chunks=(3, 4), what=f"axis={axis}")
        check_softmax(name, x, (3, 4), axis, where=mask, where_chunks=(4, 13),
                      what=f"axis={axis} mask chunked (4, 13)")
    out = check_softmax(name, x, (3, 4), 1, where=mask[:1], what="numpy where (1, 13)")
    out = computed(getattr(nl, name)(x, axis=1, where=to_dask(mask, (3, 4))))
    assert_close(out, getattr(nl, name)(x, axis=1, where=mask),
                 ulps=SOFTMAX_ULPS[(name, 8)], what="numpy x, dask where")
    masked_value = {"softmax": 0.0, "log_softmax": -np.inf, "log1m_softmax": 0.0}[name]
    assert (out[2] == masked_value).all()


def test_softmax_sums_to_one_across_chunks():
    x = _rng("sum1").standard_normal((20, 300)) * 3
    p = nl.softmax(to_dask(x, (5, 64)), axis=1)
    total = computed(p.sum(axis=1))
    assert np.all(np.abs(total - 1) <= 300 * EPS64), np.abs(total - 1).max()


# ------------------------------------------------------------------------------ losses

LOSS_LAYOUTS = {
    # name: (logits shape, logits chunks, target chunks)
    "NC-rows": ((11, 5), (4, 5), (3,)),
    "NC-classes-split": ((11, 5), (4, 2), (4,)),
    "NCd-rows": ((6, 5, 4), (2, 5, 3), (3, 2)),
    "NCd-classes-split": ((6, 5, 4), (3, 2, 2), (2, 4)),
}
REDUCTIONS = ["none", "sum", "mean"]


def _index_target(rng, shape, ignore_index):
    target = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    target.reshape(-1)[::4] = ignore_index
    return target


def _loss_tolerance(ref_losses, reduction, dtype):
    """(ulps, floor) for a loss, from the per-sample float64 losses of the CPU path: a sum
    in another order differs by a few eps64 times the sum of |terms|."""
    if np.dtype(dtype) == np.float32:
        return 2, 0.0
    if reduction == "none":
        return 4, 0.0
    finite = np.abs(ref_losses)[np.isfinite(ref_losses)]
    return 4, float(np.sum(finite))


def check_loss(function, x, target, layout, reduction, **kwargs):
    shape, chunks, target_chunks = LOSS_LAYOUTS[layout]
    target_is_prob = np.asarray(target).dtype.kind == "f"
    xd = to_dask(x, chunks)
    td = to_dask(target, chunks if target_is_prob else target_chunks)
    res = function(xd, td, reduction=reduction, **kwargs)
    ref = function(x, target, reduction=reduction, **kwargs)
    per_sample = function(x.astype(np.float64), target, reduction="none",
                          **{k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v)
                             for k, v in kwargs.items() if k != "return_grad"})
    what = f"{function.__name__} {layout} {reduction} {kwargs}"
    if kwargs.get("return_grad"):
        assert isinstance(res, tuple) and len(res) == 2 and all(isinstance(r, da.Array) for r in res), what
        (loss, grad), (ref_loss, ref_grad) = dask.compute(*res), ref
        finite = np.abs(np.asarray(ref_grad, np.float64))
        finite = finite[np.isfinite(finite)]
        grad_floor = float(finite.max()) if finite.size else 0.0
        assert_close(grad, ref_grad, ulps=4, floor=grad_floor, what=what + " [grad]")
    else:
        loss, ref_loss = computed(res), ref
    ulps, floor = _loss_tolerance(per_sample, reduction, x.dtype)
    if reduction != "none":
        assert np.ndim(loss) == 0, f"{what}: a {reduction!r} loss is a scalar"
    assert_close(loss, ref_loss, ulps=ulps, floor=floor, what=what)
    return loss


@pytest.mark.parametrize("target_kind", ["index", "index-weighted-smoothed", "probabilities"])
@pytest.mark.parametrize("layout", LOSS_LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_cross_entropy_matches_cpu(scheduler, dtype, layout, target_kind):
    rng = _rng("ce", _name(dtype), layout, target_kind)
    shape = LOSS_LAYOUTS[layout][0]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    kwargs = {}
    if target_kind == "probabilities":
        target = special.softmax(rng.standard_normal(shape) * 2, axis=1).astype(dtype)
        kwargs["label_smoothing"] = 0.05
    else:
        ignore_index = -100 if target_kind == "index" else 2
        target = _index_target(rng, shape, ignore_index)
        if target_kind != "index":
            kwargs.update(weight=rng.uniform(0.25, 2.0, shape[1]).astype(dtype),
                          ignore_index=ignore_index, label_smoothing=0.1)
    for reduction in REDUCTIONS:
        for return_grad in (False, True):
            loss = check_loss(nl.cross_entropy, x, target, layout, reduction,
                              return_grad=return_grad, **kwargs)
            assert np.asarray(loss).dtype == np.dtype(dtype)


@pytest.mark.parametrize("layout", LOSS_LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_nll_loss_matches_cpu(scheduler, dtype, layout):
    rng = _rng("nll", _name(dtype), layout)
    shape = LOSS_LAYOUTS[layout][0]
    log_probs = nl.log_softmax((rng.standard_normal(shape) * 3).astype(dtype), axis=1)
    target = _index_target(rng, shape, -100)
    weight = rng.uniform(0.25, 2.0, shape[1]).astype(dtype)
    for reduction in REDUCTIONS:
        check_loss(nl.nll_loss, log_probs, target, layout, reduction)
        check_loss(nl.nll_loss, log_probs, np.where(target < 0, 1, target), layout, reduction,
                   weight=weight, ignore_index=1)


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng("torch")
    x = rng.standard_normal((11, 5, 3)) * 4
    x[3, :, 1] = [1000.0, -1000.0, 0.0, 999.0, -5.0]
    target = rng.integers(0, 5, (11, 3))
    target[::5, 0] = -100
    weight = rng.uniform(0.5, 2.0, 5)
    for reduction in REDUCTIONS:
        loss, grad = dask.compute(*nl.cross_entropy(
            to_dask(x, (4, 2, 2)), to_dask(target, (3, 3)), weight=weight, reduction=reduction,
            label_smoothing=0.1, return_grad=True))
        xt = torch.tensor(x, requires_grad=True)
        ref = F.cross_entropy(xt, torch.tensor(target), weight=torch.tensor(weight),
                              reduction=reduction, label_smoothing=0.1)
        ref.sum().backward()
        ref_loss, ref_grad = ref.detach().numpy(), xt.grad.numpy()
        scale = 1000.0 * (11 * 3 if reduction == "sum" else 1)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=64 * EPS64 * scale)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12,
                                   atol=64 * EPS64 * float(np.abs(ref_grad).max()))
        nll = computed(nl.nll_loss(to_dask(nl.log_softmax(x, axis=1), (4, 5, 2)),
                                   to_dask(target, (5, 3)), weight=weight, reduction=reduction))
        ref_nll = F.nll_loss(torch.log_softmax(torch.tensor(x), 1), torch.tensor(target),
                             weight=torch.tensor(weight), reduction=reduction).numpy()
        np.testing.assert_allclose(nll, ref_nll, rtol=1e-12, atol=64 * EPS64 * scale)


def test_losses_with_numpy_logits_or_dask_weight():
    rng = _rng("mixed-loss")
    x = rng.standard_normal((11, 5))
    target = _index_target(rng, (11, 5), -100)
    weight = rng.uniform(0.5, 2.0, 5)
    for reduction in REDUCTIONS:
        res = nl.cross_entropy(x, to_dask(target, 4), weight=weight, reduction=reduction)
        assert_close(computed(res), nl.cross_entropy(x, target, weight=weight, reduction=reduction),
                     ulps=4, floor=float(np.abs(x).max()) * 11, what=f"numpy logits {reduction}")
        res = nl.cross_entropy(to_dask(x, (4, 5)), to_dask(target, 4),
                               weight=to_dask(weight, 2), reduction=reduction)
        assert_close(computed(res), nl.cross_entropy(x, target, weight=weight, reduction=reduction),
                     ulps=4, floor=float(np.abs(x).max()) * 11, what=f"dask weight {reduction}")


@pytest.mark.parametrize("function", [nl.cross_entropy, nl.nll_loss], ids=lambda f: f.__name__)
def test_loss_special_values(function):
    x = np.array([[1000.0, -1000.0, 0.0],
                  [-np.inf, 0.0, 1.0],
                  [np.nan, 0.0, 1.0],
                  [5.0, 5.0, 5.0],
                  [0.0, -np.inf, 2.0],
                  [np.nan, np.inf, 0.0]])
    if function is nl.nll_loss:
        x = np.where(np.isfinite(x), -np.abs(x), x)
    target = np.array([1, 2, 0, -100, 1, -100])
    for reduction in REDUCTIONS:
        res = computed(function(to_dask(x, (4, 2)), to_dask(target, 3), reduction=reduction))
        assert_close(res, function(x, target, reduction=reduction), ulps=4, floor=2000.0 * 6,
                     what=f"{function.__name__} {reduction}")
    # Every target ignored: 'mean' is nan (0 / 0), as torch.
    ignored = np.full(6, -100)
    res = computed(function(to_dask(np.zeros((6, 3)), (4, 3)), to_dask(ignored, 4)))
    assert np.isnan(res) and np.isnan(function(np.zeros((6, 3)), ignored))


@pytest.mark.parametrize("function", [nl.cross_entropy, nl.nll_loss], ids=lambda f: f.__name__)
def test_out_of_range_target_raises_on_compute(function):
    x = _rng("oob").standard_normal((8, 5))
    target = np.array([0, 1, 2, 3, 4, 7, 1, 2])
    with pytest.raises(IndexError, match=r"^Target 7 is out of bounds\.$"):
        function(x, target)  # the NumPy path, for the message
    for reduction in REDUCTIONS:
        lazy = function(to_dask(x, (3, 5)), to_dask(target, 3), reduction=reduction)  # no raise
        assert isinstance(lazy, da.Array)
        with pytest.raises(IndexError, match=r"^Target 7 is out of bounds\.$"):
            lazy.compute()
    if function is nl.cross_entropy:
        loss, grad = function(to_dask(x, (3, 5)), to_dask(target, 3), return_grad=True)
        with pytest.raises(IndexError, match=r"Target 7 is out of bounds\."):
            grad.compute()


def test_unknown_chunk_sizes():
    # Boolean indexing leaves chunk sizes unknown (nan): a reduction or a normalisation
    # works as on any array; b, where= and the losses, which must compare shapes, say to
    # compute the chunk sizes (they said the batch sizes differed, or failed in NumPy).
    x = np.arange(12.0).reshape(6, 2) - 3
    lazy = to_dask(x, 3)
    kept = lazy[lazy[:, 0] > -2]
    assert np.isnan(kept.shape[0])
    expected = x[x[:, 0] > -2]
    np.testing.assert_array_equal(nl.logsumexp(kept, axis=1).compute(),
                                  nl.logsumexp(expected, axis=1))
    np.testing.assert_array_equal(nl.softmax(kept, axis=1).compute(), nl.softmax(expected, axis=1))
    target = to_dask(np.array([0, 1, 1, 0, 1, 0]), 3)[lazy[:, 0] > -2]
    for call in (lambda: nl.logsumexp(kept, b=2.0), lambda: nl.softmax(kept, where=kept > 0),
                 lambda: nl.cross_entropy(kept, target), lambda: nl.nll_loss(kept, target)):
        with pytest.raises(ValueError, match=r"unknown chunk sizes .*compute_chunk_sizes\(\)"):
            call()
    known = kept.compute_chunk_sizes()
    np.testing.assert_allclose(nl.cross_entropy(known, target.compute_chunk_sizes()).compute(),
                               nl.cross_entropy(expected, np.array([1, 1, 0, 1, 0])))


# ------------------------------------------------------------------------------ bad input

def _bad_cases():
    rng = _rng("bad")
    x = rng.standard_normal((7, 13))
    logits, target = rng.standard_normal((11, 5)), rng.integers(0, 5, 11)
    long = np.ones((4, 4), dtype=np.longdouble)
    z = np.ones((4, 4)) + 1j
    cases = {
        "lse-axis-out-of-range": (AxisError, lambda c: nl.logsumexp(c(x), axis=2)),
        "lse-axis-tuple-out-of-range": (AxisError, lambda c: nl.logsumexp(c(x), axis=(0, -3))),
        "lse-repeated-axis": (ValueError, lambda c: nl.logsumexp(c(x), axis=(1, -1))),
        "lse-b-does-not-broadcast": (ValueError, lambda c: nl.logsumexp(c(x), axis=1, b=c(np.ones(3)))),
        "lse-numpy-b-does-not-broadcast": (ValueError, lambda c: nl.logsumexp(c(x), b=np.ones((2, 13)))),
        "lse-where-not-bool": (TypeError, lambda c: nl.logsumexp(c(x), where=c(np.ones((7, 13), int)))),
        "lse-object-dtype": (TypeError, lambda c: nl.logsumexp(c(x.astype(object)))),
        "lse-str-dtype": (TypeError, lambda c: nl.logsumexp(c(np.array([["a", "b"]] * 3)))),
        "softmax-axis-out-of-range": (AxisError, lambda c: nl.softmax(c(x), axis=-3)),
        "log_softmax-repeated-axis": (ValueError, lambda c: nl.log_softmax(c(x), axis=(0, 0))),
        "softmax-where-not-bool": (TypeError, lambda c: nl.softmax(c(x), axis=1, where=c(np.zeros((7, 13))))),
        "cross_entropy-bad-reduction": (ValueError, lambda c: nl.cross_entropy(c(logits), c(target), reduction="avg")),
        "nll_loss-bad-reduction": (ValueError, lambda c: nl.nll_loss(c(logits), c(target), reduction="batchmean")),
        "cross_entropy-batch-mismatch": (ValueError, lambda c: nl.cross_entropy(c(logits), c(target[:10]))),
        "nll_loss-batch-mismatch": (ValueError, lambda c: nl.nll_loss(c(logits), c(target[:10]))),
        "cross_entropy-probability-shape": (ValueError, lambda c: nl.cross_entropy(c(logits), c(np.ones((11, 4)) / 4))),
        "cross_entropy-weight-shape": (ValueError, lambda c: nl.cross_entropy(c(logits), c(target), weight=np.ones(4))),
    }
    if np.dtype(np.longdouble) != np.float64:
        cases["lse-longdouble"] = (TypeError, lambda c: nl.logsumexp(c(long), axis=0))
        cases["softmax-longdouble"] = (TypeError, lambda c: nl.softmax(c(long), axis=0))
    for name in SOFTMAX_FAMILY:
        cases[f"{name}-complex"] = (TypeError, lambda c, f=getattr(nl, name): f(c(z), axis=1))
    return cases


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_at_call_time_as_numpy(case):
    expected, call = BAD_CASES[case]
    with pytest.raises(expected):
        call(np.asarray)  # the NumPy path raises this type ...
    keys = []

    def counted(x):
        x = np.asarray(x)
        key = f"bad-{case}-{len(keys)}"
        keys.append(key)
        chunks = tuple(max(1, (s + 1) // 2) for s in x.shape)
        return counting(x, chunks, key)

    with pytest.raises(expected):  # ... and the Dask path too, at call time
        call(counted)
    assert not any(_CALLS[key] for key in keys), f"{case}: blocks were computed to find the error"


# ------------------------------------------------------------------------------ distributed

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # No dashboard. The scheduler's HTTP server (health routes) still starts, on port 8787 by
    # default, and warns (an error here) when another cluster holds that port: a free port.
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _contiguous_blocks(x, chunks, name):
    """A Dask array of x whose blocks are C-contiguous wherever they are computed (blocks of
    da.from_array are views in this process but contiguous copies after pickling: the same
    kernels' signatures in the parent and on the workers). ``name`` makes every key of a
    graph built on it new, so that nothing is reused from an earlier computation."""
    x = np.asarray(x)
    return da.from_array(x, chunks=chunks, name=name).map_blocks(
        np.ascontiguousarray, dtype=x.dtype, meta=np.empty((0,) * x.ndim, dtype=x.dtype))


def test_distributed_cluster_matches_cpu_and_loads_cached_kernels(client):
    rng = _rng("distributed")
    x = rng.standard_normal((40, 13)) * 5
    logits = rng.standard_normal((30, 6)) * 3
    target = rng.integers(0, 6, 30)
    target[::7] = -100

    def graphs(salt):
        xd = _contiguous_blocks(x, (10, 4), f"x-{salt}")
        loss, grad = nl.cross_entropy(_contiguous_blocks(logits, (8, 3), f"logits-{salt}"),
                                      _contiguous_blocks(target, 8, f"target-{salt}"),
                                      return_grad=True)
        return {"lse-axis1": nl.logsumexp(xd, axis=1), "lse-axis0": nl.logsumexp(xd, axis=0),
                "lse-all": nl.logsumexp(xd), "softmax": nl.softmax(xd, axis=1),
                "log1m_softmax": nl.log1m_softmax(xd, axis=1), "ce-loss": loss, "ce-grad": grad}

    ce_loss, ce_grad = nl.cross_entropy(logits, target, return_grad=True)
    expected = {  # value, ulps, floor
        "lse-axis1": (nl.logsumexp(x, axis=1), 4, 1 + np.abs(x).max()),
        "lse-axis0": (nl.logsumexp(x, axis=0), 4, 1 + np.abs(x).max()),
        "lse-all": (nl.logsumexp(x), 4, 1 + np.abs(x).max()),
        "softmax": (nl.softmax(x, axis=1), 4, 0.0),
        "log1m_softmax": (nl.log1m_softmax(x, axis=1), 8, 0.0),
        "ce-loss": (ce_loss, 4, 30 * np.abs(logits).max()),
        "ce-grad": (ce_grad, 4, np.abs(ce_grad).max()),
    }

    def check(results, where):
        assert sorted(results) == sorted(expected)
        for key, value in results.items():
            ref, ulps, floor = expected[key]
            assert_close(np.asarray(value), ref, ulps=ulps, floor=floor, what=f"{where} {key}")

    # In this process first (threaded scheduler): the on-disk cache holds every kernel used.
    with dask.config.set(scheduler="threads"):
        lazy = graphs("local")
        check(dict(zip(lazy, dask.compute(*lazy.values()))), "local")

    # Then on the cluster: the whole graph (new keys each time) pinned to each worker in turn,
    # so that each worker runs every kernel itself.
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    for i, address in enumerate(workers):
        lazy = graphs(f"worker{i}")
        futures = client.compute(list(lazy.values()), workers=[address], allow_other_workers=False)
        check(dict(zip(lazy, client.gather(futures))), f"worker {address}")
        del futures
    # And once with the scheduler free to spread the blocks.
    lazy = graphs("cluster")
    check(dict(zip(lazy, dask.compute(*lazy.values(), scheduler=client))), "cluster")

    def kernel_stats():
        # (Pickled by value: a nested function, so the workers need not import this module.)
        from numba_lse.cpu import reduce

        return {name: ([str(s) for s in getattr(reduce, name).stats.cache_hits],
                       [str(s) for s in getattr(reduce, name).stats.cache_misses])
                for name in ("short_row_partials", "inner_partials", "merge_partials", "lse_of_partials")}

    stats = client.run(kernel_stats)
    assert sorted(stats) == workers
    problems = []
    for address, per_kernel in stats.items():
        for name in ("short_row_partials", "inner_partials"):
            hits, misses = per_kernel[name]
            if not hits:
                problems.append(f"{address}: {name} has no cache hits")
            if misses:
                problems.append(f"{address}: {name} compiled (cache misses) {misses}")
    assert not problems, "workers did not load the kernels from the on-disk cache:\n" + \
        "\n".join(problems) + f"\nall stats: {stats}"
