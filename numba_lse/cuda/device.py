"""Device functions for users' own ``@cuda.jit`` kernels: the log-sum-exp and the softmax
family of one row that a thread holds.

    from numba import cuda
    from numba_lse.cuda import log_softmax_row, logsumexp_row

    @cuda.jit
    def kernel(x, out, lse):
        r = cuda.grid(1)
        if r < x.shape[0]:
            lse[r] = logsumexp_row(x[r])
            log_softmax_row(x[r], out[r])

A row is any 1-D array the thread can read: a row of a device array, a local or shared
array. The values and special values are those of ``numba_lse.logsumexp`` /
``softmax`` / ``log_softmax`` / ``log1m_softmax`` of the row (the same scalar functions:
the max-shift with ties kept out of the sum, one merge rule), computed in float64;
``out`` must have the row's length (else it is filled with nan: a kernel cannot raise,
and nothing outside either array is touched) and may be float32. They run on one thread, two passes over the row
(three for a log1m_softmax row with one entry above 1/2): meant for rows of up to a few
thousand elements, one per thread; numba_lse's own kernels spread longer rows over a block.
Under Numba's CUDA simulator they run as Python, like the kernel that calls them.
"""

import numpy as np
from numba import cuda

from ..cpu.partials import add_term_compensated, log_abs_sum, max_with
from ..cpu.reduce import SHORT_ROW
from ..cpu.softmax import (LOG1M_SOFTMAX, LOG_SOFTMAX, SOFTMAX, dominant_value, element, is_dominant,
                           needs_runner_up, row_constants)
from .kernels import cut_weight

__all__ = ["logsumexp_row", "softmax_row", "log_softmax_row", "log1m_softmax_row"]


@cuda.jit(device=True)
def _row_partial(x, below, cut):
    """The partial (m, c, s) of the row x, or of its entries below ``below`` with ``cut``."""
    m = -np.inf
    for k in range(x.shape[0]):
        m = max_with(m, x[k], cut_weight(x[k], 1.0, below, cut))
    c = 0.0
    s = 0.0
    e = 0.0
    # One thread walks the row: a sequential sum, compensated (float64) from SHORT_ROW terms
    # on, as the CPU's columns (hence its rows shorter than that, a transposed tile at a time).
    short = x.shape[0] < SHORT_ROW
    for k in range(x.shape[0]):
        c, s, e = add_term_compensated(c, s, e, x[k], cut_weight(x[k], 1.0, below, cut), m,
                                       None, short)
    return m, c, s + e


@cuda.jit(device=True)
def logsumexp_row(x):
    """log(sum(exp(x))) of the 1-D array x, as float64 (-inf for an empty row)."""
    m, c, s = _row_partial(x, 0.0, False)
    value, sign = log_abs_sum(m, c, s)
    return value


@cuda.jit(device=True)
def _normalise_row(op, x, out):
    if out.shape[0] != x.shape[0]:
        # A kernel cannot raise: a row of nan marks the mistake, and nothing is read or
        # written outside either array.
        for k in range(out.shape[0]):
            out[k] = np.nan
        return
    m, c, s = _row_partial(x, 0.0, False)
    shift, scale = row_constants(op, m, c, s)
    dominant = np.nan
    if is_dominant(op, m, c, s):
        below_m, below_c, below_s = -np.inf, 0.0, 0.0
        if needs_runner_up(op, m, c, s):
            below_m, below_c, below_s = _row_partial(x, m, True)
        dominant = dominant_value(m, s, below_m, below_c, below_s)
    for k in range(x.shape[0]):
        out[k] = element(op, x[k], 1.0, shift, scale, dominant)


@cuda.jit(device=True)
def softmax_row(x, out):
    """out[:] = softmax of the 1-D array x."""
    _normalise_row(SOFTMAX, x, out)


@cuda.jit(device=True)
def log_softmax_row(x, out):
    """out[:] = log_softmax of the 1-D array x."""
    _normalise_row(LOG_SOFTMAX, x, out)


@cuda.jit(device=True)
def log1m_softmax_row(x, out):
    """out[:] = log(1 - softmax(x)) of the 1-D array x, accurate where one entry dominates."""
    _normalise_row(LOG1M_SOFTMAX, x, out)
