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


def _apply(op: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``op`` (a GF(2) operator on a 32-bit CRC register: the images of its 32 bits) applied to ``values``."""
    bits = (values[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    return np.bitwise_xor.reduce(np.where(bits != 0, op[None, :], np.uint64(0)), axis=1)


def _zeros_tables(nbytes: int) -> np.ndarray:
    """Four 256-entry tables that run a raw CRC register over ``nbytes`` zero bytes: the register
    ``c`` becomes ``t[0, c & 255] ^ t[1, c >> 8 & 255] ^ t[2, c >> 16 & 255] ^ t[3, c >> 24]``.
    The operator for one zero byte, raised to the ``nbytes``-th power by squaring."""
    basis = np.uint64(1) << np.arange(32, dtype=np.uint64)
    byte = (basis >> np.uint64(8)) ^ TABLES[0][(basis & np.uint64(0xFF)).astype(np.intp)].astype(np.uint64)
    op, power, n = basis.copy(), byte, nbytes
    while n:
        if n & 1:
            op = _apply(power, op)
        power = _apply(power, power)
        n >>= 1
    b = np.arange(256, dtype=np.uint64)
    return np.stack([_apply(op, b << np.uint64(8 * k)) for k in range(4)]).astype(np.uint32)


# Three runs of the crc32 instruction side by side over three lanes of a block, then joined: the
# instruction takes three cycles and can start one a cycle, so one run alone uses a third of it.
# A lane's register is carried over the next lane's length by these tables (zlib's crc32_combine).
LONG_LANE, SHORT_LANE = 4096, 256
LONG_SHIFT, SHORT_SHIFT = _zeros_tables(LONG_LANE), _zeros_tables(SHORT_LANE)


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


@inline
def _shift(t, c):
    """The raw register ``c`` run over the zero bytes tables ``t`` stand for."""
    return np.uint64(t[0, c & np.uint64(0xFF)] ^ t[1, (c >> np.uint64(8)) & np.uint64(0xFF)]
                     ^ t[2, (c >> np.uint64(16)) & np.uint64(0xFF)] ^ t[3, (c >> np.uint64(24)) & np.uint64(0xFF)])


@inline
def _crc_lanes(c, w64, k, words, t, lane):
    """``c`` continued over the words ``w64[k:]`` in blocks of three lanes of ``lane`` words, while
    whole blocks fit; (register, next word)."""
    while words - k >= 3 * lane:
        b = np.uint64(0)
        d = np.uint64(0)
        for j in range(k, k + lane):
            c = _crc_step(c, w64[j])
            b = _crc_step(b, w64[j + lane])
            d = _crc_step(d, w64[j + 2 * lane])
        c = _shift(t, _shift(t, c) ^ b) ^ d
        k += 3 * lane
    return c, k


@kernel
def crc32c_hw(data, start, stop, crc=0):
    """:func:`crc32c_tables` through the processor's ``crc32`` instruction (x86-64, SSE4.2), three
    lanes at a time over long runs."""
    i = min(stop, (start + 7) & ~7)
    c = _crc_bytes(np.uint32(crc) ^ np.uint32(0xFFFFFFFF), data, start, i)
    words = max(stop - i, 0) >> 3
    w64 = as_words(data[i:i + words * 8])
    c64, k = _crc_lanes(np.uint64(c), w64, 0, words, LONG_SHIFT, LONG_LANE >> 3)
    c64, k = _crc_lanes(c64, w64, k, words, SHORT_SHIFT, SHORT_LANE >> 3)
    for j in range(k, words):
        c64 = _crc_step(c64, w64[j])
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
