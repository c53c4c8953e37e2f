"""numba_lse's functions called inside users' own @njit code: same values as the Python call.

The compiled implementations reuse the kernels of the Python calls; for C-contiguous input
the reductions and the softmax family give the same bits, and the losses the same values up
to the rounding of the final sum (NumPy sums pairwise, compiled code in a loop).
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit, prange
from numba.core.errors import TypingError
from numpy.exceptions import AxisError

import numba_lse as nl

DTYPES = [np.float32, np.float64]


def _same(got, want):
    """Equal values; arrays also of equal dtype (a compiled function boxes scalars as float)."""
    if np.ndim(want) == 0:
        assert np.ndim(got) == 0
        np.testing.assert_array_equal(np.asarray(got, dtype=np.asarray(want).dtype), want)
    else:
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _data(shape, dtype, seed=0):
    x = 10 * np.random.default_rng(seed).standard_normal(shape)
    x.flat[0] = 700.0  # one dominant entry: log1m_softmax's runner-up path
    return x.astype(dtype)


@njit
def _lse_all(x):
    return nl.logsumexp(x)


@njit
def _lse_axis(x, axis):
    return nl.logsumexp(x, axis=axis)


@njit
def _lse_weighted(x, b, axis):
    return nl.logsumexp(x, axis=axis, b=b)


@njit
def _softmax_family(x, axis):
    return nl.softmax(x, axis=axis), nl.log_softmax(x, axis=axis), nl.log1m_softmax(x, axis=axis)


@njit
def _softmax_family_all(x):
    return nl.softmax(x), nl.log_softmax(x), nl.log1m_softmax(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37,), (6, 40), (40, 6), (1, 1), (300, 3)])
def test_logsumexp_matches_the_python_call(shape, dtype):
    x = _data(shape, dtype)
    _same(_lse_all(x), nl.logsumexp(x))
    for axis in range(-len(shape), len(shape)):
        _same(_lse_axis(x, axis), nl.logsumexp(x, axis=axis))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_weights_match_the_python_call(dtype):
    x = _data((9, 30), dtype)
    b = np.random.default_rng(1).standard_normal((9, 30)).astype(dtype)  # negative sums: nan
    for axis in (0, 1, -1):
        _same(_lse_weighted(x, b, axis), nl.logsumexp(x, axis=axis, b=b))


def test_logsumexp_mixed_dtypes_promote_as_the_python_call():
    x = _data((5, 8), np.float32)
    b = np.abs(_data((5, 8), np.float64, seed=3))
    got, want = _lse_weighted(x, b, 1), nl.logsumexp(x, axis=1, b=b)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=4e-16)


def test_logsumexp_special_values():
    x = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [np.nan, 0.0], [1e308, 1e308]])
    np.testing.assert_array_equal(_lse_axis(x, 1), nl.logsumexp(x, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_of_empty_axes_is_minus_inf_as_the_python_call(dtype):
    # The empty sum's log: -inf, as SciPy (it was nan inside @njit: the sign of -inf, -1,
    # made it the log of a negative sum).
    for shape in [(0,), (2, 0), (0, 3)]:
        x = np.zeros(shape, dtype)
        _same(_lse_all(x), nl.logsumexp(x))
        b = np.ones(shape, dtype)
        _same(_lse_weighted(x, b, None), nl.logsumexp(x, b=b))
        for axis in range(-len(shape), len(shape)):
            _same(_lse_axis(x, axis), nl.logsumexp(x, axis=axis))
    assert _lse_all(np.zeros(0, dtype)) == -np.inf
    _same(_lse_axis(np.zeros((0, 3), dtype), 0), np.full(3, -np.inf, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37,), (6, 40), (40, 6), (2, 1)])
def test_softmax_family_matches_the_python_call(shape, dtype):
    x = _data(shape, dtype)
    functions = (nl.softmax, nl.log_softmax, nl.log1m_softmax)
    for got, f in zip(_softmax_family_all(x), functions):
        np.testing.assert_array_equal(got, f(x))
    for axis in range(-len(shape), len(shape)):
        for got, f in zip(_softmax_family(x, axis), functions):
            want = f(x, axis=axis)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_non_contiguous_input_within_bounds():
    x = _data((40, 12), np.float64)[::2, ::3]  # copied to C order inside the compiled call
    np.testing.assert_allclose(_lse_axis(x, 0), nl.logsumexp(x, axis=0), rtol=4e-16)
    for got, f in zip(_softmax_family(x, 1), (nl.softmax, nl.log_softmax, nl.log1m_softmax)):
        np.testing.assert_allclose(got, f(x, axis=1), rtol=4e-16, atol=1e-300)


@njit(parallel=True)
def _rows_in_parallel(x):
    out = np.empty(x.shape[0])
    for i in prange(x.shape[0]):
        out[i] = nl.logsumexp(x[i])
    return out


def test_inside_a_users_parallel_loop():
    x = _data((64, 50), np.float64)
    np.testing.assert_array_equal(_rows_in_parallel(x), nl.logsumexp(x, axis=1))


@njit
def _losses(x, t, w):
    return (
        nl.cross_entropy(x, t),
        nl.cross_entropy(x, t, reduction="sum", label_smoothing=0.2),
        nl.cross_entropy(x, t, weight=w, reduction="none", ignore_index=1),
        nl.nll_loss(x, t),
        nl.nll_loss(x, t, weight=w, reduction="none", ignore_index=1),
    )


@njit
def _loss_and_grad(x, t):
    return nl.cross_entropy(x, t, return_grad=True)


@njit
def _all_ignored(x, t):
    return nl.cross_entropy(x, t, ignore_index=0), nl.nll_loss(x, t, ignore_index=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_match_the_python_call(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 7)).astype(dtype)
    t = rng.integers(0, 7, 30)
    w = rng.random(7).astype(dtype)
    got = _losses(x, t, w)
    want = (
        nl.cross_entropy(x, t),
        nl.cross_entropy(x, t, reduction="sum", label_smoothing=0.2),
        nl.cross_entropy(x, t, weight=w, reduction="none", ignore_index=1),
        nl.nll_loss(x, t),
        nl.nll_loss(x, t, weight=w, reduction="none", ignore_index=1),
    )
    rtol = 4 * np.finfo(dtype).eps  # the final sum's rounding only
    for g, v in zip(got, want):
        if np.ndim(v):
            assert g.dtype == v.dtype
        np.testing.assert_allclose(g, v, rtol=rtol)
    loss, grad = _loss_and_grad(x, t)
    loss_ref, grad_ref = nl.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol)
    np.testing.assert_array_equal(grad, grad_ref)


def test_all_ignored_mean_is_nan_as_the_python_call():
    x = np.zeros((3, 4))
    t = np.zeros(3, dtype=np.int64)
    ce, nll = _all_ignored(x, t)
    assert np.isnan(ce) and np.isnan(nll)
    assert np.isnan(nl.cross_entropy(x, t, ignore_index=0))


@njit
def _weighted_means(x, t, w):
    return nl.cross_entropy(x, t, w), nl.nll_loss(x, t, w)


def test_mean_of_cancelling_weights_is_an_ieee_division_as_the_python_call():
    # The kept weights sum to 0 and the losses do not: +-inf, as the Python call and torch.
    x = np.array([[-1.0, -2.0], [-3.0, -0.5]])
    t = np.array([0, 1])
    w = np.array([1.0, -1.0])
    ce, nll = _weighted_means(x, t, w)
    assert ce == nl.cross_entropy(x, t, w) and np.isinf(ce)
    assert nll == nl.nll_loss(x, t, w) and np.isinf(nll)


# --- bad input: typing errors for what types tell, the Python call's exceptions for values


def test_bad_axis_value_raises_axis_error():
    # The Python call's messages, the values in them.
    with pytest.raises(AxisError, match="axis 2 is out of bounds for array of dimension 2"):
        _lse_axis(np.ones((2, 3)), 2)
    with pytest.raises(AxisError, match="axis -2 is out of bounds for array of dimension 1"):
        _softmax_family(np.ones(4), -2)
    with pytest.raises(AxisError, match="axis 2 is out of bounds for array of dimension 2"):
        nl.logsumexp(np.ones((2, 3)), axis=2)


def test_zero_size_softmax_axis_raises():
    with pytest.raises(ValueError, match="zero-size"):
        _softmax_family(np.ones((2, 0)), 1)


def test_weights_of_another_shape_raise():
    with pytest.raises(ValueError, match="shape"):
        _lse_weighted(np.ones((2, 3)), np.ones((3, 2)), 0)


def test_class_index_out_of_range_raises_index_error():
    x = np.zeros((3, 4))
    with pytest.raises(IndexError, match="Target 7 is out of bounds."):
        _loss_and_grad(x, np.array([0, 7, 1]))
    with pytest.raises(IndexError, match="Target -2 is out of bounds."):
        _losses(x, np.array([0, -2, 1]), np.ones(4))


def test_batch_and_weight_size_mismatch_raise():
    # torch's messages (the Python call's), sizes included.
    message = re.escape("Expected input batch_size (3) to match target batch_size (2).")
    with pytest.raises(ValueError, match=message):
        _loss_and_grad(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=message):
        nl.cross_entropy(np.zeros((3, 4)), np.array([0, 1]))
    message = re.escape("weight tensor should be defined either for all 4 classes or no classes "
                        "but got weight tensor of shape: [5]")
    with pytest.raises(ValueError, match=message):
        _losses(np.zeros((3, 4)), np.array([0, 1, 2]), np.ones(5))
    with pytest.raises(ValueError, match=message):
        nl.nll_loss(np.zeros((3, 4)), np.array([0, 1, 2]), np.ones(5))


def _compile_error(function, *args):
    with pytest.raises(TypingError) as info:
        function(*args)
    return str(info.value)


def _entry_point_installed():
    from importlib import metadata
    return any(e.value.startswith("numba_lse.")
               for e in metadata.entry_points(group="numba_extensions", name="init"))


@pytest.mark.skipif(not _entry_point_installed(),
                    reason="numba_lse used from a source tree: no numba_extensions entry point")
def test_a_users_function_finds_the_functions_before_any_call(tmp_path):
    # ``import numba_lse`` imports no Numba, so it cannot register the overloads: Numba does,
    # through the package's ``numba_extensions`` entry point, when it first compiles. That
    # costs a plain Numba program next to nothing: the kernels' modules are imported only
    # when a function that calls one of them is compiled.
    script = textwrap.dedent("""
        import sys, numpy as np, numba_lse as nl
        from numba import njit
        @njit
        def plain(x):
            return x + 1.0
        plain(1.0)
        print(sorted(m for m in sys.modules if m.startswith("numba_lse.cpu")) or "none")
        @njit
        def user(x):
            return nl.logsumexp(x), nl.log_softmax(x)[0], nl.cross_entropy(x[None], np.array([1]))
        x = np.array([1.0, 2.0, 3.0])
        print(user(x) == (nl.logsumexp(x), nl.log_softmax(x)[0], nl.cross_entropy(x[None], np.array([1]))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["none", "True"]


def test_typing_errors_name_the_argument():
    @njit
    def three_d(x):
        return nl.logsumexp(x)

    assert "1-D or 2-D" in _compile_error(three_d, np.ones((2, 2, 2)))

    @njit
    def integers(x):
        return nl.softmax(x)

    assert "float32 or float64" in _compile_error(integers, np.ones(3, dtype=np.int64))

    @njit
    def keepdims(x):
        return nl.logsumexp(x, keepdims=True)

    assert "keepdims is not supported" in _compile_error(keepdims, np.ones(3))

    @njit
    def tuple_axis(x):
        return nl.logsumexp(x, axis=(0, 1))

    assert "axis must be None or an integer" in _compile_error(tuple_axis, np.ones((2, 2)))

    @njit
    def bad_reduction(x, t):
        return nl.cross_entropy(x, t, reduction="average")

    assert "reduction must be a constant" in _compile_error(
        bad_reduction, np.ones((2, 3)), np.zeros(2, dtype=np.int64))

    @njit
    def float_target(x, t):
        return nl.nll_loss(x, t)

    assert "target must be" in _compile_error(float_target, np.ones((2, 3)), np.zeros(2))

    @njit
    def runtime_grad_flag(x, t, flag):
        return nl.cross_entropy(x, t, return_grad=flag)

    assert "return_grad must be a constant" in _compile_error(
        runtime_grad_flag, np.ones((2, 3)), np.zeros(2, dtype=np.int64), True)
