"""Picks the backend of the NumPy-shaped path from the type of the caller's arrays.

NumPy arrays (and anything ``numpy.asarray`` accepts: lists, scalars) go to the CPU
backend. Dask arrays (``_dask``) and GPU arrays (``_gpu``) are routed by ``_api`` before
validation, since validating them must not read their data; a GPU array reaching this
point is one the GPU path does not cover yet (the losses), and gets a clear error.
"""

from . import _gpu, cpu


def backend_for(*arrays):
    """The backend module that computes on ``arrays`` (None entries are ignored)."""
    for array in arrays:
        if _gpu.is_gpu(array):
            raise TypeError(
                f"{type(array).__module__}.{type(array).__name__} is a GPU array; the losses "
                f"compute on the CPU only so far: pass NumPy arrays (e.g. via .get() or .cpu())"
            )
    return cpu
