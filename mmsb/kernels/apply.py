"""Applying deltas to pages in the host arena, logging each applied delta.

A delta that changes no byte of its page (judged against the page's bytes at
the moment it applies) is dropped: it moves no epoch, takes no LSN and writes
no record. Kernels return the new end of the log buffer; the caller has
already made sure the buffer has room for the worst case. Inside, positions
are unsigned (see ``records``); offsets were checked to be in range first.
"""

import numpy as np
from numba import prange

from .._layout import ID_SLOT_BITS, META_GEN_MASK, T_EPOCH, T_META, T_OFFSET, T_SIZE
from .records import U, byte_flags, write_dense, write_sparse
from ._jit import as_bytes, as_halves, as_words, inline, kernel



@inline
def page_id(table, slot):
    gen = table[T_META, slot] & U(META_GEN_MASK)
    return U(slot) | (gen << U(ID_SLOT_BITS))


@inline
def _distinct(indices, lo, hi):
    """Whether offsets [lo, hi) are pairwise distinct (False may mean unknown)."""
    increasing = True
    for j in range(lo + U(1), hi):  # branch-free: the common case, settled in one pass
        increasing &= indices[j] > indices[j - U(1)]
    if increasing:
        return True
    if hi - lo > U(16):
        return False
    for j in range(lo + U(1), hi):
        for i in range(lo, j):
            if indices[i] == indices[j]:
                return False
    return True


@inline
def _write_distinct(arena, off, indices, values, lo, hi):
    # writing unconditionally and comparing after runs branch-free; the store
    # needs the cache line either way
    changed = U(0)
    for j in range(lo, hi):
        p = off + U(indices[j])
        v = values[j]
        changed |= U(arena[p] ^ v)
        arena[p] = v
    return changed != U(0)


@kernel
def _write_repeated(arena, off, indices, values, lo, hi, scratch):
    """Write entries [lo, hi), where offsets may repeat; whether the bytes changed.

    Only the net effect counts (5 then back to the old value is no change):
    undo to the original bytes, compare with the final ones, redo.
    ``scratch`` holds at least 2 * (hi - lo) bytes.
    """
    n = hi - lo
    wrote = False
    for j in range(n):
        p = off + U(indices[lo + j])
        scratch[j] = arena[p]
        if scratch[j] != values[lo + j]:
            arena[p] = values[lo + j]
            wrote = True
    if not wrote:
        return False
    for j in range(n):
        scratch[n + j] = arena[off + U(indices[lo + j])]
    for k in range(n):
        j = n - U(1) - k
        arena[off + U(indices[lo + j])] = scratch[j]
    changed = False
    for j in range(n):
        if arena[off + U(indices[lo + j])] != scratch[n + j]:
            changed = True
            break
    if changed:
        for j in range(n):
            arena[off + U(indices[lo + j])] = scratch[n + j]
    return changed


@inline
def _write_entries(arena, off, indices, values, lo, hi, scratch):
    """Write entries [lo, hi) in order; return whether the page's bytes changed."""
    if _distinct(indices, lo, hi):
        return _write_distinct(arena, off, indices, values, lo, hi)
    return _write_repeated(arena, off, indices, values, lo, hi, scratch)


@kernel
def _write_repeated_alone(arena, off, indices, values, lo, hi):
    # a call of its own: an allocation inlined into a caller's loop slows the whole loop (2x)
    return _write_repeated(arena, off, indices, values, lo, hi, np.empty(2 * (hi - lo), np.uint8))


@inline
def write_entries(arena, off, indices, values, lo, hi):
    """:func:`_write_entries` with its scratch space made only when offsets repeat."""
    if _distinct(indices, lo, hi):
        return _write_distinct(arena, off, indices, values, lo, hi)
    return _write_repeated_alone(arena, off, indices, values, lo, hi)


# -- logging an applied delta: epoch + 1 and its record. The CPU kernels below call these after
# writing the bytes; writes to device pages call them once the device said the bytes changed

@kernel
def log_sparse(table, slot, indices, values, buf, pos, lsn):
    """Log one sparse delta that changed page ``slot`` (applied elsewhere) as LSN ``lsn``."""
    epoch = table[T_EPOCH, slot] + U(1)
    table[T_EPOCH, slot] = epoch
    end = write_sparse(
        buf, as_halves(buf), as_words(buf), U(pos), lsn,
        page_id(table, slot), epoch, table[T_SIZE, slot], indices, values, U(0), U(indices.size),
    )
    return np.int64(end)


@kernel
def log_dense(table, slot, mask, payload, buf, pos, lsn):
    """Log one dense delta that changed page ``slot`` (applied elsewhere) as LSN ``lsn``."""
    epoch = table[T_EPOCH, slot] + U(1)
    table[T_EPOCH, slot] = epoch
    end = write_dense(buf, as_words(buf), U(pos), lsn, page_id(table, slot), epoch, mask, payload,
                      table[T_SIZE, slot])
    return np.int64(end)


@kernel
def apply_sparse(table, arena, slot, indices, values, buf, pos, lsn):
    """Apply one sparse delta as LSN ``lsn``.

    Returns the new log end, equal to ``pos`` when the delta changed nothing,
    or -1 - k when offset k lies outside the page (then nothing changed).
    """
    n = np.int64(table[T_SIZE, slot])
    for k in range(indices.size):
        if indices[k] < 0 or indices[k] >= n:
            return -1 - k
    off = table[T_OFFSET, slot]
    scratch = np.empty(2 * indices.size, np.uint8)
    if not _write_entries(arena, off, indices, values, U(0), U(indices.size), scratch):
        return pos
    return log_sparse(table, slot, indices, values, buf, pos, lsn)


@inline
def _write_masked(arena, off, mask, payload, n):
    """Write ``payload`` where ``mask``; whether a byte changed. Eight bytes at a time,
    branch-free (a byte loop with a branch ran 20x slower); slots are 8-aligned."""
    m8 = as_bytes(mask)
    nw = n >> U(3)
    tail = nw * U(8)
    a64 = as_words(arena[off:off + tail])
    m64 = as_words(m8[:tail])
    p64 = as_words(payload[:tail])
    diff = U(0)
    for w in range(nw):
        m = byte_flags(m64[w]) * U(0xFF)
        old = a64[w]
        new = (old & ~m) | (p64[w] & m)
        a64[w] = new
        diff |= old ^ new
    for j in range(tail, n):
        if m8[j] and arena[off + j] != payload[j]:
            arena[off + j] = payload[j]
            diff |= U(1)
    return diff != U(0)


@kernel
def apply_dense(table, arena, slot, mask, payload, buf, pos, lsn):
    """Apply one dense delta (lengths checked by the caller) as LSN ``lsn``."""
    off = table[T_OFFSET, slot]
    n = table[T_SIZE, slot]
    if not _write_masked(arena, off, mask, payload, n):
        return pos
    return log_dense(table, slot, mask, payload, buf, pos, lsn)


@kernel
def check_sparse_batch(table, slots, starts, indices):
    """Index of the first delta with an offset outside its page, or -1."""
    for i in range(slots.size):
        n = np.int64(table[T_SIZE, slots[i]])
        for j in range(starts[i], starts[i + 1]):
            if indices[j] < 0 or indices[j] >= n:
                return i
    return -1


@kernel
def apply_sparse_batch(table, arena, slots, starts, indices, values, buf, pos, lsn, out):
    """Apply a columnar batch of sparse deltas in order, as LSNs after ``lsn``.

    ``out[i]`` receives delta i's LSN, or 0 when it changed nothing. Returns
    (log end, last LSN), or (-1 - i, lsn) with nothing changed when delta i
    has an offset outside its page.
    """
    bad = check_sparse_batch(table, slots, starts, indices)
    if bad >= 0:
        return np.int64(-1 - bad), lsn
    buf32 = as_halves(buf)
    buf64 = as_words(buf)
    longest = 0
    for i in range(slots.size):
        longest = max(longest, starts[i + 1] - starts[i])
    scratch = np.empty(2 * longest, np.uint8)
    end = U(pos)
    for i in range(slots.size):
        s = U(slots[i])
        lo = U(starts[i])
        hi = U(starts[i + 1])
        if lo < hi and _write_entries(arena, table[T_OFFSET, s], indices, values, lo, hi, scratch):
            lsn += 1
            epoch = table[T_EPOCH, s] + U(1)
            table[T_EPOCH, s] = epoch
            end = write_sparse(
                buf, buf32, buf64, end, lsn, page_id(table, s), epoch, table[T_SIZE, s], indices, values, lo, hi
            )
            out[i] = lsn
        else:
            out[i] = 0
    return np.int64(end), lsn


@kernel(parallel=True)
def _apply_grouped(table, arena, slots, starts, indices, values, order, groups, changed):
    # pages are independent: each thread takes whole pages, and within a page
    # the deltas keep their batch order, so no two threads touch one page
    for g in prange(groups.size - 1):
        for k in range(groups[g], groups[g + 1]):
            i = order[k]
            lo = U(starts[i])
            hi = U(starts[i + 1])
            if lo == hi:
                changed[i] = 0
                continue
            off = table[T_OFFSET, slots[i]]
            if _distinct(indices, lo, hi):
                changed[i] = _write_distinct(arena, off, indices, values, lo, hi)
            else:
                scratch = np.empty(2 * (hi - lo), np.uint8)
                changed[i] = _write_repeated(arena, off, indices, values, lo, hi, scratch)


@kernel
def _log_grouped(table, slots, starts, indices, values, buf, pos, lsn, out):
    # LSNs, epochs and records follow batch order, one thread
    buf32 = as_halves(buf)
    buf64 = as_words(buf)
    end = U(pos)
    for i in range(slots.size):
        if out[i]:
            s = U(slots[i])
            lsn += 1
            epoch = table[T_EPOCH, s] + U(1)
            table[T_EPOCH, s] = epoch
            end = write_sparse(
                buf, buf32, buf64, end, lsn, page_id(table, s), epoch, table[T_SIZE, s], indices, values,
                U(starts[i]), U(starts[i + 1]),
            )
            out[i] = lsn
    return np.int64(end), lsn


def group_by_page(slots):
    """(order, groups): delta indices sorted by page, batch order kept within a page, and where
    each page's run starts in ``order`` (one more entry than pages)."""
    order = np.argsort(slots, kind="stable")
    cut = np.flatnonzero(np.diff(slots[order])) + 1
    return order, np.concatenate(([0], cut, [slots.size])).astype(np.int64)


def apply_sparse_batch_parallel(table, arena, slots, starts, indices, values, buf, pos, lsn, out):
    """:func:`apply_sparse_batch` with the byte writes spread over threads, page by page.

    Same results, same log; worth it only for large batches (the caller
    decides, see ``mmsb.config.PARALLEL_BATCH_DELTAS``).
    """
    bad = check_sparse_batch(table, slots, starts, indices)
    if bad >= 0:
        return -1 - bad, lsn
    order, groups = group_by_page(slots)
    _apply_grouped(table, arena, slots, starts, indices, values, order, groups, out)
    return _log_grouped(table, slots, starts, indices, values, buf, pos, lsn, out)


# -- batches and recomputes that involve device pages (mmsb.gpu): the host's share

@kernel
def apply_marked(table, arena, slots, starts, indices, values, here, changed):
    """Apply, in batch order, the deltas with ``here[i]`` (the rest are on the device);
    ``changed[i]`` says whether delta i changed its page. Offsets were checked."""
    longest = 0
    for i in range(slots.size):
        longest = max(longest, starts[i + 1] - starts[i])
    scratch = np.empty(2 * longest, np.uint8)
    for i in range(slots.size):
        lo = U(starts[i])
        hi = U(starts[i + 1])
        if here[i] and lo < hi:
            changed[i] = _write_entries(arena, table[T_OFFSET, slots[i]], indices, values, lo, hi, scratch)


@kernel
def repeated_offsets(starts, indices, out):
    """``out[i] = 1`` where delta i's offsets are not pairwise distinct."""
    for i in range(starts.size - 1):
        lo, hi = starts[i], starts[i + 1]
        if _distinct(indices, U(lo), U(hi)):
            out[i] = 0
        else:
            s = np.sort(indices[lo:hi])
            out[i] = 0
            for j in range(1, s.size):
                if s[j] == s[j - 1]:
                    out[i] = 1
                    break


@kernel
def cast_weights(weights, out):
    """Weights in a page dtype, converted as the CPU recompute converts them."""
    for i in range(weights.size):
        out[i] = weights[i]
