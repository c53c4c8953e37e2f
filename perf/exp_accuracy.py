"""Exhaustive error of numba_lse's exp on every float32 input in its domain [-745.2, 0].

float32 data is computed in float64, so this checks the float64 exp on each of the ~1.14e9
float32 values whose exp is not 0, against long double (80-bit) exp, and reports the max
error in float64 ulps and the number of results whose rounding to float32 differs from the
correctly rounded float32 exp.  Run: python perf/exp_accuracy.py  (about a minute per core).
"""

import argparse
import time

import numpy as np
from numba import njit, prange

from numba_lse.cpu.exp import exp_nonpositive, exp_nonpositive_for_float32


@njit(parallel=True)
def exp_of_float32(x):
    out = np.empty(x.size, np.float64)
    for i in prange(x.size):
        out[i] = exp_nonpositive(np.float64(x[i]))
    return out


@njit(parallel=True)
def short_exp_of_float32(x):
    out = np.empty(x.size, np.float64)
    for i in prange(x.size):
        out[i] = exp_nonpositive_for_float32(np.float64(x[i]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stride", type=int, default=1, help="check every k-th float32 only")
    args = parser.parse_args()
    if np.finfo(np.longdouble).nmant < 63:
        raise SystemExit("long double is not wider than double here: no reference")
    first = np.float32(-0.0).view(np.uint32)
    last = np.float32(-745.2).view(np.uint32)
    chunk = 1 << 24
    worst_ulp, worst_x, f32_mismatches, count = 0.0, 0.0, 0, 0
    short_worst, short_mismatches = 0.0, 0
    start = time.perf_counter()
    for lo in range(int(first), int(last) + 1, chunk):
        bits = np.arange(lo, min(lo + chunk, int(last) + 1), args.stride, dtype=np.uint32)
        x = bits.view(np.float32)
        computed = exp_of_float32(x)
        exact = np.exp(x.astype(np.longdouble))
        spacing = np.spacing(exact.astype(np.float64)).astype(np.longdouble)
        ulps = (np.abs(computed.astype(np.longdouble) - exact) / spacing).astype(np.float64)
        i = int(np.argmax(ulps))
        if ulps[i] > worst_ulp:
            worst_ulp, worst_x = float(ulps[i]), float(x[i])
        f32_mismatches += int(np.count_nonzero(computed.astype(np.float32) != exact.astype(np.float32)))
        short = short_exp_of_float32(x)
        nonzero = exact > np.longdouble(2.0) ** -126  # float32 normal range: relative error is meaningful
        if nonzero.any():
            short_worst = max(short_worst, float(np.max(
                np.abs(short[nonzero].astype(np.longdouble) - exact[nonzero]) / exact[nonzero])))
        short_mismatches += int(np.count_nonzero(short.astype(np.float32) != exact.astype(np.float32)))
        count += x.size
    elapsed = time.perf_counter() - start
    print(f"float32 inputs checked: {count:,} in [-745.2, 0] ({elapsed:.0f} s)")
    print(f"max error of the float64 exp: {worst_ulp:.4f} ulp (float64), at x = {worst_x!r}")
    print(f"results whose float32 rounding differs from the correctly rounded exp: {f32_mismatches:,}")
    print(f"float32 data's exp (degree 7): max relative error {short_worst:.3g} "
          f"(2^{np.log2(short_worst):.1f}, results above 2^-126); float32 roundings that differ: {short_mismatches:,}")


if __name__ == "__main__":
    main()
