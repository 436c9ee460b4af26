"""Writing log records into a byte buffer (layout in ``mmsb._layout``)."""

import numpy as np
from numba import njit

from .._layout import ENC_DENSE, ENC_SPARSE, REC_DELTA, REC_HEADER

_JIT = dict(cache=True, nogil=True)


@njit(inline="always", **_JIT)
def pad8(n):
    return (n + 7) & ~7


@njit(inline="always", **_JIT)
def write_header(buf64, pos, length, rtype, encoding, lsn, page_id, epoch, count, size):
    w = pos >> 3
    buf64[w] = np.uint64(length) | (np.uint64(rtype) << np.uint64(32)) | (
        np.uint64(encoding) << np.uint64(40)
    )
    buf64[w + 1] = np.uint64(lsn)
    buf64[w + 2] = np.uint64(page_id)
    buf64[w + 3] = np.uint64(epoch)
    buf64[w + 4] = np.uint64(count)
    buf64[w + 5] = np.uint64(size)


@njit(inline="always", **_JIT)
def zero_tail(buf, start, end):
    for k in range(start, end):
        buf[k] = 0


@njit(**_JIT)
def write_sparse(buf, buf32, buf64, pos, lsn, page_id, epoch, size, indices, values, lo, hi):
    """Append a sparse delta record of entries [lo, hi); return the new end."""
    n = hi - lo
    body = REC_HEADER + 5 * n
    length = pad8(body)
    write_header(buf64, pos, length, REC_DELTA, ENC_SPARSE, lsn, page_id, epoch, n, size)
    base32 = (pos + REC_HEADER) >> 2
    for j in range(n):
        buf32[base32 + j] = indices[lo + j]
    vb = pos + REC_HEADER + 4 * n
    for j in range(n):
        buf[vb + j] = values[lo + j]
    zero_tail(buf, pos + body, pos + length)
    return pos + length


@njit(**_JIT)
def write_dense(buf, buf64, pos, lsn, page_id, epoch, mask, payload, n):
    """Append a dense delta record (bitmask + masked payload); return the new end."""
    nmask = (n + 7) >> 3
    mb = pos + REC_HEADER
    pb = mb + nmask
    m = 0
    for k in range(nmask):
        bits = 0
        for b in range(8):
            j = 8 * k + b
            if j < n and mask[j]:
                bits |= 1 << b
                buf[pb + m] = payload[j]
                m += 1
        buf[mb + k] = bits
    body = REC_HEADER + nmask + m
    length = pad8(body)
    write_header(buf64, pos, length, REC_DELTA, ENC_DENSE, lsn, page_id, epoch, n, n)
    zero_tail(buf, pos + body, pos + length)
    return pos + length
