"""Log-sum-exp reductions over the canonical (outer, n, inner) view.

Two loop shapes, one mathematics (``partials.py``):

``lse_rows``   inner == 1: reduce the rows of a 2-D (rows, n) view. Rows run in parallel; a
               row longer than ``CHUNK`` is cut into chunks that run in parallel too, and their
               partials are merged in order. Chunk boundaries depend on n only, so the result
               is the same bits whatever the number of threads.
``lse_inner``  inner > 1: reduce the middle axis of (outer, n, inner), e.g. axis 0 of a
               C-ordered matrix. Each task owns a band of ``INNER_BAND`` adjacent columns and
               walks n, keeping one running partial per column, so every inner loop reads
               contiguous memory and vectorises.
"""

import numpy as np
from numba import prange

from .jit import kernel
from .partials import (
    BLOCK,
    add_term,
    log_abs_sum,
    max_with,
    merge,
    partial_of_slice,
    row_of,
    slice_of,
    weight_at,
)

# Elements per parallel task along a long row (a multiple of BLOCK).
CHUNK = 64 * BLOCK
# Columns per task of the inner kernel, and rows it reads per block (about 32 KiB).
INNER_BAND = 512
INNER_ROWS = 8


@kernel(parallel=True)
def row_partials(x, w):
    """Per-row partials (m, c, s) of a 2-D view x (rows, n), weights w like x or None."""
    rows, n = x.shape
    n_chunks = max(1, -(-n // CHUNK))
    m = np.empty((rows, n_chunks))
    c = np.empty((rows, n_chunks))
    s = np.empty((rows, n_chunks))
    for task in prange(rows * n_chunks):
        r = task // n_chunks
        k = task - r * n_chunks
        lo = k * CHUNK
        hi = min(n, lo + CHUNK)
        m[r, k], c[r, k], s[r, k] = partial_of_slice(x[r, lo:hi], slice_of(row_of(w, r), lo, hi))
    if n_chunks > 1:
        for r in prange(rows):
            for k in range(1, n_chunks):
                m[r, 0], c[r, 0], s[r, 0] = merge(m[r, 0], c[r, 0], s[r, 0], m[r, k], c[r, k], s[r, k])
    return m[:, 0], c[:, 0], s[:, 0]


@kernel(parallel=True)
def lse_rows(x, w, out, sign):
    """out[r], sign[r] = log|sum_j w[r, j] exp(x[r, j])| and its sign, for each row r."""
    m, c, s = row_partials(x, w)
    for r in prange(x.shape[0]):
        out[r], sign[r] = log_abs_sum(m[r], c[r], s[r])


@kernel(parallel=True)
def inner_partials(x, w):
    """Partials (m, c, s), each (outer, inner), of x (outer, n, inner) reduced over axis 1."""
    outer, n, inner = x.shape
    m = np.empty((outer, inner))
    c = np.empty((outer, inner))
    s = np.empty((outer, inner))
    n_bands = -(-inner // INNER_BAND)
    for task in prange(outer * n_bands):
        o = task // n_bands
        j0 = (task - o * n_bands) * INNER_BAND
        j1 = min(inner, j0 + INNER_BAND)
        width = j1 - j0
        m_run = np.full(width, -np.inf)
        c_run = np.zeros(width)
        s_run = np.zeros(width)
        m_block = np.empty(width)
        c_block = np.empty(width)
        s_block = np.empty(width)
        for k0 in range(0, n, INNER_ROWS):
            k1 = min(n, k0 + INNER_ROWS)
            m_block[:] = m_run
            for k in range(k0, k1):
                for j in range(width):
                    m_block[j] = max_with(m_block[j], x[o, k, j0 + j], weight_at(w, (o, k, j0 + j)))
            c_block[:] = 0.0
            s_block[:] = 0.0
            for k in range(k0, k1):
                for j in range(width):
                    c_block[j], s_block[j] = add_term(
                        c_block[j], s_block[j], x[o, k, j0 + j], weight_at(w, (o, k, j0 + j)), m_block[j]
                    )
            for j in range(width):
                m_run[j], c_run[j], s_run[j] = merge(
                    m_run[j], c_run[j], s_run[j], m_block[j], c_block[j], s_block[j]
                )
        m[o, j0:j1] = m_run
        c[o, j0:j1] = c_run
        s[o, j0:j1] = s_run
    return m, c, s


@kernel(parallel=True)
def lse_inner(x, w, out, sign):
    """out[o, j], sign[o, j] = log|sum_k w exp(x[o, k, j])| and its sign."""
    m, c, s = inner_partials(x, w)
    outer, inner = out.shape
    for t in prange(outer * inner):
        o = t // inner
        j = t - o * inner
        out[o, j], sign[o, j] = log_abs_sum(m[o, j], c[o, j], s[o, j])
