"""Independent tests of ``numba_lse.nll_loss`` and ``numba_lse.cross_entropy``.

Both must behave as ``torch.nn.functional.nll_loss`` / ``cross_entropy`` on NumPy arrays, and
``cross_entropy(..., return_grad=True)`` must also return what torch autograd puts in
``logits.grad``. Expected values come from *live* torch calls, made in float64 on an exact
float64 copy of the inputs (float32 data converts exactly), never from remembered numbers.

torch is optional: the classes marked ``needs_torch`` compare against it and are skipped
without it; everything else (special values, accuracy against mpmath and float64 NumPy/SciPy
references, bad input, inputs left unwritten, memory) runs without torch.

Tolerances (see ``assert_close``):

* float64: ``|res - ref| <= 1e-12 |ref| + atol``, with ``atol = 64 eps * scale`` the
  reference's own rounding error (scale: the largest logit times the largest weight, times the
  number of samples for a 'sum'; the largest gradient entry for gradients);
* float32: within 2 float32 ulps of the float64 reference for losses, 4 for gradients (plus
  the same atol, which only matters where float64 itself cancels).
"""

import ctypes
import math
import mmap
import re
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from mpmath import mp
from scipy import special

from numba_lse import cross_entropy, nll_loss
from numba_lse.cpu.reduce import CHUNK

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch comparisons are skipped, everything else runs
    torch = None
    F = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["none", "sum", "mean"]
SMOOTHINGS = [0.0, 0.1, 1.0]
N_CLASSES = 5

# Logits shape per case; the index target is (N, d1, ...) (0-d for a (C,) input).
SHAPES = {
    "C": (N_CLASSES,),
    "NC": (7, N_CLASSES),
    "NCd": (3, N_CLASSES, 4),
    "NCdd": (2, N_CLASSES, 3, 4),
}

EPS64 = np.finfo(np.float64).eps
ATOL_UNIT = 64 * EPS64


# ------------------------------------------------------------------------------ helpers

def _rng(*key):
    """A deterministic generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _dtype_id(dtype):
    return np.dtype(dtype).name


def _target_shape(shape):
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def _n_classes(shape):
    return shape[0] if len(shape) == 1 else shape[1]


def make_logits(rng, shape, dtype, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_index_target(rng, shape, ignore_index=-100, dtype=np.int64):
    """Random class indices; every third sample set to ``ignore_index`` (batched inputs)."""
    t = rng.integers(0, _n_classes(shape), _target_shape(shape))
    if t.ndim:
        t.reshape(-1)[::3] = ignore_index
    return t.astype(dtype)


def make_probability_target(rng, shape, dtype):
    """Random Dirichlet distributions along the class axis (axis 1, or 0 for a (C,) input)."""
    C = _n_classes(shape)
    axis = 0 if len(shape) == 1 else 1
    moved = shape[:axis] + shape[axis + 1:] + (C,)
    p = rng.dirichlet(np.ones(C), size=moved[:-1]) if len(moved) > 1 else rng.dirichlet(np.ones(C))
    return np.ascontiguousarray(np.moveaxis(p, -1, axis)).astype(dtype)


def make_weight(rng, weighted, dtype, C=N_CLASSES):
    return rng.uniform(0.25, 2.0, C).astype(dtype) if weighted else None


def _torch_target(target):
    t = np.asarray(target)
    if t.dtype.kind == "f":
        return torch.tensor(t.astype(np.float64))
    return torch.tensor(t.astype(np.int64))


def _torch_weight(weight):
    return None if weight is None else torch.tensor(np.asarray(weight, dtype=np.float64))


def torch_cross_entropy(x, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0):
    """(loss, d loss.sum() / d logits) from a live torch call, in float64."""
    xt = torch.tensor(np.array(x, dtype=np.float64), requires_grad=True)
    loss = F.cross_entropy(xt, _torch_target(target), weight=_torch_weight(weight),
                           ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    loss.sum().backward()
    grad = xt.grad if xt.grad is not None else torch.zeros_like(xt)
    return loss.detach().numpy(), grad.numpy()


def torch_nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    xt = torch.tensor(np.array(log_probs, dtype=np.float64))
    loss = F.nll_loss(xt, _torch_target(target), weight=_torch_weight(weight),
                      ignore_index=ignore_index, reduction=reduction)
    return loss.numpy()


def gradient_terms(x, target, weight, eps):
    """|a| + |b| for each entry a - b of the mean cross-entropy's gradient of 2-D logits
    (the module docstring of ``numba_lse.cpu.losses``): index targets (ignore_index 3)
    (1 - eps) w_y (p_k - [k = y]) + eps / C (W p_k - w_k); probabilities T p_k - w_k t'_k."""
    x = np.asarray(x, dtype=np.float64)
    n, C = x.shape
    p = special.softmax(x, axis=1)
    w = np.asarray(weight, dtype=np.float64)
    if np.asarray(target).dtype.kind == "f":
        smoothed = w * ((1 - eps) * np.asarray(target, dtype=np.float64) + eps / C)
        return (smoothed.sum(axis=1, keepdims=True) * p + smoothed) / n
    kept = np.asarray(target) != 3
    y = np.where(kept, target, 0)
    w_y = (w[y] * kept)[:, None]
    one_hot = np.arange(C) == y[:, None]
    terms = (1 - eps) * w_y * (p + one_hot) + eps / C * kept[:, None] * (w.sum() * p + w)
    return terms / w_y.sum()


def loss_scale(x, weight, reduction, n_samples):
    """Magnitude of the reference's rounding error for a loss (see the module docstring)."""
    finite = np.asarray(x, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    scale = 1.0 + (np.max(np.abs(finite)) if finite.size else 0.0)
    if weight is not None:
        scale *= float(np.max(weight))
    if reduction == "sum":
        scale *= max(n_samples, 1)
    return scale


def grad_scale(ref):
    finite = ref[np.isfinite(ref)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def assert_close(actual, expected, dtype, *, atol=0.0, ulps=2, what="loss"):
    """``actual`` (dtype ``dtype``) against the float64 reference ``expected``.

    nan and +-inf at the same places; finite values within the tolerance of the module
    docstring. The first offending element is reported with both values.
    """
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    with np.errstate(over="ignore"):
        rounded = expected.astype(dtype).astype(np.float64)  # float32: overflow -> inf
    got = actual.astype(np.float64)
    for name, test in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = test(got) != test(rounded)
        if mismatch.any():
            i = tuple(np.argwhere(mismatch)[0])
            raise AssertionError(f"{what}: {name} positions differ, first at {i}: "
                                 f"numba_lse {got[i]!r}, reference {expected[i]!r}")
    finite = np.isfinite(rounded)
    if dtype == np.float64:
        tol = 1e-12 * np.abs(expected) + atol
    else:
        spacing = np.spacing(np.abs(rounded).astype(np.float32)).astype(np.float64)
        tol = ulps * spacing + atol
    with np.errstate(invalid="ignore"):
        err = np.abs(got - expected)
        bad = finite & ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {np.count_nonzero(bad)} element(s) out of tolerance, first at {i}: "
            f"numba_lse {got[i]!r}, reference {expected[i]!r}, |error| {err[i]:.3g} > tol {tol[i]:.3g}"
        )


def check_result_kind(result, reduction, target_shape, dtype):
    """'none': per-sample values shaped like the target; 'sum'/'mean': a NumPy scalar."""
    if reduction == "none" and target_shape != ():
        assert isinstance(result, np.ndarray)
        assert result.shape == target_shape
    else:
        assert isinstance(result, np.generic), f"expected a NumPy scalar, got {type(result)}"
    assert result.dtype == dtype


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ------------------------------------------------------------- 1. semantics against torch

@needs_torch
class TestIndexTargetsVsTorch:
    """Class-index targets: every shape, weight, ignore_index, reduction and smoothing."""

    @pytest.mark.parametrize("label_smoothing", SMOOTHINGS, ids=lambda s: f"ls{s}")
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore-100", "ignore2"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape_id", list(SHAPES))
    def test_cross_entropy(self, shape_id, dtype, weighted, ignore_index, reduction,
                           label_smoothing):
        shape = SHAPES[shape_id]
        rng = _rng("ce", shape_id, _dtype_id(dtype), weighted, ignore_index)
        x = make_logits(rng, shape, dtype)
        t = make_index_target(rng, shape, ignore_index)
        w = make_weight(rng, weighted, dtype)
        kwargs = dict(weight=w, ignore_index=ignore_index, reduction=reduction,
                      label_smoothing=label_smoothing)
        result = cross_entropy(x, t, **kwargs)
        expected, _ = torch_cross_entropy(x, t, **kwargs)
        check_result_kind(result, reduction, t.shape, dtype)
        assert_close(result, expected, dtype, atol=ATOL_UNIT * loss_scale(x, w, reduction, t.size))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore-100", "ignore2"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape_id", list(SHAPES))
    def test_nll_loss(self, shape_id, dtype, weighted, ignore_index, reduction):
        shape = SHAPES[shape_id]
        rng = _rng("nll", shape_id, _dtype_id(dtype), weighted, ignore_index)
        axis = 0 if len(shape) == 1 else 1
        log_probs = special.log_softmax(make_logits(rng, shape, np.float64), axis=axis).astype(dtype)
        t = make_index_target(rng, shape, ignore_index)
        w = make_weight(rng, weighted, dtype)
        kwargs = dict(weight=w, ignore_index=ignore_index, reduction=reduction)
        result = nll_loss(log_probs, t, **kwargs)
        expected = torch_nll_loss(log_probs, t, **kwargs)
        check_result_kind(result, reduction, t.shape, dtype)
        assert_close(result, expected, dtype,
                     atol=ATOL_UNIT * loss_scale(log_probs, w, reduction, t.size))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("rows", ["forward", "reversed"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("c", [10, 300], ids=["near", "far"])
    def test_nll_loss_near_and_far_rows(self, c, dtype, rows, weighted, reduction):
        """Rows over 1 KiB apart (300 classes), forward and reversed: the gather prefetches
        samples ahead (``losses.NLL_AHEAD``), past ignored ones and up to the last sample;
        rows nearer (10 classes) of float64 data are gathered first and summed after, in
        vector lanes (``losses.near_rows``: 100 samples, three lane groups and a partial
        one), float32 data's summed as they are gathered. Each sample's loss is exactly
        -w[y] x[n, y]."""
        rng = _rng("far", _dtype_id(dtype), rows, weighted, c)
        n = 100
        log_probs = special.log_softmax(rng.standard_normal((n, c)) * 4, axis=1).astype(dtype)
        if rows == "reversed":
            log_probs = log_probs[::-1]
        t = make_index_target(rng, (n, c))
        t[-1] = -100
        w = make_weight(rng, weighted, dtype, c)
        result = nll_loss(log_probs, t, weight=w, reduction=reduction)
        expected = torch_nll_loss(log_probs, t, weight=w, reduction=reduction)
        check_result_kind(result, reduction, t.shape, dtype)
        assert_close(result, expected, dtype, atol=ATOL_UNIT * loss_scale(log_probs, w, reduction, n))
        if reduction == "none":
            kept = t != -100
            w_y = np.ones(n) if w is None else w[np.where(kept, t, 0)].astype(np.float64)
            exact = np.where(kept, -(w_y * log_probs[np.arange(n), np.where(kept, t, 0)]), 0.0)
            np.testing.assert_array_equal(result, exact.astype(dtype))

    @pytest.mark.parametrize("c", [10, 300], ids=["near", "far"])
    def test_nll_loss_huge_losses_of_both_signs(self, c):
        """Losses of +-1e308 in turn (the sums of near rows' vector lanes overflow, one to
        inf, the next to -inf): the sum is torch's 0, as a sum in sequence gives it; an
        inf loss gives inf, and inf with -inf nan, as torch's."""
        log_probs = np.full((300, c), -1e308)
        log_probs[::2] = 1e308
        t = np.arange(300) % c
        for reduction in ("sum", "mean"):
            assert nll_loss(log_probs, t, reduction=reduction) == torch_nll_loss(
                log_probs, t, reduction=reduction) == 0.0
        log_probs[5, t[5]] = -np.inf
        assert nll_loss(log_probs, t, reduction="sum") == np.inf
        log_probs[7, t[7]] = np.inf
        assert np.isnan(nll_loss(log_probs, t, reduction="sum"))
        assert np.isnan(torch_nll_loss(log_probs, t, reduction="sum"))

    @pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore-100", "ignore2"])
    @pytest.mark.parametrize("target_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8],
                             ids=_dtype_id)
    def test_target_dtypes(self, target_dtype, ignore_index):
        """Any integer target dtype; uint8 cannot hold -100, so nothing is ignored there."""
        shape = SHAPES["NCdd"]
        rng = _rng("tdtype", _dtype_id(target_dtype), ignore_index)
        x = make_logits(rng, shape, np.float64)
        t64 = make_index_target(rng, shape, ignore_index)
        if target_dtype == np.uint8 and ignore_index < 0:
            t64 = np.where(t64 == ignore_index, 1, t64)
        t = t64.astype(target_dtype)
        w = make_weight(rng, True, np.float64)
        for reduction in REDUCTIONS:
            kwargs = dict(weight=w, ignore_index=ignore_index, reduction=reduction)
            atol = ATOL_UNIT * loss_scale(x, w, reduction, t.size)
            expected, grad_expected = torch_cross_entropy(x, t64, label_smoothing=0.1, **kwargs)
            loss, grad = cross_entropy(x, t, label_smoothing=0.1, return_grad=True, **kwargs)
            assert_close(loss, expected, np.float64, atol=atol)
            assert_close(grad, grad_expected, np.float64,
                         atol=ATOL_UNIT * grad_scale(grad_expected), what="grad")
            log_probs = special.log_softmax(x, axis=1)
            assert_close(nll_loss(log_probs, t, **kwargs), torch_nll_loss(log_probs, t64, **kwargs),
                         np.float64, atol=atol)

    def test_non_contiguous_target(self):
        rng = _rng("strided target")
        x = make_logits(rng, (6, N_CLASSES), np.float64)
        base = rng.integers(0, N_CLASSES, (12, 2)).astype(np.int32)
        t = base[::2, 1]
        assert not t.flags.c_contiguous
        for reduction in REDUCTIONS:
            expected, _ = torch_cross_entropy(x, t, reduction=reduction)
            assert_close(cross_entropy(x, t, reduction=reduction), expected, np.float64,
                         atol=ATOL_UNIT * loss_scale(x, None, reduction, t.size))

    @pytest.mark.parametrize("ignore_index", [7, -1], ids=["ignore7", "ignore-1"])
    def test_ignore_index_outside_class_range(self, ignore_index):
        """Targets equal to an ignore_index that is no class are ignored, not out of bounds."""
        rng = _rng("ignore outside", ignore_index)
        x = make_logits(rng, (6, N_CLASSES), np.float64)
        t = np.array([ignore_index, 0, 4, ignore_index, 2, 1])
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.1):
                kwargs = dict(ignore_index=ignore_index, reduction=reduction,
                              label_smoothing=smoothing)
                expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
                loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
                assert_close(loss, expected, np.float64, atol=ATOL_UNIT * loss_scale(x, None, reduction, 6))
                assert_close(grad, grad_expected, np.float64,
                             atol=ATOL_UNIT * grad_scale(grad_expected), what="grad")

    def test_plain_lists(self):
        """array_like inputs (nested lists) are accepted, as documented."""
        x = [[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]]
        t = [2, 0]
        expected, _ = torch_cross_entropy(np.array(x), np.array(t))
        assert_close(cross_entropy(x, t), expected, np.float64, atol=ATOL_UNIT * 3)


# Non-contiguous logits: (shape of a fresh contiguous array, the view taken of it).
LAYOUTS = {
    "rows_step2": ((14, N_CLASSES), lambda a: a[::2]),
    "classes_step2": ((7, 2 * N_CLASSES), lambda a: a[:, ::2]),
    "reversed": ((7, N_CLASSES), lambda a: a[::-1, ::-1]),
    "transposed": ((N_CLASSES, 7), lambda a: a.T),
    "fortran_4d": ((2, N_CLASSES, 3, 4), np.asfortranarray),
    "channels_last": ((2, 3, 4, N_CLASSES), lambda a: np.moveaxis(a, -1, 1)),
    "sliced_4d": ((2, N_CLASSES, 6, 4), lambda a: a[:, :, ::2]),
}


def make_layout(rng, layout, dtype, scale=2.0):
    shape, view = LAYOUTS[layout]
    x = view(make_logits(rng, shape, dtype, scale))
    assert not x.flags.c_contiguous
    return x


@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("layout", ["rows", "reversed_rows", "reversed_classes",
                                    "every_other_class"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_nll_loss_of_rows_fetched_ahead(dtype, layout, weighted):
    """Log-probabilities of ``losses.FETCH_ROWS_FROM`` bytes or more in near rows of 40
    bytes: ``near_rows`` hints the cache lines of the next rows as it gathers
    (``fetch_rows``: strides of either sign; the last block and its last step partial);
    every other class of rows twice as wide, 80 bytes apart, goes to ``far_rows``
    (``gathers_far``). Each sample's loss is exactly -w[y] x[n, y], the sum and the mean
    within 2 ulp of math.fsum's, as everywhere else."""
    from numba_lse.cpu.losses import FETCH_ROWS, FETCH_ROWS_FROM, NLL_BLOCK, gathers_far
    itemsize = np.dtype(dtype).itemsize
    c = 40 // itemsize
    n = FETCH_ROWS_FROM // (c * itemsize) + NLL_BLOCK + FETCH_ROWS // 2 + 1
    assert n % NLL_BLOCK % FETCH_ROWS != 0
    rng = _rng("fetched", _dtype_id(dtype), layout, weighted)
    base = rng.standard_normal((n, 2 * c if layout == "every_other_class" else c)) * 4
    base = base.astype(dtype)
    x = {"rows": base, "reversed_rows": base[::-1], "reversed_classes": base[:, ::-1],
         "every_other_class": base[:, ::2]}[layout]
    assert x.size * itemsize >= FETCH_ROWS_FROM
    assert gathers_far(x[:, :, None]) == (layout == "every_other_class")
    t = make_index_target(rng, (n, c))
    w = make_weight(rng, weighted, dtype, c)
    kept = t != -100
    y = np.where(kept, t, 0)
    w_y = np.where(kept, 1.0 if w is None else w[y].astype(np.float64), 0.0)
    exact = -(w_y * x[np.arange(n), y].astype(np.float64))
    np.testing.assert_array_equal(nll_loss(x, t, weight=w, reduction="none"),
                                  exact.astype(dtype))
    total = math.fsum(exact)
    assert_close(nll_loss(x, t, weight=w, reduction="sum"), total, dtype)
    assert_close(nll_loss(x, t, weight=w), total / math.fsum(w_y), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_nll_loss_fetches_ahead_only_packed_rows(dtype):
    """Which inputs of ``losses.FETCH_ROWS_FROM`` bytes or more ``near_rows`` hints ahead
    (``losses.fetches_ahead``, on the (N, C, 1) view the kernels take): rows packed, of
    either order, whole or a class in two; not a transposed array, whose rows interleave
    (every step's hints would span the whole array: a 16 MB Fortran-ordered 4200x1000 took
    95 ms, where it takes 0.02 without them), nor a few classes of wide rows (lines the
    gather never reads), nor an input under the threshold. And which of them ``nll_block``
    gathers as far rows instead (``gathers_far``): rows a cache line (64 bytes) apart or
    more, from memory (float64 rows of 10, any rows of a step). Each of them gives the exact
    losses all the same."""
    from numba_lse.cpu.losses import FETCH_ROWS_FROM, fetches_ahead, gathers_far
    itemsize = np.dtype(dtype).itemsize
    n = FETCH_ROWS_FROM // (10 * itemsize) + 1
    rng = _rng("fetches_ahead", _dtype_id(dtype))
    wide = rng.standard_normal((n, 40)).astype(dtype)
    line_apart = itemsize == 8  # rows of 10: 80 bytes apart in float64, 40 in float32
    views = {"rows": (wide[:, :10].copy(), True, line_apart),
             "reversed": (wide[::-1, :10].copy()[::-1], True, line_apart),
             "reversed_classes": (wide[:, :10].copy()[:, ::-1], True, line_apart),
             "every_other_class": (wide[:, :20].copy()[:, ::2], True, True),
             "a quarter of wide rows": (wide[:, :10], False, True),
             "transposed": (np.asfortranarray(wide[:, :10]), False, False),
             "under the threshold": (wide[: n // 2, :10].copy(), False, False)}
    for name, (x, fetched, far) in views.items():
        assert fetches_ahead(x[:, :, None]) == fetched, name
        assert gathers_far(x[:, :, None]) == far, name
        t = rng.integers(0, 10, x.shape[0])
        exact = -x[np.arange(x.shape[0]), t].astype(np.float64)
        np.testing.assert_array_equal(nll_loss(x, t, reduction="none"), exact.astype(dtype))
        assert_close(nll_loss(x, t, reduction="sum"), math.fsum(exact), dtype)


@needs_torch
class TestLayoutsVsTorch:
    """Strided, transposed, Fortran-ordered and channels-last logits, with the fused gradient."""

    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("layout", list(LAYOUTS))
    def test_layout(self, layout, dtype, target_kind):
        rng = _rng("layout", layout, _dtype_id(dtype), target_kind)
        x = make_layout(rng, layout, dtype)
        if target_kind == "index":
            t = make_index_target(rng, x.shape)
        else:
            t = make_probability_target(rng, x.shape, dtype)
        w = make_weight(rng, True, dtype)
        for reduction in ("none", "mean"):
            kwargs = dict(weight=w, reduction=reduction, label_smoothing=0.1)
            expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
            loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
            n_samples = math.prod(_target_shape(x.shape))
            assert_close(loss, expected, dtype, atol=ATOL_UNIT * loss_scale(x, w, reduction, n_samples))
            assert grad.shape == x.shape and grad.dtype == x.dtype
            assert_close(grad, grad_expected, dtype, ulps=4,
                         atol=ATOL_UNIT * grad_scale(grad_expected), what="grad")
            if target_kind == "index":
                log_probs = make_layout(rng, layout, dtype)  # any values will do for nll
                nkw = dict(weight=w, reduction=reduction)
                assert_close(nll_loss(log_probs, t, **nkw), torch_nll_loss(log_probs, t, **nkw),
                             dtype, atol=ATOL_UNIT * loss_scale(log_probs, w, reduction, n_samples))


    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_plain_call_as_general(self, dtype, reduction):
        """A plain call (an (N, C) input, an (N,) int64 target, no weight) takes the short
        path (``_validate.plain_classes``); with an int32 target the same call takes the
        general one, and so with weights of 1: the same bits, on contiguous, Fortran-ordered,
        strided and read-only inputs, with an ignored sample, ignore_index at int64's ends."""
        from numba_lse import _validate

        rng = _rng("plain", _dtype_id(dtype), reduction)
        wide = rng.standard_normal((80, 14)).astype(dtype)
        frozen = wide[:40, :7].copy()
        frozen.flags.writeable = False
        ones = np.ones(7, dtype=dtype)
        for x in (wide[:40, :7].copy(), np.asfortranarray(wide[:40, :7]), wide[::2, ::2], frozen):
            for ignore_index in (-100, 2**63 - 1, -2**63):
                t = rng.integers(0, 7, 40)
                t[3] = ignore_index
                assert _validate.plain_classes(x, t, None, ignore_index, reduction)
                kw = dict(ignore_index=ignore_index, reduction=reduction)
                for fn in (nll_loss, cross_entropy):
                    plain = fn(x, t, **kw)
                    np.testing.assert_array_equal(plain, fn(x, t, weight=ones, **kw))
                    if ignore_index == -100:
                        np.testing.assert_array_equal(plain, fn(x, t.astype(np.int32), **kw))


# ------------------------------------- byte order (no torch here: torch refuses such arrays)

class TestByteOrder:
    """Arrays in the other byte order (big-endian FITS files, network order), which torch
    refuses: taken as NumPy's ufuncs and SciPy take them, converted, so every array may be
    either way round and the results (in the machine's order) are the bits of the same data
    in the machine's order."""

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_same_bits_as_the_machines_order(self, dtype):
        rng = _rng("byte order", _dtype_id(dtype))
        x = make_logits(rng, (12, N_CLASSES), dtype)
        t = make_index_target(rng, (12, N_CLASSES))
        w = make_weight(rng, True, dtype)
        p = make_probability_target(rng, x.shape, dtype)
        swap = lambda a: a.astype(a.dtype.newbyteorder("S"))  # noqa: E731 (the other order)
        assert not swap(x).dtype.isnative and not swap(t).dtype.isnative
        for reduction in REDUCTIONS:
            for kwargs in ({}, {"weight": w}):
                big = {k: swap(v) for k, v in kwargs.items()}
                want = nll_loss(x, t, reduction=reduction, **kwargs)
                got = nll_loss(swap(x), swap(t), reduction=reduction, **big)
                assert np.asarray(got).dtype == np.asarray(want).dtype
                assert same_bits(np.asarray(got), np.asarray(want)), (reduction, kwargs)
                for target in (t, p):
                    want = cross_entropy(x, target, reduction=reduction, return_grad=True, **kwargs)
                    got = cross_entropy(swap(x), swap(target), reduction=reduction,
                                        return_grad=True, **big)
                    for g, e in zip(got, want):
                        assert np.asarray(g).dtype == np.asarray(e).dtype and np.asarray(g).dtype.isnative
                        assert same_bits(np.asarray(g), np.asarray(e)), (reduction, kwargs, target.dtype)


# ----------------------------------------------------- 2. probability targets against torch

@needs_torch
class TestProbabilityTargetsVsTorch:
    @pytest.mark.parametrize("label_smoothing", SMOOTHINGS, ids=lambda s: f"ls{s}")
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape_id", list(SHAPES))
    def test_cross_entropy(self, shape_id, dtype, weighted, reduction, label_smoothing):
        shape = SHAPES[shape_id]
        rng = _rng("prob", shape_id, _dtype_id(dtype), weighted)
        x = make_logits(rng, shape, dtype)
        t = make_probability_target(rng, shape, dtype)
        w = make_weight(rng, weighted, dtype)
        kwargs = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
        result = cross_entropy(x, t, **kwargs)
        expected, _ = torch_cross_entropy(x, t, **kwargs)
        n_samples = math.prod(_target_shape(shape))
        check_result_kind(result, reduction, _target_shape(shape), dtype)
        assert_close(result, expected, dtype, atol=ATOL_UNIT * loss_scale(x, w, reduction, n_samples))

    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    def test_mean_divides_by_number_of_samples(self, weighted):
        """'mean' is the sum over N*d1*d2 samples, not over a weight sum (torch semantics)."""
        shape = SHAPES["NCdd"]
        rng = _rng("prob mean", weighted)
        x = make_logits(rng, shape, np.float64)
        t = make_probability_target(rng, shape, np.float64)
        w = make_weight(rng, weighted, np.float64)
        total = cross_entropy(x, t, weight=w, reduction="sum")
        mean = cross_entropy(x, t, weight=w, reduction="mean")
        n_samples = shape[0] * shape[2] * shape[3]
        assert mean == pytest.approx(total / n_samples, rel=1e-14)
        expected, _ = torch_cross_entropy(x, t, weight=w, reduction="mean")
        assert_close(mean, expected, np.float64, atol=ATOL_UNIT * loss_scale(x, w, "mean", n_samples))

    def test_ignore_index_rejected(self):
        """torch raises "ignore_index is not supported for floating point target" for any
        non-negative ignore_index with probability targets; so must numba_lse."""
        rng = _rng("prob ignore")
        x = make_logits(rng, (6, N_CLASSES), np.float64)
        t = make_probability_target(rng, (6, N_CLASSES), np.float64)
        with pytest.raises(RuntimeError, match="ignore_index is not supported"):
            torch_cross_entropy(x, t, ignore_index=2)
        for reduction in REDUCTIONS:
            explicit = cross_entropy(x, t, ignore_index=-100, reduction=reduction)
            assert same_bits(explicit, cross_entropy(x, t, reduction=reduction))
            with pytest.raises(ValueError, match="ignore_index"):
                cross_entropy(x, t, ignore_index=2, reduction=reduction)

    def test_unnormalised_and_one_hot_targets(self):
        """Targets need not sum to 1 (torch does not check); one-hot rows equal class indices."""
        rng = _rng("prob onehot")
        x = make_logits(rng, (6, N_CLASSES), np.float64)
        idx = rng.integers(0, N_CLASSES, 6)
        one_hot = np.eye(N_CLASSES)[idx]
        for reduction in ("none", "sum"):
            assert_close(cross_entropy(x, one_hot, reduction=reduction),
                         cross_entropy(x, idx, reduction=reduction), np.float64, atol=1e-15)
        t = rng.uniform(0, 2, (6, N_CLASSES))
        expected, grad_expected = torch_cross_entropy(x, t, reduction="none")
        loss, grad = cross_entropy(x, t, reduction="none", return_grad=True)
        assert_close(loss, expected, np.float64, atol=ATOL_UNIT * 20)
        assert_close(grad, grad_expected, np.float64, atol=ATOL_UNIT * grad_scale(grad_expected),
                     what="grad")


# --------------------------------------------------------------------- 3. fused gradient

@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("n", [32, 127, 128, 129, 1023, 1024, 1025, 2049, 3000, 5000])
def test_loss_with_gradient_has_the_bits_without_at_block_and_step_edges(n, dtype):
    """The gradient's row sums keep their exps (``losses.partial_keeping_exps``) and must sum
    as the loss alone does (``partials.partial_of_slice``): blocks of 1024 entries, each
    summed 128 entries a step (``partials.terms_fetching``). Rows of randn and rows whose
    running max rises block after block (each block's exps rescaled), at lengths on either
    side of those edges. No torch needed."""
    rng = np.random.default_rng(n)
    rising = rng.standard_normal((32, n)) + np.linspace(0.0, 30.0, n)
    x = np.concatenate([rng.standard_normal((32, n)) * 4, rising]).astype(dtype)
    t = rng.integers(0, n, 64)
    loss, _ = cross_entropy(x, t, reduction="none", return_grad=True)
    assert same_bits(loss, cross_entropy(x, t, reduction="none"))


@needs_torch
class TestFusedGradientVsTorch:
    """grad equals torch autograd's logits.grad; the loss is the non-grad call's, bit for bit."""

    @staticmethod
    def _check(x, t, dtype, **kwargs):
        loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
        plain = cross_entropy(x, t, **kwargs)
        assert type(loss) is type(plain)
        assert same_bits(loss, plain), f"loss with return_grad {loss!r} != without {plain!r}"
        assert isinstance(grad, np.ndarray)
        assert grad.shape == np.shape(x) and grad.dtype == dtype
        expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
        n_samples = math.prod(_target_shape(np.shape(x)))
        assert_close(loss, expected, dtype,
                     atol=ATOL_UNIT * loss_scale(x, kwargs.get("weight"), kwargs["reduction"], n_samples))
        assert_close(grad, grad_expected, dtype, ulps=4, atol=ATOL_UNIT * grad_scale(grad_expected),
                     what="grad")

    @pytest.mark.parametrize("label_smoothing", SMOOTHINGS, ids=lambda s: f"ls{s}")
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore-100", "ignore2"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape_id", ["C", "NC", "NCdd"])
    def test_index_target(self, shape_id, dtype, weighted, ignore_index, reduction, label_smoothing):
        shape = SHAPES[shape_id]
        rng = _rng("grad", shape_id, _dtype_id(dtype), weighted, ignore_index)
        x = make_logits(rng, shape, dtype)
        t = make_index_target(rng, shape, ignore_index)
        w = make_weight(rng, weighted, dtype)
        self._check(x, t, dtype, weight=w, ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing)

    @pytest.mark.parametrize("label_smoothing", SMOOTHINGS, ids=lambda s: f"ls{s}")
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape_id", ["C", "NC", "NCdd"])
    def test_probability_target(self, shape_id, dtype, weighted, reduction, label_smoothing):
        shape = SHAPES[shape_id]
        rng = _rng("grad prob", shape_id, _dtype_id(dtype), weighted)
        x = make_logits(rng, shape, dtype)
        t = make_probability_target(rng, shape, dtype)
        w = make_weight(rng, weighted, dtype)
        self._check(x, t, dtype, weight=w, reduction=reduction, label_smoothing=label_smoothing)

    # Rows of 32 classes or more are reduced inside the loss kernel, a block of rows at a time
    # (as many rows as 256 KiB of logits hold, at most 512: 512 of 40 classes, 3 of 10^4
    # float64, 1 of 7 10^4; blocks that do not divide the batch); rows longer than 65536 in batches under
    # 16 by the row kernel first. Every third index target is ignored. With many classes,
    # gradient entries cancel (T p_k ~ w_k t'_k): float32 ones are then within the documented
    # 2^-29 of the magnitude of their two terms (``gradient_terms``), not of their own ulp.
    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    # (1, 700, 200): 200 samples of 700 classes along axis 1, their partials taken in
    # pieces of classes and merged (``reduce.column_pieces``).
    @pytest.mark.parametrize("shape", [(700, 40), (7, 10_000), (20, 70_000), (5, 70_000),
                                       (1, 700, 200)],
                             ids=lambda s: "x".join(map(str, s)))
    def test_long_rows(self, shape, dtype, target_kind):
        rng = _rng("grad long rows", shape, _dtype_id(dtype), target_kind)
        x = make_logits(rng, shape, dtype)
        w = make_weight(rng, True, dtype, C=shape[1])
        if target_kind == "index":
            t, kwargs = make_index_target(rng, shape, 3), dict(ignore_index=3)
        else:
            t, kwargs = make_probability_target(rng, shape, dtype), {}
        kwargs.update(weight=w, reduction="mean", label_smoothing=0.1)
        loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
        assert same_bits(loss, cross_entropy(x, t, **kwargs))
        expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
        assert_close(loss, expected, dtype,
                     atol=ATOL_UNIT * loss_scale(x, w, "mean", math.prod(_target_shape(shape))))
        if x.ndim == 3:  # the terms of its (samples, classes) rows, moved back
            rows = np.moveaxis(x, 1, -1).reshape(-1, shape[1])
            t_rows = np.moveaxis(t, 1, -1).reshape(rows.shape) if t.ndim == 3 else t.reshape(-1)
            terms = gradient_terms(rows, t_rows, w, 0.1).reshape(shape[0], shape[2], shape[1])
            terms = np.moveaxis(terms, -1, 1)
        else:
            terms = gradient_terms(x, t, w, 0.1)
        cancelling = terms * (2.0 ** -29 if dtype == np.float32 else 0.0)
        assert_close(grad, grad_expected, dtype, ulps=4, what="grad",
                     atol=ATOL_UNIT * grad_scale(grad_expected) + cancelling)

    def test_docstring_example(self):
        loss, grad = cross_entropy(np.array([[0.0, 0.0]]), np.array([0]), return_grad=True)
        assert loss == np.log(2.0)
        np.testing.assert_array_equal(grad, [[-0.5, 0.5]])


# ------------------------------------------------------------ 4. extreme and special values

class TestSpecialValues:
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_large_opposite_logits_exact(self, dtype):
        """cross_entropy([[1000, -1000]], [1]) is exactly 2000; its gradient exactly [1, -1]."""
        x = np.array([[1000.0, -1000.0]], dtype=dtype)
        t = np.array([1])
        for reduction in ("mean", "sum"):
            loss = cross_entropy(x, t, reduction=reduction)
            assert isinstance(loss, np.generic) and loss.dtype == dtype
            assert loss == 2000.0
        loss, grad = cross_entropy(x, t, reduction="none", return_grad=True)
        np.testing.assert_array_equal(loss, np.array([2000.0], dtype=dtype))
        np.testing.assert_array_equal(grad, np.array([[1.0, -1.0]], dtype=dtype))
        assert grad.dtype == dtype
        log_probs = np.array([[0.0, -2000.0]], dtype=dtype)
        assert nll_loss(log_probs, t) == 2000.0

    @needs_torch
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_minus_inf_logits(self, dtype, label_smoothing):
        """-inf at non-target classes is fine; at the target it gives inf (torch's values).

        With label smoothing a -inf logit makes the smoothing term infinite, as in torch.
        """
        x = np.array([[0.0, -np.inf, 1.0, 2.0],
                      [-np.inf, 3.0, -np.inf, -np.inf],
                      [1.0, 2.0, -np.inf, 0.5],
                      [0.5, 0.25, 0.0, 1.0]], dtype=dtype)
        t = np.array([0, 1, 2, 3])
        for reduction in REDUCTIONS:
            kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
            expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
            loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
            assert_close(loss, expected, dtype, atol=ATOL_UNIT * 4 * 4)
            assert_close(grad, grad_expected, dtype, ulps=4, atol=ATOL_UNIT, what="grad")
        if label_smoothing == 0:
            loss = cross_entropy(x, t, reduction="none")
            assert np.all(np.isfinite(loss[[0, 1, 3]])) and loss[1] == 0
            assert loss[2] == np.inf

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_minus_inf_target_logit_is_inf(self, dtype):
        x = np.array([[0.0, -np.inf, 1.0]], dtype=dtype)
        assert cross_entropy(x, np.array([1])) == np.inf
        assert nll_loss(np.array([[0.0, -np.inf]], dtype=dtype), np.array([1])) == np.inf

    @needs_torch
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_plus_inf_logits(self, dtype):
        """+inf logits: torch's nan for the sample, at the target or not (log_softmax's
        -inf at the finite entries would make the loss +inf where the target is finite)."""
        x = np.array([[np.inf, 0.0, 1.0], [0.0, np.inf, np.inf], [0.0, 1.0, 2.0],
                      [1.0, np.inf, 0.0]], dtype=dtype)
        t = np.array([0, 2, 1, 0])
        for reduction in REDUCTIONS:
            expected, grad_expected = torch_cross_entropy(x, t, reduction=reduction)
            loss, grad = cross_entropy(x, t, reduction=reduction, return_grad=True)
            assert_close(loss, expected, dtype, atol=ATOL_UNIT * 9)
            assert_close(grad, grad_expected, dtype, ulps=4, atol=ATOL_UNIT, what="grad")

    @needs_torch
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("n_classes", [40, 1024, 3000])
    def test_special_rows_with_kept_exps(self, n_classes, dtype, label_smoothing):
        """Rows of 32 to 65536 classes keep the exps of their sums for the gradient,
        rescaled where a block's running max is below the row's: +inf, nan,
        all -inf, -inf at the target, ties at the max, a dominant entry, a first half of
        -inf and a rising row give torch's loss and gradient, and the loss of the call
        without the gradient, bit for bit."""
        rng = _rng("kept exps", n_classes, _dtype_id(dtype), label_smoothing)
        x = make_logits(rng, (9, n_classes), dtype)
        x[0, 3] = np.inf
        x[1, 5] = np.nan
        x[2] = -np.inf
        x[3, 7] = -np.inf
        x[4, [1, 9, 30]] = 50.0
        x[5, 11] = 1000.0
        x[6, ::2] = -np.inf
        x[7, :n_classes // 2] = -np.inf
        x[8] = np.sort(x[8])
        t = np.array([2, 4, 0, 7, 9, 11, 1, n_classes - 1, 39])
        for reduction in REDUCTIONS:
            kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
            loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
            assert same_bits(loss, cross_entropy(x, t, **kwargs))
            expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
            np.testing.assert_array_equal(np.isnan(grad), np.isnan(grad_expected))
            assert_close(loss, expected, dtype, atol=ATOL_UNIT * loss_scale(x, None, reduction, 9))
            finite = ~np.isnan(grad_expected)
            assert_close(grad[finite], grad_expected[finite], dtype, ulps=4,
                         atol=ATOL_UNIT * grad_scale(grad_expected[finite]), what="grad")

    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_nan_stays_in_its_sample(self, dtype, target_kind):
        rng = _rng("nan", _dtype_id(dtype), target_kind)
        x = make_logits(rng, (5, N_CLASSES), dtype)
        x[2, 3] = np.nan
        t = (np.array([0, 1, 2, 3, 4]) if target_kind == "index"
             else make_probability_target(rng, x.shape, dtype))
        loss, grad = cross_entropy(x, t, reduction="none", return_grad=True)
        np.testing.assert_array_equal(np.isnan(loss), [False, False, True, False, False])
        row_nan = np.zeros(x.shape, bool)
        row_nan[2] = True
        np.testing.assert_array_equal(np.isnan(grad), row_nan)
        for reduction in ("mean", "sum"):
            assert np.isnan(cross_entropy(x, t, reduction=reduction))
        if target_kind == "index":
            log_probs = special.log_softmax(x.astype(np.float64), axis=1).astype(dtype)
            np.testing.assert_array_equal(np.isnan(nll_loss(log_probs, t, reduction="none")),
                                          [False, False, True, False, False])
            assert np.isnan(nll_loss(log_probs, t))
            if torch is not None:
                for reduction in REDUCTIONS:
                    expected, grad_expected = torch_cross_entropy(x, t, reduction=reduction)
                    loss, grad = cross_entropy(x, t, reduction=reduction, return_grad=True)
                    assert_close(loss, expected, dtype, atol=ATOL_UNIT * 100)
                    assert_close(grad, grad_expected, dtype, ulps=4,
                                 atol=ATOL_UNIT * grad_scale(grad_expected), what="grad")

    @needs_torch
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_ignored_samples_never_leak(self, dtype, label_smoothing):
        """nan/inf rows whose target is ignore_index: finite loss equal to torch's.

        Their gradient rows are zeros. (torch's autograd gives nan there, since its
        log_softmax backward multiplies a zero upstream gradient by exp(nan); numba_lse's
        docstring promises that ignored samples never leak nan or inf, so the gradient is
        compared with torch on the other rows only.)
        """
        rng = _rng("ignored leak", _dtype_id(dtype), label_smoothing)
        x = make_logits(rng, (5, N_CLASSES), dtype)
        x[1] = np.nan
        x[3, 0] = np.inf
        x[4, 2] = -np.inf
        t = np.array([0, -100, 2, -100, -100])
        w = make_weight(rng, True, dtype)
        for reduction in REDUCTIONS:
            kwargs = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
            expected, grad_expected = torch_cross_entropy(x, t, **kwargs)
            loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
            assert np.all(np.isfinite(loss))
            assert_close(loss, expected, dtype, atol=ATOL_UNIT * loss_scale(x, w, reduction, 5))
            kept = t != -100
            np.testing.assert_array_equal(grad[~kept], 0)
            assert_close(grad[kept], grad_expected[kept], dtype, ulps=4,
                         atol=ATOL_UNIT * grad_scale(grad_expected[kept]), what="grad")
            log_probs = x.copy()
            nkw = dict(weight=w, reduction=reduction)
            result = nll_loss(log_probs, t, **nkw)
            assert np.all(np.isfinite(result))
            assert_close(result, torch_nll_loss(log_probs, t, **nkw), dtype,
                         atol=ATOL_UNIT * loss_scale(x, w, reduction, 5))

    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_all_ignored(self, dtype, weighted, label_smoothing):
        """Every sample ignored: 'mean' nan, 'sum' 0, 'none' zeros, gradient zeros (torch)."""
        rng = _rng("all ignored", _dtype_id(dtype), weighted)
        x = make_logits(rng, (4, N_CLASSES), dtype)
        t = np.full(4, -100)
        w = make_weight(rng, weighted, dtype)
        expected = {"mean": np.nan, "sum": 0.0, "none": np.zeros(4)}
        for reduction in REDUCTIONS:
            kwargs = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
            loss, grad = cross_entropy(x, t, return_grad=True, **kwargs)
            np.testing.assert_array_equal(loss, expected[reduction])
            assert loss.dtype == dtype
            np.testing.assert_array_equal(grad, np.zeros_like(x))
            np.testing.assert_array_equal(nll_loss(x, t, weight=w, reduction=reduction),
                                          expected[reduction])
            if torch is not None:
                ref, grad_ref = torch_cross_entropy(x, t, **kwargs)
                np.testing.assert_array_equal(loss, ref)
                np.testing.assert_array_equal(grad, grad_ref)

    @pytest.mark.parametrize("label_smoothing", [0.0, 0.3, 1.0], ids=["ls0", "ls0.3", "ls1"])
    @pytest.mark.parametrize("shape", [(4, N_CLASSES), (3, N_CLASSES, 2)], ids=["NC", "NCd"])
    def test_mean_over_class_weights_summing_to_zero(self, shape, label_smoothing):
        """Kept samples whose class weights sum to 0 (not ignored): 'mean' is torch's
        documented formula, sum_n l_n / sum_n w[y_n], an IEEE division: nan where the
        losses sum to 0 too, +-inf otherwise. torch's own result is the same without label
        smoothing; with it, torch divides its two sums (the targets' and the smoothing's)
        apart and mixes them, which gives nan where this gives +-inf (a documented
        departure)."""
        rng = _rng("zero weight sum", shape, label_smoothing)
        x = make_logits(rng, shape, np.float64)
        n = math.prod(_target_shape(shape))
        cases = [  # (targets, weight)
            (np.full(n, 3), [1.0, 2.0, 0.5, 0.0, 1.0]),  # the targets' class weighs 0
            (np.arange(n) % 2, [1.0, -1.0, 2.0, 3.0, 1.0]),  # weights that cancel
            (np.where(np.arange(n) % 2, 1, -100), [1.0, 0.0, 2.0, 3.0, 1.0]),  # some ignored
        ]
        for t, w in cases:
            t = t.reshape(_target_shape(shape))
            w = np.array(w)
            kwargs = dict(weight=w, label_smoothing=label_smoothing)
            loss = cross_entropy(x, t, **kwargs)
            total = float(np.sum(cross_entropy(x, t, reduction="none", **kwargs)))
            expected = np.nan if total == 0 else math.copysign(np.inf, total)
            np.testing.assert_array_equal(loss, expected, err_msg=f"{t.tolist()} {w.tolist()}")
            if torch is not None and label_smoothing == 0:
                np.testing.assert_array_equal(loss, torch_cross_entropy(x, t, **kwargs)[0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("shape", [(0, N_CLASSES), (0, N_CLASSES, 3)], ids=["0C", "0Cd"])
    def test_empty_batch(self, shape, target_kind, reduction):
        """(0, C) input: 'none' an empty array, 'sum' 0, 'mean' nan (torch)."""
        x = np.zeros(shape)
        t = (np.zeros(_target_shape(shape), dtype=np.int64) if target_kind == "index"
             else np.zeros(shape))
        loss, grad = cross_entropy(x, t, reduction=reduction, return_grad=True)
        assert grad.shape == shape and grad.dtype == np.float64
        expected = {"none": np.zeros(_target_shape(shape)), "sum": 0.0, "mean": np.nan}[reduction]
        check_result_kind(loss, reduction, _target_shape(shape), np.float64)
        np.testing.assert_array_equal(loss, expected)
        if target_kind == "index":
            nll = nll_loss(x, t, reduction=reduction)
            check_result_kind(nll, reduction, _target_shape(shape), np.float64)
            np.testing.assert_array_equal(nll, expected)
        if torch is not None:
            ref, grad_ref = torch_cross_entropy(x, t, reduction=reduction)
            np.testing.assert_array_equal(loss, ref)
            np.testing.assert_array_equal(grad, grad_ref)
            if target_kind == "index":
                np.testing.assert_array_equal(nll, torch_nll_loss(x, t, reduction=reduction))


# --------------------------------------------------------------------- 5. accuracy

def _exact_loss(row, y):
    """-log softmax(row)[y] of the very floats passed in, by mpmath at 60 digits.

    As log1p(sum_{k != y} exp(x_k - x_y)), so tiny losses keep their digits.
    """
    with mp.workdps(60):
        x_y = mp.mpf(float(row[y]))
        if x_y == mp.ninf:
            return mp.inf
        rest = mp.fsum(mp.exp(mp.mpf(float(v)) - x_y) for k, v in enumerate(row)
                       if k != y and v != -np.inf)
        return mp.log1p(rest)


def _ulps(value, exact, dtype):
    """|value - exact| in ulps of the exact value rounded to ``dtype``."""
    with mp.workdps(60):
        err = abs(mp.mpf(float(value)) - exact)
        ulp = np.spacing(np.abs(np.asarray(float(exact), dtype=dtype)))
        return float(err / mp.mpf(float(ulp)))


# Rows whose per-sample loss is hard for the naive formula (tiny, huge, ties, subnormal).
EXTREME_ROWS = {
    "dominant_by_40": ([0.0, -40.0, -41.0], 0),
    "dominant_by_100": ([100.0, 0.0, 0.0], 0),
    "ties": ([0.0, 0.0, 0.0], 1),
    "two_huge_ties": ([1000.0, 1000.0, -1000.0], 0),
    "opposite_1000": ([1000.0, -1000.0], 1),
    "big_offset": ([1e4, 1e4 - 1.0, 1e4 - 2.5], 2),
    "mixed_scales": ([700.0, 0.0, -700.0, 20.0], 3),
    "tiny_logits": ([1e-30, 0.0, -1e-30], 0),
    "subnormal_loss": ([0.0, -740.0], 0),
    "minus_inf_other": ([0.0, -np.inf, -3.0], 2),
}


class TestAccuracy:
    @pytest.mark.parametrize("dtype,max_ulps", [(np.float64, 2), (np.float32, 1)],
                             ids=["float64_le_2ulp", "float32_le_1ulp"])
    @pytest.mark.parametrize("case", list(EXTREME_ROWS))
    def test_extreme_rows_vs_mpmath(self, case, dtype, max_ulps):
        """Per-sample loss within 2 ulp (float64) / 1 ulp (float32) of mpmath's exact value.

        The reference is the exact loss of the very floats passed in (x rounded to the dtype).
        The rows are well conditioned (cond ~ 1 once x - max is exact), so this is the
        accuracy log_softmax's docstring claims.
        """
        row, y = EXTREME_ROWS[case]
        x = np.array([row], dtype=dtype)
        exact = _exact_loss(x[0].astype(np.float64), y)
        loss = cross_entropy(x, np.array([y]), reduction="none")
        assert loss.dtype == dtype
        err = _ulps(loss[0], exact, dtype)
        assert err <= max_ulps, (f"{case}: numba_lse {loss[0]!r}, exact {mp.nstr(exact, 20)}, "
                                 f"error {err:.3g} ulp")
        # The fused path gives the same loss, and a gradient within an absolute eps of exact.
        loss_g, grad = cross_entropy(x, np.array([y]), reduction="none", return_grad=True)
        assert same_bits(loss_g, loss)
        with mp.workdps(60):
            for k, v in enumerate(x[0].astype(np.float64)):
                p = mp.exp(-_exact_loss(x[0].astype(np.float64), k)) if v != -np.inf else mp.zero
                exact_g = p - (1 if k == y else 0)
                err_g = abs(mp.mpf(float(grad[0, k])) - exact_g)
                assert err_g <= 2 * np.finfo(dtype).eps * max(1, abs(float(exact_g))), (
                    f"{case}: grad[{k}] numba_lse {grad[0, k]!r}, exact {mp.nstr(exact_g, 20)}")

    @staticmethod
    def _exact_smoothed(row, y, eps, weight=None, target=None):
        """The float64 row's loss with label smoothing eps, by mpmath: against class y, or
        the probabilities ``target`` where given, class weights ``weight`` or none."""
        with mp.workdps(60):
            xs = [mp.mpf(float(v)) for v in row]
            m = max(xs)
            lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in xs))
            w = [mp.one] * len(xs) if weight is None else [mp.mpf(float(v)) for v in weight]
            share = mp.mpf(eps) / len(xs)
            if target is None:
                smooth = mp.fsum(wk * (lse - v) for wk, v in zip(w, xs))
                return (1 - mp.mpf(eps)) * w[y] * (lse - xs[y]) + share * smooth
            return mp.fsum(wk * ((1 - mp.mpf(eps)) * mp.mpf(float(tk)) + share) * (lse - v)
                           for wk, tk, v in zip(w, target, xs))

    @pytest.mark.parametrize("n", [32000, 70000])
    @pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
    def test_float64_smoothed_loss_of_wide_rows_within_2_ulp(self, n, weighted):
        """Label smoothing's sum over every class, in float64: a sum in sequence of n
        positive terms, compensated (plain, it was 39-84 ulp off on a confident target; the
        loss is well conditioned, cond ~ 1). Probability targets' sums likewise."""
        rng = _rng("smoothed wide", n, weighted)
        x = rng.standard_normal((1, n))
        x[0, 0] = x.max() + 10
        w = rng.random(n) + 0.5 if weighted else None
        loss = cross_entropy(x, np.array([0]), weight=w, reduction="none", label_smoothing=0.1)
        exact = self._exact_smoothed(x[0], 0, 0.1, w)
        assert _ulps(loss[0], exact, np.float64) <= 2, (loss[0], mp.nstr(exact, 20))
        t = rng.random((1, n))
        t /= t.sum()
        loss = cross_entropy(x, t, weight=w, reduction="none", label_smoothing=0.1)
        exact = self._exact_smoothed(x[0], None, 0.1, w, t[0])
        assert _ulps(loss[0], exact, np.float64) <= 2, (loss[0], mp.nstr(exact, 20))

    @pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
    def test_smoothing_sum_overflows_only_where_the_loss_does(self, weighted):
        """Each term of the smoothing sum is scaled by eps / C before it is summed: two
        terms of 1e308 sum to a loss of 6.7e307 (1e308 with weights 1, 2, 0.5), not inf."""
        x = np.array([[-1e308, -1e308, 0.0]])
        w = np.array([1.0, 2.0, 0.5]) if weighted else None
        loss = cross_entropy(x, np.array([2]), weight=w, reduction="none", label_smoothing=1.0)
        exact = self._exact_smoothed(x[0], 2, 1.0, w)
        assert np.isfinite(loss[0]) and _ulps(loss[0], exact, np.float64) <= 2, (
            loss[0], mp.nstr(exact, 20))

    def test_float32_per_sample_within_1_ulp_of_float64(self):
        """float32 per-sample losses and gradients vs a float64 SciPy reference (<= 1 ulp)."""
        rng = _rng("f32 vs f64")
        x = (rng.standard_normal((2000, 10)) * 3).astype(np.float32)
        t = rng.integers(0, 10, 2000)
        x64 = x.astype(np.float64)
        log_p = special.log_softmax(x64, axis=1)
        ref = -np.take_along_axis(log_p, t[:, None], axis=1)[:, 0]
        loss, grad = cross_entropy(x, t, reduction="none", return_grad=True)
        assert_close(loss, ref, np.float32, ulps=1)
        grad_ref = np.exp(log_p)
        grad_ref[np.arange(2000), t] -= 1.0
        assert_close(grad, grad_ref, np.float32, ulps=1, atol=4 * EPS64, what="grad")
        # and the float64 call agrees with the same reference
        assert_close(cross_entropy(x64, t, reduction="none"), ref, np.float64, atol=ATOL_UNIT * 20)

    @pytest.mark.parametrize("n", [32, 1000, 5000, CHUNK + 1])
    def test_float32_dominant_targets_of_long_rows_within_1_ulp(self, n):
        """16 rows of n float32 logits whose target is 0 to 1000 above every other logit:
        losses from about log(n) down to n e^-1000 (0 in float32); rows longer than a CHUNK
        in two. These rows sum their max's term with the others (``partials.TIES_IN_SUM``),
        and those whose sum lies too near 1 for its digits are summed again with their ties
        counted (``losses.SMALL_SUM``): within 1 ulp of the float64 loss (where their sums
        were left as they came, the losses below ~1e-7 were up to hundreds of ulps off), and
        the same bits with the gradient."""
        gaps = np.array([0, 1, 5, 10, 14, 16, 17, 18, 19, 20, 25, 30, 40, 60, 100, 1000],
                        np.float32)
        rng = _rng("dominant targets", n)
        x = rng.standard_normal((len(gaps), n)).astype(np.float32)
        t = rng.integers(0, n, len(gaps))
        rows = np.arange(len(gaps))
        x[rows, t] = x.max(axis=1) + gaps
        x64 = x.astype(np.float64)
        others = np.exp(x64 - x64[rows, t][:, None])
        others[rows, t] = 0.0
        expected = np.log1p(others.sum(axis=1))  # float64: within a few of its ulps
        loss = cross_entropy(x, t, reduction="none")
        assert_close(loss, expected, np.float32, ulps=1)
        assert same_bits(cross_entropy(x, t, reduction="none", return_grad=True)[0], loss)

    def test_cross_entropy_float32_mean_1e6_samples_within_1_ulp(self):
        """float32 mean over 10^6 samples (10 classes, randn*3): <= 1 ulp of float64 + fsum."""
        rng = _rng("ce 1e6")
        n = 10**6
        x = (rng.standard_normal((n, 10)) * 3).astype(np.float32)
        t = rng.integers(0, 10, n)
        log_p = special.log_softmax(x.astype(np.float64), axis=1)
        picked = np.take_along_axis(log_p, t[:, None], axis=1)[:, 0]
        ref = -math.fsum(picked.tolist()) / n
        result = cross_entropy(x, t)
        assert isinstance(result, np.float32)
        ulp = float(np.spacing(np.float32(ref)))
        assert abs(float(result) - ref) <= 1 * ulp, f"numba_lse {result!r}, float64 ref {ref!r}"
        # 'sum' too
        total = cross_entropy(x, t, reduction="sum")
        ulp = float(np.spacing(np.float32(-math.fsum(picked.tolist()))))
        assert abs(float(total) + math.fsum(picked.tolist())) <= ulp

    def test_nll_loss_float32_mean_1e6_samples_within_1_ulp(self):
        """float32 weighted nll mean over 10^6 samples with ignored ones: <= 1 ulp of fsum."""
        rng = _rng("nll 1e6")
        n = 10**6
        log_probs = special.log_softmax(rng.standard_normal((n, 10)) * 3, axis=1).astype(np.float32)
        t = rng.integers(0, 10, n)
        t[::7] = -100
        w = rng.uniform(0.5, 2.0, 10).astype(np.float32)
        kept = t != -100
        w_y = w.astype(np.float64)[t[kept]]
        chosen = log_probs[kept, t[kept]].astype(np.float64)
        ref = -math.fsum((w_y * chosen).tolist()) / math.fsum(w_y.tolist())  # products exact
        result = nll_loss(log_probs, t, weight=w)
        assert isinstance(result, np.float32)
        ulp = float(np.spacing(np.float32(ref)))
        assert abs(float(result) - ref) <= ulp, f"numba_lse {result!r}, float64 ref {ref!r}"
        plain = nll_loss(log_probs, t)
        ref = -math.fsum(chosen.tolist()) / kept.sum()
        assert abs(float(plain) - ref) <= float(np.spacing(np.float32(ref)))


    @pytest.mark.parametrize("reduction", ["sum", "mean"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    @pytest.mark.parametrize("shape", [(20_000, 10), (20_000, 300), (2, 4, 10_000)],
                             ids=["near", "far", "NCd_long"])
    def test_nll_loss_float32_within_1_ulp_while_cond_at_most_2_to_15(self, shape, weighted,
                                                                       reduction):
        """float32 data's sums run in sequence within blocks of at most 4096 samples
        (``losses.add_loss``; a sample's row of more, as the 10,000 of NCd_long, in pieces
        of 4096): within 2^-41 of the sum of the losses' magnitudes, so the float32 result
        is within 1 ulp of the exact one while that sum is at most 2^15 times the magnitude
        of their sum. Losses of both signs, of magnitudes 10^-3 to 10^3, that cancel to a
        sum 2^14 to 2^15 times smaller than the sum of their magnitudes, over several
        blocks; near and far rows, and 3-D (the float64 sums hold it for any input)."""
        rng = _rng("nll float32 cond", shape, weighted, reduction)
        n_classes = shape[1]
        magnitudes = 10.0 ** rng.integers(-3, 4, (shape[0], 1) + shape[2:])
        log_probs = (rng.standard_normal(shape) * magnitudes).astype(np.float32)
        t = rng.integers(0, n_classes, (shape[0],) + shape[2:])
        t.flat[::9] = -100
        kept = t != -100
        w = rng.uniform(0.5, 2.0, n_classes).astype(np.float32) if weighted else None
        w64 = np.ones(n_classes) if w is None else w.astype(np.float64)
        classes = np.where(kept, t, 0)

        def losses():
            """The kept samples' float64 losses (exact: products of two float32) and w[y]."""
            picked = np.take_along_axis(log_probs, classes[:, None], axis=1)[:, 0]
            return (-(w64[classes] * picked.astype(np.float64)))[kept], w64[classes][kept]

        # Shift one kept sample's log-probability: the exact sum becomes 2^-14.5 of the
        # magnitudes' (within the float32 rounding of that entry).
        values, w_y = losses()
        first = np.unravel_index(np.flatnonzero(kept)[0], t.shape)
        at = (first[0], t[first]) + first[1:]
        excess = math.fsum(values.tolist()) - math.fsum(np.abs(values).tolist()) * 2.0 ** -14.5
        log_probs[at] = np.float32(float(log_probs[at]) + excess / w64[t[first]])
        values, w_y = losses()
        total = math.fsum(values.tolist())
        assert 2.0 ** 14 < math.fsum(np.abs(values).tolist()) / abs(total) <= 2.0 ** 15
        exact = total if reduction == "sum" else total / math.fsum(w_y.tolist())
        result = nll_loss(log_probs, t, weight=w, reduction=reduction)
        assert isinstance(result, np.float32)
        assert abs(float(result) - exact) <= float(np.spacing(np.float32(abs(exact))))

    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    def test_nll_loss_float64_sums_within_1_ulp_of_exact(self, weighted):
        """float64 'sum' and 'mean' over 10^5 samples of mixed sign, with ignored ones: within
        1 ulp of the exactly rounded sums of the very per-sample losses (math.fsum)."""
        rng = _rng("nll float64 sums", weighted)
        n = 10**5
        log_probs = rng.standard_normal((n, 10)) * 10.0 ** rng.integers(-3, 4, (n, 1))
        t = rng.integers(0, 10, n)
        t[::5] = -100
        w = rng.uniform(0.5, 2.0, 10) if weighted else None
        per_sample = nll_loss(log_probs, t, weight=w, reduction="none")
        kept = t != -100
        w_y = (np.ones(10) if w is None else w)[t[kept]]
        assert same_bits(per_sample[kept], -(w_y * log_probs[kept, t[kept]]))
        total = math.fsum(per_sample.tolist())
        result = nll_loss(log_probs, t, weight=w, reduction="sum")
        assert abs(float(result) - total) <= float(np.spacing(abs(total)))
        mean = total / math.fsum(w_y.tolist())
        result = nll_loss(log_probs, t, weight=w)
        assert abs(float(result) - mean) <= 2 * float(np.spacing(abs(mean)))

    def test_nll_loss_same_bits_for_any_thread_count(self):
        """Blocks of samples run in parallel; their sums are added in order."""
        import numba
        rng = _rng("nll threads")
        log_probs = rng.standard_normal((100_000, 7))
        t = rng.integers(0, 7, 100_000)
        before = numba.get_num_threads()
        results = []
        try:
            for threads in range(1, before + 1):
                numba.set_num_threads(threads)
                results.append([nll_loss(log_probs, t, reduction=r) for r in ("sum", "mean")])
        finally:
            numba.set_num_threads(before)
        for other in results[1:]:
            assert all(same_bits(a, b) for a, b in zip(results[0], other))


# --------------------------------------------------------------------- 6. bad input

@pytest.fixture
def no_kernel(monkeypatch):
    """Fail loudly if a computation starts: validation must raise before any kernel runs.

    Relies on the CPU backend's entry points ``numba_lse.cpu.cross_entropy`` / ``nll_loss``.
    The common nll_loss call (``cpu.checked_nll_loss``) checks its classes in the compiled
    call that gathers, which gathers only after the check: here it runs the check alone and
    fails if the check passes (the gather would have run); ``TestBadInput``'s unreadable
    input sees to the compiled call itself.
    """
    import numba_lse.cpu as cpu
    from numba_lse.cpu import losses

    def computed(*args, **kwargs):
        raise AssertionError("a computation ran for invalid input")

    def checked_only(log_probs, target, ignore_index, reduction):
        first = losses.first_out_of_bounds(target, ignore_index, log_probs.shape[1])
        if first < 0:
            computed()
        return first, np.nan

    monkeypatch.setattr(cpu, "cross_entropy", computed)
    monkeypatch.setattr(cpu, "nll_loss", computed)
    monkeypatch.setattr(cpu, "checked_nll_loss", checked_only)


def _inaccessible(shape, dtype):
    """An array of ``shape`` on memory that faults when read (Linux), and its mapping."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    memory = mmap.mmap(-1, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    x = np.frombuffer(memory, dtype, math.prod(shape)).reshape(shape)
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(start), ctypes.c_size_t(len(memory)), 0) == 0
    return x, memory


X35 = np.zeros((3, 5))
T3 = np.array([0, 1, 2])
BOTH = [cross_entropy, nll_loss]
BOTH_IDS = ["cross_entropy", "nll_loss"]


@pytest.mark.usefixtures("no_kernel")
class TestBadInput:
    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("x,t,bad", [
        (X35, np.array([0, 7, 1]), 7),
        (X35, np.array([0, -5, 1]), -5),
        (np.zeros(5), np.array(7), 7),
        (np.zeros((2, 5, 3)), np.array([[0, 1, 2], [3, 4, 9]]), 9),
        (X35, np.array([0, 200, 1], dtype=np.uint8), 200),
        (X35, np.array([0, 5, 1], dtype=np.int8), 5),
        (X35, np.array([0, 2**64 - 1, 1], dtype=np.uint64), 2**64 - 1),
        (X35, np.array([0, 1, 9, 2, 1, 3], dtype=np.int32)[::2], 9),
        (X35, np.array([[0, 1], [7, 2], [1, 3]])[:, 0], 7),
    ], ids=["7", "-5", "unbatched", "NCd", "uint8", "int8_equal_C", "uint64_max",
            "int32_strided", "column_view"])
    def test_target_out_of_bounds(self, fn, x, t, bad):
        with pytest.raises(IndexError, match=re.escape(f"Target {bad} is out of bounds.")):
            fn(x, t)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("ignore_index", [2**70, 2**63, -2**63 - 1])
    def test_ignore_index_beyond_int64(self, fn, ignore_index):
        """torch's ignore_index is an int64 (it raises ValueError beyond, as here); before,
        one beyond it reached the kernels and failed in Numba's typing."""
        with pytest.raises(ValueError, match=re.escape(f"ignore_index must fit in int64, got {ignore_index}")):
            fn(X35, T3, ignore_index=ignore_index)

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc: Linux")
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("bad", [0, 1, 4999], ids=["first", "second", "last"])
    def test_common_call_reads_no_log_probability_for_a_bad_target(self, bad, dtype, reduction):
        """The common nll_loss call checks its classes in the compiled call that gathers
        (``cpu.losses.checked_nll``), so ``no_kernel`` cannot see the gather: here every
        log-probability lies on pages that fault when read, and a target out of bounds
        (first, second or last of 5000) must raise before any of them is read."""
        from numba_lse import _validate
        x, memory = _inaccessible((5000, 12), dtype)
        t = np.arange(5000) % 12
        t[bad] = 12
        assert _validate.plain_classes(x, t, None, -100, reduction)  # the common call's path
        with pytest.raises(IndexError, match=re.escape("Target 12 is out of bounds.")):
            nll_loss(x, t, reduction=reduction)
        del x
        memory.close()

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc: Linux")
    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_a_batch_checked_on_the_threads_reads_no_log_probability_for_a_bad_target(self, dtype):
        """As above, for a batch whose class indices are counted on the threads
        (``losses.CHECK_PARALLEL_FROM``): bad targets in two of its tasks, the first raised."""
        from numba_lse.cpu.losses import CHECK_BLOCK, CHECK_PARALLEL_FROM
        n = CHECK_PARALLEL_FROM + 5
        x, memory = _inaccessible((n, 12), dtype)
        t = np.arange(n) % 12
        t[n - 1], t[3 * CHECK_BLOCK + 1] = -1, 13
        with pytest.raises(IndexError, match=re.escape("Target 13 is out of bounds.")):
            nll_loss(x, t)
        del x
        memory.close()

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("ignore_index", [2**63 - 1, -2**63])
    def test_out_of_bounds_with_extreme_ignore_index(self, fn, ignore_index):
        with pytest.raises(IndexError, match=re.escape("Target -3 is out of bounds.")):
            fn(X35, np.array([0, -3, 1]), ignore_index=ignore_index)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    def test_out_of_bounds_with_custom_ignore_index(self, fn):
        with pytest.raises(IndexError, match=re.escape("Target -100 is out of bounds.")):
            fn(X35, np.array([0, -100, 1]), ignore_index=2)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("x,t", [(X35, np.array([0, 1])),
                                     (np.zeros((3, 5, 2)), np.zeros((2, 2), dtype=np.int64))],
                             ids=["NC", "NCd"])
    def test_batch_size_mismatch(self, fn, x, t):
        with pytest.raises(ValueError, match=re.escape(
                "Expected input batch_size (3) to match target batch_size (2).")):
            fn(x, t)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("x,t", [
        (X35, np.zeros((3, 1), dtype=np.int64)),
        (np.zeros((3, 5, 4)), np.zeros(3, dtype=np.int64)),
        (np.zeros((3, 5, 4)), np.zeros((3, 5), dtype=np.int64)),
        (np.zeros(5), np.zeros(1, dtype=np.int64)),
    ], ids=["N1_for_NC", "N_for_NCd", "wrong_d", "1d_for_C"])
    def test_target_wrong_shape(self, fn, x, t):
        with pytest.raises(ValueError):
            fn(x, t)

    def test_float_target_for_nll_loss(self):
        with pytest.raises(TypeError):
            nll_loss(X35, np.array([0.0, 1.0, 2.0]))

    @pytest.mark.parametrize("t", [np.full((3, 4), 0.25), np.zeros(3), np.full((5, 3), 0.2)],
                             ids=["3x4", "N", "transposed"])
    def test_probability_target_wrong_shape(self, t):
        with pytest.raises(ValueError):
            cross_entropy(X35, t)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("weight,shape", [(np.ones(4), "[4]"), (np.ones((1, 5)), "[1, 5]"),
                                              (np.ones(6), "[6]")], ids=["4", "1x5", "6"])
    def test_weight_wrong_size(self, fn, weight, shape):
        with pytest.raises(ValueError, match=re.escape(
                "weight tensor should be defined either for all 5 classes")) as info:
            fn(X35, T3, weight=weight)
        assert shape in str(info.value)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    def test_unknown_reduction(self, fn):
        with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
            fn(X35, T3, reduction="avg")

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    def test_multi_target_message_is_torchs(self, fn):
        # An (N, 1) class-index target of (N, C) logits: torch's message, live.
        torch = pytest.importorskip("torch")
        x, t = np.zeros((4, 5)), np.zeros((4, 1), np.int64)
        peer = getattr(torch.nn.functional, fn.__name__)
        with pytest.raises(RuntimeError) as theirs:
            peer(torch.from_numpy(x), torch.from_numpy(t))
        with pytest.raises(ValueError) as ours:
            fn(x, t)
        assert str(theirs.value) in str(ours.value)

    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("value", [1.5, -0.1])
    def test_label_smoothing_out_of_range(self, value, target_kind):
        t = T3 if target_kind == "index" else np.full((3, 5), 0.2)
        with pytest.raises(ValueError, match=re.escape(
                f"label_smoothing must be between 0.0 and 1.0. Got: {value}")):
            cross_entropy(X35, t, label_smoothing=value)

    @pytest.mark.parametrize("value", ["0.5", b"0.5", None, np.array([0.5])])
    def test_label_smoothing_not_a_number(self, value):
        # torch's float argument refuses a string; float() would have read it.
        with pytest.raises(TypeError, match="label_smoothing must be a float"):
            cross_entropy(X35, T3, label_smoothing=value)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=_dtype_id)
    def test_complex_weight(self, fn, dtype):
        # torch refuses it; converted to the logits' dtype it lost its imaginary part.
        with pytest.raises(TypeError, match=f"weight must be real, got dtype {np.dtype(dtype).name}"):
            fn(X35, T3, weight=np.array([1 + 5j, 1, 1, 1, 1], dtype=dtype))

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    @pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_], ids=_dtype_id)
    def test_non_floating_logits(self, fn, dtype):
        with pytest.raises(TypeError):
            fn(np.zeros((3, 5), dtype=dtype), T3)

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    def test_zero_dimensional_logits(self, fn):
        with pytest.raises(ValueError):
            fn(np.float64(1.0), np.array(0))

    @pytest.mark.parametrize("fn", BOTH, ids=BOTH_IDS)
    def test_bool_target(self, fn):
        with pytest.raises(TypeError):
            fn(X35, np.array([True, False, True]))


# ------------------------------------------------------------- 7. inputs are never written

class TestInputsUnchanged:
    @pytest.mark.parametrize("return_grad", [False, True], ids=["loss", "loss_and_grad"])
    @pytest.mark.parametrize("target_kind", ["index", "probability"])
    @pytest.mark.parametrize("layout", ["NC", "channels_last"])
    def test_cross_entropy(self, layout, target_kind, return_grad):
        rng = _rng("unchanged", layout, target_kind)
        if layout == "NC":
            x = make_logits(rng, (6, N_CLASSES), np.float64)
        else:
            x = make_layout(rng, "channels_last", np.float64)
        x[0, 0] = np.nan
        t = (make_index_target(rng, x.shape) if target_kind == "index"
             else make_probability_target(rng, x.shape, np.float64))
        w = make_weight(rng, True, np.float64)
        before = [a.copy() for a in (x, t, w)]
        for reduction in REDUCTIONS:
            cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.1,
                          return_grad=return_grad)
            if target_kind == "index":
                nll_loss(x, t, weight=w, reduction=reduction)
        for a, b in zip((x, t, w), before):
            assert same_bits(a, b)

    def test_read_only_inputs(self):
        """Read-only arrays (e.g. memory-mapped) are accepted: nothing is written to them."""
        rng = _rng("read only")
        x = make_logits(rng, (6, N_CLASSES), np.float64)
        t = make_index_target(rng, x.shape)
        w = make_weight(rng, True, np.float64)
        expected = cross_entropy(x, t, weight=w, return_grad=True)
        for a in (x, t, w):
            a.setflags(write=False)
        loss, grad = cross_entropy(x, t, weight=w, return_grad=True)
        assert same_bits(loss, expected[0]) and same_bits(grad, expected[1])
        assert same_bits(nll_loss(x, t, weight=w), nll_loss(x.copy(), t.copy(), weight=w.copy()))


# --------------------------------------------------------------------- 8. memory

def _numba_allocations_are_traced():
    """Whether arrays allocated inside a Numba kernel show up in tracemalloc."""
    from numba import njit

    @njit(cache=False)
    def allocate(n):
        a = np.empty(n)
        a[0] = 1.0
        return a[0]

    allocate(1)
    n = 1 << 20
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        allocate(n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak >= 8 * n


MEMORY_SHAPE = (20000, 1000)


@pytest.fixture(scope="module")
def memory_data():
    if not _numba_allocations_are_traced():
        pytest.skip("tracemalloc does not see Numba's allocations here")
    rng = _rng("memory")
    x = rng.standard_normal(MEMORY_SHAPE, dtype=np.float32)
    t = rng.integers(0, MEMORY_SHAPE[1], MEMORY_SHAPE[0])
    return x, t


class TestMemory:
    """Peak traced memory of one call. NumPy reports its allocations to tracemalloc, and so
    do Numba's (checked first by ``_numba_allocations_are_traced``; skipped where not)."""

    @staticmethod
    def _peak(call):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak, result

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_fused_gradient_allocates_little_beyond_the_gradient(self, memory_data, reduction):
        """Peak extra memory of the fused path < 1.3 x the gradient (grad + O(rows))."""
        x, t = memory_data
        cross_entropy(x[:10], t[:10], return_grad=True)  # compiled before measuring
        peak, (_, grad) = self._peak(lambda: cross_entropy(x, t, reduction=reduction,
                                                           return_grad=True))
        assert peak < 1.3 * grad.nbytes, f"peak {peak} B for a gradient of {grad.nbytes} B"

    def test_loss_only_allocates_o_rows(self, memory_data):
        x, t = memory_data
        cross_entropy(x[:10], t[:10])  # compiled before measuring
        peak, _ = self._peak(lambda: cross_entropy(x, t))
        assert peak < 0.05 * x.nbytes, f"peak {peak} B for logits of {x.nbytes} B"

    def test_probability_target_fused_gradient(self, memory_data):
        x, _ = memory_data
        p = np.full(x.shape, 1.0 / x.shape[1], dtype=np.float32)
        cross_entropy(x[:10], p[:10], return_grad=True)  # compiled before measuring
        peak, (_, grad) = self._peak(lambda: cross_entropy(x, p, return_grad=True))
        assert peak < 1.3 * grad.nbytes, f"peak {peak} B for a gradient of {grad.nbytes} B"
