"""The public functions: docstrings, validation, dispatch, and the shape of the result."""

import numpy as np

from . import _dispatch, _validate


def _as_result(array, dtype):
    """The result as the caller expects it: ``dtype``, and a NumPy scalar when 0-d (SciPy)."""
    array = array.astype(dtype, copy=False)
    return array[()] if array.ndim == 0 else array


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """Compute the log of the sum of exponentials of input elements.

    ``log(sum(b * exp(a)))`` along ``axis``, computed without overflow or underflow and to
    within a couple of ulps. Behaves as :func:`scipy.special.logsumexp` in every respect a
    user can see: arguments, dtypes, shapes and special values.

    Parameters
    ----------
    a : array_like
        Input array: real or complex floating, integer or boolean.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the sum is taken. None (default) sums all elements.
    b : array_like, optional
        Weights for exp(`a`), broadcastable against `a` (the result shape follows the
        broadcast). Zeros drop their term, even where `a` is inf or nan. Negative weights
        implement subtraction; see `return_sign`.
    keepdims : bool, optional
        If True, the reduced axes are kept as dimensions of size one.
    return_sign : bool, optional
        If True, return ``(log|sum|, sign)``. If False, a negative sum gives nan.

    Returns
    -------
    res : ndarray or NumPy scalar
        ``log|sum(b * exp(a))|`` (a NumPy scalar when all axes are reduced). Its dtype is the
        promotion of `a` and `b` (float32 stays float32; integers and booleans give float64;
        float16 is computed in float32 and returned as float16).
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

    Accuracy, measured against mpmath (``tests/test_accuracy.py``): float32 results are
    computed in float64 and are within 1 ulp of the exact value; float64 results are within
    2 ulp times max(1, cond), with cond the condition number of Blanchard et al.
    (``sum |a_i| exp(a_i) / (|lse| sum exp(a_i))``); weights that cancel make the result as
    ill-conditioned as the cancellation.

    Special values follow SciPy: any nan gives nan; a +inf gives +inf; all -inf gives -inf
    (sign 0); a zero-size reduced axis gives -inf (with ``return_sign``, sign -1, as SciPy:
    the sign of its -inf). Where SciPy returns nan because its fallback ``log(sum(b*exp(a)))``
    overflows (weights cancelling at a huge max), numba_lse returns the exact value.

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
    array([1.00069315e+03, 0.00000000e+00])
    >>> res, sgn = nl.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    >>> float(res), float(sgn)
    (1.5413248546129181, -1.0)
    """
    backend = _dispatch.backend_for(a, b)
    a, b, axes, dtype = _validate.logsumexp_args(a, b, axis)
    out, sign = backend.logsumexp(a, b, axes)
    if a.size == 0:
        # SciPy's sign of an empty sum is the sign of its -inf.
        sign[...] = -1
    if keepdims:
        out = np.expand_dims(out, axes)
        sign = np.expand_dims(sign, axes)
    if dtype.kind == "c":
        if return_sign:
            return _as_result(out.real, out.real.dtype), _as_result(sign, dtype)
        return _as_result(out, dtype)
    if return_sign:
        return _as_result(out, dtype), _as_result(sign, dtype)
    # Without a sign to return, the log of a negative sum is nan, as SciPy.
    out[sign < 0] = np.nan
    return _as_result(out, dtype)
