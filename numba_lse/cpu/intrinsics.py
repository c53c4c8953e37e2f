"""LLVM instructions and runtime calls that Numba does not expose as the kernels need them.

Three instructions the kernels need to vectorise, each with exact IEEE semantics (nothing
here approximates), and the threading layer's thread count, read and set by symbol so that
the kernels calling them stay cacheable (``numba.set_num_threads`` in jitted code goes
through a ctypes pointer, which turns ``cache=True`` off).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.ufunc.parallel import _launch_threads


@intrinsic
def maxnum(typingctx, a, b):
    """IEEE maxNum: the larger of a and b, and the other one when one is nan.

    A nan never wins, so a row's max is the max of its non-nan entries; the nan reaches the
    result through the sum instead. Unlike a compare-and-select, LLVM vectorises a reduction
    of ``llvm.maxnum`` without any fast-math flag.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        name = "llvm.maxnum.f64" if isinstance(t, ir.DoubleType) else "llvm.maxnum.f32"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t]), name)
        return builder.call(fn, args)

    return a(a, a), codegen


@intrinsic
def add_reassoc(typingctx, a, b):
    """a + b, marked reassociable: a loop that accumulates with it may keep several partial
    sums (SIMD lanes). Only this addition carries the flag, not the exp that feeds it."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc",))

    return a(a, a), codegen


@intrinsic
def float64_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is the int64 ``bits`` (a bitcast, vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        as_int64 = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(as_int64, ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def get_threads(typingctx):
    """The calling thread's number of threads for parallel loops (``numba.get_num_threads``)."""
    _launch_threads()  # registers the threading layer's symbols

    def codegen(context, builder, signature, args):
        # Declared as Numba's parfor lowering declares it, since both may share a module.
        fnty = ir.FunctionType(cgutils.intp_t, [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "get_num_threads")
        return builder.call(fn, [])

    return types.intp(), codegen


@intrinsic
def set_threads(typingctx, n):
    """Set the calling thread's number of threads for parallel loops, 1 <= n <= the pool's."""
    if not isinstance(n, types.Integer):
        return None
    _launch_threads()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "set_num_threads")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()

    return types.none(n), codegen
