"""The CPU backend: NumPy arrays in, NumPy arrays out, kernels compiled with Numba.

Each function here takes validated arrays (compute dtype, axes normalised), builds the
canonical view, allocates the output and launches one kernel. Nothing here raises for user
input: ``_validate`` has already done so.
"""

import threading

import numba
import numpy as np

from .._layout import CanonicalView
from . import reduce

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
    """(log|sum b exp(a)|, sign) over ``axes``: arrays of the kept axes, dtype of ``a``."""
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
