"""Kernels of a shared state's bus (:mod:`mmsb.bus`): the seqlock and consistent copies.

The owner's calls are bracketed by :func:`seq_enter` and :func:`seq_leave`; a
reader's :func:`read_pages` copies pages and accepts the copy only when the
sequence word was even before and unchanged after it. The fences make the rule
hold on any CPU, not only on x86's ordered stores: the writer's counter moves
before its first page byte, a reader's second look at the counter comes after
its last byte.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._layout import (
    FLAG_LIVE,
    H_CLOSED,
    H_DELTAS,
    H_LSN,
    H_NCHUNKS,
    H_SEQ,
    H_TABLE_GEN,
    H_WAITERS,
    H_WAKE,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    META_FLAG_SHIFT,
    META_GEN_MASK,
    RP_BUSY,
    RP_CAP,
    RP_CHUNKS,
    RP_COUNT,
    RP_EPOCHS,
    RP_GEN,
    RP_HEADER,
    RP_IDS,
    RP_MISSING,
    RP_NCHUNKS,
    RP_OUT,
    RP_REMAP,
    RP_RESIZED,
    RP_SIZES,
    RP_TABLE,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
)
from ._jit import at, atomic_load, atomic_store, lazy, memcpy


@intrinsic
def fence(typingctx):
    """A full memory fence: no load or store moves across it, in the compiler or the CPU."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def atomic_add(typingctx, addr, value):
    """Add ``value`` to the int64 at ``addr`` atomically; the value before."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "seq_cst")

    return sig, codegen


@intrinsic
def compare_swap(typingctx, addr, expected, value):
    """Store ``value`` at ``addr`` if it holds ``expected``, atomically; the value found."""
    sig = types.int64(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        pair = builder.cmpxchg(ptr, args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


@lazy("void(int64)")
def seq_enter(header):
    """The owner starts a call that may change pages: the sequence word turns odd."""
    atomic_add(header + 8 * H_SEQ, 1)
    fence()


# the C library's syscall(2), for futexes straight from the kernels below: no Python round
# trip between a commit and its wake-up, or between a wake-up and the reader's next look.
# Resolved by name when a kernel is linked, so the kernels still cache.
_syscall = types.ExternalFunction(
    "syscall", types.int64(types.int64, types.int64, types.int64, types.int64, types.int64))
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF


@lazy("int64(int64, int64, int64, int64)")
def seq_leave(header, lsn, deltas, sys_futex):
    """The owner's call ended: publish its counters, turn the sequence word even, and wake
    the readers asleep on the wake word (``sys_futex``: the futex system call's number; 0 where
    there is none, and sleepers poll). Returns 1 when some reader slept, else 0.
    """
    fence()
    moved = atomic_load(header + 8 * H_LSN) != lsn
    if moved:
        atomic_store(header + 8 * H_LSN, lsn)
        atomic_store(header + 8 * H_DELTAS, deltas)
    atomic_add(header + 8 * H_SEQ, 1)
    if moved:
        atomic_add(header + 8 * H_WAKE, 1)
        if atomic_load(header + 8 * H_WAITERS) > 0:
            if sys_futex > 0:
                _syscall(sys_futex, header + 8 * H_WAKE, _FUTEX_WAKE, _WAKE_ALL, 0)
            return 1
    return 0


@lazy("int64(int64, int64, int64, int64)")
def sleep_on_wake(header, seen, timespec, sys_futex):
    """A reader sleeps while the wake word still holds ``seen`` (its low 32 bits, as the
    futex compares), at most the time in the ``{seconds, nanoseconds}`` pair at
    ``timespec``, counted among the sleepers meanwhile; the wake word after. The GIL
    is free throughout; a signal ends the sleep early."""
    atomic_add(header + 8 * H_WAITERS, 1)
    _syscall(sys_futex, header + 8 * H_WAKE, _FUTEX_WAIT, seen & 0xFFFFFFFF, timespec)
    atomic_add(header + 8 * H_WAITERS, -1)
    return atomic_add(header + 8 * H_WAKE, 0)


@lazy("int64(int64, int64, int64)")
def word_add(header, word, value):
    """Atomically add ``value`` to header word ``word``; the value before."""
    return atomic_add(header + 8 * word, value)


@lazy("int64(int64, int64, int64, int64)")
def word_swap(header, word, expected, value):
    """Compare-and-swap of header word ``word``; the value found."""
    return compare_swap(header + 8 * word, expected, value)


@lazy("void(int64, int64, int64)")
def word_store(header, word, value):
    """Store ``value`` in header word ``word`` after every earlier store (a release)."""
    fence()
    atomic_store(header + 8 * word, value)


@lazy("int64(int64[::1], uint8[::1])")
def read_pages(args, out):
    """Copy pages out of a shared state, consistently; the LSN they are at, or a refusal.

    ``args`` (``RP_*``) holds the addresses of the header, the page table (``RP_CAP``
    rows, mapped from segment ``RP_GEN``), the chunk map (``RP_NCHUNKS`` rows of owner
    start, owner end, address here), the ids, their expected sizes, the epochs out
    and whether to copy (``RP_OUT``; 0: epochs only). Pages are copied back to back into ``out``.

    Refusals: RP_BUSY (the owner was inside a call: try again), RP_REMAP (the table
    or the chunks changed: map them again), RP_RESIZED (a page's size is not the
    one expected), RP_MISSING - i (id i names no live page). Each holds only if
    the sequence word did not move, so none is a torn reading.
    """
    h = args[RP_HEADER]
    seq = atomic_load(h + 8 * H_SEQ)
    if seq & 1:
        return RP_BUSY
    fence()
    lsn = atomic_load(h + 8 * H_LSN)
    status = 0
    if atomic_load(h + 8 * H_CLOSED) != 0:
        status = RP_BUSY  # the owner closed it: the caller reads the flag and raises
    elif atomic_load(h + 8 * H_TABLE_GEN) != args[RP_GEN] or atomic_load(h + 8 * H_NCHUNKS) != args[RP_NCHUNKS]:
        status = RP_REMAP
    else:
        cap = args[RP_CAP]
        table = at(args[RP_TABLE], (4, cap), types.uint64)
        nch = args[RP_NCHUNKS]
        chunks = at(args[RP_CHUNKS], (max(nch, 1), 3), types.int64)
        n = args[RP_COUNT]
        ids = at(args[RP_IDS], (n,), types.int64)
        sizes = at(args[RP_SIZES], (n,), types.int64)
        epochs = at(args[RP_EPOCHS], (n,), types.int64)
        copy = args[RP_OUT] != 0
        dst = out.ctypes.data
        pos = 0
        for i in range(n):
            pid = ids[i]
            slot = pid & ID_SLOT_MASK
            if slot >= cap:
                status = RP_MISSING - i
                break
            meta = table[T_META, slot]
            if (meta >> META_FLAG_SHIFT) & FLAG_LIVE == 0 or (meta & META_GEN_MASK) != (pid >> ID_SLOT_BITS):
                status = RP_MISSING - i
                break
            size = int(table[T_SIZE, slot])
            epochs[i] = int(table[T_EPOCH, slot])
            if not copy:
                continue
            if size != sizes[i]:
                status = RP_RESIZED
                break
            off = int(table[T_OFFSET, slot])
            src = -1
            for k in range(nch):
                if chunks[k, 0] <= off and off + size <= chunks[k, 1]:
                    src = chunks[k, 2] + off - chunks[k, 0]
                    break
            if src < 0:
                status = RP_REMAP
                break
            if pos + size > out.size:
                status = RP_RESIZED
                break
            memcpy(dst + pos, src, size)
            pos += size
    fence()
    if atomic_load(h + 8 * H_SEQ) != seq:
        return RP_BUSY
    return lsn if status == 0 else status

