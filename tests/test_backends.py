"""One suite, two backends: every test body runs unchanged on NumPy arrays ("cpu") and on GPU
arrays ("cuda"), as CuPy's tests run over NumPy and CuPy.

A test takes the ``backend`` fixture, moves its NumPy data with ``to_backend`` (for "cuda",
``numba.cuda.to_device``: on the CUDA simulator that tests/conftest.py turns on where there is
no GPU, or on a GPU), calls numba_lse, and brings the result back with ``to_host``. The
references are computed live, in float64, from the NumPy data: ``scipy.special`` for
logsumexp, softmax and log_softmax; mpmath from the definition for log1m_softmax (see
``log1m_softmax_reference``); torch (CPU, float64, autograd for gradients) for the losses.
No expected value is written down except the special values the semantics define.

Tolerances are in units in the last place of the result's dtype (``assert_ulp``): float32
results (computed in float64, rounded once) within 1 ulp of the float64 reference, float16
(computed in float32) within 1 float16 ulp, float64 within 4 ulps (the documented 2, plus 2
for the reference's own rounding). The data are float32 values (``data``), whose differences
are exact in float64: the comparisons measure the algorithms' rounding, not the conditioning
of the data (tests/test_softmax.py and tests/test_accuracy.py do that against mpmath). SciPy's
log_softmax takes the log of a sum near 1, so its finite values are recomputed from SciPy's
log1p-based logsumexp (``log_softmax_reference``); torch's float64 losses and gradients have
that weakness too, and their comparisons add its absolute error (``TORCH_ATOL``).

The simulator runs each GPU thread as a Python thread, so shapes stay tiny (rows of at most
8 entries, a few dozen elements per call).

GPU-only behaviour (array kinds, streams, 0-d results, GPU-only error messages) is in
tests/test_cuda.py.
"""

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import Phase, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from mpmath import mp
from numpy.exceptions import AxisError
from scipy import special

import numba_lse as nl

DTYPES = [np.float32, np.float64]
NAMES = ["softmax", "log_softmax", "log1m_softmax"]
# The documented bounds (float16 and float32 computed in float64 or float32 and rounded once:
# within 1 ulp; float64: 2 ulp) plus, for float64, 2 ulp of the float64 reference's own
# rounding (SciPy's softmax divides a rounded exp by a rounded sum).
ULPS = {np.dtype(np.float16): 1, np.dtype(np.float32): 1, np.dtype(np.float64): 4}
# torch's float64 losses and gradients take log of a sum near 1 and subtract 1 from p near 1:
# where their result is near 0 they are off by ulps *of 1*, not of the result.
TORCH_ATOL = 4 * np.finfo(np.float64).eps


# ------------------------------------------------------------------------------ backends


@pytest.fixture(scope="session", params=["cpu", "cuda"])
def backend(request):
    if request.param == "cuda":
        cuda = pytest.importorskip("numba.cuda")
        if not (cuda.is_available() or __import__("numba").config.ENABLE_CUDASIM):
            pytest.skip("no GPU and the CUDA simulator is off")
    return request.param


def to_backend(backend, x, view=None):
    """NumPy data ``x`` as an array of ``backend``; ``view`` (e.g. ``lambda a: a[:, ::2]``) is
    applied where the array lives, so on the GPU it is a strided view of device memory (numba
    device arrays take slices, steps and negative steps as NumPy does; ``transposed`` for
    ``.T``)."""
    x = np.asarray(x)
    if backend == "cuda":
        from numba import cuda

        x = cuda.to_device(x)
    return x if view is None else view(x)


def transposed(a):
    """a.T as a view of a's memory. NumPy's and the CUDA simulator's ``.T`` are views, but on
    a GPU numba's ``.T`` of a device array is a contiguous copy made by a kernel, which would
    test no strided input: there the view is made from the reversed strides."""
    from numba import config

    if isinstance(a, np.ndarray) or config.ENABLE_CUDASIM:
        return a.T
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(a.shape[::-1], a.strides[::-1], a.dtype, gpu_data=a.gpu_data)


def to_host(result):
    """A result (or a tuple of them: ``return_sign``, ``return_grad``) as NumPy arrays."""
    if isinstance(result, tuple):
        return tuple(to_host(r) for r in result)
    if hasattr(result, "copy_to_host"):
        return result.copy_to_host()
    return np.asarray(result)


def forbid_kernels(backend, monkeypatch):
    """Make any computation fail the test: errors must come from metadata alone."""
    if backend == "cpu":
        class NoBackend:
            def __getattr__(self, name):
                raise AssertionError(f"the CPU backend's {name} ran before the error")

        monkeypatch.setattr(nl._dispatch, "backend_for", lambda *arrays: NoBackend())
    else:
        import numba_lse.cuda

        def no_launch(kernel, *args):
            raise AssertionError(f"kernel {kernel} launched before the error")

        monkeypatch.setattr(numba_lse.cuda, "_launch", no_launch)


# ------------------------------------------------------------------------------ references


def quiet(fn, *args, **kwargs):
    """A reference call without floating-point warnings (pytest makes warnings errors, and
    SciPy warns on the rows of special values it handles)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _reduced_last(x, axis):
    """(x with the reduced axes moved last and flattened into one, a function undoing it)."""
    axes = tuple(range(x.ndim)) if axis is None else np.atleast_1d(axis) % max(x.ndim, 1)
    last = tuple(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(x, tuple(axes), last)
    rows = moved.reshape(-1, math.prod(moved.shape[len(moved.shape) - len(axes):]))
    return rows, lambda out: np.moveaxis(out.reshape(moved.shape), last, tuple(axes))


def _log1m_row(row):
    """log(1 - p_i) = log(sum_{j != i} e^x_j) - log(sum_j e^x_j), in 40 digits: the sums
    have no cancellation, so a dominant entry's value is exact (log 2 - 2000 for
    [-1000, -1000, 1000])."""
    finite = [v for v in row if np.isfinite(v)]
    shift = max(finite) if finite else 0.0  # keeps the logs' magnitudes, hence digits, small
    with mp.workdps(40):
        terms = [mp.exp(mp.mpf(float(v)) - shift) for v in row]
        before = [mp.mpf(0)]
        for term in terms:
            before.append(before[-1] + term)
        after = [mp.mpf(0)]
        for term in reversed(terms):
            after.append(after[-1] + term)
        after.reverse()
        log_total = mp.log(before[-1])
        # (An entry of -inf has p = 0: exactly 0, whatever the order of the sums' roundings.)
        return [float(mp.log(before[i] + after[i + 1]) - log_total) if terms[i] else 0.0
                for i in range(len(terms))]


def log1m_softmax_reference(x, axis=None):
    """log(1 - softmax(x)) from the definition, in mpmath; nan wherever SciPy's softmax is
    nan (the slice has a nan, a +inf, or is all -inf)."""
    x = np.asarray(x, dtype=np.float64)
    rows, back = _reduced_last(x, axis)
    out = back(np.array([_log1m_row(row) for row in rows]))
    out[np.isnan(quiet(special.softmax, x, axis=axis))] = np.nan
    return out


def log_softmax_reference(x, axis=None):
    """SciPy's log_softmax, its finite values recomputed as (x - m) - logsumexp(x - m) with
    SciPy's logsumexp (the log1p form): SciPy's log_softmax subtracts log(sum) for a sum
    near 1, so where the result is near 0 it is off by ulps *of 1*, not of the result."""
    out = special.log_softmax(x, axis=axis)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    accurate = shifted - special.logsumexp(shifted, axis=axis, keepdims=True)
    return np.where(np.isfinite(out), accurate, out)


REFERENCES = {"logsumexp": special.logsumexp, "softmax": special.softmax,
              "log_softmax": log_softmax_reference, "log1m_softmax": log1m_softmax_reference}
# What the where= semantics (JAX's) give on a fully masked slice.
MASKED_FILL = {"softmax": 0.0, "log_softmax": -np.inf, "log1m_softmax": 0.0}


def reference(name, x, axis=None):
    return quiet(REFERENCES[name], np.asarray(x, dtype=np.float64), axis=axis)


def masked_reference(name, x, mask, axis):
    """The reference over the unmasked entries: masked ones set to -inf (they take no part),
    fully masked slices as ``where=`` defines them."""
    out = reference(name, np.where(mask, x, -np.inf), axis)
    empty = ~np.any(mask, axis=axis, keepdims=True)
    return np.where(empty, MASKED_FILL[name], out)


def assert_ulp(actual, expected, ulps, dtype, atol=0.0):
    """``actual`` has ``dtype`` and ``expected``'s shape, and is within ``ulps`` (a number, or
    an array broadcast against the data) units in the last place of ``dtype`` at ``expected``
    (a float64 reference), plus ``atol``. Where ``expected`` rounds to nan or +-inf in
    ``dtype``, ``actual`` must be exactly that (and an expected 0, whose ulp is the smallest
    subnormal, must be met all but exactly)."""
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == np.shape(expected), f"shape {actual.shape}, expected {np.shape(expected)}"
    with np.errstate(over="ignore"):
        rounded = np.asarray(expected, dtype=np.float64).astype(dtype)
    special_ = ~np.isfinite(rounded)
    np.testing.assert_array_equal(actual[special_], rounded[special_], err_msg="special values differ")
    got = actual.astype(np.float64)
    expected = np.where(special_, 0.0, expected)
    error = np.abs(np.where(special_, 0.0, got) - expected)
    unit = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    within = error <= ulps * unit + atol
    if not within.all():
        with np.errstate(all="ignore"):
            worst = np.nan_to_num(error / unit, nan=np.inf)[~within].max()
        at = tuple(int(i) for i in np.argwhere(~within)[0])
        raise AssertionError(
            f"{(~within).sum()} of {within.size} entries beyond {ulps} ulp ({dtype}); worst "
            f"{worst:.3g} ulp; first at {at}: "
            f"{got[at]!r} vs {expected[at]!r}"
        )


def data(shape, dtype, seed=0):
    """Moderate random data (scale 5) of ``dtype``, made of float32 values: their differences
    (x - max) are exact in float64, so float64 results are compared for the rounding of the
    algorithms, not for the conditioning of the data (which tests/test_softmax.py and
    tests/test_accuracy.py measure against mpmath)."""
    x = 5 * np.random.default_rng(seed).standard_normal(shape)
    return x.astype(np.float32).astype(dtype)


def adversarial_rows(dtype):
    """The seeds' hard rows, one per row of a (rows, 3) array of ``dtype``."""
    huge = {np.dtype(np.float32): 3e38, np.dtype(np.float64): 1e308}[np.dtype(dtype)]
    inf, nan = np.inf, np.nan
    return np.array([
        [1000, -1000, 0],          # +-1000
        [-1000, -1000, 1000],      # one dominant term (the seed's log1m_softmax example)
        [huge, -huge, 0],          # +-1e308 (3e38 in float32)
        [huge, huge, huge],        # a naive sum overflows
        [10, -10, -10],            # dominant, not overwhelmingly
        [1002, 1001, 1001],        # dominant at a large offset: log1m_softmax's value is a
                                   # difference of two sums ~1000, small next to them
        [3, 3, 1],                 # ties at the max
        [1000, 1000, -1000],       # ties at a large max
        [-inf, -inf, -inf],        # all -inf
        [-inf, 1, 2],              # one -inf
        [inf, 1, 2],               # +inf present
        [inf, inf, 1],
        [nan, 1, 2],               # nan present
    ], dtype=dtype)


# ------------------------------------------------------------------------------ logsumexp

SHAPES_AXES = [
    ((7,), None), ((7,), 0), ((7,), -1),
    ((4, 6), None), ((4, 6), 1), ((4, 6), -2), ((4, 6), (0, 1)),
    ((2, 3, 4), None), ((2, 3, 4), -1), ((2, 3, 4), (0, 1)), ((2, 3, 4), (1, 2)),
    ((2, 3, 4), (0, 2)),  # non-consecutive axes
]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_axes(backend, dtype, shape, axis, keepdims):
    x = data(shape, dtype)
    got = to_host(nl.logsumexp(to_backend(backend, x), axis=axis, keepdims=keepdims))
    want = quiet(special.logsumexp, x.astype(np.float64), axis=axis, keepdims=keepdims)
    assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_weights(backend, dtype, axis, return_sign):
    # b of a's shape and dtype, with zeros and negatives: row 1 sums negative (nan without
    # return_sign), row 2 has only zero weights (-inf, sign 0).
    a = data((4, 5), dtype)
    b = data((4, 5), dtype, seed=1) / 5
    b[0, :2] = 0
    b[1] = -np.abs(b[1])
    b[2] = 0
    got = to_host(nl.logsumexp(to_backend(backend, a), axis=axis, b=to_backend(backend, b),
                               return_sign=return_sign))
    want = quiet(special.logsumexp, a.astype(np.float64), axis=axis, b=b.astype(np.float64),
                 return_sign=return_sign)
    if return_sign:
        (got, got_sign), (want, want_sign) = got, want
        assert_ulp(got_sign, want_sign, 0, dtype)
    assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_where(backend, dtype, axis):
    x = data((4, 5), dtype)
    mask = np.random.default_rng(2).random((4, 5)) > 0.4
    mask[1] = False  # a fully masked row: -inf
    x[~mask & (np.arange(5) % 2 == 0)] = np.nan  # masked-out entries take no part,
    x[~mask & (np.arange(5) % 2 == 1)] = np.inf  # whatever their value
    got = to_host(nl.logsumexp(to_backend(backend, x), axis=axis, where=to_backend(backend, mask)))
    want = quiet(special.logsumexp, np.where(mask, x.astype(np.float64), -np.inf), axis=axis)
    assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


def logsumexp_over_one_axis(x, axis, keepdims=False, **kwargs):
    """SciPy's logsumexp with the reduced axes merged into one: SciPy 1.17 raises IndexError
    for a zero-size array reduced over several axes (axis=None included)."""
    axes = tuple(range(x.ndim)) if axis is None else tuple(np.atleast_1d(axis) % x.ndim)
    kept = [ax for ax in range(x.ndim) if ax not in axes]
    merged = np.moveaxis(x, axes, range(len(axes)))
    merged = merged.reshape(math.prod(x.shape[ax] for ax in axes), *[x.shape[ax] for ax in kept])
    out = quiet(special.logsumexp, merged, axis=0, **kwargs)
    if keepdims:
        out = tuple(np.expand_dims(o, axes) for o in out) if isinstance(out, tuple) else np.expand_dims(out, axes)
    return out


@pytest.mark.parametrize("shape, axis", [((3, 0), 1), ((3, 0), None), ((3, 0), 0), ((0,), None),
                                         ((2, 0, 3), (0, 1))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_zero_size_axis(backend, dtype, shape, axis):
    # -inf, with the sign of -inf (-1), as SciPy.
    x = np.zeros(shape, dtype=dtype)
    for keepdims in (False, True):
        got, sign = to_host(nl.logsumexp(to_backend(backend, x), axis=axis, keepdims=keepdims,
                                         return_sign=True))
        want, want_sign = logsumexp_over_one_axis(x.astype(np.float64), axis, keepdims,
                                                  return_sign=True)
        assert_ulp(got, want, 0, dtype)
        assert_ulp(sign, want_sign, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_0d(backend, dtype):
    x = np.array(-2.5, dtype=dtype)
    got, sign = to_host(nl.logsumexp(to_backend(backend, x), return_sign=True))
    want, want_sign = special.logsumexp(x.astype(np.float64), return_sign=True)
    assert_ulp(got, want, 0, dtype)
    assert_ulp(sign, want_sign, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_adversarial_rows(backend, dtype):
    x = adversarial_rows(dtype)
    for axis, view in [(1, None), (0, transposed)]:
        got = to_host(nl.logsumexp(to_backend(backend, x, view), axis=axis))
        want = quiet(special.logsumexp, x.astype(np.float64), axis=1)
        assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


# ------------------------------------------------------------------------------ softmax family


@pytest.mark.parametrize("shape, axis", [((7,), None), ((7,), 0), ((4, 6), None), ((4, 6), 1),
                                         ((4, 6), 0), ((2, 3, 4), -1), ((2, 3, 4), (1, 2)),
                                         ((2, 3, 4), (0, 2))])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_softmax_family_axes(backend, name, dtype, shape, axis):
    x = data(shape, dtype)
    x.flat[1] = 40  # a dominant entry in its slices: log1m_softmax's runner-up path
    got = to_host(getattr(nl, name)(to_backend(backend, x), axis=axis))
    assert_ulp(got, reference(name, x, axis), ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_softmax_family_where(backend, name, dtype, axis):
    x = data((4, 5), dtype)
    mask = np.random.default_rng(3).random((4, 5)) > 0.4
    mask[2] = False  # a fully masked row
    mask[:, 3] = False  # a fully masked column
    x[~mask & (np.arange(5) % 2 == 0)] = np.nan  # masked-out entries take no part,
    x[~mask & (np.arange(5) % 2 == 1)] = np.inf  # whatever their value
    got = to_host(getattr(nl, name)(to_backend(backend, x), axis=axis,
                                    where=to_backend(backend, mask)))
    want = masked_reference(name, x, mask, axis)
    assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


# The simulator runs kernels in NumPy, which warns where a float64 value beyond float32's
# range is stored in a float32 output (log_softmax(3e38 - -3e38) = -inf in float32): the
# value is the correctly rounded -inf (checked), and a GPU stores it silently.
@pytest.mark.filterwarnings("ignore:.*overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_softmax_family_adversarial_rows(backend, name, dtype):
    x = adversarial_rows(dtype)
    got = to_host(getattr(nl, name)(to_backend(backend, x), axis=1))
    assert_ulp(got, reference(name, x, axis=1), ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1m_softmax_seed_example(backend, dtype):
    # [-1000, -1000, 1000] -> [0, 0, log 2 - 2000], correctly rounded (mpmath's value).
    x = np.array([-1000, -1000, 1000], dtype=dtype)
    got = to_host(nl.log1m_softmax(to_backend(backend, x)))
    assert_ulp(got, log1m_softmax_reference(x), 0.5, dtype)
    assert (got[:2] == 0).all()


VIEWS = {
    "step": lambda a: a[:, ::2],
    "transposed": transposed,
    "negative-step": lambda a: a[::-1, 1:7],
}


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
def test_non_contiguous_views(backend, name, dtype, view, axis):
    base = data((5, 8), dtype)
    x = VIEWS[view](base)
    got = to_host(getattr(nl, name)(to_backend(backend, base, VIEWS[view]), axis=axis))
    assert_ulp(got, reference(name, x, axis), ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
def test_inputs_unchanged(backend, name):
    x = data((3, 4), np.float64)
    mask = np.arange(12).reshape(3, 4) % 3 != 0
    on_x, on_mask = to_backend(backend, x), to_backend(backend, mask)
    getattr(nl, name)(on_x, axis=1, where=on_mask)
    np.testing.assert_array_equal(to_host(on_x), x)
    np.testing.assert_array_equal(to_host(on_mask), mask)


# ------------------------------------------------------------------------------ identities

# Rows of multiples of 1/8 in [-64, 64]: x + c is exact for integer |c| <= 1000 in float32,
# so the shift changes nothing the functions see (x - max is the same), and the results agree
# to the ulp. exp(log_softmax) vs softmax: an error of k ulps in log p (ulps of |log p|) is a
# relative error of p of up to 2 k |log p| ulps of p, hence k (1 + 2 |log p|) ulps.
dyadic = st.tuples(st.integers(1, 3), st.integers(1, 8)).flatmap(
    lambda shape: hnp.arrays(np.int64, shape, elements=st.integers(-512, 512))
).map(lambda ints: ints / 8)
# Reproducible examples, not shrunk: they are tiny already, and on the simulator every call
# costs ~0.1 s.
property_settings = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                             phases=[Phase.explicit, Phase.generate])


@property_settings
@given(x=dyadic, c=st.integers(-1000, 1000), dtype=st.sampled_from(DTYPES),
       axis=st.sampled_from([None, 0, 1, -1]))
@example(x=np.array([[1, -5, -5]]) / 8, c=1000, dtype=np.float64, axis=None)  # a dominant entry
def test_shift_invariance(backend, x, c, dtype, axis):
    x = x.astype(dtype)
    shifted = (x + c).astype(dtype)
    for name in NAMES:
        f = getattr(nl, name)
        base = to_host(f(to_backend(backend, x), axis=axis))
        assert_ulp(to_host(f(to_backend(backend, shifted), axis=axis)), base, 1, dtype)
    # logsumexp(x + c) = logsumexp(x) + c, up to the rounding of each side.
    lse = to_host(nl.logsumexp(to_backend(backend, x), axis=axis))
    assert_ulp(to_host(nl.logsumexp(to_backend(backend, shifted), axis=axis)),
               lse.astype(np.float64) + c, 1, dtype, atol=np.spacing(np.abs(lse)))


@property_settings
@given(x=dyadic, dtype=st.sampled_from(DTYPES), axis=st.sampled_from([None, 0, 1]))
def test_softmax_identities(backend, x, dtype, axis):
    x = x.astype(dtype)
    p = to_host(nl.softmax(to_backend(backend, x), axis=axis))
    log_p = to_host(nl.log_softmax(to_backend(backend, x), axis=axis)).astype(np.float64)
    assert_ulp(p, np.exp(log_p), ULPS[np.dtype(dtype)] * (1 + 2 * np.abs(log_p)), dtype)
    # Sums to 1: each entry is within ulps of p_i, so the sum within as many ulps of 1; in
    # float64, plus the rounding of the row's sum of exponentials that all entries share.
    n = x.size if axis is None else x.shape[axis]
    total = np.sum(p.astype(np.float64), axis=axis)
    ulps = ULPS[np.dtype(dtype)] + (n if dtype == np.float64 else 0)
    assert np.all(np.abs(total - 1) <= ulps * np.finfo(dtype).eps), total - 1


# ------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
def test_float16_computed_in_float32(backend, name):
    x = data((3, 6), np.float16)
    got = to_host(getattr(nl, name)(to_backend(backend, x), axis=1))
    assert_ulp(got, reference(name, x, axis=1), ULPS[np.dtype(np.float16)], np.float16)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
def test_integer_and_bool_input_give_float64(backend, name, dtype):
    x = (np.arange(12).reshape(3, 4) % 5).astype(dtype)
    got = to_host(getattr(nl, name)(to_backend(backend, x), axis=1))
    assert_ulp(got, reference(name, x, axis=1), ULPS[np.dtype(np.float64)], np.float64)


# ------------------------------------------------------------------------------ losses

N_CLASSES = 5
# id: (logits shape, target dtype, class weights?, ignore_index)
LOSS_CASES = {
    "C-int64": ((N_CLASSES,), np.int64, False, -100),
    "NC-int32": ((6, N_CLASSES), np.int32, False, -100),
    "NC-int64-weight-ignore1": ((6, N_CLASSES), np.int64, True, 1),
    "NCd-int32-weight": ((3, N_CLASSES, 2), np.int32, True, -100),
}
REDUCTIONS = ["none", "sum", "mean"]


def loss_inputs(case, dtype, seed=0):
    """(logits, class-index target, weight or None, ignore_index): one sample ignored."""
    shape, target_dtype, weighted, ignore_index = LOSS_CASES[case]
    rng = np.random.default_rng(seed)
    x = data(shape, dtype, seed)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = rng.integers(0, N_CLASSES, target_shape).astype(target_dtype)
    if target.ndim:
        target.flat[0] = ignore_index
    weight = rng.uniform(0.5, 2.0, N_CLASSES).astype(dtype) if weighted else None
    return x, target, weight, ignore_index


def torch_loss(name, x, target, weight=None, reduction="mean", **kwargs):
    """(loss, gradient of the loss - of its sum for 'none') from torch, float64 on the CPU."""
    torch = pytest.importorskip("torch")
    logits = torch.tensor(x.astype(np.float64), requires_grad=True)
    if target.dtype.kind == "f":
        t = torch.tensor(target.astype(np.float64))
    else:
        t = torch.from_numpy(target.astype(np.int64))  # torch takes int64 class indices only
    w = None if weight is None else torch.tensor(weight.astype(np.float64))
    loss = getattr(torch.nn.functional, name)(logits, t, weight=w, reduction=reduction, **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), logits.grad.numpy()


def on_backend(backend, *arrays):
    return [None if a is None else to_backend(backend, a) for a in arrays]


def loss_atol(weight, reduction, n):
    """torch's own absolute error (``TORCH_ATOL``), times the largest class weight and, for a
    'sum', the number of samples; negligible against float32 ulps."""
    scale = 1.0 if weight is None else float(np.max(weight))
    return TORCH_ATOL * scale * (n if reduction == "sum" else 1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_loss(backend, dtype, case, reduction):
    x, target, weight, ignore_index = loss_inputs(case, dtype)
    log_probs = special.log_softmax(x.astype(np.float64), axis=1 if x.ndim > 1 else 0).astype(dtype)
    got = to_host(nl.nll_loss(*on_backend(backend, log_probs, target, weight),
                              ignore_index=ignore_index, reduction=reduction))
    want, _ = torch_loss("nll_loss", log_probs, target, weight, reduction, ignore_index=ignore_index)
    assert_ulp(got, want, ULPS[np.dtype(dtype)], dtype)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_class_indices(backend, dtype, case, reduction, label_smoothing):
    x, target, weight, ignore_index = loss_inputs(case, dtype)
    loss, grad = to_host(nl.cross_entropy(*on_backend(backend, x, target, weight),
                                          ignore_index=ignore_index, reduction=reduction,
                                          label_smoothing=label_smoothing, return_grad=True))
    want, want_grad = torch_loss("cross_entropy", x, target, weight, reduction,
                                 ignore_index=ignore_index, label_smoothing=label_smoothing)
    atol = loss_atol(weight, reduction, target.size)
    assert_ulp(loss, want, ULPS[np.dtype(dtype)], dtype, atol)
    assert_ulp(grad, want_grad, 2 * ULPS[np.dtype(dtype)], dtype, atol)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, weighted", [((N_CLASSES,), False), ((4, N_CLASSES), True),
                                             ((3, N_CLASSES, 2), False)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_probabilities(backend, dtype, shape, weighted, reduction, label_smoothing):
    rng = np.random.default_rng(4)
    x = data(shape, dtype)
    target = special.softmax(rng.standard_normal(shape), axis=1 if len(shape) > 1 else 0).astype(dtype)
    weight = rng.uniform(0.5, 2.0, N_CLASSES).astype(dtype) if weighted else None
    loss, grad = to_host(nl.cross_entropy(*on_backend(backend, x, target, weight),
                                          reduction=reduction, label_smoothing=label_smoothing,
                                          return_grad=True))
    want, want_grad = torch_loss("cross_entropy", x, target, weight, reduction,
                                 label_smoothing=label_smoothing)
    atol = loss_atol(weight, reduction, x.size // N_CLASSES)
    assert_ulp(loss, want, ULPS[np.dtype(dtype)], dtype, atol)
    assert_ulp(grad, want_grad, 2 * ULPS[np.dtype(dtype)], dtype, atol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_without_grad_is_the_same_loss(backend, dtype, reduction):
    x, target, weight, ignore_index = loss_inputs("NC-int64-weight-ignore1", dtype)
    args = on_backend(backend, x, target, weight)
    kwargs = dict(ignore_index=ignore_index, reduction=reduction)
    loss = to_host(nl.cross_entropy(*args, **kwargs))
    with_grad, _ = to_host(nl.cross_entropy(*args, return_grad=True, **kwargs))
    assert_ulp(loss, with_grad, 0, dtype)


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_losses_float16(backend, name):
    x, target, weight, ignore_index = loss_inputs("NC-int64-weight-ignore1", np.float16)
    for reduction in REDUCTIONS:
        got = to_host(getattr(nl, name)(*on_backend(backend, x, target, weight),
                                        ignore_index=ignore_index, reduction=reduction))
        want, _ = torch_loss(name, x, target, weight, reduction, ignore_index=ignore_index)
        assert_ulp(got, want, ULPS[np.dtype(np.float16)], np.float16)


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_every_sample_ignored(backend, name):
    # 'mean' over no samples is nan (0 / 0), 'sum' is 0, as torch.
    x = data((3, N_CLASSES), np.float64)
    target = np.full(3, -100)
    for reduction in REDUCTIONS:
        got = to_host(getattr(nl, name)(*on_backend(backend, x, target), reduction=reduction))
        want, _ = torch_loss(name, x, target, reduction=reduction)
        assert_ulp(got, want, 0, np.float64)


# ------------------------------------------------------------------------------ errors


X23 = np.ones((2, 3))
LOGITS = np.ones((2, N_CLASSES))
LABELS = np.array([0, 1])


def _error(call, error, message, id):
    """A bad call (``call(on)``, ``on`` moving NumPy data to the backend), the exception
    both backends raise, and a regex of the key words of its message."""
    return pytest.param(call, error, message, id=id)


ERRORS = [
    # axes
    _error(lambda on: nl.logsumexp(on(X23), axis=2), AxisError, "axis 2 is out of bounds",
           "logsumexp-axis-out-of-range"),
    _error(lambda on: nl.softmax(on(X23), axis=-3), AxisError, "axis -3 is out of bounds",
           "softmax-negative-axis-out-of-range"),
    _error(lambda on: nl.log_softmax(on(X23), axis=(0, 2)), AxisError, "axis 2 is out of bounds",
           "log_softmax-axis-tuple-out-of-range"),
    _error(lambda on: nl.logsumexp(on(X23), axis=(1, -1)), ValueError, "repeated axis",
           "logsumexp-repeated-axis"),
    _error(lambda on: nl.log1m_softmax(on(X23), axis=(0, 0)), ValueError, "repeated axis",
           "log1m_softmax-repeated-axis"),
    _error(lambda on: nl.softmax(on(X23), axis=1.0), TypeError, "axis must be None, an integer",
           "softmax-float-axis"),
    # dtypes (complex logsumexp is CPU-only: tests/test_cuda.py)
    _error(lambda on: nl.logsumexp(on(np.ones(3, np.longdouble))), TypeError,
           "unsupported dtype float128", "logsumexp-long-double"),
    _error(lambda on: nl.softmax(on(np.ones(3, np.complex128))), TypeError,
           "unsupported dtype complex128", "softmax-complex"),
    _error(lambda on: nl.nll_loss(on(LOGITS.astype(np.int64)), on(LABELS)), TypeError,
           "floating-point input", "nll_loss-integer-input"),
    _error(lambda on: nl.nll_loss(on(LOGITS), on(np.ones(2))), TypeError,
           r"integer \(class indices\) target", "nll_loss-floating-target"),
    # shapes
    _error(lambda on: nl.softmax(on(np.ones((2, 0))), axis=1), ValueError, "zero-size axis",
           "softmax-zero-size-axis"),
    _error(lambda on: nl.log1m_softmax(on(np.ones(0))), ValueError, "zero-size axis",
           "log1m_softmax-zero-size-array"),
    _error(lambda on: nl.logsumexp(on(X23), b=on(np.ones((3, 2)))), ValueError,
           r"b with shape \(3, 2\)", "logsumexp-b-shape"),
    _error(lambda on: nl.logsumexp(on(X23), where=on(np.ones((3, 2), bool))), ValueError,
           r"where with shape \(3, 2\)", "logsumexp-where-shape"),
    _error(lambda on: nl.softmax(on(X23), where=on(np.ones(2, bool))), ValueError,
           r"where with shape \(2,\)", "softmax-where-shape"),
    _error(lambda on: nl.log_softmax(on(X23), where=on(X23)), TypeError,
           "where must be a boolean array", "log_softmax-where-not-bool"),
    _error(lambda on: nl.nll_loss(on(np.ones((4, N_CLASSES))), on(np.array([0, 1, 2]))),
           ValueError, r"Expected input batch_size \(4\) to match target batch_size \(3\)",
           "nll_loss-batch-size"),
    _error(lambda on: nl.cross_entropy(on(np.ones((3, N_CLASSES, 2))), on(np.zeros((3, 3), int))),
           ValueError, r"Expected target size \[3, 2\], got \[3, 3\]", "cross_entropy-target-size"),
    _error(lambda on: nl.nll_loss(on(np.ones((4, N_CLASSES))), on(np.zeros((4, 1), int))),
           ValueError, "0D or 1D target tensor expected, multi-target not supported",
           "nll_loss-multi-target"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(LABELS), weight=on(np.ones(4))), ValueError,
           "weight tensor should be defined either for all 5 classes", "cross_entropy-weight-shape"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(np.ones((2, 4)))), ValueError,
           "probability target must have the shape", "cross_entropy-probability-shape"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(LOGITS / 5), ignore_index=0), ValueError,
           "ignore_index is not supported for floating point target",
           "cross_entropy-probabilities-ignore-index"),
    _error(lambda on: nl.cross_entropy(on(np.array(1.0)), on(np.array(0))), ValueError,
           "at least one dimension", "cross_entropy-0d-input"),
    # options
    _error(lambda on: nl.nll_loss(on(LOGITS), on(LABELS), reduction="avg"), ValueError,
           "avg is not a valid value for reduction", "nll_loss-reduction"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(LABELS), reduction="batchmean"), ValueError,
           "batchmean is not a valid value for reduction", "cross_entropy-reduction"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(LABELS), label_smoothing=1.5), ValueError,
           r"label_smoothing must be between 0\.0 and 1\.0", "label-smoothing-above-1"),
    _error(lambda on: nl.cross_entropy(on(LOGITS), on(LABELS), label_smoothing=-0.1), ValueError,
           r"label_smoothing must be between 0\.0 and 1\.0", "label-smoothing-negative"),
]


@pytest.mark.parametrize("call, error, message", ERRORS)
def test_errors_before_any_computation(backend, monkeypatch, call, error, message):
    forbid_kernels(backend, monkeypatch)
    with pytest.raises(error, match=message):
        call(lambda x: to_backend(backend, x))


@pytest.mark.parametrize("bad", [7, -3])
@pytest.mark.parametrize("target_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_class_index_out_of_range(backend, monkeypatch, name, target_dtype, bad):
    # The CPU checks before its kernels; the GPU flags it on the device and raises the same
    # IndexError after its kernels.
    if backend == "cpu":
        forbid_kernels(backend, monkeypatch)
    x = data((3, N_CLASSES, 2), np.float64)
    target = np.array([[0, 1], [2, bad], [-100, 4]], dtype=target_dtype)
    with pytest.raises(IndexError, match=f"^{re.escape(f'Target {bad} is out of bounds.')}$"):
        getattr(nl, name)(*on_backend(backend, x, target))
