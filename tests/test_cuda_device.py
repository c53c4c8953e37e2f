"""The device functions for users' kernels (``numba_lse.cuda.*_row``) against the public
CPU functions, under the CUDA simulator (or on a GPU).

Each row is reduced by one thread of a user's kernel, from a row of a device array and
from a local copy. Both paths compute in float64 with the same scalar functions, in the
same order, so the results agree to the last bit in float64; float32 outputs are rounded
once from the same float64 value.
"""

import numpy as np
import pytest

try:
    from numba import config, cuda

    _RUNNABLE = bool(config.ENABLE_CUDASIM) or cuda.is_available()
except ImportError:  # numba-cuda missing
    _RUNNABLE = False

if not _RUNNABLE:
    pytest.skip("needs numba-cuda with a GPU, or NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

import numba_lse as nl  # noqa: E402
from numba_lse.cuda import log1m_softmax_row, log_softmax_row, logsumexp_row, softmax_row  # noqa: E402

# These tests launch kernels of their own on small grids, which Numba warns of on a GPU
# (numba_lse's own launches do not warn: tests/test_cuda.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*Grid size .* low occupancy")

ROWS = np.array([
    [0.0, -40.0, -np.inf, -np.inf],
    [-1000.0, -1000.0, 1000.0, -1000.0],   # log1m_softmax: [0, 0, log 2 - 2000, 0]
    [3.0, 3.0, 3.0, 3.0],
    [np.inf, 1.0, 0.0, -1.0],
    [-np.inf, -np.inf, -np.inf, -np.inf],
    [np.nan, 1.0, 2.0, 3.0],
    [1e308, 1e308, 0.0, -1e308],
    [0.5, -1.5, 2.25, 1.0],
])
ROW_FUNCTIONS = {"softmax": softmax_row, "log_softmax": log_softmax_row, "log1m_softmax": log1m_softmax_row}
WIDTH = ROWS.shape[1]


def make_kernel(row_function):
    @cuda.jit
    def kernel(x, out, lse, local_out):
        r = cuda.grid(1)
        if r < x.shape[0]:
            lse[r] = logsumexp_row(x[r])
            row_function(x[r], out[r])
            # The same row from a thread's local copy.
            row = cuda.local.array(WIDTH, np.float64)
            for k in range(WIDTH):
                row[k] = x[r, k]
            row_function(row, local_out[r])

    return kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ROW_FUNCTIONS))
def test_row_functions_match_the_public_functions(name, dtype):
    with np.errstate(over="ignore"):
        x = ROWS.astype(dtype)  # 1e308 is inf in float32
    out = cuda.device_array(x.shape, dtype=dtype)
    local_out = cuda.device_array(x.shape, dtype=dtype)
    lse = cuda.device_array(x.shape[0])
    make_kernel(ROW_FUNCTIONS[name])[2, 4](cuda.to_device(x), out, lse, local_out)
    expected = getattr(nl, name)(x, axis=1)
    np.testing.assert_array_equal(out.copy_to_host(), expected)
    np.testing.assert_array_equal(local_out.copy_to_host(), expected)
    # logsumexp_row returns float64: rounded to the data's dtype, the public function's result.
    np.testing.assert_array_equal(lse.copy_to_host().astype(dtype), nl.logsumexp(x, axis=1))


def test_seed_acceptance_in_a_users_kernel():
    out = cuda.device_array((1, 3))
    lse = cuda.device_array(1)
    x = cuda.to_device(np.array([[-1000.0, -1000.0, 1000.0]]))

    @cuda.jit
    def kernel(x, out, lse):
        lse[0] = logsumexp_row(x[0])
        log1m_softmax_row(x[0], out[0])

    kernel[1, 1](x, out, lse)
    np.testing.assert_allclose(out.copy_to_host()[0], [0.0, 0.0, np.log(2) - 2000], rtol=1e-15)
    assert lse.copy_to_host()[0] == 1000.0


def test_empty_row():
    lse = cuda.device_array(1)

    @cuda.jit
    def kernel(x, lse):
        lse[0] = logsumexp_row(x[0])

    kernel[1, 1](cuda.to_device(np.empty((1, 0))), lse)
    assert lse.copy_to_host()[0] == -np.inf


@pytest.mark.parametrize("out_length", [WIDTH - 1, WIDTH + 1])
@pytest.mark.parametrize("name", sorted(ROW_FUNCTIONS))
def test_output_of_another_length_is_nan(name, out_length):
    # A kernel cannot raise: an out of the wrong length is filled with nan, and nothing is
    # read or written past either array (the simulator would raise IndexError if it were).
    row_function = ROW_FUNCTIONS[name]

    @cuda.jit
    def kernel(x, out):
        row_function(x[0], out[0])

    out = cuda.to_device(np.zeros((1, out_length)))
    kernel[1, 1](cuda.to_device(ROWS[7:8]), out)
    assert np.isnan(out.copy_to_host()).all()
