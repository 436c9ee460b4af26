"""``update_page``: diff new bytes against a page, log the smaller encoding, apply.

Work goes 8 bytes at a time: comparing and copying through uint64 views runs
about 8x faster than byte loops, which do not vectorize here; only words that
differ are looked at byte by byte. Page slots are 8-aligned; the caller's
buffer may not be, which x86 and ARM64 loads tolerate.
"""

import numpy as np

from .._layout import ENC_DENSE, ENC_SPARSE, REC_DELTA, T_EPOCH, T_OFFSET, T_SIZE, TABLE_ROWS
from .apply import page_id
from .records import _GATHER, _HEADER, _LOW, U, byte_flags as _byte_flags, pad8, write_header, zero_tail
from ._jit import as_halves, as_words, at as _at, inline, kernel, load64, memcpy, memset, popcount, prefetch, store64

# how far past a record the commit asks for the log's lines (see commit_page)
_AHEAD_MAX = 4096


@kernel
def update_page(table, arena, slot, data, buf, pos, lsn):
    """Make page ``slot`` hold ``data``; log it as LSN ``lsn`` if any byte changed.

    Returns the new log end (``pos`` when nothing changed). Chooses the sparse
    encoding (5 bytes per changed byte) when it is smaller than the dense one
    (1 bit per page byte plus the changed bytes).
    """
    return commit_bytes(table, arena, slot, data, buf, pos, lsn, np.int64(0), np.int64(0), np.int64(0))


@inline
def commit_bytes(table, arena, slot, data, buf, pos, lsn, causes, step, ncauses):
    """:func:`update_page`, recording ``ncauses`` LSNs that caused this delta, the int64 words at
    address ``causes`` and each ``step`` bytes after it."""
    off = table[T_OFFSET, slot]
    return commit_page(table, arena[off:off + table[T_SIZE, slot]], slot, data, buf, pos, lsn, causes, step,
                       ncauses)


@kernel
def update_known(table, before, slot, data, buf, pos, lsn):
    """:func:`update_page` of a page whose bytes are elsewhere (on the device), given bytes
    that differ from ``data`` exactly where the page changed (``before`` is overwritten)."""
    return commit_page(table, before, slot, data, buf, pos, lsn, np.int64(0), np.int64(0), np.int64(0))


@inline
def commit_page(table, page, slot, data, buf, pos, lsn, causes, step, ncauses):
    """:func:`commit_bytes` with the page's current bytes given as ``page`` (which then takes ``data``)."""
    return _commit_at(np.int64(table.ctypes.data), np.int64(table.shape[1]), np.int64(page.ctypes.data), slot,
                      np.int64(data.ctypes.data), np.int64(buf.ctypes.data), np.int64(buf.size), pos, lsn, causes,
                      step, ncauses)


@kernel
def _commit_at(table_at, cap, page_at, slot, data_at, buf_at, buf_size, pos, lsn, causes, step, ncauses):
    """:func:`commit_page`, every array by its address: one compiled copy for all callers (inlined,
    it was typed and optimized again in each, a third of the first update's compile), and a
    call that passes words, not array structures."""
    table = _at(table_at, (TABLE_ROWS, cap), np.uint64)
    n = table[T_SIZE, slot]
    page = _at(page_at, (n,), np.uint8)
    data = _at(data_at, (n,), np.uint8)
    buf = _at(buf_at, (buf_size,), np.uint8)
    # The log appends into memory no cache holds, and every line it writes is first read in.
    # Asking now for the lines the next record of this size will take (a cascade writes one per
    # page, back to back) overlaps those reads with this one's work: a chain of ten 1 KiB pages
    # 2.9 -> 2.3 us, a single hop 1.23 -> 1.06 us. Prefetches are hints: past the buffer's
    # end they do nothing.
    span = np.int64(n + (n >> U(3))) + 64
    ahead = np.int64(buf.ctypes.data) + pos + span
    for line in range(ahead, ahead + min(span, _AHEAD_MAX), 64):
        prefetch(line)
    nw = n >> U(3)
    tail = nw * U(8)
    p64 = as_words(page[:tail])
    d64 = as_words(data[:tail])
    changed = U(0)
    for w in range(nw):  # branch-free, so it vectorizes
        changed += popcount(_byte_flags(p64[w] ^ d64[w]))
    for j in range(tail, n):
        if page[j] != data[j]:
            changed += U(1)
    if changed == 0:
        return pos
    epoch = table[T_EPOCH, slot] + U(1)
    table[T_EPOCH, slot] = epoch
    pid = page_id(table, slot)
    buf64 = as_words(buf)
    start = U(pos)
    nmask = (n + U(7)) >> U(3)
    if U(4) * changed < nmask:
        body = _HEADER + U(5) * changed
        write_header(buf64, start, pad8(body) + U(8 * ncauses), REC_DELTA, ENC_SPARSE, lsn, pid, epoch, changed, n)
        buf32 = as_halves(buf)
        ib = (start + _HEADER) >> U(2)
        vb = start + _HEADER + U(4) * changed
        k = U(0)
        for w in range(nw):
            if p64[w] != d64[w]:
                for j in range(U(8) * w, U(8) * w + U(8)):
                    if page[j] != data[j]:
                        buf32[ib + k] = j
                        buf[vb + k] = data[j]
                        k += U(1)
        for j in range(tail, n):
            if page[j] != data[j]:
                buf32[ib + k] = j
                buf[vb + k] = data[j]
                k += U(1)
    else:
        mb = start + _HEADER
        pb = mb + nmask
        at = np.int64(buf.ctypes.data)
        if changed == n:
            # every byte changed (a recompute of a whole page, a new random page): the payload is
            # the data, one copy
            memset(at + np.int64(mb), np.uint8(0xFF), np.int64(nmask))
            if n & U(7):
                buf[mb + nmask - U(1)] = np.uint8((1 << np.int64(n & U(7))) - 1)
            memcpy(at + np.int64(pb), np.int64(data.ctypes.data), np.int64(n))
            k = n
        else:
            k = U(0)
            for w in range(nw):
                flags = _byte_flags(p64[w] ^ d64[w])
                if flags == 0:
                    buf[mb + w] = 0
                elif flags == _LOW:
                    buf[mb + w] = 0xFF
                    store64(at + np.int64(pb + k), d64[w])
                    k += U(8)
                else:
                    buf[mb + w] = np.uint8((flags * _GATHER) >> U(56))
                    # branch-free compaction (see records.write_dense): stray bytes land inside the
                    # reserved room and are covered by the rest of the record or its zeroed tail
                    x = d64[w]
                    for b in range(8):
                        buf[pb + k] = np.uint8((x >> U(8 * b)) & U(0xFF))
                        k += (flags >> U(8 * b)) & U(1)
            if nw < nmask:
                bits = 0
                for j in range(tail, n):
                    if page[j] != data[j]:
                        bits |= 1 << (j - tail)
                        buf[pb + k] = data[j]
                        k += U(1)
                buf[mb + nw] = bits
        body = _HEADER + nmask + changed
        write_header(buf64, start, pad8(body) + U(8 * ncauses), REC_DELTA, ENC_DENSE, lsn, pid, epoch, n, n)
    zero_tail(buf, start + body, start + pad8(body))
    cw = (start + pad8(body)) >> U(3)
    for k in range(ncauses):
        buf64[cw + U(k)] = load64(causes + step * k)
    if ncauses:
        buf64[start >> U(3)] |= U(ncauses) << U(48)
    memcpy(np.int64(page.ctypes.data), np.int64(data.ctypes.data), np.int64(n))
    return np.int64(start + pad8(body) + U(8 * ncauses))
