"""Built-in recompute ops: a child's bytes from its parents', element-wise.

Parents and child are viewed as one dtype (``DTYPES``); integer ops wrap
around. The semiring ops take one weight per parent edge: tropical min-plus
(``min_p(parent_p + w_p)``) and boolean or-and (``any_p(parent_p and w_p)``,
bytes read as booleans, 0 or 1).
"""

import numpy as np

U = np.uint64

from .._layout import OP_AND, OP_MAX, OP_MIN, OP_MINPLUS, OP_OR, OP_ORAND, OP_PASSTHROUGH, OP_SUM, OP_XOR
from ._jit import as_words, at, inline, kernel, OPTIONS


@inline
def _copy(acc, x):
    for j in range(U(acc.size)):
        acc[j] = x[j]


@inline
def _fold(op, dtype, acc, x, w, first):
    """One parent folded into the accumulator, element-wise (typed views).

    Loops run over unsigned indices: numba's wrap-around check on signed ones
    keeps them from vectorizing.
    """
    n = U(acc.size)
    if op == OP_PASSTHROUGH:
        _copy(acc, x)
    elif op == OP_MINPLUS:
        for j in range(n):
            v = dtype(x[j] + w)  # in the dtype, so integers wrap before comparing
            if first or v < acc[j]:
                acc[j] = v
    elif first:
        if op == OP_ORAND:
            for j in range(n):
                acc[j] = 1 if (x[j] != 0 and w != 0) else 0
        else:
            _copy(acc, x)
    elif op == OP_SUM:
        for j in range(n):
            acc[j] = acc[j] + x[j]
    elif op == OP_MIN:
        for j in range(n):
            acc[j] = min(acc[j], x[j])
    elif op == OP_MAX:
        for j in range(n):
            acc[j] = max(acc[j], x[j])
    else:  # OP_ORAND
        if w != 0:
            for j in range(n):
                acc[j] = 1 if (acc[j] != 0 or x[j] != 0) else 0


@inline
def _fold_bits(op, acc, x):
    n = U(acc.size)
    if op == OP_AND:
        for j in range(n):
            acc[j] &= x[j]
    elif op == OP_OR:
        for j in range(n):
            acc[j] |= x[j]
    else:
        for j in range(n):
            acc[j] ^= x[j]


@inline
def _typed(op, dtype, out, arena, offsets, weights, n):
    acc = out[:n].view(dtype)
    for p in range(offsets.size):
        o = offsets[p]
        x = arena[o:o + U(n)].view(dtype)
        _fold(op, dtype, acc, x, dtype(weights[p]), p == 0)


@inline
def _bitwise(op, out, arena, offsets, n):
    # bitwise ops and copies act on raw bytes whatever the dtype: 8 at a time
    words = n >> 3
    acc = as_words(out[: words * 8])
    tail = out[words * 8:n]
    for p in range(offsets.size):
        o = offsets[p]
        x = as_words(arena[o:o + U(words * 8)])
        xt = arena[o + U(words * 8):o + U(n)]
        if p == 0 or op == OP_PASSTHROUGH:
            _copy(acc, x)
            _copy(tail, xt)
        else:
            _fold_bits(op, acc, x)
            _fold_bits(op, tail, xt)


@kernel
def recompute(op, dtype_code, out, arena, offsets, weights, n):
    """Write into ``out[:n]`` the op over the parents at arena ``offsets`` (all n bytes)."""
    if op == OP_AND or op == OP_OR or op == OP_XOR or op == OP_PASSTHROUGH:
        _bitwise(op, out, arena, offsets, n)
    elif dtype_code == 0:
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


# -- the cascade's entry: one C-callable recompute per dtype, compiled on first use ------------
#
# The cascade kernel calls the built-in ops through these addresses (``ctl[C_OPS + k]``, set when
# a page is bound to an op) instead of calling :func:`recompute`: compiled into the commit kernels,
# every op for all ten dtypes took 14 s of a first update's compile, for bindings most states
# never make. Each entry is compiled (or loaded from the cache) when the first binding needs it.

BITWISE = 10  # the entry of the ops that ignore the dtype (and, or, xor, passthrough)
ENTRIES = 11
_SIG_AT = "void(int64, int64, int64, int64, int64, int64, int64, int64, int64)"
_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64, np.float32,
           np.float64)
_entries: dict = {}


def _typed_entry(dtype):
    def recompute_typed(op, out, out_size, arena, arena_size, offsets, weights, k, n):
        _typed(op, dtype, at(out, (out_size,), np.uint8), at(arena, (arena_size,), np.uint8),
               at(offsets, (k,), np.uint64), at(weights, (k,), np.float64), n)
    return recompute_typed


def recompute_bitwise(op, out, out_size, arena, arena_size, offsets, weights, k, n):
    _bitwise(op, at(out, (out_size,), np.uint8), at(arena, (arena_size,), np.uint8), at(offsets, (k,), np.uint64),
             n)


def entry_index(op: int, dtype_code: int) -> int:
    """Which entry recomputes ``op`` on pages of dtype ``dtype_code``."""
    return BITWISE if op in (OP_AND, OP_OR, OP_XOR, OP_PASSTHROUGH) else dtype_code


def entry_address(index: int) -> int:
    """The address of entry ``index`` (compiled, or loaded from the cache, on first use); the
    compiled entry is kept for the life of the process, so the address stays valid."""
    fn = _entries.get(index)
    if fn is None:
        from numba import cfunc

        py = recompute_bitwise if index == BITWISE else _typed_entry(_DTYPES[index])
        fn = _entries[index] = cfunc(_SIG_AT, cache=OPTIONS["cache"])(py)
    return fn.address
