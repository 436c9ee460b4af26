"""``numba.cuda`` kernels: the device twins of :mod:`mmsb.kernels` (apply, diff, recompute).

They take plain device arrays and offsets, never Python objects, and loop
grid-stride, so any launch size is correct. Results must match the CPU kernels
byte for byte (the tests compare them under the simulator): integer ops wrap
in the page's dtype (a value is stored before it is compared), and ``min``/
``max`` keep numba's CPU rule for NaN and signed zeros (``b if b < a else a``).

Importing this module imports ``numba.cuda``; :mod:`mmsb.gpu.arena` does so
only once a device page exists.
"""

from __future__ import annotations

from .._layout import (
    OP_AND,
    OP_MAX,
    OP_MIN,
    OP_MINPLUS,
    OP_OR,
    OP_ORAND,
    OP_PASSTHROUGH,
    OP_SUM,
    OP_XOR,
)
from .device import cuda as _cuda_module
from .device import simulated

cuda = _cuda_module()
# cache=True keeps compiled kernels on disk next to the CPU ones; the simulator has nothing to cache
_JIT = {} if simulated() else {"cache": True}


@cuda.jit(device=True, **_JIT)
def _diff_word(arena, off, src, soff, bits, w, n):
    """Bytes 8w .. 8w+7 of the page take ``src``'s; mask byte w gets a bit per byte that changed."""
    b = 0
    for k in range(8):
        j = 8 * w + k
        if j < n:
            new = src[soff + j]
            if arena[off + j] != new:
                arena[off + j] = new
                b |= 1 << k
    bits[w] = b


@cuda.jit(**_JIT)
def diff_into(arena, off, src, soff, bits, n):
    """Page ``arena[off:off+n]`` takes ``src[soff:soff+n]``; ``bits`` gets one bit per byte that changed.

    A thread owns 8 bytes, so it writes one whole mask byte (bit k: byte 8w + k).
    """
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for w in range(start, (n + 7) // 8, stride):
        _diff_word(arena, off, src, soff, bits, w, n)


@cuda.jit(**_JIT)
def gather(src, idx, out):
    """``out[i] = src[idx[i]]``: the bytes that changed, for the log."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, idx.size, stride):
        out[i] = src[idx[i]]


@cuda.jit(**_JIT)
def apply_dense(arena, off, mask, payload, n, flag):
    """Write ``payload[j]`` where ``mask[j]``; ``flag[0] = 1`` if a byte changed (else untouched)."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for j in range(start, n, stride):
        if mask[j] != 0:
            v = payload[j]
            if arena[off + j] != v:
                arena[off + j] = v
                flag[0] = 1


@cuda.jit(**_JIT)
def apply_sparse_groups(arena, offs, order, groups, starts, indices, values, repeated, old, changed):
    """Sparse deltas, one block per page: the page's deltas in batch order, each delta's
    entries spread over the block's threads.

    Whether a delta changed its page is its net effect (a byte written and written back
    is no change): the bytes at its offsets before (``old``) against after. Offsets that
    repeat within a delta (``repeated[i]``) are written by one thread, in order, so the
    last entry wins as on the CPU. ``changed[i]`` must start at 0.
    """
    g = cuda.blockIdx.x
    t, nt = cuda.threadIdx.x, cuda.blockDim.x
    off = offs[g]
    for k in range(groups[g], groups[g + 1]):
        i = order[k]
        lo, hi = starts[i], starts[i + 1]
        for j in range(lo + t, hi, nt):
            old[j] = arena[off + indices[j]]
        cuda.syncthreads()
        if repeated[i] != 0:
            if t == 0:
                for j in range(lo, hi):
                    arena[off + indices[j]] = values[j]
        else:
            for j in range(lo + t, hi, nt):
                arena[off + indices[j]] = values[j]
        cuda.syncthreads()
        for j in range(lo + t, hi, nt):
            if arena[off + indices[j]] != old[j]:
                changed[i] = 1
        cuda.syncthreads()


@cuda.jit(device=True, **_JIT)
def _fold_bytes(arena, stage, sel, offs, out, j, op):
    acc = arena[offs[0] + j] if sel[0] == 0 else stage[offs[0] + j]
    for p in range(1, offs.size):
        x = arena[offs[p] + j] if sel[p] == 0 else stage[offs[p] + j]
        if op == OP_AND:
            acc &= x
        elif op == OP_OR:
            acc |= x
        elif op == OP_XOR:
            acc ^= x
        elif op == OP_PASSTHROUGH:
            acc = x
    out[j] = acc


@cuda.jit(device=True, **_JIT)
def _fold_typed(arena, stage, sel, offs, weights, out, j, op):
    # out is the accumulator, as on the CPU, so every step wraps in the dtype
    for p in range(offs.size):
        x = arena[offs[p] + j] if sel[p] == 0 else stage[offs[p] + j]
        w = weights[p]
        if op == OP_MINPLUS:
            a = out[j]
            out[j] = x + w  # stored first: the sum wraps in the dtype before it is compared
            if p != 0 and not out[j] < a:
                out[j] = a
        elif op == OP_ORAND:
            if p == 0:
                out[j] = 1 if (x != 0 and w != 0) else 0
            elif w != 0:
                out[j] = 1 if (out[j] != 0 or x != 0) else 0
        elif p == 0:
            out[j] = x
        elif op == OP_SUM:
            out[j] = out[j] + x
        elif op == OP_MIN:
            a = out[j]
            out[j] = x if x < a else a  # noqa: FURB136 - min() may not keep numba's NaN rule on a device
        elif op == OP_MAX:
            a = out[j]
            out[j] = x if x > a else a  # noqa: FURB136 - likewise


@cuda.jit(**_JIT)
def recompute_bytes(arena, stage, sel, offs, out, op, off, bits, n):
    """A bitwise op or copy over raw bytes, diffed into the page in the same launch.

    Parent p is at byte ``offs[p]`` of the arena (``sel[p] == 0``) or of the staging buffer
    (``sel[p] == 1``). The result goes to ``out`` and into page ``arena[off:off+n]``;
    ``bits`` as in :func:`diff_into`. A thread owns 8 bytes of result and page.
    """
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for w in range(start, (n + 7) // 8, stride):
        for j in range(8 * w, min(8 * w + 8, n)):
            _fold_bytes(arena, stage, sel, offs, out, j, op)
        _diff_word(arena, off, out, 0, bits, w, n)


@cuda.jit(**_JIT)
def recompute_typed(arena_t, stage_t, sel, offs, weights, out_t, per, op, arena, out, off, bits, n):
    """An element-wise op over a dtype view, diffed into the page in the same launch.

    ``arena_t``, ``stage_t``, ``out_t`` and ``weights`` are views in the page dtype (``offs``
    in elements), ``arena`` and ``out`` the same memory as bytes; ``per`` elements fill 8 bytes.
    """
    start, stride = cuda.grid(1), cuda.gridsize(1)
    nelem = n // (8 // per)
    for w in range(start, (n + 7) // 8, stride):
        for e in range(per * w, min(per * w + per, nelem)):
            _fold_typed(arena_t, stage_t, sel, offs, weights, out_t, e, op)
        _diff_word(arena, off, out, 0, bits, w, n)


# launch shapes: a grid-stride loop is correct for any; the simulator runs each thread
# as Python, so it gets two small blocks (still more than one, so striding across blocks is tested)
_THREADS = 4 if simulated() else 256
_MAX_BLOCKS = 2 if simulated() else 4096


def grid(n: int) -> tuple[int, int]:
    """(blocks, threads) for ``n`` independent items."""
    return max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS)), _THREADS


def block() -> int:
    """Threads of a block that works through one page's deltas."""
    return _THREADS


OPS_TYPED = (OP_SUM, OP_MIN, OP_MAX, OP_MINPLUS, OP_ORAND)
__all__ = ["apply_dense", "apply_sparse_groups", "block", "diff_into", "gather", "grid", "recompute_bytes",
           "recompute_typed"]
