"""What bounds the benchmark cases that miss the 1.5x target: floors measured beside them.

Each figure is a median of interleaved repetitions, with the caches warm (the data read by a
call moments before: each implementation's own copy, which all fit in a large L3) and cold
(a 640 MB write before each call pushes the data out to memory); ratios only within one
run: the machine is a noisy VM.

1. nll_loss of 1e6x10 (float32, float64): numba_lse, JAX, and a bare gather, about the
   floor of any implementation: one pass, no class-index check, a plain float64 sum,
   each thread one contiguous share of the rows (the hardware prefetcher's best case).
2. float32 logsumexp (the 1e7 vector, 4096x4096): numba_lse against JAX; and the loop that
   bounds numba_lse's time, its exp-and-sum over 4096 float32 entries in L1
   (``partials.block_sum``), in ns per entry, on one thread and on two at once (two Python
   threads, each its own copy).

Run: python perf/floors.py   (about a minute; JAX optional)
"""

import random
import threading
import time

import numpy as np
from numba import njit, prange

import numba_lse as nl
from numba_lse.cpu.partials import block_sum

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
except ImportError:
    jax = None

REPS = 15


@njit(parallel=True)
def _evict(junk):
    for i in prange(junk.size):
        junk[i] += 1.0


@njit(parallel=True)
def bare_gather(x, target):
    """sum_i x[i, target[i]], in float64: no check, no compensation; prange's static
    schedule gives each thread one contiguous share of the rows."""
    total = 0.0
    for i in prange(x.shape[0]):
        total += np.float64(x[i, np.uint64(target[i])])
    return total


def medians(calls, cold, junk):
    """{name: median ms} of ``calls``, repetitions interleaved in random orders."""
    times = {name: [] for name in calls}
    order = random.Random(0)
    for _ in range(REPS):
        for name, call in order.sample(list(calls.items()), len(calls)):
            if cold:
                _evict(junk)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def report(title, calls, junk, ratio_of=None):
    for call in calls.values():
        call()  # compile, warm up
    for cold in (False, True):
        ms = medians(calls, cold, junk)
        line = "  ".join(f"{name} {value:.3g} ms" for name, value in ms.items())
        if ratio_of and all(name in ms for name in ratio_of):
            peer, ours = ratio_of
            line += f"  | ratio {peer}/{ours} {ms[peer] / ms[ours]:.2f}"
        print(f"{title:34s} {'cold' if cold else 'warm'}: {line}", flush=True)


@njit(nogil=True)
def _block_sums(x, times):
    total = 0.0
    for _ in range(times):
        total += block_sum(x, 5.0, None)
    return total


def exp_loop_rate(threads, times=20000):
    """ns per entry of ``block_sum`` over 4096 float32 entries, per thread, with ``threads``
    threads running it at once."""
    rows = [np.random.default_rng(k).standard_normal(4096).astype(np.float32)
            for k in range(threads)]
    _block_sums(rows[0], 10)
    workers = [threading.Thread(target=_block_sums, args=(row, times)) for row in rows]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - start) / times / 4096 * 1e9


def main():
    rng = np.random.default_rng(0)
    junk = np.ones(80_000_000)
    nl.set_output_cache(1 << 30)
    print("1. nll_loss of 1e6x10: numba_lse, JAX, and the bare gather (the floor)")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((10**6, 10)).astype(dtype)
        target = rng.integers(0, 10, 10**6)
        calls = {"numba_lse": lambda: nl.nll_loss(x, target),
                 "bare gather": lambda: bare_gather(x, target)}
        if jax is not None:
            xj, tj = jnp.asarray(x), jnp.asarray(target)
            gather = jax.jit(lambda a, t: -jnp.mean(jnp.take_along_axis(a, t[:, None], axis=-1)))
            calls["jax"] = lambda: gather(xj, tj).block_until_ready()
        report(f"nll_loss 1e6x10 {np.dtype(dtype).name}", calls, junk, ("jax", "numba_lse"))
    print("2. float32 logsumexp: numba_lse against JAX, and its exp-and-sum loop")
    for shape, axis in (((10**7,), None), ((4096, 4096), -1)):
        x = rng.standard_normal(shape).astype(np.float32)
        calls = {"numba_lse": lambda: nl.logsumexp(x, axis=axis)}
        if jax is not None:
            xj = jnp.asarray(x)
            lse = jax.jit(lambda a: jax.nn.logsumexp(a, axis=axis))
            calls["jax"] = lambda: lse(xj).block_until_ready()
        name = "x".join(str(n) for n in shape)
        report(f"logsumexp {name} float32", calls, junk, ("jax", "numba_lse"))
    one, two = exp_loop_rate(1), exp_loop_rate(2)
    print(f"exp-and-sum loop (block_sum, float32 in L1): one thread {one:.3f} ns per entry; "
          f"two at once {two:.3f} ns per entry each ({two / one:.2f}x)")


if __name__ == "__main__":
    main()
