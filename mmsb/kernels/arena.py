"""Zeroing pages and page-table rows when a state is reset or a page deleted."""

import numpy as np

from .._layout import T_EPOCH, T_OFFSET, T_SIZE, TABLE_ROWS
from ._jit import as_words, kernel



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
