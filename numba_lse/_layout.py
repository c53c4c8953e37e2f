"""The canonical (outer, n, inner) view that every kernel takes.

Reducing some axes of an array is, after a permutation of its axes, reducing the middle axis
of a 3-D array (outer, n, inner): n the product of the reduced axes, outer and inner the kept
axes before and after them. The permutation follows the array's memory order (axes sorted by
decreasing stride), so a transposed or Fortran-ordered array is walked the way it is stored;
then ``reshape`` merges neighbouring axes, which is a view whenever their strides allow and a
copy only when they do not (e.g. two axes each sliced with a step, or reduced axes that are
not neighbours in memory).
"""

import math

import numpy as np


class CanonicalView:
    """How an array of ``shape``/``strides`` with ``axes`` reduced maps onto (outer, n, inner)."""

    def __init__(self, shape, strides, axes):
        self.shape = tuple(shape)
        reduced = set(axes)
        order = sorted(range(len(shape)), key=lambda ax: -abs(strides[ax]))
        positions = [i for i, ax in enumerate(order) if ax in reduced]
        if positions and positions[-1] - positions[0] + 1 != len(positions):
            # The reduced axes are not neighbours in memory: put them innermost.
            order = [ax for ax in order if ax not in reduced] + [ax for ax in order if ax in reduced]
            positions = list(range(len(order) - len(positions), len(order)))
        start = positions[0] if positions else len(order)
        stop = start + len(positions)
        self.perm = tuple(order)
        self.kept_perm = tuple(order[:start] + order[stop:])
        self.outer = math.prod(shape[ax] for ax in order[:start])
        self.n = math.prod(shape[ax] for ax in order[start:stop])
        self.inner = math.prod(shape[ax] for ax in order[stop:])

    def view(self, array):
        """``array`` (of this shape) as (outer, n, inner): a view when strides allow."""
        return array.transpose(self.perm).reshape(self.outer, self.n, self.inner)

    def reduced(self, out):
        """An (outer, inner) result as an array of the kept axes, in their original order."""
        kept_shape = [self.shape[ax] for ax in self.kept_perm]
        back = np.argsort(self.kept_perm)
        return out.reshape(kept_shape).transpose(back)

    def full(self, out):
        """An (outer, n, inner) result as an array of the original shape and axis order."""
        return out.reshape([self.shape[ax] for ax in self.perm]).transpose(np.argsort(self.perm))
