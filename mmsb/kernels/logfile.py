"""Kernels behind log files and replay: frame checks, record checks, replay, page copies.

Everything that reads bytes from a file treats them as hostile: every length
is checked against what is there before it is used, so no byte sequence
makes these kernels read out of bounds, loop forever or apply a record that
does not fit the state (layouts in ``docs/FORMAT.md``).
"""

import numpy as np

from .._layout import (
    ENC_DENSE,
    ENC_SPARSE,
    FLAG_LIVE,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    META_FLAG_SHIFT,
    META_GEN_MASK,
    REC_COMMIT,
    FRAME_HEADER,
    REC_DELTA,
    REC_HEADER,
    REC_TYPES,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
)
from .checksum import crc32c
from ._jit import as_halves, as_words, inline, kernel, memcpy, memmove

FRAME_MAGIC = 0x3146534D  # "MSF1"
# scan results
SCAN_CLEAN, SCAN_TORN, SCAN_CORRUPT = 0, 1, 2
# replay results
R_DONE, R_STOP, R_BAD, R_MALFORMED = 0, 1, 2, 3
_MAX_TYPE = max(REC_TYPES)


@inline
def _u32(data, at):
    return np.uint32(data[at]) | np.uint32(data[at + 1]) << 8 | np.uint32(data[at + 2]) << 16 | (
        np.uint32(data[at + 3]) << 24)


@inline
def _u64(data, at):
    lo = np.uint64(_u32(data, at))
    hi = np.uint64(_u32(data, at + 4))
    return lo | hi << np.uint64(32)


@kernel
def frame_crc(seed, data, start, end):
    """The CRC of a frame at ``start`` whose payload ends at ``end`` (header words 2-4 + payload)."""
    return crc32c(data, start + 8, end, seed)


@inline
def _frame_ok(data, pos, n, seed):
    """The end of the valid frame at ``pos``, or -1."""
    if n - pos < FRAME_HEADER or _u32(data, pos) != FRAME_MAGIC:
        return -1
    length = _u64(data, pos + 8)
    if length & 7 or length > np.uint64(n - pos - FRAME_HEADER):
        return -1
    end = pos + FRAME_HEADER + np.int64(length)
    if frame_crc(seed, data, pos, end) != _u32(data, pos + 4):
        return -1
    return end


@kernel
def scan_frames(data, pos, seed, starts):
    """Walk the frames from ``pos``: (valid end, frames, payload bytes, last LSN, status).

    A frame that fails its checks (or whose number is not its place) is a
    torn tail when no valid frame follows it anywhere (a crash cut the last
    write short), and damage when one does (status ``SCAN_CORRUPT``, the
    valid end is where the damage starts).

    Each valid frame's payload moves to the front of ``data``, after the ones before it, while
    its checksummed bytes are still in cache (a pass of its own over the file cost a twentieth
    of a replay): ``starts[i]`` gets where frame i's payload starts. A move only writes over
    bytes before the frame's end, so the search past a bad frame reads the file as it was.
    """
    n = data.size
    frames = 0
    payload = 0
    lsn = np.uint64(0)
    base = np.int64(data.ctypes.data)
    while pos < n:
        end = _frame_ok(data, pos, n, seed)
        if end >= 0 and _u64(data, pos + 24) != np.uint64(frames):
            end = -1  # a whole frame out of its place: one before it was dropped, or it was moved or repeated
        if end < 0:
            # frames are 8-aligned: look for any later one that checks out. Only headers that
            # could follow (a later number, an LSN not going back) are checksummed, and the
            # checksummed bytes are bounded: a tail built to make this search slow is damage
            k = pos + 8
            budget = 4 * n + (1 << 20)
            while k + FRAME_HEADER <= n:
                if (_u32(data, k) == FRAME_MAGIC and _u64(data, k + 24) > np.uint64(frames)
                        and _u64(data, k + 16) >= lsn):
                    budget -= FRAME_HEADER + min(np.int64(_u64(data, k + 8) & np.uint64(0x7FFFFFFFFFFF)), n)
                    if budget < 0 or _frame_ok(data, k, n, seed) >= 0:
                        return pos, frames, payload, lsn, SCAN_CORRUPT
                k += 8
            return pos, frames, payload, lsn, SCAN_TORN
        lsn = _u64(data, pos + 16)
        memmove(base + payload, base + pos + FRAME_HEADER, end - pos - FRAME_HEADER)  # a uint8 slice: byte by byte
        starts[frames] = payload
        payload += end - pos - FRAME_HEADER
        frames += 1
        pos = end
    return pos, frames, payload, lsn, SCAN_CLEAN


@kernel
def check_records(data, start, end, to_lsn):
    """Walk the records of ``data[start:end]``; (cut, commits, deltas, last LSN, bad offset).

    ``cut`` is the end of the last whole commit (its marker) whose LSN is at
    most ``to_lsn``; ``bad`` the offset of the first record that is not well
    formed (-1 if none), where the walk stops.
    """
    pos = start
    cut = start
    commits = 0
    deltas = 0
    pending = 0
    lsn = np.uint64(0)
    limit = np.uint64(to_lsn)
    words = as_words(data[: data.size & ~7])  # records are 8-aligned
    while pos < end:
        if end - pos < REC_HEADER:
            return cut, commits, deltas, lsn, pos
        w0 = words[pos >> 3]
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        rtype = np.int64((w0 >> np.uint64(32)) & np.uint64(0xFF))
        if length < REC_HEADER or length & 7 or length > end - pos or rtype < 1 or rtype > _MAX_TYPE:
            return cut, commits, deltas, lsn, pos
        if rtype == REC_DELTA:
            pending += 1
        elif rtype == REC_COMMIT:
            w1 = words[(pos >> 3) + 1]
            if w1 > limit:
                return cut, commits, deltas, lsn, -1
            lsn = w1
            commits += 1
            deltas += pending
            pending = 0
            cut = pos + length
        pos += length
    return cut, commits, deltas, lsn, -1


@inline
def _live_slot(table, used, pid):
    """The slot of live page ``pid``, or -1."""
    slot = np.int64(pid & np.uint64(ID_SLOT_MASK))
    if slot >= used:
        return -1
    meta = table[T_META, slot]
    key = np.uint64(FLAG_LIVE << META_FLAG_SHIFT) | (pid >> np.uint64(ID_SLOT_BITS))
    if meta & np.uint64((FLAG_LIVE << META_FLAG_SHIFT) | META_GEN_MASK) != key:
        return -1
    return slot


@kernel
def replay_deltas(table, used, arena, data, pos, end, limit, lsn, sealed):
    """Apply the delta records from ``pos`` on, checking each; (pos, lsn, deltas, status, sealed).

    Stops at a page, graph or binding record (``R_STOP``: Python applies it),
    at ``end`` (``R_DONE``), at a record that does not fit the state
    (``R_BAD`` at ``pos``: a wrong LSN, epoch, page, size or offset), or at one that is not
    well formed within ``data[:limit]`` (``R_MALFORMED``): so a replay needs no pass of its own
    to check the records first. ``sealed`` is where the last commit record seen ends.
    """
    applied = 0
    # records are 8-aligned: read header words and sparse offsets through wide views
    words = as_words(data[: data.size & ~7])
    halves = as_halves(data[: data.size & ~7])
    while pos < end:
        if limit - pos < REC_HEADER:
            return pos, lsn, applied, R_MALFORMED, sealed
        w0 = words[pos >> 3]
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        rtype = np.int64((w0 >> np.uint64(32)) & np.uint64(0xFF))
        if length < REC_HEADER or length & 7 or length > limit - pos or rtype < 1 or rtype > _MAX_TYPE:
            return pos, lsn, applied, R_MALFORMED, sealed
        w = pos >> 3
        if rtype == REC_COMMIT:
            if words[w + 1] != np.uint64(lsn):
                return pos, lsn, applied, R_BAD, sealed
            pos += length
            sealed = pos
            continue
        if rtype != REC_DELTA:
            return pos, lsn, applied, R_STOP, sealed
        enc = np.int64((w0 >> np.uint64(40)) & np.uint64(0xFF))
        ncauses = np.int64(w0 >> np.uint64(48))
        slot = _live_slot(table, used, words[w + 2])
        if words[w + 1] != np.uint64(lsn + 1) or slot < 0:
            return pos, lsn, applied, R_BAD, sealed
        size = np.int64(table[T_SIZE, slot])
        count = words[w + 4]
        if words[w + 3] != table[T_EPOCH, slot] + np.uint64(1) or words[w + 5] != np.uint64(size):
            return pos, lsn, applied, R_BAD, sealed
        # the epoch moves before any byte is written: if the record then proves bad, the
        # state is thrown away, and the pool's reset zeroes pages whose epoch moved
        table[T_EPOCH, slot] += np.uint64(1)
        off = np.int64(table[T_OFFSET, slot])
        body = pos + REC_HEADER
        if enc == ENC_SPARSE:
            if count > np.uint64(length):
                return pos, lsn, applied, R_BAD, sealed
            n = np.int64(count)
            vals = body + 4 * n
            if ((vals + n + 7) & ~7) + 8 * ncauses != pos + length:
                return pos, lsn, applied, R_BAD, sealed
            # a bad offset stops replay mid-record: the state being built is thrown away then
            uo, uv, uh, us = np.uint64(off), np.uint64(vals), np.uint64(body >> 2), np.uint64(size)
            for j in range(np.uint64(n)):  # unsigned: no wrap-around check per write
                i = np.uint64(halves[uh + j])
                if i >= us:
                    return pos, lsn, applied, R_BAD, sealed
                arena[uo + i] = data[uv + j]
        elif enc == ENC_DENSE:
            if count != np.uint64(size):
                return pos, lsn, applied, R_BAD, sealed
            nmask = (size + 7) >> 3
            if nmask > length:
                return pos, lsn, applied, R_BAD, sealed
            m = 0
            for k in range(nmask):
                bits = data[body + k]
                while bits:
                    m += 1
                    bits &= bits - np.uint8(1)
            if size & 7 and data[body + nmask - 1] >> np.uint8(size & 7):
                return pos, lsn, applied, R_BAD, sealed  # mask bits past the page's end
            if ((body + nmask + m + 7) & ~7) + 8 * ncauses != pos + length:
                return pos, lsn, applied, R_BAD, sealed
            p = body + nmask
            for k in range(nmask):
                bits = data[body + k]
                b = 0
                while bits:
                    if bits & np.uint8(1):
                        arena[off + 8 * k + b] = data[p]
                        p += 1
                    bits >>= np.uint8(1)
                    b += 1
        else:
            return pos, lsn, applied, R_BAD, sealed
        cz = (pos + length) >> 3
        for j in range(cz - ncauses, cz):
            cause = words[j]
            if cause == np.uint64(0) or cause > np.uint64(lsn):
                return pos, lsn, applied, R_BAD, sealed
        lsn += 1
        applied += 1
        pos += length
    return pos, lsn, applied, R_DONE, sealed


@kernel
def copy_pages(arena, offsets, sizes, data, into_arena):
    """Copy pages (arena ``offsets``, ``sizes``) side by side into ``data``, or back from it.

    By address: a slice assignment here compiled numba's shape-mismatch message, 2 of the first
    checkpoint's 2.3 s of compile. ``data`` is checked to hold every page before anything moves.
    """
    total = 0
    for i in range(sizes.size):
        total += np.int64(sizes[i])
    if total > data.size:
        raise ValueError("copy_pages: data is shorter than the pages")
    pages = np.int64(arena.ctypes.data)
    at = np.int64(data.ctypes.data)
    for i in range(offsets.size):
        n = np.int64(sizes[i])
        o = pages + np.int64(offsets[i])
        if into_arena:
            memcpy(o, at, n)
        else:
            memcpy(at, o, n)
        at += n
    return total


@kernel
def count_records(data, start, end, counts, nbytes):
    """Per record type, how many records and bytes ``data[start:end]`` holds (checked records)."""
    pos = start
    while pos < end:
        w0 = _u64(data, pos)
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        rtype = np.int64((w0 >> np.uint64(32)) & np.uint64(0xFF))
        counts[rtype] += 1
        nbytes[rtype] += length
        pos += length
