"""Speed of numba_lse against NumPy, SciPy, PyTorch and JAX (CPU), with a correctness check.

Every case runs all implementations in one process, repetitions interleaved (rep 1 of every
implementation, then rep 2 of every implementation, ...), after one untimed warm-up call each
(Numba and jax.jit compile there).  Tables report medians in milliseconds.  Every output is
compared with a float64 reference computed without numba_lse (SciPy or NumPy on the float64
values of the input); an implementation whose error exceeds the tolerance, or that returns
nan/inf where the reference does not, is marked "wrong" and cannot be the "best correct peer".
ratio = best correct peer / numba_lse: > 1 means numba_lse is faster.

Ops live in a registry (OPS below): an OpSpec names the numba_lse function, its peers and its
float64 reference.  An op is benchmarked only if numba_lse has a function of that name, so the
script keeps working as the library grows; a new op is one more OpSpec.

Run:  python perf/bench.py                      every op numba_lse has, full cases (all six
                                                ops: about 14 minutes on 2 shared cores)
      python perf/bench.py --ops logsumexp      one op (about 2.5 minutes)
      python perf/bench.py --quick              smaller cases, fewer reps (about 30 s, all ops)
      python perf/bench.py --threads 1          numba_lse and torch on one thread
      python perf/bench.py --write              also write perf/results.md
      python perf/bench.py --reps 11
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# OpenMP threads (numba_lse's default threading layer, and torch) that spin while waiting
# starve each other and the neighbours on a small shared machine: with the default policy both
# took 20-30 ms for a 1e6 logsumexp that takes 2 ms with PASSIVE.  Set before any OpenMP
# runtime loads; export OMP_WAIT_POLICY=ACTIVE to measure the spinning default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402  (after the environment is set)

import numba  # noqa: E402
import numba_lse  # noqa: E402

# Peers are optional: a missing one is skipped with a note.
PEER_NOTES: list[str] = []

try:
    import scipy
    import scipy.special
except ImportError as exc:  # pragma: no cover - depends on the environment
    scipy = None
    PEER_NOTES.append(f"scipy not available ({exc}): no scipy peer")

try:
    import torch
    import torch.nn.functional as torch_f
except ImportError as exc:  # pragma: no cover
    torch = None
    PEER_NOTES.append(f"torch not available ({exc}): skipped")

try:
    import jax

    jax.config.update("jax_enable_x64", True)  # else float64 inputs silently become float32
    import jax.nn
    import jax.numpy as jnp
    import jax.scipy.special
except ImportError as exc:  # pragma: no cover
    jax = None
    PEER_NOTES.append(f"jax not available ({exc}): skipped")


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input shape and the axis the op works along (for the losses: the class axis)."""

    label: str
    shape: tuple[int, ...]
    axis: int | None


@dataclass
class Inputs:
    """What an op is called with: ``x`` (logits, or log-probabilities for nll_loss), the axis,
    and the class-index ``target`` of the losses (None for the other ops)."""

    x: np.ndarray
    axis: int | None
    target: np.ndarray | None = None


@dataclass
class Impl:
    """One implementation of an op.

    ``prepare(inputs)`` runs outside the timed region and turns the NumPy inputs into what the
    implementation consumes (torch tensors, jax arrays and a jitted function, ...);
    ``call(prepared)`` is the timed call; ``to_numpy(result)`` runs outside timing.
    """

    name: str
    prepare: Callable[[Inputs], Any]
    call: Callable[[Any], Any]
    to_numpy: Callable[[Any], np.ndarray] = np.asarray


@dataclass
class OpSpec:
    """An op: numba_lse's function of that name, its peers and its float64 reference.

    ``kernel(x, axis, target)`` for each peer is written against one framework; the
    ``*_impl`` adapters below do the conversions.  ``error_floor``: the error is
    |out - ref| / max(|ref|, error_floor), so 1 makes it absolute where |ref| < 1 (right for
    log-domain results near 0), and a tiny floor keeps it relative (right for probabilities).
    ``is_loss``: takes a class-index target, only on 2-D cases with the classes on the last
    axis, and its ``x`` comes from ``make_x`` (log-probabilities for nll_loss).
    """

    name: str
    ours: Callable[[Callable, Inputs], Any]
    peers: Callable[[], list[Impl]]
    reference: Callable[[Inputs], np.ndarray]
    error_floor: float = 1.0
    is_loss: bool = False
    make_x: Callable[[np.ndarray], np.ndarray] | None = None
    bytes_read: Callable[[Inputs], int] = lambda inp: inp.x.nbytes + (
        0 if inp.target is None else inp.target.nbytes)

    def applies_to(self, case: Case) -> bool:
        return not self.is_loss or (len(case.shape) == 2 and case.axis in (-1, 1))


@dataclass
class ImplResult:
    name: str
    times: list[float] = field(default_factory=list)
    max_rel_err: float = float("nan")
    wrong: bool = False
    error: str | None = None  # the exception raised at warm-up, if any

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times) if self.times else float("nan")

    @property
    def usable(self) -> bool:
        return self.error is None and not self.wrong and bool(self.times)


@dataclass
class CaseResult:
    op: str
    case: Case
    dtype: str
    bytes_moved: int  # input(s) read + output written, by numba_lse
    results: list[ImplResult]  # numba_lse first
    seconds: float  # wall time of the whole case (data, reference, warm-up and reps)


# --------------------------------------------------------------------------------------------
# Framework adapters: kernel(x, axis, target) -> Impl
# --------------------------------------------------------------------------------------------


def numpy_impl(name: str, kernel: Callable) -> Impl:
    """NumPy/SciPy kernels take the NumPy arrays as they are."""
    return Impl(name, lambda inp: inp, lambda inp: kernel(inp.x, inp.axis, inp.target))


def _torch_prepare(inp: Inputs):
    target = None if inp.target is None else torch.from_numpy(inp.target)
    return torch.from_numpy(inp.x), inp.axis, target  # from_numpy shares memory: no copy


def torch_impl(name: str, kernel: Callable) -> Impl:
    return Impl(name, _torch_prepare, lambda p: kernel(*p), lambda result: result.numpy())


def torch_reduce(func: Callable) -> Callable:
    """torch reductions need a dim: axis=None is the flattened view (no copy), dim 0."""
    return lambda t, dim, _: func(t.reshape(-1), 0) if dim is None else func(t, dim)


def torch_elementwise(func: Callable) -> Callable:
    """As torch_reduce for softmax-like functions, reshaping the output back (a view)."""
    return lambda t, dim, _: (func(t.reshape(-1), 0).reshape(t.shape) if dim is None
                              else func(t, dim))


def _jax_prepare_for(kernel: Callable):
    def prepare(inp: Inputs):
        x = jnp.asarray(inp.x).block_until_ready()
        target = None if inp.target is None else jnp.asarray(inp.target).block_until_ready()
        axis = inp.axis
        return jax.jit(lambda a, t: kernel(a, axis, t)), x, target

    return prepare


def _jax_call(prepared):
    jitted, x, target = prepared
    return jitted(x, target).block_until_ready()


def jax_impl(name: str, kernel: Callable) -> Impl:
    """Under jax.jit: the warm-up call compiles; the timed call blocks until ready."""
    return Impl(name, _jax_prepare_for(kernel), _jax_call)


def jax_alias_impls(kernels: dict[str, Callable], make_kernel: Callable) -> list[Impl]:
    """One Impl per distinct function (jax.nn.X is often jax.scipy.special.X)."""
    impls, seen = [], set()
    for name, func in kernels.items():
        if id(func) not in seen:
            seen.add(id(func))
            impls.append(jax_impl(name, make_kernel(func)))
    return impls


# --------------------------------------------------------------------------------------------
# Kernels and the registry
# --------------------------------------------------------------------------------------------


def naive_logsumexp(x, axis, _=None):
    m = x.max(axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis)


def naive_softmax(x, axis, _=None):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def naive_log_softmax(x, axis, _=None):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def naive_log1m_softmax(x, axis, _=None):
    return np.log1p(-naive_softmax(x, axis))


def naive_nll_loss(log_probs, _, target):
    return -np.mean(log_probs[np.arange(len(target)), target])


def naive_cross_entropy(logits, _, target):
    return np.mean(naive_logsumexp(logits, -1) - logits[np.arange(len(target)), target])


def scipy_cross_entropy(logits, _, target):
    lse = scipy.special.logsumexp(logits, axis=-1)
    return np.mean(lse - logits[np.arange(len(target)), target])


def jax_gather(x, target):
    return jnp.take_along_axis(x, target[:, None], axis=-1)[:, 0]


def call_ours_over_axis(func, inp: Inputs):
    return func(inp.x, axis=inp.axis)


def call_ours_loss(func, inp: Inputs):
    return func(inp.x, inp.target)


def softmax_family_peers(naive: Callable, scipy_kernel, torch_func,
                         jax_funcs: dict[str, Callable], jax_wrap=None) -> list[Impl]:
    """Peers of softmax-like ops: kernel(x, axis) with an output shaped like x."""
    peers = [numpy_impl("numpy", naive)]
    if scipy is not None and scipy_kernel is not None:
        peers.append(numpy_impl("scipy", scipy_kernel))
    if torch is not None:
        peers.append(torch_impl("torch", torch_elementwise(torch_func)))
    if jax is not None:
        wrap = jax_wrap or (lambda f: f)
        peers += jax_alias_impls(jax_funcs, lambda f: lambda a, axis, _: wrap(f(a, axis=axis)))
    return peers


def logsumexp_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_logsumexp)]
    if scipy is not None:
        peers.append(numpy_impl("scipy", lambda x, axis, _: scipy.special.logsumexp(x, axis=axis)))
    if torch is not None:
        peers.append(torch_impl("torch", torch_reduce(torch.logsumexp)))
    if jax is not None:
        peers += jax_alias_impls(
            {"jax.nn": jax.nn.logsumexp, "jax.scipy": jax.scipy.special.logsumexp},
            lambda f: lambda a, axis, _: f(a, axis=axis))
    return peers


def softmax_peers() -> list[Impl]:
    sp = (lambda x, axis, _: scipy.special.softmax(x, axis=axis)) if scipy else None
    return softmax_family_peers(
        naive_softmax, sp, torch.softmax if torch else None,
        {"jax.nn": jax.nn.softmax, "jax.scipy": jax.scipy.special.softmax} if jax else {})


def log_softmax_peers() -> list[Impl]:
    sp = (lambda x, axis, _: scipy.special.log_softmax(x, axis=axis)) if scipy else None
    return softmax_family_peers(
        naive_log_softmax, sp, torch.log_softmax if torch else None,
        {"jax.nn": jax.nn.log_softmax} if jax else {})


def log1m_softmax_peers() -> list[Impl]:
    # No library has log(1 - softmax): every peer is log1p(-softmax) in its framework.
    sp = (lambda x, axis, _: np.log1p(-scipy.special.softmax(x, axis=axis))) if scipy else None
    torch_func = (lambda t, dim: torch.log1p(-torch.softmax(t, dim))) if torch else None
    return softmax_family_peers(
        naive_log1m_softmax, sp, torch_func,
        {"jax.nn": jax.nn.softmax} if jax else {}, jax_wrap=lambda p: jnp.log1p(-p))


def nll_loss_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_nll_loss)]
    if torch is not None:
        peers.append(torch_impl("torch", lambda t, _, target: torch_f.nll_loss(t, target)))
    if jax is not None:
        peers.append(jax_impl("jax", lambda a, _, t: -jnp.mean(jax_gather(a, t))))
    return peers


def cross_entropy_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_cross_entropy)]
    if scipy is not None:
        peers.append(numpy_impl("scipy", scipy_cross_entropy))
    if torch is not None:
        peers.append(torch_impl("torch", lambda t, _, target: torch_f.cross_entropy(t, target)))
    if jax is not None:
        peers.append(jax_impl(
            "jax", lambda a, _, t: jnp.mean(jax.nn.logsumexp(a, axis=-1) - jax_gather(a, t))))
    return peers


def scipy_reference(name: str, post: Callable = lambda r: r) -> Callable[[Inputs], np.ndarray]:
    """SciPy's function on the float64 input: independent of numba_lse."""
    return lambda inp: post(np.asarray(getattr(scipy.special, name)(inp.x, axis=inp.axis),
                                       dtype=np.float64))


def log_probs_of(x64: np.ndarray) -> np.ndarray:
    return scipy.special.log_softmax(x64, axis=-1)


def gathered_bytes(inp: Inputs) -> int:
    """nll_loss reads one entry per row (and the target), not the whole input."""
    return inp.target.size * inp.x.itemsize + inp.target.nbytes


# The registry.  Append an OpSpec to benchmark a new op; it runs once numba_lse has it.
OPS: list[OpSpec] = [
    OpSpec("logsumexp", call_ours_over_axis, logsumexp_peers, scipy_reference("logsumexp")),
    OpSpec("softmax", call_ours_over_axis, softmax_peers, scipy_reference("softmax"),
           error_floor=1e-300),
    OpSpec("log_softmax", call_ours_over_axis, log_softmax_peers, scipy_reference("log_softmax")),
    # log(1 - p) is about -p for small p: relative error, so a tiny floor.  The float64
    # log1p(-softmax) reference is accurate for these Gaussian inputs (no p close to 1).
    OpSpec("log1m_softmax", call_ours_over_axis, log1m_softmax_peers,
           scipy_reference("softmax", post=lambda p: np.log1p(-p)), error_floor=1e-300),
    OpSpec("nll_loss", call_ours_loss, nll_loss_peers,
           lambda inp: naive_nll_loss(inp.x, None, inp.target), is_loss=True,
           make_x=log_probs_of, bytes_read=gathered_bytes),
    OpSpec("cross_entropy", call_ours_loss, cross_entropy_peers,
           lambda inp: scipy_cross_entropy(inp.x, None, inp.target), is_loss=True),
]

TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-8}

FULL_CASES = [
    Case("1e7 vector, axis=None", (10_000_000,), None),
    Case("4096x4096, axis=-1", (4096, 4096), -1),
    Case("1e6x10, axis=-1", (1_000_000, 10), -1),
    Case("1000x1e5, axis=-1", (1000, 100_000), -1),
    Case("4096x4096, axis=0", (4096, 4096), 0),
]

QUICK_CASES = [
    Case("1e6 vector, axis=None", (1_000_000,), None),
    Case("1024x1024, axis=-1", (1024, 1024), -1),
    Case("1e5x10, axis=-1", (100_000, 10), -1),
    Case("20x1e5, axis=-1", (20, 100_000), -1),
    Case("1024x1024, axis=0", (1024, 1024), 0),
]


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def max_relative_error(out: np.ndarray, ref: np.ndarray, floor: float) -> tuple[float, bool]:
    """(max |out - ref| / max(|ref|, floor) over finite entries, whether non-finites agree)."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf"), False
    finite = np.isfinite(ref)
    specials_agree = bool(np.array_equal(out[~finite], ref[~finite], equal_nan=True))
    if not finite.any():
        return 0.0, specials_agree
    diff = np.abs(out[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), floor)
    # nan where the reference is finite compares as nan: count it as an infinite error.
    return float(np.max(np.where(np.isnan(diff), np.inf, diff))), specials_agree


def make_inputs(op: OpSpec, case: Case, dtype: np.dtype, x64: np.ndarray) -> tuple[Inputs, Inputs]:
    """(inputs at ``dtype``, the same values in float64 for the reference)."""
    target = None
    if op.is_loss:
        x64 = op.make_x(x64) if op.make_x else x64
        n_rows, n_classes = case.shape
        target = np.random.default_rng(7).integers(0, n_classes, n_rows)
    x = x64 if dtype == np.float64 else x64.astype(dtype)
    return Inputs(x, case.axis, target), Inputs(x.astype(np.float64), case.axis, target)


def bench_case(op: OpSpec, case: Case, dtype: np.dtype, x64: np.ndarray, reps: int) -> CaseResult:
    start = time.perf_counter()
    inputs, inputs64 = make_inputs(op, case, dtype, x64)
    reference = op.reference(inputs64)
    del inputs64
    ours_func = getattr(numba_lse, op.name)
    impls = [Impl("numba_lse", lambda inp: inp, lambda inp: op.ours(ours_func, inp))]
    impls += op.peers()
    results = [ImplResult(impl.name) for impl in impls]
    bytes_moved = op.bytes_read(inputs) + reference.size * inputs.x.itemsize

    # Prepare (conversions, jit objects) and warm up outside timing; check every output.
    prepared: list[Any] = []
    for impl, res in zip(impls, results):
        try:
            p = impl.prepare(inputs)
            out = impl.to_numpy(impl.call(p))
        except Exception as exc:  # a peer that cannot do this case is reported, not fatal
            res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:100]
            prepared.append(None)
            continue
        res.max_rel_err, specials_agree = max_relative_error(out, reference, op.error_floor)
        res.wrong = not specials_agree or not res.max_rel_err <= TOLERANCE[np.dtype(dtype)]
        prepared.append(p)
        del out

    # Interleaved repetitions: rep 1 of every implementation, then rep 2, ...
    for _ in range(reps):
        for impl, res, p in zip(impls, results, prepared):
            if p is None:
                continue
            t0 = time.perf_counter()
            out = impl.call(p)
            res.times.append(time.perf_counter() - t0)
            del out  # freeing the output stays outside the timed region

    del prepared, reference, inputs
    gc.collect()
    return CaseResult(op.name, case, np.dtype(dtype).name, bytes_moved, results,
                      time.perf_counter() - start)


@numba.njit(parallel=True)
def _parallel_sum(a):
    total = 0.0
    for i in numba.prange(a.size):
        total += a[i]
    return total


def machine_roofs(n_bytes: int, reps: int) -> dict[str, float]:
    """Bandwidths in GB/s: np.sum (one thread, read), np.copyto (bytes read + written), and a
    Numba prange sum over all Numba threads (read)."""
    a = np.random.default_rng(0).standard_normal(n_bytes // 8)
    b = np.empty_like(a)
    kernels = {
        "read roof, np.sum (1 thread)": (lambda: np.sum(a), a.nbytes),
        "copy roof, np.copyto (read+write)": (lambda: np.copyto(b, a), 2 * a.nbytes),
        f"read roof, numba prange sum ({numba.get_num_threads()} threads)":
            (lambda: _parallel_sum(a), a.nbytes),
    }
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for kernel, _ in kernels.values():
        kernel()  # warm: compiles _parallel_sum, faults in b's pages
    for _ in range(reps):
        for name, (kernel, _) in kernels.items():
            t0 = time.perf_counter()
            kernel()
            times[name].append(time.perf_counter() - t0)
    return {name: nbytes / statistics.median(times[name]) / 1e9
            for name, (_, nbytes) in kernels.items()}


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def environment_lines(roofs: dict[str, float], reps: int) -> list[str]:
    def version(module):
        return getattr(module, "__version__", "n/a") if module is not None else "not installed"

    lines = [
        f"- CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores usable",
        f"- numba threads: {numba.get_num_threads()} ({numba.threading_layer()} layer)"
        + (f", torch threads: {torch.get_num_threads()}" if torch is not None else "")
        + f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        f"- python {platform.python_version()}, numpy {np.__version__}, scipy {version(scipy)}, "
        f"numba {numba.__version__}, torch {version(torch)}, jax {version(jax)}, "
        f"numba_lse {numba_lse.__version__}",
        f"- {reps} interleaved reps per case, medians; tolerance float32 "
        f"{TOLERANCE[np.dtype(np.float32)]:g}, float64 {TOLERANCE[np.dtype(np.float64)]:g}",
        f"- load average at start (1, 5, 15 min): {load_average()}",
    ]
    if os.getloadavg()[0] > 0.5 * len(os.sched_getaffinity(0)):
        lines.append("- WARNING: the machine is busy; multi-threaded implementations (numba_lse, "
                     "torch) lose most when a thread is descheduled (compare --threads 1)")
    lines += [f"- {name}: {gbs:.1f} GB/s" for name, gbs in roofs.items()]
    lines += [f"- note: {note}" for note in PEER_NOTES]
    return lines


def format_ms(res: ImplResult) -> str:
    if res.error is not None:
        return "error"
    ms = res.median_ms
    text = f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"
    return text + (" (wrong)" if res.wrong else "")


def timing_table(op: str, cases: list[CaseResult]) -> list[str]:
    peer_names = [r.name for r in cases[0].results[1:]]
    header = (["case", "dtype", "numba_lse ms", "numba_lse GB/s"] + [f"{n} ms" for n in peer_names]
              + ["best correct peer", "ratio peer/numba_lse"])
    lines = [f"### {op}: median time", "", "| " + " | ".join(header) + " |",
             "|---|---|" + "|".join(["---:"] * (len(header) - 2)) + "|"]
    for cr in cases:
        ours, peers = cr.results[0], cr.results[1:]
        best = min((p for p in peers if p.usable), key=lambda p: p.median_ms, default=None)
        gbs = cr.bytes_moved / (ours.median_ms / 1e3) / 1e9 if ours.times else float("nan")
        ratio = f"{best.median_ms / ours.median_ms:.2f}" if best and ours.times else "n/a"
        if not ours.usable:
            ratio += " (numba_lse wrong)"
        row = [cr.case.label, cr.dtype, format_ms(ours), f"{gbs:.2g}"]
        row += [format_ms(p) for p in peers] + [best.name if best else "none", ratio]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def error_table(op: str, cases: list[CaseResult]) -> list[str]:
    names = [r.name for r in cases[0].results]
    lines = [f"### {op}: max relative error vs the float64 reference", "",
             "| case | dtype | " + " | ".join(names) + " |",
             "|---|---|" + "|".join(["---:"] * len(names)) + "|"]
    for cr in cases:
        cells = []
        for r in cr.results:
            if r.error is not None:
                cells.append(f"error: {r.error}")
            else:
                cells.append(f"{r.max_rel_err:.1e}" + (" (wrong)" if r.wrong else ""))
        lines.append(f"| {cr.case.label} | {cr.dtype} | " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def select_ops(requested: str | None) -> list[OpSpec]:
    available = {op.name: op for op in OPS if hasattr(numba_lse, op.name)}
    if requested is None:
        return list(available.values())
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"--ops: cannot benchmark {', '.join(unknown)} "
                         f"(available: {', '.join(available) or 'none'})")
    return [available[n] for n in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer reps")
    parser.add_argument("--write", action="store_true", help="also write perf/results.md")
    parser.add_argument("--ops", help="comma-separated ops (default: every op numba_lse has)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 7 quick, 9 full)")
    parser.add_argument("--threads", type=int,
                        help="threads for numba_lse and torch (default: their own defaults)")
    args = parser.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    if scipy is None:
        raise SystemExit("scipy is needed for the float64 reference")

    reps = args.reps or (7 if args.quick else 9)
    cases = QUICK_CASES if args.quick else FULL_CASES
    ops = select_ops(args.ops)
    started = time.perf_counter()

    roofs = machine_roofs((128 if args.quick else 512) * 2**20, reps)
    header = ["# numba_lse benchmark" + (" (--quick)" if args.quick else ""), ""]
    header += environment_lines(roofs, reps)
    print("\n".join(header), flush=True)

    sections: list[str] = []
    for op in ops:
        op_started = time.perf_counter()
        rng = np.random.default_rng(12345)  # the same data for every op
        op_results: list[CaseResult] = []
        for case in filter(op.applies_to, cases):
            x64 = rng.standard_normal(case.shape)
            for dtype in (np.float32, np.float64):
                cr = bench_case(op, case, np.dtype(dtype), x64, reps)
                op_results.append(cr)
                print(f"  [{op.name}] {case.label} {cr.dtype}: {cr.seconds:.1f} s",
                      file=sys.stderr, flush=True)
            del x64
            gc.collect()
        section = timing_table(op.name, op_results) + [""] + error_table(op.name, op_results)
        section += ["", f"_{op.name}: {time.perf_counter() - op_started:.0f} s_"]
        sections.append("\n".join(section))
        print("\n" + sections[-1], flush=True)

    footer = (f"_total wall time {time.perf_counter() - started:.0f} s; "
              f"load average at end: {load_average()}_")
    print("\n" + footer)
    if args.write:
        path = Path(__file__).with_name("results.md")
        path.write_text("\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n\n" + footer + "\n")
        print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
