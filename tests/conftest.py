"""Test-session setup.

Without a GPU (CI), the CUDA tests run on Numba's CUDA simulator; on a machine with a GPU
the very same tests run on the device. The variable must be set before numba.cuda is first
imported, which is why it is set here, at start-up.
"""

import importlib
import os
import sys
import warnings

if not os.path.exists("/dev/nvidia0") and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:
        from numba.core import config

        config.reload_config()

# numba.cuda is imported once here with its import-time warnings silenced: the suite turns
# warnings into errors, and a numba-cuda newer or older than the NumPy beside it can warn
# while importing (numba-cuda 0.30.4 under NumPy 2.5 warns of the 'generic' timedelta unit),
# which would fail whichever test module imports it first. Warnings from numba_lse's own
# calls still fail the tests.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        importlib.import_module("numba.cuda")
    except ImportError:  # numba-cuda is optional: its tests skip
        pass
