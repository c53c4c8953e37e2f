"""numba_lse: log-sum-exp, softmax and cross-entropy, exact at any scale, compiled with Numba."""

from ._api import log1m_softmax, log_softmax, logsumexp, softmax

__all__ = ["logsumexp", "softmax", "log_softmax", "log1m_softmax"]
__version__ = "0.1.0.dev0"
