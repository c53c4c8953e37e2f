"""Large outputs of the CPU kernels, whose memory is kept for the next call once released.

A fresh NumPy array of many megabytes is fresh memory from the operating system: the kernel
that first writes it pays a page fault and the system's zeroing of every page, as much time
as the kernel itself takes to read and write it (400 MB of float32 softmax on rows of 1e5:
108 ms a call, of which 32 ms went to the fresh output; JAX keeps its buffers and pays
this once). So an output of CACHE_FROM bytes or more is made on a block of memory that goes
back to a cache when the array and every view of it are released, and the next output of the
same size in bytes takes it: a loop of same-sized calls pays the pages once. The cache holds
at most ``set_output_cache``'s limit (default 1 GiB), the longest-kept blocks dropped first;
a block is reused only once nothing refers to it, so an array a caller keeps is never
written again. Such an output is an ordinary writeable C-ordered array, whose ``base`` is the
owner of its block (``flags.owndata`` is False, as for any view). Every output of CACHE_FROM
bytes or more, cached or not, starts a 64-byte cache line (``_aligned_block``).
"""

import math
import threading

import numpy as np

CACHE_FROM = 1 << 20  # bytes: smaller outputs are plain np.empty (the cache costs ~3 us)
DEFAULT_LIMIT = 1 << 30
_FLOAT64 = np.dtype(np.float64)

_lock = threading.RLock()  # reentrant: a block can come back (a __del__) while it is held
_limit = DEFAULT_LIMIT
_free = []  # released blocks (uint8 arrays), the longest-kept first
_cached = 0  # their bytes


class _Owner:
    """What an output array is made from (its ``base``): it holds the block and gives it back
    to the cache when the last array that refers to it is released."""

    __slots__ = ("__array_interface__", "block")

    def __del__(self):
        _give_back(self.block)


def empty(shape, dtype=_FLOAT64):
    """``np.empty(shape, dtype)`` (shape an int or a tuple, dtype a NumPy dtype), on a
    released block of the same size if one is cached."""
    if type(shape) is not tuple:
        shape = (shape,)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < CACHE_FROM:
        return np.empty(shape, dtype)
    block = _take(nbytes) if nbytes <= _limit else None
    if block is None:
        block = _aligned_block(nbytes)
        if _limit < nbytes:  # not for the cache
            return block.view(dtype).reshape(shape)
    owner = _Owner()
    owner.block = block
    owner.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                 "data": (block.__array_interface__["data"][0], False)}
    return np.asarray(owner)


def _aligned_block(nbytes):
    """Fresh memory of ``nbytes`` bytes (uint8) starting a 64-byte cache line, so that rows
    whose sizes are multiples of 64 bytes are whole lines, which the kernels may write by
    streaming stores (``cpu.reduce.transpose_back``)."""
    memory = np.empty(nbytes + 63, np.uint8)
    skip = -memory.__array_interface__["data"][0] % 64
    return memory[skip:skip + nbytes]


def _take(nbytes):
    """A cached block of ``nbytes`` bytes (the last released), removed from the cache; or None."""
    global _cached
    with _lock:
        for i in range(len(_free) - 1, -1, -1):
            if _free[i].nbytes == nbytes:
                _cached -= nbytes
                return _free.pop(i)
    return None


def _give_back(block):
    global _cached
    try:
        with _lock:
            if block.nbytes > _limit:
                return
            _free.append(block)
            _cached += block.nbytes
            _evict()
    except Exception:  # noqa: BLE001  (at interpreter exit the module may be gone: drop it)
        pass


def _evict():
    """Drop the longest-kept blocks until the cache is within its limit (lock held)."""
    global _cached
    while _cached > _limit:
        _cached -= _free.pop(0).nbytes


def set_output_cache(max_bytes):
    """Set how many bytes of released outputs numba_lse keeps for reuse; return the old limit.

    Outputs of 1 MiB or more (softmax, log_softmax and log1m_softmax arrays, cross-entropy
    gradients, ...) are made on memory that goes back to a cache when the array and every
    view of it are released, and the next output of the same size reuses it: fresh memory
    costs a page fault and the system's zeroing of each page, which in a loop of same-sized
    calls would be paid on every call (19-45 % of a large softmax on the machines measured).
    The cache holds at most ``max_bytes`` (default 1 GiB), the longest-kept blocks dropped
    first; 0 turns it off and frees what it holds. Memory still referred to by any array is
    never reused.

    Parameters
    ----------
    max_bytes : int
        The limit, >= 0.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import numba_lse as nl
    >>> previous = nl.set_output_cache(0)  # off: every output is fresh memory
    >>> nl.set_output_cache(previous)
    0
    """
    global _limit
    if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an integer, got {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    with _lock:
        previous, _limit = _limit, int(max_bytes)
        _evict()
    return previous


def cached_bytes():
    """The bytes of released outputs the cache holds now (for tests and the benchmark)."""
    return _cached
