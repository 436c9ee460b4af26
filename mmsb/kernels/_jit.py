"""How every mmsb kernel is compiled, and the few intrinsics the commit kernels need.

``kernel`` and ``inline`` are the two decorators: compiled lazily on first use,
cached on disk (``cache=True``) and releasing the GIL (``nogil=True``). ``inline``
functions are folded into their callers, so they cost no call inside a kernel.

A commit kernel gets the whole state as one int64 array of addresses
(``mmsb._layout.R_*``): :func:`at` turns an address back into an array. Each array
argument of a kernel costs ~45 ns at the call boundary; a view made from an
address inside costs nothing measurable. Python keeps every array alive and
rewrites its address whenever it replaces one, always between kernel calls.
"""

import sys

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

OPTIONS = dict(cache=True, nogil=True)


def kernel(fn=None, **options):
    """``@kernel``, ``@kernel(parallel=True)`` or ``@kernel("int64(int64[::1])")``: a cached,
    GIL-free njit kernel; with a signature, compiled (or loaded from the cache) when defined,
    and called with other argument types it raises TypeError instead of compiling again."""
    if callable(fn):
        return njit(**OPTIONS)(fn)
    if fn is not None:
        return lambda f: njit(fn, **{**OPTIONS, **options})(f)
    return lambda f: njit(**{**OPTIONS, **options})(f)


class _Lazy:
    """A kernel with a signature, compiled (or loaded from the cache) on its first call rather
    than when its module is imported; it then puts the compiled kernel in its module's place."""

    def __init__(self, signature, fn, options):
        self.signature, self.py_func, self.options = signature, fn, options
        self.__name__, self.__doc__ = fn.__name__, fn.__doc__
        self._kernel = None

    def compiled(self):
        if self._kernel is None:
            self._kernel = njit(self.signature, **OPTIONS, **self.options)(self.py_func)
            setattr(sys.modules[self.py_func.__module__], self.__name__, self._kernel)
        return self._kernel

    def __call__(self, *args):
        return self.compiled()(*args)


def lazy(signature, **options):
    """``@lazy("int64(int64[::1])")``: like ``@kernel(signature)``, compiled on first call."""
    return lambda fn: _Lazy(signature, fn, options)


def entry(dispatcher):
    """The compiled function behind a kernel with one signature, called without numba's
    dispatch: ~0.15-0.3 µs less per call, a fifth of a small write.

    It converts its arguments to the signature's types without choosing among
    signatures, and checks an array argument only for its item size: a caller
    passes arrays it made or checked (dimensions, layout, dtype) itself. Where
    the compiled function is not reachable (JIT disabled), the kernel itself.
    """
    if isinstance(dispatcher, _Lazy):
        dispatcher = dispatcher.compiled()
    try:
        (signature,) = dispatcher.signatures
        return dispatcher.overloads[signature].entry_point
    except (AttributeError, KeyError, ValueError):
        return dispatcher


def inline(fn):
    """A helper folded into the kernels that call it."""
    return njit(inline="always", **OPTIONS)(fn)


@intrinsic
def _pointer(typingctx, addr):
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def _copier(raw):
    """An intrinsic ``(dst, src, n)`` copying ``n`` bytes between int64 addresses with cgutils' ``raw``."""
    def typer(typingctx, dst, src, n):
        sig = types.void(types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            d = builder.inttoptr(args[0], cgutils.voidptr_t)
            s = builder.inttoptr(args[1], cgutils.voidptr_t)
            raw(builder, d, s, args[2], 1)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


memcpy = _copier(cgutils.raw_memcpy)  # the ranges must not overlap
memmove = _copier(cgutils.raw_memmove)  # they may overlap


@inline
def at(addr, shape, dtype):
    """The C-contiguous array of ``shape`` and ``dtype`` at address ``addr``."""
    return carray(_pointer(addr), shape, dtype)


@inline
def as_words(a):
    """The bytes of contiguous array ``a`` as uint64 words (its size in bytes a multiple of 8).

    Like ``a.view(np.uint64)``, but folded into the caller: numba's ``view`` is a
    call of its own with reference counting, ~10-20 ns each, and a commit takes
    several per page.
    """
    return carray(_pointer(a.ctypes.data), ((a.size * a.itemsize) >> 3,), np.uint64)


@inline
def as_halves(a):
    """:func:`as_words` as uint32 (the size in bytes a multiple of 4)."""
    return carray(_pointer(a.ctypes.data), ((a.size * a.itemsize) >> 2,), np.uint32)


@inline
def as_bytes(a):
    """:func:`as_words` as uint8: the bytes of ``a`` (a boolean mask's, say)."""
    return carray(_pointer(a.ctypes.data), (a.size * a.itemsize,), np.uint8)


@intrinsic
def float_bits(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def store64(typingctx, addr, value):
    """Store the uint64 ``value`` at address ``addr``, aligned or not."""
    sig = types.void(types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.store(args[1], ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def memset(typingctx, dst, value, n):
    """Set ``n`` bytes at address ``dst`` to ``value``."""
    sig = types.void(types.int64, types.uint8, types.int64)

    def codegen(context, builder, signature, args):
        d = builder.inttoptr(args[0], cgutils.voidptr_t)
        cgutils.memset(builder, d, args[2], args[1])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def call_entry(typingctx, fn, op, out, arena, offsets, weights, n):
    """Call the C function at address ``fn`` (an entry of :mod:`mmsb.kernels.ops`, compiled
    apart from the kernels that call it) with ``op``, the arrays as address and length, and
    ``n``. The arrays go in as arrays, not addresses: numba frees an array after its last use,
    and an address taken from it is not a use."""
    sig = types.void(types.int64, types.int64, out, arena, offsets, weights, types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        out, arena, offsets, weights = (context.make_array(ty)(context, builder, value)
                                        for ty, value in zip(signature.args[2:6], args[2:6]))
        words = [args[1], builder.ptrtoint(out.data, i64), out.nitems, builder.ptrtoint(arena.data, i64),
                 arena.nitems, builder.ptrtoint(offsets.data, i64), builder.ptrtoint(weights.data, i64),
                 offsets.nitems, args[6]]
        fnty = ir.FunctionType(ir.VoidType(), [i64] * 9)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), words)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def popcount(typingctx, x):
    """The number of set bits of the uint64 ``x``."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


_CLOCK_REALTIME = 0
_CLOCK_MONOTONIC = 1 if sys.platform.startswith("linux") else 6  # Linux; macOS


def _clock(clock_id):
    """The codegen of a read of C clock ``clock_id``, in ns."""

    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        spec = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(i32, [i32, spec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, spec)
        builder.call(fn, [i32(clock_id), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, i64(1_000_000_000)), nsec)

    return codegen


@intrinsic
def monotonic_ns(typingctx):
    """``time.monotonic_ns()``, read by the C library."""
    return types.int64(), _clock(_CLOCK_MONOTONIC)


@intrinsic
def wall_ns(typingctx):
    """Wall-clock time in ns since the epoch (``time.time_ns()``), read by the C library."""
    return types.int64(), _clock(_CLOCK_REALTIME)


@intrinsic
def atomic_load(typingctx, addr):
    """The int64 at address ``addr``, read as a sequentially consistent atomic: what another
    thread stored before its :func:`atomic_store` of it is seen too."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(ptr, "seq_cst", 8)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, addr, value):
    """Store the int64 ``value`` at address ``addr`` as a sequentially consistent atomic."""
    sig = types.void(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.store_atomic(args[1], ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return sig, codegen


def c_function(name, restype, *argtypes):
    """An intrinsic calling the C library's ``name`` (int64 arguments: addresses, sizes, file
    descriptors), bound by symbol when a kernel is loaded, so a cached kernel stays valid."""
    ir_types = [ir.IntType(t.bitwidth) for t in argtypes]

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(restype.bitwidth), ir_types)
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        return builder.call(fn, [builder.trunc(a, t) if t.width < 64 else a for a, t in zip(args, ir_types)])

    sig = restype(*(types.int64 for _ in argtypes))
    # numba reads an intrinsic's arity from its Python signature
    if len(argtypes) == 0:
        def typer(typingctx):
            return sig, codegen
    elif len(argtypes) == 1:
        def typer(typingctx, a):
            return sig, codegen
    elif len(argtypes) == 2:
        def typer(typingctx, a, b):
            return sig, codegen
    elif len(argtypes) == 3:
        def typer(typingctx, a, b, c):
            return sig, codegen
    else:
        def typer(typingctx, a, b, c, d):
            return sig, codegen
    typer.__name__ = f"c_{name}"
    return intrinsic(typer)


@intrinsic
def load64(typingctx, addr):
    """The uint64 at address ``addr``, aligned or not."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


# the intrinsic's name carries its pointer type: "ptr" in llvmlite's opaque-pointer IR, i8* before
_PREFETCH = "llvm.prefetch.p0" if str(ir.IntType(8).as_pointer()) == "ptr" else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, addr):
    """Ask the CPU to bring the cache line at ``addr`` in for writing, without waiting for it:
    a hint, never a fault (an address outside memory is ignored)."""
    sig = types.void(addr)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        ptr_t = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ptr_t, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        ptr = builder.inttoptr(args[0], ptr_t)
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
