"""The CUDA backend: numba device arrays in, numba device arrays out, ``@cuda.jit`` kernels.

Its public names are the device functions of ``device.py`` for users' own kernels
(``logsumexp_row``, ``softmax_row``, ``log_softmax_row``, ``log1m_softmax_row``).

Mirrors ``numba_lse.cpu``: each function takes validated arrays (float32/float64, axes a
sorted tuple), builds the canonical (outer, n, inner) view, allocates the output and launches
the kernels of ``kernels.py``, which compute with the CPU backend's scalar functions (one
merge rule, one set of special values). Nothing here raises for user input.

The view: a C-contiguous array reduced over a consecutive block of axes is (outer, n, inner)
by a reshape, with no copy. Any other array (other strides, or reduced axes that are not
consecutive) is first copied by a small kernel into a C-ordered buffer with the kept axes
first and the reduced ones last, which is (outer, n, 1); results of the softmax family are
copied back to the caller's axis order the same way.

Every launch goes on ``stream`` (the default stream unless the caller passes one); nothing
here synchronises or copies to the host.
"""

import math
import warnings

import numpy as np
from numba import cuda
from numba.core import errors as _numba_errors

try:
    from numba.cuda.core import errors as _cuda_errors
except ImportError:  # pragma: no cover - numba-cuda before it had its own errors module
    _cuda_errors = _numba_errors

from ..cpu.jit import make_dispatchers
from ..cpu.softmax import LOG1M_SOFTMAX, LOG_SOFTMAX, SOFTMAX
from . import kernels
from .device import log1m_softmax_row, log_softmax_row, logsumexp_row, softmax_row

# The kernels call the CPU backend's functions, which numba-cuda compiles for the GPU only
# as Numba dispatchers: made here, not at their first use as on the CPU.
make_dispatchers()

# The public names of this module: device functions for users' own kernels (the rest is the
# backend behind numba_lse's functions).
__all__ = ["logsumexp_row", "softmax_row", "log_softmax_row", "log1m_softmax_row"]

_OPS = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "log1m_softmax": LOG1M_SOFTMAX}


def logsumexp(a, b, axes, stream=0):
    """(log|sum b exp(a)|, sign) over ``axes``: device arrays of the kept axes, dtype of ``a``.

    ``a``: a float32/float64 device array; ``b``: None or a device array of a's shape (float
    or bool); ``axes``: a sorted tuple of axes. Special values as ``cpu.partials.log_abs_sum``.
    """
    layout = _Layout(a.shape, axes)
    out = cuda.device_array(layout.kept_shape, dtype=a.dtype, stream=stream)
    sign = cuda.device_array(layout.kept_shape, dtype=a.dtype, stream=stream)
    if layout.outer * layout.inner == 0:
        return out, sign
    x = layout.view(a, stream)
    w = None if b is None else layout.view(b, stream)
    out2 = out.reshape(layout.outer, layout.inner)
    sign2 = sign.reshape(layout.outer, layout.inner)
    parts = kernels.parts_of(layout.outer * layout.inner, layout.n, layout.inner)
    if parts == 1:
        blocks, threads, group = kernels.launch(layout.outer * layout.inner, layout.n, layout.inner)
        _launch(kernels.lse, (blocks, threads), stream, x, w, group, out2, sign2)
    else:
        _merged_partials(x, w, parts, stream, out2, sign2)
    return out, sign


def softmax_family(name, x, where, axes, stream=0):
    """softmax, log_softmax or log1m_softmax of x over ``axes``: a device array of x's shape
    and dtype (C-contiguous). ``where``: None or a bool device array of x's shape."""
    op = _OPS[name]
    layout = _Layout(x.shape, axes)
    if x.size == 0:
        return cuda.device_array(x.shape, dtype=x.dtype, stream=stream)
    view = layout.view(x, stream)
    mask = None if where is None else layout.view(where, stream)
    out = cuda.device_array(view.shape, dtype=x.dtype, stream=stream)
    parts = kernels.parts_of(layout.outer * layout.inner, layout.n, layout.inner)
    if parts == 1:
        blocks, threads, group = kernels.launch(layout.outer * layout.inner, layout.n, layout.inner)
        _launch(kernels.softmax, (blocks, threads), stream, view, mask, op, group, out)
    else:
        m, c, s = _merged_partials(view, mask, parts, stream)
        below = (m, c, s)
        if op == LOG1M_SOFTMAX:
            below = _merged_partials(view, mask, parts, stream, cut=(m, c, s))
        outer, n, inner = view.shape
        blocks, threads, group = kernels.launch(outer * parts * inner, -(-n // parts), inner)
        _launch(kernels.apply, (blocks, threads), stream, view, mask, op, parts, group, m, c, s,
                *below, out)
    return layout.full(out, stream)


def _merged_partials(x, w, parts, stream, out=None, sign=None, cut=None):
    """The partials (m, c, s) of the slices of x (outer, n, inner), each split in ``parts``
    reduced by blocks of their own and merged: a grid reduction in two launches. With
    ``out``, also the log-sum-exp and sign; with ``cut`` (the slices' partials), the partials
    of the entries below the max of the slices with a dominant entry (log1m_softmax)."""
    outer, n, inner = x.shape
    pm, pc, ps = (cuda.device_array((outer, parts, inner), dtype=np.float64, stream=stream) for _ in range(3))
    blocks, threads, group = kernels.launch(outer * parts * inner, -(-n // parts), inner)
    cm, cc, cs = cut if cut is not None else (None, None, None)
    _launch(kernels.partials, (blocks, threads), stream, x, w, group, cm, cc, cs, pm, pc, ps)
    m, c, s = (cuda.device_array((outer, inner), dtype=np.float64, stream=stream) for _ in range(3))
    _launch(kernels.merge_parts, kernels.flat_launch(outer * inner), stream, pm, pc, ps, m, c, s, out, sign)
    return m, c, s


def cross_entropy(x, target, weight, ignore_index, reduction, eps, return_grad, stream=0):
    """Cross-entropy of logits x (N, C, d...) over axis 1: (loss, grad or None) as device
    arrays, the loss per sample (reduction 'none') or 0-d, in x's dtype.

    ``target``: class indices (N, d...) of an integer dtype, or probabilities like x. An
    index out of range raises IndexError after the kernels (one synchronisation).
    """
    layout = _Layout(x.shape, (1,))
    logits = layout.view(x, stream)
    outer, n_classes, inner = logits.shape
    loss = _per_sample(layout, x.dtype, reduction, stream)
    grad = cuda.device_array(logits.shape, dtype=x.dtype, stream=stream) if return_grad else None
    blocks, threads, group = kernels.launch(max(outer * inner, 1), n_classes, inner)
    if target.dtype.kind == "f":
        count = outer * inner
        scale = 1.0 / count if reduction == "mean" and count else 1.0
        if outer * inner:
            _launch(kernels.cross_entropy_probability, (blocks, threads), stream,
                    logits, layout.view(target, stream), weight, eps, scale, group, loss, grad)
        result = _reduced(loss, layout, reduction, None, float(count), x.dtype, stream)
    else:
        indices = _samples(target, outer, inner, stream)
        kept, error = _class_weights(indices, weight, ignore_index, n_classes, stream)
        denominator = _total(kept, None, 1.0, np.float64, stream) if reduction == "mean" else None
        if outer * inner:
            _launch(kernels.cross_entropy_index, (blocks, threads), stream, logits, indices, weight,
                    ignore_index, eps, 1.0, denominator, group, loss, grad)
        result = _reduced(loss, layout, reduction, denominator, 1.0, x.dtype, stream)
        _raise_for_classes(error, stream)
    return result, (None if grad is None else layout.full(grad, stream))


def nll_loss(log_probs, target, weight, ignore_index, reduction, stream=0):
    """NLL of log-probabilities (N, C, d...) over axis 1: a device array, per sample or 0-d.
    An index out of range raises IndexError after the kernels (one synchronisation)."""
    layout = _Layout(log_probs.shape, (1,))
    x = layout.view(log_probs, stream)
    outer, n_classes, inner = x.shape
    indices = _samples(target, outer, inner, stream)
    _, error = _class_weights(indices, weight, ignore_index, n_classes, stream)
    loss = _per_sample(layout, log_probs.dtype, reduction, stream)
    kept = cuda.device_array((outer, inner), dtype=np.float64, stream=stream)
    if outer * inner:
        _launch(kernels.nll, kernels.flat_launch(outer * inner), stream, x, indices, weight,
                ignore_index, loss, kept)
    denominator = _total(kept, None, 1.0, np.float64, stream) if reduction == "mean" else None
    result = _reduced(loss, layout, reduction, denominator, 1.0, log_probs.dtype, stream)
    _raise_for_classes(error, stream)
    return result


def _per_sample(layout, dtype, reduction, stream):
    """The per-sample losses (outer, inner): in the result dtype for 'none', else float64
    (summed before the one rounding)."""
    dtype = dtype if reduction == "none" else np.float64
    return cuda.device_array((layout.outer, layout.inner), dtype=dtype, stream=stream)


def _samples(target, outer, inner, stream):
    """The class indices (N, d...) as a C-contiguous (outer, inner) device array."""
    if not target.is_c_contiguous():
        target = _Layout(target.shape, ()).view(target, stream)
    return target.reshape(outer, inner)


def _class_weights(indices, weight, ignore_index, n_classes, stream):
    """(kept, error): kept[o, j] = the class weight of each sample (0 where ignored); an
    index out of range is recorded in the device array ``error``, for ``_raise_for_classes``."""
    error = cuda.to_device(np.zeros(2, dtype=np.int64), stream=stream)
    kept = cuda.device_array(indices.shape, dtype=np.float64, stream=stream)
    if indices.size:
        _launch(kernels.class_weights, kernels.flat_launch(indices.size), stream, indices, weight,
                ignore_index, n_classes, kept, error)
    return kept, error


def _raise_for_classes(error, stream):
    """IndexError (the CPU's message) if ``class_weights`` met an index out of range: reads
    the device's flag, which waits for the stream's work so far."""
    flag, index = error.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    if flag:
        raise IndexError(f"Target {index} is out of bounds.")


def _total(values, denominator, divisor, dtype, stream):
    """A 1-element device array: the sum of values (2-D) / denominator[0] (or / divisor)."""
    out = cuda.device_array(1, dtype=dtype, stream=stream)
    _, threads, _ = kernels.launch(1, max(values.size, 1), 1)
    _launch(kernels.total, (1, threads), stream, values, denominator, divisor, out)
    return out


def _reduced(loss, layout, reduction, denominator, divisor, dtype, stream):
    """'none': the per-sample losses (of the kept axes' shape); 'sum' / 'mean': their 0-d
    sum (/ the denominator)."""
    if reduction == "none":
        return loss.reshape(layout.kept_shape)
    if reduction == "sum":
        denominator, divisor = None, 1.0
    return _total(loss, denominator, divisor, dtype, stream).reshape(())


def cast(array, dtype, stream=0):
    """``array`` as a C-contiguous device array of ``dtype`` (itself when it is one)."""
    if array.dtype == dtype and array.is_c_contiguous():
        return array
    flat = array.reshape(1) if array.ndim == 0 else array  # a copy kernel needs an axis
    return _Layout(flat.shape, ()).view(flat, stream, dtype).reshape(array.shape)


def nan_where_negative(out, sign, stream=0):
    """out = nan where sign < 0, in place (arrays of one shape): logsumexp without a sign."""
    if out.size:
        _launch(kernels.nan_where_negative, kernels.flat_launch(out.size), stream,
                out.reshape(out.size), sign.reshape(sign.size))


class _Layout:
    """How an array of ``shape`` with ``axes`` reduced maps onto (outer, n, inner)."""

    def __init__(self, shape, axes):
        self.shape = tuple(shape)
        ndim = len(self.shape)
        axes = tuple(axes)
        kept = [ax for ax in range(ndim) if ax not in axes]
        self.kept_shape = tuple(self.shape[ax] for ax in kept)
        if not axes or axes[-1] - axes[0] + 1 == len(axes):
            # A consecutive block (or nothing): a C-ordered array reshapes to the view.
            start = axes[0] if axes else ndim
            stop = start + len(axes)
            self.perm = None
            self.outer = math.prod(self.shape[:start])
            self.n = math.prod(self.shape[start:stop])
            self.inner = math.prod(self.shape[stop:])
        else:
            # Kept axes first, reduced ones last: (outer, n, 1) after a copy.
            self.perm = tuple(kept) + axes
            self.outer = math.prod(self.kept_shape)
            self.n = math.prod(self.shape[ax] for ax in axes)
            self.inner = 1

    def _buffer_strides(self):
        """For each axis of the array, its step in the C-ordered buffer of permuted axes."""
        perm = self.perm if self.perm is not None else tuple(range(len(self.shape)))
        strides = [0] * len(perm)
        step = 1
        for ax in reversed(perm):
            strides[ax] = step
            step *= self.shape[ax]
        return tuple(strides)

    def view(self, array, stream, dtype=None):
        """``array`` (of this shape) as a C-contiguous (outer, n, inner) device array (of
        ``dtype``, if given): a reshape when it is C-contiguous and the axes allow, else a
        copy."""
        dtype = array.dtype if dtype is None else np.dtype(dtype)
        if self.perm is None and array.is_c_contiguous() and array.dtype == dtype:
            return array.reshape(self.outer, self.n, self.inner)
        buffer = cuda.device_array(array.size, dtype=dtype, stream=stream)
        if array.size:
            kernel = kernels.permuted_copy(len(self.shape), True)
            _launch(kernel, kernels.flat_launch(array.size), stream, array, buffer, self._buffer_strides())
        return buffer.reshape(self.outer, self.n, self.inner)

    def full(self, out, stream):
        """The (outer, n, inner) result ``out`` as a C-contiguous array of the original shape."""
        if self.perm is None:
            return out.reshape(self.shape)
        result = cuda.device_array(self.shape, dtype=out.dtype, stream=stream)
        kernel = kernels.permuted_copy(len(self.shape), False)
        _launch(kernel, kernels.flat_launch(out.size), stream, out.reshape(out.size), result,
                self._buffer_strides())
        return result


# The low-occupancy warning's class: numba-cuda's own since it split from numba (0.30 warns
# with numba.cuda.core.errors', which is not numba.core.errors' nor a subclass of it).
_OCCUPANCY_WARNINGS = tuple({_numba_errors.NumbaPerformanceWarning,
                             _cuda_errors.NumbaPerformanceWarning})


def _launch(kernel, grid, stream, *args):
    """kernel[blocks, threads, stream](*args), without Numba's low-occupancy warning: small
    inputs launch small grids on purpose."""
    blocks, threads = grid
    with warnings.catch_warnings():
        for category in _OCCUPANCY_WARNINGS:
            warnings.simplefilter("ignore", category)
        configured = kernel[blocks, threads, stream]
    configured(*args)
