"""GPU speed of numba_lse against torch and CuPy, with every result checked first.

Run on the device machine (its python3 has CUDA 13, PyTorch and CuPy; Numba and numba-cuda
come from the tarball, numba_lse from the working tree; .device/ is git-ignored, so the
device call must carry it):

    tar -xJf .device/site312.tar.xz -C /tmp && export PYTHONPATH=/tmp/site312:$PWD CUDA_HOME=/usr/local/cuda && python perf/gpu_bench.py --write

and here, without a GPU, to know that the script runs end to end (Numba's CUDA simulator,
tiny shapes, numba device arrays; torch and CuPy on the GPU are absent, so no peers):

    NUMBA_ENABLE_CUDASIM=1 python perf/gpu_bench.py --smoke

What it measures.
  Cases (CASES, LOSS_CASES): logsumexp, softmax, log_softmax and log1m_softmax on a 1e8
  vector (axis=None), 4096x4096 (last axis), 1e6x10 (short rows), 1000x1e5 (long rows),
  4096x4096 over axis 0 and 32768x4096 (big rows: the >= 90 % of HBM target), in float32,
  float64 and float16; nll_loss, cross_entropy and cross_entropy with return_grad on
  (N, C) = (4096, 32000) and (65536, 1000), class-index targets, float32 and float64.
  numba_lse is given torch CUDA tensors (numba device arrays in the simulator).
  Peers (PEERS): torch (torch.logsumexp, softmax, log_softmax; log1m_softmax as
  torch.log1p(-torch.softmax), the naive formula, as no library has it; F.nll_loss,
  F.cross_entropy, and cross_entropy forward + backward for the gradient) and CuPy
  (cupyx.scipy.special.logsumexp / softmax / log_softmax where that CuPy has them; log1m as
  cupy.log1p(-softmax)), on zero-copy views of the same device buffers.
  Per case: numba_lse's median time, GB/s (the fewest bytes a call must move: inputs read
  once -- nll_loss reads one entry per row -- and outputs written once) and that as % of the
  measured copy roof and of the nominal HBM bandwidth; each peer's median and its ratio
  peer / numba_lse (> 1: numba_lse is faster), all from the same run.
  Roofs: a device-to-device copy of 1 GiB through torch, CuPy and numba (bytes read +
  written), the datasheet bandwidth where the device's name is known (H100 SXM 3.35 TB/s,
  PCIe 2.0, NVL 3.9, H200 4.8) and memory clock x bus width read off the device.
  Per-call overhead: wall time per call on a 100-element float32 input ((1, 100) for the
  losses), numba_lse given torch, CuPy and numba arrays, against torch and CuPy: the median
  over 9 batches of 200 calls, the device synchronised before and after each batch (target
  quoted in the issue: <= 20 us per call on torch tensors).

How it times (perf/bench.py's rules, METHOD.md's for a GPU).
  Every implementation is called once untimed first (numba_lse compiles its kernels there:
  the "first call" times), and that output is checked against a float64 reference computed
  by torch on the float64 values of the input (log1m_softmax: log1p(-p), or where p > 1/2
  the logsumexp of the other entries minus that of all): max absolute error and max error
  relative to max(|ref|, floor) (floor 1 for log-domain outputs, the dtype's smallest normal
  for probabilities and gradients); NaN where the reference is finite counts as infinite.
  numba_lse must also return the caller's kind of array and dtype. A result over the
  tolerance (float16 5e-3, float32 1e-4, float64 1e-9) is marked WRONG (a peer's with *).
  Data are fresh standard normals for every op, case and dtype (numba_lse allocates its
  outputs, so they cannot be poisoned beforehand; a stale buffer left by an earlier case
  holds values for other data, which the check would catch).
  Then --reps samples per implementation (default 9), interleaved: sample 1 of every
  implementation, then sample 2, ...  A sample is k back-to-back calls between two CUDA
  events on the legacy default stream, where numba_lse (torch's interface names no stream),
  torch and CuPy all launch; k is chosen per case so that the fastest implementation's
  sample lasts >= 2 ms (at most 50 calls; the slowest's at most 0.1 s).  The calls rotate
  over copies of the input that together exceed 256 MiB (several times the L2), so they are
  not timed from the cache.  Reported: the median seconds per call.  An op of numba_lse
  that raises TypeError mentioning the GPU is reported "not available", not fatal.

Run time: a full run is 84 cases and 7 overhead rows; compiling numba_lse's kernels (a
fresh machine has no on-disk cache; about 1 s per kernel signature on a 2-core VM, some 40
signatures here) and CuPy's should dominate.  No case starts after --budget seconds (default
420) so that the report is always printed within the device's 10-minute limit; cases left
out are listed.  --quick: float32 only, 7 reps.

Options: --smoke, --quick, --ops logsumexp,softmax, --cases 4096, --dtypes float32,
--reps N, --budget SECONDS, --write [PATH] (default perf/gpu_results.md; where $OUT is set,
the report and the raw times as JSON are also written there, the files that come back).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

# The simulator must be chosen before numba.cuda is first imported.
if "--smoke" in sys.argv[1:] and not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import numba  # noqa: E402
from numba import cuda  # noqa: E402

import numba_lse as nl  # noqa: E402

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
NOTES: list[str] = []  # what was left out and why, printed with the report

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # pragma: no cover - depends on the machine
    torch = F = None
    NOTES.append(f"torch not importable ({exc}): no torch peer, no float64 reference")
TORCH_CUDA = torch is not None and torch.cuda.is_available()

try:
    import cupy
    import cupyx.scipy.special as cupy_special
except ImportError as exc:  # pragma: no cover
    cupy = cupy_special = None
    NOTES.append(f"CuPy not importable ({exc}): no CuPy peer")


def _cupy_has_gpu() -> bool:
    try:
        return cupy is not None and not SIMULATED and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDARuntimeError without a driver
        return False


CUPY_CUDA = _cupy_has_gpu()
# numba_lse's input kind in the timed cases: what users of the issue pass.
INPUT_KIND = "torch" if TORCH_CUDA else "numba"

TOLERANCE = {"float16": 5e-3, "float32": 1e-4, "float64": 1e-9}
REPS, QUICK_REPS, SMOKE_REPS = 9, 7, 2
SAMPLE_SECONDS = 2e-3  # the fastest implementation's sample lasts at least this
SAMPLE_CAP = 0.1  # and the slowest's at most this
MAX_INNER = 50  # back-to-back calls per sample at most
ROTATE_BYTES = 256 << 20  # input copies together exceed this (4-5x the L2 of an H100/H200)
MAX_COPIES = 8
ROOF_BYTES = 1 << 30  # the copy roof's buffer
OVERHEAD_SIZE, OVERHEAD_CALLS = 100, 200
HBM_SPEC_TBS = (  # (part of the device's name, TB/s, which part): the first match wins
    ("H200", 4.8, "H200, HBM3e"),
    ("H100 NVL", 3.9, "H100 NVL, HBM3"),
    ("H100 PCIe", 2.0, "H100 PCIe, HBM2e"),
    ("H100", 3.35, "H100 SXM5, HBM3"),
)
BIG_ROWS_TARGET = 90.0  # % of HBM on the big-rows case
OVERHEAD_TARGET_US = 20.0


# --------------------------------------------------------------------------------------------
# Cases, ops and peers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An input shape and the axis the op works along (for the losses: (N, C), class axis 1);
    ``smoke``: the shape --smoke uses instead; ``note``: what the case stands for."""

    shape: tuple[int, ...]
    axis: int | None
    smoke: tuple[int, ...]
    note: str = ""

    def label(self, smoke: bool) -> str:
        shape = "x".join(_short(n) for n in (self.smoke if smoke else self.shape))
        where = "" if self.axis == 1 and self.note == "loss" else f", axis={self.axis}"
        note = f" ({self.note})" if self.note and self.note != "loss" else ""
        return f"{shape}{where}{note}"


def _short(n: int) -> str:
    """1e8 for 100000000 (powers of ten from 1e5), else the digits."""
    k = round(math.log10(n)) if n > 0 else 0
    return f"1e{k}" if n >= 100_000 and 10**k == n else str(n)


CASES = (
    Case((100_000_000,), None, (300,), "vector"),
    Case((4096, 4096), -1, (8, 16)),
    Case((1_000_000, 10), -1, (12, 10), "short rows"),
    Case((1000, 100_000), -1, (2, 200), "long rows"),
    Case((4096, 4096), 0, (16, 8), "columns"),
    Case((32768, 4096), -1, (4, 64), "big rows"),
)
LOSS_CASES = (
    Case((4096, 32000), 1, (4, 64), "loss"),
    Case((65536, 1000), 1, (16, 8), "loss"),
)
BIG_ROWS = CASES[-1]


def torch_over(func: Callable, keeps_shape: bool) -> Callable:
    """torch's func(x, dim) with numba_lse's axis: None is the flattened array."""

    def call(x, axis, _=None):
        if axis is not None:
            return func(x, axis)
        out = func(x.reshape(-1), 0)
        return out.reshape(x.shape) if keeps_shape else out

    return call


torch_logsumexp = torch_over(lambda x, d: torch.logsumexp(x, d), keeps_shape=False)
torch_softmax = torch_over(lambda x, d: torch.softmax(x, d), keeps_shape=True)
torch_log_softmax = torch_over(lambda x, d: torch.log_softmax(x, d), keeps_shape=True)
torch_log1m_softmax = torch_over(lambda x, d: torch.log1p(-torch.softmax(x, d)), keeps_shape=True)


def torch_nll_loss(x, _, target):
    return F.nll_loss(x, target)


def torch_cross_entropy(x, _, target):
    return F.cross_entropy(x, target)


def torch_cross_entropy_grad(x, _, target):
    """Forward and backward on x (an alias of the input of this peer's own). The gradient is
    taken off x, so that every call allocates a fresh one, as numba_lse does."""
    x.requires_grad_(True)
    loss = F.cross_entropy(x, target)
    loss.backward()
    grad, x.grad = x.grad, None
    return loss.detach(), grad


def log1m_softmax_reference(x, axis, _=None):
    """log(1 - softmax) in float64: log1p(-p), except where p > 1/2 (one entry per slice at
    most), where 1 - p cancels: there the logsumexp of the other entries minus that of all."""
    if axis is None:
        return log1m_softmax_reference(x.reshape(-1), 0).reshape(x.shape)
    p = torch.softmax(x, axis)
    out = torch.log1p(-p)
    dominant = p > 0.5
    if bool(dominant.any()):
        lse = torch.logsumexp(x, axis, keepdim=True)
        others = torch.logsumexp(x.masked_fill(dominant, -math.inf), axis, keepdim=True)
        out = torch.where(dominant, others - lse, out)
    return out


@dataclass(frozen=True)
class Op:
    """numba_lse's call f(x, axis, target) and its float64 torch reference, same signature.
    ``floors``, one per output: errors are relative to max(|ref|, floor), so 1 makes them
    absolute where |ref| < 1 (log-domain values near 0) and 0 keeps them relative down to
    the dtype's smallest normal (probabilities, gradients)."""

    name: str
    call: Callable
    reference: Callable
    floors: tuple[float, ...] = (1.0,)
    loss: bool = False  # runs LOSS_CASES with class-index targets
    log_probs: bool = False  # its input is log-probabilities (nll_loss)


OPS = (
    Op("logsumexp", lambda x, axis, t: nl.logsumexp(x, axis=axis), torch_logsumexp),
    Op("softmax", lambda x, axis, t: nl.softmax(x, axis=axis), torch_softmax, (0.0,)),
    Op("log_softmax", lambda x, axis, t: nl.log_softmax(x, axis=axis), torch_log_softmax),
    Op("log1m_softmax", lambda x, axis, t: nl.log1m_softmax(x, axis=axis),
       log1m_softmax_reference, (0.0,)),
    Op("nll_loss", lambda x, axis, t: nl.nll_loss(x, t), torch_nll_loss, loss=True,
       log_probs=True),
    Op("cross_entropy", lambda x, axis, t: nl.cross_entropy(x, t), torch_cross_entropy,
       loss=True),
    Op("cross_entropy+grad", lambda x, axis, t: nl.cross_entropy(x, t, return_grad=True),
       torch_cross_entropy_grad, (1.0, 0.0), loss=True),
)


def cupy_functions() -> dict[str, Callable]:
    """CuPy's functions for the ops its cupyx.scipy.special has (log1m: log1p(-softmax))."""
    if cupy_special is None:
        return {}
    have = {n: getattr(cupy_special, n) for n in ("logsumexp", "softmax", "log_softmax")
            if hasattr(cupy_special, n)}
    funcs = {n: (lambda f: lambda x, axis, _: f(x, axis=axis))(f) for n, f in have.items()}
    if "softmax" in have:
        funcs["log1m_softmax"] = lambda x, axis, _: cupy.log1p(-have["softmax"](x, axis=axis))
    return funcs


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # the kind of array it takes and returns
    funcs: dict[str, Callable]  # op name -> f(x, axis, target)


PEERS = (
    Peer("torch", "torch", {
        "logsumexp": torch_logsumexp, "softmax": torch_softmax,
        "log_softmax": torch_log_softmax, "log1m_softmax": torch_log1m_softmax,
        "nll_loss": torch_nll_loss, "cross_entropy": torch_cross_entropy,
        "cross_entropy+grad": torch_cross_entropy_grad}),
    Peer("cupy", "cupy", cupy_functions()),
)
if cupy_special is not None:
    missing = [op.name for op in OPS if not op.loss and op.name not in PEERS[1].funcs]
    if missing:
        NOTES.append(f"this CuPy's cupyx.scipy.special lacks {', '.join(missing)}: "
                     "no CuPy peer there")


# --------------------------------------------------------------------------------------------
# Arrays of the three kinds
# --------------------------------------------------------------------------------------------


def kind_of(a) -> str:
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    return "numba" if hasattr(a, "copy_to_host") else type(a).__name__


def kind_unavailable(kind: str) -> str | None:
    """Why arrays of ``kind`` cannot be used here (None: they can)."""
    if kind == "torch" and not TORCH_CUDA:
        return "torch has no CUDA device here" if torch is not None else "torch not importable"
    if kind == "cupy" and not CUPY_CUDA:
        return "CuPy has no CUDA device here" if cupy is not None else "CuPy not importable"
    return None


def as_kind(kind: str, a):
    """A device array of any kind as ``kind``: a zero-copy view (torch: a new alias, which
    the gradient peer may mark requires_grad without touching the caller's tensor)."""
    if a is None or kind_of(a) == kind and kind != "torch":
        return a
    if kind == "torch":
        return a.detach() if kind_of(a) == "torch" else torch.as_tensor(a, device="cuda")
    if kind == "cupy":
        return cupy.asarray(a)
    return cuda.as_cuda_array(a)


def dtype_name(a) -> str:
    return str(a.dtype).removeprefix("torch.")


def nbytes(a) -> int:
    return math.prod(a.shape) * np.dtype(dtype_name(a)).itemsize


def random_input(shape, dtype: str, seed: int, log_probs: bool = False):
    """Standard normals at ``dtype`` on the device, of INPUT_KIND (log_softmax of them along
    the last axis for log_probs)."""
    if INPUT_KIND == "torch":
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(shape, generator=g, dtype=torch.float64, device="cuda")
        x = torch.log_softmax(x, -1) if log_probs else x
        return x.to(getattr(torch, dtype))
    x = np.random.default_rng(seed).standard_normal(shape)
    if log_probs:
        x -= x.max(-1, keepdims=True)
        x -= np.log(np.exp(x).sum(-1, keepdims=True))
    return cuda.to_device(x.astype(dtype))


def random_target(rows: int, classes: int, seed: int):
    """Class indices (int64) on the device, of INPUT_KIND."""
    if INPUT_KIND == "torch":
        g = torch.Generator(device="cuda").manual_seed(seed)
        return torch.randint(0, classes, (rows,), generator=g, device="cuda")
    return cuda.to_device(np.random.default_rng(seed).integers(0, classes, rows))


def input_copies(x) -> list:
    """x and copies of it that together exceed ROTATE_BYTES: consecutive calls on one small
    buffer would read it from the L2 cache. One in the simulator."""
    n = 1 if SIMULATED else max(1, min(MAX_COPIES, math.ceil(ROTATE_BYTES / max(nbytes(x), 1))))
    if INPUT_KIND == "torch":
        return [x] + [x.clone() for _ in range(n - 1)]
    copies = [x]
    for _ in range(n - 1):
        copies.append(cuda.device_array_like(x))
        copies[-1].copy_to_device(x)
    return copies


def to_torch64(a):
    """Any result (torch, CuPy, numba or host) as a new float64 torch tensor: on the GPU
    where torch has one, else on the CPU."""
    kind = kind_of(a)
    if kind == "torch":
        return a.detach().double()
    if kind in ("cupy", "numba") and TORCH_CUDA:
        return torch.as_tensor(a, device="cuda").double()
    host = a.get() if kind == "cupy" else a.copy_to_host() if kind == "numba" else a
    return torch.as_tensor(np.asarray(host)).double()


def synchronize() -> None:
    cuda.synchronize()  # the whole context: numba's, torch's and CuPy's work alike


def release_memory() -> None:
    """Hand cached and pending-free device memory back between cases."""
    gc.collect()
    if TORCH_CUDA:
        torch.cuda.empty_cache()
    if CUPY_CUDA:
        cupy.get_default_memory_pool().free_all_blocks()
    if not SIMULATED:
        cuda.current_context().deallocations.clear()


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class EventClock:
    """Device time between two CUDA events recorded on the legacy default stream."""

    def __init__(self):
        if TORCH_CUDA:
            self._a, self._b = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            self._ms = lambda: self._a.elapsed_time(self._b)
        else:
            self._a, self._b = cuda.event(timing=True), cuda.event(timing=True)
            self._ms = lambda: cuda.event_elapsed_time(self._a, self._b)

    def start(self) -> None:
        self._a.record()

    def stop(self) -> float:
        self._b.record()
        self._b.synchronize()
        return self._ms() / 1e3


class HostClock:
    """Wall time, the device synchronised at both ends (per-call overhead; the simulator,
    which has no events)."""

    def start(self) -> None:
        synchronize()
        self._t = time.perf_counter()

    def stop(self) -> float:
        synchronize()
        return time.perf_counter() - self._t


def time_interleaved(calls: dict[str, list[Callable[[], Any]]], samples: int, inner: int,
                     clock) -> dict[str, list[float]]:
    """Seconds per call of each implementation, ``samples`` of them, interleaved (sample 1
    of every implementation, then sample 2, ...). A sample is ``inner`` back-to-back calls,
    rotating over the implementation's list of calls (one per input copy), between two
    clock readings."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, fns in calls.items():
            clock.start()
            for i in range(inner):
                out = fns[i % len(fns)]()
            seconds = clock.stop()
            del out  # the last output is freed outside the timed region
            times[name].append(seconds / inner)
    return times


def calls_per_sample(calls: dict[str, list[Callable]], clock) -> int:
    """Enough back-to-back calls that the fastest implementation's sample lasts
    SAMPLE_SECONDS, few enough that the slowest's stays under SAMPLE_CAP."""
    if not calls:
        return 1
    single = [t[0] for t in time_interleaved(calls, 1, 1, clock).values()]
    fastest, slowest = max(min(single), 1e-7), max(single)
    return max(1, min(MAX_INNER, math.ceil(SAMPLE_SECONDS / fastest),
                      math.floor(SAMPLE_CAP / slowest)))


# --------------------------------------------------------------------------------------------
# One case: check, then time
# --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One implementation in one case."""

    name: str
    times: list[float] = field(default_factory=list)  # seconds per call, one per sample
    error: str | None = None  # why it has no time (unavailable, raised)
    wrong: str | None = None  # why its output failed the check
    abs_err: float = math.nan
    rel_err: float = math.nan
    first_call: float = math.nan  # seconds, compilation included

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


@dataclass
class CaseResult:
    op: str
    case: str
    dtype: str
    bytes: int  # fewest bytes a call moves
    timings: list[Timing]  # numba_lse first
    samples: int = 0
    inner: int = 0

    def get(self, name: str) -> Timing | None:
        return next((t for t in self.timings if t.name == name), None)

    @property
    def ours(self) -> Timing:
        return self.timings[0]

    def ratio(self, name: str) -> float:
        peer = self.get(name)
        return peer.median / self.ours.median if peer else math.nan

    @property
    def gbs(self) -> float:
        return self.bytes / self.ours.median / 1e9


@dataclass(frozen=True)
class Impl:
    name: str
    kind: str  # the kind of array it is given
    func: Callable  # f(x, axis, target)
    ours: bool = False  # numba_lse: its result's kind and dtype are checked too


def impls_for(op: Op, our_kinds: tuple[str, ...]) -> list[Impl]:
    """numba_lse on each of ``our_kinds`` of array, then the peers that have the op."""
    ours = [Impl("numba_lse" if len(our_kinds) == 1 else f"numba_lse ({kind})", kind, op.call, True)
            for kind in our_kinds]
    return ours + [Impl(p.name, p.kind, p.funcs[op.name]) for p in PEERS if op.name in p.funcs]


def max_errors(out, ref, floor: float) -> tuple[float, float]:
    """(max |out - ref|, max |out - ref| / max(|ref|, floor)) of float64 torch tensors;
    infinite where out is NaN or infinite against a finite reference, or misses one of its
    special values."""
    finite = torch.isfinite(ref)
    if not bool(finite.all()):
        agree = (out == ref) | (torch.isnan(out) & torch.isnan(ref))
        if not bool(agree[~finite].all()):
            return math.inf, math.inf
    diff = torch.where(finite, (out - ref).abs(), 0.0)
    if bool(torch.isnan(diff).any()):
        return math.inf, math.inf
    rel = diff / ref.abs().clamp_min(floor)
    return float(diff.max()), float(rel.max())


def check(timing: Timing, impl: Impl, out, ref, op: Op, dtype: str) -> None:
    """Fill timing's errors, and ``wrong`` where the output is not right."""
    outs = out if isinstance(out, tuple) else (out,)
    if impl.ours:
        kinds = {kind_of(o) for o in outs}
        dtypes = {dtype_name(o) for o in outs}
        if kinds != {impl.kind} or dtypes != {dtype}:
            timing.wrong = f"returned {kinds} of {dtypes}, not {impl.kind} of {dtype}"
    if ref is None:
        return
    if len(outs) != len(ref):
        timing.wrong = f"{len(outs)} outputs, not {len(ref)}"
        return
    tiny = float(np.finfo(dtype).tiny)
    errors = []
    for o, r, floor in zip(outs, ref, op.floors):
        o64 = to_torch64(o).to(r.device)
        if tuple(o64.shape) != tuple(r.shape):
            timing.wrong = f"shape {tuple(o64.shape)}, not {tuple(r.shape)}"
            return
        errors.append(max_errors(o64, r, max(floor, tiny)))
    timing.abs_err = max(a for a, _ in errors)
    timing.rel_err = max(r for _, r in errors)
    if not timing.rel_err <= TOLERANCE[dtype]:
        timing.wrong = f"max rel error {timing.rel_err:.1e} > {TOLERANCE[dtype]:.0e}"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:160]


def run_case(op: Op, shape, axis, dtype: str, impls: list[Impl], samples: int, clock,
             label: str, inner: int | None = None) -> CaseResult:
    """Check every implementation's first output against the float64 reference, then time
    them, interleaved."""
    seed = zlib.crc32(f"{op.name}|{label}|{dtype}".encode())
    x = random_input(shape, dtype, seed, op.log_probs)
    target = random_target(shape[0], shape[1], seed + 1) if op.loss else None
    ref = None
    if torch is not None:
        t64 = None if target is None else as_kind("torch", target) if TORCH_CUDA else \
            torch.as_tensor(target.copy_to_host())
        ref = op.reference(to_torch64(x), axis, t64)
        ref = tuple(r.detach() for r in (ref if isinstance(ref, tuple) else (ref,)))
    itemsize = np.dtype(dtype).itemsize
    read = shape[0] * itemsize if op.name == "nll_loss" else nbytes(x)
    read += 0 if target is None else nbytes(target)
    copies = input_copies(x)

    timings = [Timing(impl.name) for impl in impls]
    calls: dict[str, list[Callable]] = {}
    written = None
    for impl, timing in zip(impls, timings):
        timing.error = kind_unavailable(impl.kind)
        if timing.error:
            continue
        try:
            states = [(as_kind(impl.kind, c), axis, as_kind(impl.kind, target)) for c in copies]
            start = time.perf_counter()
            out = impl.func(*states[0])
            synchronize()
            timing.first_call = time.perf_counter() - start
        except Exception as exc:  # reported in the table, not fatal
            gpu_missing = impl.ours and (isinstance(exc, AttributeError)  # no such function
                                         or isinstance(exc, TypeError) and "GPU" in str(exc))
            timing.error = ("not available: " if gpu_missing else "") + describe(exc)
            continue
        try:
            check(timing, impl, out, ref, op, dtype)
        except Exception as exc:  # an output the check cannot read is not right either
            timing.wrong = f"unreadable output: {describe(exc)}"
        if impl.ours and written is None:
            written = sum(math.prod(o.shape) for o in (out if isinstance(out, tuple) else (out,)))
        del out
        calls[impl.name] = [partial(impl.func, *s) for s in states]
    if ref is not None:
        written = sum(r.numel() for r in ref)
    del ref

    inner = inner or (1 if SIMULATED else calls_per_sample(calls, clock))
    for name, times in time_interleaved(calls, samples, inner, clock).items():
        next(t for t in timings if t.name == name).times = times
    del calls, copies, x, target
    release_memory()
    return CaseResult(op.name, label, dtype, read + (written or 0) * itemsize, timings,
                      samples, inner)


# --------------------------------------------------------------------------------------------
# The device: name, versions, roofs
# --------------------------------------------------------------------------------------------


def _version(dist: str, module: str) -> str:
    """The distribution's version, else the module's __version__ (a tarball of site-packages
    may lack the dist-info), else "absent"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        try:
            return getattr(__import__(module), "__version__", "?")
        except ImportError:
            return "absent"


def device_info() -> dict[str, str]:
    info = {"name": "Numba's CUDA simulator" if SIMULATED else "?"}
    if not SIMULATED:
        dev = cuda.get_current_device()
        name = dev.name
        info["name"] = name.decode() if isinstance(name, bytes) else str(name)
        for key, attr, scale, unit in (("SMs", "MULTIPROCESSOR_COUNT", 1, ""),
                                       ("L2", "L2_CACHE_SIZE", 2**-20, " MiB"),
                                       ("memory clock", "MEMORY_CLOCK_RATE", 1e-3, " MHz"),
                                       ("bus", "GLOBAL_MEMORY_BUS_WIDTH", 1, " bit")):
            try:
                info[key] = f"{getattr(dev, attr) * scale:g}{unit}"
            except Exception:  # an attribute this driver no longer has
                pass
        try:
            info["memory"] = f"{cuda.current_context().get_memory_info()[1] / 2**30:.1f} GiB"
            info["CUDA driver API"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
        except Exception:
            pass
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=20)
            info["driver"] = smi.stdout.strip().splitlines()[0]
        except Exception:
            pass
    versions = {
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "numba-cuda": _version("numba-cuda", "numba_cuda"),
        "numba_lse": _version("numba_lse", "numba_lse"),
        "torch": torch.__version__ if torch else "absent",
        "cupy": cupy.__version__ if cupy else "absent",
    }
    if TORCH_CUDA:
        versions["torch"] += f" (CUDA {torch.version.cuda})"
    if CUPY_CUDA:
        versions["cupy"] += f" (runtime {cupy.cuda.runtime.runtimeGetVersion()})"
    info["versions"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    return info


def nominal_gbs(info: dict[str, str]) -> tuple[float, str] | None:
    """The datasheet's bandwidth, where the device's name is known."""
    for part, tbs, what in HBM_SPEC_TBS:
        if part in info["name"]:
            return tbs * 1e3, what
    return None


def clock_gbs(info: dict[str, str]) -> float | None:
    """Memory clock x bus width x 2 (double data rate), where the device reports both."""
    try:
        mhz, bits = float(info["memory clock"].split()[0]), float(info["bus"].split()[0])
    except (KeyError, ValueError):
        return None
    return 2 * mhz * 1e6 * bits / 8 / 1e9


def copy_roofs(n_bytes: int, samples: int, clock) -> dict[str, float]:
    """GB/s (bytes read + written) of a device-to-device copy of ``n_bytes`` through each
    library that can, over the same two buffers."""
    n = n_bytes // 4
    if TORCH_CUDA:
        src = torch.randn(n, device="cuda")
        dst = torch.empty_like(src)
    else:
        src = cuda.to_device(np.random.default_rng(0).standard_normal(n).astype(np.float32))
        dst = cuda.device_array_like(src)
    nsrc, ndst = as_kind("numba", src), as_kind("numba", dst)
    calls = {"numba copy_to_device": [lambda: ndst.copy_to_device(nsrc)]}
    if TORCH_CUDA:
        calls["torch copy_"] = [lambda: dst.copy_(src)]
    if CUPY_CUDA:
        csrc, cdst = cupy.asarray(src), cupy.asarray(dst)
        calls["cupy copyto"] = [lambda: cupy.copyto(cdst, csrc)]
    for fns in calls.values():
        fns[0]()  # warm up
    inner = 1 if SIMULATED else 10
    times = time_interleaved(calls, samples, inner, clock)
    return {name: 2 * n * 4 / statistics.median(t) / 1e9 for name, t in times.items()}


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def ms_cell(t: Timing | None, ours: bool = False) -> str:
    if t is None:
        return "—"
    if t.error:
        return "not available" if t.error.startswith("not available") else (
            "n/a" if "CUDA device" in t.error or "importable" in t.error else "error")
    if not t.times:
        return "not run"
    text = f"{1e3 * t.median:.3g}"
    return text + (" WRONG" if ours else "*") if t.wrong else text


def ratio_text(ratio: float) -> str:
    return "" if not math.isfinite(ratio) else f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def ratio_cell(cr: CaseResult, name: str) -> str:
    return ratio_text(cr.ratio(name))


def percent(part: float, whole: float | None) -> str:
    return f"{100 * part / whole:.0f}%" if whole and math.isfinite(part) else ""


def error_cell(t: Timing) -> str:
    if math.isnan(t.rel_err):
        return "unchecked" if not t.error and t.times else ""
    return f"{t.abs_err:.1e} / {t.rel_err:.1e}"


def timing_table(results: list[CaseResult], roof: float, spec: float | None) -> list[str]:
    peers = [p.name for p in PEERS]
    header = (["op", "case", "dtype", "numba_lse ms", "GB/s", "% of copy roof", "% of spec"]
              + [c for p in peers for c in (f"{p} ms", f"{p} / numba_lse")]
              + ["numba_lse max abs / rel error", "samples x calls"])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for cr in results:
        ok = bool(cr.ours.times)
        cells = [cr.op, cr.case, cr.dtype, ms_cell(cr.ours, ours=True),
                 f"{cr.gbs:.0f}" if ok else "", percent(cr.gbs, roof) if ok else "",
                 percent(cr.gbs, spec) if ok else ""]
        for p in peers:
            cells += [ms_cell(cr.get(p)), ratio_cell(cr, p)]
        timed = any(t.times for t in cr.timings)
        cells += [error_cell(cr.ours), f"{cr.samples}x{cr.inner}" if timed else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def overhead_table(results: list[CaseResult]) -> list[str]:
    names = [t.name for t in results[0].timings] if results else []
    header = (["op", "input"] + [f"{n} µs" for n in names]
              + [f"numba_lse (torch) ≤ {OVERHEAD_TARGET_US:g} µs"])
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for cr in results:
        cells = [cr.op, cr.case]
        for n in names:
            t = cr.get(n)
            mark = (" WRONG" if n.startswith("numba_lse") else "*") if t and t.wrong else ""
            cells.append(f"{1e6 * t.median:.1f}{mark}" if t and t.times else ms_cell(t))
        ours = cr.get("numba_lse (torch)")
        cells.append(("met" if ours.median <= OVERHEAD_TARGET_US * 1e-6 else "missed")
                     if ours and ours.times else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(results: list[CaseResult], overhead: list[CaseResult], roof: float,
                 spec: float | None, smoke: bool) -> list[str]:
    lines = []
    big = [cr for cr in results if cr.case == BIG_ROWS.label(smoke) and cr.ours.times]
    if big:
        cells = ", ".join(f"{cr.op} {cr.dtype} {percent(cr.gbs, roof)}"
                          + (f" ({percent(cr.gbs, spec)} of spec)" if spec else "") for cr in big)
        met = sum(100 * cr.gbs / roof >= BIG_ROWS_TARGET for cr in big)
        lines.append(f"- Big rows ({BIG_ROWS.label(smoke)}), target >= {BIG_ROWS_TARGET:g} % of "
                     f"the copy roof: met by {met} of {len(big)}: {cells}.")
    timed = [(cr.op, cr.get("numba_lse (torch)")) for cr in overhead]
    timed = [(op, t) for op, t in timed if t and t.times]
    if timed:
        met = sum(t.median <= OVERHEAD_TARGET_US * 1e-6 for _, t in timed)
        lines.append(f"- Per-call overhead on torch tensors, target <= {OVERHEAD_TARGET_US:g} µs: "
                     f"met by {met} of {len(timed)} ops ("
                     + ", ".join(f"{op} {1e6 * t.median:.1f}" for op, t in timed) + " µs).")
    for peer in (p.name for p in PEERS):
        ratios = [cr.ratio(peer) for cr in results
                  if not cr.ours.wrong and cr.get(peer) and not cr.get(peer).wrong]
        ratios = [r for r in ratios if math.isfinite(r)]
        if ratios:
            mean = math.exp(statistics.fmean(math.log(r) for r in ratios))
            lines.append(f"- Against {peer} (where its output passed the check): numba_lse "
                         f"faster in {sum(r > 1 for r in ratios)} of {len(ratios)} cases; "
                         f"geometric mean of {peer} / numba_lse "
                         f"{ratio_text(mean)} (range {ratio_text(min(ratios))} to "
                         f"{ratio_text(max(ratios))}).")
    wrong = [cr for cr in results + overhead if any(t.wrong for t in cr.timings[:1])]
    lines.append(f"- numba_lse outputs failing the check: {len(wrong)}"
                 + ("" if not wrong else ": " + "; ".join(
                     f"{cr.op} {cr.case} {cr.dtype}: {cr.ours.wrong}" for cr in wrong)) + ".")
    return lines


def problem_notes(results: list[CaseResult]) -> list[str]:
    """One line per implementation and distinct reason it has no time or failed the check:
    the first case it happened in, and how many more."""
    first: dict[tuple[str, str], tuple[CaseResult, int]] = {}
    for cr in results:
        for t in cr.timings:
            for text in (t.error, t.wrong and f"failed the check: {t.wrong}"):
                if text:
                    seen, count = first.get((t.name, text), (cr, 0))
                    first[(t.name, text)] = (seen, count + 1)
    return [f"- {name}: {text} ({cr.op} {cr.case} {cr.dtype}"
            + (f", and {count - 1} more cases)" if count > 1 else ")")
            for (name, text), (cr, count) in first.items()]


def report(args, info, roofs, roof_bytes, spec, clock_peak, results, overhead, skipped,
           seconds) -> str:
    roof = max(roofs.values())
    first = [(t.first_call, cr) for cr in results for t in cr.timings[:1] if t.times]
    lines = ["# numba_lse on the GPU", "",
             f"Generated by `{' '.join(['python perf/gpu_bench.py'] + args.argv)}`"
             f" in {seconds:.0f} s." + (" **Smoke run: tiny shapes, not a measurement.**"
                                          if args.smoke else ""), "",
             "Device: " + "; ".join(f"{k} {v}" if k != "name" else v for k, v in info.items()
                                    if k != "versions") + ".",
             "", "Versions: " + info["versions"] + ".", "",
             "Bandwidth roofs (GB/s, bytes read + written): measured copy of "
             f"{roof_bytes / 2**20:g} MiB: "
             + ", ".join(f"{k} {v:.0f}" for k, v in roofs.items())
             + f" (roof: {roof:.0f}); nominal: "
             + (f"{spec[0]:.0f} ({spec[1]})" if spec else "unknown for this device's name")
             + "; memory clock x bus width: "
             + (f"{clock_peak:.0f}" if clock_peak else "not reported") + ".", "",
             f"Times: the median of {args.reps} interleaved samples per implementation, each "
             "sample k back-to-back calls (samples x calls in the last column) between "
             + ("two host clock readings, the device synchronised (the simulator has no "
                "events)" if SIMULATED else "CUDA events, inputs rotated over copies of "
                ">= 256 MiB together") + ". GB/s: the fewest "
             "bytes a call moves (inputs read once, outputs written once) over numba_lse's "
             "median. peer / numba_lse > 1: numba_lse faster. Every output was checked "
             "against torch in float64 before timing (numba_lse: max abs / max rel error; "
             "WRONG or * beyond the tolerance: float16 5e-3, float32 1e-4, float64 1e-9). "
             "numba_lse is given " + ("torch CUDA tensors" if INPUT_KIND == "torch"
                                       else "numba device arrays") + ".", ""]
    lines += timing_table(results, roof, spec[0] if spec else None)
    lines += ["", f"## Per-call overhead ({OVERHEAD_SIZE} elements, float32; (1, {OVERHEAD_SIZE}) "
              "for the losses)", "",
              f"Wall time per call: the median of {args.overhead_batches} batches of "
              f"{args.overhead_calls} calls, the device synchronised before and after each "
              "batch. numba_lse (kind): numba_lse given that kind of array.", ""]
    lines += overhead_table(overhead)
    lines += ["", "## Targets", ""] + target_lines(results, overhead, roof,
                                                   spec[0] if spec else None, args.smoke)
    if first:
        worst, cr = max(first, key=lambda p: p[0])
        lines.append(f"- numba_lse's first calls (compilation included, no on-disk cache): "
                     f"{sum(f for f, _ in first):.1f} s in all; the longest {worst:.1f} s "
                     f"({cr.op} {cr.case} {cr.dtype}).")
    notes = NOTES + problem_notes(results + overhead)
    if skipped:
        notes.append(f"- not run, past the --budget of {args.budget:g} s: " + "; ".join(skipped))
    if notes:
        lines += ["", "## Notes", ""] + [n if n.startswith("- ") else f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, 2 reps (Numba's CUDA simulator where there is no GPU)")
    parser.add_argument("--quick", action="store_true", help="float32 only, 7 reps")
    parser.add_argument("--ops", help="comma-separated op names (default: all)")
    parser.add_argument("--cases", help="only cases whose label contains this text")
    parser.add_argument("--dtypes", help="comma-separated dtypes (default float32,float64,float16)")
    parser.add_argument("--reps", type=int, help=f"samples per implementation (default {REPS})")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="start no case after this many seconds (default 420)")
    parser.add_argument("--write", nargs="?", const=str(Path(__file__).with_name("gpu_results.md")),
                        metavar="PATH",
                        help="also write the report (default perf/gpu_results.md; and to $OUT)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.reps = args.reps or (SMOKE_REPS if args.smoke else QUICK_REPS if args.quick else REPS)
    args.overhead_batches, args.overhead_calls = (2, 2) if args.smoke else (REPS, OVERHEAD_CALLS)
    if args.ops:
        unknown = set(args.ops.split(",")) - {op.name for op in OPS}
        if unknown:
            parser.error(f"unknown ops {sorted(unknown)}; known: {[op.name for op in OPS]}")
    return args


def selected(args) -> list[tuple[Op, Case, str]]:
    """(op, case, dtype) of every case run, in order: by dtype (so that a run cut short by
    --budget leaves out float16 first), then op, then case."""
    dtypes = args.dtypes.split(",") if args.dtypes else (
        ["float32"] if args.quick else ["float32", "float64", "float16"])
    runs = []
    for dtype in dtypes:
        for op in OPS:
            if (args.ops and op.name not in args.ops.split(",")) or (op.loss and dtype == "float16"):
                continue
            runs += [(op, case, dtype) for case in (LOSS_CASES if op.loss else CASES)
                     if not args.cases or args.cases in case.label(args.smoke)]
    return runs


def progress(text: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    info = device_info()
    progress(f"{info['name']}; {info['versions']}", start)
    clock = HostClock() if SIMULATED else EventClock()
    roof_bytes = ROOF_BYTES if not args.smoke else 1 << 20
    roofs = copy_roofs(roof_bytes, args.reps, clock)
    release_memory()
    spec, clock_peak = nominal_gbs(info), clock_gbs(info)
    progress("copy roofs: " + ", ".join(f"{k} {v:.0f} GB/s" for k, v in roofs.items()), start)
    roof = max(roofs.values())

    overhead = []
    kinds = ("torch", "cupy", "numba")
    for op in OPS:
        if args.ops and op.name not in args.ops.split(","):
            continue
        shape, axis = ((1, OVERHEAD_SIZE), 1) if op.loss else ((OVERHEAD_SIZE,), None)
        overhead.append(run_case(op, shape, axis, "float32", impls_for(op, kinds),
                                 args.overhead_batches, HostClock(), f"{shape}",
                                 inner=args.overhead_calls))
        progress(f"overhead {op.name}: " + ", ".join(
            f"{t.name} {1e6 * t.median:.1f} µs" for t in overhead[-1].timings if t.times), start)

    results, skipped = [], []
    runs = selected(args)
    for i, (op, case, dtype) in enumerate(runs, 1):
        label = case.label(args.smoke)
        if time.perf_counter() - start > args.budget:
            skipped.append(f"{op.name} {label} {dtype}")
            continue
        cr = run_case(op, case.smoke if args.smoke else case.shape, case.axis, dtype,
                      impls_for(op, (INPUT_KIND,)), args.reps, clock, label)
        results.append(cr)
        ours = cr.ours
        peers = ", ".join(f"{t.name} {1e3 * t.median:.3g} ms (x{cr.ratio(t.name):.2f})"
                          for t in cr.timings[1:] if t.times)
        progress(f"{i}/{len(runs)} {op.name} {label} {dtype}: numba_lse "
                 + (f"{1e3 * ours.median:.3g} ms, {cr.gbs:.0f} GB/s ({percent(cr.gbs, roof)}), "
                    f"err {error_cell(ours)}, first call {ours.first_call:.2f} s"
                    if ours.times else ours.error or "not run")
                 + (f" WRONG: {ours.wrong}" if ours.wrong else "")
                 + (f"; {peers}" if peers else ""),
                 start)

    text = report(args, info, roofs, roof_bytes, spec, clock_peak, results, overhead, skipped,
                  time.perf_counter() - start)
    print(text)
    if args.write:
        targets = [Path(args.write)] + ([Path(os.environ["OUT"]) / "gpu_results.md"]
                                        if os.environ.get("OUT") else [])
        for path in targets:
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
        if os.environ.get("OUT"):
            raw = {"info": info, "roofs": roofs, "args": args.argv,
                   "results": [asdict(cr) for cr in results],
                   "overhead": [asdict(cr) for cr in overhead]}
            Path(os.environ["OUT"], "gpu_results.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
