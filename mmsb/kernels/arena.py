"""Zeroing pages and page-table rows when a state is reset or a page deleted."""

import numpy as np

from .._layout import (
    L_DELTAS, L_MODE, L_SEALED, L_USED, L_WORDS, LOG_SEAL, R_ARENA, R_ARENA_SIZE, R_DELTAS, R_LAT, R_LOG, R_LSN,
    R_SLOW, R_TABLE, R_TABLE_CAP, R_TICK, T_EPOCH, T_OFFSET, T_SIZE, TABLE_ROWS,
)
from ._jit import as_words, at, kernel



U = np.uint64


@kernel
def zero_bytes(arena, off, n):
    """Zero ``n`` bytes from the 8-aligned ``off``."""
    off = U(off)
    n = U(n)
    nw = n >> U(3)
    a64 = as_words(arena[off:off + nw * U(8)])
    for w in range(nw):
        a64[w] = 0
    for j in range(off + nw * U(8), off + n):
        arena[j] = 0


@kernel
def reset_table(table, arena, used_rows, zero_pages):
    """Clear table rows [0, used_rows); with ``zero_pages``, zero every written page.

    A page that was never written (epoch 0) still holds the zeros it was made
    with, and deleted pages were zeroed when deleted, so only pages with a
    nonzero epoch need zeroing: the cost follows what the state touched.
    """
    for s in range(used_rows):
        if zero_pages and table[T_EPOCH, s] != 0:
            zero_bytes(arena, table[T_OFFSET, s], table[T_SIZE, s])
        for r in range(TABLE_ROWS):
            table[r, s] = 0


@kernel("void(int64[::1], int64, boolean, int64)", nogil=False)
def reset_core(regs, used_rows, zero_pages, log_ctr):
    """A stopped state's core back to a fresh one's, in one call (``mmsb.state._Core.reset``):
    table rows [0, used_rows) cleared (and written pages zeroed, with ``zero_pages``), the
    counters and latency histogram zeroed, and the log counters at ``log_ctr`` (the core's log
    buffer, which the registers point at again) those of an empty in-memory log.
    """
    table = at(regs[R_TABLE], (TABLE_ROWS, regs[R_TABLE_CAP]), np.uint64)
    arena = at(regs[R_ARENA], (regs[R_ARENA_SIZE],), np.uint8)
    reset_table(table, arena, used_rows, zero_pages)
    if regs[R_TICK] != 0:  # a write call ran (only those are timed into the histogram, and count here)
        lat = at(regs[R_LAT], (64,), np.int64)
        lat[:] = 0
    regs[R_LSN] = 0
    regs[R_DELTAS] = 0
    regs[R_TICK] = 0
    regs[R_SLOW] = 0
    regs[R_LOG] = log_ctr
    ctr = at(log_ctr, (L_WORDS,), np.int64)
    ctr[L_USED] = 0
    ctr[L_DELTAS] = 0
    ctr[L_SEALED] = 0
    ctr[L_MODE] = LOG_SEAL
