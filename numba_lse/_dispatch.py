"""Picks the backend of the NumPy-shaped path from the type of the caller's arrays.

NumPy arrays (and anything ``numpy.asarray`` accepts: lists, scalars) go to the CPU
backend. Dask arrays (``_dask``) and GPU arrays (``_gpu``) are routed by ``_api`` before
validation, since validating them must not read their data.
"""

from . import cpu


def backend_for(*arrays):
    """The backend module that computes on ``arrays`` (None entries are ignored)."""
    return cpu
