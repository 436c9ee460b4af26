"""Provenance kernels: a by-page index of a log's delta records, and the walk up their causes.

The index is plain arrays (held by :class:`mmsb.log.history.HistoryIndex`):

- ``ent[3, capacity]`` (int64): per delta record, in log order, its page id (``E_PAGE``), LSN
  (``E_LSN``) and byte offset in the log (``E_OFF``). LSNs grow along the log, so the LSN row is
  sorted: a cause LSN finds its record at ``lsn - first LSN`` (logged LSNs are consecutive), by
  binary search where they are not.
- ``starts[slots + 1]``, ``order[nsorted]`` (int64): the first ``nsorted`` entries as CSR by
  page-table slot (a page id's low 32 bits), built by a counting sort, so a slot's entries are
  ``order[starts[slot]:starts[slot + 1]]`` in LSN order; pages that held the slot before (older
  generations) share the run and are told apart by their full id. Entries ``nsorted .. n`` (the
  tail, indexed since the last build) are searched linearly, which keeps an index update
  proportional to the new records rather than to the whole log.
- ``mark[capacity]`` (int32): a visit stamp per entry, so a walk needs no per-call visited set.

Words are read as uint64 and converted explicitly: numba turns mixed int64/uint64 arithmetic into
float64.
"""

import numpy as np

from .._layout import E_LSN, E_OFF, E_PAGE, FRAME_HEADER, ID_SLOT_MASK, REC_COMMIT, REC_DELTA, REC_HEADER
from ._jit import inline, kernel


# scan() reports damage as -1 - offset of the bad record
_LEN_MASK = np.uint64(0xFFFFFFFF)


@inline
def _header(words, pos, end):
    """(length, type) of the record at byte ``pos``, its bytes ending by ``end``; length -1 when
    it cannot be right (a delta record is a whole header at least)."""
    w0 = words[pos >> 3]
    length = np.int64(w0 & _LEN_MASK)
    rtype = np.int64((w0 >> np.uint64(32)) & np.uint64(0xFF))
    if length < 8 or length & 7 or pos + length > end or (rtype == REC_DELTA and length < REC_HEADER):
        return -1, rtype
    return length, rtype


@kernel
def retain_cut(words, pos, end, most):
    """Where a log may be cut so that records from there on stay: the furthest end of a commit in
    ``[pos, end)`` with at most ``most`` delta records before it.

    Returns ``(cut, deltas before cut, LSN of the commit that ends at cut)``; ``cut == pos``
    (LSN -1) when not even the first commit fits; a negative ``cut`` is ``-1 - offset`` of a
    record whose length cannot be right.
    """
    cut = pos
    dropped = 0
    lsn = -1
    n = 0
    while pos < end:
        length, rtype = _header(words, pos, end)
        if length < 0:
            return -1 - pos, 0, -1
        if rtype == REC_DELTA:
            n += 1
            if n > most:
                break
        elif rtype == REC_COMMIT:
            cut = pos + length
            dropped = n
            lsn = np.int64(words[(pos >> 3) + 1])
        pos += length
    return cut, dropped, lsn


@kernel
def scan(words, pos, end, ent, n):
    """Index the delta records in log bytes ``[pos, end)``, appending from entry ``n``.

    Returns ``(n, pos)``: entries now held and where the scan stopped. It stops short of ``end``
    when ``ent`` is full (grow it and call again from ``pos``); a negative ``pos`` is ``-1 -
    offset`` of a record whose length cannot be right. Records of any other type are skipped by
    their length, so record types added later need no change here.
    """
    cap = ent.shape[1]
    while pos < end:
        length, rtype = _header(words, pos, end)
        if length < 0:
            return n, -1 - pos
        if rtype == REC_DELTA:
            if n == cap:
                return n, pos
            w = pos >> 3
            ent[E_PAGE, n] = np.int64(words[w + 2])
            ent[E_LSN, n] = np.int64(words[w + 1])
            ent[E_OFF, n] = pos
            n += 1
        pos += length
    return n, pos


@kernel
def scan_file(disk, rec, fend, lpos, stop, ent, n, relocate):
    """Walk a log file's records (``disk``: the file as uint64 words) from log position ``lpos``
    to ``stop`` (a commit's end): the record at byte ``rec``, whose frame's payload ends at
    ``fend`` (``rec == fend``: ``rec`` is a frame header). Each delta record gets entry ``n``
    onwards with ``E_OFF`` = -1 - its file offset (entries for records in memory hold their log
    position, >= 0): appended, or with ``relocate`` only that offset rewritten (the entries of
    records that were in memory until a trim, in the same order).

    Returns ``(n, rec, fend, lpos)``, where to go on from; ``rec < 0`` is ``-1 -`` the file offset
    of a frame or record whose length cannot be right, or of the record that found ``ent`` full
    (give it room for ``(stop - lpos) // REC_HEADER`` more entries). The frames were written and
    synced by this process: their checksums are not checked again.
    """
    cap = ent.shape[1]
    size = np.int64(disk.size) << 3
    while lpos < stop:
        if rec == fend:  # a frame header
            if rec + FRAME_HEADER > size:
                return n, -1 - rec, fend, lpos
            plen = np.int64(disk[(rec >> 3) + 1])
            if plen <= 0 or plen & 7 or rec + FRAME_HEADER + plen > size:
                return n, -1 - rec, fend, lpos
            fend = rec + FRAME_HEADER + plen
            rec += FRAME_HEADER
            continue
        length, rtype = _header(disk, rec, fend)
        if length < 0:
            return n, -1 - rec, fend, lpos
        if rtype == REC_DELTA:
            if n == cap:
                return n, -1 - rec, fend, lpos
            if not relocate:
                w = rec >> 3
                ent[E_PAGE, n] = np.int64(disk[w + 2])
                ent[E_LSN, n] = np.int64(disk[w + 1])
            ent[E_OFF, n] = -1 - rec
            n += 1
        rec += length
        lpos += length
    return n, rec, fend, lpos


@inline
def _word(words, disk, off, k):
    """Word ``k`` of the record at ``off``: a log position in ``words``, or (< 0) ``-1 -`` a file
    offset in ``disk``."""
    if off >= 0:
        return words[(off >> 3) + k]
    return disk[((-1 - off) >> 3) + k]


@kernel
def by_slot(ent, n):
    """CSR of entries ``0 .. n`` by page-table slot: ``(starts, order)``, each slot's entries in
    log (= LSN) order. A counting sort: linear, where a comparison sort of 1 M ids took ~100 ms."""
    nslots = 0
    for i in range(n):
        nslots = max(nslots, (ent[E_PAGE, i] & ID_SLOT_MASK) + 1)
    starts = np.zeros(nslots + 1, np.int64)
    for i in range(n):
        starts[(ent[E_PAGE, i] & ID_SLOT_MASK) + 1] += 1
    for s in range(nslots):
        starts[s + 1] += starts[s]
    fill = starts[:nslots].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        s = ent[E_PAGE, i] & ID_SLOT_MASK
        order[fill[s]] = i
        fill[s] += 1
    return starts, order


@inline
def _push(out, m, e, hop):
    if m == out.shape[1]:
        bigger = np.empty((2, 2 * m), np.int64)
        bigger[:, :m] = out
        out = bigger
    out[0, m] = e
    out[1, m] = hop
    return out


@kernel
def query(words, disk, ent, n, starts, order, nsorted, mark, stamp, page, depth, last):
    """The provenance of ``page``: its delta entries (the newest ``last`` of them; all when
    ``last < 0``) at hop 0, then breadth first up their records' cause LSNs for at most
    ``depth`` hops, each entry once, at its smallest hop.

    Records are read from ``words`` (the log in memory, by log position) or, for entries whose
    offset is negative, from ``disk`` (the log file; see :func:`scan_file`).

    Returns ``(rows, truncated)``: ``rows[4, m]`` holds per delta found, in LSN order, its
    offset (as its entry holds it), record length, hop count and LSN; ``truncated`` is 1 when ``last`` left out older
    deltas of the page or a delta at the last hop has a cause not followed.
    """
    slot = page & ID_SLOT_MASK
    lo = hi = 0
    if slot + 1 < starts.size:
        lo, hi = starts[slot], starts[slot + 1]
    total = 0
    for j in range(lo, hi):
        if ent[E_PAGE, order[j]] == page:
            total += 1
    for i in range(nsorted, n):
        if ent[E_PAGE, i] == page:
            total += 1
    skip = 0 if last < 0 or last >= total else total - last
    truncated = skip > 0
    out = np.empty((2, max(16, 2 * (total - skip))), np.int64)
    m = 0
    seen = 0
    # the CSR holds older entries than the tail, so this is LSN order
    for j in range(lo, hi):
        e = order[j]
        if ent[E_PAGE, e] == page:
            if seen >= skip:
                mark[e] = stamp
                out = _push(out, m, e, 0)
                m += 1
            seen += 1
    for i in range(nsorted, n):
        if ent[E_PAGE, i] == page:
            if seen >= skip:
                mark[i] = stamp
                out = _push(out, m, i, 0)
                m += 1
            seen += 1
    lsns = ent[E_LSN, :n]
    first = lsns[0] if n else 0
    a, b, hop = 0, m, 0
    while a < b:
        hop += 1
        for f in range(a, b):
            off = ent[E_OFF, out[0, f]]
            w0 = _word(words, disk, off, 0)
            nc = np.int64(w0 >> np.uint64(48))
            base = (np.int64(w0 & _LEN_MASK) >> 3) - nc  # the causes end the record
            for q in range(nc):
                lsn = np.int64(_word(words, disk, off, base + q))
                # logged LSNs are consecutive (a delta that changes nothing takes none, a
                # rollback hands its LSNs out again), so one read finds it; binary search when
                # some log breaks that (a cold search over 1 M LSNs costs ~1 µs in cache misses)
                i = lsn - first
                if i < 0 or i >= n or lsns[i] != lsn:
                    i = np.searchsorted(lsns, lsn)
                if i < n and lsns[i] == lsn and mark[i] != stamp:
                    if hop > depth:
                        truncated = True
                        break
                    mark[i] = stamp
                    out = _push(out, m, i, hop)
                    m += 1
            if hop > depth and truncated:
                break
        if hop > depth:
            break
        a, b = b, m
    srt = np.argsort(out[0, :m])
    rows = np.empty((4, m), np.int64)
    for k in range(m):
        e = out[0, srt[k]]
        off = ent[E_OFF, e]
        rows[0, k] = off
        rows[1, k] = np.int64(_word(words, disk, off, 0) & _LEN_MASK)
        rows[2, k] = out[1, srt[k]]
        rows[3, k] = ent[E_LSN, e]
    return rows, truncated


@kernel
def gather(words, disk, rows):
    """The records ``rows`` names (row 0 offset, row 1 length, as :func:`query` returns; ``words``
    and ``disk`` as there) copied side by side into one new array; row 0 is rewritten to each
    record's start in it (bytes).

    Records are whole words, and a word loop copies several times faster than a byte loop.
    """
    m = rows.shape[1]
    total = 0
    for k in range(m):
        total += rows[1, k] >> 3
    out = np.empty(total, np.uint64)
    pos = 0
    for k in range(m):
        off, n = rows[0, k], rows[1, k] >> 3
        for j in range(n):
            out[pos + j] = _word(words, disk, off, j)
        rows[0, k] = pos << 3
        pos += n
    return out
