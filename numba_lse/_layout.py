"""The canonical (outer, n, inner) view that every kernel takes.

Reducing some axes of an array is, after a permutation of its axes, reducing the middle axis
of a 3-D array (outer, n, inner): n the product of the reduced axes, outer and inner the kept
axes before and after them. The permutation follows the array's memory order (axes sorted by
decreasing stride), so a transposed or Fortran-ordered array is walked the way it is stored,
unless another order gives a view where memory order would not. ``reshape`` then merges
neighbouring axes: a view whenever their strides allow, a copy only when no order does (e.g.
two reduced axes each sliced with a step).
"""

import functools
import math

import numpy as np


class _Memory:
    """What ``np.asarray`` reads an array from: its ``__array_interface__``, and the array
    whose memory that is (kept alive as the new array's base)."""

    __slots__ = ("__array_interface__", "base")


def kernel_input(array):
    """``array`` (or None), or where it is read-only a writeable alias of its memory.

    Numba compiles a kernel once per argument type, and an array's type includes its
    read-only flag: a broadcast mask or weights, a read-only view or buffer would each
    compile every kernel again (42 % of the test suite's compile time went to such copies).
    The kernels never write their inputs, so a read-only one is passed as an alias that
    types like the writeable array (1.7 us, only where the flag is off).
    """
    if array is None or array.flags.writeable:
        return array
    memory = _Memory()
    interface = dict(array.__array_interface__)
    interface["data"] = (interface["data"][0], False)
    memory.__array_interface__ = interface
    memory.base = array
    return np.asarray(memory)


def _mergeable(shape, strides, group):
    """Whether the axes ``group`` (in this order) reshape into one axis without a copy."""
    group = [ax for ax in group if shape[ax] != 1]
    return all(strides[a] == strides[b] * shape[b] for a, b in zip(group, group[1:]))


def _permutation(shape, strides, axes):
    """Axis order kept_outer + reduced + kept_inner, and where the reduced block starts.

    Preferred: the array's memory order, reduced axes where they lie. Then any split of the
    kept axes into an outer and an inner group that each merge without a copy (a view beats
    memory order). Failing both, reduced axes go innermost and ``reshape`` copies.
    """
    order = sorted(range(len(shape)), key=lambda ax: -abs(strides[ax]))
    reduced = [ax for ax in order if ax in axes]
    kept = [ax for ax in order if ax not in axes]
    positions = [i for i, ax in enumerate(order) if ax in axes]
    in_memory_order = len(kept) if not positions else positions[0]
    if _mergeable(shape, strides, reduced):
        splits = [in_memory_order] + [p for p in range(len(kept), -1, -1) if p != in_memory_order]
        for p in splits:
            if _mergeable(shape, strides, kept[:p]) and _mergeable(shape, strides, kept[p:]):
                return kept[:p] + reduced + kept[p:], p
    if positions and positions[-1] - positions[0] + 1 == len(positions):
        return order, in_memory_order
    return kept + reduced, len(kept)


def _is_c_order(shape, strides):
    """Whether strides are those of a C-contiguous array of this shape."""
    expected = strides[-1] if strides else 0
    if expected <= 0:
        return not shape
    for size, stride in zip(shape[::-1], strides[::-1]):
        if stride != expected and size != 1:
            return False
        expected = stride * size if size != 1 else expected
    return True


def _is_block(axes):
    """Whether the sorted axes are consecutive, e.g. (1, 2)."""
    return not axes or axes[-1] - axes[0] + 1 == len(axes)


class CanonicalView:
    """How an array of ``shape``/``strides`` with ``axes`` reduced maps onto (outer, n, inner)."""

    def __init__(self, shape, strides, axes):
        self.shape = tuple(shape)
        if _is_c_order(self.shape, strides) and _is_block(axes):
            # The common case, decided without sorting: memory order is the axis order.
            order, start = list(range(len(self.shape))), (min(axes) if axes else len(self.shape))
        else:
            order, start = _permutation(self.shape, strides, set(axes))
        stop = start + len(axes)
        self.perm = tuple(order)
        self.kept_perm = tuple(order[:start] + order[stop:])
        self.outer = math.prod(shape[ax] for ax in order[:start])
        self.n = math.prod(shape[ax] for ax in order[start:stop])
        self.inner = math.prod(shape[ax] for ax in order[stop:])
        # Worked out once here (the view is cached): a call on a small array costs little
        # more than its kernel. None where no transpose is needed.
        identity = tuple(range(len(order)))
        self._perm = None if self.perm == identity else self.perm
        self._full_shape = [self.shape[ax] for ax in self.perm]
        self._back = None if self._perm is None else tuple(int(i) for i in np.argsort(self.perm))
        self._kept_shape = [self.shape[ax] for ax in self.kept_perm]
        kept_back = tuple(int(i) for i in np.argsort(self.kept_perm))
        self._kept_back = None if kept_back == tuple(range(len(kept_back))) else kept_back
        kept = sorted(self.kept_perm)
        kept_order = tuple(kept.index(ax) for ax in self.kept_perm)
        self._kept_order = None if kept_order == tuple(range(len(kept_order))) else kept_order

    def view(self, array):
        """``array`` (of this shape) as (outer, n, inner): a view when strides allow, and a
        writeable one (``kernel_input``), as the kernels take their inputs."""
        array = kernel_input(array)
        if self._perm is not None:
            array = array.transpose(self._perm)
        return array.reshape(self.outer, self.n, self.inner)

    def rows(self, array):
        """``view(array)[:, :, 0]`` where inner is 1: (outer, n)."""
        array = kernel_input(array)
        if self._perm is not None:
            array = array.transpose(self._perm)
        return array.reshape(self.outer, self.n)

    def reduced(self, out):
        """An (outer, inner) result as an array of the kept axes, in their original order."""
        out = out.reshape(self._kept_shape)
        return out if self._kept_back is None else out.transpose(self._kept_back)

    def kept_view(self, array):
        """An array shaped like the kept axes (original order) as (outer, inner), as
        ``view`` gives it."""
        array = kernel_input(array)
        if self._kept_order is not None:
            array = array.transpose(self._kept_order)
        return array.reshape(self.outer, self.inner)

    def full(self, out):
        """An (outer, n, inner) result as an array of the original shape and axis order."""
        if self._back is None:
            return out.reshape(self.shape)
        return out.reshape(self._full_shape).transpose(self._back)


@functools.lru_cache(maxsize=512)
def canonical_view(shape, strides, axes):
    """The CanonicalView of (shape, strides, axes), built once per distinct triple.

    Repeated calls on same-shaped arrays (a training loop) then cost a dictionary lookup.
    """
    return CanonicalView(shape, strides, axes)
