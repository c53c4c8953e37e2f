"""Picks the backend of the NumPy-shaped path from the type of the caller's arrays.

NumPy arrays (and anything ``numpy.asarray`` accepts: lists, scalars) go to the CPU
backend. Dask arrays (``_dask``) and GPU arrays (``_gpu``) are routed by ``_api`` before
validation, since validating them must not read their data.

The CPU backend, and Numba with it, is imported at the first call that needs it, not by
``import numba_lse`` (SPEC 1's lazy loading: importing Numba takes 0.2-0.4 s, more than the
rest of the package's import): a script that imports numba_lse and never calls it, a Dask
client that only builds graphs, pays for neither.
"""

_cpu = None


def cpu():
    """The CPU backend module (``numba_lse.cpu``), imported at its first use."""
    return _cpu or _import_cpu()


def _import_cpu():
    global _cpu
    # The import statement, not a look in sys.modules: a thread that arrives while another
    # imports the backend waits for the whole module here.
    from . import cpu as backend

    _cpu = backend
    return backend


def backend_for(*arrays):
    """The backend module that computes on ``arrays`` (None entries are ignored)."""
    return _cpu or _import_cpu()
