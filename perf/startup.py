"""Start-up cost of numba_lse, measured in fresh interpreters (``sys.executable -c ...``).

Three figures, each from its own child processes, run one after another:

- import: the in-process wall time of ``import numba_lse`` (median of RUNS children, after one
  untimed child that refreshes the .pyc files), beside ``import numba`` alone (NumPy included)
  for scale and the whole child's wall time.  The same child lists every compiled function of
  the numba_lse modules (``cpu.jit.Deferred``: its Numba dispatcher is made at its first
  use) and reports the dispatchers the import made, and those with compiled signatures:
  importing must compile (and load) nothing; and whether it imported Numba (it does not: the
  first call does, ``_dispatch.cpu``).
- first call, warm cache: in a fresh process, first Numba's own one-time initialisation,
  which any Numba program pays on its first jitted call even with everything cached:
  ``import numba`` and the first call of a trivial cached function (``_numba_baseline``,
  written into a temporary directory put on the child's sys.path: one ``@njit(cache=True)``
  sum loop and one ``@njit(cache=True, parallel=True)`` prange sum, imported, then called
  once each, timed together as "Numba init"; its first compile also loads numba_lse's
  ``numba_extensions`` hook, ``numba_lse._overloads``, ~3 ms).  Then the first call of one
  op and dtype on a small input (64x100, axis=-1; the losses with int64 targets, nll_loss
  on log-probabilities), and its second
  call.  One untimed child first makes every one of these calls, so the on-disk cache
  (``cache=True``) holds every kernel, the baseline's included; then RUNS children per op
  and dtype, medians.  "numba_lse extra" = first - second call, both after Numba init: what
  numba_lse's first call pays for loading its own kernels.  "first call in a fresh process"
  = Numba init + numba_lse's first call (per child), the figure a user sees when numba_lse
  is the first Numba code the process runs.  The full collections of Python's garbage
  collector that land in each first call are timed too (``gc.callbacks``): they cost what
  every object in the process costs (Numba's ~90k: 40-55 ms here), and land wherever the
  process's allocations set them off, not where the most is allocated.
- cold: numba_lse's first call in a fresh process (no baseline call before it, so Numba
  init is included) with NUMBA_CACHE_DIR a fresh empty directory, so every kernel it needs
  is compiled: one child per op and dtype, all float64 first, no new one once
  COLD_BUDGET_S went into them (about 10-20 s each on a 2-core machine).

--quick: QUICK_RUNS children per figure and QUICK_COLD_BUDGET_S.  Full: about 2-3 minutes
(the cold compiles most of it); --quick about a minute.

Targets: import <= 0.3 s (IMPORT_TARGET_S); warm-cache numba_lse extra (first call after
Numba init, minus the second call) <= 50 ms (FIRST_CALL_TARGET_MS).  Numba init itself
(about 0.5-1 s on a 2-core machine, its import 0.2-0.4) is Numba's, not numba_lse's, and has
no target.

Used by perf/bench.py (its start-up section); standalone:
    python perf/startup.py [--quick] [--ops logsumexp,softmax] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

STARTUP_OPS = ("logsumexp", "softmax", "log_softmax", "log1m_softmax", "cross_entropy",
               "nll_loss")
LOSS_OPS = ("cross_entropy", "nll_loss")
DTYPES = ("float32", "float64")
SMALL_SHAPE = (64, 100)
RUNS = 5  # fresh processes per import / first-call figure (medians)
QUICK_RUNS = 3
IMPORT_TARGET_S = 0.3
FIRST_CALL_TARGET_MS = 50.0
COLD_BUDGET_S = 100.0  # no new cold-compile child after this much: the section stays ~2 min
QUICK_COLD_BUDGET_S = 30.0
PROBE_TIMEOUT_S = 600.0

# Child programs.  Each prints one JSON line last.
IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import numba_lse
t1 = time.perf_counter()
numba_imported = "numba" in sys.modules
from numba.core.dispatcher import Dispatcher
from numba_lse.cpu.jit import Deferred
found = {}
for name, module in list(sys.modules.items()):
    if module is not None and (name == "numba_lse" or name.startswith("numba_lse.")):
        for attr, value in list(vars(module).items()):
            if isinstance(value, (Dispatcher, Deferred)):
                found.setdefault(id(value), (name + "." + attr, value))
made = [(label, value._dispatcher if isinstance(value, Deferred) else value)
        for label, value in found.values()]
made = [(label, d) for label, d in made if d is not None]
compiled = sorted(label for label, d in made if d.signatures)
print(json.dumps({"import_s": t1 - t0, "numba_imported": numba_imported,
                  "functions": len(found), "dispatchers": len(made), "compiled": compiled}))
"""

NUMBA_IMPORT_PROBE = """
import json, time
t0 = time.perf_counter()
import numba
print(json.dumps({"import_s": time.perf_counter() - t0}))
"""

# Written as BASELINE_MODULE.py into a temporary directory: trivial cached functions whose
# first call in a fresh process is Numba's own one-time initialisation (the parallel one
# also starts the threading layer), not numba_lse's.
BASELINE_MODULE = "_numba_baseline"
BASELINE_SOURCE = """
import numba
from numba import prange


@numba.njit(cache=True)
def serial_sum(x):
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i]
    return total


@numba.njit(cache=True, parallel=True)
def parallel_sum(x):
    total = 0.0
    for i in prange(x.shape[0]):
        total += x[i]
    return total
"""

# argv: [--baseline DIR] ROWS COLS OP:DTYPE [OP:DTYPE ...].  With --baseline: DIR goes on
# sys.path and the baseline functions' first call is timed before anything of numba_lse is
# called.  Then times the first and second call of the first pair and calls the others once
# (one child fills the on-disk cache for every pair).
FIRST_CALL_PROBE = """
import gc, json, math, sys, time
import numpy as np
import numba_lse

baseline = None
if sys.argv[1] == "--baseline":
    sys.path.insert(0, sys.argv[2])
    del sys.argv[1:3]
    ti0 = time.perf_counter()
    import BASELINE_MODULE as baseline  # imports Numba, which `import numba_lse` does not
    ti1 = time.perf_counter()
""".replace("BASELINE_MODULE", BASELINE_MODULE) + """

def make_call(op, dtype, rows, cols):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols)).astype(dtype)
    func = getattr(numba_lse, op)
    if op not in ("cross_entropy", "nll_loss"):
        return lambda: func(x, axis=-1)
    target = rng.integers(0, cols, rows).astype(np.int64)
    if op == "nll_loss":  # log-probabilities
        x = (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(dtype)
    return lambda: func(x, target)

rows, cols = int(sys.argv[1]), int(sys.argv[2])
calls = [make_call(*spec.split(":"), rows, cols) for spec in sys.argv[3:]]
result = {}
if baseline is not None:
    v = np.arange(1000, dtype=np.float64)
    tb0 = time.perf_counter()
    baseline.serial_sum(v)
    tb1 = time.perf_counter()
    baseline.parallel_sum(v)
    tb2 = time.perf_counter()
    result.update(numba_init_s=(ti1 - ti0) + (tb2 - tb0), numba_import_s=ti1 - ti0,
                  serial_init_s=tb1 - tb0, parallel_init_s=tb2 - tb1,
                  baseline_cache_misses=sum(
                      sum(f.stats.cache_misses.values())
                      for f in (baseline.serial_sum, baseline.parallel_sum)))
# Full collections of Python's garbage collector during the first call: their cost is that of
# every object in the process (Numba's ~90k), and they land wherever allocations set them off.
full_gc = []
def on_gc(phase, info):
    if info["generation"] == 2:
        full_gc.append(time.perf_counter() if phase == "start" else -time.perf_counter())
gc.callbacks.append(on_gc)
t0 = time.perf_counter()
calls[0]()
t1 = time.perf_counter()
gc.callbacks.remove(on_gc)
result["first_gc_s"] = -sum(full_gc) if len(full_gc) % 2 == 0 else math.nan
calls[0]()
t2 = time.perf_counter()
for call in calls[1:]:
    call()
result.update(first_s=t1 - t0, second_s=t2 - t1)
print(json.dumps(result))
"""


class ProbeError(RuntimeError):
    """A child process failed (its last stderr line) or printed no JSON result."""


@dataclass
class ImportResult:
    import_s: float  # median in-process wall time of `import numba_lse`
    numba_import_s: float  # median of `import numba` alone (NumPy included)
    process_s: float  # median wall time of the whole import child
    functions: int  # compiled functions found in the numba_lse modules after the import
    dispatchers: int  # of their Numba dispatchers, those the import made (should be none)
    compiled: list[str]  # those with compiled signatures (should be none)
    numba_imported: bool  # whether `import numba_lse` imported Numba (it should not)


@dataclass
class FirstCall:
    op: str
    dtype: str
    numba_init_ms: float = math.nan  # median first call of the trivial baseline functions
    first_ms: float = math.nan  # median numba_lse first-call time after it, warm on-disk cache
    second_ms: float = math.nan  # median second-call time, same processes
    extra_ms: float = math.nan  # numba_lse extra: median of (first - second) per process
    fresh_first_ms: float = math.nan  # median of (numba init + first) per process
    gc_ms: list[float] = field(default_factory=list)  # full GC collections in each first call
    extra_no_gc_ms: float = math.nan  # median of (first - second - full GC) per process
    baseline_compiled: int = 0  # children whose baseline missed the cache (should be 0)
    cold_s: float | None = None  # first call with an empty cache; None: not measured
    cold_note: str = ""  # why cold_s is missing
    error: str | None = None

    @property
    def meets_target(self) -> bool:
        return self.extra_ms <= FIRST_CALL_TARGET_MS


@dataclass
class StartupResult:
    imports: ImportResult | None
    import_error: str | None
    calls: list[FirstCall]
    runs: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def child_env(threads: int | None, cache_dir: str | None = None) -> dict[str, str]:
    """The parent's environment (OMP_WAIT_POLICY included) but for PYTHONDONTWRITEBYTECODE,
    numba_lse importable from the same checkout as here, NUMBA_NUM_THREADS from --threads,
    and an optional NUMBA_CACHE_DIR."""
    import numba_lse  # the copy the benchmark measures

    root = str(Path(numba_lse.__file__).resolve().parent.parent)
    env = dict(os.environ)
    # A user's Python writes bytecode: without it, each child would compile numba_lse's
    # changed modules from source (losses.py alone: ~10 ms of every import measured).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def run_probe(code: str, args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """(the child's JSON result, the child's wall time in s)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"timed out after {PROBE_TIMEOUT_S:g} s") from exc
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeError(f"exit {done.returncode}: {tail[:120]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ProbeError("no result printed")
    return json.loads(lines[-1]), wall


def measure_imports(runs: int, env: dict[str, str]) -> ImportResult:
    run_probe(IMPORT_PROBE, [], env)  # untimed: refreshes stale .pyc files
    # In turns, each first in every other pair, so that both medians see the same phases of
    # a noisy machine (one after the other, a run measured `import numba` alone 0.386 s and
    # numba_lse with it 0.287 s).
    results, numba_times = [], []
    for run in range(runs):
        for ours_now in (run % 2 == 0, run % 2 == 1):
            if ours_now:
                results.append(run_probe(IMPORT_PROBE, [], env))
            else:
                numba_times.append(run_probe(NUMBA_IMPORT_PROBE, [], env)[0]["import_s"])
    last = results[-1][0]
    return ImportResult(
        import_s=statistics.median(r["import_s"] for r, _ in results),
        numba_import_s=statistics.median(numba_times),
        process_s=statistics.median(wall for _, wall in results),
        functions=last["functions"],
        dispatchers=last["dispatchers"],
        compiled=sorted({name for r, _ in results for name in r["compiled"]}),
        numba_imported=any(r["numba_imported"] for r, _ in results))


def first_call_args(pairs: list[tuple[str, str]], baseline_dir: str | None = None
                    ) -> list[str]:
    head = ["--baseline", baseline_dir] if baseline_dir is not None else []
    return head + [str(SMALL_SHAPE[0]), str(SMALL_SHAPE[1])] + [
        f"{op}:{dtype}" for op, dtype in pairs]


def write_baseline(directory: str) -> None:
    """BASELINE_MODULE.py in ``directory`` (its Numba cache goes beside it, in __pycache__,
    unless NUMBA_CACHE_DIR is set)."""
    Path(directory, BASELINE_MODULE + ".py").write_text(BASELINE_SOURCE.lstrip())


def fill_cache(pairs: list[tuple[str, str]], baseline_dir: str, env: dict[str, str]
               ) -> str | None:
    """One child calls the baseline functions and every (op, dtype): the on-disk cache then
    holds all their kernels.  Returns the error, if the child failed."""
    try:
        run_probe(FIRST_CALL_PROBE, first_call_args(pairs, baseline_dir), env)
    except ProbeError as exc:
        return str(exc)
    return None


def measure_warm_first_call(op: str, dtype: str, runs: int, baseline_dir: str,
                            env: dict[str, str]) -> FirstCall:
    """Medians of ``runs`` fresh children (the cache already filled): Numba init (the
    baseline's first call), then numba_lse's first and second call."""
    row = FirstCall(op, dtype)
    try:
        results = [run_probe(FIRST_CALL_PROBE, first_call_args([(op, dtype)], baseline_dir),
                             env)[0]
                   for _ in range(runs)]
    except ProbeError as exc:
        row.error = str(exc)
        return row
    row.numba_init_ms = 1e3 * statistics.median(r["numba_init_s"] for r in results)
    row.first_ms = 1e3 * statistics.median(r["first_s"] for r in results)
    row.second_ms = 1e3 * statistics.median(r["second_s"] for r in results)
    row.extra_ms = 1e3 * statistics.median(r["first_s"] - r["second_s"] for r in results)
    row.fresh_first_ms = 1e3 * statistics.median(r["numba_init_s"] + r["first_s"]
                                                 for r in results)
    row.baseline_compiled = sum(r["baseline_cache_misses"] > 0 for r in results)
    row.gc_ms = [1e3 * r["first_gc_s"] for r in results]
    row.extra_no_gc_ms = 1e3 * statistics.median(r["first_s"] - r["second_s"] - r["first_gc_s"]
                                                 for r in results)
    return row


def measure_cold(row: FirstCall, threads: int | None) -> None:
    """The first call with nothing cached: NUMBA_CACHE_DIR a fresh empty directory."""
    with tempfile.TemporaryDirectory(prefix="numba_lse_cold_") as cache_dir:
        try:
            result, _ = run_probe(FIRST_CALL_PROBE, first_call_args([(row.op, row.dtype)]),
                                  child_env(threads, cache_dir))
        except ProbeError as exc:
            row.cold_note = f"error: {exc}"
        else:
            row.cold_s = result["first_s"]


def measure_startup(ops: list[str] | None = None, threads: int | None = None,
                    quick: bool = False, progress: Callable[[str], None] | None = None
                    ) -> StartupResult:
    """Import, warm-cache first call and cold first call of ``ops`` (default: STARTUP_OPS
    that numba_lse has).  ``quick``: QUICK_RUNS runs and QUICK_COLD_BUDGET_S."""
    import numba_lse

    say = progress or (lambda text: None)
    start = time.perf_counter()
    runs = QUICK_RUNS if quick else RUNS
    cold_budget = QUICK_COLD_BUDGET_S if quick else COLD_BUDGET_S
    ops = [op for op in (ops if ops is not None else STARTUP_OPS) if hasattr(numba_lse, op)]
    env = child_env(threads)
    imports, import_error = None, None
    try:
        imports = measure_imports(runs, env)
        say(f"import numba_lse {imports.import_s:.3f} s")
    except ProbeError as exc:
        import_error = str(exc)
        say(f"import probe failed: {exc}")

    pairs = [(op, dtype) for op in ops for dtype in DTYPES]
    calls = []
    with tempfile.TemporaryDirectory(prefix="numba_lse_baseline_") as baseline_dir:
        write_baseline(baseline_dir)
        fill_error = fill_cache(pairs, baseline_dir, env) if pairs else None
        if fill_error:
            say(f"filling the cache failed: {fill_error}")
        for op, dtype in pairs:
            row = measure_warm_first_call(op, dtype, runs, baseline_dir, env)
            calls.append(row)
            say(f"first call {op} {dtype}: " + (row.error or (
                f"Numba init {row.numba_init_ms:.1f} ms, then first {row.first_ms:.1f} ms, "
                f"second {row.second_ms:.3f} ms")))

    cold_spent = 0.0
    for dtype in ("float64", "float32"):
        for row in (r for r in calls if r.dtype == dtype):
            if cold_spent > cold_budget:
                row.cold_note = f"skipped ({cold_budget:g} s budget spent)"
                continue
            cold_start = time.perf_counter()
            measure_cold(row, threads)
            cold_spent += time.perf_counter() - cold_start
            say(f"cold first call {row.op} {dtype}: "
                + (f"{row.cold_s:.1f} s" if row.cold_s is not None else row.cold_note))

    notes = [
        f"import: in-process wall time of `import numba_lse` in a fresh interpreter, median of "
        f"{runs} (after one untimed run); `import numba` alone (NumPy included) for scale; "
        f"target <= {IMPORT_TARGET_S:g} s",
        f"first call: {SMALL_SHAPE[0]}x{SMALL_SHAPE[1]} input, axis=-1 (losses: int64 targets, "
        f"nll_loss on log-probabilities), one fresh process per run, the on-disk cache filled "
        f"first (one untimed process makes every call); medians of {runs}.  Each process first "
        f"imports and calls a trivial cached Numba function (an @njit(cache=True) sum loop and "
        f"an @njit(cache=True, parallel=True) prange sum, once each): Numba init = that "
        f"import (`import numba`, which `import numba_lse` leaves to the first call) and call, "
        f"Numba's own one-time per-process initialisation, paid by any Numba program on its "
        f"first jitted call; then numba_lse's first and second call.  numba_lse extra = "
        f"first - second call (median per process), target <= {FIRST_CALL_TARGET_MS:g} ms; "
        f"first call in a fresh process = Numba init + first call (median per process), "
        f"what the first call costs when numba_lse is the first Numba code a process runs",
        f"cold: numba_lse's first call in a fresh process (no baseline call first: Numba init "
        f"included) with NUMBA_CACHE_DIR a fresh empty directory (every kernel it needs is "
        f"compiled), one run each, all float64 first, none started once "
        f"{cold_budget:g} s went into them" + (" (--quick)" if quick else ""),
    ]
    compiled = [f"{r.op} {r.dtype} ({r.baseline_compiled})" for r in calls
                if r.baseline_compiled]
    if compiled:
        notes.append("the baseline missed the on-disk cache (so Numba init includes its "
                     "compile) in processes of: " + ", ".join(compiled))
    return StartupResult(imports, import_error, calls, runs, notes,
                         time.perf_counter() - start)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def import_lines(result: StartupResult) -> list[str]:
    """The import figure and the nothing-compiled check, one bullet each."""
    imp = result.imports
    if imp is None:
        return [f"- import numba_lse: probe failed ({result.import_error})"]
    compiled = (", ".join(imp.compiled) if imp.compiled else "none")
    return [
        f"- import numba_lse: {imp.import_s:.3f} s (target <= {IMPORT_TARGET_S:g} s: "
        f"{verdict(imp.import_s <= IMPORT_TARGET_S)}), Numba not imported: "
        f"{'no, it was' if imp.numba_imported else 'yes, the first call imports it'}; "
        f"`import numba` alone {imp.numba_import_s:.3f} s; whole child process "
        f"{imp.process_s:.3f} s",
        f"- dispatchers with compiled signatures right after import: {compiled} "
        f"({imp.functions} compiled functions in the numba_lse modules, {imp.dispatchers} "
        f"of their Numba dispatchers made by the import, the others at their first use; "
        f"import compiles nothing: {verdict(not imp.compiled)})",
    ]


def format_ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def gc_cell(gc_ms: list[float]) -> str:
    """In how many first calls a full collection of the garbage collector landed, and its
    median time there."""
    landed = [ms for ms in gc_ms if ms > 0]
    if not landed:
        return f"0 of {len(gc_ms)}"
    return f"{len(landed)} of {len(gc_ms)} ({format_ms(statistics.median(landed))} ms)"


def startup_table(result: StartupResult) -> list[str]:
    """The start-up section of results.md."""
    lines = ["### Start-up and first call (fresh processes)", ""]
    lines += [f"- {note}" for note in result.notes] + import_lines(result)
    header = ["op", "dtype", "Numba init ms", "first call ms (after init)", "second call ms",
              "numba_lse extra ms", f"numba_lse extra <= {FIRST_CALL_TARGET_MS:g} ms",
              "first call in a fresh process ms (incl. Numba init)",
              "first calls with a full GC collection in them",
              "numba_lse extra without them ms", "cold first call s"]
    lines += ["", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in result.calls:
        if row.error is not None:
            cells = ["error: " + row.error, "", "", "", "", "", "", ""]
        else:
            cells = [format_ms(row.numba_init_ms), format_ms(row.first_ms),
                     format_ms(row.second_ms), format_ms(row.extra_ms), verdict(row.meets_target),
                     format_ms(row.fresh_first_ms), gc_cell(row.gc_ms),
                     format_ms(row.extra_no_gc_ms)]
        cold = format_seconds(row.cold_s) if row.cold_s is not None else row.cold_note
        lines.append("| " + " | ".join([row.op, row.dtype] + cells + [cold]) + " |")
    return lines


def startup_summary(result: StartupResult) -> list[str]:
    """A few bullets for the README: import, Numba's own init, the worst numba_lse extra,
    the first call in a fresh process, the cold range."""
    lines = import_lines(result)[:1]
    measured = [r for r in result.calls if r.error is None]
    if measured:
        worst = max(measured, key=lambda r: r.extra_ms)
        met = sum(r.meets_target for r in measured)
        lines += [
            f"- Numba's own init (`import numba` and the first call of a trivial cached "
            f"@njit and parallel=True function in a fresh process, paid by any Numba "
            f"program): "
            f"{format_ms(min(r.numba_init_ms for r in measured))} to "
            f"{format_ms(max(r.numba_init_ms for r in measured))} ms",
            f"- numba_lse extra, warm on-disk cache ({SMALL_SHAPE[0]}x{SMALL_SHAPE[1]}; first "
            f"call after Numba init - second call): "
            f"{format_ms(min(r.extra_ms for r in measured))} to {format_ms(worst.extra_ms)} ms "
            f"(worst: {worst.op} {worst.dtype}); target <= {FIRST_CALL_TARGET_MS:g} ms met by "
            f"{met} of {len(measured)} op/dtype pairs",
            f"- first call in a fresh process (incl. Numba init): "
            f"{format_ms(min(r.fresh_first_ms for r in measured))} to "
            f"{format_ms(max(r.fresh_first_ms for r in measured))} ms",
            f"- full collections of Python's garbage collector (their cost that of every "
            f"object in the process, Numba's most) in the first calls above: "
            f"{gc_cell([ms for r in measured for ms in r.gc_ms])}; numba_lse extra without "
            f"them: {format_ms(min(r.extra_no_gc_ms for r in measured))} to "
            f"{format_ms(max(r.extra_no_gc_ms for r in measured))} ms, <= "
            f"{FIRST_CALL_TARGET_MS:g} ms in "
            f"{sum(r.extra_no_gc_ms <= FIRST_CALL_TARGET_MS for r in measured)} of "
            f"{len(measured)} pairs"]
    cold = [r.cold_s for r in result.calls if r.cold_s is not None]
    if cold:
        lines.append(f"- first call with nothing cached (compiling its kernels): "
                     f"{format_seconds(min(cold))} to {format_seconds(max(cold))} s per op and "
                     f"dtype ({len(cold)} measured)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs per figure, {QUICK_COLD_BUDGET_S:g} s of cold compiles")
    parser.add_argument("--ops", help=f"comma-separated (default: {','.join(STARTUP_OPS)})")
    parser.add_argument("--threads", type=int, help="NUMBA_NUM_THREADS of the children")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",")] if args.ops else None
    result = measure_startup(ops, args.threads, args.quick,
                             progress=lambda text: print(f"  [start-up] {text}",
                                                         file=sys.stderr, flush=True))
    print("\n".join(startup_table(result)))
    print(f"\n_start-up: {result.seconds:.0f} s_")


if __name__ == "__main__":
    main()
