"""numba_lse: log-sum-exp, softmax and cross-entropy, exact at any scale, compiled with Numba."""

from . import _overloads  # noqa: F401  (registers the @njit implementations)
from ._accumulate import LogSumExpAccumulator
from ._api import cross_entropy, log1m_softmax, log_softmax, logsumexp, nll_loss, softmax
from ._outputs import set_output_cache

__all__ = ["logsumexp", "softmax", "log_softmax", "log1m_softmax", "nll_loss", "cross_entropy",
           "LogSumExpAccumulator", "set_output_cache"]
__version__ = "0.1.0.dev0"
