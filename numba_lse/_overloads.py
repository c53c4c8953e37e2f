"""numba_lse's public functions inside users' own ``@njit`` code.

``numba.extending.overload`` gives each public function a jitted implementation, chosen when
a user's jitted function that calls it is compiled. The implementations take the subset
that fits compiled code -- 1-D and 2-D float32/float64 arrays, ``axis`` None or an integer,
``b`` (an array of a's shape) for logsumexp, class-index targets for the losses -- and call
the very kernels the Python functions call, so the values are the same (bit for bit for
C-contiguous input; other layouts are copied to C order first, where the Python call walks
them in place, so their last bits may differ within the documented bounds).

Anything outside the subset is a typing error naming the argument; a bad value (axis out of
range, shapes that differ, a class index out of range) raises the exception the Python call
raises.

Numba imports this module through the package's ``numba_extensions`` entry point, when it
first compiles in a process, so that a user's ``@njit`` function finds the overloads even
though ``import numba_lse`` imports no Numba. It imports the kernels' modules only when
such a function is compiled (``_import_kernels``): the entry point runs in every Numba
program of the environment, and should cost them next to nothing.
"""

import math

import numpy as np
from numba import njit, types
from numba.core import errors
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from numpy.exceptions import AxisError

from . import _api

_FLOATS = (types.float32, types.float64)


def _init():
    """Numba's ``numba_extensions`` hook (pyproject.toml): importing this module registered
    the overloads; nothing is left to do."""


def _import_kernels():
    """The CPU kernels' modules, imported into this module's globals, where the
    implementations below find them when they are compiled: called by every overload
    before it returns its implementation."""
    global losses, reduce, softmax, threading_layer_on_load, FOR_OUTPUTS, weight_at
    from .cpu import losses, reduce, softmax
    from .cpu.intrinsics import threading_layer_on_load
    from .cpu.partials import FOR_OUTPUTS, weight_at


def _absent(value):
    return value is None or isinstance(value, (types.Omitted, types.NoneType))


def _check_array(function, name, value, ndims=(1, 2), dtypes=_FLOATS):
    if not (isinstance(value, types.Array) and value.ndim in ndims and value.dtype in dtypes):
        kinds = " or ".join(str(d) for d in dtypes)
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise errors.TypingError(
            f"numba_lse.{function} inside @njit: {name} must be a {dims} {kinds} array, got {value}"
        )


def _check_axis(function, axis):
    if not (_absent(axis) or isinstance(axis, types.Integer)):
        raise errors.TypingError(
            f"numba_lse.{function} inside @njit: axis must be None or an integer, got {axis}"
        )


_UNKNOWN = object()


def _constant(value):
    """The compile-time value of an argument: a default (passed as itself or Omitted), a
    literal, or _UNKNOWN for a value only known at run time."""
    if isinstance(value, types.Omitted):
        return value.value
    if isinstance(value, types.Literal):
        return value.literal_value
    if isinstance(value, types.NoneType):
        return None
    if isinstance(value, types.Type):
        return _UNKNOWN
    return value


def _check_default(function, name, value, default):
    if _constant(value) is not default and _constant(value) != default:
        raise errors.TypingError(
            f"numba_lse.{function} inside @njit: {name} is not supported in compiled code "
            f"(leave it at its default, {default!r}), got {value}"
        )


# --- layout: every call becomes rows (outer, n) or (outer, n, inner), n the reduced axis ---


def _as_c(x, dtype):
    """x as a C-ordered array of dtype: x itself when it already is one."""


@overload(_as_c)
def _as_c_impl(x, dtype):
    if isinstance(x, (types.NoneType, types.Omitted)):
        return lambda x, dtype: None
    wanted = dtype.dtype if isinstance(dtype, types.DType) else dtype
    if x.dtype == wanted:
        return lambda x, dtype: np.ascontiguousarray(x)
    return lambda x, dtype: np.ascontiguousarray(x).astype(dtype)


def _shaped(w, shape):
    """w.reshape(shape), or None when w is None."""


@overload(_shaped)
def _shaped_impl(w, shape):
    if _absent(w):
        return lambda w, shape: None
    return lambda w, shape: w.reshape(shape)


def _split(shape, axis):
    """(outer, n, inner) of a C-ordered array of ``shape`` reduced over ``axis`` (None: all)."""


@overload(_split)
def _split_impl(shape, axis):
    if _absent(axis):
        def whole(shape, axis):
            size = 1
            for extent in shape:
                size *= extent
            return 1, size, 1
        return whole

    def one_axis(shape, axis):
        ndim = len(shape)
        if axis < -ndim or axis >= ndim:
            raise AxisError("axis " + str(axis) + " is out of bounds for array of dimension "
                            + str(ndim))
        ax = axis % ndim
        outer = 1
        for i in range(ax):
            outer *= shape[i]
        inner = 1
        for i in range(ax + 1, ndim):
            inner *= shape[i]
        return outer, shape[ax], inner
    return one_axis


def _check_same_shape(a, b):
    """ValueError unless the weights b (or None) have a's shape."""


@overload(_check_same_shape)
def _check_same_shape_impl(a, b):
    if _absent(b):
        return lambda a, b: None

    def impl(a, b):
        if b.shape != a.shape:
            raise ValueError("numba_lse.logsumexp inside @njit: b must have the shape of a")
    return impl


# --- logsumexp ----------------------------------------------------------------------------


@overload(_api.logsumexp)
def _logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    _import_kernels()
    _check_array("logsumexp", "a", a)
    _check_axis("logsumexp", axis)
    _check_default("logsumexp", "keepdims", keepdims, False)
    _check_default("logsumexp", "return_sign", return_sign, False)
    _check_default("logsumexp", "where", where, None)
    if not _absent(b):
        _check_array("logsumexp", "b", b, ndims=(a.ndim,))
        dtype = np.result_type(as_dtype(a.dtype), as_dtype(b.dtype))
    else:
        dtype = as_dtype(a.dtype)
    scalar = _absent(axis) or a.ndim == 1

    @_jit
    def lse(a, axis, b):
        threading_layer_on_load()
        outer, n, inner = _split(a.shape, axis)
        x = _as_c(a, dtype)
        _check_same_shape(a, b)
        w = _as_c(b, dtype)
        out = np.empty(outer * inner, dtype=dtype)
        if n == 0:
            out[:] = -np.inf  # the log of an empty sum, as SciPy (its sign, -1, is not returned)
            return out
        sign = np.empty(outer * inner, dtype=dtype)
        if inner == 1:
            reduce.lse_of_rows(x.reshape((outer, n)), _shaped(w, (outer, n)), out, sign)
        else:
            x3 = x.reshape((outer, n, inner))
            w3 = _shaped(w, (outer, n, inner))
            reduce.lse_columns(x3, w3, out.reshape((outer, inner)), sign.reshape((outer, inner)),
                               reduce.certified_for(x3, w3))
        for i in range(out.shape[0]):
            if sign[i] < 0:
                out[i] = np.nan  # the log of a negative sum, as the Python call without return_sign
        return out

    if scalar:
        return lambda a, axis=None, b=None, keepdims=False, return_sign=False, where=None: \
            lse(a, axis, b)[0]
    return lambda a, axis=None, b=None, keepdims=False, return_sign=False, where=None: \
        lse(a, axis, b)


# --- softmax family -----------------------------------------------------------------------


def _softmax_overload(name):
    def typer(x, axis=None, where=None):
        _import_kernels()
        op = getattr(softmax, name.upper())  # softmax.SOFTMAX, LOG_SOFTMAX, LOG1M_SOFTMAX
        _check_array(name, "x", x)
        _check_axis(name, axis)
        _check_default(name, "where", where, None)
        dtype = as_dtype(x.dtype)
        # As the Python call chooses (``cpu.softmax_family``), so that the bits are its own.
        keeps_exps = op != softmax.LOG_SOFTMAX and dtype == np.float64

        def impl(x, axis=None, where=None):
            threading_layer_on_load()
            outer, n, inner = _split(x.shape, axis)
            if n == 0:
                raise ValueError("numba_lse: cannot normalise over a zero-size axis")
            c = _as_c(x, dtype)
            out = np.empty(x.shape, dtype=dtype)
            # The op as an int64, not a literal: the kernels compiled for the Python call
            # (a literal op would compile specialised ones, whose vectorised loops may round
            # their last bit differently).
            kind = np.int64(op)
            if inner == 1:
                softmax.softmax_of_rows(kind, c.reshape((outer, n)), None, out.reshape((outer, n)))
            elif keeps_exps:
                softmax.softmax_keeping_exps(kind, c.reshape((outer, n, inner)), None,
                                             out.reshape((outer, n, inner)))
            else:
                softmax.softmax_inner(kind, c.reshape((outer, n, inner)), None,
                                      out.reshape((outer, n, inner)))
            return out

        return impl

    overload(getattr(_api, name))(typer)


_softmax_overload("softmax")
_softmax_overload("log_softmax")
_softmax_overload("log1m_softmax")


# --- losses -------------------------------------------------------------------------------


def _reduction_of(function, reduction):
    value = _constant(reduction)
    if value not in ("none", "sum", "mean"):
        raise errors.TypingError(
            f"numba_lse.{function} inside @njit: reduction must be a constant 'none', 'sum' or "
            f"'mean', got {reduction}"
        )
    return value


def _finisher(reduction, dtype):
    """The jitted last step (per-sample float64 losses, summed kept weight) -> result."""
    scalar = np.float32 if dtype == np.float32 else np.float64
    if reduction == "none":
        return _jit(lambda loss, kept_weight: loss.astype(dtype))
    if reduction == "sum":
        return _jit(lambda loss, kept_weight: scalar(np.sum(loss)))

    def mean(loss, kept_weight):
        # IEEE's division, as the Python call's and torch's: an all-ignored mean is 0 / 0 =
        # nan, weights that cancel leaving a loss +-inf. Written out: inlined, the division
        # takes the caller's error model, Python's by default, which raises for a 0.
        total = np.sum(loss)
        if kept_weight != 0:
            return scalar(total / kept_weight)
        if total == 0 or total != total:
            return scalar(np.nan)
        return scalar(math.copysign(np.inf, total) * math.copysign(1.0, kept_weight))

    return _jit(mean)


def _jit(function):
    """A helper of an implementation, compiled into the user's function."""
    return njit(inline="always", error_model="numpy")(function)


def _check_loss(function, x, target, weight, ignore_index):
    _check_array(function, "input", x, ndims=(2,))
    _check_array(function, "target", target, ndims=(1,), dtypes=types.integer_domain)
    if not _absent(weight):
        _check_array(function, "weight", weight, ndims=(1,))
    if not isinstance(ignore_index, (int, types.Integer, types.Omitted)):
        raise errors.TypingError(f"numba_lse.{function} inside @njit: ignore_index must be an integer")


def _check_targets(x, target, weight, ignore_index):
    """The Python call's value checks: batch sizes, weight size, class indices in range."""


def _length(w, default):
    """len(w), or ``default`` when w is None."""


@overload(_length)
def _length_impl(w, default):
    if _absent(w):
        return lambda w, default: default
    return lambda w, default: w.shape[0]


@overload(_check_targets)
def _check_targets_impl(x, target, weight, ignore_index):
    _import_kernels()
    def impl(x, target, weight, ignore_index):
        weight = _as_c(weight, np.float64)
        n, n_classes = x.shape
        if target.shape[0] != n:
            raise ValueError("Expected input batch_size (" + str(n)
                             + ") to match target batch_size (" + str(target.shape[0]) + ").")
        if _length(weight, n_classes) != n_classes:
            raise ValueError("weight tensor should be defined either for all " + str(n_classes)
                             + " classes or no classes but got weight tensor of shape: ["
                             + str(_length(weight, n_classes)) + "]")
        kept_weight = 0.0
        for t in target:
            if t != ignore_index:
                if t < 0 or t >= n_classes:
                    raise IndexError("Target " + str(t) + " is out of bounds.")
                kept_weight += np.float64(weight_at(weight, t))
        return kept_weight
    return impl


@overload(_api.nll_loss, prefer_literal=True)
def _nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    _import_kernels()
    _check_loss("nll_loss", log_probs, target, weight, ignore_index)
    finish = _finisher(_reduction_of("nll_loss", reduction), as_dtype(log_probs.dtype))

    def impl(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
        kept_weight = _check_targets(log_probs, target, weight, ignore_index)
        w = _as_c(weight, np.float64)
        loss = np.zeros(log_probs.shape[0])
        for i in range(log_probs.shape[0]):
            t = target[i]
            if t != ignore_index:
                loss[i] = -(np.float64(weight_at(w, t)) * np.float64(log_probs[i, t]))
        return finish(loss, kept_weight)

    return impl


@overload(_api.cross_entropy, prefer_literal=True)
def _cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                   label_smoothing=0.0, return_grad=False):
    _import_kernels()
    _check_loss("cross_entropy", logits, target, weight, ignore_index)
    reduction = _reduction_of("cross_entropy", reduction)
    if not isinstance(label_smoothing, (float, int, types.Float, types.Integer, types.Omitted)):
        raise errors.TypingError("numba_lse.cross_entropy inside @njit: label_smoothing must be a number")
    with_grad = _constant(return_grad)
    if with_grad is not True and with_grad is not False:
        raise errors.TypingError(
            "numba_lse.cross_entropy inside @njit: return_grad must be a constant True or False"
        )
    dtype = as_dtype(logits.dtype)
    finish = _finisher(reduction, dtype)
    mean = reduction == "mean"

    @_jit
    def losses_and_grad(logits, target, weight, ignore_index, label_smoothing):
        threading_layer_on_load()
        kept_weight = _check_targets(logits, target, weight, ignore_index)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError("label_smoothing must be between 0.0 and 1.0.")
        n, n_classes = logits.shape
        w = _as_c(weight, dtype)
        x = _as_c(logits, dtype)
        scale = 1.0
        if mean:
            scale = 1.0 / kept_weight if kept_weight != 0 else 0.0
        m, c, s = reduce.partials_of_rows(x, None, FOR_OUTPUTS)
        loss = np.empty((n, 1))
        grad = np.empty((n, n_classes), dtype=dtype) if with_grad else None
        losses.cross_entropy_samples(x, target.astype(np.int64).reshape((n, 1)),
                                     w, np.int64(ignore_index), np.float64(label_smoothing),
                                     m, c, s, scale, loss, grad, None)
        return loss.reshape(n), kept_weight, grad

    if with_grad:
        def impl(logits, target, weight=None, ignore_index=-100, reduction="mean",
                 label_smoothing=0.0, return_grad=False):
            loss, kept_weight, grad = losses_and_grad(logits, target, weight, ignore_index,
                                                      label_smoothing)
            return finish(loss, kept_weight), grad.reshape(logits.shape)
    else:
        def impl(logits, target, weight=None, ignore_index=-100, reduction="mean",
                 label_smoothing=0.0, return_grad=False):
            loss, kept_weight, _ = losses_and_grad(logits, target, weight, ignore_index,
                                                   label_smoothing)
            return finish(loss, kept_weight)
    return impl
