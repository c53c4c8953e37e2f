"""Speed of numba_lse against NumPy, SciPy, PyTorch and JAX (CPU), with a correctness check.

Every case runs all implementations in one process, repetitions interleaved (rep 1 of every
implementation, then rep 2 of every implementation, ..., each rep in its own random order, so
that every implementation follows every other equally often), after one untimed warm-up call each (Numba and
jax.jit compile there).  Tables report medians in milliseconds.  Every output is
compared with a float64 reference computed without numba_lse (SciPy or NumPy on the float64
values of the input); an implementation whose error exceeds the tolerance, or that returns
nan/inf where the reference does not, is marked "wrong" and cannot be the "best correct peer".
ratio = best correct peer / numba_lse: > 1 means numba_lse is faster (the goal: 1.5).
"% of roof": numba_lse's GB/s (input read + output written, over its median time) as a
fraction of the machine's copy roof (np.copyto, read + write GB/s, measured at start).

Ops live in a registry (OPS below): an OpSpec names the numba_lse function, its peers, its
float64 reference and its case set.  An op is benchmarked only if numba_lse has its function,
so the script keeps working as the library grows; a new op is one more OpSpec.

Cases.  softmax-like ops and logsumexp run the "general" set (FULL_CASES / QUICK_CASES);
log1m_softmax also runs an adversarial set (logits x30: a dominant entry per row, p close to
1, where log1p(-softmax) loses every digit or gives -inf).  nll_loss, cross_entropy and
cross_entropy+grad run the loss set: logits (1e6, 10), (4096, 1000), (256, 32000), class axis
last, integer targets (--quick: (1e5, 10), (1024, 1000), (64, 32000)).

Peers.  numpy: the textbook NumPy code (max shift; losses gather from a log_softmax; the
gradient is (softmax - one-hot) / N with the one-hot subtracted in place).  scipy:
scipy.special (log1m_softmax: log1p(-scipy.special.softmax)).  torch: torch.* /
torch.nn.functional; for cross_entropy+grad, ``loss = F.cross_entropy(x, t); loss.backward()``
on a requires_grad logits tensor (x.grad is detached and reset inside the timed call, so
every call allocates a fresh gradient, as numba_lse does).  "torch nxn" (log1m_softmax on
rows of at most 64 entries): logsumexp over the other entries of each row, through an
(..., n, n) expansion with -inf on the diagonal -- no cancellation at dominant entries, n
times the work, and only absolute accuracy where p is small (lse(others) - lse(all) ~ -p):
the relative error check marks it wrong there (float32, and the x30 case).  jax: under
jax.jit (losses: jax.nn.log_softmax + take_along_axis, mean; the gradient:
jax.value_and_grad of that).

Repetitions and run time.  --reps (default 9; --quick 5) interleaved reps per case, but no
new rep starts once the timed loop has run --case-seconds (default 8 s; --quick 2 s), after
at least MIN_REPS (3); a case whose reps are quick runs more of them, up to MAX_REPS (1000),
until its timed loop has run QUICK_CASE_SECONDS (1 s): the losses' small cases.  Only the biggest cases hit the cap: 1000x1e5 (1e8 entries; one rep of
all implementations takes 2-7 s) gets 3-5 reps, 1e6x10 of log1m_softmax (the n x n peer takes
1-2 s a call) about 5; the others get the full count.  Each table lists the reps done and
the progress lines on stderr the time of every case.  Measured on this 2-core machine with
another job running: logsumexp 103 s, log1m_softmax 162 s (both with 5 reps minimum and a
12 s cap), the three losses with the small-input and memory tables 68 s; so the default
full run (seven ops, both extra tables) takes about 8-9 minutes, --quick about 45 s, each
plus the start-up section (about 3 minutes; --quick about 1; --no-startup skips it).  The
warm-up call, the reference and the error check cost about as much as the reps on 1e8
entries, so fewer reps there save less than they seem to.

Three more sections.  Small inputs: the per-call time of every op on a 100-element float64
input (a vector; a (1, 100) batch for the losses), median of 2000 interleaved calls -- the
per-call overhead, against SciPy's (and the others').  Memory: the peak extra memory of one
call, as a multiple of the output size -- logsumexp, softmax, log_softmax, log1m_softmax on
one large 2-D case and the vector (4096x4096 axis=-1 and 1e7; --quick 1024x1024 and 1e6),
cross_entropy+grad (loss and gradient) on the loss cases, float32 and float64.  numba_lse,
NumPy and SciPy with tracemalloc (NumPy reports its allocations to it, and so do Numba
kernels: checked at run time and stated in the output), torch by the peak resident set size
of a fresh subprocess (torch has no CPU allocator statistics and bypasses tracemalloc); the
same subprocess measures numba_lse and NumPy that way too, as a check of the method.  The
target for numba_lse: output plus O(rows), about 1.00x.  Start-up (perf/startup.py): the
time of ``import numba_lse`` (and that it compiles nothing), the first and second call of
every op and dtype on 64x100 in fresh processes with a warm on-disk cache, and the first call
with an empty NUMBA_CACHE_DIR (compile time); targets import <= 0.3 s, first call <= 50 ms
more than the second.

--write writes perf/results.md (every table), perf/ratios.png (best correct peer / numba_lse
for every op, case and dtype timed, log scale, lines at 1 and 1.5) and replaces the text
between <!-- bench:start --> and <!-- bench:end --> in README.md with a summary (machine,
one row per op, case and dtype, start-up, links); without those markers the README is left
alone, with a warning.

Run:  python perf/bench.py                      every op numba_lse has, full cases
      python perf/bench.py --ops logsumexp      one op (comma-separated list)
      python perf/bench.py --cases 1e6x10       only cases whose label contains this
      python perf/bench.py --quick              smaller cases, fewer reps (under a minute)
      python perf/bench.py --threads 1          numba_lse and torch on one thread
      python perf/bench.py --write              also write results.md, ratios.png, README
      python perf/bench.py --no-startup         skip the start-up section (fresh processes)
      python perf/bench.py --no-output-cache    every numba_lse output fresh memory
      python perf/bench.py --reps 11 --case-seconds 30
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# OpenMP threads (numba_lse's default threading layer, and torch) that spin while waiting
# starve each other and the neighbours on a small shared machine: with the default policy both
# took 20-30 ms for a 1e6 logsumexp that takes 2 ms with PASSIVE.  Set before any OpenMP
# runtime loads; export OMP_WAIT_POLICY=ACTIVE to measure the spinning default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402  (after the environment is set)

import llvmlite.binding as llvm  # noqa: E402
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

# The start-up section lives in perf/startup.py, beside this file.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import (StartupResult, measure_startup, startup_summary,  # noqa: E402
                     startup_table)


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input shape and the axis the op works along (for the losses: the class axis).
    The data are standard normal times ``scale``."""

    label: str
    shape: tuple[int, ...]
    axis: int | None
    scale: float = 1.0


@dataclass
class Inputs:
    """What an op is called with: ``x`` (logits, or log-probabilities for nll_loss), the axis,
    and the class-index ``target`` of the losses (None for the other ops)."""

    x: np.ndarray
    axis: int | None
    target: np.ndarray | None = None


def as_numpy(result) -> np.ndarray | tuple[np.ndarray, ...]:
    """An output as NumPy: an array, or a tuple of them (loss, grad)."""
    if isinstance(result, tuple):
        return tuple(np.asarray(r) for r in result)
    return np.asarray(result)


@dataclass
class Impl:
    """One implementation of an op.

    ``prepare(inputs)`` runs outside the timed region and turns the NumPy inputs into what the
    implementation consumes (torch tensors, jax arrays and a jitted function, ...);
    ``call(prepared)`` is the timed call; ``to_numpy(result)`` runs outside timing.
    ``applies(inputs)``: False where the implementation is not meant to run (shown as n/a).
    """

    name: str
    prepare: Callable[[Inputs], Any]
    call: Callable[[Any], Any]
    to_numpy: Callable[[Any], Any] = as_numpy
    applies: Callable[[Inputs], bool] = lambda inp: True


@dataclass(frozen=True)
class CaseSet:
    full: tuple[Case, ...]
    quick: tuple[Case, ...]


@dataclass
class OpSpec:
    """An op: numba_lse's function, its peers, its float64 reference and its cases.

    ``func`` is the numba_lse function's name (default: ``name``); ``ours(func, inputs)``
    calls it.  ``kernel(x, axis, target)`` for each peer is written against one framework;
    the ``*_impl`` adapters below do the conversions.  ``reference`` returns one float64
    array, or a tuple of them for an op with several ``outputs`` (loss, grad).
    ``error_floor`` (one per output): the error is |out - ref| / max(|ref|, error_floor), so
    1 makes it absolute where |ref| < 1 (right for log-domain results near 0), and a tiny
    floor keeps it relative (right for probabilities and gradients) -- down to the smallest
    normal number of the dtype, below which every error is absolute.  ``is_loss``: takes a
    class-index target, and its ``x`` comes from ``make_x`` (log-probabilities for nll_loss).
    """

    name: str
    ours: Callable[[Callable, Inputs], Any]
    peers: Callable[[], list[Impl]]
    reference: Callable[[Inputs], Any]
    case_sets: tuple[str, ...] = ("general",)
    func: str | None = None
    outputs: tuple[str, ...] = ("out",)
    error_floor: tuple[float, ...] = (1.0,)
    is_loss: bool = False
    make_x: Callable[[np.ndarray], np.ndarray] | None = None
    bytes_read: Callable[[Inputs], int] = lambda inp: inp.x.nbytes + (
        0 if inp.target is None else inp.target.nbytes)

    @property
    def func_name(self) -> str:
        return self.func or self.name


@dataclass
class ImplResult:
    name: str
    times: list[float] = field(default_factory=list)
    errors: tuple[float, ...] = ()  # max relative error of each output
    wrong: bool = False
    skipped: bool = False  # not meant for this case (Impl.applies)
    error: str | None = None  # the exception raised at warm-up, if any

    @property
    def max_rel_err(self) -> float:
        return max(self.errors) if self.errors else float("nan")

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
    bytes_moved: int  # input(s) read + output(s) written, by numba_lse
    results: list[ImplResult]  # numba_lse first
    reps: int  # interleaved reps done (the time cap may stop before the requested count)
    seconds: float  # wall time of the whole case (data, reference, warm-up and reps)
    loop_seconds: float  # of which the timed loop

    @property
    def ours(self) -> ImplResult:
        return self.results[0]

    @property
    def best_peer(self) -> ImplResult | None:
        """The fastest peer whose output passed the error check."""
        return min((p for p in self.results[1:] if p.usable), key=lambda p: p.median_ms,
                   default=None)

    @property
    def ratio(self) -> float:
        """best correct peer / numba_lse (> 1: numba_lse is faster); nan without either."""
        best = self.best_peer
        return best.median_ms / self.ours.median_ms if best and self.ours.times else math.nan

    @property
    def gbs(self) -> float:
        """numba_lse's GB/s: bytes read + written over its median time."""
        return (self.bytes_moved / (self.ours.median_ms / 1e3) / 1e9 if self.ours.times
                else math.nan)

    def roof_percent(self, copy_roof_gbs: float) -> float:
        """numba_lse's GB/s as a percentage of the copy roof (read + write GB/s)."""
        return 100.0 * self.gbs / copy_roof_gbs


# --------------------------------------------------------------------------------------------
# Framework adapters: kernel(x, axis, target) -> Impl
# --------------------------------------------------------------------------------------------


def numpy_impl(name: str, kernel: Callable) -> Impl:
    """NumPy/SciPy kernels take the NumPy arrays as they are."""
    return Impl(name, lambda inp: inp, lambda inp: kernel(inp.x, inp.axis, inp.target))


def _torch_prepare(inp: Inputs):
    target = None if inp.target is None else torch.from_numpy(inp.target)
    return torch.from_numpy(inp.x), inp.axis, target  # from_numpy shares memory: no copy


def torch_to_numpy(result):
    if isinstance(result, tuple):
        return tuple(r.detach().numpy() for r in result)
    return result.detach().numpy()


def torch_impl(name: str, kernel: Callable, applies: Callable[[Inputs], bool] | None = None
               ) -> Impl:
    return Impl(name, _torch_prepare, lambda p: kernel(*p), torch_to_numpy,
                applies or (lambda inp: True))


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
    return jax.block_until_ready(jitted(x, target))  # an array or a tuple (loss, grad)


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
    """log_softmax by the max shift, then the gather."""
    return naive_nll_loss(naive_log_softmax(logits, -1), None, target)


def naive_cross_entropy_grad(logits, _, target):
    """(loss, (softmax - one-hot) / N): the softmax from the log_softmax (in place), the one-hot
    subtracted in place at the targets (no N x C one-hot array)."""
    rows = np.arange(len(target))
    log_p = naive_log_softmax(logits, -1)
    loss = -np.mean(log_p[rows, target])
    grad = np.exp(log_p, out=log_p)
    grad[rows, target] -= 1
    grad /= len(target)
    return loss, grad


def scipy_cross_entropy(logits, _, target):
    lse = scipy.special.logsumexp(logits, axis=-1)
    return np.mean(lse - logits[np.arange(len(target)), target])


def torch_log1m_nxn(t, dim, _=None):
    """log(1 - softmax) as the logsumexp of each row without its own entry (the seed's trick):
    an (..., n, n) expansion plus -inf on the diagonal, minus the row's logsumexp.  Right at
    dominant entries, but only absolutely accurate: for a small p, log(1 - p) ~ -p is the
    difference of two nearly equal logsumexps, so its relative error grows as 1/p."""
    n = t.shape[-1]
    minus_inf_diagonal = torch.diag(torch.full((n,), -math.inf, dtype=t.dtype))
    expanded = t.unsqueeze(-2).expand(*t.shape[:-1], n, n)
    return (expanded + minus_inf_diagonal).logsumexp(-1) - t.logsumexp(-1, keepdim=True)


def short_last_axis_rows(inp: Inputs, longest: int = 64) -> bool:
    """Where the n x n trick is meant to run: 2-D, along the last axis, n <= 64."""
    return (inp.x.ndim == 2 and inp.axis in (-1, 1) and inp.x.shape[-1] <= longest)


def jax_gather(x, target):
    return jnp.take_along_axis(x, target[:, None], axis=-1)[:, 0]


def jax_nll_loss(log_probs, target):
    return -jnp.mean(jax_gather(log_probs, target))


def jax_cross_entropy(logits, target):
    return jax_nll_loss(jax.nn.log_softmax(logits, axis=-1), target)


def torch_cross_entropy_grad_prepare(inp: Inputs):
    return torch.from_numpy(inp.x).requires_grad_(True), torch.from_numpy(inp.target)


def torch_cross_entropy_grad_call(prepared):
    """Forward and backward.  The gradient is taken off x (x.grad = None), so the next call
    allocates a fresh one and freeing this one happens outside the timed region."""
    x, target = prepared
    loss = torch_f.cross_entropy(x, target)
    loss.backward()
    grad, x.grad = x.grad, None
    return loss.detach(), grad


def call_ours_over_axis(func, inp: Inputs):
    return func(inp.x, axis=inp.axis)


def call_ours_loss(func, inp: Inputs):
    return func(inp.x, inp.target)


def call_ours_loss_and_grad(func, inp: Inputs):
    return func(inp.x, inp.target, return_grad=True)


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
    # No library has log(1 - softmax): every peer but "torch nxn" is log1p(-softmax) in its
    # framework, which cancels where softmax is close to 1 (the x30 case).
    sp = (lambda x, axis, _: np.log1p(-scipy.special.softmax(x, axis=axis))) if scipy else None
    torch_func = (lambda t, dim: torch.log1p(-torch.softmax(t, dim))) if torch else None
    peers = softmax_family_peers(
        naive_log1m_softmax, sp, torch_func,
        {"jax.nn": jax.nn.softmax} if jax else {}, jax_wrap=lambda p: jnp.log1p(-p))
    if torch is not None:
        at = next(i for i, p in enumerate(peers) if p.name == "torch") + 1
        peers.insert(at, torch_impl("torch nxn", torch_log1m_nxn, short_last_axis_rows))
    return peers


def nll_loss_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_nll_loss)]
    if torch is not None:
        peers.append(torch_impl("torch", lambda t, _, target: torch_f.nll_loss(t, target)))
    if jax is not None:
        peers.append(jax_impl("jax", lambda a, _, t: jax_nll_loss(a, t)))
    return peers


def cross_entropy_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_cross_entropy)]
    if scipy is not None:
        peers.append(numpy_impl("scipy", scipy_cross_entropy))
    if torch is not None:
        peers.append(torch_impl("torch", lambda t, _, target: torch_f.cross_entropy(t, target)))
    if jax is not None:
        peers.append(jax_impl("jax", lambda a, _, t: jax_cross_entropy(a, t)))
    return peers


def cross_entropy_grad_peers() -> list[Impl]:
    peers = [numpy_impl("numpy", naive_cross_entropy_grad)]
    if torch is not None:
        peers.append(Impl("torch", torch_cross_entropy_grad_prepare,
                          torch_cross_entropy_grad_call, torch_to_numpy))
    if jax is not None:
        value_and_grad = jax.value_and_grad(jax_cross_entropy)
        peers.append(jax_impl("jax", lambda a, _, t: value_and_grad(a, t)))
    return peers


def scipy_reference(name: str) -> Callable[[Inputs], np.ndarray]:
    """SciPy's function on the float64 input: independent of numba_lse."""
    return lambda inp: np.asarray(getattr(scipy.special, name)(inp.x, axis=inp.axis),
                                  dtype=np.float64)


def log1m_softmax_reference(inp: Inputs) -> np.ndarray:
    """log(1 - softmax) in float64 with SciPy: log1p(-p), except where p > 1/2 (at most one
    entry per slice), where 1 - p cancels: there, the logsumexp of the other entries minus
    the logsumexp of all."""
    x, axis = inp.x, inp.axis
    p = scipy.special.softmax(x, axis=axis)
    with np.errstate(divide="ignore"):  # log1p(-1) at p == 1, replaced below
        out = np.log1p(-p)
    dominant = p > 0.5
    if dominant.any():
        lse = scipy.special.logsumexp(x, axis=axis, keepdims=True)
        others = scipy.special.logsumexp(np.where(dominant, -np.inf, x), axis=axis,
                                         keepdims=True)
        out = np.where(dominant, others - lse, out)
    return out


def cross_entropy_grad_reference(inp: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """(loss, (scipy softmax - one-hot) / N) in float64."""
    n = len(inp.target)
    grad = scipy.special.softmax(inp.x, axis=-1)
    grad[np.arange(n), inp.target] -= 1
    grad /= n
    return np.float64(scipy_cross_entropy(inp.x, None, inp.target)), grad


def log_probs_of(x64: np.ndarray) -> np.ndarray:
    return scipy.special.log_softmax(x64, axis=-1)


def gathered_bytes(inp: Inputs) -> int:
    """nll_loss reads one entry per row (and the target), not the whole input."""
    return inp.target.size * inp.x.itemsize + inp.target.nbytes


# The registry.  Append an OpSpec to benchmark a new op; it runs once numba_lse has it.
OPS: list[OpSpec] = [
    OpSpec("logsumexp", call_ours_over_axis, logsumexp_peers, scipy_reference("logsumexp")),
    OpSpec("softmax", call_ours_over_axis, softmax_peers, scipy_reference("softmax"),
           error_floor=(1e-300,)),
    OpSpec("log_softmax", call_ours_over_axis, log_softmax_peers, scipy_reference("log_softmax")),
    # log(1 - p) is about -p for small p: relative error, so a tiny floor.
    OpSpec("log1m_softmax", call_ours_over_axis, log1m_softmax_peers, log1m_softmax_reference,
           case_sets=("general", "dominant"), error_floor=(1e-300,)),
    OpSpec("nll_loss", call_ours_loss, nll_loss_peers,
           lambda inp: naive_nll_loss(inp.x, None, inp.target), case_sets=("loss",),
           is_loss=True, make_x=log_probs_of, bytes_read=gathered_bytes),
    OpSpec("cross_entropy", call_ours_loss, cross_entropy_peers,
           lambda inp: scipy_cross_entropy(inp.x, None, inp.target), case_sets=("loss",),
           is_loss=True),
    OpSpec("cross_entropy+grad", call_ours_loss_and_grad, cross_entropy_grad_peers,
           cross_entropy_grad_reference, case_sets=("loss",), func="cross_entropy",
           outputs=("loss", "grad"), error_floor=(1.0, 1e-300), is_loss=True),
]

TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-8}

CASE_SETS: dict[str, CaseSet] = {
    "general": CaseSet(
        full=(Case("1e7 vector, axis=None", (10_000_000,), None),
              Case("4096x4096, axis=-1", (4096, 4096), -1),
              Case("1e6x10, axis=-1", (1_000_000, 10), -1),
              Case("1000x1e5, axis=-1", (1000, 100_000), -1),
              Case("4096x4096, axis=0", (4096, 4096), 0)),
        quick=(Case("1e6 vector, axis=None", (1_000_000,), None),
               Case("1024x1024, axis=-1", (1024, 1024), -1),
               Case("1e5x10, axis=-1", (100_000, 10), -1),
               Case("20x1e5, axis=-1", (20, 100_000), -1),
               Case("1024x1024, axis=0", (1024, 1024), 0))),
    # Standard normal x30: most rows of 10 have an entry with 1 - p below float32's epsilon
    # (log1p(-p) = -inf) and many below float64's relative precision.
    "dominant": CaseSet(
        full=(Case("1e5x10 x30 (dominant entries), axis=-1", (100_000, 10), -1, 30.0),),
        quick=(Case("1e5x10 x30 (dominant entries), axis=-1", (100_000, 10), -1, 30.0),)),
    "loss": CaseSet(
        full=(Case("1e6x10", (1_000_000, 10), -1),
              Case("4096x1000", (4096, 1000), -1),
              Case("256x32000", (256, 32_000), -1)),
        quick=(Case("1e5x10", (100_000, 10), -1),
               Case("1024x1000", (1024, 1000), -1),
               Case("64x32000", (64, 32_000), -1))),
}

MIN_REPS = 3  # the time cap never stops a case before this many reps
# A case whose reps are quick goes on past --reps until its timed loop has run this long (up
# to MAX_REPS): a median of 9 calls of 20 us is noise.
QUICK_CASE_SECONDS = 1.0
MAX_REPS = 1000
ORDER_SEED = 0  # the orders of the interleaved reps (``bench_case``)
SMALL_CALLS = 2000  # calls per implementation in the small-input table
SMALL_SIZE = 100


def cases_for(op: OpSpec, quick: bool, label_filter: str | None = None) -> list[Case]:
    cases = [c for s in op.case_sets
             for c in (CASE_SETS[s].quick if quick else CASE_SETS[s].full)]
    return [c for c in cases if label_filter is None or label_filter in c.label]


# --------------------------------------------------------------------------------------------
# Measuring time and errors
# --------------------------------------------------------------------------------------------


ERROR_CHUNK = 1 << 18  # elements per block of the error computation (temporaries stay small)


def max_relative_error(out: np.ndarray, ref: np.ndarray, floor: float) -> tuple[float, bool]:
    """(max |out - ref| / max(|ref|, floor) over finite entries, whether non-finites agree).
    ``floor`` is at least the output dtype's smallest normal number (see check_output).
    Blockwise: on 1e8 entries whole-array temporaries cost more time than the op."""
    out = np.asarray(out)
    if out.shape != ref.shape:
        return float("inf"), False
    out_flat, ref_flat = out.reshape(-1), ref.reshape(-1)
    worst, specials_agree = 0.0, True
    for start in range(0, ref_flat.size, ERROR_CHUNK):
        o = out_flat[start:start + ERROR_CHUNK].astype(np.float64)
        r = ref_flat[start:start + ERROR_CHUNK]
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(o - r)
            diff /= np.maximum(np.abs(r), floor)
        finite = np.isfinite(r)
        if not finite.all():
            specials_agree &= bool(np.array_equal(o[~finite], r[~finite], equal_nan=True))
            diff[~finite] = 0.0
        # nan where the reference is finite compares as nan: count it as an infinite error.
        worst = max(worst, float("inf") if np.isnan(diff).any() else float(diff.max()))
    return worst, specials_agree


def as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def check_output(res: ImplResult, out, reference: tuple, floors: tuple[float, ...],
                 dtype: np.dtype) -> None:
    """Fill res.errors and res.wrong from an output (an array or a tuple like reference)."""
    out = as_tuple(out)
    if len(out) != len(reference):
        res.errors, res.wrong = (float("inf"),), True
        return
    # Below the smallest normal number of the dtype the error is absolute: a float32 output
    # cannot hold a float64 reference of 1e-60, and 0 is its correct rounding.
    tiny = float(np.finfo(dtype).tiny)
    checks = [max_relative_error(o, r, max(f, tiny)) for o, r, f in zip(out, reference, floors)]
    res.errors = tuple(err for err, _ in checks)
    res.wrong = (not all(agree for _, agree in checks)
                 or not max(res.errors) <= TOLERANCE[np.dtype(dtype)])


@functools.lru_cache(maxsize=None)
def case_data(shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Standard normal data times ``scale``, seeded by the shape: every op (and the memory
    table) gets the same data for a shape, generated once (1e8 normals take seconds).  Never
    written to: ops and references leave their inputs alone."""
    x = np.random.default_rng([12345, *shape]).standard_normal(shape)
    if scale != 1.0:
        x *= scale
    return x


def loss_target(n_rows: int, n_classes: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, n_classes, n_rows)


def make_inputs(op: OpSpec, case: Case, dtype: np.dtype, x64: np.ndarray) -> tuple[Inputs, Inputs]:
    """(inputs at ``dtype``, the same values in float64 for the reference)."""
    target = None
    if op.is_loss:
        x64 = op.make_x(x64) if op.make_x else x64
        target = loss_target(*case.shape)
    x = x64 if dtype == np.float64 else x64.astype(dtype)
    return Inputs(x, case.axis, target), Inputs(x.astype(np.float64, copy=False), case.axis,
                                                 target)


def ours_impl(op: OpSpec) -> Impl:
    func = getattr(numba_lse, op.func_name)
    return Impl("numba_lse", lambda inp: inp, lambda inp: op.ours(func, inp))


def more_reps(done: int, reps: int, elapsed: float, case_seconds: float) -> bool:
    """Whether a case's timed loop starts another rep: MIN_REPS always, then ``reps`` unless
    the loop has run ``case_seconds``, and more (to MAX_REPS) while it has run less than
    QUICK_CASE_SECONDS."""
    if done < MIN_REPS:
        return True
    if elapsed >= case_seconds:
        return False
    return done < reps or (elapsed < QUICK_CASE_SECONDS and done < MAX_REPS)


def bench_case(op: OpSpec, case: Case, dtype: np.dtype, x64: np.ndarray, reps: int,
               case_seconds: float) -> CaseResult:
    """Warm up and check every implementation, then time ``reps`` interleaved reps (fewer,
    but at least MIN_REPS, once the timed loop has run longer than ``case_seconds``)."""
    start = time.perf_counter()
    inputs, inputs64 = make_inputs(op, case, dtype, x64)
    reference = tuple(np.asarray(r, dtype=np.float64) for r in as_tuple(op.reference(inputs64)))
    del inputs64
    impls = [ours_impl(op)] + op.peers()
    results = [ImplResult(impl.name) for impl in impls]
    bytes_moved = op.bytes_read(inputs) + sum(r.size for r in reference) * inputs.x.itemsize

    # Prepare (conversions, jit objects) and warm up outside timing; check every output.
    prepared: list[Any] = []
    for impl, res in zip(impls, results):
        p = None
        if not impl.applies(inputs):
            res.skipped = True
        else:
            try:
                p = impl.prepare(inputs)
                out = impl.to_numpy(impl.call(p))
            except Exception as exc:  # a peer that cannot do this case is reported, not fatal
                res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:100]
                p = None
            else:
                check_output(res, out, reference, op.error_floor, dtype)
                del out
        prepared.append(p)

    # Interleaved repetitions: rep 1 of every implementation, then rep 2, ..., each rep in
    # an order of its own, drawn at random (seeded): a small call is slower after JAX's than
    # after NumPy's, since it finds the caches cold, and rotating one order keeps who follows
    # whom (numba_lse followed JAX in three reps of four: its nll_loss on 4096x1000 measured
    # 27 us that way and 24 us in random orders, torch's 28 us both ways).
    runs = list(zip(impls, results, prepared))
    order = random.Random(ORDER_SEED)
    loop_start, done = time.perf_counter(), 0
    while more_reps(done, reps, time.perf_counter() - loop_start, case_seconds):
        for impl, res, p in order.sample(runs, len(runs)):
            if p is None:
                continue
            t0 = time.perf_counter()
            out = impl.call(p)
            res.times.append(time.perf_counter() - t0)
            del out  # freeing the output stays outside the timed region
        done += 1

    loop_seconds = time.perf_counter() - loop_start

    del prepared, reference, inputs
    gc.collect()
    return CaseResult(op.name, case, np.dtype(dtype).name, bytes_moved, results, done,
                      time.perf_counter() - start, loop_seconds)


@numba.njit(parallel=True, fastmath={"reassoc"})
def _parallel_sum(a):
    # Reassociated, so that each thread's sum is split across vector lanes: a sum in order
    # waits on each addition (4 cycles), which held the two-thread "roof" to ~12 GB/s on the
    # Intel VM of sessions 29-31, where this one reads 21-26 GB/s.
    total = 0.0
    for i in numba.prange(a.size):
        total += a[i]
    return total


COPY_ROOF = "copy roof, np.copyto (read+write)"  # the roof of the "% of roof" column


def machine_roofs(n_bytes: int, reps: int) -> dict[str, float]:
    """Bandwidths in GB/s: np.sum (one thread, read), np.copyto (bytes read + written), and a
    Numba prange sum over all Numba threads (read; vectorised)."""
    a = np.random.default_rng(0).standard_normal(n_bytes // 8)
    b = np.empty_like(a)
    kernels = {
        "read roof, np.sum (1 thread)": (lambda: np.sum(a), a.nbytes),
        COPY_ROOF: (lambda: np.copyto(b, a), 2 * a.nbytes),
        f"read roof, numba prange sum, vectorised ({numba.get_num_threads()} threads)":
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
# Small inputs: per-call overhead
# --------------------------------------------------------------------------------------------


def small_case(op: OpSpec) -> Case:
    if op.is_loss:
        return Case(f"1x{SMALL_SIZE}", (1, SMALL_SIZE), -1)
    return Case(f"{SMALL_SIZE} vector", (SMALL_SIZE,), None)


def bench_small(ops: list[OpSpec], calls: int) -> list[CaseResult]:
    """Every op on one 100-element float64 input, ``calls`` interleaved calls, no time cap."""
    out = []
    for op in ops:
        case = small_case(op)
        out.append(bench_case(op, case, np.dtype(np.float64), case_data(case.shape), calls,
                              math.inf))
    return out


# --------------------------------------------------------------------------------------------
# Peak extra memory of one call: logsumexp, the softmax family and cross_entropy+grad
# --------------------------------------------------------------------------------------------

MEMORY_OPS = ("logsumexp", "softmax", "log_softmax", "log1m_softmax", "cross_entropy+grad")
MEMORY_IMPLS = ("numba_lse", "numpy", "scipy", "torch")
TRACED_IMPLS = ("numba_lse", "numpy", "scipy")  # NumPy arrays: tracemalloc sees them
RSS_IMPLS = ("numba_lse", "numpy", "torch")  # torch by RSS; numba_lse, numpy as a check
MIB = 2.0**20
MIN_RATIO_OUTPUT = 1024  # below this many output bytes, a multiple of the output means nothing

# One large 2-D case and the vector for the ops over an axis; the losses run the loss set.
MEMORY_CASES = CaseSet(
    full=(Case("4096x4096, axis=-1", (4096, 4096), -1),
          Case("1e7 vector, axis=None", (10_000_000,), None)),
    quick=(Case("1024x1024, axis=-1", (1024, 1024), -1),
           Case("1e6 vector, axis=None", (1_000_000,), None)))


def memory_cases(op: OpSpec, quick: bool, label_filter: str | None) -> list[Case]:
    cases = CASE_SETS["loss"] if op.is_loss else MEMORY_CASES
    return [c for c in (cases.quick if quick else cases.full)
            if label_filter is None or label_filter in c.label]


def memory_inputs(op: OpSpec, case: Case, dtype: np.dtype) -> Inputs:
    """The inputs of a memory measurement (the same in parent and child)."""
    x = case_data(case.shape)
    if op.make_x is not None:
        x = op.make_x(x)
    target = loss_target(*case.shape) if op.is_loss else None
    return Inputs(x.astype(dtype, copy=False), case.axis, target)


def memory_calls(op: OpSpec, inputs: Inputs, names: tuple[str, ...]
                 ) -> dict[str, Callable[[], Any]]:
    """One call per implementation in ``names`` that the op has and that applies, prepared
    beforehand (torch tensors share the NumPy memory: no copies).  The same Impls as the
    timing tables: torch's cross_entropy+grad takes the gradient off the logits every call."""
    impls = {impl.name: impl for impl in [ours_impl(op)] + op.peers()}
    calls: dict[str, Callable[[], Any]] = {}
    for name in names:
        impl = impls.get(name)
        if impl is not None and impl.applies(inputs):
            calls[name] = functools.partial(impl.call, impl.prepare(inputs))
    return calls


def traced_peak(call: Callable[[], Any]) -> int:
    """Peak bytes traced by tracemalloc during ``call()`` (its result included)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


@numba.njit
def _allocate_in_numba(n):
    a = np.empty(n)
    a[0] = 1.0
    return a[0]


def numba_allocations_traced() -> bool:
    """Whether an array allocated (and freed) inside a Numba function shows in tracemalloc."""
    _allocate_in_numba(1)
    n = 1 << 20
    return traced_peak(lambda: _allocate_in_numba(n)) >= 8 * n


def _proc_status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1))


def peak_rss_resettable() -> bool:
    """Linux >= 4.0: writing 5 to /proc/self/clear_refs resets VmHWM (the peak RSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_kib("VmHWM") <= _proc_status_kib("VmRSS") + 1024
    except (OSError, AttributeError):
        return False


def rss_spec(op: str, case: Case, dtype: np.dtype, impl: str) -> str:
    """A measurement as the child reads it: op:ROWSxCOLS:axis:dtype:impl
    (e.g. softmax:4096x4096:-1:float64:torch)."""
    shape = "x".join(str(n) for n in case.shape)
    return f"{op}:{shape}:{case.axis}:{dtype.name}:{impl}"


def parse_rss_spec(spec: str) -> tuple[OpSpec, Case, np.dtype, str]:
    op_name, shape_text, axis_text, dtype_name, impl = spec.split(":")
    shape = tuple(int(v) for v in shape_text.split("x"))
    axis = None if axis_text == "None" else int(axis_text)
    op = next(o for o in OPS if o.name == op_name)
    return op, Case(spec, shape, axis), np.dtype(dtype_name), impl


def rss_probe(specs: list[str]) -> None:
    """Child process: for each spec (rss_spec), print {spec, bytes}: the peak RSS of one call
    minus the RSS before it (-1: no such implementation).

    With a resettable VmHWM each call is warmed up at full size (then freed), the peak reset
    and the call repeated.  Otherwise (a fresh process per spec) it is warmed up on two rows
    and the ru_maxrss high-water delta is taken: a lower bound."""
    resettable = peak_rss_resettable()
    numba_lse.set_output_cache(0)  # what a call needs, not the reuse of a warm-up's output
    for spec in specs:
        op, case, dtype, name = parse_rss_spec(spec)
        inputs = memory_inputs(op, case, dtype)
        call = memory_calls(op, inputs, (name,)).get(name)
        if call is None:
            print(json.dumps({"spec": spec, "bytes": -1}), flush=True)
            continue
        if resettable:
            call()  # warm-up (compiles, thread pools), freed before the measurement
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")
            before = _proc_status_kib("VmRSS") * 1024
            result = call()
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            target = None if inputs.target is None else inputs.target[:2].copy()
            small = Inputs(inputs.x[:2].copy(), inputs.axis, target)
            memory_calls(op, small, (name,))[name]()
            gc.collect()
            unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes or KiB
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
            result = call()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
        del result, call, inputs
        gc.collect()
        print(json.dumps({"spec": spec, "bytes": peak - before}), flush=True)


def rss_peaks(specs: list[str], threads: int | None) -> dict[str, int]:
    """Run rss_probe in a fresh interpreter.  MALLOC_MMAP_THRESHOLD_ pins glibc's threshold at
    128 KiB: every large array is its own mapping, returned to the system when freed."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-probe", ",".join(specs)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["spec"]: r["bytes"] for r in rows}


@dataclass
class MemoryRow:
    op: str
    case: Case
    dtype: str
    input_bytes: int  # x (and the targets)
    output_bytes: int  # what numba_lse returns (loss and gradient for cross_entropy+grad)
    traced: dict[str, int]  # tracemalloc peaks (numba_lse, numpy, scipy where it has the op)
    rss: dict[str, int]  # peak RSS deltas from the child (numba_lse, numpy, torch; -1: none)


def output_nbytes(result) -> int:
    return sum(np.asarray(r).nbytes for r in as_tuple(result))


def memory_notes(traced_ok: bool, resettable: bool) -> list[str]:
    return [
        "peak extra memory of one call: the inputs exist before it, the outputs count; given as "
        "a multiple of the output (the arrays the op returns: one value per row for "
        "logsumexp, the loss and the 1x-logits gradient for cross_entropy+grad) and in bytes; "
        "the target for numba_lse is the output plus O(rows), about 1.00x; no multiple where "
        f"the output is under {MIN_RATIO_OUTPUT} bytes (logsumexp of a vector)",
        "numba_lse with its output cache off (set_output_cache(0)): the memory a call "
        "needs; with the cache on (the default) a call whose output reuses a released one's "
        "memory allocates none, and up to 1 GiB of released outputs stays with the process",
        "numba_lse, numpy, scipy: tracemalloc peak during the call (NumPy arrays are traced, "
        "including those allocated inside Numba kernels: "
        + ("verified, a 8 MiB np.empty in an njit function is seen)" if traced_ok else
           "NOT the case here: numba_lse's tracemalloc figures may miss kernel allocations)"),
        ("torch (and, as a check of the method, numba_lse and numpy): peak RSS minus RSS before "
         "the call, in a fresh subprocess, each call warmed up at full size, VmHWM reset through "
         "/proc/self/clear_refs before it, glibc MALLOC_MMAP_THRESHOLD_=128 KiB; "
         "torch has no CPU allocator statistics and its allocations bypass tracemalloc"
         if resettable else
         "torch (and numba_lse, numpy as a check): ru_maxrss high-water delta in a fresh "
         "subprocess per measurement, warmed up on 2 rows: a lower bound"),
    ]


def measure_memory(ops: list[OpSpec], quick: bool, threads: int | None,
                   label_filter: str | None) -> tuple[list[MemoryRow], list[str]]:
    """Peak extra memory of one call of every MEMORY_OPS op in ``ops``, per case and dtype."""
    traced_ok = numba_allocations_traced()
    resettable = peak_rss_resettable()
    # The memory a call needs: with the output cache on, a call after its warm-up would
    # reuse the warm-up's output and seem to need none.
    cache_limit = numba_lse.set_output_cache(0)
    try:
        return _measure_memory(ops, quick, threads, label_filter, traced_ok, resettable)
    finally:
        numba_lse.set_output_cache(cache_limit)


def _measure_memory(ops, quick, threads, label_filter, traced_ok, resettable):
    rss_impls = [name for name in RSS_IMPLS if name != "torch" or torch is not None]
    dtypes = [np.dtype(np.float32), np.dtype(np.float64)]
    plan = [(op, case, dtype) for op in ops if op.name in MEMORY_OPS
            for case in memory_cases(op, quick, label_filter) for dtype in dtypes]
    specs = [rss_spec(op.name, case, dtype, name)
             for op, case, dtype in plan for name in rss_impls]
    if resettable:  # one child: the peak is reset before every measurement
        rss = rss_peaks(specs, threads) if specs else {}
    else:  # ru_maxrss cannot be reset: a fresh child per measurement
        rss = {k: v for spec in specs for k, v in rss_peaks([spec], threads).items()}
    rows = []
    for op, case, dtype in plan:
        inputs = memory_inputs(op, case, dtype)
        calls = memory_calls(op, inputs, TRACED_IMPLS)
        output_bytes = output_nbytes(calls["numba_lse"]())  # also the warm-up: compiles
        traced = {}
        for name, call in calls.items():
            call()  # warm-up outside the traced call
            traced[name] = traced_peak(call)
        input_bytes = inputs.x.nbytes + (0 if inputs.target is None else inputs.target.nbytes)
        rows.append(MemoryRow(op.name, case, dtype.name, input_bytes, output_bytes, traced,
                              {name: rss.get(rss_spec(op.name, case, dtype, name), -1)
                               for name in rss_impls}))
        del inputs, calls
        gc.collect()
    return rows, memory_notes(traced_ok, resettable)


def format_bytes(n: int) -> str:
    if n < 0:
        return "n/a"
    if n < 1024:
        return f"{n} B"
    return f"{n / MIB:.1f} MiB" if n >= MIB / 10 else f"{n / 1024:.1f} KiB"


def memory_multiple(n: int, output: int) -> str:
    if n < 0 or output < MIN_RATIO_OUTPUT:
        return "-"
    ratio = n / output
    return f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"


def memory_table(rows: list[MemoryRow], notes: list[str]) -> list[str]:
    """One row per op, case and dtype: each implementation's peak as a multiple of the output
    (and in bytes), then the RSS check of the tracemalloc figures."""
    def cell(row: MemoryRow, name: str) -> str:
        peak = row.rss.get(name, -1) if name == "torch" else row.traced.get(name)
        if peak is None:  # no such peer for this op
            return ""
        return f"{memory_multiple(peak, row.output_bytes)} ({format_bytes(peak)})"

    header = (["op", "case", "dtype", "input", "output"]
              + [f"{name}: peak / output" for name in MEMORY_IMPLS]
              + ["check, RSS: numba_lse", "check, RSS: numpy"])
    lines = ["### Peak extra memory of one call, as a multiple of the output", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "| " + " | ".join(header) + " |", table_rule(len(header), 3)]
    for r in rows:
        cells = [r.op, r.case.label, r.dtype, format_bytes(r.input_bytes),
                 format_bytes(r.output_bytes)]
        cells += [cell(r, name) for name in MEMORY_IMPLS]
        cells += [format_bytes(r.rss.get("numba_lse", -1)), format_bytes(r.rss.get("numpy", -1))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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


def compile_target() -> str:
    """What Numba compiles for here: LLVM's name for the host CPU and its widest vectors
    (float32 peers gain twice what float64 kernels gain from 512-bit vectors)."""
    features = llvm.get_host_cpu_features()
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                           ("avx", "AVX"), ("neon", "NEON"))
                   if features.get(flag)), "no wide vectors")
    return f"LLVM target {llvm.get_host_cpu_name()}, {widest}"


def machine_text() -> str:
    return (f"CPU: {cpu_model()} ({compile_target()}), "
            f"{len(os.sched_getaffinity(0))} cores usable")


def threads_text() -> str:
    return (f"numba threads: {numba.get_num_threads()} ({numba.threading_layer()} layer)"
            + (f", torch threads: {torch.get_num_threads()}" if torch is not None else "")
            + f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")


def versions_text() -> str:
    def version(module):
        return getattr(module, "__version__", "n/a") if module is not None else "not installed"

    return (f"python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {version(scipy)}, numba {numba.__version__}, torch {version(torch)}, "
            f"jax {version(jax)}, numba_lse {numba_lse.__version__}")


def output_cache_text() -> str:
    limit = numba_lse.set_output_cache(0)
    numba_lse.set_output_cache(limit)
    if not limit:
        return "off: every output is fresh memory"
    return (f"on, up to {limit / 2**30:g} GiB: an output reuses the memory of a released one "
            "of the same size, as each rep here releases it (JAX keeps its buffers too; "
            "NumPy, SciPy and torch take fresh memory)")


def environment_lines(roofs: dict[str, float], reps: int, case_seconds: float) -> list[str]:
    lines = [
        f"- {machine_text()}",
        f"- {threads_text()}",
        f"- {versions_text()}",
        f"- {reps} interleaved reps per case, each in a random order (at least "
        f"{MIN_REPS}; no new rep after {case_seconds:g} s of timed loop; more, up to "
        f"{MAX_REPS}, while it has run less than {QUICK_CASE_SECONDS:g} s), medians; "
        f"tolerance float32 "
        f"{TOLERANCE[np.dtype(np.float32)]:g}, float64 {TOLERANCE[np.dtype(np.float64)]:g}",
        f"- load average at start (1, 5, 15 min): {load_average()}",
        f"- numba_lse's output cache (``set_output_cache``): {output_cache_text()}",
    ]
    if os.getloadavg()[0] > 0.5 * len(os.sched_getaffinity(0)):
        lines.append("- WARNING: the machine is busy; multi-threaded implementations (numba_lse, "
                     "torch) lose most when a thread is descheduled (compare --threads 1)")
    lines += [f"- {name}: {gbs:.1f} GB/s" for name, gbs in roofs.items()]
    lines.append(f"- % of roof: numba_lse's GB/s (bytes read + written / median time) over the "
                 f"{COPY_ROOF} ({roofs[COPY_ROOF]:.1f} GB/s)")
    lines += [f"- note: {note}" for note in PEER_NOTES]
    return lines


def format_time(res: ImplResult, scale: float = 1.0) -> str:
    """The median in ms (scale 1) or us (scale 1e3), with (wrong); n/a or error."""
    if res.skipped:
        return "n/a"
    if res.error is not None:
        return "error"
    value = res.median_ms * scale
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return text + (" (wrong)" if res.wrong else "")


def table_rule(n_columns: int, n_text: int) -> str:
    return "|" + "---|" * n_text + "---:|" * (n_columns - n_text)


def ratio_cell(cr: CaseResult) -> str:
    text = "n/a" if math.isnan(cr.ratio) else f"{cr.ratio:.2f}"
    return text + ("" if cr.ours.usable else " (numba_lse wrong)")


def roof_cell(cr: CaseResult, copy_roof_gbs: float) -> str:
    percent = cr.roof_percent(copy_roof_gbs)
    return "n/a" if math.isnan(percent) else f"{percent:.0f}%"


def timing_table(op: str, cases: list[CaseResult], copy_roof_gbs: float) -> list[str]:
    """Median times, numba_lse's GB/s and its fraction of the copy roof, the ratio."""
    peer_names = [r.name for r in cases[0].results[1:]]
    header = (["case", "dtype", "reps", "numba_lse ms", "numba_lse GB/s", "% of roof"]
              + [f"{n} ms" for n in peer_names] + ["best correct peer", "ratio peer/numba_lse"])
    lines = [f"### {op}: median time", "", "| " + " | ".join(header) + " |",
             table_rule(len(header), 2)]
    for cr in cases:
        best = cr.best_peer
        row = [cr.case.label, cr.dtype, str(cr.reps), format_time(cr.ours), f"{cr.gbs:.2g}",
               roof_cell(cr, copy_roof_gbs)]
        row += [format_time(p) for p in cr.results[1:]]
        row += [best.name if best else "none", ratio_cell(cr)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def error_cell(r: ImplResult) -> str:
    if r.skipped:
        return "n/a"
    if r.error is not None:
        return f"error: {r.error}"
    return " / ".join(f"{e:.1e}" for e in r.errors) + (" (wrong)" if r.wrong else "")


def error_table(op: OpSpec, cases: list[CaseResult]) -> list[str]:
    names = [r.name for r in cases[0].results]
    what = "" if len(op.outputs) == 1 else f" ({' / '.join(op.outputs)})"
    lines = [f"### {op.name}: max relative error{what} vs the float64 reference", "",
             "| case | dtype | " + " | ".join(names) + " |", table_rule(len(names) + 2, 2)]
    for cr in cases:
        cells = [error_cell(r) for r in cr.results]
        lines.append(f"| {cr.case.label} | {cr.dtype} | " + " | ".join(cells) + " |")
    return lines


def small_table(cases: list[CaseResult], calls: int) -> list[str]:
    names: list[str] = []
    for cr in cases:
        names += [r.name for r in cr.results[1:] if r.name not in names and not r.skipped]
    header = (["op", "input", "numba_lse us"] + [f"{n} us" for n in names]
              + ["scipy / numba_lse", "torch / numba_lse"])
    lines = [f"### Small inputs: per-call time, float64, median of {calls} interleaved calls",
             "", "Blank: no such peer for that op.  Ratios > 1: numba_lse is cheaper per "
             f"call.  numba_lse on {numba.get_num_threads()} Numba threads, OMP_WAIT_POLICY="
             f"{os.environ.get('OMP_WAIT_POLICY')}: where a kernel goes parallel on a tiny "
             "input, waking passive threads can cost more than the work (compare --threads 1).",
             "", "| " + " | ".join(header) + " |",
             table_rule(len(header), 2)]
    for cr in cases:
        by_name = {r.name: r for r in cr.results}
        ours = cr.results[0]

        def ratio(name: str) -> str:
            r = by_name.get(name)
            return (f"{r.median_ms / ours.median_ms:.2f}" if r is not None and r.times
                    and ours.times else "")

        row = [cr.op, cr.case.label, format_time(ours, 1e3)]
        row += [format_time(by_name[n], 1e3) if n in by_name and not by_name[n].skipped
                else "" for n in names]
        row += [ratio("scipy"), ratio("torch")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


# --------------------------------------------------------------------------------------------
# The ratio chart and the README summary
# --------------------------------------------------------------------------------------------

RATIO_TARGET = 1.5  # the goal: the best correct peer takes this much longer than numba_lse
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
DTYPE_COLORS = {"float32": "tab:blue", "float64": "tab:orange"}
CHART_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 1.5, 2, 5, 10, 20, 50, 100, 200, 500)


def chart_rows(results: list[CaseResult]) -> list[tuple[str, CaseResult | None]]:
    """(label, result) from top to bottom, an op's heading (result None) before its cases."""
    rows: list[tuple[str, CaseResult | None]] = []
    for op in dict.fromkeys(cr.op for cr in results):
        rows.append((op, None))
        rows += [(f"{cr.case.label}, {cr.dtype}", cr) for cr in results if cr.op == op]
    return rows


def ratio_chart(results: list[CaseResult], path: Path, title: str) -> bool:
    """Horizontal bars of best correct peer / numba_lse for every timed op, case and dtype,
    grouped by op, on a log axis with lines at 1 and at RATIO_TARGET.  Written to ``path``;
    False (nothing written) without matplotlib or without a single ratio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
    except ImportError as exc:
        print(f"no chart: matplotlib not available ({exc})", file=sys.stderr)
        return False
    rows = chart_rows(results)
    ratios = [cr.ratio for _, cr in rows if cr is not None and not math.isnan(cr.ratio)]
    if not ratios:
        print("no chart: no ratio to draw", file=sys.stderr)
        return False
    low = min(min(ratios), 1.0) / 1.6
    high = max(max(ratios), RATIO_TARGET) * 2.5  # room for the labels right of the bars
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.27 * len(rows)))
    ys = list(range(len(rows) - 1, -1, -1))
    for y, (_, cr) in zip(ys, rows):
        if cr is None:
            continue
        if math.isnan(cr.ratio):
            ax.text(low * 1.05, y, "no correct peer", va="center", fontsize=7, color="gray")
            continue
        ax.barh(y, cr.ratio - low, left=low, height=0.7,
                color=DTYPE_COLORS.get(cr.dtype, "gray"))
        note = f"{cr.ratio:.2f} vs {cr.best_peer.name}"
        ax.text(cr.ratio * 1.04, y, note + ("" if cr.ours.usable else " (numba_lse wrong)"),
                va="center", fontsize=7, color="black" if cr.ours.usable else "red")
    ax.set_yticks(ys)
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    for tick, (_, cr) in zip(ax.get_yticklabels(), rows):
        if cr is None:
            tick.set_fontweight("bold")
            tick.set_fontsize(9)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvline(RATIO_TARGET, color="tab:green", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.xaxis.set_major_locator(FixedLocator([t for t in CHART_TICKS if low <= t <= high]))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("best correct peer time / numba_lse time (> 1: numba_lse faster), log scale")
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=c, label=d) for d, c in DTYPE_COLORS.items()]
    handles.append(Line2D([], [], color="tab:green", linestyle="--",
                          label=f"target {RATIO_TARGET:g}"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def readme_block(results: list[CaseResult], copy_roof_gbs: float,
                 startup: StartupResult | None, results_link: str, chart_link: str | None,
                 quick: bool) -> list[str]:
    """What goes between the README markers: the machine, a summary table, start-up, links."""
    lines = [f"{machine_text()}; {threads_text()}; {versions_text()}"
             + ("; --quick cases" if quick else ""), "",
             f"Generated by `python perf/bench.py --write`.  ratio = best correct peer / "
             f"numba_lse (> 1: numba_lse faster; target {RATIO_TARGET:g}); % of roof: "
             f"numba_lse's GB/s (bytes read + written / time) over the {COPY_ROOF} "
             f"({copy_roof_gbs:.1f} GB/s).", ""]
    if results:
        header = ["op", "case", "dtype", "numba_lse ms", "best correct peer", "peer ms", "ratio",
                  "% of roof"]
        lines += ["| " + " | ".join(header) + " |", table_rule(len(header), 3)]
        for cr in results:
            best = cr.best_peer
            cells = [cr.op, cr.case.label, cr.dtype, format_time(cr.ours),
                     best.name if best else "none", format_time(best) if best else "",
                     ratio_cell(cr), roof_cell(cr, copy_roof_gbs)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if startup is not None:
        lines += ["Start-up (fresh processes):", ""] + startup_summary(startup) + [""]
    lines.append(f"Full tables: [{results_link}]({results_link})")
    if chart_link is not None:
        lines += ["", f"![ratios]({chart_link})"]
    return lines


def replace_between_markers(text: str, block: list[str]) -> str | None:
    """``text`` with the lines between README_START and README_END replaced by ``block``;
    None if the markers are missing or out of order."""
    start = text.find(README_START)
    end = text.find(README_END, start + len(README_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[:start + len(README_START)] + "\n" + "\n".join(block) + "\n" + text[end:]


def write_readme(path: Path, block: list[str]) -> bool:
    """Replace the marked part of the README; warn and leave the file alone without markers."""
    if not path.exists():
        print(f"WARNING: {path} not found: README not updated", file=sys.stderr)
        return False
    updated = replace_between_markers(path.read_text(), block)
    if updated is None:
        print(f"WARNING: {path} has no {README_START} ... {README_END} markers: "
              "README not updated", file=sys.stderr)
        return False
    path.write_text(updated)
    return True


def link_from(document: Path, target: Path) -> str:
    """``target``'s path relative to the folder of ``document`` (a Markdown link)."""
    return Path(os.path.relpath(target.resolve(), document.resolve().parent)).as_posix()


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def select_ops(requested: str | None) -> list[OpSpec]:
    available = {op.name: op for op in OPS if hasattr(numba_lse, op.func_name)}
    if requested is None:
        return list(available.values())
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"--ops: cannot benchmark {', '.join(unknown)} "
                         f"(available: {', '.join(available) or 'none'})")
    return [available[n] for n in names]


RESULTS_PATH = Path(__file__).resolve().with_name("results.md")
README_PATH = Path(__file__).resolve().parent.parent / "README.md"
CHART_NAME = "ratios.png"  # written beside results.md


def startup_ops(ops: list[OpSpec]) -> list[str]:
    """The numba_lse functions of the selected ops, once each (cross_entropy+grad: cross_entropy)."""
    return list(dict.fromkeys(op.func_name for op in ops))


def write_outputs(args: argparse.Namespace, text: str, results: list[CaseResult],
                  copy_roof_gbs: float, startup: StartupResult | None) -> None:
    """--write: results.md, the ratio chart beside it, and the README's marked part."""
    args.results.write_text(text)
    print(f"written to {args.results}", file=sys.stderr)
    chart = args.results.with_name(CHART_NAME)
    title = "numba_lse vs the best correct peer" + (" (--quick)" if args.quick else "")
    drawn = bool(results) and ratio_chart(results, chart, title)
    if drawn:
        print(f"written to {chart}", file=sys.stderr)
    block = readme_block(results, copy_roof_gbs, startup, link_from(args.readme, args.results),
                         link_from(args.readme, chart) if drawn else None, args.quick)
    if write_readme(args.readme, block):
        print(f"updated {args.readme} between {README_START} and {README_END}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer reps")
    parser.add_argument("--write", action="store_true",
                        help="also write perf/results.md, the chart perf/ratios.png and the "
                             f"README's part between {README_START} and {README_END}")
    parser.add_argument("--ops", help="comma-separated ops (default: every op numba_lse has)")
    parser.add_argument("--cases", help="only the cases whose label contains this text")
    parser.add_argument("--reps", type=int,
                        help="interleaved repetitions (default 5 quick, 9 full)")
    parser.add_argument("--case-seconds", type=float,
                        help=f"no new rep once a case's timed loop ran this long (at least "
                             f"{MIN_REPS} reps; default 2 quick, 8 full; 0: no cap)")
    parser.add_argument("--threads", type=int,
                        help="threads for numba_lse and torch (default: their own defaults)")
    parser.add_argument("--no-output-cache", action="store_true",
                        help="numba_lse with its output cache off: every output fresh memory")
    parser.add_argument("--no-small", action="store_true", help="skip the small-input table")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the start-up section (import, first call with a warm cache, "
                             "cold compile; fresh processes, about 3 minutes, 1 with --quick)")
    # Internal: where --write writes (to try it on copies), and the memory-measuring child.
    parser.add_argument("--results", type=Path, default=RESULTS_PATH, help=argparse.SUPPRESS)
    parser.add_argument("--readme", type=Path, default=README_PATH, help=argparse.SUPPRESS)
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.no_output_cache:
        numba_lse.set_output_cache(0)
    if args.threads:
        numba.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    if args.rss_probe:
        rss_probe(args.rss_probe.split(","))
        return
    if scipy is None:
        raise SystemExit("scipy is needed for the float64 reference")

    reps = args.reps or (5 if args.quick else 9)
    case_seconds = args.case_seconds if args.case_seconds is not None else (
        2.0 if args.quick else 8.0)
    case_seconds = case_seconds or math.inf
    ops = select_ops(args.ops)
    started = time.perf_counter()

    roofs = machine_roofs((128 if args.quick else 512) * 2**20, reps)
    header = ["# numba_lse benchmark" + (" (--quick)" if args.quick else ""), ""]
    header += environment_lines(roofs, reps, case_seconds)
    print("\n".join(header), flush=True)

    sections: list[str] = []
    all_results: list[CaseResult] = []  # every timed case, for the chart and the README

    def emit(lines: list[str]) -> None:
        sections.append("\n".join(lines))
        print("\n" + sections[-1], flush=True)

    for op in ops:
        op_started = time.perf_counter()
        op_results: list[CaseResult] = []
        for case in cases_for(op, args.quick, args.cases):
            for dtype in (np.float32, np.float64):
                x64 = case_data(case.shape, case.scale)
                cr = bench_case(op, case, np.dtype(dtype), x64, reps, case_seconds)
                op_results.append(cr)
                print(f"  [{op.name}] {case.label} {cr.dtype}: {cr.seconds:.1f} s, of which "
                      f"{cr.reps} reps {cr.loop_seconds:.1f} s", file=sys.stderr, flush=True)
        all_results += op_results
        if op_results:
            emit(timing_table(op.name, op_results, roofs[COPY_ROOF]) + [""]
                 + error_table(op, op_results)
                 + ["", f"_{op.name}: {time.perf_counter() - op_started:.0f} s_"])

    if not args.no_small:
        small_started = time.perf_counter()
        emit(small_table(bench_small(ops, SMALL_CALLS), SMALL_CALLS)
             + ["", f"_small inputs: {time.perf_counter() - small_started:.0f} s_"])

    if not args.no_memory and any(op.name in MEMORY_OPS for op in ops):
        memory_started = time.perf_counter()
        rows, notes = measure_memory(ops, args.quick, args.threads, args.cases)
        if rows:
            emit(memory_table(rows, notes)
                 + ["", f"_memory: {time.perf_counter() - memory_started:.0f} s_"])

    startup = None
    if not args.no_startup:
        startup = measure_startup(startup_ops(ops), args.threads, args.quick,
                                  progress=lambda text: print(f"  [start-up] {text}",
                                                              file=sys.stderr, flush=True))
        emit(startup_table(startup) + ["", f"_start-up: {startup.seconds:.0f} s_"])

    footer = (f"_total wall time {time.perf_counter() - started:.0f} s; "
              f"load average at end: {load_average()}_")
    print("\n" + footer)
    if args.write:
        text = "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n\n" + footer + "\n"
        write_outputs(args, text, all_results, roofs[COPY_ROOF], startup)


if __name__ == "__main__":
    main()
