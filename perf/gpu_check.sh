#!/usr/bin/env bash
# One call on the device machine: numba_lse's CUDA kernels checked, timed and profiled on a
# real GPU.
#
#   1. a sanity check: versions, the device, one softmax of a torch CUDA tensor against torch;
#   2. perf/gpu_bench.py --write (every output checked against a float64 reference, then timed
#      against torch and CuPy; it compiles numba_lse's kernels cold, so its first-call times
#      are those of an empty on-disk cache);
#   3. the GPU half of the test suite (tests/test_backends.py's "cuda" backend and
#      tests/test_cuda*.py), unchanged, on the GPU;
#   4. with PROFILE=1: perf/gpu_profile.py (host time of small calls and of their pieces)
#      and Nsight Compute on the benchmark-shaped kernels.
#
# From the project root, with the Numba bundle built here first (../shared/device/numba-bundle.sh
# writes .device/site312.tar.xz; the device call carries .device):
#   BENCH=150 TESTS=170 PROFILE=0 bash perf/gpu_check.sh [pytest selection]
# BENCH: the bench's --budget in seconds (0: no bench); TESTS: the tests' time limit (0: no
# tests); a pytest selection replaces the default one. pytest-benchmark, on the device's
# image, is turned off: it warns under xdist, and the suite turns warnings into errors.
# Logs and reports land in $OUT (the files that come back).
set -u
BENCH=${BENCH:-150} TESTS=${TESTS:-170} PROFILE=${PROFILE:-0}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

tar -xJf .device/site312.tar.xz -C /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
  --format=csv | tee "$OUT/nvidia-smi.txt"
export CUDA_HOME=/usr/local/cuda PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site312:$PWD
# numba-cuda 0.30.4 registers an overload for np.row_stack at import, which NumPy 2.5 (the
# device image's) no longer has: give it back as np.vstack, as it was.
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
  mkdir -p /tmp/shim
  echo 'import numpy; numpy.row_stack = numpy.vstack' > /tmp/shim/sitecustomize.py
  export PYTHONPATH=/tmp/shim:$PYTHONPATH
  stamp "NumPy without row_stack: /tmp/shim/sitecustomize.py restores it for numba-cuda"
fi

stamp "sanity"
timeout 120 python3 - <<'EOF' 2>&1 | tail -n 4 | tee "$OUT/sanity.txt"
import numba, numpy as np, torch
from numba import cuda
from importlib import metadata
print("numba", numba.__version__, "numba-cuda", metadata.version("numba-cuda"), "numpy",
      np.__version__, "torch", torch.__version__, "device", cuda.get_current_device().name,
      cuda.get_current_device().compute_capability)
import numba_lse as nl
x = torch.randn(1000, 333, device="cuda", dtype=torch.float64)
got = nl.softmax(x, axis=1)
err = (got - torch.softmax(x, dim=1)).abs().max().item()
print("softmax", type(got).__name__, got.device, got.dtype, "max abs error vs torch", err)
assert err < 1e-15
print("SANITY OK")
EOF
grep -q "SANITY OK" "$OUT/sanity.txt" || { stamp "sanity failed"; exit 1; }

if [ "$BENCH" != 0 ]; then
  stamp "bench"
  timeout $(( BENCH + 90 )) python3 perf/gpu_bench.py --write --budget "$BENCH" \
    > "$OUT/bench.txt" 2> "$OUT/bench.log"
  stamp "bench exit $?"
  tail -n 4 "$OUT/bench.log"
fi

if [ "$TESTS" != 0 ]; then
  stamp "tests"
  if [ $# -eq 0 ]; then
    set -- tests/test_backends.py tests/test_cuda.py tests/test_cuda_device.py \
      tests/test_cuda_kernels.py -k cuda
  fi
  timeout "$TESTS" python3 -m pytest -p no:cacheprovider -p no:benchmark -n 8 --timeout 150 \
    -q -rfE "$@" > "$OUT/tests.txt" 2>&1
  stamp "tests exit $?"
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.txt" | cut -c1-300 | tail -n 40
fi

if [ "$PROFILE" != 0 ]; then
  stamp "profile"
  timeout 120 python3 perf/gpu_profile.py > "$OUT/profile.txt" 2>&1
  stamp "profile exit $?"
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
  if [ -n "$ncu" ]; then
    # ncu matches demangled names (numba_lse::cuda::kernels::...) only with this base; it
    # runs the program with another PATH, so the image's python3 is named in full.
    timeout 150 "$ncu" --clock-control none --kernel-name-base demangled \
      --kernel-name regex:'numba_lse' --launch-count 24 --section SpeedOfLight \
      --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      "$(command -v python3)" perf/gpu_profile.py --ncu > "$OUT/ncu.txt" 2>&1
    stamp "ncu exit $?"
  else
    stamp "no ncu"
  fi
fi
