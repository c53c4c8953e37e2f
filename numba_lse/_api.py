"""The public functions: docstrings, validation, dispatch, and the shape of the result."""

import numpy as np

from . import _dask, _dispatch, _gpu, _validate


_NUMPY = (np.ndarray, type(None))


def _on_numpy(*arrays):
    """Whether every one of ``arrays`` is a NumPy array or None: no Dask or GPU routing to
    look for (the check costs a fraction of a small call)."""
    for array in arrays:
        if type(array) not in _NUMPY:
            return False
    return True


def _as_result(array, dtype):
    """The result as the caller expects it: ``dtype``, and a NumPy scalar when 0-d (SciPy)."""
    array = array.astype(dtype, copy=False)
    return array[()] if array.ndim == 0 else array


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    """Compute the log of the sum of exponentials of input elements.

    ``log(sum(b * exp(a)))`` along ``axis``, computed without overflow or underflow and to
    within a couple of ulps. Behaves as :func:`scipy.special.logsumexp` in every respect a
    user can see: arguments, dtypes, shapes and special values.

    Parameters
    ----------
    a : array_like
        Input array: real or complex floating, integer or boolean. A Dask array (for `a`,
        `b` or `where`) gives a lazy Dask result (real input only); see the README.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the sum is taken. None (default) sums all elements.
    b : array_like, optional
        Weights for exp(`a`), broadcastable against `a` (the result shape follows the
        broadcast). Zeros drop their term, even where `a` is inf or nan. Negative weights
        implement subtraction; see `return_sign`. An infinite weight makes its term
        infinite where `a` > -inf (nan where it meets a nan `a`, or a -inf `a` beside
        others above -inf), as SciPy's; entries all -inf give -inf whatever their weights
        (SciPy: nan for an infinite one, inf * 0). Finite weights whose sum overflows
        float64 within a block of 1024 entries are beyond the accuracy bound.
    keepdims : bool, optional
        If True, the reduced axes are kept as dimensions of size one.
    return_sign : bool, optional
        If True, return ``(log|sum|, sign)``. If False, a negative sum gives nan.
    where : array_like of bool, optional
        Entries to include (broadcast to `a`'s shape), as ``jax.nn.logsumexp``: a masked-out
        entry takes no part, whatever its value; a fully masked reduction gives -inf. Not in
        SciPy; equivalent to multiplying `b` by the mask.

    Returns
    -------
    res : ndarray or NumPy scalar
        ``log|sum(b * exp(a))|`` (a NumPy scalar when all axes are reduced). Its dtype is the
        promotion of `a` and `b` (float32 stays float32; integers and booleans give float64;
        float16 is computed in float32 and returned as float16), in the machine's byte
        order whatever the inputs' (they are converted, as SciPy's ufuncs convert them).
    sgn : ndarray or NumPy scalar
        Only with ``return_sign=True``: the sign of the sum, +1, 0 or -1 (nan when the sum is
        nan; for complex input, the complex phase).

    See Also
    --------
    softmax, log_softmax : the gradient of logsumexp and its logarithm.
    scipy.special.logsumexp : the reference semantics.

    Notes
    -----
    With m the largest `a` (of nonzero weight), c the sum of the weights of the entries equal
    to m, and s the sum of ``b * exp(a - m)`` over the others,

    .. math:: \\mathrm{lse}(a) = m + \\log c + \\operatorname{log1p}(s / c)

    (Blanchard, Higham & Higham 2021, Theorem 4.2). Every exponent is <= 0, so nothing
    overflows, and ``log1p`` keeps the digits of a small s: ``logsumexp([0, -40])`` is
    4.248e-18, not 0. Rows longer than 65536 are summed in chunks whose partials merge by the
    same rule, so the result does not depend on the number of threads.

    Accuracy, measured against mpmath (``tests/test_accuracy.py``), with cond the condition
    number of Blanchard et al. (``sum |a_i| exp(a_i) / (|lse| sum exp(a_i))``): float32
    results are computed in float64 and are within 1 ulp of the exact value while
    cond <= 1e8 (in general 1 ulp times max(1, cond * 2**-27)); float64 results are within
    2 ulp times max(1, cond). Weights that cancel make the result as ill-conditioned as the
    cancellation, and the bound grows with it.

    Special values follow SciPy: any nan gives nan; a +inf gives +inf (complex: a +inf real
    part with a nonzero imaginary part gives nan+nanj, its phase undefined where SciPy's
    inf * e^(i theta) arithmetic returns inf with a phase of pi/4); all -inf gives -inf
    (sign 0); a zero-size reduced axis gives -inf (with ``return_sign``, sign -1, as SciPy:
    the sign of its -inf). SciPy switches to the naive ``log(sum(b*exp(a)))`` wherever its
    accurate result is not finite; where that naive sum breaks, numba_lse keeps the exact
    answer instead: a zero weight drops its term even where every weight is zero and an `a`
    is inf or nan, or above 709.78, where exp overflows (``a=[710], b=[0]`` gives -inf;
    SciPy: 0 * inf = nan); weights that cancel at a huge finite max give the
    exact result, e.g. ``a=[1000, 1000], b=[1, -1]`` gives (-inf, 0) (SciPy: inf - inf = nan;
    but where the other terms lie more than ~745 below such a max, their exps underflow
    against it and the result is that (-inf, 0) too: ``a=[1000, 1000, -1000], b=[1, -1, 1]``,
    whose exact value is -1000, a cancellation of infinite condition number);
    +inf entries are ties at the max, so their weights add (``a=[inf, inf], b=[-1, 0.5]``
    gives (inf, -1); SciPy: nan); an infinite weight's term is infinite even where its exp
    underflows (``a=[1, -1000], b=[1, -inf]`` gives (inf, -1); SciPy: -inf * 0 = nan); and a
    negative sum is nan without `return_sign` even when its terms underflow (SciPy:
    log(-0.0) = -inf).

    References
    ----------
    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and
    softmax functions", IMA J. Numer. Anal. 41(4), 2021. :doi:`10.1093/imanum/draa038`

    Examples
    --------
    >>> import numpy as np
    >>> import numba_lse as nl
    >>> float(nl.logsumexp(np.arange(10.0)))
    9.45862974442671
    >>> float(nl.logsumexp([0.0, -40.0]))
    4.248354255291589e-18
    >>> nl.logsumexp(np.array([[1000.0, 1000.0], [-1000.0, 0.0]]), axis=1)
    array([1000.69314718,    0.        ])
    >>> res, sgn = nl.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    >>> float(res), float(sgn)
    (1.5413248546129181, -1.0)
    """
    if not _on_numpy(a, b, where):
        if _dask.is_dask(a, b, where):
            return _dask.logsumexp(a, axis, b, keepdims, return_sign, where)
        if _gpu.is_gpu(a, b, where):
            return _gpu.logsumexp(a, axis, b, keepdims, return_sign, where)
    backend = _dispatch.backend_for(a, b, where)
    weighted = b is not None
    a, b, axes, dtype = _validate.logsumexp_args(a, b, axis, where)
    if a.size == 0:
        # As SciPy: -inf, with the sign of -inf (-1; nan+nanj when complex: -inf / |-inf|),
        # and the dtype of a even when complex.
        kept_shape = [size for axis_, size in enumerate(a.shape) if axis_ not in axes]
        out = np.full(kept_shape, -np.inf, dtype=a.dtype)
        sign = np.full(kept_shape, complex(np.nan, np.nan) if a.dtype.kind == "c" else -1, dtype=a.dtype)
        if keepdims:
            out, sign = np.expand_dims(out, axes), np.expand_dims(sign, axes)
        out, sign = _as_result(out, dtype), _as_result(sign, dtype)
        return (out, sign) if return_sign else out
    out, sign = backend.logsumexp(a, b, axes, signed=weighted or return_sign)
    if weighted and not return_sign and dtype.kind != "c":
        # Without a sign to return, the log of a negative sum is nan, as SciPy (only
        # weights can make a sum negative; a mask cannot).
        out[sign < 0] = np.nan
    if keepdims:
        out = np.expand_dims(out, axes)
        sign = None if sign is None else np.expand_dims(sign, axes)
    if dtype.kind == "c":
        if return_sign:
            return _as_result(out.real, out.real.dtype), _as_result(sign, dtype)
        return _as_result(out, dtype)
    if return_sign:
        return _as_result(out, dtype), _as_result(sign, dtype)
    return _as_result(out, dtype)


def _softmax_family(name, x, axis, where):
    if not _on_numpy(x, where):
        if _dask.is_dask(x, where):
            return _dask.softmax_family(name, x, axis, where)
        if _gpu.is_gpu(x, where):
            return _gpu.softmax_family(name, x, axis, where)
    backend = _dispatch.backend_for(x, where)
    x, axes, mask, dtype = _validate.softmax_args(x, axis, where)
    return _as_result(backend.softmax_family(name, x, mask, axes), dtype)


def softmax(x, axis=None, where=None):
    """Compute the softmax function: ``exp(x) / sum(exp(x))`` along `axis`.

    Behaves as :func:`scipy.special.softmax` in everything a user can see, and is more
    accurate: float32 results are within 1 ulp (SciPy's are 3-4 ulp off on rows of 1000).

    Parameters
    ----------
    x : array_like
        Input array: real floating, integer or boolean (complex raises TypeError). A Dask
        array gives a lazy Dask result, also when `axis` is split across chunks.
    axis : None or int or tuple of ints, optional
        Axis or axes to normalise over. None (default) normalises the whole array, as SciPy.
    where : array_like of bool, optional
        Entries to include (broadcast to `x`'s shape), as ``jax.nn.softmax``: masked-out
        entries take no part in the sum and are 0 in the output. A fully masked slice is all
        0, as JAX (every entry of it is masked out). Not in SciPy.

    Returns
    -------
    s : ndarray
        Same shape as `x`, summing to 1 along `axis`. float32 stays float32, float16 is
        computed in float32, integers and booleans give float64; in the machine's byte
        order whatever `x`'s.

    See Also
    --------
    log_softmax, logsumexp, scipy.special.softmax

    Notes
    -----
    With m the max along the axis, c the number of entries equal to it and s the sum of
    ``exp(x - m)`` over the others, ``softmax(x) = exp(x - m) / (c + s)`` (Blanchard, Higham
    & Higham 2021, Thm 4.3), not ``exp(x - logsumexp(x))`` (their Thm 4.4, less accurate).
    The input is read twice and the output written once.

    Accuracy against mpmath: float32 within 1 ulp (computed in float64, rounded once),
    float64 within 4 ulp times max(1, cond) for entries above 1e-300 (3.3 seen on random
    rows: the exp's < 1 ulp at the entry and in the sum, the sum's and the division's
    roundings, and an error relative to p is up to twice as many of its ulps).

    Special values follow SciPy: a slice containing nan or +inf, or all -inf, is all nan
    (``softmax([inf, 1])`` is ``[nan, nan]``, although ``log_softmax([inf, 1])`` is
    ``[nan, -inf]``: SciPy is inconsistent there and numba_lse follows it).

    Examples
    --------
    >>> import numba_lse as nl
    >>> nl.softmax([1000.0, 1000.0, -1000.0])
    array([0.5, 0.5, 0. ])
    >>> nl.softmax([[1.0, 2.0], [3.0, 3.0]], axis=1)
    array([[0.26894142, 0.73105858],
           [0.5       , 0.5       ]])
    """
    return _softmax_family("softmax", x, axis, where)


def log_softmax(x, axis=None, where=None):
    """Compute the logarithm of the softmax function, accurately.

    ``log(softmax(x))`` without forming softmax: exact where softmax underflows. Behaves as
    :func:`scipy.special.log_softmax` in everything a user can see.

    Parameters
    ----------
    x : array_like
        Input array: real floating, integer or boolean (complex raises TypeError). A Dask
        array gives a lazy Dask result, also when `axis` is split across chunks.
    axis : None or int or tuple of ints, optional
        Axis or axes to normalise over. None (default) is the whole array, as SciPy.
    where : array_like of bool, optional
        Entries to include (broadcast to `x`'s shape), as ``jax.nn.log_softmax``: masked-out
        entries take no part and are -inf in the output (a fully masked slice is all -inf).

    Returns
    -------
    out : ndarray
        Same shape as `x`; ``exp(out)`` sums to 1 along `axis`.

    See Also
    --------
    softmax, log1m_softmax, logsumexp, scipy.special.log_softmax

    Notes
    -----
    ``log_softmax(x) = (x - m) - log1p((c - 1) + s)`` with m, c, s as in `softmax`:
    never ``log(softmax(x))``, which is -inf wherever softmax underflows (``perf/alpha_sweep.py``
    shows the error of both for x = alpha * [-1, 0, 1]). Accuracy against mpmath: float32
    within 1 ulp, float64 within 2 ulp times max(1, cond).

    Special values follow SciPy: a slice with nan is all nan; with +inf, nan at the infs and
    -inf elsewhere; all -inf, all nan; ``log_softmax([-inf, 1])`` is ``[-inf, 0]``.

    Examples
    --------
    >>> import numba_lse as nl
    >>> nl.log_softmax([1000.0, 1.0])
    array([   0., -999.])
    """
    return _softmax_family("log_softmax", x, axis, where)


def log1m_softmax(x, axis=None, where=None):
    """Compute ``log(1 - softmax(x))`` accurately, even where one term dominates.

    No peer library has this function; it is the stable form asked for in the PyTorch forum
    thread "How to calculate log(1 - softmax(X)) numerically stably".

    Parameters
    ----------
    x : array_like
        Input array: real floating, integer or boolean (complex raises TypeError). A Dask
        array gives a lazy Dask result, also when `axis` is split across chunks.
    axis : None or int or tuple of ints, optional
        Axis or axes to normalise over. None (default) is the whole array, as `softmax`.
    where : array_like of bool, optional
        Entries to include (broadcast to `x`'s shape): masked-out entries take no part and
        are 0 in the output (their probability is 0).

    Returns
    -------
    out : ndarray
        Same shape as `x`: ``log(1 - p)`` for the softmax probabilities p along `axis`.

    See Also
    --------
    softmax, log_softmax

    Notes
    -----
    O(n) per slice, not the n x n mask of the forum answer. Where ``p_i <= 1/2``,
    ``log1p(-p_i)`` (well conditioned there). The only entry that can exceed 1/2 is a unique
    max; for it, ``1 - p_i`` is the sum of the other terms over the total, and
    ``log(1 - p_i) = log(sum_{j != i} exp(x_j - m)) - log1p(s)``, where the first sum is
    computed shifted by the runner-up value so it cannot underflow. Accuracy: float32 within
    1 ulp; float64 within 6 ulp times max(1, cond) (4.2 seen on random rows: p's errors, as
    `softmax`'s, with a gain of at most 1.44, and log1p's own).

    Special values: a length-1 axis gives -inf (p = 1); a slice whose softmax is nan (nan,
    +inf, or all -inf in it) gives nan.

    Examples
    --------
    >>> import numpy as np
    >>> import numba_lse as nl
    >>> nl.log1m_softmax([-1000.0, -1000.0, 1000.0])
    array([    0.        ,     0.        , -1999.30685282])
    >>> float(nl.log1m_softmax([-1000.0, -1000.0, 1000.0])[2] - (np.log(2) - 2000))
    0.0
    """
    return _softmax_family("log1m_softmax", x, axis, where)


def _loss_result(loss, reduction, dtype, unbatched):
    if reduction == "none" and not unbatched:
        return loss.astype(dtype, copy=False)
    # A scalar: the NumPy scalar of ``dtype``, rounded once from float64 (as astype rounds),
    # without the 0-d arrays (they cost a quarter of a small nll_loss call).
    return dtype.type(loss[0] if reduction == "none" else loss)


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    """The negative log-likelihood loss, as ``torch.nn.functional.nll_loss``.

    Parameters
    ----------
    log_probs : array_like
        Log-probabilities, floating: (C,), (N, C) or (N, C, d1, ..., dk); the class axis is 1
        (0 for a 1-D input). Usually the output of `log_softmax` along that axis. Dask
        arrays (input, target, weight) give a lazy result.
    target : array_like of int
        Class indices in [0, C), or `ignore_index`: a 0-d array for a (C,) input, (N,) for
        (N, C), (N, d1, ..., dk) for (N, C, d1, ..., dk). Any integer dtype.
    weight : array_like, optional
        A weight per class, shape (C,).
    ignore_index : int, optional
        Target value whose samples contribute nothing (nor to the mean's denominator). An
        int64, as torch's: one beyond raises ValueError.
    reduction : {'mean', 'sum', 'none'}, optional
        'none': the per-sample losses, shaped like `target`. 'sum': their sum. 'mean':
        ``sum_n w[y_n] l_n / sum_n w[y_n]`` over the samples not ignored, an IEEE division
        as torch's: nan when both are 0 (e.g. every sample ignored or an empty batch),
        +-inf where weights that cancel leave a loss.

    Returns
    -------
    loss : ndarray or NumPy scalar
        The dtype of `log_probs` (float16 computed in float32), in the machine's byte order:
        arrays in the other one, which torch refuses, are converted.

    See Also
    --------
    cross_entropy, log_softmax

    Notes
    -----
    ``l_n = -w[y_n] * log_probs[n, y_n]``, in float64. The sums ('sum', and both of the
    'mean') are float64 sums, rounded once to the result's dtype. For float64 input they
    are compensated (Neumaier's), within an ulp of the exact sums of the ``l_n`` however
    many there are. For float32 input (and float16, computed in float32) they run in
    sequence within blocks of at most 4096 samples and are compensated across blocks:
    within 2^-41 of the sum of the ``|l_n|``, so the result is within 1 ulp of the exact one
    while that sum is at most 2^15 times the magnitude of the sum of the ``l_n`` (always,
    for log-probabilities and nonnegative weights; 1.5-1.8x faster than compensated sums on
    a million samples). Inside ``@njit`` they are plain float64 sums. Errors use torch's messages:
    ``IndexError("Target 7 is out of bounds.")``, with Python's exception types where torch
    raises RuntimeError (ValueError for a bad shape or value, TypeError for a bad type).
    Unlike torch, a (C,) input takes only a 0-d target, not a (1,) one.

    Examples
    --------
    >>> import numpy as np
    >>> import numba_lse as nl
    >>> log_probs = nl.log_softmax(np.array([[2.0, 0.0], [0.0, 3.0]]), axis=1)
    >>> float(nl.nll_loss(log_probs, np.array([0, 1])))
    0.08775768130835727
    """
    if _validate.plain_classes(log_probs, target, weight, ignore_index, reduction):
        # The common call, good by its types: no routing and no general checks (a small
        # call's cost is mostly Python's); its class indices are checked first, as always,
        # for a scalar loss in the same compiled call as the gather, which runs only if
        # they are good (``cpu.losses.checked_nll``: a small batch 2x faster, cold).
        if reduction != "none":
            first, loss = _dispatch.backend_for(log_probs).checked_nll_loss(
                log_probs, target, ignore_index, reduction)
            if first >= 0:
                raise _validate.class_out_of_bounds(target, first)
            return log_probs.dtype.type(loss)
        _validate.check_classes(target, ignore_index, log_probs.shape[1])
        loss = _dispatch.backend_for(log_probs).nll_loss(log_probs, target, None, ignore_index, reduction)
        return _loss_result(loss, reduction, log_probs.dtype, False)
    if not _on_numpy(log_probs, target, weight):
        if _dask.is_dask(log_probs, target, weight):
            return _dask.nll_loss(log_probs, target, weight, ignore_index, reduction)
        if _gpu.is_gpu(log_probs, target, weight):
            return _gpu.nll_loss(log_probs, target, weight, ignore_index, reduction)
    backend = _dispatch.backend_for(log_probs, target, weight)
    x, t, w, _, dtype, unbatched = _validate.loss_args(log_probs, target, weight, ignore_index, reduction)
    loss = backend.nll_loss(x, t, w, ignore_index, reduction)
    return _loss_result(loss, reduction, dtype, unbatched)


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, return_grad=False):
    """The cross-entropy loss of logits, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, floating: (C,), (N, C) or (N, C, d1, ..., dk); class axis 1.
        Dask arrays (logits, target) give lazy results, the class axis rechunked whole;
        a Dask `weight` stays lazy too.
    target : array_like
        Class indices (any integer dtype; shapes as in `nll_loss`), or class probabilities:
        a floating array of the shape of `logits`.
    weight : array_like, optional
        A weight per class, shape (C,).
    ignore_index : int, optional
        Class-index target whose samples contribute nothing. With probability targets a
        non-negative value raises ValueError, as torch; so does one beyond int64.
    reduction : {'mean', 'sum', 'none'}, optional
        As `nll_loss`. With probability targets, 'mean' divides by the number of samples
        (N * d1 * ... * dk), not by a weight sum, as torch does. Where the kept samples'
        class weights sum to 0, 'mean' is torch's documented formula, the losses' sum over
        0 (nan, or +-inf where that sum is not 0), and its gradient zeros; torch's own code
        agrees without label smoothing (its gradient too where every sample is ignored),
        but with it divides its two sums apart: nan where this gives +-inf.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution: ``(1 - eps) * target + eps / C``.
        Outside [0, 1] a ValueError (torch 2.13 raises above 1 but takes a negative value
        as 0, silently: numba_lse refuses it).
    return_grad : bool, optional
        Also return the gradient of the loss with respect to `logits` (not in torch: it is
        what ``loss.backward()`` would put in ``logits.grad``). For ``reduction='none'``,
        the gradient of ``loss.sum()`` (each sample's own gradient).

    Returns
    -------
    loss : ndarray or NumPy scalar
        The dtype of `logits`, in the machine's byte order (arrays in the other one, which
        torch refuses, are converted).
    grad : ndarray
        Only with ``return_grad=True``: shape and dtype of `logits` (the machine's order).

    See Also
    --------
    nll_loss, log_softmax

    Notes
    -----
    With ``log p = log_softmax(logits, axis=1)`` (computed as `log_softmax` does, from the
    max, the tie count and ``log1p``), for a class-index target y::

        l = (1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c)
        dl/dx_k = (1 - eps) w_y (p_k - [k = y]) + (eps / C) (W p_k - w_k),  W = sum_c w_c

    and for probabilities t, with ``t' = (1 - eps) t + eps / C``::

        l = -sum_c w_c t'_c log p_c,    dl/dx_k = (sum_c w_c t'_c) p_k - w_k t'_k

    times ``1 / denominator`` for 'mean'. The fused path reads the logits twice and writes
    the gradient once; besides the gradient it allocates only per-sample scalars (the memory
    point of Apex's xentropy and Liger's fused cross-entropy). Extreme logits stay exact:
    ``cross_entropy([[1000, -1000]], [1])`` is 2000. A -inf target logit gives inf; a
    +inf logit gives nan (loss and gradient) in its own sample, as torch's (not the inf
    that `log_softmax`'s -inf at the finite entries would give), and so do nan logits;
    ignored samples never leak nan or inf. The sums over a sample's classes (smoothing,
    probabilities) are compensated for float64 logits, and each smoothing term is scaled by
    ``eps / C`` before it is summed, so the loss overflows only where it exceeds float64's
    range, or where two logits' difference does (``1e308 - -1e308``: inf, as in torch).
    Per-sample losses are float64 and their sum is pairwise, rounded once.

    Two departures from torch, both at degenerate input: an infinite class weight gives the
    gradient's formula, ``w_y (p_k - 1) = -inf`` at the target of a 'sum' or 'none' loss,
    where torch's autograd, which composes log_softmax's backward with nll's, gives nan
    (``-inf + inf``); and zero classes (C = 0) with probability targets give a 'mean' of 0,
    the mean of empty sums, where torch divides by ``numel / C = 0 / 0``: nan.

    Examples
    --------
    >>> import numpy as np
    >>> import numba_lse as nl
    >>> float(nl.cross_entropy(np.array([[1000.0, -1000.0]]), np.array([1])))
    2000.0
    >>> loss, grad = nl.cross_entropy(np.array([[0.0, 0.0]]), np.array([0]), return_grad=True)
    >>> float(loss), grad
    (0.6931471805599453, array([[-0.5,  0.5]]))
    """
    if not _on_numpy(logits, target, weight):
        if _dask.is_dask(logits, target, weight):
            return _dask.cross_entropy(logits, target, weight, ignore_index, reduction,
                                       label_smoothing, return_grad)
        if _gpu.is_gpu(logits, target, weight):
            return _gpu.cross_entropy(logits, target, weight, ignore_index, reduction,
                                      label_smoothing, return_grad)
    backend = _dispatch.backend_for(logits, target, weight)
    x, t, w, eps, dtype, unbatched = _validate.loss_args(
        logits, target, weight, ignore_index, reduction, label_smoothing, probabilities_allowed=True
    )
    loss, grad = backend.cross_entropy(x, t, w, ignore_index, reduction, eps, return_grad)
    loss = _loss_result(loss, reduction, dtype, unbatched)
    if not return_grad:
        return loss
    return loss, _as_result(grad[0] if unbatched else grad, dtype)
