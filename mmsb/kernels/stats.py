"""Counts for ``State.stats()`` read back from the log, so commits pay nothing for them."""

import numpy as np

from .._layout import ENC_SPARSE, REC_DELTA, REC_HEADER
from ._jit import as_words, kernel

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


@kernel
def delta_bytes(buf, end):
    """Byte writes carried by the delta records in ``buf[:end]``; -1 - offset if a record is malformed.

    A sparse record carries one write per entry (``w4``); a dense one, one per
    set bit of its mask (``w4`` is the page size, the mask ``ceil(w4 / 8)`` bytes).
    Records of other types are stepped over by their length.
    """
    b64 = as_words(buf)
    pos = np.int64(0)
    total = np.int64(0)
    while pos < end:
        w0 = b64[pos >> 3]
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        if length < REC_HEADER or length & 7 or pos + length > end:
            return -1 - pos
        if (w0 >> np.uint64(32)) & np.uint64(0xFF) == REC_DELTA:
            count = np.int64(b64[(pos >> 3) + 4])
            if (w0 >> np.uint64(40)) & np.uint64(0xFF) == ENC_SPARSE:
                total += count
            else:
                lo = pos + REC_HEADER
                for j in range(lo, lo + ((count + 7) >> 3)):
                    total += _POPCOUNT[buf[j]]
        pos += length
    return total
