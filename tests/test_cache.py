"""Kernels loaded from Numba's cache in fresh processes.

Numba's cache entry of a function that links a parallel kernel launches the threading layer
when loaded, but only if that kernel was compiled in the same process: one loaded from the
cache passes nothing on (numba#8578, #4807, #9938). A function compiled against cached
kernels was saved without it, and loaded first in a later process it called the layer's
symbols at address 0: a segfault (``intrinsics.threading_layer_on_load``). Each test runs the
sequence of processes that crashed before the fix, on a cache of its own, and checks that
every process exits cleanly, that the last one loaded its function from the cache, and that
it gives the values of this process.
"""

import json
import os
import subprocess
import sys

import numpy as np

import numba_lse

_DATA = """
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((3, 2000))
a[:, ::7] = -np.inf
a[1] = -np.inf
mask = rng.random((3, 2000)) > 0.3
"""


def _data():
    namespace = {}
    exec(_DATA, namespace)
    return namespace["a"], namespace["mask"]


def _run_all(steps, tmp_path):
    """Run each piece of code in a fresh Python, one after the other, on one cache under
    tmp_path and this process's numba_lse; the last line each printed."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(numba_lse.__file__)))
    path = [str(tmp_path), package_root] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(path))
    env.pop("NUMBA_DEBUG_CACHE", None)  # it prints to stdout
    lines = []
    for code in steps:
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _DATA + code],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (code, done.returncode, done.stderr[-3000:])
        lines.append(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    return lines


def test_a_kernel_compiled_against_cached_ones_loads(tmp_path):
    """lse_rows (a serial kernel calling parallel ones) compiled in a process that loaded
    its callees from the cache, then loaded first in the next process."""
    show = ("import numba_lse\nfrom numba_lse.cpu import reduce\n"
            "r = numba_lse.logsumexp(a, axis=-1, where=mask)\n"
            "print(repr((r.tolist(), bool(reduce.lse_rows.stats.cache_hits))))")
    lines = _run_all([
        "import numba_lse\nnumba_lse.logsumexp(a, axis=-1, where=mask, return_sign=True)",
        "import numba_lse\nnumba_lse.logsumexp(a, axis=-1)",
        show,
        show,  # loads the entry the step before saved: crashed (rc -11)
    ], tmp_path)
    a, mask = _data()
    expected = numba_lse.logsumexp(a, axis=-1, where=mask).tolist()
    assert lines[2] == repr((expected, False))
    assert lines[3] == repr((expected, True))


# One call per implementation that carries the intrinsic (the softmax family shares one;
# cross_entropy's with and without its gradient share another).
_CALLS = {
    "lse": "numba_lse.logsumexp(a, axis=-1, b=w)",
    "softmax": "numba_lse.softmax(a, axis=1)",
    "cross_entropy_grad": "numba_lse.cross_entropy(a, t, return_grad=True)[1]",
}


def test_a_users_cached_functions_load(tmp_path):
    """Users' ``@njit(cache=True)`` functions calling numba_lse's overloads (each its
    ``threading_layer_on_load``), compiled in a process that loaded numba_lse's kernels
    from the cache, then loaded first in the next process."""
    source = ["import numba", "import numba_lse", ""]
    for name, call in _CALLS.items():
        for prefix in ("first_", ""):
            source += ["@numba.njit(cache=True)", f"def {prefix}{name}(a, w, t):",
                       f"    return {call}", ""]
    (tmp_path / "usermod.py").write_text("\n".join(source))
    arguments = "(a, mask * 0.5, np.arange(3))"
    first = "import usermod\n" + "".join(f"usermod.first_{name}{arguments}\n" for name in _CALLS)
    show = ("import json, usermod\n"
            f"names = {list(_CALLS)!r}\n"
            f"r = [np.asarray(getattr(usermod, n){arguments}).tolist() for n in names]\n"
            "print(json.dumps([r, [bool(getattr(usermod, n).stats.cache_hits) for n in names]]))")
    lines = _run_all([first, show, show], tmp_path)  # the third crashed (rc -11)
    (compiled, hits_compiled), (loaded, hits_loaded) = json.loads(lines[1]), json.loads(lines[2])
    assert hits_compiled == [False] * len(_CALLS) and hits_loaded == [True] * len(_CALLS)
    assert loaded == compiled
    a, mask = _data()
    namespace = {"a": a, "w": mask * 0.5, "t": np.arange(3), "numba_lse": numba_lse}
    for call, values in zip(_CALLS.values(), loaded):
        # The Python call's values (a loss's final sum may differ in its last bits).
        np.testing.assert_allclose(np.array(values, dtype=float), eval(call, namespace),
                                   rtol=1e-13, atol=0, equal_nan=True)
