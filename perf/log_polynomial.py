"""The polynomial of numba_lse's log1p for float32 results (``numba_lse/cpu/log.py``), by Remez.

log1p(y) = y + y^2 R(y) on [-1/2, 0] (a hair wider, for the rounding of p = -y): R is the
polynomial of the given degree that minimises the largest relative error of log1p, that is
max |y^2 / log1p(y) * (R(y) - f(y))| with f(y) = (log1p(y) - y) / y^2, found by Remez's
exchange in 60-digit arithmetic (mpmath; ``perf/exp_polynomial.py``'s ``remez``). Prints R's
coefficients rounded to float64 and the relative error of log1p with the rounded ones.
Run: python perf/log_polynomial.py 11   (the degree numba_lse uses; ~5 s)
"""

import argparse
import sys
from pathlib import Path

import mpmath as mp

sys.path.insert(0, str(Path(__file__).parent))
from exp_polynomial import remez  # noqa: E402

mp.mp.dps = 60
LOW = -mp.mpf(1) / 2 * (1 + mp.mpf(2) ** -20)


def f(y):
    return (mp.log1p(y) - y) / y**2 if y else -mp.mpf(1) / 2


def weight(y):
    """|log1p's relative error| = weight(y) |R(y) - f(y)|."""
    return y**2 / abs(mp.log1p(y)) if y else mp.mpf(0)


def largest_error(coefficients, points=20001):
    """The largest relative error of y + y^2 R(y) as log1p(y) on [LOW, 0)."""
    return max(abs(weight(y) * (mp.polyval(coefficients[::-1], y) - f(y)))
               for y in (LOW * i / (points - 1) for i in range(1, points)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("degrees", type=int, nargs="*", default=[11])
    for degree in parser.parse_args().degrees:
        rounded = [mp.mpf(float(c)) for c in remez(degree, f, weight, LOW, mp.mpf(0))]
        error = largest_error(rounded)
        print(f"R of degree {degree}: relative error of log1p {mp.nstr(error, 3)} "
              f"(2^{mp.nstr(mp.log(error, 2), 3)})")
        print("(\n" + "".join(f"    {float(c)!r},\n" for c in rounded) + ")")


if __name__ == "__main__":
    main()
