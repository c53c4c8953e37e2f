"""Where numba_lse's time goes on a GPU: the host time of the pieces every call is made of
(a launch, an allocation, an interface read), and host time per small call by function
(cProfile). Each kernel's registers and spills need no GPU: ``perf/ptx_check.py
--registers``. Run on the device machine after the Numba setup of perf/gpu_check.sh (which
runs it with PROFILE=1):

    python3 perf/gpu_profile.py [--ncu]

--ncu: run only the benchmark-shaped calls (for ``ncu --kernel-name regex:...``), no report.
"""

import cProfile
import io
import pstats
import sys

import numpy as np
import torch

import numba_lse as nl


def big_calls():
    """One call of each kernel family on the benchmark's shapes (float32)."""
    big = torch.randn(32768, 4096, device="cuda")
    nl.logsumexp(big, axis=-1)
    nl.softmax(big, axis=-1)
    nl.log_softmax(big, axis=-1)
    short = torch.randn(1_000_000, 10, device="cuda")
    nl.softmax(short, axis=-1)
    cols = torch.randn(4096, 4096, device="cuda")
    nl.logsumexp(cols, axis=0)
    nl.softmax(cols, axis=0)
    vector = torch.randn(100_000_000, device="cuda")
    nl.logsumexp(vector)
    logits = torch.randn(4096, 32000, device="cuda")
    target = torch.randint(0, 32000, (4096,), device="cuda")
    nl.cross_entropy(logits, target, return_grad=True)
    torch.cuda.synchronize()


def small_call_profiles():
    x = torch.randn(100, device="cuda")
    logits = torch.randn(1, 100, device="cuda")
    target = torch.zeros(1, dtype=torch.int64, device="cuda")
    calls = {"logsumexp (100,)": lambda: nl.logsumexp(x),
             "softmax (100,)": lambda: nl.softmax(x),
             "cross_entropy (1, 100)": lambda: nl.cross_entropy(logits, target)}
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            call()
        torch.cuda.synchronize()
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
        print(f"## {name}: 200 calls\n{text.getvalue()}")


def overhead_floors():
    """Host time per call of what any numba_lse GPU call is made of, against one call: an
    empty kernel launched with 4 array arguments, an output allocated (and freed), a torch
    tensor taken through its __cuda_array_interface__, and the softmax of 100 elements."""
    import time

    from numba import cuda

    @cuda.jit
    def empty(a, b, c, d):
        pass

    x = torch.randn(100, device="cuda")
    d = cuda.as_cuda_array(x)
    steps = {"empty kernel, 4 arrays": lambda: empty[1, 32](d, d, d, d),
             "cuda.device_array(100)": lambda: cuda.device_array(100, dtype=np.float32),
             "cuda.as_cuda_array(torch)": lambda: cuda.as_cuda_array(x),
             "torch.empty(100)": lambda: torch.empty(100, device="cuda"),
             "nl.softmax(torch (100,))": lambda: nl.softmax(x)}
    print("## host time per call (us, median of 7 batches of 500, device synchronised around each)")
    for name, step in steps.items():
        step()
        times = []
        for _ in range(7):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(500):
                step()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / 500 * 1e6)
        print(f"{name}: {sorted(times)[3]:.1f}")


if __name__ == "__main__":
    big_calls()
    if "--ncu" not in sys.argv:
        overhead_floors()
        small_call_profiles()
