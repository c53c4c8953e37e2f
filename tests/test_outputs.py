"""The output cache (``numba_lse._outputs``, ``set_output_cache``): outputs of 1 MiB or more
reuse the memory of released outputs of the same size. What must hold: memory still referred
to is never reused, a reused block is entirely overwritten (poisoned blocks, every op and
path), the results are the same bits as with fresh memory, the limit is kept and checked."""

import threading

import numpy as np
import pytest
from scipy import special

import numba_lse as nl
from numba_lse import _outputs
from numba_lse.cpu.reduce import STREAM_FROM

BIG = (1024, 1024)  # 8 MiB of float64, 4 MiB of float32: both cached


@pytest.fixture
def cache():
    """An empty cache of 1 GiB for the test; the caller's limit back afterwards."""
    previous = nl.set_output_cache(0)
    nl.set_output_cache(1 << 30)
    yield
    nl.set_output_cache(0)
    nl.set_output_cache(previous)


def address(array):
    return array.__array_interface__["data"][0]


def on_cached_block(array):
    """Whether the array's memory is a block of the cache (its base chain ends at an owner)."""
    while isinstance(array, np.ndarray):
        array = array.base
    return isinstance(array, _outputs._Owner)


def fresh(function, *args, **kwargs):
    """function(*args, **kwargs) with the cache off: every output fresh memory."""
    limit = nl.set_output_cache(0)
    try:
        return function(*args, **kwargs)
    finally:
        nl.set_output_cache(limit)


def poison_cache(arrays):
    """Put released blocks of the sizes of ``arrays``, full of nan, in the cache; return
    their addresses."""
    blocks = [_outputs.empty(a.shape, a.dtype) for a in arrays]
    for block in blocks:
        block.fill(np.nan)
    return {address(block) for block in blocks}


def test_released_output_is_reused(cache):
    x = np.random.default_rng(0).standard_normal(BIG)
    first = nl.softmax(x, axis=1)
    where = address(first)
    del first
    assert _outputs.cached_bytes() == x.nbytes
    second = nl.softmax(x, axis=1)
    assert address(second) == where
    assert _outputs.cached_bytes() == 0
    np.testing.assert_array_equal(second, fresh(nl.softmax, x, axis=1))
    np.testing.assert_allclose(second, special.softmax(x, axis=1), rtol=4 * np.finfo(np.float64).eps, atol=0)


def test_output_in_use_is_never_reused(cache):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(BIG), rng.standard_normal(BIG)
    kept = nl.log_softmax(x, axis=1)[::2]  # only a view of the output is left
    expected = kept.copy()
    other = nl.log_softmax(y, axis=1)
    assert address(other) != address(kept)
    np.testing.assert_array_equal(kept, expected)
    del other
    again = nl.log_softmax(y, axis=1)
    assert address(again) != address(kept)
    np.testing.assert_array_equal(kept, expected)


def test_output_is_an_ordinary_array(cache):
    out = nl.softmax(np.zeros(BIG, np.float32), axis=0)
    assert out.shape == BIG and out.dtype == np.float32
    assert out.flags.writeable and out.flags.c_contiguous and out.flags.aligned
    assert address(out) % 64 == 0  # a cache line's start: rows of 16 floats are whole lines
    out[0, 0] = 2.0
    assert out[0, 0] == 2.0


def _calls():
    """Every kind of large output, on adversarial rows: masked entries (written 0 / -inf),
    all -inf rows, +inf, dominant entries, axis 0 and transposed (the strided paths)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(BIG) * 30
    x[3] = -np.inf
    x[5, 7] = np.inf
    x[9, 0] = 800.0
    mask = rng.random(BIG) < 0.7
    short = rng.standard_normal((BIG[0] * BIG[1] // 8, 8))
    # An output written by streaming stores (cpu.reduce.STREAM_FROM), rows of 10 floats.
    streamed = (rng.standard_normal((STREAM_FROM // 40 + 5, 10)) * 30).astype(np.float32)
    streamed[7, 3] = 800.0
    target = rng.integers(0, BIG[1], BIG[0])
    long_target = rng.integers(0, 8, short.shape[0])
    for op in (nl.softmax, nl.log_softmax, nl.log1m_softmax):
        yield op.__name__ + "-rows", lambda op=op: op(x, axis=1)
        yield op.__name__ + "-where", lambda op=op: op(x, axis=1, where=mask)
        yield op.__name__ + "-axis0", lambda op=op: op(x, axis=0)
        yield op.__name__ + "-transposed", lambda op=op: op(x.T, axis=1)
        yield op.__name__ + "-short", lambda op=op: op(short, axis=1)
        yield op.__name__ + "-float32", lambda op=op: op(x.astype(np.float32), axis=1)
        yield op.__name__ + "-streamed", lambda op=op: op(streamed, axis=1)
    yield "logsumexp-short", lambda: nl.logsumexp(short, axis=1, return_sign=True)
    yield "cross_entropy-grad", lambda: nl.cross_entropy(x, target, return_grad=True)[1]
    yield "cross_entropy-none", lambda: nl.cross_entropy(short, long_target, reduction="none")
    yield "nll_loss-none", lambda: nl.nll_loss(short, long_target, reduction="none")


@pytest.mark.parametrize("name,call", list(_calls()), ids=[n for n, _ in _calls()])
def test_reused_block_is_overwritten(cache, name, call):
    expected = fresh(call)
    expected = expected if isinstance(expected, tuple) else (expected,)
    poisoned = poison_cache(expected)
    result = call()
    result = result if isinstance(result, tuple) else (result,)
    assert {address(out) for out in result} == poisoned  # written on the poisoned blocks
    for got, want in zip(result, expected):
        np.testing.assert_array_equal(got, want)  # the same bits, nan where nan


def test_off_and_limits(cache):
    x = np.random.default_rng(3).standard_normal(BIG)
    assert nl.set_output_cache(0) == 1 << 30
    out = nl.softmax(x, axis=1)
    assert not on_cached_block(out)
    del out
    assert _outputs.cached_bytes() == 0
    assert nl.set_output_cache(x.nbytes - 1) == 0
    out = nl.softmax(x, axis=1)  # larger than the limit: plain memory, never cached
    assert not on_cached_block(out) and address(out) % 64 == 0
    del out
    assert _outputs.cached_bytes() == 0
    nl.set_output_cache(3 * x.nbytes)
    outs = [nl.softmax(x, axis=1) for _ in range(4)]
    del outs
    assert _outputs.cached_bytes() == 3 * x.nbytes  # the longest-kept one dropped
    nl.set_output_cache(x.nbytes)
    assert _outputs.cached_bytes() == x.nbytes
    assert on_cached_block(nl.softmax(x, axis=1))
    assert not on_cached_block(nl.softmax(np.zeros((10, 10)), axis=1))  # under 1 MiB


@pytest.mark.parametrize("value,error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("1", TypeError), (None, TypeError)])
def test_bad_limit(value, error):
    previous = nl.set_output_cache(0)
    try:
        with pytest.raises(error, match=r"max_bytes must be"):
            nl.set_output_cache(value)
    finally:
        nl.set_output_cache(previous)


def test_concurrent_calls(cache):
    """Threads that release and take blocks at once each get their own, right results."""
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal(BIG) for _ in range(4)]
    expected = [fresh(nl.softmax, x, axis=1) for x in inputs]
    failures = []

    def work(i):
        for _ in range(6):
            out = nl.softmax(inputs[i], axis=1)
            if not np.array_equal(out, expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
