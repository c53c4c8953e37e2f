"""Picks the backend from the type of the caller's arrays.

The only module that knows which array libraries exist. Today: NumPy arrays (and anything
``numpy.asarray`` accepts: lists, scalars) go to the CPU backend. Arrays on a GPU
(``__cuda_array_interface__``) get a clear error until the CUDA backend lands.
"""

from . import cpu


def backend_for(*arrays):
    """The backend module that computes on ``arrays`` (None entries are ignored)."""
    for array in arrays:
        if array is not None and hasattr(array, "__cuda_array_interface__"):
            raise TypeError(
                f"{type(array).__module__}.{type(array).__name__} is a GPU array; this version of "
                f"numba_lse computes on the CPU only: pass a NumPy array (e.g. via .get() or .cpu())"
            )
    return cpu
