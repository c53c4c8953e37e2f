"""Every user error is raised here, from shapes and dtypes alone, before any kernel runs
(but for the common nll_loss call's class indices: below).

Python: axis normalisation, the dtype policy, broadcasting of weights; one compiled pass
checks class-index targets (``cpu.losses.first_out_of_bounds``), with no temporaries. The
common nll_loss call makes that pass in the compiled call of its gather, which runs only
after it, and raises from its answer (``class_out_of_bounds``, in ``_api.nll_loss``).
"""

import math
import numbers
import operator

import numpy as np
from numpy.exceptions import AxisError

from . import _dispatch

# float16 is computed in float32 (Numba has no float16 arithmetic on the CPU) and returned as
# float16; integers and booleans become float64, as in SciPy.
_COMPUTE_DTYPE = {
    np.dtype(np.float16): np.dtype(np.float32),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.complex64): np.dtype(np.complex64),
    np.dtype(np.complex128): np.dtype(np.complex128),
}


def native(dtype):
    """``dtype`` in the machine's byte order. Data of the other order (big-endian FITS
    files, network-order records) is computed as NumPy's ufuncs, hence SciPy, compute it:
    converted, with results in the machine's order (torch refuses such arrays; its losses
    here take them as SciPy's functions do)."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def check_dtype(dtype, what="input"):
    """Raise TypeError unless ``dtype`` is one numba_lse computes with (or promotes from),
    in either byte order."""
    if dtype.kind in "biu" or native(dtype) in _COMPUTE_DTYPE:
        return
    if dtype.kind in "fc":
        raise TypeError(
            f"unsupported dtype {dtype.name} for {what}: numba_lse computes in float32 or "
            f"float64 (Numba has no long double); convert it with .astype(np.float64)"
        )
    raise TypeError(
        f"unsupported dtype {dtype.name} for {what}: expected a real or complex floating, "
        f"integer or boolean array"
    )


def result_dtype(*values):
    """The floating dtype of the result, as SciPy promotes: NumPy's rules, then int -> float64.

    Python scalars are weak (NEP 50): float32 data with ``b=2`` stays float32.
    """
    if len(values) == 1 and isinstance(values[0], np.ndarray) and values[0].dtype.kind == "f":
        return native(values[0].dtype)  # the common case, without NumPy's promotion machinery
    dtype = np.result_type(*values)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    return native(dtype)


def compute_dtype(dtype):
    """The dtype the kernels run in for a result of ``dtype``."""
    return _COMPUTE_DTYPE[np.dtype(dtype)]


def normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple of ints) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    normalized = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"axis must be None, an integer or a tuple of integers, got {axis!r}")
        try:
            index = operator.index(item)
        except TypeError:
            raise TypeError(
                f"axis must be None, an integer or a tuple of integers, got {axis!r}"
            ) from None
        if not -ndim <= index < ndim:
            raise AxisError(index, ndim)
        normalized.append(index % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"repeated axis in axis={axis!r}")
    return tuple(sorted(normalized))


def broadcast_weights(a, b, name="b"):
    """a and b broadcast to their common shape (views), or a ValueError naming both shapes."""
    shape = broadcast_shape(a, b, name)
    return np.broadcast_to(a, shape), np.broadcast_to(b, shape)


def broadcast_shape(a, b, name="b"):
    """The common shape of arrays (of any kind) a and b, or a ValueError naming both shapes."""
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{name} with shape {b.shape} does not broadcast against a with shape {a.shape}"
        ) from None


def where_mask(where, shape):
    """``where`` as a boolean array broadcast to ``shape`` (a view), or None."""
    if where is None:
        return None
    mask = np.asarray(where)
    check_where(mask, shape)
    return np.broadcast_to(mask, shape)


def check_where(mask, shape):
    """TypeError unless the mask (an array of any kind) is boolean; ValueError unless it
    broadcasts to ``shape``."""
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {mask.dtype.name}")
    try:
        fits = np.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"where with shape {mask.shape} does not broadcast to the input's shape {shape}"
        )


def softmax_args(x, axis, where):
    """Validated (x, axes, mask, result dtype) for the softmax family (real input only)."""
    x_array = np.asarray(x)
    check_dtype(x_array.dtype, "x")
    if x_array.dtype.kind == "c":
        raise TypeError(f"unsupported dtype {x_array.dtype.name} for x: softmax functions are real")
    dtype = result_dtype(x_array)
    x_array = x_array.astype(compute_dtype(dtype), copy=False)
    mask = where_mask(where, x_array.shape)
    # A 0-d x takes axis 0 or -1 as a 1-d one does (NumPy's reductions, hence SciPy, do).
    axes = normalize_axes(axis, max(x_array.ndim, 1))
    if x_array.ndim == 0:
        axes = ()
    elif x_array.size == 0 and math.prod(x_array.shape[ax] for ax in axes) == 0:
        raise ValueError(
            f"cannot normalise over a zero-size axis: x has shape {x_array.shape} and "
            f"axis={axis!r} (SciPy raises 'zero-size array to reduction operation maximum')"
        )
    return x_array, axes, mask, dtype


def logsumexp_args(a, b, axis, where=None):
    """Validated (a, b, axes, result dtype) for logsumexp; a and b as compute-dtype arrays.

    ``where`` is folded into the weights: a masked-out entry is one of weight 0.
    """
    a_array = np.asarray(a)
    check_dtype(a_array.dtype, "a")
    if b is None:
        dtype = result_dtype(a_array)
        b_array = None
    else:
        b_array = np.asarray(b)
        check_dtype(b_array.dtype, "b")
        dtype = result_dtype(a if np.isscalar(a) and not isinstance(a, np.generic) else a_array,
                             b if np.isscalar(b) and not isinstance(b, np.generic) else b_array)
    work = compute_dtype(dtype)
    a_array = np.atleast_1d(a_array).astype(work, copy=False)
    if b_array is not None:
        a_array, b_array = broadcast_weights(a_array, np.atleast_1d(b_array).astype(work, copy=False))
    if where is not None:
        mask = where_mask(where, a_array.shape)
        b_array = mask if b_array is None else np.where(mask, b_array, 0)
    axes = normalize_axes(axis, a_array.ndim)
    return a_array, b_array, axes, dtype


_REDUCTIONS = ("none", "mean", "sum")
# Compared with a dtype, a dtype is quick; np.int64 (a type) is converted at each comparison.
_INT64 = np.dtype(np.int64)


def loss_args(input, target, weight, ignore_index, reduction, label_smoothing=0.0,
              probabilities_allowed=False):
    """Validated (input, target, weight, result dtype, unbatched) for nll_loss/cross_entropy.

    Messages follow torch's. A (C,) input with a 0-d target comes back as (1, C) and (1,),
    with ``unbatched`` True.
    """
    if (type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0
            and plain_classes(input, target, weight, ignore_index, reduction)):
        check_classes(target, ignore_index, input.shape[1])
        return input, target, None, label_smoothing, input.dtype, False
    x = input if type(input) is np.ndarray else np.asarray(input)
    t = target if type(target) is np.ndarray else np.asarray(target)
    w = None if weight is None else np.asarray(weight)
    smoothing, probability = loss_metadata(x, t, w, ignore_index, reduction, label_smoothing,
                                           probabilities_allowed)
    dtype = native(x.dtype)
    work = _COMPUTE_DTYPE[dtype]
    if work != x.dtype:  # each astype, even a no-op, costs a small call a few percent
        x = x.astype(work)
    if probability:
        t = t.astype(work, copy=False)
    else:
        check_classes(t, ignore_index, x.shape[0] if x.ndim == 1 else x.shape[1])
        if t.dtype != _INT64:
            t = t.astype(_INT64)
    if w is not None:
        w = np.ascontiguousarray(w, dtype=x.dtype)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]
    return x, t, w, smoothing, dtype, unbatched


_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_PLAIN_FLOATS = (_FLOAT32, _FLOAT64)


def plain_classes(x, t, w, ignore_index, reduction):
    """Whether a loss call is the common one that its types show valid but for its class
    indices: NumPy arrays, an (N, C) float32 or float64 input, an (N,) int64 target, no
    weight, an int ignore_index within int64 and a named reduction (a small nll_loss call
    costs a third less without the general checks of ``loss_metadata``). The dtypes are
    compared first by identity with NumPy's own descriptors of these types (an equal dtype
    that is another object, as an unpickled array's, by equality after), and the lengths
    taken by ``len``, not from shape tuples: with its caches cold (after other work) the
    check takes 4.7 us where dtype equality and shape tuples took 7.8."""
    return (type(x) is np.ndarray and type(t) is np.ndarray and w is None
            and type(ignore_index) is int and -2**63 <= ignore_index < 2**63
            and x.ndim == 2 and t.ndim == 1
            and (x.dtype is _FLOAT32 or x.dtype is _FLOAT64 or x.dtype in _PLAIN_FLOATS)
            and (t.dtype is _INT64 or t.dtype == _INT64)
            and len(t) == len(x) and reduction in _REDUCTIONS)


def loss_metadata(x, t, w, ignore_index, reduction, label_smoothing, probabilities_allowed):
    """(label smoothing, whether t holds probabilities), checking everything that dtypes and
    shapes tell (x, t, w: arrays of any kind, w may be None). Messages follow torch's."""
    if x.dtype.kind != "f":
        raise TypeError(f"expected a floating-point input, got dtype {x.dtype.name}")
    check_dtype(x.dtype, "input")
    if x.ndim == 0:
        raise ValueError("input must have at least one dimension (the classes), got a 0-d array")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not isinstance(label_smoothing, numbers.Real):
        # As torch's float argument: not a string, which float() would read.
        raise TypeError(f"label_smoothing must be a float, got {label_smoothing!r}")
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not -2**63 <= ignore_index < 2**63:
        # torch's is an int64 too (its error: "Overflow when unpacking long long").
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    probability = t.dtype.kind == "f" and probabilities_allowed
    if probability:
        if t.shape != x.shape:
            raise ValueError(
                f"a probability target must have the shape of the input {x.shape}, got {t.shape}"
            )
        if ignore_index >= 0:
            # torch's rule: a class to ignore has no meaning for probability targets.
            raise ValueError(
                f"ignore_index is not supported for floating point target (got {ignore_index})"
            )
    elif t.dtype.kind in "iu":
        expected = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
        if x.ndim >= 2 and (t.ndim == 0 or t.shape[0] != x.shape[0]):
            batch = t.shape[0] if t.ndim else "a 0-d target"
            raise ValueError(f"Expected input batch_size ({x.shape[0]}) to match target batch_size ({batch}).")
        if x.ndim <= 2 and t.ndim > 1:
            raise ValueError("0D or 1D target tensor expected, multi-target not supported "
                             f"(got a target of shape {list(t.shape)})")
        if t.shape != expected:
            raise ValueError(f"Expected target size {list(expected)}, got {list(t.shape)}")
    else:
        kinds = "an integer (class indices) or floating (class probabilities)" if probabilities_allowed else "an integer (class indices)"
        raise TypeError(f"expected {kinds} target, got dtype {t.dtype.name}")
    if w is not None:
        if w.ndim != 1 or w.shape[0] != n_classes:
            raise ValueError(
                f"weight tensor should be defined either for all {n_classes} classes or no "
                f"classes but got weight tensor of shape: {list(w.shape)}"
            )
        check_dtype(w.dtype, "weight")
        if w.dtype.kind == "c":
            # torch refuses it too; converted to the input's dtype, it lost its imaginary part.
            raise TypeError(f"weight must be real, got dtype {w.dtype.name}")
    return smoothing, probability


def class_out_of_bounds(flat, first):
    """The IndexError (torch's message) for the class index flat[first] (1-D flat)."""
    return IndexError(f"Target {flat[first]} is out of bounds.")


def check_classes(t, ignore_index, n_classes):
    """IndexError (torch's message) for a class index outside [0, n_classes), ignore_index aside."""
    if t.dtype.kind == "i" or t.dtype.itemsize < 8:
        # Every value as int64, exactly (ignore_index is one: ``loss_metadata``): one
        # compiled pass, no temporaries.
        flat = t if t.ndim == 1 and t.dtype == _INT64 else t.astype(_INT64, copy=False).reshape(-1)
        first = _dispatch.cpu().losses.first_out_of_bounds(flat, ignore_index, n_classes)
        if first >= 0:
            raise class_out_of_bounds(flat, first)
        return
    out_of_bounds = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if out_of_bounds.any():
        raise IndexError(f"Target {t[out_of_bounds].flat[0]} is out of bounds.")
