"""The CPU backend: NumPy arrays in, NumPy arrays out, kernels compiled with Numba.

Each function here takes validated arrays (compute dtype, axes normalised), builds the
canonical view, allocates the output and launches one kernel. Nothing here raises for user
input: ``_validate`` has already done so.
"""

import math
import threading

import numba
import numpy as np
from numba.np.ufunc.parallel import _launch_threads
from numpy.lib.stride_tricks import as_strided

from .. import _overloads  # noqa: F401  (the @njit overloads, where no entry point made them)
from .._layout import canonical_view, kernel_input
from .._outputs import empty
from . import losses, partials, reduce, softmax

# Numba's fallback threading layer ("workqueue", used when neither TBB nor OpenMP loads) aborts
# the process when two threads launch parallel kernels at once. With it, launches take turns;
# with the thread-safe layers (omp, tbb) they run concurrently.
_launch_lock = threading.Lock()
_layer_is_threadsafe = None


def _launch(kernel, *args):
    """kernel(*args), taking turns with other threads under the workqueue layer.

    (Each kernel itself runs on one thread when its input is small: ``jit.threads_for``.)
    """
    global _layer_is_threadsafe
    if _layer_is_threadsafe is None:
        with _launch_lock:
            if _layer_is_threadsafe is None:
                # Before the first kernel: one loaded from the cache may call the layer's
                # symbols without setting them up (``intrinsics.threading_layer_on_load``).
                _launch_threads()
                _layer_is_threadsafe = numba.threading_layer() != "workqueue"
    if _layer_is_threadsafe:
        return kernel(*args)
    with _launch_lock:
        return kernel(*args)


def logsumexp(a, b, axes, signed=True):
    """(log|sum b exp(a)|, sign) over ``axes``: arrays of the kept axes, dtype of ``a``; sign
    None where not ``signed`` (no weights and no sign to return: an array of ones nobody
    reads, a tenth of the memory traffic of a million rows of 10, is not written).

    For complex ``a``, the first array is the complex log (imaginary part in (-pi, pi]) and
    the second the phase of the sum, as SciPy (``signed`` or not).
    """
    if a.dtype.kind == "c":
        return _complex_logsumexp(a, b, axes)
    layout = canonical_view(a.shape, a.strides, axes)
    # float32 sums without weights may take float32's exp, each result certified
    # (``partials.certain_in_float32``, ``certain_everywhere``); ``reduce.certified_for``
    # chooses alike in Numba code.
    cheap = partials.CERTIFIED if a.dtype == np.float32 and b is None else None
    if layout.inner == 1:
        out = empty(layout.outer, dtype=a.dtype)
        sign = empty(layout.outer, dtype=a.dtype) if signed else None
        rows, weights = layout.rows(a), None if b is None else layout.rows(b)
        if layout.n < reduce.LSE_SHORT_ROW:
            _launch(reduce.lse_short_rows, rows, weights, out, sign, cheap)
        else:
            _launch(reduce.lse_rows, rows, weights, out, sign, cheap)
    else:
        out = empty((layout.outer, layout.inner), dtype=a.dtype)
        sign = empty((layout.outer, layout.inner), dtype=a.dtype) if signed else None
        view, weights = layout.view(a), None if b is None else layout.view(b)
        rows = _rows_per_wide_row(view, weights,
                                  NARROW_CERTIFIED if cheap is not None else NARROW_COLUMNS)
        if rows > 1:
            # Narrow columns: their partials widened (the full exp's), finished.
            m, c, s = _column_partials(view, weights, None, rows)
            _launch(reduce.lse_of_partials, m.reshape(-1), c.reshape(-1), s.reshape(-1),
                    out.reshape(-1), None if sign is None else sign.reshape(-1))
        else:
            _launch(reduce.lse_columns, view, weights, out, sign, cheap)
    return layout.reduced(out), None if sign is None else layout.reduced(sign)


# Columns this many or fewer (axis 0 of an (N, 3) or (N, 10) array) leave the column
# kernels' inner loop, across a band's columns, too short to vectorise well. Where the rows
# of each slice are packed one after another, the partials are taken on the view of
# WIDE_ROW // inner rows a row (``_wide``), whose column r * inner + j holds every R-th entry
# of column j, from row r on; the R partials of each column, then those of the rows left
# over, are merged in order. Partials of (10^6, 3) over axis 0 3.5-4x faster, (10^5, 10)
# 1.8x, (10^5, 16) 1.1-1.2x; 40 columns no faster (two threads, Zen 3). Only from
# WIDEN_FROM entries: below, the extra launches cost more than the loop. Whole calls, two
# threads, widened against not: float32 softmax of (2 10^5, 7) 2.8x, (10^5, 16) 1.26x;
# float64 logsumexp 3.8x and 1.13x. An unweighted float32 logsumexp certifies its bands'
# sums, in pieces (``reduce.certified_in_pieces``): widened with the full exp only below
# 8 columns (NARROW_CERTIFIED), 1.4x at 7 and 1.9x at 3, where 8 measured 0.77x and 16
# 0.66x.
NARROW_COLUMNS = 16
NARROW_CERTIFIED = 7
WIDE_ROW = 128
WIDEN_FROM = 1 << 15


def _rows_per_wide_row(view, weights=None, narrow=NARROW_COLUMNS):
    """R, the rows of the (outer, n, inner) view (and weights like it) that ``_wide`` puts
    in a row, or 1 where it has more than ``narrow`` columns, its rows are not packed, or
    it is small."""
    outer, n, inner = view.shape
    rows = WIDE_ROW // max(inner, 1)
    if not 1 < inner <= narrow or view.size < WIDEN_FROM or n < 2 * rows:
        return 1
    for array in (view, weights):
        if array is not None and not (array.strides[2] == array.itemsize
                                      and array.strides[1] == inner * array.itemsize):
            return 1
    return rows


def _wide(array, rows):
    """The rows 0 .. n - n % rows of ``array`` (outer, n, inner), packed, as (outer,
    n // rows, rows * inner): a view; None for None."""
    if array is None:
        return None
    outer, n, inner = array.shape
    return as_strided(array, (outer, n // rows, rows * inner),
                      (array.strides[0], rows * array.strides[1], array.strides[2]))


def _column_partials(view, weights, for_outputs, rows):
    """The partials (m, c, s), each (outer, inner), of the (outer, n, inner) view (weights
    like it, or None) over axis 1 (``reduce.inner_partials``), read ``rows`` rows a row
    (``_rows_per_wide_row``; 1: as they are)."""
    if rows == 1:
        return _launch(reduce.inner_partials, view, weights, for_outputs)
    outer, n, inner = view.shape
    whole = n - n % rows
    parts = [p.reshape(outer, rows, inner) for p in
             _launch(reduce.inner_partials, _wide(view, rows), _wide(weights, rows), for_outputs)]
    if whole < n:
        tail = _launch(reduce.inner_partials, view[:, whole:],
                       None if weights is None else weights[:, whole:], for_outputs)
        parts = [np.concatenate((p, t[:, None]), axis=1) for p, t in zip(parts, tail)]
    return _launch(reduce.merge_partials, *parts)


_OPS = {"softmax": softmax.SOFTMAX, "log_softmax": softmax.LOG_SOFTMAX,
        "log1m_softmax": softmax.LOG1M_SOFTMAX}


# The kernel for each ``softmax.rows_way``: a call compiles only the one its shape takes.
# Names, looked up at each call: a kernel's dispatcher takes its place in the module once
# made (``jit.Deferred``), and is cheaper to call.
_ROWS_KERNELS = {softmax.SHORT_ROWS: "softmax_short_rows",
                 softmax.ROWS: "softmax_rows",
                 softmax.CHUNKED: "softmax_chunked_rows"}


def softmax_family(name, x, where, axes):
    """softmax, log_softmax or log1m_softmax of x over ``axes``; same shape and dtype as x."""
    layout = canonical_view(x.shape, x.strides, axes)
    if layout.inner == 1:
        out = empty((layout.outer, layout.n), dtype=x.dtype)
        way = softmax.rows_way.py_func(layout.outer, layout.n, x.itemsize, name != "log_softmax")
        _launch(getattr(softmax, _ROWS_KERNELS[way]), _OPS[name], layout.rows(x),
                None if where is None else layout.rows(where), out)
    else:
        out = empty((layout.outer, layout.n, layout.inner), dtype=x.dtype)
        view, mask = layout.view(x), None if where is None else layout.view(where)
        rows = _rows_per_wide_row(view, mask)
        if name != "log_softmax" and x.dtype == np.float64:
            _softmax_keeping_exps(_OPS[name], view, mask, out, rows)
        elif rows == 1:
            _launch(softmax.softmax_inner, _OPS[name], view, mask, out)
        else:
            # Narrow columns, widened (``_column_partials``): their outputs too, each wide
            # column given its column's partial (and dominant value).
            partials_ = _column_partials(view, mask, partials.FOR_OUTPUTS, rows)
            dominant = _launch(softmax.dominants, _OPS[name], view, mask, *partials_)
            kept = [np.tile(p, (1, rows)) for p in (*partials_, dominant)]
            _launch(softmax.apply_partials, _OPS[name], _wide(view, rows), _wide(mask, rows),
                    _wide(out, rows), *kept)
            whole = layout.n - layout.n % rows
            if whole < layout.n:
                _launch(softmax.apply_partials, _OPS[name], view[:, whole:],
                        None if mask is None else mask[:, whole:], out[:, whole:], *partials_,
                        dominant)
    return layout.full(out)


def _softmax_keeping_exps(op, view, mask, out, rows):
    """softmax or log1m_softmax (``op``) of float64 ``view`` (outer, n, inner) along axis 1
    into ``out``, one exp per entry (``softmax.softmax_keeping_exps``); where ``rows`` > 1,
    on its widened view (and its rows left over), as ``_column_partials``: each column's max
    is that of its R wide columns and the rest, its sums theirs, added in order."""
    outer, n, inner = view.shape
    if rows == 1:
        _launch(softmax.softmax_keeping_exps, op, view, mask, out)
        return
    whole = n - n % rows
    parts = [(_wide(view, rows), _wide(mask, rows), _wide(out, rows), rows)]
    if whole < n:
        parts.append((view[:, whole:], None if mask is None else mask[:, whole:],
                      out[:, whole:], 1))

    def columns(each):
        """The per-column arrays (outer, r * inner) of each part, as (outer, all r, inner)."""
        return np.concatenate([a.reshape(outer, -1, inner) for a in each], axis=1)

    top = columns(_launch(softmax.column_maxima, v, w) for v, w, _, _ in parts).max(axis=1)
    sums = [_launch(softmax.kept_terms, v, w, o, np.tile(top, (1, r))) for v, w, o, r in parts]
    c, s = (columns(each).sum(axis=1) for each in zip(*sums))
    kept = (top, c, s, _launch(softmax.dominants, op, view, mask, top, c, s))
    for v, w, o, r in parts:
        _launch(softmax.scale_exps, op, v, w, o, *(np.tile(p, (1, r)) for p in kept))


def softmax_apply(name, x, where, axes, m, c, s, dominant=None):
    """The softmax-family op ``name`` of x over ``axes``, given each slice's partial (m, c, s)
    (arrays of the kept axes, or keepdims-shaped) computed elsewhere, e.g. merged across
    Dask blocks; ``dominant`` as ``log1m_dominant`` gives it (log1m_softmax only)."""
    layout = canonical_view(x.shape, x.strides, axes)
    view = layout.view(x)
    mask = None if where is None else layout.view(where)
    kept = [p.reshape(layout.outer, layout.inner) for p in
            _flat(m, c, s, np.full(np.shape(m), np.nan) if dominant is None else dominant)]
    out = empty((layout.outer, layout.n, layout.inner), dtype=x.dtype)
    _launch(softmax.apply_partials, _OPS[name], view, mask, out, *kept)
    return layout.full(out)


def _flat(*arrays):
    """Partials (arrays of one shape, any kind) as contiguous 1-D float64 kernel inputs."""
    return [kernel_input(np.ascontiguousarray(a, dtype=np.float64).reshape(-1)) for a in arrays]


def log1m_runner_up_needed(m, c, s):
    """Whether each slice's dominant entry needs the partial of the slice's entries below its
    max (``log1m_dominant``'s below_*), from the slice's partial (arrays of one shape)."""
    out = np.empty(np.size(m), dtype=np.bool_)
    softmax.runner_up_needed(*_flat(m, c, s), out)
    return out.reshape(np.shape(m))


def log1m_dominant(m, c, s, below_m, below_c, below_s):
    """log1m_softmax's value at each slice's dominant entry (nan where it has none), from the
    slice's partial and the partial of its entries below its max (arrays of one shape)."""
    out = np.empty(np.size(m))
    softmax.dominant_from(*_flat(m, c, s, below_m, below_c, below_s), out)
    return out.reshape(np.shape(m))


def _partials(view, weights=None):
    """(m, c, s) of each slice of an (outer, n, inner) view, each of shape (outer, inner)."""
    if view.shape[2] == 1:
        w = None if weights is None else weights[:, :, 0]
        short = view.shape[1] < reduce.SHORT_ROW
        kernel = reduce.short_row_partials if short else reduce.row_partials
        return tuple(p[:, None] for p in _launch(kernel, view[:, :, 0], w, None))
    return _column_partials(view, weights, None, _rows_per_wide_row(view, weights))


def lse_partials(a, b, axes):
    """The partials (m, c, s) of sum b exp(a) over ``axes``: float64 arrays of the kept axes.

    The state a stream or a Dask block keeps; ``merge_partials`` combines them and
    ``lse_from_partials`` finishes them (a real a, b like a or None).
    """
    layout = canonical_view(a.shape, a.strides, axes)
    partials = _partials(layout.view(a), None if b is None else layout.view(b))
    return tuple(layout.reduced(p) for p in partials)


def merge_partials(m, c, s, axes):
    """Partials (m, c, s) (arrays of one shape) merged over ``axes``, in index order."""
    layout = canonical_view(m.shape, m.strides, axes)
    views = [layout.view(np.asarray(p, dtype=np.float64)) for p in (m, c, s)]
    return tuple(layout.reduced(p) for p in _launch(reduce.merge_partials, *views))


def lse_from_partials(m, c, s):
    """(log|sum|, sign) of partials (m, c, s): float64 arrays of their shape."""
    shape = np.shape(m)
    m, c, s = _flat(m, c, s)
    out = empty(shape)
    sign = empty(shape)
    _launch(reduce.lse_of_partials, m, c, s, out.reshape(-1), sign.reshape(-1))
    return out, sign


def cross_entropy(x, target, weight, ignore_index, reduction, smoothing, return_grad):
    """Cross-entropy of logits x (N, C, d...) over axis 1; (loss, grad or None).

    ``target`` holds class indices (N, d...) or probabilities shaped like x. The loss is in
    float64 (rounded by the caller), the gradient in x's dtype.
    """
    layout = canonical_view(x.shape, x.strides, (1,))
    probability = target.shape == x.shape and target.dtype.kind == "f"
    weight = kernel_input(weight)
    # Samples along rows (inner == 1): the kernels take (N, C) views, whose rows have a
    # contiguous type where the data is contiguous (the gradient loop vectorises).
    samples = layout.rows if layout.inner == 1 else layout.view
    logits = samples(x)
    keep = None
    way = softmax.rows_way.py_func(layout.outer, layout.n, x.itemsize, False)
    if layout.inner == 1 and way != softmax.CHUNKED:
        # The kernel reduces the rows itself, a block at a time (short ones, a tile).
        m = losses.SHORT_TILES if way == softmax.SHORT_ROWS else None
        c = s = None
        keep = losses.KEEP_EXPS if return_grad and losses.keeps_exps(layout.n) else None
    elif layout.inner == 1:
        m, c, s = _launch(reduce.row_partials, logits, None, partials.FOR_OUTPUTS)
    else:
        m, c, s = (p.reshape(-1) for p in _launch(reduce.inner_partials, logits, None,
                                                  partials.FOR_OUTPUTS))
    loss = empty((layout.outer, layout.inner))
    grad = empty(logits.shape, dtype=x.dtype) if return_grad else None
    if probability:
        denominator = float(layout.outer * layout.inner)
    else:
        indices = layout.kept_view(target)
        denominator = losses.kept_weight(indices, weight, ignore_index)
    if reduction != "mean":
        scale = 1.0
    elif denominator != 0:
        scale = 1.0 / denominator
    else:
        scale = 0.0  # an all-ignored mean is nan, and its gradient zeros, as torch
    _launch(losses.cross_entropy_samples, logits, samples(target) if probability else indices,
            weight, ignore_index, smoothing, m, c, s, scale, loss, grad, keep)
    result = _reduce_loss(layout.reduced(loss), reduction, denominator)
    return result, (None if grad is None else layout.full(grad))


def checked_nll_loss(log_probs, target, ignore_index, reduction):
    """(first, loss) of the common call: (N, C) log-probabilities, (N,) int64 class indices,
    no weight, reduction 'sum' or 'mean'. first is the position of the first index out of
    bounds, -1 when there is none; only then is the loss computed (float64 sums, as
    ``nll_loss``'s), nan otherwise. The check and the gather are one compiled call
    (``losses.checked_nll``); the caller raises for first >= 0."""
    first, total, mean = _launch(losses.checked_nll, kernel_input(log_probs), kernel_input(target),
                                 ignore_index)
    return first, (total if reduction == "sum" else mean)


def nll_loss(log_probs, target, weight, ignore_index, reduction):
    """NLL of log-probabilities (N, C, d...) over axis 1: a gather and its sums, one kernel.

    The sums are float64's (``losses.nll_index``): compensated for float64 data, within
    about an ulp of the exact sums; float32 data's within 2^-41 of the sum of the losses'
    magnitudes.
    """
    if reduction != "none" and log_probs.ndim == 2:
        # (N, C) to a scalar, the common call: its (N, C, 1) view without the layout's
        # bookkeeping (a sixth of a small call).
        total, mean = _launch(losses.nll_index, kernel_input(log_probs)[:, :, None],
                              kernel_input(target)[:, None], kernel_input(weight), ignore_index, None)
        return total if reduction == "sum" else mean
    layout = canonical_view(log_probs.shape, log_probs.strides, (1,))
    loss = empty((layout.outer, layout.inner)) if reduction == "none" else None
    total, mean = _launch(losses.nll_index, layout.view(log_probs), layout.kept_view(target),
                          kernel_input(weight), ignore_index, loss)
    if reduction == "none":
        return layout.reduced(loss)
    return total if reduction == "sum" else mean


def _reduce_loss(loss, reduction, denominator):
    """'none', 'sum' or 'mean' of float64 per-sample losses (pairwise sums, as NumPy)."""
    if reduction == "none":
        return loss
    total = np.add.reduce(loss, axis=None)  # np.sum's pairwise sum, without its wrappers
    if reduction == "sum":
        return total
    return divide(float(total), float(denominator))


def divide(a, b):
    """a / b as an IEEE division (nan for 0 / 0 and nan / 0, +-inf for x / 0) and a NumPy
    scalar, without NumPy's error state (entering it costs more than a small call)."""
    if b != 0:
        return np.float64(a / b)
    if a == 0 or a != a:
        return np.float64(np.nan)
    return np.float64(math.copysign(math.inf, a) * math.copysign(1.0, b))


def _complex_logsumexp(a, b, axes):
    """Complex log-sum-exp from two real ones, so the mathematics stays in one kernel.

    With a = x + iy, sum b e^a = sum (b cos y) e^x + i sum (b sin y) e^x: the real and the
    imaginary part are each a real weighted log-sum-exp with a sign, combined at the end.
    """
    # In float64 even for complex64: the phases cos y, sin y need the digits.
    x = a.real.astype(np.float64)
    with np.errstate(invalid="ignore"):
        # Shift by the max real part first, so the two partial logs stay small and their
        # rounding does not turn into an error in the phase: the max of the terms kept (a
        # zero weight or a mask, folded into b, drops its term; a shift by its real part,
        # 1e17 above the others, left them nothing).
        kept = x if b is None else np.where(b != 0, x, -np.inf)
        x_max = np.max(kept, axis=axes, keepdims=True)
    x_max = np.where(np.isfinite(x_max), x_max, 0.0)
    x = x - x_max
    angle = a.imag.astype(np.float64)
    # b e^{iy} = (b_re cos y - b_im sin y) + i (b_re sin y + b_im cos y)
    b_re = 1.0 if b is None else b.real.astype(np.float64)
    b_im = 0.0 if b is None else b.imag.astype(np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    re_log, re_sign = logsumexp(x, np.broadcast_to(b_re * cos - b_im * sin, x.shape), axes)
    im_log, im_sign = logsumexp(x, np.broadcast_to(b_re * sin + b_im * cos, x.shape), axes)
    x_max = np.squeeze(x_max, axis=axes)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
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
