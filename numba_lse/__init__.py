"""numba_lse: log-sum-exp, softmax and cross-entropy, exact at any scale, compiled with Numba."""

import sys

from ._accumulate import LogSumExpAccumulator
from ._api import cross_entropy, log1m_softmax, log_softmax, logsumexp, nll_loss, softmax
from ._outputs import set_output_cache

# Numba is imported by the first call (``_dispatch.cpu``), not here. The @njit
# implementations of the public functions (``_overloads``) are registered by Numba itself,
# through the package's ``numba_extensions`` entry point, when it first compiles. Used from
# a source tree (no entry point), they are registered here where Numba is already imported,
# and by the first call otherwise. (Not where another thread is importing them already: it
# may be waiting for this package, and this import for it.)
if "numba" in sys.modules and "numba_lse._overloads" not in sys.modules:
    from . import _overloads  # noqa: F401

__all__ = ["logsumexp", "softmax", "log_softmax", "log1m_softmax", "nll_loss", "cross_entropy",
           "LogSumExpAccumulator", "set_output_cache"]
__version__ = "0.1.0.dev0"
