"""Writing log records into a byte buffer (layout in ``mmsb._layout``).

Positions inside kernels are unsigned: numba checks every signed index for
wrap-around (``a[-1]``), and that check alone kept these copy loops from
vectorizing (3-5x slower).
"""

import numpy as np

from .._layout import ENC_DENSE, ENC_SPARSE, REC_DELTA, REC_HEADER
from ._jit import as_bytes, as_words, inline, load64, store64

U = np.uint64
_HEADER = U(REC_HEADER)


_LOW = np.uint64(0x0101010101010101)
# multiplying the low bits of eight bytes by this gathers them, byte k's bit landing on bit 56 + k
_GATHER = np.uint64(0x0102040810204080)


@inline
def byte_flags(x):
    """0x01 in each byte of ``x`` that is nonzero, 0x00 elsewhere."""
    x |= x >> np.uint64(4)
    x |= x >> np.uint64(2)
    x |= x >> np.uint64(1)
    return x & _LOW


@inline
def pad8(n):
    return (n + U(7)) & ~U(7)


@inline
def write_header(buf64, pos, length, rtype, encoding, lsn, page_id, epoch, count, size):
    w = pos >> U(3)
    buf64[w] = U(length) | (U(rtype) << U(32)) | (U(encoding) << U(40))
    buf64[w + U(1)] = U(lsn)
    buf64[w + U(2)] = U(page_id)
    buf64[w + U(3)] = U(epoch)
    buf64[w + U(4)] = U(count)
    buf64[w + U(5)] = U(size)


@inline
def zero_tail(buf, start, end):
    for k in range(start, end):
        buf[k] = 0


@inline
def write_sparse(buf, buf32, buf64, pos, lsn, page_id, epoch, size, indices, values, lo, hi):
    """Append a sparse delta record of entries [lo, hi); return the new end (all uint64)."""
    n = hi - lo
    body = _HEADER + U(5) * n
    length = pad8(body)
    write_header(buf64, pos, length, REC_DELTA, ENC_SPARSE, lsn, page_id, epoch, n, size)
    base32 = (pos + _HEADER) >> U(2)
    for j in range(n):
        buf32[base32 + j] = indices[lo + j]
    vb = pos + _HEADER + U(4) * n
    # the values eight at a time (a word load and store each), then the last few and the padding
    src = np.int64(values.ctypes.data) + np.int64(lo)
    dst = np.int64(buf.ctypes.data) + np.int64(vb)
    whole = n & ~U(7)
    for k in range(U(0), whole, U(8)):
        store64(dst + np.int64(k), load64(src + np.int64(k)))
    for j in range(whole, n):
        buf[vb + j] = values[lo + j]
    zero_tail(buf, pos + body, pos + length)
    return pos + length


@inline
def write_dense(buf, buf64, pos, lsn, page_id, epoch, mask, payload, n):
    """Append a dense delta record (bitmask + masked payload); return the new end.

    Eight mask bytes at a time: all clear or all set are one test each (the common
    runs), only mixed words go byte by byte.
    """
    nmask = (n + U(7)) >> U(3)
    mb = pos + _HEADER
    pb = mb + nmask
    m = U(0)
    m8 = as_bytes(mask)
    nw = n >> U(3)
    m64 = as_words(m8[: nw * U(8)])
    p64 = as_words(payload[: nw * U(8)])
    at = np.int64(buf.ctypes.data)
    for w in range(nw):
        x = byte_flags(m64[w])
        j = U(8) * w
        if x == 0:
            buf[mb + w] = 0
        elif x == _LOW:
            buf[mb + w] = 0xFF
            store64(at + np.int64(pb + m), p64[w])
            m += U(8)
        else:
            buf[mb + w] = np.uint8((x * _GATHER) >> U(56))
            # branch-free compaction: write every byte, advance only past masked ones (random
            # masks mispredict a branch half the time). The stray bytes land at or after the
            # record's end, inside the room the caller reserved, and later writes or the zeroed
            # tail cover them.
            for b in range(8):
                buf[pb + m] = payload[j + U(b)]
                m += U((x >> U(8 * b)) & U(1))
    if nw < nmask:
        bits = 0
        for j in range(nw * U(8), n):
            if m8[j]:
                bits |= 1 << (j - nw * U(8))
                buf[pb + m] = payload[j]
                m += U(1)
        buf[mb + nw] = bits
    body = _HEADER + nmask + m
    length = pad8(body)
    write_header(buf64, pos, length, REC_DELTA, ENC_DENSE, lsn, page_id, epoch, n, n)
    zero_tail(buf, pos + body, pos + length)
    return pos + length
