"""The CUDA backend: numba device arrays in, numba device arrays out, ``@cuda.jit`` kernels.

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

from numba import config, cuda
from numba.core.errors import NumbaPerformanceWarning

from ..cpu.softmax import LOG1M_SOFTMAX, LOG_SOFTMAX, SOFTMAX
from . import kernels

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
    w = x if b is None else layout.view(b, stream)
    out2 = out.reshape(layout.outer, layout.inner)
    sign2 = sign.reshape(layout.outer, layout.inner)
    if layout.inner == 1:
        rows = (layout.outer, layout.n)
        kernel = kernels.lse_rows(b is not None)
        _launch(kernel, _row_grid(layout), stream,
                x.reshape(rows), w.reshape(rows), out2.reshape(layout.outer), sign2.reshape(layout.outer))
    else:
        kernel = kernels.lse_columns(b is not None)
        _launch(kernel, _column_grid(layout), stream, x, w, out2, sign2)
    return out, sign


def softmax_family(name, x, where, axes, stream=0):
    """softmax, log_softmax or log1m_softmax of x over ``axes``: a device array of x's shape
    and dtype (C-contiguous). ``where``: None or a bool device array of x's shape."""
    op = _OPS[name]
    layout = _Layout(x.shape, axes)
    if x.size == 0:
        return cuda.device_array(x.shape, dtype=x.dtype, stream=stream)
    view = layout.view(x, stream)
    mask = view if where is None else layout.view(where, stream)
    out = cuda.device_array((layout.outer, layout.n, layout.inner), dtype=x.dtype, stream=stream)
    if layout.inner == 1:
        rows = (layout.outer, layout.n)
        kernel = kernels.softmax_rows(op, where is not None)
        _launch(kernel, _row_grid(layout), stream,
                view.reshape(rows), mask.reshape(rows), out.reshape(rows))
    else:
        kernel = kernels.softmax_columns(op, where is not None)
        _launch(kernel, _column_grid(layout), stream, view, mask, out)
    return layout.full(out, stream)


def nan_where_negative(out, sign, stream=0):
    """out = nan where sign < 0, in place (arrays of one shape): logsumexp without a sign."""
    if out.size:
        _launch(kernels.nan_where_negative, _flat_grid(out.size), stream,
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

    def view(self, array, stream):
        """``array`` (of this shape, size > 0) as a C-contiguous (outer, n, inner) device
        array: a reshape when it is C-contiguous and the axes allow, else a copy."""
        if self.perm is None and array.is_c_contiguous():
            return array.reshape(self.outer, self.n, self.inner)
        buffer = cuda.device_array(array.size, dtype=array.dtype, stream=stream)
        if array.size:
            kernel = kernels.permuted_copy(len(self.shape), True)
            _launch(kernel, _flat_grid(array.size), stream, array, buffer, self._buffer_strides())
        return buffer.reshape(self.outer, self.n, self.inner)

    def full(self, out, stream):
        """The (outer, n, inner) result ``out`` as a C-contiguous array of the original shape."""
        if self.perm is None:
            return out.reshape(self.shape)
        result = cuda.device_array(self.shape, dtype=out.dtype, stream=stream)
        kernel = kernels.permuted_copy(len(self.shape), False)
        _launch(kernel, _flat_grid(out.size), stream, out.reshape(out.size), result,
                self._buffer_strides())
        return result


def _row_grid(layout):
    """(blocks, threads) of a row kernel: a block per row, up to kernels.MAX_BLOCKS."""
    return min(layout.outer, kernels.MAX_BLOCKS), kernels.row_block(layout.n, config.ENABLE_CUDASIM)


def _column_grid(layout):
    """(blocks, threads) of a column kernel: a thread per (outer, inner) column."""
    return kernels.column_launch(layout.outer * layout.inner, config.ENABLE_CUDASIM)


def _flat_grid(size):
    """(blocks, threads) of an element-wise kernel over ``size`` > 0 elements."""
    return kernels.column_launch(size, config.ENABLE_CUDASIM)


def _launch(kernel, grid, stream, *args):
    """kernel[blocks, threads, stream](*args), without Numba's low-occupancy warning: small
    inputs launch small grids on purpose."""
    blocks, threads = grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        configured = kernel[blocks, threads, stream]
    configured(*args)
