"""``create_page``'s common case in one call: a host page from the arena's bump pointer, its
page-table row, and its create and commit records.

Python keeps the allocators (free lists, chunks, table growth) and their counters; it hands
this kernel the counters, calls it only when no freed slot is waiting to be reused, and takes
the result back. Anything the kernel cannot finish here (a full chunk or table, a log that
seals through Python, records that do not fit) it leaves untouched for the general path.
"""

import numpy as np

from .._layout import (
    FLAG_LIVE, ID_SLOT_BITS, L_ADDR, L_CAP, L_MODE, L_SEALED, L_USED, L_WORDS, LOC_CPU, LOG_DROP, LOG_SEAL,
    META_FLAG_SHIFT, MIN_SLOT, R_BUMP, R_LOG, R_LSN, R_TABLE, R_TABLE_CAP, REC_COMMIT, REC_CREATE, REC_HEADER,
    T_META, T_OFFSET, T_SIZE, TABLE_ROWS,
)
from .records import U, write_header
from ._jit import as_words, at, kernel, wall_ns

_SIG = "int64(int64[::1], int64, int64, int64, int64, int64)"
_LIVE = FLAG_LIVE << META_FLAG_SHIFT
_REFUSED = -1


@kernel(_SIG, nogil=False)
def create_page(regs, size, bump, end, used, gen):
    """Page of ``size`` bytes (1 .. MAX_PAGE_SIZE) in table slot ``used`` (the high-water mark)
    with generation ``gen``, at the first slot of its size class from ``bump`` in a chunk that
    ends at ``end``: the same slot ``Arena.allocate`` gives when no freed slot of the class waits.

    Returns the page's id, the new bump pointer in ``regs[R_BUMP]``; or -1 with nothing changed.
    """
    step = np.int64(MIN_SLOT)
    while step < size:  # slot_class: the next power of two at least MIN_SLOT
        step <<= 1
    align = min(step, np.int64(4096)) - 1
    off = (bump + align) & ~align
    if off + step > end or used >= regs[R_TABLE_CAP]:
        return _REFUSED
    ctr = at(regs[R_LOG], (L_WORDS,), np.int64)
    mode = ctr[L_MODE]
    pos = ctr[L_USED]
    if mode != LOG_DROP and (mode != LOG_SEAL or pos != ctr[L_SEALED] or pos + 2 * REC_HEADER > ctr[L_CAP]):
        return _REFUSED  # a file log writes its records through Python
    table = at(regs[R_TABLE], (TABLE_ROWS, regs[R_TABLE_CAP]), np.uint64)
    table[T_OFFSET, used] = U(off)
    table[T_SIZE, used] = U(size)
    table[T_META, used] = U(gen) | U(_LIVE)
    pid = used | (gen << ID_SLOT_BITS)
    if mode == LOG_SEAL:
        lsn = regs[R_LSN]
        buf64 = as_words(at(ctr[L_ADDR], (ctr[L_CAP],), np.uint8))
        write_header(buf64, U(pos), REC_HEADER, REC_CREATE, 0, lsn, pid, size, 1, LOC_CPU)
        write_header(buf64, U(pos + REC_HEADER), REC_HEADER, REC_COMMIT, 0, lsn, wall_ns(), 0, 0, 0)
        ctr[L_USED] = pos + 2 * REC_HEADER
        ctr[L_SEALED] = pos + 2 * REC_HEADER
    regs[R_BUMP] = off + step
    return pid
