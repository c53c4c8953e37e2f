"""GPU arrays (``__cuda_array_interface__``: numba device arrays, CuPy, torch CUDA tensors).

Validation from metadata (dtype, shape, axes), raising as the NumPy path does, then the CUDA
backend (``numba_lse.cuda``) on a zero-copy numba view of the caller's array, on the caller's
stream; the result goes back as the caller's kind (CuPy in, CuPy out; torch in, torch out;
numba in, numba out), on the same device, without a copy or a host round trip. Reductions
to a scalar give a 0-d array of that kind.

Every function and dtype of the CPU path but complex (TypeError): float16 is computed in
float32 and returned as float16, integers and booleans become float64, by a conversion on
the device. numba-cuda is imported only when a GPU array
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


def _device(array, name, launch):
    """A numba device array viewing ``array`` (zero-copy), of a dtype numba_lse accepts.

    ``launch`` is the stream the kernels will run on (``_stream_key`` of the first array).
    The interface asks a consumer to order its work after the producer's stream: an array
    of that stream is ordered by launching on it, without a host wait; an array of another
    stream is waited for here (numba's ``as_cuda_array(sync=True)`` synchronises it).
    """
    cuda, _ = _cuda()
    if _is_simulated(array):
        device = array
    elif hasattr(array, "__cuda_array_interface__"):
        device = cuda.as_cuda_array(array, sync=_stream_key(array) != launch)
    else:
        raise TypeError(
            f"{name} is a {type(array).__module__}.{type(array).__name__} while another "
            f"argument is on the GPU: pass GPU arrays for all array arguments"
        )
    dtype = np.dtype(device.dtype)
    if not dtype.isnative:
        # The kernels would read its bytes in the machine's order (the CPU path converts).
        raise TypeError(
            f"unsupported byte order for {name} on the GPU: dtype {dtype.str} is not the "
            f"machine's; convert it before it goes to the device (.astype({dtype.newbyteorder('=').str!r}))"
        )
    _validate.check_dtype(dtype, name)
    if dtype.kind == "c":
        raise TypeError(
            f"unsupported dtype {dtype.name} for {name} on the GPU: complex input is computed "
            f"on the CPU only (pass a NumPy array)"
        )
    return device


def _computed(device, stream):
    """(the array the kernels read, the result dtype): float16 is computed in float32,
    integers and booleans in float64 (a conversion on the device), as on the CPU."""
    _, backend = _cuda()
    dtype = _validate.result_dtype(device.dtype)
    compute = _validate.compute_dtype(dtype)
    if device.dtype != compute:
        device = backend.cast(device, compute, stream)
    return device, dtype


def _returned(result, dtype, stream):
    """A result computed in float32 for float16 data, converted back."""
    _, backend = _cuda()
    return backend.cast(result, dtype, stream) if result.dtype != dtype else result


def _stream_key(array):
    """The stream an array's interface names, None for none or a default stream (1: legacy,
    2: per-thread; 0, which the interface forbids, read as the default), where numba's
    default stream orders the work."""
    interface = getattr(array, "__cuda_array_interface__", None)
    pointer = interface.get("stream") if interface else None
    return None if pointer in (None, 0, 1, 2) else pointer


def _stream(key):
    """The stream to launch on for a ``_stream_key``: the caller's, else the default."""
    if key is None:
        return 0
    cuda, _ = _cuda()
    return cuda.external_stream(key)


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
    launch = _stream_key(a)
    x = _device(a, "a", launch)
    weights = None if b is None else _device(b, "b", launch)
    mask = None if where is None else _device(where, "where", launch)
    stream = _stream(launch)
    if weights is not None:
        if weights.shape != x.shape:
            raise ValueError(f"b with shape {weights.shape} must have a's shape {x.shape} on the GPU")
        if weights.dtype != x.dtype or x.dtype.kind not in "f":
            raise TypeError(f"b ({weights.dtype}) must have a's floating dtype ({x.dtype}) on the GPU")
    if mask is not None:
        _validate.check_where(mask, x.shape)
        if mask.shape != x.shape:
            raise ValueError(f"where with shape {mask.shape} must have a's shape {x.shape} on the GPU")
        if weights is not None:
            raise TypeError("b and where together are not supported on the GPU yet")
        weights = mask
    x, dtype = _computed(x, stream)
    if weights is not None and weights.dtype != np.bool_:
        weights = backend.cast(weights, x.dtype, stream)
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
        if not return_sign and weights is not None and weights.dtype != np.bool_:
            # Only weights of both signs make a negative sum (no weights, or a mask: none).
            backend.nan_where_negative(out, sign, stream=stream)
    out = _returned(out, dtype, stream)
    sign = _returned(sign, dtype, stream) if return_sign else None  # float16: one cast less
    if keepdims:
        shape = tuple(1 if ax in axes else size for ax, size in enumerate(x.shape))
        out, sign = out.reshape(shape), None if sign is None else sign.reshape(shape)
    if return_sign:
        return _as_callers(out, a), _as_callers(sign, a)
    return _as_callers(out, a)


def softmax_family(name, x, axis, where):
    _, backend = _cuda()
    launch = _stream_key(x)
    device = _device(x, "x", launch)
    mask = None if where is None else _device(where, "where", launch)
    stream = _stream(launch)
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
    device, dtype = _computed(device, stream)
    result = backend.softmax_family(name, device, mask, axes, stream=stream)
    return _as_callers(_returned(result, dtype, stream), x)


def _loss_arrays(input, target, weight, ignore_index, reduction, label_smoothing, probabilities_allowed):
    """(logits, target, weight, smoothing, result dtype, unbatched, stream) on the device,
    checked from metadata as on the CPU; class indices are checked by the kernels."""
    _, backend = _cuda()
    launch = _stream_key(input)
    x = _device(input, "input", launch)
    t = _device(target, "target", launch)
    w = None if weight is None else _device(weight, "weight", launch)
    stream = _stream(launch)
    smoothing, probability = _validate.loss_metadata(x, t, w, ignore_index, reduction,
                                                     label_smoothing, probabilities_allowed)
    x, dtype = _computed(x, stream)
    if probability:
        t = backend.cast(t, x.dtype, stream)
    if w is not None:
        w = backend.cast(w, x.dtype, stream)
    unbatched = x.ndim == 1
    if unbatched:
        x = backend.cast(x, x.dtype, stream).reshape(1, *x.shape)
        t = backend.cast(t, t.dtype, stream).reshape(1, *t.shape)
    return x, t, w, smoothing, dtype, unbatched, stream


def _loss_result(loss, reduction, dtype, unbatched, stream):
    if unbatched and reduction == "none":
        loss = loss.reshape(())
    return _returned(loss, dtype, stream)


def nll_loss(log_probs, target, weight, ignore_index, reduction):
    _, backend = _cuda()
    x, t, w, _, dtype, unbatched, stream = _loss_arrays(log_probs, target, weight, ignore_index,
                                                        reduction, 0.0, False)
    loss = backend.nll_loss(x, t, w, ignore_index, reduction, stream=stream)
    return _as_callers(_loss_result(loss, reduction, dtype, unbatched, stream), log_probs)


def cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, return_grad):
    _, backend = _cuda()
    x, t, w, eps, dtype, unbatched, stream = _loss_arrays(logits, target, weight, ignore_index,
                                                          reduction, label_smoothing, True)
    loss, grad = backend.cross_entropy(x, t, w, ignore_index, reduction, eps, return_grad, stream=stream)
    loss = _as_callers(_loss_result(loss, reduction, dtype, unbatched, stream), logits)
    if not return_grad:
        return loss
    if unbatched:
        grad = grad.reshape(grad.shape[1:])
    return loss, _as_callers(_returned(grad, dtype, stream), logits)
