"""Kernels loaded from Numba's cache in fresh processes.

Numba's cache entry of a function that links a parallel kernel launches the threading layer
when loaded, but only if that kernel was compiled in the same process: one loaded from the
cache passes nothing on (numba#8578, #4807, #9938). A function compiled against cached
kernels was saved without it, and loaded first in a later process it called the layer's
symbols at address 0: a segfault (``intrinsics.threading_layer_on_load``). Each test runs the
sequence of processes that crashed before the fix, on a cache of its own, and checks that
every process exits cleanly with the values of this one.
"""

import os
import subprocess
import sys
import textwrap

import numba_lse

_DATA = """
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((3, 2000))
a[:, ::7] = -np.inf
a[1] = -np.inf
mask = rng.random((3, 2000)) > 0.3
"""


def _run_all(steps, tmp_path):
    """Run each (code) in a fresh Python on one cache under tmp_path; their outputs."""
    path = [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.pathsep.join(path))
    outputs = []
    for code in steps:
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _DATA + code],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (code, done.returncode, done.stderr[-3000:])
        outputs.append(done.stdout)
    return outputs


def _data():
    namespace = {}
    exec(_DATA, namespace)
    return namespace["a"], namespace["mask"]


def test_a_kernel_compiled_against_cached_ones_loads(tmp_path):
    """lse_rows (a serial kernel calling parallel ones) compiled in a process that loaded
    its callees from the cache, then loaded first in the next process."""
    show = "import numba_lse\nprint(repr(numba_lse.logsumexp(a, axis=-1, where=mask).tolist()))"
    outputs = _run_all([
        "import numba_lse\nnumba_lse.logsumexp(a, axis=-1, where=mask, return_sign=True)",
        "import numba_lse\nnumba_lse.logsumexp(a, axis=-1)",
        show,
        show,  # loads the entry the step before saved: crashed (rc -11)
    ], tmp_path)
    a, mask = _data()
    expected = repr(numba_lse.logsumexp(a, axis=-1, where=mask).tolist())
    assert outputs[2].strip() == outputs[3].strip() == expected


def test_a_users_cached_function_loads(tmp_path):
    """A user's ``@njit(cache=True)`` calling numba_lse's overload, compiled in a process
    that loaded numba_lse's kernels from the cache, then loaded first in the next process."""
    (tmp_path / "usermod.py").write_text(textwrap.dedent("""
        import numba
        import numba_lse

        @numba.njit(cache=True)
        def g(a, w):
            return numba_lse.logsumexp(a, axis=-1, b=w)

        @numba.njit(cache=True)
        def f(a, w):
            return numba_lse.logsumexp(a, axis=-1, b=w) + 1.0
    """))
    show = "import usermod\nprint(repr(usermod.f(a, mask * 0.5).tolist()))"
    outputs = _run_all(["import usermod\nusermod.g(a, mask * 0.5)", show, show], tmp_path)
    a, mask = _data()
    expected = repr((numba_lse.logsumexp(a, axis=-1, b=mask * 0.5) + 1.0).tolist())
    assert outputs[1].strip() == outputs[2].strip() == expected
