"""logsumexp of a lazily generated Dask array larger than this machine's memory.

    python perf/dask_scale.py              # 32 GiB of float64 in 128 MiB chunks
    python perf/dask_scale.py --gib 4      # a quicker run

Each chunk is generated (a counter-based random stream, so nothing is stored), reduced to its
(max, ties, sum) partial by numba_lse's CPU kernel, and the partials are merged in a tree; at
no time does more than a few chunks' worth of data exist. Printed: wall time, throughput,
peak RSS as a fraction of the array, and two references measured in the same run:

- the same graph with ``x.sum()`` in place of the log-sum-exp (what generating the data and
  scheduling the graph cost by themselves), and
- numba_lse.logsumexp on one in-memory chunk (the single-machine kernel's throughput).

The result is checked against the merge, in float64, of SciPy's logsumexp of every chunk
(computed chunk by chunk in a second pass).
"""

import argparse
import os
import resource
import sys
import time

import numpy as np

import numba_lse as nl

CHUNK_BYTES = 128 * 2**20


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=32.0, help="array size in GiB (default 32)")
    parser.add_argument("--no-check", action="store_true", help="skip the SciPy check pass")
    args = parser.parse_args(argv)

    import dask
    import dask.array as da

    n_chunk = CHUNK_BYTES // 8
    n = int(args.gib * 2**30) // 8 // n_chunk * n_chunk
    x = da.random.default_rng(0).standard_normal(size=(n,), chunks=n_chunk)
    total_bytes = n * 8
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"array: {total_bytes / 2**30:.1f} GiB float64 in {x.numblocks[0]} chunks of "
          f"{CHUNK_BYTES / 2**20:.0f} MiB; machine memory {memory / 2**30:.1f} GiB, "
          f"{os.cpu_count()} cores; dask {dask.__version__}, threaded scheduler")

    chunk = np.random.default_rng(1).standard_normal(n_chunk)
    nl.logsumexp(chunk)  # compile (or load from the cache) outside the timings
    kernel_times = [timed(lambda: nl.logsumexp(chunk))[1] for _ in range(7)]
    kernel_gbs = CHUNK_BYTES / np.median(kernel_times) / 1e9
    rss_before = peak_rss_bytes()

    total, sum_seconds = timed(lambda: x.sum().compute())
    lse, lse_seconds = timed(lambda: nl.logsumexp(x).compute())
    peak = peak_rss_bytes()

    print(f"numba_lse.logsumexp(dask array).compute(): {lse_seconds:.1f} s, "
          f"{total_bytes / lse_seconds / 1e9:.2f} GB/s, result {float(lse)!r}")
    print(f"same graph with x.sum() instead:           {sum_seconds:.1f} s "
          f"({total_bytes / sum_seconds / 1e9:.2f} GB/s): logsumexp / sum time = "
          f"{lse_seconds / sum_seconds:.2f}")
    print(f"numba_lse.logsumexp on one in-memory chunk: {kernel_gbs:.2f} GB/s (median of 7)")
    print(f"peak RSS: {peak / 2**30:.2f} GiB ({peak / total_bytes:.1%} of the array; "
          f"{rss_before / 2**30:.2f} GiB before the Dask runs)")

    if not args.no_check:
        import scipy.special

        def chunk_lse(block):
            return np.array([scipy.special.logsumexp(block)])

        per_chunk = x.map_blocks(chunk_lse, chunks=(1,), dtype=np.float64).compute()
        reference = scipy.special.logsumexp(per_chunk)
        error = abs(float(lse) - reference) / abs(reference)
        print(f"check: SciPy chunk by chunk, merged: {reference!r}; relative difference "
              f"{error:.1e}")
        if error > 1e-13:
            sys.exit("mismatch")


if __name__ == "__main__":
    main()
