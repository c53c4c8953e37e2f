"""LogSumExpAccumulator: the log-sum-exp of data that arrives in pieces."""

import numpy as np

from . import _dispatch, _validate


class LogSumExpAccumulator:
    """The log-sum-exp of data that arrives in chunks, without holding the data.

    Each :meth:`update` reduces a chunk to its partial (max, ties at the max, sum of the
    rest, in float64: O(1) memory per kept index) with the same kernels as
    :func:`logsumexp`; :meth:`merge` combines accumulators (chunks read by several workers
    or processes) with the same merge rule; :meth:`result` gives what :func:`logsumexp`
    of the concatenated chunks gives, within the same ulp bound, whatever the chunking and
    the order of the merges. It can be pickled, to travel between processes.

    With ``axis=None`` every chunk is reduced whole and the result is a scalar. With an
    integer axis (or tuple), every chunk is reduced over those axes and the chunks are
    taken as concatenated along them: chunks of shape (k_i, 5) with ``axis=0`` give a
    result of shape (5,). The first update fixes the axis and the kept shape.

    Examples
    --------
    >>> import numpy as np
    >>> import numba_lse as nl
    >>> acc = nl.LogSumExpAccumulator()
    >>> for chunk in np.array_split(np.arange(10.0), 3):
    ...     _ = acc.update(chunk)
    >>> float(acc.result()), float(nl.logsumexp(np.arange(10.0)))
    (9.45862974442671, 9.45862974442671)
    >>> left = nl.LogSumExpAccumulator().update(np.ones((2, 3)), axis=0)
    >>> right = nl.LogSumExpAccumulator().update(np.zeros((4, 3)), axis=0)
    >>> left.merge(right).result()
    array([2.24459189, 2.24459189, 2.24459189])
    """

    # Whether every chunk so far was empty along the reduced axes: the result is then that
    # of a zero-size reduction, -inf with sign -1 (SciPy's), not the sign 0 of entries that
    # are all -inf. (A class attribute too, for states pickled before it was kept.)
    _empty = False

    def __init__(self):
        self._partial = None  # (m, c, s): float64 arrays of the kept shape
        self._axis = None
        self._dtype = None
        self._empty = True

    def update(self, x, axis=None, b=None):
        """Fold the chunk ``x`` (weights ``b``, as :func:`logsumexp`'s) in; returns self.

        Raises as :func:`logsumexp` does (TypeError for a dtype it cannot compute in, and
        for complex input, which the accumulator does not support; AxisError for a bad
        axis), and ValueError when the chunk's kept shape or the axis differs from the
        first chunk's. A chunk that raises leaves the accumulator unchanged.
        """
        a, w, axes, dtype = _validate.logsumexp_args(x, b, axis)
        if dtype.kind == "c":
            raise TypeError(f"unsupported dtype {dtype.name}: the accumulator is real only")
        kept = tuple(size for ax, size in enumerate(a.shape) if ax not in axes)
        axis = None if axis is None else axes  # -1 and 1 are one axis of a 2-d chunk
        if self._partial is not None:
            if axis != self._axis:
                raise ValueError(f"axis={axis!r} differs from the first update's axis={self._axis!r}")
            if kept != self._partial[0].shape:
                raise ValueError(
                    f"the chunk of shape {a.shape} reduces to shape {kept} over axis={axis!r}, "
                    f"but the accumulator holds shape {self._partial[0].shape}"
                )
        partial = _dispatch.cpu().lse_partials(a, w, axes)
        self._fold(partial, axis, dtype)
        self._empty = self._empty and not all(a.shape[ax] for ax in axes)
        return self

    def merge(self, other):
        """Fold another accumulator in (``other`` is unchanged); returns self."""
        if not isinstance(other, LogSumExpAccumulator):
            raise TypeError(f"can only merge a LogSumExpAccumulator, got {type(other).__name__}")
        if other._partial is None:
            return self
        if self._partial is not None:
            if other._axis != self._axis:
                raise ValueError(f"cannot merge accumulators over axis={other._axis!r} and axis={self._axis!r}")
            if other._partial[0].shape != self._partial[0].shape:
                raise ValueError(
                    f"cannot merge accumulators of shapes {other._partial[0].shape} and "
                    f"{self._partial[0].shape}"
                )
        self._fold(other._partial, other._axis, other._dtype)
        self._empty = self._empty and other._empty
        return self

    def result(self, return_sign=False):
        """The log-sum-exp so far (and its sign with ``return_sign``), as :func:`logsumexp`.

        Before any update: -inf (float64), the log-sum-exp of nothing.
        """
        if self._partial is None:
            out, sign = np.float64(-np.inf), np.float64(-1.0)
            return (out, sign) if return_sign else out
        out, sign = _dispatch.cpu().lse_from_partials(*self._partial)
        if not return_sign:
            out[sign < 0] = np.nan
        if self._empty:
            sign[...] = -1.0
        out, sign = out.astype(self._dtype), sign.astype(self._dtype)
        out, sign = (v[()] if v.ndim == 0 else v for v in (out, sign))
        return (out, sign) if return_sign else out

    def _fold(self, partial, axis, dtype):
        if self._partial is None:
            self._partial = tuple(np.array(p, dtype=np.float64) for p in partial)
            self._axis = axis
            self._dtype = dtype
            return
        stacked = [np.stack([mine, theirs]) for mine, theirs in zip(self._partial, partial)]
        self._partial = _dispatch.cpu().merge_partials(*stacked, (0,))
        self._dtype = np.result_type(self._dtype, dtype)

    def __repr__(self):
        if self._partial is None:
            return "LogSumExpAccumulator()"
        return (f"LogSumExpAccumulator(axis={self._axis!r}, shape={self._partial[0].shape}, "
                f"dtype={self._dtype.name})")
