"""CRC32C (Castagnoli), the checksum of log frames and checkpoint sections.

Slicing-by-8 over eight 256-entry tables: eight bytes per step, no per-byte
Python, and the same values as the ``crc32c`` package (the tests check). It
runs inside the kernels that frame and scan logs, where calling a C library
per frame would mean a Python call per frame.
"""

import numpy as np

from ._jit import as_words, kernel

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_tables() -> np.ndarray:
    t = np.zeros((8, 256), np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        t[0, i] = c
    for k in range(1, 8):
        prev = t[k - 1]
        t[k] = (prev >> 8) ^ t[0, prev & 0xFF]
    return t


TABLES = _make_tables()


@kernel
def crc32c(data, start, stop, crc=0):
    """CRC32C of ``data[start:stop]`` (uint8), continuing from ``crc``."""
    t = TABLES
    c = np.uint32(crc) ^ np.uint32(0xFFFFFFFF)
    i = start
    # unaligned head, then 8 bytes a step read as one little-endian u64
    while i < stop and i & 7:
        c = t[0, (c ^ data[i]) & 0xFF] ^ (c >> np.uint32(8))
        i += 1
    words = (stop - i) >> 3
    if words > 0:
        w64 = as_words(data[i:i + words * 8])
        for k in range(words):
            w = w64[k]
            lo = np.uint32(w & 0xFFFFFFFF) ^ c
            hi = np.uint32(w >> np.uint64(32))
            c = (t[7, lo & 0xFF] ^ t[6, (lo >> np.uint32(8)) & 0xFF] ^ t[5, (lo >> np.uint32(16)) & 0xFF]
                 ^ t[4, lo >> np.uint32(24)] ^ t[3, hi & 0xFF] ^ t[2, (hi >> np.uint32(8)) & 0xFF]
                 ^ t[1, (hi >> np.uint32(16)) & 0xFF] ^ t[0, hi >> np.uint32(24)])
        i += words * 8
    while i < stop:
        c = t[0, (c ^ data[i]) & 0xFF] ^ (c >> np.uint32(8))
        i += 1
    return c ^ np.uint32(0xFFFFFFFF)
