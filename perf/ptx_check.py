"""Compile every CUDA kernel of numba_lse to PTX for one GPU architecture, without a GPU.

For sessions with no GPU: the CUDA simulator runs the kernels as Python, so it cannot catch
what only the real compiler rejects (typing on the CUDA target, unsupported conversions,
pruning of the None branches). This compiles each kernel for the argument types the backend
passes (every dtype, with and without weights, targets and gradients).

Needs the CUDA toolkit's NVVM (``CUDA_HOME``) and NVRTC (e.g. ``pip install
nvidia-cuda-nvrtc``), but no driver: the current device is faked.

    CUDA_HOME=/usr/local/cuda python perf/ptx_check.py [--cc 9.0] [--registers]

--registers also assembles each kernel with ptxas (the CUDA toolkit's, on the PATH) and
prints its registers per thread, spills and shared memory: the occupancy a kernel can have,
without a GPU.
"""

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import types as pytypes

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.exit("run without NUMBA_ENABLE_CUDASIM: the simulator has no compiler")

import numba.cuda.cudadrv.nvrtc as nvrtc  # noqa: E402
import numba.cuda.dispatcher as dispatcher  # noqa: E402
from numba import cuda, types  # noqa: E402

from numba_lse.cuda import log1m_softmax_row, log_softmax_row, logsumexp_row, softmax_row  # noqa: E402


def fake_device(cc):
    """Let numba-cuda compile device functions for ``cc`` with no driver loaded."""
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)
    nvrtc.get_supported_ccs = lambda: (cc,)


def user_kernel(x, out, lse):
    """A user's kernel calling the device functions of ``numba_lse.cuda``."""
    r = cuda.grid(1)
    if r < x.shape[0]:
        lse[r] = logsumexp_row(x[r])
        softmax_row(x[r], out[r])
        log_softmax_row(x[r], out[r])
        log1m_softmax_row(x[r], out[r])


def signatures():
    """(name, kernel, argument types) for every launch the backend makes, and a user's
    kernel calling the device functions."""
    from numba_lse.cuda import kernels as k

    i64, f64, none = types.int64, types.float64, types.none
    for dtype in (types.float32, types.float64):
        def a(ndim, dt=dtype):
            return types.Array(dt, ndim, "C")

        for w in (none, a(3), a(3, types.boolean)):
            yield "lse", k.lse, (a(3), w, i64, a(2), a(2))
            yield "softmax", k.softmax, (a(3), w, i64, i64, a(3))
            for cut in (none, a(2, f64)):
                yield "partials", k.partials, (a(3), w, i64, cut, cut, cut, a(3, f64), a(3, f64), a(3, f64))
            yield "apply", k.apply, (a(3), w, i64, i64, i64) + (a(2, f64),) * 6 + (a(3),)
        for out in (none, a(2)):
            yield "merge_parts", k.merge_parts, (a(3, f64),) * 3 + (a(2, f64),) * 3 + (out, out)
        for target_dtype, w in itertools.product((types.int64, types.int32), (none, a(1))):
            t = a(2, target_dtype)
            yield "class_weights", k.class_weights, (t, w, i64, i64, a(2, f64), a(1, i64))
            for loss in (a(2), a(2, f64)):
                yield "nll", k.nll, (a(3), t, w, i64, loss, a(2, f64))
                for grad, den in itertools.product((none, a(3)), (none, a(1, f64))):
                    yield "cross_entropy_index", k.cross_entropy_index, (
                        a(3), t, w, i64, f64, f64, den, i64, loss, grad)
        for w, grad in itertools.product((none, a(1)), (none, a(3))):
            yield "cross_entropy_probability", k.cross_entropy_probability, (
                a(3), a(3), w, f64, f64, i64, a(2, f64), grad)
        for values, den in itertools.product((a(2), a(2, f64)), (none, a(1, f64))):
            yield "total", k.total, (values, den, f64, a(1))
        yield "nan_where_negative", k.nan_where_negative, (a(1), a(1))
        yield "user_kernel", cuda.jit(user_kernel), (types.Array(dtype, 2, "A"), a(2), a(1))
    # The copies: any strides in, C-ordered out, with the dtype conversions of _gpu.
    conversions = [(types.float16, types.float32), (types.float32, types.float16),
                   (types.int64, types.float64), (types.boolean, types.float64),
                   (types.float64, types.float64), (types.int32, types.int32)]
    for ndim, (src, dst) in itertools.product((1, 2, 3), conversions):
        strides = types.UniTuple(types.int64, ndim)
        yield f"gather{ndim}", k.permuted_copy(ndim, True), (
            types.Array(src, ndim, "A"), types.Array(dst, 1, "C"), strides)
        yield f"scatter{ndim}", k.permuted_copy(ndim, False), (
            types.Array(src, 1, "C"), types.Array(dst, ndim, "C"), strides)


def resources(ptx, cc):
    """ptxas's report for one kernel's PTX: registers per thread, spills, shared memory."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        run = subprocess.run(["ptxas", f"-arch=sm_{cc[0]}{cc[1]}", "-v", f.name, "-o", os.devnull],
                             capture_output=True, text=True)
    lines = [line.split("info    :")[-1].strip() for line in run.stderr.splitlines()
             if "registers" in line or "spill" in line]
    return "; ".join(lines) or run.stderr.strip().splitlines()[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0, H100)")
    parser.add_argument("--registers", action="store_true",
                        help="also assemble each kernel with ptxas -v (on the PATH) and print "
                             "its registers, spills and shared memory")
    args = parser.parse_args()
    cc = tuple(int(p) for p in args.cc.split("."))
    fake_device(cc)
    failures = 0
    count = 0
    for name, kernel, sig in signatures():
        count += 1
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
        except Exception as error:  # report every failure, not only the first
            failures += 1
            print(f"FAIL {name}{sig}: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        if args.registers:
            print(f"{name}({', '.join(str(t) for t in sig)}): {resources(ptx, cc)}")
    print(f"{count - failures}/{count} kernel signatures compile to PTX for sm_{cc[0]}{cc[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
