"""LLVM instructions and runtime calls that Numba does not expose as the kernels need them.

Four instructions the kernels need to vectorise, each with exact IEEE semantics (nothing here
approximates), a hint to the vectoriser, and the threading layer's thread count, read and set
by symbol so that the kernels calling them stay cacheable (``numba.set_num_threads`` in
jitted code goes through a ctypes pointer, which turns ``cache=True`` off), an atomic
add, from which the threads of a parallel loop take their tasks (``jit.task_queue``),
prefetch hints, which have memory on its way while a loop computes, and the transposes of
blocks of short rows, in masked vector loads and stores and shuffles, and their streaming
stores (with the fence that orders them).
"""

import functools

from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen, config
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
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (LLVM's ``llvm.fma``: a vector FMA where the CPU has one,
    emulated exactly where not). The kernels' ``contract`` flag lets LLVM fuse a * b + c,
    but does not make it: a remainder that must be exact (``softmax.divide``) asks for it."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        name = "llvm.fma.f64" if isinstance(t, ir.DoubleType) else "llvm.fma.f32"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]), name)
        return builder.call(fn, args)

    return a(a, a, a), codegen


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
def bits_of_float64(typingctx, x):
    """The IEEE bit pattern of the float64 x, as an int64 (a bitcast, vectorisable)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM vectorise the loops of the calling function with 512-bit vectors where the CPU
    has them (AVX-512). LLVM's default for those CPUs is 256 bits, chosen against the clock
    slow-down of older AVX-512 parts; the exp and sum loops here measured 1.3-1.5x faster with
    512 (perf/bench.py). The function attribute is LLVM's own ("prefer-vector-width", as
    clang's -mprefer-vector-width=512); llvmlite has no setter for string attributes, so it is
    added to the attribute set directly, and left out if llvmlite ever refuses that.
    A no-op on CPUs without AVX-512. Call it first in the function whose loops it concerns:
    a parallel loop's body is a function of its own and needs its own call."""

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:  # pragma: no cover - an llvmlite without a set of attributes
            pass
        return context.get_dummy_value()

    return types.none(), codegen


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


@intrinsic
def threading_layer_on_load(typingctx):
    """Nothing at run time; the cache entry of the function compiled with it launches the
    threading layer when loaded, before its code runs.

    Numba gives a function's cache entry that set-up where it is compiled with
    ``parallel=True`` or links a callee that has it, but a callee loaded from the cache while
    the function was compiled passes none on (numba#8578, #4807, #9938): a function calling numba_lse's
    kernels, compiled in a process that loaded them from the cache, was saved without it,
    and loaded first in a later process called the threading layer's symbols at address 0
    (a segfault). ``cpu._launch`` launches the layer before numba_lse's own first kernel;
    users' functions get it through this call in every ``_overloads`` implementation."""
    _launch_threads()

    def codegen(context, builder, signature, args):
        # What the entry runs when loaded (pickled by reference, as Numba's own
        # ``typed_passes._reload_parfors``, which calls it).
        context.active_code_library._reload_init.add(_launch_threads)
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def fetch_add(typingctx, counter, value):
    """counter[0] += value, atomically; returns counter[0] as it was (LLVM's atomicrmw add:
    the threads of a parallel loop take tasks from one counter)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        first = cgutils.get_item_pointer(context, builder, array_type, array,
                                         [context.get_constant(types.intp, 0)])
        amount = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", first, amount, "monotonic")

    return types.int64(counter, value), codegen


def _prefetch(builder, pointer):
    """LLVM's prefetch of the cache line at ``pointer``: a read, kept in every level."""
    byte_pointer = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    # (address, 0: a read, 3: keep in all levels, 1: data)
    builder.call(fn, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])


@intrinsic
def prefetch(typingctx, array, i, j, k):
    """A hint to fetch array[i, j, k] of a 3-D array into the caches (LLVM's prefetch: a read,
    kept in every level). No load, no fault: nothing happens if the hardware declines it. A
    gather of one entry per row, whose rows lie pages apart, has its next loads under way
    while it sums (``losses.far_rows``)."""
    if not (isinstance(array, types.Array) and array.ndim == 3
            and all(isinstance(a, types.Integer) for a in (i, j, k))):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        indices = [context.cast(builder, a, t, types.intp) for a, t in zip(args[1:], signature.args[1:])]
        _prefetch(builder, cgutils.get_item_pointer(context, builder, array_type, ary, indices))
        return context.get_dummy_value()

    return types.none(array, i, j, k), codegen


@intrinsic
def prefetch_bytes_after(typingctx, array, offset):
    """A hint to fetch the cache line ``offset`` bytes after the first entry of ``array``,
    which may lie beyond the array's end: a prefetch never faults, and nothing happens if the
    hardware declines it. Loops that sum a block in L1 fetch the block two ahead while they
    do (``partials.terms_fetching``)."""
    if not (isinstance(array, types.Array) and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        bytes_ = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
        amount = context.cast(builder, args[1], signature.args[1], types.intp)
        _prefetch(builder, builder.gep(bytes_, [amount]))
        return context.get_dummy_value()

    return types.none(array, offset), codegen


# Tiles of short rows are transposed (``reduce.transpose_rows``, ``reduce.transpose_back``) a
# block of B rows at a time, B the lanes of a 512-bit vector (a cache line: 16 float32), for
# rows of n <= B entries, in groups of V rows and V columns, V the lanes of the target's
# widest vector (B with AVX-512, B / 2 with AVX2): V row loads masked at n, the V x V
# transpose in registers, a store per column (or the reverse). An entry at a time, the loads
# or the stores are scalar, and they bounded those loops.


@functools.cache
def vector_bits():
    """The width of the widest vectors that the code Numba generates may use (its target's
    features: the host's, or NUMBA_CPU_FEATURES): 512 (AVX-512), 256 (AVX2) or 128."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    features = features.split(",")
    return 512 if "+avx512f" in features else 256 if "+avx2" in features else 128


def has_512_bit_vectors():
    """Whether the code Numba generates may use AVX-512 (``vector_bits``)."""
    return vector_bits() == 512


def _vector_of(values, bits):
    return ir.Constant(ir.VectorType(ir.IntType(bits), len(values)), list(values))


def _transposed(builder, vectors):
    """The V x V matrix whose rows are ``vectors`` (V of V lanes), transposed: log2 V rounds
    of V two-vector shuffles, each swapping the off-diagonal blocks of side h within the
    diagonal blocks of side 2h (h = 1, 2, 4, ...)."""
    size = len(vectors)
    h = 1
    while h < size:
        swapped = list(vectors)
        for p in range(size):
            if not p & h:
                q = p + h
                # A mask's lanes 0 .. V-1 index vectors[p], V .. 2V-1 vectors[q].
                low = [j if not j & h else size + j - h for j in range(size)]
                high = [j + h if not j & h else size + j for j in range(size)]
                swapped[p] = builder.shuffle_vector(vectors[p], vectors[q], _vector_of(low, 32))
                swapped[q] = builder.shuffle_vector(vectors[p], vectors[q], _vector_of(high, 32))
        vectors = swapped
        h *= 2
    return vectors


def _block_parts(context, builder, rows_type, rows):
    """(n, B, the type of a V-lane vector, [(k0, mask)]) for the 2-D ``rows`` of n entries:
    for each group of V columns k0 .. k0 + V - 1 of a block, the mask of its lanes that lie
    in the rows (k0 + lane < n); a group with none is skipped (``_if_some``)."""
    blocks = 512 // rows_type.dtype.bitwidth
    lanes = vector_bits() // rows_type.dtype.bitwidth
    n = builder.extract_value(rows.shape, 1)
    splat = builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(64), lanes), None), n,
                                   ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(splat, splat, _vector_of([0] * lanes, 32))
    groups = [(k0, builder.icmp_signed("<", _vector_of(range(k0, k0 + lanes), 64), splat))
              for k0 in range(0, blocks, lanes)]
    return n, blocks, ir.VectorType(context.get_value_type(rows_type.dtype), lanes), groups


def _if_some(builder, k0, n):
    """The code of the column group that starts at k0, where it has columns (k0 < n)."""
    return builder.if_then(builder.icmp_signed("<", cgutils.intp_t(k0), n))


def _address(context, builder, array_type, array, indices, vector):
    """The address of array[indices] (intp values), as a pointer to ``vector``."""
    address = cgutils.get_item_pointer2(context, builder, array.data,
                                        cgutils.unpack_tuple(builder, array.shape),
                                        cgutils.unpack_tuple(builder, array.strides),
                                        array_type.layout, indices)
    return builder.bitcast(address, vector.as_pointer())


def _masked(builder, name, vector, mask):
    """LLVM's masked load or store of ``vector``'s type: no masked-off lane is read or
    written, so none can fault."""
    i32 = ir.IntType(32)
    # Named as LLVM with opaque pointers names them; an older LLVM (typed pointers) renames
    # them when it parses the module.
    suffix = f"v{vector.count}{'f32' if vector.element == ir.FloatType() else 'f64'}.p0"
    if name == "load":
        fnty = ir.FunctionType(vector, [vector.as_pointer(), i32, mask.type, vector])
    else:
        fnty = ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), i32, mask.type])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{name}.{suffix}")


def blocks_fit(rows, tile):
    """Whether ``transpose_block`` takes these types: 2-D rows and a 3-D tile, C-ordered (a
    row's entries adjacent), both float32 or both float64."""
    return (isinstance(rows, types.Array) and isinstance(tile, types.Array)
            and rows.dtype == tile.dtype and rows.dtype in (types.float32, types.float64)
            and rows.layout == tile.layout == "C" and rows.ndim == 2 and tile.ndim == 3)


@intrinsic
def transpose_block(typingctx, rows, r, tile, i):
    """tile[0, k, i + q] = rows[r + q, k] for q < B and k < n, rows of n <= B entries (B the
    lanes of a 512-bit vector; of longer rows, the first B entries): rows r .. r + B - 1 and
    the tile's entries i .. i + B - 1 must exist (its stores are whole vectors). Nothing else
    is read."""
    if not (blocks_fit(rows, tile) and isinstance(r, types.Integer) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        rows_type, r_type, tile_type, i_type = signature.args
        source = context.make_array(rows_type)(context, builder, args[0])
        target = context.make_array(tile_type)(context, builder, args[2])
        r = context.cast(builder, args[1], r_type, types.intp)
        i = context.cast(builder, args[3], i_type, types.intp)
        n, blocks, vector, groups = _block_parts(context, builder, rows_type, source)
        align = rows_type.dtype.bitwidth // 8
        for k0, mask in groups:
            load = _masked(builder, "load", vector, mask)
            with _if_some(builder, k0, n):
                for g in range(0, blocks, vector.count):
                    loaded = [builder.call(load, [
                        _address(context, builder, rows_type, source,
                                 [builder.add(r, cgutils.intp_t(g + q)), cgutils.intp_t(k0)], vector),
                        ir.Constant(ir.IntType(32), align), mask, ir.Constant(vector, None)])
                        for q in range(vector.count)]
                    for k, column in enumerate(_transposed(builder, loaded)):
                        with builder.if_then(builder.icmp_signed("<", cgutils.intp_t(k0 + k), n)):
                            address = _address(context, builder, tile_type, target,
                                               [cgutils.intp_t(0), cgutils.intp_t(k0 + k),
                                                builder.add(i, cgutils.intp_t(g))], vector)
                            builder.store(column, address, align=align)
        return context.get_dummy_value()

    return types.none(rows, r, tile, i), codegen


def _rows_of_tile(context, builder, tile_type, tile, i, n, k0, g, vector):
    """Entries k0 .. k0 + V - 1 of the block's rows g .. g + V - 1 (V vectors, zeros past n):
    columns k0 .. of the tile at i + g, transposed."""
    align = tile_type.dtype.bitwidth // 8
    columns = []
    for k in range(vector.count):
        column = cgutils.alloca_once_value(builder, ir.Constant(vector, None))
        with builder.if_then(builder.icmp_signed("<", cgutils.intp_t(k0 + k), n)):
            address = _address(context, builder, tile_type, tile,
                               [cgutils.intp_t(0), cgutils.intp_t(k0 + k), builder.add(i, cgutils.intp_t(g))],
                               vector)
            builder.store(builder.load(address, align=align), column)
        columns.append(builder.load(column))
    return _transposed(builder, columns)


@intrinsic
def transpose_block_back(typingctx, tile, i, rows, r, stream):
    """rows[r + q, k] = tile[0, k, i + q] for q < B and k < n, rows of n <= B entries (never
    more, unlike ``transpose_block``: the copy below holds B rows of B): ``transpose_block``
    undone. Nothing else is written.

    The block's B rows are B n adjacent entries, n cache lines' worth (64 / B bytes each).
    They are transposed into a copy on the stack (in L1), with whole-vector stores that run
    past each row's end into the next rows' first entries and a spare line, which later
    stores write again. Then the copy is written out, a line's worth at a time. So no store
    is masked: AVX2's masked stores (``vmaskmov``) are microcoded on AMD (Zen 3: 2.6x the
    time of the entries stored one at a time). With AVX-512, whose masked stores are as fast
    as others, the rows are written directly, unless streamed.

    ``stream`` (a bool) true and rows[r] at the start of a 64-byte cache line: the n lines
    are written by streaming stores, past the caches, which need not first read the lines
    from memory as a store does (float32 softmax of rows of 10, 1.2x faster). Such stores
    are weakly ordered: ``store_fence`` after the last."""
    if not (blocks_fit(rows, tile) and isinstance(r, types.Integer) and isinstance(i, types.Integer)
            and isinstance(stream, types.Boolean)):
        return None

    def codegen(context, builder, signature, args):
        tile_type, i_type, rows_type, r_type, _ = signature.args
        source = context.make_array(tile_type)(context, builder, args[0])
        target = context.make_array(rows_type)(context, builder, args[2])
        i = context.cast(builder, args[1], i_type, types.intp)
        r = context.cast(builder, args[3], r_type, types.intp)
        n, blocks, vector, groups = _block_parts(context, builder, rows_type, target)
        align = rows_type.dtype.bitwidth // 8
        line = ir.VectorType(vector.element, blocks)
        first = builder.bitcast(_address(context, builder, rows_type, target, [r, cgutils.intp_t(0)], line),
                                vector.element.as_pointer())
        offset = builder.and_(builder.ptrtoint(first, cgutils.intp_t), cgutils.intp_t(63))
        lines = builder.and_(args[4], builder.icmp_unsigned("==", offset, cgutils.intp_t(0)))
        if vector.count == blocks:
            # AVX-512: rows not streamed are written in place, by masked stores.
            (_, mask), = groups
            store = _masked(builder, "store", vector, mask)
            with builder.if_then(builder.not_(lines)):
                for q, row in enumerate(_rows_of_tile(context, builder, tile_type, source, i, n, 0, 0, vector)):
                    address = _address(context, builder, rows_type, target,
                                       [builder.add(r, cgutils.intp_t(q)), cgutils.intp_t(0)], vector)
                    builder.call(store, [row, address, ir.Constant(ir.IntType(32), align), mask])
            written_in_place = builder.not_(lines)
        else:
            written_in_place = cgutils.false_bit
        # Allocated once, in the function's entry block: the B rows of n entries, then a
        # line to spare.
        copy = builder.bitcast(cgutils.alloca_once(builder, line, size=blocks + 1),
                               vector.element.as_pointer())
        with builder.if_then(builder.not_(written_in_place)):
            # The column groups from the last, each row after the one before: a group's
            # stores run past a row by k0 + V - n entries, below k0 in the next row, since
            # it has columns only where n > k0 >= V (or k0 = 0), and a later store writes
            # them again.
            for k0, _ in reversed(groups):
                with _if_some(builder, k0, n):
                    for g in range(0, blocks, vector.count):
                        rows_g = _rows_of_tile(context, builder, tile_type, source, i, n, k0, g, vector)
                        for q, row in enumerate(rows_g):
                            at = builder.add(builder.mul(n, cgutils.intp_t(g + q)), cgutils.intp_t(k0))
                            builder.store(row, builder.bitcast(builder.gep(copy, [at]), vector.as_pointer()),
                                          align=align)
            with builder.if_else(lines) as (streamed, stored):
                for nontemporal, way in ((True, streamed), (False, stored)):
                    with way, cgutils.for_range(builder, n) as each:
                        start = builder.mul(each.index, cgutils.intp_t(blocks))
                        value = builder.load(builder.bitcast(builder.gep(copy, [start]), line.as_pointer()),
                                             align=align)
                        written = builder.store(value, builder.bitcast(builder.gep(first, [start]),
                                                                       line.as_pointer()),
                                                align=64 if nontemporal else align)
                        if nontemporal:
                            written.set_metadata("nontemporal", builder.module.add_metadata(
                                [ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(tile, i, rows, r, stream), codegen


@intrinsic
def store_fence(typingctx):
    """SFENCE: every streaming store before it is visible before any store after it (they are
    weakly ordered: another thread could otherwise find a line still on its way). On other
    targets than x86, LLVM's sequentially consistent fence (x86's ``fence`` instructions
    compile to no SFENCE, and other targets have no ``llvm.x86`` intrinsics)."""
    def codegen(context, builder, signature, args):
        if builder.module.triple.startswith(("x86_64", "i386", "i686")):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen
