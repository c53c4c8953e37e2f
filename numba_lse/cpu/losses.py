"""Cross-entropy with class-index or class-probability targets, and its gradient, fused.

One sample is a 1-D slice x of C logits (a row of (N, C), or x[o, :, j] of (N, C, d)). From
the sample's partial (m, c, s) of ``reduce.py``, with ``row_constants`` of log_softmax,
log p_k = (x_k - shift) - L exactly as ``log_softmax`` computes it, and

  class index y, weights w, smoothing eps:
    loss  = (1 - eps) w_y (-log p_y) + (eps / C) sum_k w_k (-log p_k)
    dloss/dx_k = (1 - eps) w_y (p_k - [k = y]) + (eps / C) (W p_k - w_k),  W = sum_k w_k
  class probabilities t, smoothed t'_k = (1 - eps) t_k + eps / C:
    loss  = sum_k w_k t'_k (-log p_k)
    dloss/dx_k = T p_k - w_k t'_k,  T = sum_k w_k t'_k

with p_k = exp(x_k - m) / (c + s). The gradient is written in the same sweep that reads the
logits for the second time, times the reduction's scale (1, or 1 / the mean's denominator);
nothing of the size of the logits is allocated besides the gradient itself.
"""


import numpy as np
from numba import prange

from .jit import inline, kernel, restore_threads, threads_for
from .partials import is_present, sample_of, store, weight_at, zero_fill
from .softmax import LOG_SOFTMAX, SOFTMAX, element, row_constants


@inline
def index_target_sample(x, y, w, eps, constants, scale, grad):
    """Loss of one sample with class index y; writes scale * dloss/dx into grad (or not)."""
    log_shift, lse, p_shift, total = constants
    n_classes = x.shape[0]
    w_y = np.float64(weight_at(w, y))
    loss = (1.0 - eps) * w_y * (lse - (np.float64(x[y]) - log_shift))
    total_weight = 0.0
    if eps > 0:
        # Only with smoothing: a -inf logit makes its own term infinite, as in torch.
        smooth = 0.0
        for k in range(n_classes):
            w_k = np.float64(weight_at(w, k))
            smooth += w_k * (lse - (np.float64(x[k]) - log_shift))
            total_weight += w_k
        loss += eps / n_classes * smooth
    if is_present(grad):
        a = (1.0 - eps) * w_y
        for k in range(n_classes):
            p = element(SOFTMAX, x[k], 1.0, p_shift, total, np.nan)
            g = a * (p - (1.0 if k == y else 0.0))
            if eps > 0:
                g += eps / n_classes * (total_weight * p - np.float64(weight_at(w, k)))
            store(grad, k, scale * g)
    return loss


@inline
def smoothed_weight(w, t, k, eps, n_classes):
    """w_k t'_k, with t'_k = (1 - eps) t_k + eps / C."""
    return np.float64(weight_at(w, k)) * ((1.0 - eps) * np.float64(t[k]) + eps / n_classes)


@inline
def probability_target_sample(x, t, w, eps, constants, scale, grad):
    """Loss of one sample with class probabilities t; writes scale * dloss/dx into grad."""
    log_shift, lse, p_shift, total = constants
    n_classes = x.shape[0]
    loss = 0.0
    weighted_total = 0.0
    for k in range(n_classes):
        wt = smoothed_weight(w, t, k, eps, n_classes)
        loss -= wt * ((np.float64(x[k]) - log_shift) - lse)
        weighted_total += wt
    if is_present(grad):
        for k in range(n_classes):
            p = element(SOFTMAX, x[k], 1.0, p_shift, total, np.nan)
            store(grad, k, scale * (weighted_total * p - smoothed_weight(w, t, k, eps, n_classes)))
    return loss


@inline
def sample_constants(m, c, s):
    """(shift, lse) of log_softmax and (shift, total) of softmax, for one sample's partial."""
    log_shift, lse = row_constants(LOG_SOFTMAX, m, c, s)
    p_shift, total = row_constants(SOFTMAX, m, c, s)
    return log_shift, lse, p_shift, total


@kernel(parallel=True)
def cross_entropy_index(x, target, w, ignore_index, eps, m, c, s, scale, loss, grad):
    """Per-sample losses of logits x (outer, C, inner), class indices target (outer, inner).

    m, c, s: the samples' partials (outer, inner); loss: (outer, inner) output; grad: like x,
    or None. An ignored sample's loss and gradient are 0 and its logits are never read.
    """
    outer, n_classes, inner = x.shape
    threads = threads_for(x.size)
    for t in prange(outer * inner):
        o = t // inner
        j = t - o * inner
        g = sample_of(grad, o, j)
        y = target[o, j]
        if y == ignore_index:
            loss[o, j] = 0.0
            zero_fill(g)
        else:
            constants = sample_constants(m[o, j], c[o, j], s[o, j])
            loss[o, j] = index_target_sample(x[o, :, j], y, w, eps, constants, scale, g)
    restore_threads(threads)


@kernel(parallel=True)
def cross_entropy_probability(x, target, w, eps, m, c, s, scale, loss, grad):
    """Per-sample losses of logits x (outer, C, inner), probabilities target like x."""
    outer, n_classes, inner = x.shape
    threads = threads_for(x.size)
    for t in prange(outer * inner):
        o = t // inner
        j = t - o * inner
        constants = sample_constants(m[o, j], c[o, j], s[o, j])
        loss[o, j] = probability_target_sample(
            x[o, :, j], target[o, :, j], w, eps, constants, scale, sample_of(grad, o, j)
        )
    restore_threads(threads)


@kernel
def nll_index(x, target, w, ignore_index, loss, kept):
    """loss[o, j] = -w[y] x[o, y, j] and kept[o, j] = w[y], with y = target[o, j]; both 0
    where ignored (the ignored sample's log-probabilities are never read, nan or not).
    A gather: one pass, on the calling thread."""
    outer, n_classes, inner = x.shape
    for o in range(outer):
        for j in range(inner):
            y = target[o, j]
            if y == ignore_index:
                loss[o, j] = 0.0
                kept[o, j] = 0.0
            else:
                w_y = np.float64(weight_at(w, y))
                loss[o, j] = -(w_y * np.float64(x[o, y, j]))
                kept[o, j] = w_y
