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
        return lambda f: njit(fn, **OPTIONS, **options)(f)
    return lambda f: njit(**OPTIONS, **options)(f)


def inline(fn):
    """A helper folded into the kernels that call it."""
    return njit(inline="always", **OPTIONS)(fn)


@intrinsic
def _pointer(typingctx, addr):
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


@intrinsic
def memcpy(typingctx, dst, src, n):
    """Copy ``n`` bytes from address ``src`` to address ``dst`` (int64s; no overlap)."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        d = builder.inttoptr(args[0], cgutils.voidptr_t)
        s = builder.inttoptr(args[1], cgutils.voidptr_t)
        cgutils.raw_memcpy(builder, d, s, args[2], 1)
        return context.get_dummy_value()

    return sig, codegen


@inline
def at(addr, shape, dtype):
    """The C-contiguous array of ``shape`` and ``dtype`` at address ``addr``."""
    return carray(_pointer(addr), shape, dtype)


@intrinsic
def store64(typingctx, addr, value):
    """Store the uint64 ``value`` at address ``addr``, aligned or not."""
    sig = types.void(types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.store(args[1], ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen
