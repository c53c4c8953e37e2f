"""Seed 004's alpha sweep: why log(softmax(x)) fails where log_softmax(x) does not.

For x = alpha * [-1, 0, 1] in float32 and alpha = 2 ... 1000, compare log(softmax(x)) and
log_softmax(x) (both numba_lse, float32) with the exact value (mpmath), entry by entry, and
plot the worst error of each in float32 ulps. log(softmax) fails twice. For the largest entry
p = 1 - e^(-alpha) - ...: p is rounded to float32 near 1, so log(p), a tiny number, keeps
none of its digits (thousands to millions of ulps from alpha = 10). For the smallest entry
p = e^(-2 alpha) / Z underflows to 0 from alpha ~ 52 on, and log(0) = -inf.
log_softmax = (x - m) - log(sum) never forms p, and stays within half an ulp.

Run: python perf/alpha_sweep.py  (writes perf/alpha_sweep.png)
"""

import pathlib

import mpmath
import numpy as np

import numba_lse as nl

ALPHAS = [2, 5, 10, 20, 50, 100, 1000]


def exact_log_softmax(x):
    """log_softmax in mpmath, shifted by the max and through log1p (its tiny terms survive)."""
    mpmath.mp.dps = 50
    values = [mpmath.mpf(float(v)) for v in x]
    top = max(values)
    ties = sum(1 for v in values if v == top)
    rest = mpmath.fsum(mpmath.exp(v - top) for v in values if v != top)
    log_total = mpmath.log(ties) + mpmath.log1p(rest / ties)
    return [(v - top) - log_total for v in values]


def ulp_error(computed, exact):
    """Worst error in float32 ulps of the exact values (inf where the result is -inf)."""
    worst = 0.0
    for c, e in zip(computed, exact):
        if not np.isfinite(c):
            return np.inf
        spacing = np.spacing(np.abs(np.float32(float(e))))
        worst = max(worst, float(abs(mpmath.mpf(float(c)) - e) / mpmath.mpf(float(spacing))))
    return worst


def sweep():
    rows = []
    for alpha in ALPHAS:
        x = (alpha * np.array([-1.0, 0.0, 1.0])).astype(np.float32)
        exact = exact_log_softmax(x)
        with np.errstate(divide="ignore"):
            naive = np.log(nl.softmax(x))
        stable = nl.log_softmax(x)
        rows.append((alpha, ulp_error(naive, exact), ulp_error(stable, exact), naive, stable))
    return rows


def main():
    rows = sweep()
    print(f"{'alpha':>6}  {'log(softmax) ulp error':>23}  {'log_softmax ulp error':>22}  log(softmax(x))  log_softmax(x)")
    for alpha, naive_error, stable_error, naive, stable in rows:
        print(f"{alpha:>6}  {naive_error:>23.3g}  {stable_error:>22.3g}  {naive}  {stable}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 0.01  # where a zero error is drawn on the log axis
    ceiling = 1e9  # where an infinite error (a -inf result) is drawn
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    alphas = [r[0] for r in rows]
    for index, label, marker in [(1, "log(softmax(x))", "o"), (2, "log_softmax(x)", "s")]:
        errors = np.array([max(r[index], floor) for r in rows])
        infinite = ~np.isfinite(errors)
        ax.plot(alphas, np.where(infinite, ceiling, errors), marker=marker, label=label)
        if infinite.any():
            ax.scatter(np.array(alphas)[infinite], np.full(infinite.sum(), ceiling), s=120,
                       facecolors="none", edgecolors="red", zorder=3)
    ax.axhline(1.0, color="gray", linestyle=":", label="1 ulp")
    ax.annotate("-inf (error infinite)", (alphas[-2], ceiling), textcoords="offset points",
                xytext=(-60, -18), color="red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha  (x = alpha * [-1, 0, 1], float32)")
    ax.set_ylabel("max error vs mpmath (float32 ulps)")
    ax.set_title("log(softmax(x)) vs log_softmax(x)")
    ax.legend(loc="center left")
    fig.tight_layout()
    path = pathlib.Path(__file__).with_name("alpha_sweep.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
