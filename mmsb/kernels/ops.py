"""Built-in recompute ops: a child's bytes from its parents', element-wise.

Parents and child are viewed as one dtype (``DTYPES``); integer ops wrap
around. The semiring ops take one weight per parent edge: tropical min-plus
(``min_p(parent_p + w_p)``) and boolean or-and (``any_p(parent_p and w_p)``,
bytes read as booleans, 0 or 1).
"""

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)

from .._layout import OP_AND, OP_MAX, OP_MIN, OP_MINPLUS, OP_OR, OP_ORAND, OP_PASSTHROUGH, OP_SUM, OP_XOR


@njit(inline="always", **_JIT)
def _fold(op, acc, x, w, first):
    """One parent folded into the accumulator, element-wise (typed views)."""
    if op == OP_PASSTHROUGH:
        acc[:] = x
    elif op == OP_MINPLUS:
        for j in range(acc.size):
            v = x[j] + w
            if first or v < acc[j]:
                acc[j] = v
    elif first:
        if op == OP_ORAND:
            for j in range(acc.size):
                acc[j] = 1 if (x[j] != 0 and w != 0) else 0
        else:
            acc[:] = x
    elif op == OP_SUM:
        for j in range(acc.size):
            acc[j] = acc[j] + x[j]
    elif op == OP_MIN:
        for j in range(acc.size):
            if x[j] < acc[j]:
                acc[j] = x[j]
    elif op == OP_MAX:
        for j in range(acc.size):
            if x[j] > acc[j]:
                acc[j] = x[j]
    else:  # OP_ORAND
        for j in range(acc.size):
            if x[j] != 0 and w != 0:
                acc[j] = 1


@njit(inline="always", **_JIT)
def _fold_bits(op, acc, x):
    if op == OP_AND:
        for j in range(acc.size):
            acc[j] &= x[j]
    elif op == OP_OR:
        for j in range(acc.size):
            acc[j] |= x[j]
    else:
        for j in range(acc.size):
            acc[j] ^= x[j]


@njit(inline="always", **_JIT)
def _typed(op, dtype, out, arena, offsets, weights, n):
    acc = out[:n].view(dtype)
    for p in range(offsets.size):
        o = offsets[p]
        x = arena[o:o + n].view(dtype)
        _fold(op, acc, x, dtype(weights[p]), p == 0)


@njit(inline="always", **_JIT)
def _bitwise(op, out, arena, offsets, n):
    # bitwise ops act on the raw bytes, whatever the declared dtype
    acc = out[:n]
    for p in range(offsets.size):
        o = offsets[p]
        x = arena[o:o + n]
        if p == 0:
            acc[:] = x
        else:
            _fold_bits(op, acc, x)


@njit(**_JIT)
def recompute(op, dtype_code, out, arena, offsets, weights, n):
    """Write into ``out[:n]`` the op over the parents at arena ``offsets`` (all n bytes)."""
    if op == OP_AND or op == OP_OR or op == OP_XOR:
        _bitwise(op, out, arena, offsets, n)
    elif op == OP_PASSTHROUGH or dtype_code == 0:
        _typed(op, np.uint8, out, arena, offsets, weights, n)
    elif dtype_code == 1:
        _typed(op, np.int8, out, arena, offsets, weights, n)
    elif dtype_code == 2:
        _typed(op, np.uint16, out, arena, offsets, weights, n)
    elif dtype_code == 3:
        _typed(op, np.int16, out, arena, offsets, weights, n)
    elif dtype_code == 4:
        _typed(op, np.uint32, out, arena, offsets, weights, n)
    elif dtype_code == 5:
        _typed(op, np.int32, out, arena, offsets, weights, n)
    elif dtype_code == 6:
        _typed(op, np.uint64, out, arena, offsets, weights, n)
    elif dtype_code == 7:
        _typed(op, np.int64, out, arena, offsets, weights, n)
    elif dtype_code == 8:
        _typed(op, np.float32, out, arena, offsets, weights, n)
    else:
        _typed(op, np.float64, out, arena, offsets, weights, n)
