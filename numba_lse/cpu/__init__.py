"""The CPU backend: NumPy arrays in, NumPy arrays out, kernels compiled with Numba.

Each function here takes validated arrays (compute dtype, axes normalised), builds the
canonical view, allocates the output and launches one kernel. Nothing here raises for user
input: ``_validate`` has already done so.
"""

import threading

import numba
import numpy as np

from .._layout import CanonicalView
from . import reduce, softmax

# Numba's fallback threading layer ("workqueue", used when neither TBB nor OpenMP loads) aborts
# the process when two threads launch parallel kernels at once. With it, launches take turns;
# with the thread-safe layers (omp, tbb) they run concurrently.
_launch_lock = threading.Lock()
_layer_is_threadsafe = None


def _launch(kernel, *args):
    global _layer_is_threadsafe
    if _layer_is_threadsafe:
        return kernel(*args)
    with _launch_lock:
        result = kernel(*args)
        if _layer_is_threadsafe is None:
            _layer_is_threadsafe = numba.threading_layer() != "workqueue"
        return result


def logsumexp(a, b, axes):
    """(log|sum b exp(a)|, sign) over ``axes``: arrays of the kept axes, dtype of ``a``.

    For complex ``a``, the first array is the complex log (imaginary part in (-pi, pi]) and
    the second the phase of the sum, as SciPy.
    """
    if a.dtype.kind == "c":
        return _complex_logsumexp(a, b, axes)
    layout = CanonicalView(a.shape, a.strides, axes)
    x = layout.view(a)
    w = None if b is None else layout.view(b)
    out = np.empty((layout.outer, layout.inner), dtype=a.dtype)
    sign = np.empty((layout.outer, layout.inner), dtype=a.dtype)
    if layout.inner == 1:
        _launch(reduce.lse_rows, x[:, :, 0], None if w is None else w[:, :, 0], out[:, 0], sign[:, 0])
    else:
        _launch(reduce.lse_inner, x, w, out, sign)
    return layout.reduced(out), layout.reduced(sign)


_OPS = {"softmax": softmax.SOFTMAX, "log_softmax": softmax.LOG_SOFTMAX,
        "log1m_softmax": softmax.LOG1M_SOFTMAX}


def softmax_family(name, x, where, axes):
    """softmax, log_softmax or log1m_softmax of x over ``axes``; same shape and dtype as x."""
    layout = CanonicalView(x.shape, x.strides, axes)
    view = layout.view(x)
    mask = None if where is None else layout.view(where)
    out = np.empty((layout.outer, layout.n, layout.inner), dtype=x.dtype)
    if layout.inner == 1:
        _launch(softmax.softmax_rows, _OPS[name], view[:, :, 0],
                None if mask is None else mask[:, :, 0], out[:, :, 0])
    else:
        _launch(softmax.softmax_inner, _OPS[name], view, mask, out)
    return layout.full(out)


def _complex_logsumexp(a, b, axes):
    """Complex log-sum-exp from two real ones, so the mathematics stays in one kernel.

    With a = x + iy, sum b e^a = sum (b cos y) e^x + i sum (b sin y) e^x: the real and the
    imaginary part are each a real weighted log-sum-exp with a sign, combined at the end.
    """
    # In float64 even for complex64: the phases cos y, sin y need the digits.
    x = a.real.astype(np.float64)
    with np.errstate(invalid="ignore"):
        # Shift by the max real part first, so the two partial logs stay small and their
        # rounding does not turn into an error in the phase.
        x_max = np.max(x, axis=axes, keepdims=True)
    x_max = np.where(np.isfinite(x_max), x_max, 0.0)
    x = x - x_max
    weight = 1.0 if b is None else b.real.astype(np.float64)
    angle = a.imag.astype(np.float64)
    re_log, re_sign = logsumexp(x, np.broadcast_to(weight * np.cos(angle), x.shape), axes)
    im_log, im_sign = logsumexp(x, np.broadcast_to(weight * np.sin(angle), x.shape), axes)
    x_max = np.squeeze(x_max, axis=axes)
    with np.errstate(invalid="ignore", over="ignore"):
        # Factor out the larger of the two magnitudes before forming the complex sum.
        shift = np.maximum(re_log, im_log)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        total = re_sign * np.exp(re_log - shift) + 1j * im_sign * np.exp(im_log - shift)
        magnitude = np.abs(total)
        log_abs = x_max + shift + np.log(magnitude)
        phase = np.angle(total)
        # The imaginary part of the principal log lies in (-pi, pi].
        phase = np.where(phase == -np.pi, np.pi, phase)
        out = (log_abs + 1j * phase).astype(a.dtype)
        sign = np.where(magnitude == 0, 0, total / np.where(magnitude == 0, 1, magnitude))
    return out, sign.astype(a.dtype)
