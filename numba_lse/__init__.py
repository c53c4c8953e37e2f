"""numba_lse: log-sum-exp, softmax and cross-entropy, exact at any scale, compiled with Numba."""

from ._api import logsumexp

__all__ = ["logsumexp"]
__version__ = "0.1.0.dev0"
