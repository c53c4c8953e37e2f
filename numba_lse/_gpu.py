"""GPU arrays (``__cuda_array_interface__``: numba device arrays, CuPy, torch CUDA tensors).

Validation from metadata (dtype, shape, axes), raising as the NumPy path does, then the CUDA
backend (``numba_lse.cuda``) on a zero-copy numba view of the caller's array, on the caller's
stream; the result goes back as the caller's kind (CuPy in, CuPy out; torch in, torch out;
numba in, numba out), on the same device, without a copy or a host round trip. Reductions
to a scalar give a 0-d array of that kind.

Today: logsumexp and the softmax family, float32 and float64 (other dtypes raise TypeError;
the losses raise TypeError until they land). numba-cuda is imported only when a GPU array
arrives, and CuPy and torch never are.
"""

import numpy as np

from . import _validate


def _is_simulated(array):
    # Numba's CUDA simulator has its own device-array type, without the interface.
    return type(array).__name__ == "FakeCUDAArray" and type(array).__module__.startswith("numba.cuda")


def is_gpu(*arrays):
    """Whether any of ``arrays`` lives on a GPU."""
    return any(hasattr(a, "__cuda_array_interface__") or _is_simulated(a)
               for a in arrays if a is not None)


def _cuda():
    try:
        from numba import cuda

        from . import cuda as backend
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise TypeError(
            "a GPU array needs numba-cuda: pip install 'numba_lse[cuda]' "
            f"(importing it failed: {error})"
        ) from None
    return cuda, backend


def _device(array, name):
    """A numba device array viewing ``array`` (zero-copy), checked to be float32/float64."""
    cuda, _ = _cuda()
    if _is_simulated(array):
        device = array
    elif hasattr(array, "__cuda_array_interface__"):
        device = cuda.as_cuda_array(array)
    else:
        raise TypeError(
            f"{name} is a {type(array).__module__}.{type(array).__name__} while another "
            f"argument is on the GPU: pass GPU arrays for all array arguments"
        )
    dtype = np.dtype(device.dtype)
    _validate.check_dtype(dtype, name)
    if dtype not in (np.float32, np.float64) and not (name == "where" and dtype == np.bool_):
        raise TypeError(
            f"unsupported dtype {dtype.name} for {name} on the GPU: float32 or float64 "
            f"(convert on the device, e.g. x.astype('float32'))"
        )
    return device


def _stream(array):
    """The caller's stream: the interface's ``stream`` field, else the default stream."""
    interface = getattr(array, "__cuda_array_interface__", None)
    pointer = interface.get("stream") if interface else None
    if not pointer or pointer in (1, 2):  # absent, legacy or per-thread default stream
        return 0
    cuda, _ = _cuda()
    return cuda.external_stream(pointer)


def _as_callers(result, like):
    """``result`` (a numba device array) as the kind of array the caller passed."""
    module = type(like).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy.asarray(result)
    if module == "torch":
        import torch

        return torch.as_tensor(result, device=like.device)
    return result


def _filled(shape, value, dtype, stream):
    cuda, _ = _cuda()
    return cuda.to_device(np.full(shape, value, dtype=dtype), stream=stream)


def logsumexp(a, axis, b, keepdims, return_sign, where):
    cuda, backend = _cuda()
    x = _device(a, "a")
    stream = _stream(a)
    weights = None if b is None else _device(b, "b")
    mask = None if where is None else _device(where, "where")
    if weights is not None:
        if weights.shape != x.shape:
            raise ValueError(f"b with shape {weights.shape} must have a's shape {x.shape} on the GPU")
        if weights.dtype != x.dtype:
            raise TypeError(f"b ({weights.dtype}) must have a's dtype ({x.dtype}) on the GPU")
    if mask is not None:
        _validate.check_where(mask, x.shape)
        if mask.shape != x.shape:
            raise ValueError(f"where with shape {mask.shape} must have a's shape {x.shape} on the GPU")
        if weights is not None:
            raise TypeError("b and where together are not supported on the GPU yet")
        weights = mask
    if x.ndim == 0:
        x = x.reshape(1)
        weights = None if weights is None else weights.reshape(1)
    axes = _validate.normalize_axes(axis, x.ndim)
    kept = tuple(size for ax, size in enumerate(x.shape) if ax not in axes)
    if any(x.shape[ax] == 0 for ax in axes):
        # As SciPy and the NumPy path: -inf, with sign -1.
        out, sign = (_filled(kept, value, x.dtype, stream) for value in (-np.inf, -1.0))
    else:
        out, sign = backend.logsumexp(x, weights, axes, stream=stream)
        if not return_sign:
            backend.nan_where_negative(out, sign, stream=stream)
    if keepdims:
        shape = tuple(1 if ax in axes else size for ax, size in enumerate(x.shape))
        out, sign = out.reshape(shape), sign.reshape(shape)
    if return_sign:
        return _as_callers(out, a), _as_callers(sign, a)
    return _as_callers(out, a)


def softmax_family(name, x, axis, where):
    _, backend = _cuda()
    device = _device(x, "x")
    stream = _stream(x)
    mask = None if where is None else _device(where, "where")
    if mask is not None:
        _validate.check_where(mask, device.shape)
        if mask.shape != device.shape:
            raise ValueError(f"where with shape {mask.shape} must have x's shape {device.shape} on the GPU")
    axes = _validate.normalize_axes(axis, max(device.ndim, 1))
    if device.ndim == 0:
        raise ValueError("a 0-d GPU array has nothing to normalise: pass an array of 1 or more dimensions")
    if any(device.shape[ax] == 0 for ax in axes):
        raise ValueError(
            f"cannot normalise over a zero-size axis: x has shape {device.shape} and "
            f"axis={axis!r} (SciPy raises 'zero-size array to reduction operation maximum')"
        )
    return _as_callers(backend.softmax_family(name, device, mask, axes, stream=stream), x)
