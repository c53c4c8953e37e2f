"""Dask arrays: lazy results, built from the CPU kernels and the one merge rule.

Nothing here computes at call time: every function checks what metadata (dtypes, shapes,
axes) can tell, raising as the NumPy path does, and returns a Dask graph.

logsumexp   each block reduces to its partial (max, ties, sum) in a structured float64
            array (``PARTIAL``), size 1 along the reduced axes; ``dask.array.reduction``
            merges them in a tree with ``merge_partials``; the last step turns the merged
            partial into (log-sum-exp, sign). b and where become weights, as on the CPU.
softmax &c. a reduced axis held in one chunk: the NumPy function maps over the blocks.
            Split across chunks: the partials merged as above give each slice's constants,
            then each block is written from them (``cpu.softmax_apply``). log1m_softmax
            also merges the partials of the entries below each slice's max where its
            dominant entry needs them (its own sum below 2^-900); a block with no such
            slice is not read for them.
losses      the class axis must be whole in each block: a split class axis is rechunked to
            one chunk (lazily; memory per block is rows x classes). Each block gives its
            per-sample float64 losses (and the gradient of their sum); 'sum' and 'mean'
            reduce them lazily, 'mean' dividing by the summed weights of the kept targets.
            A class index out of range raises IndexError when that block is computed.
"""

import math

import numpy as np

from . import _dispatch, _validate

PARTIAL = np.dtype([("m", np.float64), ("c", np.float64), ("s", np.float64)])
FINISHED = np.dtype([("lse", np.float64), ("sign", np.float64)])


def is_dask(*arrays):
    """Whether any of ``arrays`` is a Dask array (without importing Dask)."""
    return any(type(a).__module__.startswith("dask.array") and hasattr(a, "chunks")
               for a in arrays if a is not None)


def _da():
    import dask.array as da

    return da


def _meta(ndim, dtype):
    """An empty array that stands for a block of ``ndim`` dimensions and ``dtype`` (Dask's
    ``meta``). Without it Dask calls the block's function on empty arrays to learn what it
    returns, and so would import Numba and load (or compile) kernels as the graph is built."""
    return np.empty((0,) * ndim, dtype=dtype)


# --- partials ----------------------------------------------------------------------------


def _as_partial(m, c, s, axes):
    out = np.empty(np.shape(m), dtype=PARTIAL)
    out["m"], out["c"], out["s"] = m, c, s
    return np.expand_dims(out, axes)


def _block_partials(a, b=None, *, axes):
    """The partial of a block (weights b or None), size 1 along ``axes``."""
    if b is not None:
        b = np.broadcast_to(b, a.shape)
    return _as_partial(*_dispatch.cpu().lse_partials(a, b, axes), axes)


def _merge_blocks(p, axis, keepdims):
    """Partials concatenated along ``axis`` merged into one (dask.array.reduction's step)."""
    axes = tuple(sorted(ax % p.ndim for ax in (axis if isinstance(axis, tuple) else (axis,))))
    if p.size == 0:
        # The merge of no partials: (-inf, 0, 0), here, not in a kernel. (Dask's reduction
        # calls this on empty arrays to learn what it returns, and takes no ``meta``.)
        out = np.empty(tuple(1 if ax in axes else n for ax, n in enumerate(p.shape)), PARTIAL)
        out["m"], out["c"], out["s"] = -np.inf, 0.0, 0.0
    else:
        out = _as_partial(*_dispatch.cpu().merge_partials(p["m"], p["c"], p["s"], axes), axes)
    return out if keepdims else np.squeeze(out, axes)


def _finish_block(p):
    out = np.empty(p.shape, dtype=FINISHED)
    out["lse"], out["sign"] = _dispatch.cpu().lse_from_partials(p["m"], p["c"], p["s"])
    return out


def _merged_partials(a, b, axes, block=_block_partials):
    """Each slice's merged partial: a structured Dask array, size 1 along ``axes``. ``block``
    gives the partial of one block of a (and of b, the Dask arrays that follow a or None)."""
    da = _da()
    chunks = tuple((1,) * len(c) if ax in axes else c for ax, c in enumerate(a.chunks))
    arrays = (a,) + tuple(x for x in (b if isinstance(b, tuple) else (b,)) if x is not None)
    meta = _meta(a.ndim, PARTIAL)
    partials = da.map_blocks(block, *arrays, axes=axes, chunks=chunks, dtype=PARTIAL,
                             meta=meta)
    return da.reduction(partials, _merge_blocks, _merge_blocks, combine=_merge_blocks,
                        axis=axes, keepdims=True, dtype=PARTIAL, concatenate=True, meta=meta)


# --- validation from metadata ------------------------------------------------------------


def _real_array(x, name):
    da = _da()
    x = da.asarray(x)
    _validate.check_dtype(x.dtype, name)
    return x


def _weak(value):
    """A Python scalar stays itself (a weak type for NumPy's promotion); arrays give dtypes."""
    return value if np.isscalar(value) and not isinstance(value, np.generic) else value.dtype


def _known_shapes(what, *arrays):
    """Raise where an array (Dask's, or None) has unknown chunk sizes (a nan in its shape,
    as after boolean indexing): ``what`` compares or broadcasts shapes, which such an
    array does not tell (Dask's own advice: ``compute_chunk_sizes()``)."""
    for x in arrays:
        shape = getattr(x, "shape", ())
        if any(math.isnan(extent) for extent in shape):
            raise ValueError(
                f"{what} needs the arrays' shapes, and a Dask array here has unknown chunk "
                f"sizes (shape {shape}, e.g. after boolean indexing): call "
                f"x.compute_chunk_sizes() on it first")


def _mask(where, like):
    """``where`` as a boolean Dask array broadcast to and chunked as the array ``like``."""
    if where is None:
        return None
    da = _da()
    mask = da.asarray(where)
    _known_shapes("where=", mask, like)
    _validate.check_where(mask, like.shape)
    return da.broadcast_to(mask, like.shape).rechunk(like.chunks)


# --- logsumexp ---------------------------------------------------------------------------


def logsumexp(a, axis, b, keepdims, return_sign, where):
    da = _da()
    a_in = a
    a = _real_array(a, "a")
    if b is not None and not np.isscalar(b):
        b = _real_array(b, "b")
    dtype = _validate.result_dtype(_weak(a_in) if np.isscalar(a_in) else a.dtype,
                                   *(() if b is None else (_weak(b),)))
    if dtype.kind == "c":
        raise TypeError(f"unsupported dtype {dtype.name}: complex Dask arrays are not supported "
                        f"(compute the blocks with numba_lse on NumPy arrays)")
    work = _validate.compute_dtype(dtype)
    a = a.astype(work)
    if a.ndim == 0:
        a = a[None]
    if b is not None:
        b = da.asarray(b)
        _known_shapes("logsumexp's b", a, b)
        shape = _validate.broadcast_shape(a, b)
        a = da.broadcast_to(a, shape)
        b = da.broadcast_to(b.astype(work), shape).rechunk(a.chunks)
    mask = _mask(where, a)
    if mask is not None:
        b = mask if b is None else da.where(mask, b, 0)
    axes = _validate.normalize_axes(axis, a.ndim)
    if any(a.shape[ax] == 0 for ax in axes):
        # As SciPy (and the NumPy path): -inf, with sign -1.
        kept = tuple(1 if ax in axes else size for ax, size in enumerate(a.shape))
        out, sign = da.full(kept, -np.inf, dtype=dtype), da.full(kept, -1.0, dtype=dtype)
    else:
        finished = _merged_partials(a, b, axes).map_blocks(_finish_block, dtype=FINISHED,
                                                           meta=_meta(a.ndim, FINISHED))
        out, sign = finished["lse"], finished["sign"]
        if not return_sign:
            out = da.where(sign < 0, np.nan, out)
        out, sign = out.astype(dtype), sign.astype(dtype)
    if not keepdims:
        out, sign = out.squeeze(axis=axes), sign.squeeze(axis=axes)
    return (out, sign) if return_sign else out


# --- softmax family ----------------------------------------------------------------------


def _apply_block(x, mask, p, dominant, *, name, axes):
    """The op on one block, from the merged partials p of its slices (size 1 along axes)."""
    if mask is not None:
        mask = np.broadcast_to(mask, x.shape)
    kept = tuple(size for ax, size in enumerate(p.shape) if ax not in axes)
    parts = [np.reshape(p[field], kept) for field in ("m", "c", "s")]
    if dominant is not None:
        dominant = np.reshape(dominant, kept)
    return _dispatch.cpu().softmax_apply(name, x, mask, axes, *parts, dominant)


def _dominant_block(p, below):
    return _dispatch.cpu().log1m_dominant(p["m"], p["c"], p["s"], below["m"], below["c"], below["s"])


def _below_partials(x, p, mask=None, *, axes):
    """The partial of the block's entries below their slice's max (and kept by mask), for the
    slices whose dominant entry needs it (``cpu.log1m_runner_up_needed``); elsewhere that of
    no entries, and the block is not read when no slice of it needs one."""
    needed = _dispatch.cpu().log1m_runner_up_needed(p["m"], p["c"], p["s"])
    if not needed.any():
        out = np.empty(p.shape, dtype=PARTIAL)
        out["m"], out["c"], out["s"] = -np.inf, 0.0, 0.0
        return out
    weights = (x < p["m"]) & needed
    return _block_partials(x, weights if mask is None else weights & mask, axes=axes)


def softmax_family(name, x, axis, where):
    from . import _api

    da = _da()
    x = _real_array(x, "x")
    if x.dtype.kind == "c":
        raise TypeError(f"unsupported dtype {x.dtype.name} for x: softmax functions are real")
    dtype = _validate.result_dtype(x.dtype)
    x = x.astype(_validate.compute_dtype(dtype))
    mask = _mask(where, x)
    axes = _validate.normalize_axes(axis, max(x.ndim, 1))
    if x.ndim == 0:
        axes = ()
    elif any(x.shape[ax] == 0 for ax in axes):
        raise ValueError(
            f"cannot normalise over a zero-size axis: x has shape {x.shape} and "
            f"axis={axis!r} (SciPy raises 'zero-size array to reduction operation maximum')"
        )
    function = getattr(_api, name)
    like_x = dict(dtype=x.dtype, meta=_meta(x.ndim, x.dtype))
    if all(x.numblocks[ax] == 1 for ax in axes):
        if mask is None:
            result = x.map_blocks(function, axis=axes, **like_x)
        else:
            result = da.map_blocks(lambda xb, mb: function(xb, axis=axes, where=mb), x, mask,
                                   **like_x)
        return result.astype(dtype)
    p = _merged_partials(x, mask, axes)
    dominant = None
    if name == "log1m_softmax":
        below = _merged_partials(x, (p, mask), axes, block=_below_partials)
        dominant = da.map_blocks(_dominant_block, p, below, dtype=np.float64,
                                 meta=_meta(p.ndim, np.float64))
    arrays = [x, mask, p, dominant]
    args = [a for a in arrays if a is not None]
    present = [a is not None for a in arrays]

    def apply(*blocks):
        it = iter(blocks)
        full = [next(it) if here else None for here in present]
        return _apply_block(*full, name=name, axes=axes)

    return da.map_blocks(apply, *args, **like_x).astype(dtype)


# --- losses ------------------------------------------------------------------------------


def _loss_inputs(input, target, weight, ignore_index, reduction, label_smoothing,
                 probabilities_allowed):
    """Validated (x, t, weight (NumPy or None), smoothing, probability, dtype, unbatched)."""
    da = _da()
    x = da.asarray(input)
    t = da.asarray(target)
    w = None if weight is None else (weight if is_dask(weight) else np.asarray(weight))
    _known_shapes("a loss", x, t, w)
    smoothing, probability = _validate.loss_metadata(
        x, t, w, ignore_index, reduction, label_smoothing, probabilities_allowed)
    dtype = _validate.native(x.dtype)
    x = x.astype(_validate.compute_dtype(dtype))
    t = t.astype(x.dtype) if probability else t.astype(np.int64)
    if w is not None:
        # One block holding every class's weight, lazy like the rest (a blockwise argument).
        w = da.asarray(w).astype(x.dtype).rechunk(-1)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]
    # Every sample's classes in one block; the target chunked as the logits' samples.
    x = x.rechunk({1: -1})
    t = t.rechunk(x.chunks if probability else x.chunks[:1] + x.chunks[2:])
    return x, t, w, smoothing, probability, dtype, unbatched


def _sample_weights(t, w, *, ignore_index, probability):
    """Per-sample weights of the 'mean' denominator: w[t] (1 without w), 0 where ignored."""
    if probability:
        return np.ones(t.shape[:1] + t.shape[2:])
    kept = t != ignore_index
    chosen = np.ones(t.shape) if w is None else w[np.where(kept, t, 0)].astype(np.float64)
    return np.where(kept, chosen, 0.0)


def _cross_entropy_block(x, t, w, *, ignore_index, eps, probability, grad):
    """Per-sample float64 losses of a block; with grad, stacked after the gradient of their
    sum along the class axis (one pass gives both)."""
    if not probability:
        _validate.check_classes(t, ignore_index, x.shape[1])
    loss, g = _dispatch.cpu().cross_entropy(x, t, w, ignore_index, "none", eps, grad)
    if not grad:
        return loss
    return np.concatenate([g.astype(np.float64), loss[:, None]], axis=1)


def _nll_block(x, t, w, *, ignore_index):
    _validate.check_classes(t, ignore_index, x.shape[1])
    return _dispatch.cpu().nll_loss(x, t, w, ignore_index, "none")


def _divide(total, denominator):
    return _dispatch.cpu().divide(float(total), float(denominator))


def _reciprocal_or_zero(denominator):
    return np.float64(1.0 / denominator if denominator != 0 else 0.0)


def _reduce(losses, weights, reduction, dtype, unbatched):
    da = _da()
    if reduction == "none":
        return (losses[0] if unbatched else losses).astype(dtype)
    total = losses.sum()
    if reduction == "sum":
        return total.astype(dtype)
    return da.map_blocks(_divide, total, weights.sum(), dtype=np.float64,
                         meta=_meta(0, np.float64)).astype(dtype)


def _indices(x, probability):
    """blockwise index names of the logits (n, c, d...), the target, and a sample."""
    d = tuple(f"d{i}" for i in range(x.ndim - 2))
    logits = ("n", "c") + d
    sample = ("n",) + d
    return logits, (logits if probability else sample), sample


def _weight_arg(w):
    """blockwise's (argument, index) pair for the class weights (None: no index)."""
    return (w, None) if w is None else (w, "c")


def cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, return_grad):
    da = _da()
    x, t, w, eps, probability, dtype, unbatched = _loss_inputs(
        logits, target, weight, ignore_index, reduction, label_smoothing, True)
    x_ind, t_ind, sample = _indices(x, probability)
    block = dict(ignore_index=ignore_index, eps=eps, probability=probability, concatenate=True,
                 dtype=np.float64)
    weights = da.blockwise(_sample_weights, sample, t, t_ind, *_weight_arg(w),
                           ignore_index=ignore_index, probability=probability,
                           dtype=np.float64, concatenate=True)
    if not return_grad:
        losses = da.blockwise(_cross_entropy_block, sample, x, x_ind, t, t_ind, *_weight_arg(w),
                              grad=False, meta=_meta(len(sample), np.float64), **block)
        return _reduce(losses, weights, reduction, dtype, unbatched)
    n_classes = x.shape[1]
    both = da.blockwise(_cross_entropy_block, x_ind, x, x_ind, t, t_ind, *_weight_arg(w),
                        grad=True, adjust_chunks={"c": n_classes + 1},
                        meta=_meta(len(x_ind), np.float64), **block)
    losses, grad = both[:, n_classes], both[:, :n_classes]
    if reduction == "mean":
        grad = grad * da.map_blocks(_reciprocal_or_zero, weights.sum(), dtype=np.float64)
    grad = (grad[0] if unbatched else grad).astype(dtype)
    return _reduce(losses, weights, reduction, dtype, unbatched), grad


def nll_loss(log_probs, target, weight, ignore_index, reduction):
    da = _da()
    x, t, w, _, _, dtype, unbatched = _loss_inputs(
        log_probs, target, weight, ignore_index, reduction, 0.0, False)
    x_ind, t_ind, sample = _indices(x, False)
    losses = da.blockwise(_nll_block, sample, x, x_ind, t, t_ind, *_weight_arg(w),
                          ignore_index=ignore_index, dtype=np.float64, concatenate=True,
                          meta=_meta(len(sample), np.float64))
    weights = da.blockwise(_sample_weights, sample, t, t_ind, *_weight_arg(w),
                           ignore_index=ignore_index, probability=False, dtype=np.float64,
                           concatenate=True)
    return _reduce(losses, weights, reduction, dtype, unbatched)
