"""The commit path: one kernel call per write, its cascade and its commit record included.

Each entry point takes the state's registers (``mmsb._layout.R_*``) and the
caller's arrays, applies the write, moves epochs, the LSN and the delta count,
logs the deltas, runs the cascade and seals the commit, and returns the LSN of
the written page's delta (0: nothing changed). Python has checked types and
sizes; offsets and page ids of a batch are checked here, before anything
changes. What a kernel cannot finish it hands back (``W_*``):

- ``W_ROOM``: nothing changed; make ``R_NEED`` log bytes (and ``R_NEED_UNDO``
  before-image bytes) of room and call again;
- ``W_RESUME``: the write is committed, its cascade waits on Python (a Python or
  ``@njit`` recompute, a device page, log space): ``ctl[C_STATUS]`` says which;
- ``W_SEAL``: committed with its cascade; Python seals (a file log writes it out).

When user code is bound anywhere (``R_FALLIBLE``), a commit saves the
before-image of each page it writes, so that a recompute that raises after a
step out to Python can roll the whole commit back; the saves are dropped once
the cascade is done inside the kernel.
"""

import numpy as np
from numba import types

from .._layout import (
    R_WORDS,
    L_CAP, L_DELTAS, L_MODE, L_USED, L_WORDS, L_ADDR, L_SEALED, LOG_DROP, LOG_SEAL, R_ARENA, R_ARENA_SIZE,
    R_BINDS, R_BINDS_ROWS, R_CTL, R_DELTAS, R_EDGES, R_EDGES_ROWS, R_FALLIBLE, R_LOG, R_LSN, R_NEED,
    R_NEED_UNDO, R_NEED_UNDO_ROWS, R_NODES, R_NODES_ROWS, R_NUM_EDGES, R_POOL, R_POOL_ROWS, R_SCRATCH,
    R_SCRATCH_SIZE, R_SEED_LSN, R_SEED_POS, R_SLOW, R_T0, R_LAT, R_TICK, FAST_MAX, R_SP_DELTAS, R_SP_LOG_DELTAS, R_SP_LSN, R_SP_USED, R_TABLE, R_TABLE_CAP,
    R_UNDO, R_UNDO_INDEX, R_UNDO_ROWS, R_UNDO_SIZE, R_WORK, R_WORK_ROWS, REC_COMMIT, REC_HEADER,
    ID_SLOT_BITS, ID_SLOT_MASK, FLAG_GUARDED, FLAG_LIVE, META_FLAG_SHIFT, META_GEN_MASK, T_EPOCH, T_META, T_OFFSET,
    T_SIZE,
    TABLE_ROWS, W_BAD, W_RESUME, W_ROOM, W_SEAL, W_SLOW, LOC_GPU, META_LOC_SHIFT, OP_PYTHON,
)
from .apply import _write_distinct, _write_masked, log_dense, log_sparse, write_entries
from .cascade import (
    B_COLS, B_OP, W_HEAP, C_CASCADES, C_OUT, C_TOUCH, C_STALE, C_STATUS, C_UNDO, C_UNDO_N, C_UNDO_POS, C_WORDS, ST_DONE, W_COLS,
    W_LSN, W_MARK, W_TOUCH, _finish, _push_children, _save_image, run,
)
from .diff import commit_bytes
from .graph import E_CHILD, E_COLS, E_NEXT_OUT, N_COLS, N_OUT
from .records import U, write_header, write_sparse
from ._jit import as_halves, as_words, at, atomic_load, atomic_store, inline, kernel, lazy, prefetch, wall_ns

_LIVE = U(FLAG_LIVE << META_FLAG_SHIFT)
_KEY = _LIVE | U(META_GEN_MASK)
# pages a commit looks through for user code downstream before it assumes there is some
_REACH = 64
_SAVED = 8  # a W_MARK bit no cascade uses: the page's before-image is saved (batch commits)
_GPU = U(LOC_GPU << META_LOC_SHIFT)
# pages the fast paths leave to Python: on the device, or derived and guarded against direct writes
_NOT_FAST = _GPU | U(FLAG_GUARDED << META_FLAG_SHIFT)

_REGS = "int64[::1]"
_REGS_T = types.Array(types.int64, 1, "C")
_SIG_UPDATE = f"int64({_REGS}, uint8[::1], int64)"
# a delta's or a batch's arrays are read, never written: read-only arrays (a batch's own, or
# arrays over bytes) take the same compiled kernel as writable ones
_RO_I64, _RO_U8, _RO_B = (types.Array(t, 1, "C", readonly=True) for t in (types.int64, types.uint8, types.boolean))
_SIG_SPARSE = types.int64(_REGS_T, _RO_I64, _RO_U8, types.int64)
_SIG_DENSE = types.int64(_REGS_T, _RO_B, _RO_U8, types.int64)
_SIG_RANGE = types.int64(_REGS_T, _RO_U8, types.int64, types.int64)
_I64 = types.Array(types.int64, 1, "C")
_SIG_BATCH = types.int64(_REGS_T, _RO_I64, _RO_I64, _RO_I64, _RO_U8, _I64, _I64)


@inline
def _host_slot(regs, table, pid):
    """The slot of live host page ``pid`` when the fast path may write it, else -1."""
    s = pid & ID_SLOT_MASK
    if pid < 0 or s >= table.shape[1] or regs[R_SLOW] != 0:
        return -1
    meta = table[T_META, s]
    if (meta & _KEY) != (_LIVE | U(pid >> ID_SLOT_BITS)) or meta & _NOT_FAST:
        return -1
    return s


@inline
def _state(regs):
    table = at(regs[R_TABLE], (TABLE_ROWS, regs[R_TABLE_CAP]), np.uint64)
    arena = at(regs[R_ARENA], (regs[R_ARENA_SIZE],), np.uint8)
    ctr = at(regs[R_LOG], (L_WORDS,), np.int64)
    buf = at(ctr[L_ADDR], (ctr[L_CAP],), np.uint8)
    return table, arena, ctr, buf


@inline
def _undo_arrays(regs):
    ctl = at(regs[R_CTL], (C_WORDS,), np.int64)
    undo = at(regs[R_UNDO], (regs[R_UNDO_SIZE],), np.uint8)
    index = at(regs[R_UNDO_INDEX], (regs[R_UNDO_ROWS], 4), np.int64)
    return ctl, undo, index


@inline
def _graph(regs):
    nodes = at(regs[R_NODES], (regs[R_NODES_ROWS], N_COLS), np.int64)
    edges = at(regs[R_EDGES], (regs[R_EDGES_ROWS], E_COLS), np.int64)
    binds = at(regs[R_BINDS], (regs[R_BINDS_ROWS], B_COLS), np.int64)
    pool = at(regs[R_POOL], (regs[R_POOL_ROWS], 2), np.int64)
    work = at(regs[R_WORK], (regs[R_WORK_ROWS], W_COLS), np.int64)
    scratch = at(regs[R_SCRATCH], (regs[R_SCRATCH_SIZE],), np.uint8)
    return nodes, edges, binds, pool, work, scratch


@inline
def _room(regs, ctr, need, undo_bytes, undo_rows):
    """Whether the log has ``need`` bytes free and, for a fallible state, the undo space
    ``undo_bytes`` and ``undo_rows`` entries; if not, say what is missing."""
    short = ctr[L_USED] + need > ctr[L_CAP]
    if regs[R_FALLIBLE] != 0:
        ctl, undo, index = _undo_arrays(regs)
        short |= undo_bytes > undo.size or undo_rows > index.shape[0]
    if short:
        regs[R_NEED] = need
        regs[R_NEED_UNDO] = undo_bytes
        regs[R_NEED_UNDO_ROWS] = undo_rows
    return not short


@inline
def _begin_undo(regs, ctr):
    """Remember where the commit starts and start saving before-images."""
    regs[R_SP_LSN] = regs[R_LSN]
    regs[R_SP_DELTAS] = regs[R_DELTAS]
    regs[R_SP_USED] = ctr[L_USED]
    regs[R_SP_LOG_DELTAS] = ctr[L_DELTAS]
    ctl, undo, index = _undo_arrays(regs)
    ctl[C_UNDO] = 1
    ctl[C_UNDO_N] = 0
    ctl[C_UNDO_POS] = 0


@inline
def _end_undo(regs):
    if regs[R_FALLIBLE] != 0:
        ctl, undo, index = _undo_arrays(regs)
        ctl[C_UNDO] = 0
        ctl[C_UNDO_N] = 0
        ctl[C_UNDO_POS] = 0


@inline
def _counted(regs, ctr, end, lsn):
    """The deltas logged up to ``end``, the last as ``lsn``, are the state's now."""
    fresh = lsn - regs[R_LSN]
    regs[R_LSN] = lsn
    regs[R_DELTAS] += fresh
    ctr[L_DELTAS] += fresh
    ctr[L_USED] = end


@inline
def _timer(regs):
    """Start timing this write if it is sampled (see R_TICK)."""
    tick = regs[R_TICK]
    regs[R_TICK] = tick + 1
    regs[R_T0] = wall_ns() if tick & 15 == 0 else 0


@inline
def _timed(regs):
    """The commit is done: count its duration in the latency histogram if it was sampled."""
    t0 = regs[R_T0]
    if t0 != 0:
        d = wall_ns() - t0
        b = 0
        while d > 0:
            d >>= 1
            b += 1
        lat = at(regs[R_LAT], (64,), np.int64)
        lat[min(b, 63)] += 1


@inline
def _seal(regs, ctr, buf, first):
    """End the commit: its commit record (in memory), or leave that to Python (a file log)."""
    mode = ctr[L_MODE]
    if mode == LOG_SEAL:
        end = ctr[L_USED]
        if end + REC_HEADER > ctr[L_CAP]:
            return W_SEAL
        write_header(as_words(buf), U(end), REC_HEADER, REC_COMMIT, 0, regs[R_LSN], wall_ns(), 0, 0, 0)
        ctr[L_USED] = end + REC_HEADER
        ctr[L_SEALED] = end + REC_HEADER
        _timed(regs)
        return first
    if mode == LOG_DROP:
        # log=False: the records stay in scratch space, where a returned Delta reads its own, until
        # the space is full (NullLog.reserve); there is nothing to seal
        ctr[L_SEALED] = ctr[L_USED]
        _timed(regs)
        return first
    return W_SEAL


@inline
def _seed(nodes, edges, work, ctl, s, lsn):
    if work[s, W_LSN] == 0:  # a page written twice in a batch is seeded once, with its last LSN
        t = ctl[C_TOUCH]
        work[t, W_TOUCH] = s
        ctl[C_TOUCH] = t + 1
        if s < nodes.shape[0]:
            _push_children(nodes, edges, work, ctl, s)
    work[s, W_LSN] = lsn


# The tails shared by every commit kernel are kernels of their own, not inlined: numba types an
# inlined function again in every caller, and the commit kernels then took 10-50 s each to compile.

@kernel
def _cascade(regs, seeds, lsns, seed, seed_lsn, count):
    """Run the cascade of the commit that wrote ``seeds[:count]`` (their last LSNs in ``lsns``),
    or with ``count`` 1 the one page ``seed``; whether it finished here."""
    table, arena, ctr, buf = _state(regs)
    ctl, undo, index = _undo_arrays(regs)
    nodes, edges, binds, pool, work, scratch = _graph(regs)
    ctl[C_OUT] = 0
    ctl[C_STALE] = 0
    ctl[C_CASCADES] += 1
    if count == 1:
        _seed(nodes, edges, work, ctl, seed, seed_lsn)
    else:
        for i in range(count):
            _seed(nodes, edges, work, ctl, seeds[i], lsns[i])
    end, lsn = run(table, arena, nodes, edges, binds, pool, work, ctl, scratch, undo, index, buf,
                   ctr[L_USED], regs[R_LSN], None)
    if lsn != regs[R_LSN]:
        _counted(regs, ctr, end, lsn)
    if ctl[C_STATUS] != ST_DONE:
        return False
    _finish(work, ctl)
    return True


@kernel
def _commit_one(regs, slot, pos, end, lsn):
    """After the write of page ``slot`` logged at ``[pos, end)`` as ``lsn``: commit, cascade, seal."""
    if end == pos:
        _end_undo(regs)
        return 0
    table, arena, ctr, buf = _state(regs)
    _counted(regs, ctr, end, lsn)
    regs[R_SEED_POS] = pos
    regs[R_SEED_LSN] = lsn
    if regs[R_NUM_EDGES] != 0:
        if not _cascade(regs, regs, regs, slot, lsn, np.int64(1)):  # not a literal 1: one compiled _cascade
            return W_RESUME
    _end_undo(regs)
    return _seal(regs, ctr, buf, pos + 1)


@inline
def _reaches_user_code(regs, slots, count, slot):
    """Whether the cascade of a commit that writes ``slots[:count]`` (with ``count`` 1, the
    page ``slot``) can reach a page recomputed outside the kernel (a Python or ``@njit``
    function, a device page): only such a commit can fail midway, and only it saves
    before-images. Looks through at most ``_REACH`` pages; past that, assumes it can.
    The heap's column of ``work`` is the search's stack: no cascade is running."""
    nodes, edges, binds, pool, work, scratch = _graph(regs)
    if count > _REACH:
        return True
    for i in range(count):
        work[i, W_HEAP] = slot if count == 1 else slots[i]
    top = count
    seen = 0
    while top > 0:
        top -= 1
        s = work[top, W_HEAP]
        seen += 1
        if seen > _REACH or s >= binds.shape[0] or binds[s, B_OP] >= OP_PYTHON:
            return True
        if s < nodes.shape[0]:
            e = nodes[s, N_OUT]
            while e >= 0:
                if top == _REACH:
                    return True
                work[top, W_HEAP] = edges[e, E_CHILD]
                top += 1
                e = edges[e, E_NEXT_OUT]
    return False


@inline
def _start_one(regs, table, arena, ctr, slot, need):
    """Room for one page's write, and its before-image when the write can reach user code."""
    return _started(np.int64(regs.ctypes.data), slot, need)


@kernel
def _started(regs_at, slot, need):
    """:func:`_start_one`, a kernel of its own (the registers by address: a call of three words),
    so that the four kernels that start one page's write do not each compile it again."""
    regs = at(regs_at, (R_WORDS,), np.int64)
    table, arena, ctr, buf = _state(regs)
    n = np.int64(table[T_SIZE, slot])
    saves = regs[R_FALLIBLE] != 0 and _reaches_user_code(regs, regs, 1, slot)
    if not _room(regs, ctr, need + 2 * REC_HEADER, n if saves else 0, 1 if saves else 0):
        return False
    _timer(regs)
    if saves:
        _begin_undo(regs, ctr)
        ctl, undo, index = _undo_arrays(regs)
        _save_image(table, arena, ctl, undo, index, slot)
    return True


@kernel(_SIG_UPDATE, nogil=False)
def commit_update(regs, data, pid):
    """``update_page``: page ``pid`` takes ``data``; see the module docstring. Returns the
    delta's record position + 1 (0: nothing changed), or ``W_SLOW`` for a page that is not a
    live host page, data of another size, a state in a transaction, or a page past
    ``FAST_MAX`` bytes: this kernel holds the GIL while it works."""
    table, arena, ctr, buf = _state(regs)
    slot = _host_slot(regs, table, pid)
    if slot < 0 or data.size != np.int64(table[T_SIZE, slot]) or data.size > FAST_MAX:
        return W_SLOW
    n = np.int64(table[T_SIZE, slot])
    if not _start_one(regs, table, arena, ctr, slot, REC_HEADER + 8 + n + ((n + 7) >> 3)):
        return W_ROOM
    pos = ctr[L_USED]
    lsn = regs[R_LSN] + 1
    end = commit_bytes(table, arena, slot, data, buf, pos, lsn, np.int64(0), np.int64(0), np.int64(0))
    return _commit_one(regs, slot, pos, end, lsn)


@lazy(_SIG_SPARSE)
def commit_sparse(regs, indices, values, pid):
    """``apply_delta`` of a sparse delta (the caller holds the state's lock): its record position
    + 1, 0, or ``W_BAD - 1 - 2 * k`` when offset k is outside the page."""
    table, arena, ctr, buf = _state(regs)
    slot = _host_slot(regs, table, pid)
    if slot < 0:
        return W_SLOW
    n = np.int64(table[T_SIZE, slot])
    for k in range(indices.size):
        if indices[k] < 0 or indices[k] >= n:
            return W_BAD - 1 - 2 * k
    if not _start_one(regs, table, arena, ctr, slot, REC_HEADER + 8 + 5 * indices.size):
        return W_ROOM
    pos = ctr[L_USED]
    lsn = regs[R_LSN] + 1
    end = pos
    if write_entries(arena, table[T_OFFSET, slot], indices, values, U(0), U(indices.size)):
        end = log_sparse(table, slot, indices, values, buf, pos, lsn)
    return _commit_one(regs, slot, pos, end, lsn)


@lazy(_SIG_RANGE)
def commit_range(regs, data, start, pid):
    """``update_page(..., at=rows)``: bytes ``start .. start + data.size`` of page ``pid`` take
    ``data``, logged as a sparse delta of the bytes that changed. Its record position + 1, 0,
    ``W_BAD`` for a range outside the page, ``W_SLOW`` or ``W_ROOM`` as commit_sparse."""
    table, arena, ctr, buf = _state(regs)
    slot = _host_slot(regs, table, pid)
    if slot < 0:
        return W_SLOW
    if start < 0 or start + data.size > np.int64(table[T_SIZE, slot]):
        return W_BAD
    at = np.int64(table[T_OFFSET, slot]) + start
    count = 0
    for k in range(data.size):
        if arena[at + k] != data[k]:
            count += 1
    if count == 0:
        return 0
    if not _start_one(regs, table, arena, ctr, slot, REC_HEADER + 8 + 5 * count):
        return W_ROOM
    indices = np.empty(count, np.int64)
    values = np.empty(count, np.uint8)
    j = 0
    for k in range(data.size):
        if arena[at + k] != data[k]:
            indices[j] = start + k
            values[j] = data[k]
            j += 1
    pos = ctr[L_USED]
    lsn = regs[R_LSN] + 1
    end = pos
    if write_entries(arena, table[T_OFFSET, slot], indices, values, U(0), U(count)):
        end = log_sparse(table, slot, indices, values, buf, pos, lsn)
    return _commit_one(regs, slot, pos, end, lsn)


@lazy(_SIG_DENSE)
def commit_dense(regs, mask, payload, pid):
    """``apply_delta`` of a dense delta; ``W_SLOW`` unless mask and payload have the page's size."""
    table, arena, ctr, buf = _state(regs)
    slot = _host_slot(regs, table, pid)
    if slot < 0 or mask.size != np.int64(table[T_SIZE, slot]) or payload.size != mask.size:
        return W_SLOW
    n = np.int64(table[T_SIZE, slot])
    if not _start_one(regs, table, arena, ctr, slot, REC_HEADER + 8 + n + ((n + 7) >> 3)):
        return W_ROOM
    pos = ctr[L_USED]
    lsn = regs[R_LSN] + 1
    end = pos
    if _write_masked(arena, table[T_OFFSET, slot], mask, payload, U(n)):
        end = log_dense(table, slot, mask, payload, buf, pos, lsn)
    return _commit_one(regs, slot, pos, end, lsn)


@kernel  # a kernel of its own: inlined, its loops would slow the batch's (see the undo steps)
def _batch_reach(starts, indices, reach):
    """What a batch's check needs of its offsets, found once per batch (a batch never changes):
    ``reach[i]``, one past delta i's largest offset (0 when it has none), and in ``reach[n]``
    whether every delta's offsets increase (1) or not (0), stored last: -1 there means not yet."""
    n = reach.size - 1
    increasing = True
    for i in range(n):
        lo = U(starts[i])
        hi = U(starts[i + 1])
        top = U(0)
        for j in range(lo, hi):  # branch-free; a negative offset is a huge unsigned one
            top = max(top, U(indices[j]) + U(1))
        for j in range(lo + U(1), hi):
            increasing &= indices[j] > indices[j - U(1)]
        reach[i] = np.int64(top)
    atomic_store(reach.ctypes.data + 8 * n, 1 if increasing else 0)


@inline
def _batch_slots(table, ids, reach, slots, offs):
    """Check the batch (pages live, offsets inside them) and find its slots, and their pages'
    arena offsets in ``offs`` (the caller's ``out``, which the apply loop overwrites with LSNs as
    it goes: it then reads the offsets in order, not from the table's row at random): 1 when
    every delta's offsets increase, 0 when some do not, or the W_BAD code."""
    bad_offset = -1
    for i in range(ids.size):
        pid = ids[i]
        s = pid & ID_SLOT_MASK
        # slots past the table's high-water mark hold zero meta: not live
        if pid < 0 or s >= table.shape[1] or (table[T_META, s] & _KEY) != (_LIVE | U(pid >> ID_SLOT_BITS)):
            return W_BAD - 2 * i  # a missing page is reported before any bad offset
        if table[T_META, s] & _NOT_FAST:
            return W_SLOW
        slots[i] = s
        offs[i] = np.int64(table[T_OFFSET, s])
        if U(reach[i]) > table[T_SIZE, s] and bad_offset < 0:
            bad_offset = i
    if bad_offset >= 0:
        return W_BAD - 2 * bad_offset - 1
    return reach[ids.size]


_AHEAD = 8
# the log's lines are asked for this far ahead of its end: they are written in order, 88 bytes a
# delta, into memory no cache holds (together with reading the offsets in order, see
# _batch_slots: small deltas 23.1-24.7 -> 20.3-22.1 ns each, 0.45-0.51x -> 0.51-0.55x the scatter)
_LOG_AHEAD = 2048


@inline
def _apply_batch(table, arena, buf, ids, slots, starts, indices, values, out, end, lsn, distinct):
    """Apply and log the deltas in batch order; (log end, last LSN, pages changed), the changed
    pages' slots moved to the front of ``slots``. ``out[i]`` holds delta i's page offset when
    called (:func:`_batch_slots`) and its LSN (0: no change) on return. With ``distinct`` (no delta repeats an offset)
    the loop holds no call: a call anywhere in it, even one never made, costs it half its speed.
    A record's page id is the checked ``ids[i]``, not read back from the table (a third fewer
    table reads in a loop that misses the cache on every delta)."""
    buf32 = as_halves(buf)
    buf64 = as_words(buf)
    changed = 0
    base = U(arena.ctypes.data)
    n = U(slots.size)
    logat = U(buf.ctypes.data) + U(_LOG_AHEAD)
    for i in range(slots.size):
        prefetch(logat + end)
        s = U(slots[i])
        lo = U(starts[i])
        hi = U(starts[i + 1])
        off = U(out[i])  # its page's offset, until the LSN takes its place below
        ahead = U(i) + U(_AHEAD)
        if ahead < n:  # the bytes of a delta a few ahead: its cache misses overlap this one's work
            fo = base + U(out[ahead])
            first = U(starts[ahead])
            for j in range(first, min(U(starts[ahead + U(1)]), first + U(_AHEAD))):  # a few lines will do
                prefetch(fo + U(indices[j]))
        if distinct:
            wrote = _write_distinct(arena, off, indices, values, lo, hi)
        else:
            wrote = lo < hi and write_entries(arena, off, indices, values, lo, hi)
        if wrote:
            lsn += 1
            epoch = table[T_EPOCH, s] + U(1)
            table[T_EPOCH, s] = epoch
            end = write_sparse(buf, buf32, buf64, end, lsn, ids[i], epoch, table[T_SIZE, s],
                               indices, values, lo, hi)
            out[i] = lsn
            slots[changed] = s
            changed += 1
        else:
            out[i] = 0
    return end, lsn, changed


@kernel
def _apply_batch_distinct(table, arena, buf, ids, slots, starts, indices, values, out, end, lsn):
    """:func:`_apply_batch` of a batch where no delta repeats an offset (the common case)."""
    return _apply_batch(table, arena, buf, ids, slots, starts, indices, values, out, end, lsn, True)


@kernel
def _apply_batch_repeating(table, arena, buf, ids, slots, starts, indices, values, out, end, lsn):
    """:func:`_apply_batch` of a batch where a delta may repeat an offset. A kernel of its own:
    a second inlined copy of the loop made the distinct case's copy 10% slower."""
    return _apply_batch(table, arena, buf, ids, slots, starts, indices, values, out, end, lsn, False)


@inline
def _save_batch(regs, table, arena, slots):
    """Save the before-image of each page the batch writes, once."""
    nodes, edges, binds, pool, work, scratch = _graph(regs)
    ctl, undo, index = _undo_arrays(regs)
    for i in range(slots.size):
        s = slots[i]
        if not work[s, W_MARK] & _SAVED:
            work[s, W_MARK] |= _SAVED
            _save_image(table, arena, ctl, undo, index, s)
    for i in range(slots.size):
        work[slots[i], W_MARK] &= ~_SAVED


@inline
def _batch_undo_size(regs, table, slots):
    """Bytes and count of the distinct pages the batch writes."""
    nodes, edges, binds, pool, work, scratch = _graph(regs)
    nbytes = 0
    pages = 0
    for i in range(slots.size):
        s = slots[i]
        if not work[s, W_MARK] & _SAVED:
            work[s, W_MARK] |= _SAVED
            nbytes += np.int64(table[T_SIZE, s])
            pages += 1
    for i in range(slots.size):
        work[slots[i], W_MARK] &= ~_SAVED
    return nbytes, pages


# The undo steps of a batch are kernels of their own, called only when user code is bound:
# inlined, their loops slowed the batch's own loop by 10% even when they never ran.

@kernel
def _batch_undo_need(regs, slots):
    """(bytes, pages) of the before-images a batch writing ``slots`` saves; (-1, 0) when its
    cascade cannot reach user code and it saves none."""
    if not _reaches_user_code(regs, slots, slots.size, slots[0] if slots.size else 0):
        return np.int64(-1), np.int64(0)
    table, arena, ctr, buf = _state(regs)
    return _batch_undo_size(regs, table, slots)


@kernel
def _batch_save(regs, slots):
    """Start saving before-images and save those of ``slots`` (room was made)."""
    table, arena, ctr, buf = _state(regs)
    _begin_undo(regs, ctr)
    _save_batch(regs, table, arena, slots)


@lazy(_SIG_BATCH)
def commit_batch(regs, ids, starts, indices, values, reach, out):
    """``apply_batch``: delta i writes page ``ids[i]``; ``out[i]`` gets its LSN (0: no change).
    ``reach`` is the batch's own (see :func:`_batch_reach`), filled on its first apply.

    Returns the last LSN of the commit's written pages (0: none changed), or a
    ``W_*`` code; ``W_BAD - 2 * i`` (delta i names no live page) and
    ``W_BAD - 2 * i - 1`` (an offset outside its page) before anything changes.
    """
    table, arena, ctr, buf = _state(regs)
    if regs[R_SLOW] != 0:
        return W_SLOW
    slots = np.empty(ids.size, np.int64)
    if atomic_load(reach.ctypes.data + 8 * ids.size) < 0:
        _batch_reach(starts, indices, reach)
    distinct = _batch_slots(table, ids, reach, slots, out)
    if distinct < 0:
        return distinct
    undo_bytes = np.int64(-1)  # -1: the batch saves no before-images
    undo_rows = np.int64(0)
    if regs[R_FALLIBLE] != 0:
        undo_bytes, undo_rows = _batch_undo_need(regs, slots)
    if not _room(regs, ctr, ids.size * (REC_HEADER + 8) + 5 * indices.size + 2 * REC_HEADER, max(undo_bytes, 0),
                 undo_rows):
        return W_ROOM
    _timer(regs)
    if undo_bytes >= 0:
        _batch_save(regs, slots)
    if distinct == 1:
        end, lsn, changed = _apply_batch_distinct(table, arena, buf, ids, slots, starts, indices, values, out,
                                                  U(ctr[L_USED]), regs[R_LSN])
    else:
        end, lsn, changed = _apply_batch_repeating(table, arena, buf, ids, slots, starts, indices, values, out,
                                                   U(ctr[L_USED]), regs[R_LSN])
    if changed == 0:
        _end_undo(regs)
        return 0
    _counted(regs, ctr, np.int64(end), lsn)
    if regs[R_NUM_EDGES] != 0:
        lsns = np.empty(changed, np.int64)
        k = 0
        for i in range(ids.size):
            if out[i] != 0:
                lsns[k] = out[i]
                k += 1
        if not _cascade(regs, slots, lsns, slots[0], lsns[0], changed):
            return W_RESUME
    _end_undo(regs)
    return _seal(regs, ctr, buf, lsn)
