"""The polynomials of numba_lse's exp (``numba_lse/cpu/exp.py``), by the Remez algorithm.

exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2)/2 (a hair wider, for the rounding of k): P is the
polynomial of the given degree that minimises the largest relative error of exp, that is
max |r^2 / e^r * (P(r) - f(r))| with f(r) = (e^r - 1 - r) / r^2, found by Remez's exchange
in 60-digit arithmetic (mpmath). Prints P's coefficients rounded to float64 and the relative
error of exp with the rounded ones, next to Taylor's of one degree more.
Run: python perf/exp_polynomial.py 10 5   (the degrees numba_lse uses; ~10 s)
"""

import argparse

import mpmath as mp

mp.mp.dps = 60
HALF_WIDTH = mp.log(2) / 2 * (1 + mp.mpf(2) ** -20)
GRID = 4001  # points where the error's extrema are looked for, then exchanged


def f(r):
    return (mp.exp(r) - 1 - r) / r**2 if r else mp.mpf(1) / 2


def weight(r):
    """|exp's relative error| = weight(r) |P(r) - f(r)|."""
    return r**2 / mp.exp(r)


def weighted_error(coefficients, r, f=f, weight=weight):
    """weight(r) (P(r) - f(r)): with exp's f and weight, the relative error of 1 + r + r^2 P(r)."""
    return weight(r) * (mp.polyval(coefficients[::-1], r) - f(r))


def largest_error(coefficients, points=20001):
    a = HALF_WIDTH
    return max(abs(weighted_error(coefficients, -a + 2 * a * i / (points - 1))) for i in range(points))


def remez(degree, f=f, weight=weight, lo=-HALF_WIDTH, hi=HALF_WIDTH, iterations=30):
    """The polynomial P of the given degree (coefficients from the constant one up) that
    minimises max |weight(r) (P(r) - f(r))| over [lo, hi], by Remez's exchange
    (``perf/log_polynomial.py`` calls it with its own f, weight and interval)."""
    unknowns = degree + 1
    size = unknowns + 1
    middle, a = (lo + hi) / 2, (hi - lo) / 2
    # A first reference spread as Chebyshev's extrema, none at the middle or the ends (where
    # a weight may vanish).
    reference = [middle - a * mp.cos(mp.pi * (i + mp.mpf(1) / 3) / (size - mp.mpf(1) / 3))
                 for i in range(size)]
    grid = [lo + (hi - lo) * i / (GRID - 1) for i in range(GRID)]
    for _ in range(iterations):
        # P(r_i) - f(r_i) = (-1)^i E / weight(r_i) at every point of the reference.
        matrix, rhs = mp.matrix(size, size), mp.matrix(size, 1)
        for i, r in enumerate(reference):
            w = weight(r)
            for j in range(unknowns):
                matrix[i, j] = w * r**j
            matrix[i, unknowns] = (-1) ** i
            rhs[i] = w * f(r)
        solution = mp.lu_solve(matrix, rhs)
        coefficients = [solution[j] for j in range(unknowns)]
        level = abs(solution[unknowns])
        values = [weighted_error(coefficients, r, f, weight) for r in grid]
        extrema = [(grid[i], v) for i, v in enumerate(values)
                   if (i == 0 or abs(v) >= abs(values[i - 1]))
                   and (i == GRID - 1 or abs(v) >= abs(values[i + 1]))]
        alternating = []
        for r, v in extrema:  # the largest of each run of one sign
            if alternating and mp.sign(v) == mp.sign(alternating[-1][1]):
                if abs(v) > abs(alternating[-1][1]):
                    alternating[-1] = (r, v)
            else:
                alternating.append((r, v))
        while len(alternating) > size:  # drop the smaller end
            alternating.pop(0 if abs(alternating[0][1]) < abs(alternating[-1][1]) else -1)
        if len(alternating) < size:
            raise RuntimeError(f"degree {degree}: the error does not alternate {size} times")
        reference = [r for r, _ in alternating]
        largest = max(abs(v) for _, v in alternating)
        if largest - level <= level * mp.mpf(10) ** -6:  # equioscillation reached
            return coefficients
    raise RuntimeError(f"degree {degree}: Remez did not converge")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("degrees", type=int, nargs="*", default=[10, 5])
    for degree in parser.parse_args().degrees:
        rounded = [mp.mpf(float(c)) for c in remez(degree)]
        taylor = [1 / mp.factorial(j + 2) for j in range(degree + 2)]
        error, taylor_error = largest_error(rounded), largest_error([mp.mpf(float(c)) for c in taylor])
        print(f"P of degree {degree}: relative error of exp {mp.nstr(error, 3)} "
              f"(2^{mp.nstr(mp.log(error, 2), 3)}); Taylor to r^{degree + 3}/{degree + 3}!: "
              f"{mp.nstr(taylor_error, 3)} (2^{mp.nstr(mp.log(taylor_error, 2), 3)})")
        print("(\n" + "".join(f"    {float(c)!r},\n" for c in rounded) + ")")


if __name__ == "__main__":
    main()
