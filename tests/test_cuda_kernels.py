"""The CUDA backend (``numba_lse.cuda``) against the CPU functions, on device arrays.

Runs on a GPU, or on the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` in the environment before
Numba is imported); skipped otherwise. The references are ``numba_lse``'s public CPU
functions on the host copy (tested on their own against SciPy and mpmath). Both backends
compute in float64 with the same scalar functions but add in different orders, so float64
results agree to a few ulps and float32 results (rounded once) to an ulp.

Shapes stay small: the simulator runs every GPU thread as a Python thread.
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
import numba_lse.cuda as backend  # noqa: E402
from numba_lse.cuda import kernels  # noqa: E402

# These tests launch kernels of their own on small grids, which Numba warns of on a GPU
# (numba_lse's own launches do not warn: tests/test_cuda.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*Grid size .* low occupancy")

FLOATS = [np.float32, np.float64]
NAMES = ["softmax", "log_softmax", "log1m_softmax"]
FUNCS = {"softmax": nl.softmax, "log_softmax": nl.log_softmax, "log1m_softmax": nl.log1m_softmax}
# Rows longer than a block: each thread adds several entries before the tree merges them.
LONG = 300
assert LONG > kernels.BLOCK

# (shape, axes): the row kernels (inner == 1; rows of at most SHORT_ROW a thread each,
# longer ones a group, several groups per block), the column kernels (inner > 1), the copy
# into a permuted buffer (axes not consecutive), and a reduction to a 0-d result.
CASES = [
    ((5,), (0,)),
    ((3, 7), (1,)),
    ((3, 20), (1,)),
    ((3, 7), (0,)),
    ((7, 3), (0,)),
    ((7, 3), (1,)),
    ((2, 3, 4), (1, 2)),
    ((2, 3, 4), (0,)),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (0, 1, 2)),
    ((2, LONG), (1,)),
    ((LONG, 2), (0,)),
]
CASE_IDS = [f"{shape}-{axes}" for shape, axes in CASES]

# Rows of special values (one per row), for both kernels: rows, and transposed, columns.
SPECIAL_ROWS = [
    [np.inf, 1.0, 0.0, -1.0],
    [-np.inf, -np.inf, -np.inf, -np.inf],
    [np.nan, 1.0, 2.0, 3.0],
    [np.inf, -np.inf, 0.0, 0.0],
    [np.inf, np.inf, 1.0, 1.0],
    [-np.inf, -np.inf, -np.inf, 5.0],
    [1000.0, 1000.0, -1000.0, 0.0],
    [-1000.0, -1000.0, 1000.0, -np.inf],   # log1m_softmax: [0, 0, log 2 - 2000, 0]
    [0.0, -40.0, -np.inf, -np.inf],        # lse = log1p(e^-40), not 0
    [3.0, 3.0, 3.0, 3.0],                  # ties
    [0.0, -800.0, -800.0, -800.0],         # one dominant entry, the rest 800 below
    [1e308, 1e308, 0.0, -1e308],           # (inf in float32)
    [1.0, -np.inf, np.nan, np.inf],
    [-1e308, -1e308, -1e308, -1e308],
]

# (row, weights) pairs where the weights decide: zero weights at inf and nan, cancellation.
WEIGHTED_ROWS = [
    ([np.inf, 1.0, 2.0], [0.0, 1.0, 1.0]),
    ([np.nan, 1.0, 2.0], [0.0, 1.0, -1.0]),
    ([1000.0, 1000.0, -5.0], [1.0, -1.0, 0.0]),
    ([1.0, 1.0, 1.0], [1.0, -1.0, 0.0]),
    ([2.0, 1.0, 0.0], [-1.0, 1.0, 1.0]),
    ([0.0, 1.0, 2.0], [1.0, 1.0, -1.0]),
    ([np.inf, np.inf, 0.0], [1.0, -1.0, 1.0]),
    ([-np.inf, 3.0, 3.0], [2.0, 0.5, 0.5]),
]


def as_dtype(values, dtype):
    """values as an array of dtype (1e308 overflows to inf in float32, on purpose)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(dtype)


def rtol(dtype):
    return 4e-7 if dtype == np.float32 else 1e-13


def check(got, expected, dtype):
    """A device result against a host reference: shape, dtype and values (nan where nan)."""
    host = got.copy_to_host()
    expected = np.asarray(expected)
    assert host.shape == expected.shape
    assert host.dtype == dtype
    np.testing.assert_allclose(host, expected, rtol=rtol(dtype), atol=0, equal_nan=True)


def data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (3 * rng.standard_normal(shape)).astype(dtype)


def weights(kind, shape, seed=1):
    """None, float weights of both signs (some zero), or a bool mask."""
    rng = np.random.default_rng(seed)
    if kind is None:
        return None
    if kind == "signed":
        w = rng.uniform(-1.0, 2.0, shape)
        w[rng.random(shape) < 0.1] = 0.0
        return w
    return rng.random(shape) < 0.7


def reference_lse(a, b, axes):
    if b is not None and b.dtype == np.bool_:
        return nl.logsumexp(a, axis=axes, where=b, return_sign=True)
    return nl.logsumexp(a, axis=axes, b=b, return_sign=True)


def run_lse(a, b, axes):
    return backend.logsumexp(cuda.to_device(a), None if b is None else cuda.to_device(b), axes)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axes", CASES, ids=CASE_IDS)
def test_logsumexp(shape, axes, dtype):
    a = data(shape, dtype)
    out, sign = run_lse(a, None, axes)
    expected, expected_sign = reference_lse(a, None, axes)
    check(out, expected, dtype)
    check(sign, expected_sign, dtype)


@pytest.mark.parametrize("kind", ["signed", "mask"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axes", [CASES[i] for i in (1, 3, 7, 9)],
                         ids=[CASE_IDS[i] for i in (1, 3, 7, 9)])
def test_logsumexp_weighted(shape, axes, dtype, kind):
    a = data(shape, dtype)
    b = weights(kind, shape)
    if kind == "signed":
        b = b.astype(dtype)
    out, sign = run_lse(a, b, axes)
    expected, expected_sign = reference_lse(a, b, axes)
    check(out, expected, dtype)
    check(sign, expected_sign, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "columns"])
def test_logsumexp_special_values(dtype, transposed):
    a = as_dtype(SPECIAL_ROWS, dtype)
    if transposed:
        a, axes = np.ascontiguousarray(a.T), (0,)
    else:
        axes = (1,)
    out, sign = run_lse(a, None, axes)
    expected, expected_sign = reference_lse(a, None, axes)
    check(out, expected, dtype)
    check(sign, expected_sign, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "columns"])
def test_logsumexp_special_weights(dtype, transposed):
    a = as_dtype([row for row, _ in WEIGHTED_ROWS], dtype)
    b = as_dtype([w for _, w in WEIGHTED_ROWS], dtype)
    axes = (1,)
    if transposed:
        a, b, axes = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), (0,)
    out, sign = run_lse(a, b, axes)
    expected, expected_sign = reference_lse(a, b, axes)
    check(out, expected, dtype)
    check(sign, expected_sign, dtype)
    # Spot values that do not depend on the reference: cancellation is (-inf, 0).
    host, host_sign = out.copy_to_host(), sign.copy_to_host()
    assert host.ravel()[2] == -np.inf and host_sign.ravel()[2] == 0
    assert np.isnan(host.ravel()[6])


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_masked_out_slice(dtype):
    a = data((3, 5), dtype)
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = False
    out, sign = run_lse(a, mask, (1,))
    host = out.copy_to_host()
    assert host[1] == -np.inf and sign.copy_to_host()[1] == 0
    check(out, nl.logsumexp(a, axis=1, where=mask), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, axes", [CASES[i] for i in (0, 1, 3, 5, 7, 9, 10)],
                         ids=[CASE_IDS[i] for i in (0, 1, 3, 5, 7, 9, 10)])
def test_softmax_family(shape, axes, name, dtype):
    x = data(shape, dtype)
    out = backend.softmax_family(name, cuda.to_device(x), None, axes)
    check(out, FUNCS[name](x, axis=axes), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, axes", [CASES[i] for i in (1, 3, 7)],
                         ids=[CASE_IDS[i] for i in (1, 3, 7)])
def test_softmax_family_where(shape, axes, name, dtype):
    x = data(shape, dtype)
    where = weights("mask", shape)
    where[0] = False  # a fully masked-out slice (row 0 of the kept axes, or more)
    out = backend.softmax_family(name, cuda.to_device(x), cuda.to_device(where), axes)
    check(out, FUNCS[name](x, axis=axes, where=where), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "columns"])
def test_softmax_family_special_values(name, dtype, transposed):
    x = as_dtype(SPECIAL_ROWS, dtype)
    if transposed:
        x, axes = np.ascontiguousarray(x.T), (0,)
    else:
        axes = (1,)
    out = backend.softmax_family(name, cuda.to_device(x), None, axes)
    check(out, FUNCS[name](x, axis=axes), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "columns"])
def test_log1m_softmax_dominant(dtype, transposed):
    """One entry far above the rest: the sum of the others (shifted by the runner-up) is
    reduced by the whole block on long rows, and by one thread on columns."""
    x = data((3, LONG), dtype)
    x[0, 17] = 900.0            # dominant: the others underflow against it
    x[1, LONG - 1] = 30.0       # above 1/2, but the others' sum does not underflow
    x[2, :] = -1000.0
    x[2, 5] = 1000.0            # the seed's acceptance row, long: log(LONG - 1) - 2000
    axes = (1,)
    if transposed:
        x, axes = np.ascontiguousarray(x.T), (0,)
    out = backend.softmax_family("log1m_softmax", cuda.to_device(x), None, axes)
    expected = nl.log1m_softmax(x, axis=axes)
    check(out, expected, dtype)
    host = out.copy_to_host()
    row2 = host[2] if not transposed else host[:, 2]
    np.testing.assert_allclose(row2[5], np.log(LONG - 1) - 2000, rtol=rtol(dtype))
    assert np.all(row2[np.arange(LONG) != 5] == 0)


def test_seed_acceptance():
    x = np.array([-1000.0, -1000.0, 1000.0])
    out = backend.softmax_family("log1m_softmax", cuda.to_device(x), None, (0,)).copy_to_host()
    np.testing.assert_allclose(out, [0.0, 0.0, np.log(2) - 2000], rtol=1e-15)


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_non_contiguous_inputs(layout):
    """Arrays that do not reshape to the canonical view are copied by the permuting kernel."""
    x = data((4, 10), np.float64)
    mask = weights("mask", (4, 10))
    if layout == "fortran":
        device, device_mask = cuda.to_device(np.asfortranarray(x)), cuda.to_device(np.asfortranarray(mask))
        host, host_mask = x, mask
    else:
        device, device_mask = cuda.to_device(x)[:, ::2], cuda.to_device(mask)[:, ::2]
        host, host_mask = x[:, ::2], mask[:, ::2]
    assert not device.is_c_contiguous()
    for axes in [(0,), (1,), (0, 1)]:
        out, sign = backend.logsumexp(device, device_mask, axes)
        expected, expected_sign = reference_lse(host, host_mask, axes)
        check(out, expected, np.float64)
        check(sign, expected_sign, np.float64)
    for axes in [(0,), (1,)]:
        out = backend.softmax_family("log_softmax", device, device_mask, axes)
        check(out, nl.log_softmax(host, axis=axes, where=host_mask), np.float64)


def test_no_axes_and_all_axes():
    a = data((2, 3), np.float64)
    out, sign = backend.logsumexp(cuda.to_device(a), None, ())
    check(out, a, np.float64)
    check(sign, np.ones_like(a), np.float64)
    out, sign = backend.logsumexp(cuda.to_device(a), None, (0, 1))
    assert out.shape == ()
    check(out, nl.logsumexp(a), np.float64)
    out = backend.softmax_family("softmax", cuda.to_device(a), None, ())
    check(out, np.ones_like(a), np.float64)


def test_inputs_unchanged():
    a = data((3, 7), np.float32)
    b = weights("signed", (3, 7)).astype(np.float32)
    device_a, device_b = cuda.to_device(a), cuda.to_device(b)
    backend.logsumexp(device_a, device_b, (0,))
    backend.softmax_family("log1m_softmax", device_a, None, (1,))
    np.testing.assert_array_equal(device_a.copy_to_host(), a)
    np.testing.assert_array_equal(device_b.copy_to_host(), b)


def test_launch_configuration():
    # Rows: a group of threads per row (the power of two >= n), several rows per block;
    # rows of at most SHORT_ROW entries a thread each.
    assert kernels.SHORT_ROW < 20 < 32 <= kernels.BLOCK
    assert kernels.launch(100, 20, 1) == (25, 128, 32)
    assert kernels.launch(3, 20, 1) == (1, 96, 32)
    assert kernels.launch(2, LONG, 1) == (2, kernels.BLOCK, kernels.BLOCK)
    assert kernels.launch(1000, kernels.SHORT_ROW, 1) == (8, kernels.BLOCK, 1)
    assert kernels.launch(3, 7, 1) == (1, 3, 1)
    assert kernels.launch(10, 1, 1) == (1, 10, 1)
    # Columns: a thread each.
    assert kernels.launch(1000, LONG, 5) == (8, kernels.BLOCK, 1)
    assert kernels.launch(10**9, 7, 1)[0] == kernels.MAX_BLOCKS
    assert kernels.flat_launch(10**9) == (kernels.MAX_BLOCKS, kernels.BLOCK)
    assert kernels.BLOCK & (kernels.BLOCK - 1) == 0
    # Parts: slices too few to fill the GPU are split, if long enough.
    assert kernels.parts_of(1, 10**8, 1) == kernels.FILL // kernels.BLOCK  # a vector
    assert kernels.parts_of(1000, 10**5, 1) == -(-kernels.FILL // (1000 * kernels.BLOCK))
    assert kernels.parts_of(1, 3 * kernels.PART_ROW, 1) == 3  # parts of PART_ROW at least
    assert kernels.parts_of(1, 2 * kernels.PART_ROW - 1, 1) == 1
    assert kernels.parts_of(kernels.FILL // kernels.BLOCK, 10**5, 1) == 1  # enough rows
    assert kernels.parts_of(4096, 4096, 4096) == kernels.FILL // 4096  # columns: axis 0
    assert kernels.parts_of(4096, 2 * kernels.PART_COLUMN - 1, 4096) == 1
    assert kernels.parts_of(kernels.FILL, 10**5, kernels.FILL) == 1


def dominant_rows():
    """Rows (5, 7) of which row 3 has one entry above 1/2 by 2000 (log1m_softmax's pass over
    the entries below the max) and row 1 ties."""
    x = data((5, 7), np.float64)
    x[3] = [-1000.0, -1000.0, 1000.0, -1000.0, -1000.0, -1000.0, -1000.0]
    x[1] = [4.0, 4.0, 0.0, 1.0, -1.0, 2.0, 3.0]
    return x


@pytest.mark.parametrize("name", ["logsumexp", "log1m_softmax"])
def test_grid_stride_and_groups(name):
    """Launches the library never makes under the simulator: fewer blocks than rows (each
    block loops over several rows, reusing its shared memory), groups smaller than a row,
    and fewer threads than columns, with idle groups on the last turn."""
    x = dominant_rows()
    rows = cuda.to_device(x.reshape(5, 7, 1))
    columns = cuda.to_device(np.ascontiguousarray(x.T).reshape(1, 7, 5))
    for (blocks, threads, group), view in [((2, 4, 2), rows), ((1, 2, 1), columns)]:
        if name == "logsumexp":
            expected, expected_sign = nl.logsumexp(x, axis=1, return_sign=True)
            out, sign = cuda.device_array((5, 1)), cuda.device_array((5, 1))
            if view is columns:
                out, sign = cuda.device_array((1, 5)), cuda.device_array((1, 5))
            kernels.lse[blocks, threads](view, None, group, out, sign)
            check(out, expected.reshape(out.shape), np.float64)
            check(sign, expected_sign.reshape(out.shape), np.float64)
        else:
            expected = nl.log1m_softmax(x, axis=1)
            out = cuda.device_array(view.shape)
            kernels.softmax[blocks, threads](view, None, backend._OPS[name], group, out)
            host = out.copy_to_host()
            np.testing.assert_allclose(host.reshape(5, 7) if view is rows else host[0].T, expected,
                                       rtol=rtol(np.float64), atol=0)


@pytest.mark.parametrize("kind", ["signed", "mask"])
def test_unrolled_entries_with_weights(kind):
    """Groups of 2 threads on rows of 9: lane 0 takes entries 0, 2, 4, 6 in one unrolled
    step, then 8; lane 1 takes 1, 3, 5, 7 (the library's groups cover a row in one step
    under the simulator's row lengths). Weights and masks go with their entries."""
    x = data((5, 9), np.float64)
    b = weights(kind, x.shape)
    view, w = cuda.to_device(x.reshape(5, 9, 1)), cuda.to_device(b.reshape(5, 9, 1))
    out, sign = cuda.device_array((5, 1)), cuda.device_array((5, 1))
    kernels.lse[2, 4](view, w, 2, out, sign)
    expected, expected_sign = reference_lse(x, b, (1,))
    check(out, expected.reshape(5, 1), np.float64)
    check(sign, expected_sign.reshape(5, 1), np.float64)
    if kind == "mask":
        for name in NAMES:
            got = cuda.device_array(view.shape)
            kernels.softmax[2, 4](view, w, backend._OPS[name], 2, got)
            check(got, FUNCS[name](x, axis=1, where=b).reshape(view.shape), np.float64)


@pytest.fixture
def split(monkeypatch):
    """Split slices of 16 entries or more in parts of 8 or more, as long as a launch has
    fewer than 1024 threads (the grid reduction, which needs slices of thousands of entries
    at the library's sizes)."""
    monkeypatch.setattr(kernels, "FILL", 1024)
    monkeypatch.setattr(kernels, "PART_ROW", 8)
    monkeypatch.setattr(kernels, "PART_COLUMN", 8)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
@pytest.mark.parametrize("weighted", [False, True])
def test_split_rows(split, name, dtype, weighted):
    x = data((3, 45), dtype)
    x[1, 7] = 800.0  # dominant: log1m_softmax's second pass over the parts
    x[2, :] = 1.0
    x[2, 40] = np.inf
    assert kernels.parts_of(3, 45, 1) == 5
    if name == "logsumexp":
        b = weights("signed", x.shape).astype(dtype) if weighted else None
        out, sign = run_lse(x, b, (1,))
        expected, expected_sign = reference_lse(x, b, (1,))
        check(out, expected, dtype)
        check(sign, expected_sign, dtype)
    else:
        where = weights("mask", x.shape) if weighted else None
        out = backend.softmax_family(name, cuda.to_device(x), None if where is None else cuda.to_device(where), (1,))
        check(out, FUNCS[name](x, axis=1, where=where), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["logsumexp"] + NAMES)
def test_split_columns(split, name, dtype):
    """axis 0 of a matrix with few columns: each column in parts (a thread per part)."""
    x = data((45, 3), dtype)
    x[7, 1] = 800.0
    x[:, 2] = 1.0
    assert kernels.parts_of(3, 45, 3) == 5
    if name == "logsumexp":
        out, sign = run_lse(x, None, (0,))
        expected, expected_sign = reference_lse(x, None, (0,))
        check(out, expected, dtype)
        check(sign, expected_sign, dtype)
    else:
        check(backend.softmax_family(name, cuda.to_device(x), None, (0,)), FUNCS[name](x, axis=0), dtype)


def test_split_vector(split):
    """axis=None over a vector: one row, in parts."""
    x = data(100, np.float64)
    out, sign = run_lse(x, None, (0,))
    check(out, nl.logsumexp(x), np.float64)
    out = backend.softmax_family("softmax", cuda.to_device(x), None, (0,))
    check(out, nl.softmax(x), np.float64)


def test_none_arguments_pass_as_a_null_pointer():
    # numba-cuda types a None argument (the kernels compile without the code that reads an
    # absent weight, mask, cut or gradient) but its launch cannot pass one; the extension
    # passes the null pointer that None's data model is: one pointer-sized parameter.
    from llvmlite import ir
    from numba import types
    from numba.core.datamodel import default_manager

    assert isinstance(default_manager[types.none].get_argument_type(), ir.PointerType)
    extension = kernels.NoneArguments()
    assert extension.prepare_args(types.none, None) == (types.uintp, 0)
    array = types.float64[:, ::1]
    assert extension.prepare_args(array, "x") == (array, "x")
    assert extension.prepare_args(types.int64, 3) == (types.int64, 3)
