"""Log-sum-exp reductions over the canonical (outer, n, inner) view.

Two loop shapes, one mathematics (``partials.py``):

``lse_rows``   inner == 1: reduce the rows of a 2-D (rows, n) view. Rows run in parallel; a
               row longer than ``CHUNK`` is cut into chunks that run in parallel too, and their
               partials are merged in order. Chunk boundaries depend on n only, so the result
               is the same bits whatever the number of threads. Rows shorter than
               ``LSE_SHORT_ROW`` (a log-sum-exp's) or ``SHORT_ROW`` (partials for the
               outputs) go a tile at a time through the column kernel below, transposed
               (``lse_short_rows``, ``short_row_partials``): kernels of their own, which
               the caller picks by the row length, so that a call compiles the one it runs.
``lse_columns`` inner > 1: reduce the middle axis of (outer, n, inner), e.g. axis 0 of a
               C-ordered matrix. Each task owns a band of ``INNER_BAND`` adjacent columns and
               walks n twice, for their maxima, then for their terms (once, for float32's
               certified sums: ``column_sums``), so every inner loop reads contiguous
               memory and vectorises. ``inner_partials`` does the same for the partials
               themselves (the softmax family's, cross-entropy's, and those of Dask
               blocks). Where the bands are too few to keep the threads busy (a tall
               array's few columns), each is cut along n too, and the partials of its
               pieces are merged in order (``column_pieces``).
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from .exp import exp_nonpositive, exp_of_difference, is_float32
from .intrinsics import (blocks_fit, maxnum, prefer_wide_vectors, store_fence, transpose_block,
                         transpose_block_back, vector_bits)
from .jit import inline, inline_ir, kernel, one_thread, restore_threads, run_tasks, threads_for
from .log import log1p_nonnegative
from .partials import (
    BLOCK,
    CERTIFIED,
    CHEAP_FROM,
    SHORT_SUM_ERROR,
    add_compensated,
    finish_slices,
    is_present,
    log_abs_sum,
    max_in_dtype,
    merge,
    part_of,
    partial_of_slice,
    prefetch_after,
    row_of,
    rows_in,
    rows_of,
    slice_of,
    store,
    store_at,
    term_exp,
    transposed,
    weight_at,
    weighted,
)

# Elements per parallel task along a long row (a multiple of BLOCK).
CHUNK = 64 * BLOCK
# Columns per task of the column kernels (a row of a band: 2-4 KiB; the band's partials,
# 12-16 KiB, stay in L1 while its rows stream through).
INNER_BAND = 512
# Where an array has fewer bands than this in all (outer times its bands: a tall array's
# few columns, such as (4096, 256) or (10^6, 3) over axis 0, had one band, one task, one
# thread), each band is cut along n too, into up to COLUMN_TASKS pieces of at least a
# CHUNK of entries (``column_pieces``), whose partials are merged in order.
COLUMN_TASKS = 8
# Rows shorter than this are reduced a tile of TILE_ROWS rows at a time, transposed; a
# log-sum-exp's, LSE_TILE_ROWS (a tile's values depend on its rows alone, not on the tile).
# Measured on rows of 10, two threads, against tiles of 256: the softmax family and
# cross_entropy 1.04-1.12x (float32), 1.01-1.04x (float64) with 512, logsumexp 0.95-0.97x
# (its tiles are finished in L1 and fetch the next one meanwhile); tiles of 1024: logsumexp
# 0.82-0.91x, the others no better than 512.
SHORT_ROW = 32
# A log-sum-exp takes rows shorter than LSE_SHORT_ROW a tile at a time (``lse_short_rows``):
# along a row, each one's blocks, calls and log cost ~90 ns more than a tile's share
# (float32 rows of 32: 108 ns a row against 45 for rows of 31, one thread). In-process A/B,
# two threads, against the rows for 32 <= n < 64: float32 1.45-2.2x, float64 1.06-1.4x
# (Zen 3); rows of 64 and more measured slower in tiles (float32 rows of 128 0.64x,
# float64 rows of 64 0.82x), whose transposes, an entry at a time, stride through the
# cache sets. (The softmax family's tiles are no faster than their rows from 32 on.)
LSE_SHORT_ROW = 64
TILE_ROWS = 512
LSE_TILE_ROWS = 256
# Outputs of this many bytes or more are written by streaming stores where they can be
# (``transpose_back``): past the caches, and without reading each line from memory before
# writing it. A smaller output may stay in the caches for whatever reads it next. float32
# softmax of rows of 10, two threads, streamed against not: 40 MB of output 1.2x faster,
# 24-32 MB 1.0-1.15x, 4-16 MB within noise, alone or followed by a sum of the output.
STREAM_FROM = 1 << 24


@kernel
def column_partials(x, w, o, j0, m, c, s, for_outputs=None, exps=None):
    """m, c, s[j] = the partial of x[o, :, j0 + j], a column of fewer than SHORT_ROW rows (a
    tile of short rows, transposed: ``tile_partials``; weights w like x or None;
    ``partials.term_exp`` says what ``for_outputs`` changes), keeping its terms' exps:
    exps[k, j] = exp(x[o, k, j0 + j] - m[j]) (unless None).

    Its max (``column_max``), then its terms, each loop along the last axis, so the vector
    lanes run across the tile's rows. A column this short sums no more terms in sequence
    than a row's lanes do (32 per block), and plainly, as they."""
    prefer_wide_vectors()
    width = m.shape[0]
    # The partials, local (arrays LLVM knows apart from x: the loop vectorises without alias
    # checks).
    run_m = np.empty(width)
    run_c = np.zeros(width)
    run_s = np.zeros(width)
    column_max(x, w, o, j0, run_m, x.shape[1])
    for k in range(x.shape[1]):
        xk = x[o, k, j0:j0 + width]
        wk = part_of(w, o, k, j0, j0 + width)
        for j in range(width):
            exp_x = term_exp(xk[j], run_m[j], for_outputs)
            store_at(exps, k, j, exp_x)
            ck, sk = tie_or_term(xk[j], weight_at(wk, j), run_m[j], exp_x)
            run_c[j] += ck
            run_s[j] += sk
    for j in range(width):
        m[j] = run_m[j]
        c[j] = run_c[j]
        s[j] = run_s[j]


@kernel
def transpose_tile(x, r0, r1):
    """x[r0:r1].T as a C-ordered copy, shaped (1, n, r1 - r0), for the column kernels."""
    prefer_wide_vectors()
    out = np.empty((1, x.shape[1], r1 - r0), dtype=x.dtype)
    # Indexed from 0 (a slice, not x[r0 + i, k]): an index that may be negative costs a
    # wraparound select and a multiply per element, twice the time on float32 (AMD Zen 4).
    transpose_rows(x[r0:r1], out)
    return out


def transpose_rows(rows, tile):
    """tile[0, k, i] = rows[i, k]: the 2-D ``rows`` as the columns of ``tile`` (1, n, rows).
    C-ordered float32 rows of up to 16 entries by blocks of 16 rows (``intrinsics.
    transpose_block``), the rest an entry at a time. Per entry on rows of 10: 0.16 ns
    against 0.31 an entry at a time (AVX-512, Intel); 0.17 against 0.40 (AVX2, in 8 x 8
    pieces, AMD Zen 3). (float64's blocks of 8 rows, 0.43 against 0.49 ns on rows of 8
    alone, made softmax 0.93x: that copy is bound by its reads from memory. Longer rows in
    blocks of columns, the last one's lanes mostly masked off, measured slower.)"""


def transpose_back(tile, rows, stream):
    """rows[i, k] = tile[0, k, i]: ``transpose_rows`` undone, by blocks where it takes them
    (``intrinsics.transpose_block_back``: per float32 entry on rows of 10, 0.21 ns against
    0.55 an entry at a time on AVX-512, 0.20-0.29 against 0.38 on AVX2). ``stream``: the
    blocks that are whole cache lines are written by streaming stores, past the caches (for
    outputs of STREAM_FROM bytes or more)."""


def by_blocks(rows, tile):
    """Whether ``transpose_rows`` and ``transpose_back`` take blocks between these types
    (float32; a target with 256-bit vectors at least, ``intrinsics.vector_bits``)."""
    return blocks_fit(rows, tile) and rows.dtype == types.float32 and vector_bits() >= 256


@overload(transpose_rows, inline="always")
def _transpose_rows(rows, tile):
    if not by_blocks(rows, tile):
        return lambda rows, tile: entries_to_tile(rows, tile)

    def blocks(rows, tile):
        count, n = rows.shape
        if n > 16:
            entries_to_tile(rows, tile)
            return
        whole = count - count % 16
        for i in range(0, whole, 16):
            transpose_block(rows, i, tile, i)
        entries_to_tile(rows[whole:], tile[:, :, whole:])
    return blocks


@overload(transpose_back, inline="always")
def _transpose_back(tile, rows, stream):
    if not by_blocks(rows, tile):
        return lambda tile, rows, stream: entries_from_tile(tile, rows)

    def blocks(tile, rows, stream):
        count, n = rows.shape
        if n > 16:
            entries_from_tile(tile, rows)
            return
        whole = count - count % 16
        for i in range(0, whole, 16):
            transpose_block_back(tile, i, rows, i, stream)
        if stream:
            store_fence()
        entries_from_tile(tile[:, :, whole:], rows[whole:])
    return blocks


@inline_ir
def entries_to_tile(rows, tile):
    """``transpose_rows`` an entry at a time: a row of the tile at a time (contiguous stores,
    strided loads; gathers where LLVM finds them cheap), 3x faster on Intel than walking the
    rows."""
    columns = tile[0]
    for k in range(rows.shape[1]):
        for i in range(rows.shape[0]):
            columns[k, i] = rows[i, k]


@inline_ir
def entries_from_tile(tile, rows):
    """``transpose_back`` an entry at a time."""
    columns = tile[0]
    for i in range(rows.shape[0]):
        for k in range(rows.shape[1]):
            rows[i, k] = columns[k, i]


@inline_ir
def tile_partials(x, w, r0, r1, m, c, s, for_outputs=None):
    """m, c, s = the partials of the short rows x[r0:r1] (weights w like x, or None).

    Rows too short to vectorise along: the tile is transposed and its columns reduced, so
    the vector lanes run across rows."""
    # The tile's origin as int64s, not literals: column_terms and column_max are then
    # compiled once for tiles and for columns of other axes alike.
    origin = np.int64(0)
    column_partials(transpose_tile(x, r0, r1), transposed(w, r0, r1), origin, origin, m, c, s,
                    for_outputs)


@inline_ir
def chunked_partial(row, w, for_outputs=None):
    """The partial of a 1-D row (weights w or None) as ``row_partials`` forms it: per CHUNK,
    merged in order (the same bits), on the calling thread."""
    n = row.shape[0]
    m, c, s = partial_of_slice(row[:CHUNK], slice_of(w, 0, min(n, CHUNK)), for_outputs)
    for lo in range(CHUNK, n, CHUNK):
        hi = min(n, lo + CHUNK)
        chunk_m, chunk_c, chunk_s = partial_of_slice(row[lo:hi], slice_of(w, lo, hi), for_outputs)
        m, c, s = merge(m, c, s, chunk_m, chunk_c, chunk_s)
    return m, c, s


def row_at(rows_at, r):
    """rows_at[r], or r where there is no selection (rows_at None)."""


@overload(row_at, inline="always")
def _row_at(rows_at, r):
    if isinstance(rows_at, (types.NoneType, types.Omitted)):
        return lambda rows_at, r: r
    return lambda rows_at, r: rows_at[r]


def rows_in_selection(x, rows_at):
    """len(rows_at), or x's row count where there is no selection (rows_at None)."""


@overload(rows_in_selection, inline="always")
def _rows_in_selection(x, rows_at):
    if isinstance(rows_at, (types.NoneType, types.Omitted)):
        return lambda x, rows_at: x.shape[0]
    return lambda x, rows_at: rows_at.shape[0]


@kernel
def tiles_partials_run(x, w, for_outputs, m, c, s, first, end):
    """Tasks first .. end - 1 of ``row_partials`` on short rows: the partials of tiles of
    TILE_ROWS rows, into m, c, s."""
    rows = x.shape[0]
    for t in range(first, end):
        r0 = t * TILE_ROWS
        r1 = min(rows, r0 + TILE_ROWS)
        tile_partials(x, w, r0, r1, m[r0:r1], c[r0:r1], s[r0:r1], for_outputs)


@kernel
def chunks_partials_run(x, w, for_outputs, rows_at, m2, c2, s2, first, end):
    """Tasks first .. end - 1 of ``row_partials``: the partials of chunks of rows (task t:
    chunk k of row r, t = r * n_chunks + k), into m2, c2, s2[r, k]."""
    n = x.shape[1]
    n_chunks = m2.shape[1]
    for task in range(first, end):
        r = task // n_chunks
        k = task - r * n_chunks
        lo = k * CHUNK
        hi = min(n, lo + CHUNK)
        row = row_at(rows_at, r)
        m2[r, k], c2[r, k], s2[r, k] = partial_of_slice(x[row, lo:hi], slice_of(row_of(w, row), lo, hi),
                                                        for_outputs)


@kernel
def short_row_partials(x, w, for_outputs=None):
    """``row_partials`` of rows shorter than SHORT_ROW: a tile of TILE_ROWS rows per task."""
    rows, n = x.shape
    threads = threads_for(x.size)
    m = np.empty(rows)
    c = np.empty(rows)
    s = np.empty(rows)
    run_tasks(tiles_partials_run, (x, w, for_outputs, m, c, s), -(-rows // TILE_ROWS),
              TILE_ROWS * n)
    restore_threads(threads)
    return m, c, s


@kernel
def row_partials(x, w, for_outputs=None, rows_at=None):
    """Per-row partials (m, c, s) of a 2-D view x (rows, n), weights w like x or None
    (``partials.term_exp`` says what ``for_outputs`` changes); of the rows ``rows_at`` (an
    int64 array) alone where given, in that order. Rows shorter than SHORT_ROW go through
    ``short_row_partials`` (``partials_of_rows`` picks), faster, and not always to the same
    bits. Rows are cut in CHUNKs, which run in parallel too, merged in order on the calling
    thread: a merge per CHUNK entries, whose parallel loop cost more to start than it saved
    (about 45-120 us to wake the pool with OMP_WAIT_POLICY=PASSIVE).
    On one thread (a small input) the tasks run in one call, without a parallel loop."""
    n = x.shape[1]
    rows = rows_in_selection(x, rows_at)
    threads = threads_for(x.size)
    n_chunks = max(1, -(-n // CHUNK))
    m2 = np.empty((rows, n_chunks))
    c2 = np.empty((rows, n_chunks))
    s2 = np.empty((rows, n_chunks))
    run_tasks(chunks_partials_run, (x, w, for_outputs, rows_at, m2, c2, s2), rows * n_chunks,
              min(n, CHUNK))
    restore_threads(threads)
    if n_chunks > 1:
        for r in range(rows):
            for k in range(1, n_chunks):
                m2[r, 0], c2[r, 0], s2[r, 0] = merge(m2[r, 0], c2[r, 0], s2[r, 0], m2[r, k], c2[r, k], s2[r, k])
    return np.ascontiguousarray(m2[:, 0]), np.ascontiguousarray(c2[:, 0]), np.ascontiguousarray(s2[:, 0])


@inline_ir
def partials_of_rows(x, w, for_outputs=None):
    """``short_row_partials`` or ``row_partials`` of x, by its row length: for Numba code (a
    Python caller picks itself, and so compiles the one its shape takes)."""
    if x.shape[1] < SHORT_ROW:
        return short_row_partials(x, w, for_outputs)
    return row_partials(x, w, for_outputs)


@kernel
def lse_tiles_run(x, w, out, sign, cheap, first, end):
    """Tasks first .. end - 1 of ``lse_short_rows``: tiles of LSE_TILE_ROWS rows,
    transposed, each finished while its partials are in L1 (``lse_of_columns``; ``cheap``
    as there), the next tile's rows fetched meanwhile (float64 rows of 10: 1.13x; the
    softmax family's and the cross-entropy's tiles, bound by their outputs' writes, gained
    nothing)."""
    rows = x.shape[0]
    m = np.empty(LSE_TILE_ROWS)
    c = np.empty(LSE_TILE_ROWS)
    s = np.empty(LSE_TILE_ROWS)
    shift = np.empty(LSE_TILE_ROWS)
    uncertain = np.empty(LSE_TILE_ROWS, np.bool_)
    for t in range(first, end):
        r0 = t * LSE_TILE_ROWS
        r1 = min(rows, r0 + LSE_TILE_ROWS)
        k = r1 - r0
        origin = np.int64(0)  # not a literal (``tile_partials``)
        lse_of_columns(transpose_tile(x, r0, r1), transposed(w, r0, r1), origin, origin, m[:k],
                       c[:k], s[:k], shift[:k], uncertain[:k], out[r0:r1], slice_of(sign, r0, r1),
                       cheap, x[r0:r1], rows_in(w, r0, r1))


@kernel
def lse_short_rows(x, w, out, sign, cheap=None):
    """``lse_rows`` of rows shorter than LSE_SHORT_ROW, a tile at a time, its rows as the
    columns of ``lse_columns`` (a million rows of 10 wrote and read back three arrays of
    partials: 2.6 ms of 17); ``cheap`` as ``lse_of_columns`` takes it."""
    rows, n = x.shape
    threads = threads_for(x.size)
    run_tasks(lse_tiles_run, (x, w, out, sign, cheap), -(-rows // LSE_TILE_ROWS),
              LSE_TILE_ROWS * n)
    restore_threads(threads)


@kernel
def lse_rows(x, w, out, sign, cheap=None):
    """out[r], sign[r] = log|sum_j w[r, j] exp(x[r, j])| and its sign, for each row r
    (``row_partials``; rows shorter than LSE_SHORT_ROW go through ``lse_short_rows``). sign
    None (here and in ``lse_short_rows``, ``lse_columns``): the signs are not wanted, not
    written.

    ``cheap`` ``partials.CERTIFIED`` (float32 x and out, no weights): the rows take float32's
    exp where their max allows (``partials.block_terms``),
    each result is certified and the uncertain rows summed again with the full exp
    (``finish_rows``): the same float32 results, 1.1-1.4x faster.
    Not parallel itself: the kernels it calls are, each for as many threads as its size
    takes (``jit.threads_for``)."""
    m, c, s = row_partials(x, w, cheap)
    finish_rows(x, m, c, s, out, sign, cheap)


@inline_ir
def lse_of_rows(x, w, out, sign):
    """``lse_short_rows`` or ``lse_rows`` of x, by its row length: for Numba code (a Python
    caller picks itself, and so compiles the one its shape takes)."""
    if x.shape[1] < LSE_SHORT_ROW:
        lse_short_rows(x, w, out, sign, certified_for(x, w))
    else:
        lse_rows(x, w, out, sign, certified_for(x, w))


def finish_rows(x, m, c, s, out, sign, cheap):
    """out, sign of the rows of x from their partials (m, c, s), ``row_partials(x, None,
    cheap)``: where ``cheap``, each result certified (``partials.certain_in_float32``) and the
    uncertain rows summed again with the full exp, as ``row_partials(x, None)`` sums them."""


@overload(finish_rows, inline="always")
def _finish_rows(x, m, c, s, out, sign, cheap):
    if isinstance(cheap, (types.NoneType, types.Omitted)):
        return lambda x, m, c, s, out, sign, cheap: lse_of_partials(m, c, s, out, sign)

    def finish_certified(x, m, c, s, out, sign, cheap):
        uncertain = np.empty(m.shape[0], np.bool_)
        if finish_slices(m, c, s, out, sign, uncertain):
            again = np.flatnonzero(uncertain)
            m2, c2, s2 = row_partials(x, None, None, rows_at=again)
            for i in range(again.shape[0]):
                out[again[i]], sign_i = log_abs_sum(m2[i], c2[i], s2[i])
                store(sign, again[i], sign_i)

    return finish_certified


@inline
def piece_at(task, pieces, size, piece):
    """(o, lo, hi): the piece ``task`` of a parallel loop over o's cut in ``pieces`` pieces of
    ``piece`` entries each (the last of ``size``), task o * pieces + k: entries lo .. hi - 1
    of o (a row's chunk, a band of columns, a block of rows)."""
    o = task // pieces
    lo = (task - o * pieces) * piece
    return o, lo, min(size, lo + piece)


@inline
def column_pieces(x):
    """(pieces, rows): each band of columns of x (outer, n, inner) is reduced in ``pieces``
    pieces of ``rows`` rows (the last of the rest): one piece of n rows where the array has
    COLUMN_TASKS bands or more, else up to COLUMN_TASKS // bands pieces (rounded up) of at
    least a CHUNK of entries. The shape alone decides, so a result has the same bits
    whatever the number of threads."""
    outer, n, inner = x.shape
    bands = outer * -(-inner // INNER_BAND)
    pieces = 1
    if 0 < bands < COLUMN_TASKS:
        pieces = max(1, min(-(-COLUMN_TASKS // bands), n * min(inner, INNER_BAND) // CHUNK))
    rows = -(-n // pieces)
    # No piece left empty: n = 2049 in 8 pieces of 257 rows is 8, in 4 of 513 is 4.
    return (-(-n // rows) if rows else 1), rows


@kernel
def partials_run(x, w, m, c, s, for_outputs, rows, shift, cheap, first, end):
    """Tasks first .. end - 1 of ``inner_partials``: bands of INNER_BAND columns of a piece
    of ``rows`` rows (``column_pieces``), task (o * pieces + p) * bands + b, whose partials
    go to (m, c, s)[o, p]: the full exp's (``column_max``, ``column_terms``), or, for
    ``certified_in_pieces``, where cheap[o, b] (its band's results will likely be
    certified), the piece's sums against its band's ``shift`` and its maxima
    (``column_sums``; c not written; shift and cheap None: none). A task's partials are
    taken in arrays of the thread's own, then copied out: the pieces of narrow columns
    share cache lines in (m, c, s), which the column kernels load and store at every step
    (two threads on (10^6, 3): 6.5x slower)."""
    n_bands = -(-x.shape[2] // INNER_BAND)
    pieces = m.shape[1]
    width = min(x.shape[2], INNER_BAND)
    run_m, run_c, run_s = np.empty(width), np.empty(width), np.empty(width)
    for task in range(first, end):
        slab, j0, j1 = piece_at(task, n_bands, x.shape[2], INNER_BAND)
        o, k0, k1 = piece_at(slab, pieces, x.shape[1], rows)
        p = slab - o * pieces
        k = j1 - j0
        if not piece_partial(x, w, o, j0, k0, k1, run_m[:k], run_c[:k], run_s[:k],
                             for_outputs, shift, cheap):
            c[o, p, j0:j1] = run_c[:k]
        m[o, p, j0:j1] = run_m[:k]
        s[o, p, j0:j1] = run_s[:k]


def piece_partial(x, w, o, j0, k0, k1, m, c, s, for_outputs, shift, cheap):
    """The partial of rows k0 .. k1 - 1 of a band's columns (``partials_run``), in the work
    arrays m, c, s; returns whether it took the sums against the band's shift (c then not
    written): where cheap is an array and cheap[o, band] (a compile-time choice between the
    two ways where cheap is None)."""


@overload(piece_partial, inline="always")
def _piece_partial(x, w, o, j0, k0, k1, m, c, s, for_outputs, shift, cheap):
    if isinstance(cheap, (types.NoneType, types.Omitted)):
        def full(x, w, o, j0, k0, k1, m, c, s, for_outputs, shift, cheap):
            column_max(x, w, o, j0, m, k1, k0)
            column_terms(x, w, o, j0, m, c, s, for_outputs, (k0, k1))
            return False
        return full

    def either(x, w, o, j0, k0, k1, m, c, s, for_outputs, shift, cheap):
        if cheap[o, j0 // INNER_BAND]:
            column_sums(x, o, j0, shift[o, j0:j0 + m.shape[0]], m, s, k1, k0)
            return True
        column_max(x, w, o, j0, m, k1, k0)
        column_terms(x, w, o, j0, m, c, s, for_outputs, (k0, k1))
        return False
    return either


@kernel
def inner_partials(x, w, for_outputs=None):
    """Partials (m, c, s), each (outer, inner), of x (outer, n, inner) reduced over axis 1
    (``partials.term_exp`` says what ``for_outputs`` changes): bands of INNER_BAND columns,
    their maxima, then their terms (``column_max``, ``column_terms``, as ``lse_columns``);
    where the bands are few, in pieces of rows (``column_pieces``) merged in order
    (``merge_partials``). Over axis 0, two threads, Zen 3, against one piece: float32
    softmax of (4096, 256) 1.43x, (10^5, 10) 1.42x, (10^6, 3) 1.41x, (20000, 512) 1.61x,
    log_softmax 1.5-1.8x; float64 logsumexp of (4096, 256) 1.5-1.9x, (10^6, 3) 1.9x;
    (1024, 1024), two bands already, 0.94x (float64 logsumexp)."""
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    pieces, rows = column_pieces(x)
    m = np.empty((outer, pieces, inner))
    c = np.empty((outer, pieces, inner))
    s = np.empty((outer, pieces, inner))
    run_tasks(partials_run, (x, w, m, c, s, for_outputs, rows, None, None),
              outer * pieces * -(-inner // INNER_BAND), rows * min(inner, INNER_BAND))
    if pieces == 1:
        result = (m.reshape((outer, inner)), c.reshape((outer, inner)), s.reshape((outer, inner)))
    else:
        result = merge_partials(m, c, s)
    restore_threads(threads)
    return result


# Columns longer than this take the full exp (the bound of a certified column's sums,
# ``column_sum_error``, is then 2^-32 at most).
CHEAP_COLUMN_ROWS = 1 << 20
COLUMN_STEP = 4
# A certified band is read once (``column_sums``): its terms are taken against a shift, the
# max of the first SHIFT_ROWS rows of each column, while the loop finds the column's max,
# and rescaled to it after (``one_tie_apart``). float32's exp holds its error up to 664
# (``exp.exp_nonpositive_for_float32``); a column whose max lies more than SHIFT_LIMIT above
# its shift (or whose shift is -inf) is summed again with the full exp. Those rows foretell
# whether the band's results will be certified (``likely_certified``): 64 of 4096 rows
# cost 1-2 % (their max from memory, their terms summed twice).
SHIFT_ROWS = 64
SHIFT_LIMIT = 600.0


@inline
def column_sum_error(n):
    """The bound on the relative difference between a column's sum of n terms that took
    float32's exp (``column_sums``, ties included, rescaled by ``one_tie_apart``) and the one
    the full exp gives (``column_terms``, float32 data, not compensated): SHORT_SUM_ERROR
    for the exps (2^-34.1 and 2^-52, with a factor 2 to spare, which also holds the
    rounding of their arguments against the shift, 2^-43.5, and of the rescale's, 2^-43.6:
    ``one_tie_apart``), and the roundings of both sums, a term going through at most
    n / COLUMN_STEP + 4 additions in each (a step's four in pairs, then its sum to s; up to
    three rows after the last step), the rescale's (its exp's 2^-52 and its product's
    2^-53) and the one of s - 1 (``one_tie_apart``): below (n / 4 + 6) 2^-52, taken as
    (n / 2 + 12) 2^-52, a factor 2 to spare: 2^-33 + 2^-41 for 4096 rows, below
    CHEAP_SUM_ERROR for every column up to CHEAP_COLUMN_ROWS (of the 4096 columns of
    4096x4096 randn, 1 then summed again, 11 with CHEAP_SUM_ERROR: each ~90 us, a column of
    cache misses)."""
    return SHORT_SUM_ERROR + (n / 2.0 + 12.0) * 2.0 ** -52


@kernel
def column_max(x, w, o, j0, m, end, start=0):
    """m[j] = the max of x[o, start:end, j0 + j] over the entries of nonzero weight (weights w
    like x, or None; -inf for none), walking the rows in x's dtype."""
    prefer_wide_vectors()
    width = m.shape[0]
    running = np.empty(width, x.dtype)
    running[:] = -np.inf
    for k in range(start, end):
        xk = x[o, k, j0:j0 + width]
        wk = part_of(w, o, k, j0, j0 + width)
        for j in range(width):
            running[j] = max_in_dtype(running[j], xk[j], weight_at(wk, j))
    for j in range(width):
        m[j] = running[j]


@kernel
def column_terms(x, w, o, j0, m, c, s, for_outputs=None, rows=None, exps=None):
    """c, s[j] = the ties' weights and the sum of the other terms of x[o, :, j0 + j] (of its
    rows k0 .. k1 - 1 where ``rows`` is (k0, k1)) (weights w like x, or None) for its max
    m[j] (``column_max``): the rest of its partial (``partials.term_exp`` says what
    ``for_outputs`` changes). Each term's exp, exp(x[o, k, j0 + j] - m[j]) unweighted, is
    kept in exps[o, k, j0 + j] where exps is an array like x (``softmax.softmax_keeping_exps``).

    COLUMN_STEP rows a step, so that each column's (c, s) is loaded and stored once per step;
    the terms of a step are added in pairs, then to s, compensated for float64 data
    (``add_to_column``: a column's sum runs down its rows, in sequence) of SHORT_ROW rows
    or more. The same order in
    every lane and alone (width 1), so a column summed again alone gives the bits it has
    among others."""
    prefer_wide_vectors()
    width = m.shape[0]
    k0, k1 = rows_or_all(x, rows)
    n = k1 - k0
    short = n < SHORT_ROW
    e = np.zeros(width)
    c[:] = 0.0
    s[:] = 0.0
    full_steps = n - n % COLUMN_STEP
    for k in range(k0, k0 + full_steps, COLUMN_STEP):
        x0, x1, x2, x3 = step_rows(x, o, k, j0, width)
        w0, w1, w2, w3 = step_rows(w, o, k, j0, width)
        ex0, ex1, ex2, ex3 = step_rows(exps, o, k, j0, width)
        for j in range(width):
            c0, s0, t0 = column_term(x0[j], weight_at(w0, j), m[j], for_outputs)
            c1, s1, t1 = column_term(x1[j], weight_at(w1, j), m[j], for_outputs)
            c2, s2, t2 = column_term(x2[j], weight_at(w2, j), m[j], for_outputs)
            c3, s3, t3 = column_term(x3[j], weight_at(w3, j), m[j], for_outputs)
            store(ex0, j, t0)
            store(ex1, j, t1)
            store(ex2, j, t2)
            store(ex3, j, t3)
            c[j] += (c0 + c1) + (c2 + c3)
            s[j], e[j] = add_to_column(s[j], e[j], (s0 + s1) + (s2 + s3), x0[j], short)
    for k in range(k0 + full_steps, k1):
        xk = x[o, k, j0:j0 + width]
        wk = part_of(w, o, k, j0, j0 + width)
        exk = part_of(exps, o, k, j0, j0 + width)
        for j in range(width):
            ck, sk, tk = column_term(xk[j], weight_at(wk, j), m[j], for_outputs)
            store(exk, j, tk)
            c[j] += ck
            s[j], e[j] = add_to_column(s[j], e[j], sk, xk[j], short)
    for j in range(width):
        s[j] += e[j]


def rows_or_all(x, rows):
    """rows, a (k0, k1) pair, or (0, n) for all the rows of x (outer, n, inner) where rows is
    None."""


@overload(rows_or_all, inline="always")
def _rows_or_all(x, rows):
    if isinstance(rows, (types.NoneType, types.Omitted)):
        return lambda x, rows: (0, x.shape[1])
    return lambda x, rows: rows


@inline_ir
def step_rows(x, o, k, j0, width):
    """Rows k .. k + COLUMN_STEP - 1 of x[o] over a band's columns j0 .. j0 + width - 1: a
    step of the column kernels (``part_of``: Nones for weights that are None)."""
    return (part_of(x, o, k, j0, j0 + width), part_of(x, o, k + 1, j0, j0 + width),
            part_of(x, o, k + 2, j0, j0 + width), part_of(x, o, k + 3, j0, j0 + width))


@inline
def column_term(x, w, m, for_outputs):
    """``tie_or_term`` with the term's exp (``partials.term_exp``), and that exp."""
    exp_x = term_exp(x, m, for_outputs)
    c, s = tie_or_term(x, w, m, exp_x)
    return c, s, exp_x


@inline
def tie_or_term(x, w, m, exp_x):
    """(w, 0) for a tie with the max m, else (0, w exp_x), given exp_x = exp(x - m); a zero
    weight adds nothing, even where x is inf or nan (as ``partials.add_term``)."""
    tie = np.float64(x) == m
    w = np.float64(w)
    return w if tie else 0.0, 0.0 if (tie or w == 0) else weighted(w, x, exp_x)


@inline
def add_to_column(s, e, v, x, short):
    """(s + v, e) for float32 data x (float64 sums of float32 data: n 2^-53 stays far below a
    float32 ulp) and for a ``short`` column (fewer than SHORT_ROW rows: no longer in sequence
    than a row's lane sums, which are plain too; 4 % faster on rows of 10), else Neumaier's
    step (``add_compensated``)."""
    if is_float32(x) or short:
        return s + v, e
    return add_compensated(s, e, v)


@kernel
def column_sums(x, o, j0, shift, m, s, end, start=0):
    """s[j] = the sum of exp(x[o, k, j0 + j] - shift[j]) over start <= k < end, with float32
    data's exp (``partials.exp_of_difference``), and m[j] = the max of those entries (as
    ``column_max``; m None: the shifts are the maxima): the terms of a CERTIFIED band
    (``lse_of_columns``; no weights), COLUMN_STEP rows a step as ``column_terms``, without
    the ties' compare, selects and count. Where the max is the shift, each tie adds exp(0) =
    1, exactly; above it, ``one_tie_apart`` rescales."""
    prefer_wide_vectors()
    width = s.shape[0]
    n = end - start
    s[:] = 0.0
    for j in range(width):
        store(m, j, -np.inf)
    full_steps = n - n % COLUMN_STEP
    for k in range(start, start + full_steps, COLUMN_STEP):
        x0, x1, x2, x3 = step_rows(x, o, k, j0, width)
        for j in range(width):
            s[j] += ((exp_of_difference(x0[j], shift[j]) + exp_of_difference(x1[j], shift[j]))
                     + (exp_of_difference(x2[j], shift[j]) + exp_of_difference(x3[j], shift[j])))
            step_max = maxnum(maxnum(np.float64(x0[j]), np.float64(x1[j])),
                              maxnum(np.float64(x2[j]), np.float64(x3[j])))
            store(m, j, maxnum(max_found(m, shift, j), step_max))
    for k in range(start + full_steps, end):
        xk = x[o, k, j0:j0 + width]
        for j in range(width):
            s[j] += exp_of_difference(xk[j], shift[j])
            store(m, j, maxnum(max_found(m, shift, j), np.float64(xk[j])))


@kernel
def one_tie_apart(shift, m, c, s):
    """(c, s)[j] = (1, s[j] exp(shift[j] - m[j]) - 1): a column's sum of all its terms
    against its shift (``column_sums``) as the partial of its max m[j] (m None: the shift),
    one of its entries, whose term is exactly 1 (c + s the same, to a rounding of 2^-53
    (c + s), and the rescale's; none where the max is the shift). Meaningless where the max
    is not finite, which ``partials.certain_everywhere`` never certifies, or lies more than
    SHIFT_LIMIT above the shift (``far_shifts``).

    The terms' arguments differ from the full exp's: fl(x - shift) and fl(shift - m) where
    it takes fl(x - m), each rounded to 2^-53 of itself (at most 746 and 600): an error of
    below 2^-43.5 per term and 2^-43.6 for the rescale, within ``column_sum_error``'s
    factor 2 to spare on the exps."""
    prefer_wide_vectors()
    for j in range(s.shape[0]):
        c[j] = 1.0
        if is_present(m):
            s[j] = s[j] * exp_nonpositive(shift[j] - max_found(m, shift, j)) - 1.0
        else:
            s[j] -= 1.0


@kernel
def far_shifts(shift, m, uncertain):
    """Flags the columns whose max m[j] lies more than SHIFT_LIMIT above their shift (-inf
    among them), whose exps ``column_sums`` took out of float32's exp's range, as uncertain
    (not flagged already: a max that is not finite is); returns how many it flagged (none
    where m is None: the shifts are the maxima)."""
    count = 0
    if is_present(m):
        for j in range(shift.shape[0]):
            if not uncertain[j] and not max_found(m, shift, j) - shift[j] <= SHIFT_LIMIT:
                uncertain[j] = True
                count += 1
    return count


def max_found(m, shift, j):
    """m[j], or shift[j] where m is None (``column_sums``)."""


@overload(max_found, inline="always")
def _max_found(m, shift, j):
    if isinstance(m, types.NoneType):
        return lambda m, shift, j: shift[j]
    return lambda m, shift, j: m[j]


def band_or_tile(for_band, tile, for_tile):
    """``for_band`` for a band of columns (``tile`` None), ``for_tile`` for a tile of short
    rows (``lse_of_columns``): a compile-time choice."""


@overload(band_or_tile, inline="always")
def _band_or_tile(for_band, tile, for_tile):
    if isinstance(tile, (types.NoneType, types.Omitted)):
        return lambda for_band, tile, for_tile: for_band
    return lambda for_band, tile, for_tile: for_tile


@kernel
def mostly_cheap(m):
    """Whether at least half of the maxima m reach CHEAP_FROM: a band's lse are then mostly
    >= 1, where float32's exp is almost always certified."""
    count = 0
    for j in range(m.shape[0]):
        count += m[j] >= CHEAP_FROM
    return 2 * count >= m.shape[0]


@kernel
def likely_certified(x, o, j0, shift, s, rows):
    """Whether at least half of a band's lse, as its first ``rows`` rows foretell them, reach
    CHEAP_FROM (``mostly_cheap``'s test, for a band whose maxima are not known yet): the lse
    of those rows, given their maxima ``shift`` (float32's exp), plus log(n / rows), the
    lse of n such rows. ``s``: a work array like shift. Unlike the maxima of those rows,
    it foretells columns of a small spread (0.3 randn: lse 8.3, their maxima below 1) and
    columns of log-probabilities (lse 0; that of their first 64 rows near log(64 / n))
    alike. Columns whose first rows mislead it (their mass there, lse near 0 for all that)
    are summed twice: 4096x4096, rows 64 on at -40, 1.2-1.6x slower than two passes."""
    prefer_wide_vectors()
    column_sums(x, o, j0, shift, None, s, rows)
    more = math.log(x.shape[1] / rows)
    count = 0
    for j in range(s.shape[0]):
        count += shift[j] + log1p_nonnegative(s[j] - 1.0) + more >= CHEAP_FROM
    return 2 * count >= s.shape[0]


@inline_ir
def lse_of_columns(x, w, o, j0, m, c, s, shift, uncertain, out, sign, cheap, tile=None,
                   tile_w=None):
    """out[j], sign[j] = the log-sum-exp of x[o, :, j0 + j] (weights w like x, or None) and
    its sign, for j < width, the length of the work arrays m, c, s, shift, uncertain and of
    the band's outputs out, sign: the band's maxima, then its terms (two passes; one for
    a certified band of columns, below).

    ``cheap`` ``partials.CERTIFIED`` (float32 x and out, no weights): where the band's
    results will likely be certified (``likely_certified``; a tile's: where at least half
    its maxima reach CHEAP_FROM, ``mostly_cheap``; columns no longer than
    CHEAP_COLUMN_ROWS), every term takes float32's exp, ties included (``column_sums``),
    every result is certified (``partials.certain_everywhere``, the error bound of a column
    of its length) and the uncertain columns are summed again, alone, with the full exp
    (all of the band, if more than an eighth: lse near 0): the bits of the full exp's sums
    (``cheap`` None). The shifts of a band of columns are the maxima of its first SHIFT_ROWS
    rows, and the band is read once, its maxima found as it sums (``column_sums``); those of
    a tile of short rows, in L1, its maxima, found first (taken as a band's: 0.9x, its max
    pass cheap, the rescale's exps not). (Unlike a row's blocks, a band cannot choose its
    exp per column, its lanes running across them.) ``tile``, ``tile_w``: the rows (and
    weights) of short rows that x is the transpose of, whose next tile is fetched meanwhile
    (``prefetch_after``), or None."""
    cheap_band = False
    found = band_or_tile(m, tile, None)
    if is_present(cheap) and x.shape[1] <= CHEAP_COLUMN_ROWS:
        shift = band_or_tile(shift, tile, m)
        rows = x.shape[1] if is_present(tile) else min(x.shape[1], SHIFT_ROWS)
        column_max(x, w, o, j0, shift, rows)
        if is_present(tile):
            cheap_band = mostly_cheap(shift)
        else:
            cheap_band = rows > 0 and likely_certified(x, o, j0, shift, s, rows)
    prefetch_after(tile, 0)
    prefetch_after(tile_w, 0)
    if cheap_band:
        column_sums(x, o, j0, shift, found, s, x.shape[1])
    else:
        column_max(x, w, o, j0, m, x.shape[1])
        column_terms(x, w, o, j0, m, c, s, None)
    prefetch_after(tile, 1)
    prefetch_after(tile_w, 1)
    finish_band(x, w, o, j0, m, c, s, shift, found, uncertain, out, sign, cheap_band, None)


@inline_ir
def finish_band(x, w, o, j0, m, c, s, shift, found, uncertain, out, sign, cheap_band, rows):
    """The end of ``lse_of_columns``: out[j], sign[j] from the band's maxima m and sums: of
    its terms against their shifts (``column_sums``: s, and the maxima found, ``found``,
    None where the shifts are the maxima) where ``cheap_band``, rescaled (``one_tie_apart``)
    and certified, the uncertain columns summed again with the full exp as the full exp's
    path sums them (``full_partials``: in one piece, or in pieces of ``rows`` rows); else
    (c, s), the full exp's partials."""
    if cheap_band:
        one_tie_apart(shift, found, c, s)
        error = column_sum_error(x.shape[1])
        again = finish_slices(m, c, s, out, sign, uncertain, error)
        # Needed, and after finish_slices: a column far above its shift may sum to inf,
        # -0 or nan (float32's exp beyond 664), whose lse certain_everywhere takes for a
        # special value's.
        again += far_shifts(shift, found, uncertain)
    else:
        again = finish_slices(m, c, s, out, sign)
    if again > m.shape[0] // 8:
        full_partials(x, w, o, j0, m, c, s, rows)
        finish_slices(m, c, s, out, sign)
    else:
        for j in range(m.shape[0] if again else 0):
            if uncertain[j]:
                full_partials(x, w, o, j0 + j, m[j:j + 1], c[j:j + 1], s[j:j + 1], rows)
                out[j], sign_j = log_abs_sum(m[j], c[j], s[j])
                store(sign, j, sign_j)


def full_partials(x, w, o, j0, m, c, s, rows):
    """(m, c, s)[j] = the full exp's partial of the column x[o, :, j0 + j], as the full
    exp's path of ``lse_columns`` takes it: with ``rows`` None, in one piece, for its
    maxima m (``column_terms``); else in pieces of ``rows`` rows (``column_pieces``), each
    its max, then its terms, merged in order, the bits of ``inner_partials``."""


@overload(full_partials, inline="always")
def _full_partials(x, w, o, j0, m, c, s, rows):
    if isinstance(rows, (types.NoneType, types.Omitted)):
        def whole(x, w, o, j0, m, c, s, rows):
            column_terms(x, w, o, j0, m, c, s, None)
        return whole

    def in_pieces(x, w, o, j0, m, c, s, rows):
        width = m.shape[0]
        piece_m, piece_c, piece_s = np.empty(width), np.empty(width), np.empty(width)
        m[:] = -np.inf
        c[:] = 0.0
        s[:] = 0.0
        for k0 in range(0, x.shape[1], rows):
            k1 = min(x.shape[1], k0 + rows)
            column_max(x, w, o, j0, piece_m, k1, k0)
            column_terms(x, w, o, j0, piece_m, piece_c, piece_s, None, (k0, k1))
            for j in range(width):
                m[j], c[j], s[j] = merge(m[j], c[j], s[j], piece_m[j], piece_c[j], piece_s[j])
    return in_pieces


@kernel
def columns_run(x, w, out, sign, cheap, first, end):
    """Tasks first .. end - 1 of ``lse_columns``: bands of INNER_BAND columns."""
    inner = x.shape[2]
    n_bands = -(-inner // INNER_BAND)
    width = min(inner, INNER_BAND)
    m = np.empty(width)
    c = np.empty(width)
    s = np.empty(width)
    shift = np.empty(width)
    uncertain = np.empty(width, np.bool_)
    for task in range(first, end):
        o, j0, j1 = piece_at(task, n_bands, inner, INNER_BAND)
        k = j1 - j0
        lse_of_columns(x, w, o, j0, m[:k], c[:k], s[:k], shift[:k], uncertain[:k],
                       out[o, j0:j1], rows_of(sign, o, j0, j1), cheap)


@kernel
def certified_in_pieces(x, out, sign, pieces, rows):
    """``lse_columns`` of CERTIFIED data (float32, no weights) whose bands are few
    (``column_pieces``): each band's shifts and whether its results will likely be
    certified, as ``lse_of_columns`` finds them; then, on the threads, the sums of those
    bands' pieces of ``rows`` rows, each against its band's shifts (``partials_run``);
    then each band's sums added in order and its maxima taken (a term goes through fewer
    additions in sequence than in one pass: ``column_sum_error`` bounds them still), and
    the band finished (``finish_band``: certified, and the uncertain columns summed again
    as the full exp's path sums them, in the same pieces, whose bits the results are).
    The other bands' pieces take the full exp's partials on the threads, merged in order
    (the bits of ``inner_partials``, the full exp's path)."""
    outer, n, inner = x.shape
    n_bands = -(-inner // INNER_BAND)
    width = min(inner, INNER_BAND)
    shift = np.empty((outer, inner))
    cheap = np.zeros((outer, n_bands), np.bool_)
    m, c, s = np.empty(width), np.empty(width), np.empty(width)
    uncertain = np.empty(width, np.bool_)
    first_rows = min(n, SHIFT_ROWS)
    for slab in range(outer * n_bands):
        o, j0, j1 = piece_at(slab, n_bands, inner, INNER_BAND)
        column_max(x, None, o, j0, shift[o, j0:j1], first_rows)
        cheap[o, j0 // INNER_BAND] = first_rows > 0 and likely_certified(
            x, o, j0, shift[o, j0:j1], s[:j1 - j0], first_rows)
    piece_m = np.empty((outer, pieces, inner))
    piece_c = np.empty((outer, pieces, inner))
    piece_s = np.empty((outer, pieces, inner))
    run_tasks(partials_run, (x, None, piece_m, piece_c, piece_s, None, rows, shift, cheap),
              outer * pieces * n_bands, rows * width)
    for slab in range(outer * n_bands):
        o, j0, j1 = piece_at(slab, n_bands, inner, INNER_BAND)
        k = j1 - j0
        band_m, band_c, band_s = m[:k], c[:k], s[:k]
        band_m[:] = -np.inf
        band_c[:] = 0.0
        band_s[:] = 0.0
        certified = cheap[o, j0 // INNER_BAND]
        for p in range(pieces):
            for j in range(k):
                if certified:
                    band_m[j] = maxnum(band_m[j], piece_m[o, p, j0 + j])
                    band_s[j] += piece_s[o, p, j0 + j]
                else:
                    band_m[j], band_c[j], band_s[j] = merge(
                        band_m[j], band_c[j], band_s[j], piece_m[o, p, j0 + j],
                        piece_c[o, p, j0 + j], piece_s[o, p, j0 + j])
        finish_band(x, None, o, j0, band_m, band_c, band_s, shift[o, j0:j1], band_m,
                    uncertain[:k], out[o, j0:j1], rows_of(sign, o, j0, j1), certified, rows)


@kernel
def lse_columns(x, w, out, sign, cheap=None):
    """out[o, j], sign[o, j] = log|sum_k w exp(x[o, k, j])| and its sign, for x (outer, n,
    inner) and weights w like it, or None: bands of INNER_BAND columns in two passes, their
    maxima, then their terms for them, COLUMN_STEP rows a step (``lse_of_columns``; ``cheap``
    as there: one pass); where the bands are few (``column_pieces``), the sums of their
    pieces (``certified_in_pieces``: ``cheap``'s) or their pieces' partials
    (``inner_partials``), finished. Against one pass with running
    partials, rescaled every 8 rows (an exp per column) and loaded and stored per term:
    4096x4096 over axis 0, 1.2x faster in float64 (two threads), 1.3x in float32 with its
    certified exp (session 19; since session 27 float32's certified bands take one pass
    against fixed shifts, 1.3-1.44x)."""
    outer, n, inner = x.shape
    threads = threads_for(x.size)
    pieces, rows = column_pieces(x)
    if is_present(cheap) and pieces > 1 and n <= CHEAP_COLUMN_ROWS:
        certified_in_pieces(x, out, sign, pieces, rows)
    elif pieces > 1:
        # Few bands: their partials in pieces, merged (the full exp's path: what the
        # certified pieces' uncertain columns are summed again as).
        m, c, s = inner_partials(x, w)
        for o in range(outer):
            finish_slices(m[o], c[o], s[o], out[o], row_of(sign, o))
    else:
        run_tasks(columns_run, (x, w, out, sign, cheap), outer * -(-inner // INNER_BAND),
                  n * min(inner, INNER_BAND))
    restore_threads(threads)


def certified_for(x, w):
    """``partials.CERTIFIED`` for float32 x without weights (w None), whose log-sum-exps may
    take float32's exp, each result certified; None for the others (Numba code's choice;
    Python's is ``cpu.logsumexp``'s)."""


@overload(certified_for, inline="always")
def _certified_for(x, w):
    if x.dtype == types.float32 and isinstance(w, (types.NoneType, types.Omitted)):
        return lambda x, w: CERTIFIED
    return lambda x, w: None


@kernel
def merge_run(m, c, s, m_out, c_out, s_out, first, end):
    """(m_out, c_out, s_out)[o, j] = the partials (m, c, s)[o, :, j] merged in order, for the
    tasks t = o * inner + j = first .. end - 1 of ``merge_partials``."""
    inner = m.shape[2]
    for t in range(first, end):
        o, j, _ = piece_at(t, inner, inner, 1)
        pm, pc, ps = -np.inf, 0.0, 0.0
        for k in range(m.shape[1]):
            pm, pc, ps = merge(pm, pc, ps, m[o, k, j], c[o, k, j], s[o, k, j])
        m_out[o, j], c_out[o, j], s_out[o, j] = pm, pc, ps


@kernel
def merge_partials(m, c, s):
    """Merge partials (m, c, s), each (outer, n, inner), along axis 1, in order: the one merge
    rule, for partials computed elsewhere (chunks of a stream, blocks of a Dask array)."""
    outer, n, inner = m.shape
    threads = threads_for(m.size)
    m_out = np.empty((outer, inner))
    c_out = np.empty((outer, inner))
    s_out = np.empty((outer, inner))
    run_tasks(merge_run, (m, c, s, m_out, c_out, s_out), outer * inner, n)
    restore_threads(threads)
    return m_out, c_out, s_out


@kernel
def finish_slices_run(m, c, s, out, sign, first, end):
    """``finish_slices`` of the blocks first .. end - 1 of BLOCK partials, for
    ``lse_of_partials``."""
    n = m.shape[0]
    for task in range(first, end):
        lo = task * BLOCK
        hi = min(n, lo + BLOCK)
        finish_slices(m[lo:hi], c[lo:hi], s[lo:hi], out[lo:hi], slice_of(sign, lo, hi))


@kernel
def lse_of_partials(m, c, s, out, sign):
    """out[i], sign[i] = the log-sum-exp and sign of the partial (m, c, s)[i] (1-D arrays)."""
    threads = threads_for(m.size)
    if one_thread():  # elementwise: the same values in one piece, without the blocks
        finish_slices(m, c, s, out, sign)
    else:
        run_tasks(finish_slices_run, (m, c, s, out, sign), -(-m.shape[0] // BLOCK), BLOCK)
    restore_threads(threads)
