"""The public functions on GPU arrays: same values as on NumPy arrays, results on the device.

Runs on Numba's CUDA simulator where there is no GPU (tests/conftest.py turns it on), and
unchanged on a GPU. The simulator's device arrays have no ``__cuda_array_interface__``, so
CuPy and torch inputs are exercised only on a real GPU (see test_interface_objects).
"""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import numba_lse as nl

cuda = pytest.importorskip("numba.cuda")
if not (cuda.is_available() or getattr(cuda, "simulator_enabled", False)
        or __import__("numba").config.ENABLE_CUDASIM):
    pytest.skip("no GPU and the CUDA simulator is off", allow_module_level=True)

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 4e-7, np.float64: 1e-13}


def _data(shape, dtype, seed=0):
    x = 5 * np.random.default_rng(seed).standard_normal(shape)
    return x.astype(dtype)


def _host(result):
    assert hasattr(result, "copy_to_host"), f"expected a device array, got {type(result)}"
    return result.copy_to_host()


def _close(got, want, dtype):
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=0)
    assert got.dtype == np.asarray(want).dtype and got.shape == np.shape(want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((7,), None), ((3, 40), 1), ((40, 3), 0), ((3, 40), None),
                                         ((2, 3, 4), (0, 2)), ((2, 3, 4), -1)])
def test_logsumexp(shape, axis, dtype):
    x = _data(shape, dtype)
    d = cuda.to_device(x)
    _close(_host(nl.logsumexp(d, axis=axis)), nl.logsumexp(x, axis=axis), dtype)
    _close(_host(nl.logsumexp(d, axis=axis, keepdims=True)),
           nl.logsumexp(x, axis=axis, keepdims=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_weights_sign_and_where(dtype):
    x = _data((4, 30), dtype)
    b = _data((4, 30), dtype, seed=1)
    d, db = cuda.to_device(x), cuda.to_device(b)
    got, sign = nl.logsumexp(d, axis=1, b=db, return_sign=True)
    want, want_sign = nl.logsumexp(x, axis=1, b=b, return_sign=True)
    _close(_host(got), want, dtype)
    np.testing.assert_array_equal(_host(sign), want_sign)
    # Without return_sign, a negative sum gives nan, as on the CPU.
    np.testing.assert_array_equal(np.isnan(_host(nl.logsumexp(d, axis=1, b=db))),
                                  np.isnan(nl.logsumexp(x, axis=1, b=b)))
    mask = np.random.default_rng(2).random((4, 30)) > 0.5
    mask[0] = False  # a fully masked row: -inf
    _close(_host(nl.logsumexp(d, axis=1, where=cuda.to_device(mask))),
           nl.logsumexp(x, axis=1, where=mask), dtype)


def test_logsumexp_special_values_and_empty_axis():
    x = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [np.nan, 0.0], [1e308, 1e308], [1000, -1000]])
    np.testing.assert_array_equal(_host(nl.logsumexp(cuda.to_device(x), axis=1)),
                                  nl.logsumexp(x, axis=1))
    empty = np.zeros((3, 0))
    got, sign = nl.logsumexp(cuda.to_device(empty), axis=1, return_sign=True)
    want, want_sign = nl.logsumexp(empty, axis=1, return_sign=True)
    np.testing.assert_array_equal(_host(got), want)
    np.testing.assert_array_equal(_host(sign), want_sign)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "log1m_softmax"])
@pytest.mark.parametrize("shape, axis", [((7,), None), ((3, 40), 1), ((40, 3), 0), ((2, 3, 4), (0, 2))])
def test_softmax_family(name, shape, axis, dtype):
    x = _data(shape, dtype)
    x.flat[1] = 900.0  # a dominant entry: log1m_softmax's runner-up path
    f = getattr(nl, name)
    got = _host(f(cuda.to_device(x), axis=axis))
    want = f(x, axis=axis)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=1e-300)
    assert got.dtype == want.dtype


def test_softmax_where():
    x = _data((3, 9), np.float64)
    mask = np.random.default_rng(3).random((3, 9)) > 0.4
    got = _host(nl.softmax(cuda.to_device(x), axis=1, where=cuda.to_device(mask)))
    np.testing.assert_allclose(got, nl.softmax(x, axis=1, where=mask), rtol=1e-13, atol=0)


def test_bad_input_raises_before_any_kernel():
    d = cuda.to_device(np.ones((2, 3)))
    with pytest.raises(AxisError):
        nl.logsumexp(d, axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        nl.softmax(d, axis=(1, 1))
    with pytest.raises(TypeError, match="int64"):
        nl.logsumexp(cuda.to_device(np.ones(3, dtype=np.int64)))
    with pytest.raises(TypeError, match="float16"):
        nl.softmax(cuda.to_device(np.ones(3, dtype=np.float16)))
    with pytest.raises(TypeError, match="complex128"):
        nl.logsumexp(cuda.to_device(np.ones(3, dtype=np.complex128)))
    with pytest.raises(TypeError, match="GPU"):
        nl.logsumexp(d, b=np.ones((2, 3)))  # one argument on the host
    with pytest.raises(ValueError, match="shape"):
        nl.logsumexp(d, b=cuda.to_device(np.ones((3, 2))))
    with pytest.raises(TypeError, match="boolean"):
        nl.softmax(d, where=cuda.to_device(np.ones((2, 3))))
    with pytest.raises(ValueError, match="zero-size"):
        nl.softmax(cuda.to_device(np.ones((2, 0))), axis=1)
    with pytest.raises(TypeError, match="losses"):
        nl.cross_entropy(d, cuda.to_device(np.zeros(2, dtype=np.int64)))


def test_interface_objects():
    # CuPy arrays and torch CUDA tensors come back as their own kind (real GPU only).
    if __import__("numba").config.ENABLE_CUDASIM or not cuda.is_available():
        pytest.skip("needs a GPU: the simulator's arrays have no __cuda_array_interface__")
    x = _data((4, 50), np.float32)
    for module in ("cupy", "torch"):
        lib = pytest.importorskip(module)
        device_x = lib.asarray(x) if module == "cupy" else lib.tensor(x, device="cuda")
        got = nl.log_softmax(device_x, axis=1)
        assert type(got) is type(device_x)
        host = got.get() if module == "cupy" else got.cpu().numpy()
        np.testing.assert_allclose(host, nl.log_softmax(x, axis=1), rtol=4e-7)
