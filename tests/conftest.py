"""Test-session setup.

Without a GPU (CI), the CUDA tests run on Numba's CUDA simulator; on a machine with a GPU
the very same tests run on the device. The variable must be set before numba.cuda is first
imported, which is why it is set here, at start-up.
"""

import os
import sys

if not os.path.exists("/dev/nvidia0") and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:
        from numba.core import config

        config.reload_config()
