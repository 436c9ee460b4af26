"""CRC32C (Castagnoli), the checksum of log frames and checkpoint sections.

Two kernels with the same values as the ``crc32c`` package (the tests check
both): on x86-64 with SSE4.2, the processor's ``crc32`` instruction, eight
bytes per instruction (about 5x the tables here); elsewhere, slicing-by-8 over
eight 256-entry tables. ``crc32c`` is whichever this machine runs. They run
inside the kernels that frame and scan logs, where calling a C library per
frame would mean a Python call per frame.
"""

import platform

import numpy as np
from llvmlite import ir
from llvmlite.binding import get_host_cpu_features
from numba import types
from numba.extending import intrinsic

from ._jit import as_words, inline, kernel

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


@inline
def _crc_bytes(c, data, i, stop):
    """``c`` continued over the bytes ``data[i:stop]``, one at a time."""
    t = TABLES
    while i < stop:
        c = t[0, (c ^ data[i]) & 0xFF] ^ (c >> np.uint32(8))
        i += 1
    return c


@kernel
def crc32c_tables(data, start, stop, crc=0):
    """CRC32C of ``data[start:stop]`` (uint8), continuing from ``crc``."""
    t = TABLES
    # unaligned head, then 8 bytes a step read as one little-endian u64
    i = min(stop, (start + 7) & ~7)
    c = _crc_bytes(np.uint32(crc) ^ np.uint32(0xFFFFFFFF), data, start, i)
    words = max(stop - i, 0) >> 3
    w64 = as_words(data[i:i + words * 8])
    for k in range(words):
        w = w64[k]
        lo = np.uint32(w & 0xFFFFFFFF) ^ c
        hi = np.uint32(w >> np.uint64(32))
        c = (t[7, lo & 0xFF] ^ t[6, (lo >> np.uint32(8)) & 0xFF] ^ t[5, (lo >> np.uint32(16)) & 0xFF]
             ^ t[4, lo >> np.uint32(24)] ^ t[3, hi & 0xFF] ^ t[2, (hi >> np.uint32(8)) & 0xFF]
             ^ t[1, (hi >> np.uint32(16)) & 0xFF] ^ t[0, hi >> np.uint32(24)])
    return _crc_bytes(c, data, i + words * 8, stop) ^ np.uint32(0xFFFFFFFF)


@intrinsic
def _crc_step(typingctx, crc, word):
    """The SSE4.2 ``crc32`` of the uint64 ``word`` into ``crc`` (uint64, its low half the CRC)."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.x86.sse42.crc32.64.64", fnty=ir.FunctionType(i64, [i64, i64]))
        return builder.call(fn, list(args))

    return sig, codegen


@kernel
def crc32c_hw(data, start, stop, crc=0):
    """:func:`crc32c_tables` through the processor's ``crc32`` instruction (x86-64, SSE4.2)."""
    i = min(stop, (start + 7) & ~7)
    c = _crc_bytes(np.uint32(crc) ^ np.uint32(0xFFFFFFFF), data, start, i)
    words = max(stop - i, 0) >> 3
    w64 = as_words(data[i:i + words * 8])
    c64 = np.uint64(c)
    for k in range(words):
        c64 = _crc_step(c64, w64[k])
    c = np.uint32(c64 & np.uint64(0xFFFFFFFF))
    return _crc_bytes(c, data, i + words * 8, stop) ^ np.uint32(0xFFFFFFFF)


def _has_crc_instruction() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return bool(get_host_cpu_features().get("sse4.2"))
    except RuntimeError:  # llvmlite could not read the features: take the portable path
        return False


HARDWARE = _has_crc_instruction()
crc32c = crc32c_hw if HARDWARE else crc32c_tables
