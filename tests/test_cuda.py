"""What only GPU arrays do: results of the caller's kind on the device (0-d for a scalar),
streams, the class-index flag read back from the device, and the GPU's own errors.

The semantics shared with NumPy arrays (values, dtypes, special values, the common errors)
are tested once for both backends in tests/test_backends.py. These tests run on Numba's
CUDA simulator where there is no GPU (tests/conftest.py turns it on), and unchanged on a GPU.
The simulator's device arrays have no ``__cuda_array_interface__``, so CuPy and torch inputs
are exercised only on a real GPU (test_interface_objects); what numba_lse does with an
interface (its stream, the host wait for another stream, the result through the caller's
library) is tested with stand-in objects everywhere.
"""

import numpy as np
import pytest

import numba_lse as nl

cuda = pytest.importorskip("numba.cuda")
if not (cuda.is_available() or __import__("numba").config.ENABLE_CUDASIM):
    pytest.skip("no GPU and the CUDA simulator is off", allow_module_level=True)


def _data(shape, dtype=np.float64, seed=0):
    return (5 * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _is_device_array(result):
    # numba device arrays (the simulator's too); a NumPy array or scalar is a host value.
    return hasattr(result, "copy_to_host") and not isinstance(result, (np.ndarray, np.generic))


X = _data((3, 4))
TARGET = np.array([0, 3, 1])
CALLS = {
    # id: (call on device arrays x, t; the shapes of its results)
    "logsumexp-all-axes": (lambda x, t: nl.logsumexp(x), [()]),
    "logsumexp-sign": (lambda x, t: nl.logsumexp(x, axis=1, return_sign=True), [(3,), (3,)]),
    "logsumexp-sign-all-axes": (lambda x, t: nl.logsumexp(x, return_sign=True), [(), ()]),
    "softmax": (lambda x, t: nl.softmax(x, axis=1), [(3, 4)]),
    "log1m_softmax-all-axes": (lambda x, t: nl.log1m_softmax(x), [(3, 4)]),
    "nll_loss-mean": (lambda x, t: nl.nll_loss(x, t), [()]),
    "nll_loss-none": (lambda x, t: nl.nll_loss(x, t, reduction="none"), [(3,)]),
    "cross_entropy-sum-grad": (lambda x, t: nl.cross_entropy(x, t, reduction="sum", return_grad=True),
                               [(), (3, 4)]),
    "cross_entropy-unbatched": (lambda x, t: nl.cross_entropy(x[0], cuda.to_device(TARGET[0]),
                                                              reduction="none", return_grad=True),
                                [(), (4,)]),
}


@pytest.mark.parametrize("case", CALLS)
def test_results_stay_on_the_device(case):
    # A numba device array in, numba device arrays out: a reduction to a scalar is a 0-d
    # device array, never a host value (the NumPy path gives a NumPy scalar there).
    call, shapes = CALLS[case]
    result = call(cuda.to_device(X), cuda.to_device(TARGET))
    results = result if isinstance(result, tuple) else (result,)
    assert [r.shape for r in results] == shapes
    assert all(_is_device_array(r) for r in results), [type(r) for r in results]


def test_callers_stream():
    # Kernels launch on the stream of the caller's array (its __cuda_array_interface__ names
    # it; on the simulator streams are sequential); the values are the stream's work.
    stream = cuda.stream()
    x = _data((4, 6))
    d = cuda.to_device(x, stream=stream)
    got = nl.log_softmax(d, axis=1)
    lse = nl.logsumexp(d, axis=0)
    stream.synchronize()
    rtol = 4 * np.finfo(np.float64).eps
    np.testing.assert_allclose(got.copy_to_host(), nl.log_softmax(x, axis=1), rtol=rtol)
    np.testing.assert_allclose(lse.copy_to_host(), nl.logsumexp(x, axis=0), rtol=rtol)


def test_class_index_flag_is_per_call():
    # An index out of range is flagged on the device and raised after the kernels; the next
    # call has a fresh flag and computes as usual.
    d = cuda.to_device(X)
    with pytest.raises(IndexError, match=r"^Target 9 is out of bounds\.$"):
        nl.cross_entropy(d, cuda.to_device(np.array([0, 9, 1])))
    got = nl.cross_entropy(d, cuda.to_device(TARGET)).copy_to_host()
    np.testing.assert_allclose(got, nl.cross_entropy(X, TARGET), rtol=4 * np.finfo(np.float64).eps)


GPU_ERRORS = {
    # id: (call, exception, message): where the GPU path refuses what the CPU path takes
    "host-array-beside-device-array": (lambda d: nl.logsumexp(d, b=np.ones((3, 4))),
                                       TypeError, "pass GPU arrays for all array arguments"),
    "host-target": (lambda d: nl.cross_entropy(d, TARGET),
                    TypeError, "target is a numpy.ndarray while another argument is on the GPU"),
    "complex": (lambda d: nl.logsumexp(cuda.to_device(np.ones(3, np.complex64))),
                TypeError, "complex input is computed on the CPU only"),
    "b-broadcast": (lambda d: nl.logsumexp(d, b=cuda.to_device(np.ones(4))),
                    ValueError, r"b with shape \(4,\) must have a's shape \(3, 4\) on the GPU"),
    "b-dtype": (lambda d: nl.logsumexp(d, b=cuda.to_device(np.ones((3, 4), np.float32))),
                TypeError, r"b \(float32\) must have a's floating dtype \(float64\)"),
    "b-with-where": (lambda d: nl.logsumexp(d, b=d, where=cuda.to_device(np.ones((3, 4), bool))),
                     TypeError, "b and where together are not supported on the GPU"),
    "where-broadcast": (lambda d: nl.softmax(d, where=cuda.to_device(np.ones(4, bool))),
                        ValueError, r"where with shape \(4,\) must have x's shape \(3, 4\)"),
    "softmax-0d": (lambda d: nl.softmax(cuda.to_device(np.array(1.0))),
                   ValueError, "a 0-d GPU array has nothing to normalise"),
    # The CPU path converts data of the other byte order; a kernel would misread its bytes.
    "byte-order-a": (lambda d: nl.logsumexp(cuda.to_device(X.astype(">f8"))),
                     TypeError, r"unsupported byte order for a on the GPU: dtype >f8"),
    "byte-order-b": (lambda d: nl.logsumexp(d, b=cuda.to_device(X.astype(">f8"))),
                     TypeError, r"unsupported byte order for b on the GPU: dtype >f8"),
    "byte-order-x": (lambda d: nl.log1m_softmax(cuda.to_device(X.astype(">f4"))),
                     TypeError, r"unsupported byte order for x on the GPU: dtype >f4 .*'<f4'"),
    "byte-order-target": (lambda d: nl.nll_loss(d, cuda.to_device(np.array([0, 1, 2], ">i8"))),
                          TypeError, r"unsupported byte order for target on the GPU: dtype >i8"),
}


@pytest.mark.parametrize("case", GPU_ERRORS)
def test_gpu_only_errors(case):
    call, error, message = GPU_ERRORS[case]
    with pytest.raises(error, match=message):
        call(cuda.to_device(X))


def interface(wrapped, stream, module="producer"):
    """A GPU array known only by its ``__cuda_array_interface__`` (as CuPy's and torch's
    are), of a class from ``module``, viewing the numba device array ``wrapped``, produced
    on ``stream``."""
    kind = type("Array", (), {"__module__": module, "device": "cuda:0", "wrapped": wrapped})
    array = kind()
    array.__cuda_array_interface__ = {"shape": wrapped.shape, "typestr": wrapped.dtype.str,
                                      "data": (0, False), "version": 3, "stream": stream}
    return array


@pytest.fixture
def interface_protocol(monkeypatch):
    """numba's side of the interface, recorded: as_cuda_array (the simulator has none) gives
    the wrapped device array, external_stream the default stream; returns the calls."""
    calls = {"as_cuda_array": [], "external_stream": []}

    def as_cuda_array(obj, sync=True):
        calls["as_cuda_array"].append((obj.__cuda_array_interface__["stream"], sync))
        return obj.wrapped

    def external_stream(pointer):
        calls["external_stream"].append(pointer)
        return 0

    monkeypatch.setattr(cuda, "as_cuda_array", as_cuda_array, raising=False)
    monkeypatch.setattr(cuda, "external_stream", external_stream)
    return calls


@pytest.mark.parametrize("stream", [None, 0, 1, 2, 0x7F00])
def test_interface_streams(interface_protocol, stream):
    # Kernels launch on the stream the first array's interface names (numba's default stream
    # for none or a default one); that array is ordered by the launch itself, with no host
    # wait (sync=False); an argument produced on another stream is waited for (sync=True).
    x, b = _data((3, 4)), _data((3, 4), seed=1)
    got = nl.logsumexp(interface(cuda.to_device(x), stream), axis=1,
                       b=interface(cuda.to_device(b), 0x5E00))
    np.testing.assert_allclose(got.copy_to_host(), nl.logsumexp(x, axis=1, b=b),
                               rtol=4 * np.finfo(np.float64).eps)
    assert interface_protocol["as_cuda_array"] == [(stream, False), (0x5E00, True)]
    assert interface_protocol["external_stream"] == ([stream] if stream == 0x7F00 else [])


@pytest.mark.parametrize("module", ["cupy", "torch"])
def test_interface_results_of_the_callers_kind(interface_protocol, monkeypatch, module):
    # Results go back through the caller's library (cupy.asarray; torch.as_tensor on the
    # caller's device), which wraps numba's array by its interface, zero-copy.
    import sys
    import types

    made = []
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        asarray=lambda r: made.append(("cupy", r, None)) or r))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
        as_tensor=lambda r, device: made.append(("torch", r, device)) or r))
    logits = interface(cuda.to_device(X), None, f"{module}.core")
    loss, grad = nl.cross_entropy(logits, interface(cuda.to_device(TARGET), None, module),
                                  return_grad=True)
    assert made == [(module, loss, "cuda:0" if module == "torch" else None),
                    (module, grad, "cuda:0" if module == "torch" else None)]
    np.testing.assert_allclose(grad.copy_to_host(), nl.cross_entropy(X, TARGET, return_grad=True)[1],
                               rtol=4 * np.finfo(np.float64).eps)


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
        total = nl.logsumexp(device_x)
        assert type(total) is type(device_x) and total.shape == ()


def test_small_launches_do_not_warn(monkeypatch):
    # Small inputs launch small grids on purpose; Numba warns of low occupancy on a GPU (not
    # on the simulator), with numba-cuda's own warning class since numba-cuda 0.30. A stand-in
    # kernel warns as a real launch does, so the filter is tested here too.
    import warnings

    from numba_lse import cuda as backend

    categories = {__import__("numba.core.errors", fromlist=["_"]).NumbaPerformanceWarning}
    try:
        categories.add(__import__("numba.cuda.core.errors", fromlist=["_"]).NumbaPerformanceWarning)
    except ImportError:  # pragma: no cover - older numba-cuda
        pass
    launched = []

    class Kernel:
        def __getitem__(self, config):
            for category in categories:
                warnings.warn(category("Grid size 1 will likely result in GPU under-utilization"))
            return lambda *args: launched.append((config, args))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend._launch(Kernel(), (1, 32), 0, "x")
        nl.softmax(cuda.to_device(X), axis=1)  # and a real launch (it warns on a GPU)
    assert launched == [((1, 32, 0), ("x",))]


def test_logsumexp_launches(monkeypatch):
    # One reduction kernel per call; the pass that puts nan where the sum is negative only
    # with weights of both signs (no weights, or a mask, cannot make a negative sum).
    from numba_lse import cuda as backend

    launched = []
    launch = backend._launch

    def recording(kernel, *args):
        launched.append(kernel)
        return launch(kernel, *args)

    monkeypatch.setattr(backend, "_launch", recording)
    x = cuda.to_device(X)
    b = np.ones_like(X)
    b[1] = -1.0
    calls = [(lambda: nl.logsumexp(x, axis=1), False),
             (lambda: nl.logsumexp(x, axis=1, where=cuda.to_device(X > 0)), False),
             (lambda: nl.logsumexp(x, axis=1, b=cuda.to_device(b), return_sign=True), False),
             (lambda: nl.logsumexp(x, axis=1, b=cuda.to_device(b)), True)]
    for call, nan_pass in calls:
        launched.clear()
        out = call()
        assert launched[0] is backend.kernels.lse
        assert (backend.kernels.nan_where_negative in launched) == nan_pass
    np.testing.assert_array_equal(np.isnan(out.copy_to_host()), [False, True, False])
