#!/usr/bin/env bash
# One call on the device machine: numba_lse's CUDA kernels checked and timed on a real GPU.
#
#   1. a sanity check: versions, the device, one softmax of a torch CUDA tensor against torch;
#   2. perf/gpu_bench.py --write (every output checked against a float64 reference, then timed
#      against torch and CuPy; it compiles numba_lse's kernels cold, so its first-call times
#      are those of an empty on-disk cache);
#   3. the GPU half of the test suite (tests/test_backends.py's "cuda" backend and
#      tests/test_cuda*.py), unchanged, on the GPU.
#
# From the project root, with the Numba bundle built here first (../shared/device/numba-bundle.sh
# writes .device/site312.tar.xz; the device call carries .device):
#   bash perf/gpu_check.sh [BENCH_BUDGET_S [TESTS_TIMEOUT_S [extra pytest args]]]
# Logs and the bench's report land in $OUT (the files that come back).
set -u
bench_budget=${1:-150}
tests_timeout=${2:-170}
shift $(( $# < 2 ? $# : 2 ))
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

tar -xJf .device/site312.tar.xz -C /tmp || exit 1
export PYTHONPATH=/tmp/site312:$PWD CUDA_HOME=/usr/local/cuda PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
  --format=csv | tee "$OUT/nvidia-smi.txt"

stamp "sanity"
timeout 120 python3 - <<'EOF' 2>&1 | tee "$OUT/sanity.txt"
import numba, numpy as np, torch
from numba import cuda
print("numba", numba.__version__, "numpy", np.__version__, "torch", torch.__version__,
      "device", cuda.get_current_device().name, cuda.get_current_device().compute_capability)
import numba_lse as nl
x = torch.randn(1000, 333, device="cuda", dtype=torch.float64)
got = nl.softmax(x, axis=1)
err = (got - torch.softmax(x, dim=1)).abs().max().item()
print("softmax", type(got).__name__, got.device, got.dtype, "max abs error vs torch", err)
assert err < 1e-15
print("SANITY OK")
EOF
grep -q "SANITY OK" "$OUT/sanity.txt" || { stamp "sanity failed"; exit 1; }

stamp "bench"
timeout $(( bench_budget + 90 )) python3 perf/gpu_bench.py --write --budget "$bench_budget" \
  > "$OUT/bench.txt" 2> "$OUT/bench.log"
stamp "bench exit $?"
tail -n 4 "$OUT/bench.log"

stamp "tests"
timeout "$tests_timeout" python3 -m pytest -p no:cacheprovider -n 8 --timeout 150 -q -rfE \
  tests/test_backends.py tests/test_cuda.py tests/test_cuda_device.py tests/test_cuda_kernels.py \
  -k cuda "$@" > "$OUT/tests.txt" 2>&1
stamp "tests exit $?"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.txt" | cut -c1-300 | tail -n 40
