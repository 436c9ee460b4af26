"""Recomputes that touch the device, run when the cascade kernel steps out (``OP_DEVICE``).

Where a recompute runs decides what crosses the bus:

- a built-in op for a device page runs on the device; its host parents are
  copied in, its device parents read in place. Then the result is diffed into
  the page on the device: one bit per byte comes back, and the new bytes when
  some changed (the log records them);
- a built-in op for a host page copies its device parents out and runs the CPU
  kernel;
- a user function (``@njit`` or Python) always runs on the host: device parents
  are copied out, and a device page's result copied in and diffed there.

A page's turn comes in the same topological order as every other page's, with
the same two cut-offs and the same records as the CPU path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._layout import DTYPE_NAMES, OP_NJIT
from ..errors import RecomputeError
from ..kernels.cascade import C_UNDO, commit_derived_known
from ..functions import python_result
from . import kernels as k

_U8 = np.uint8


def host_bytes(c: Any, slot: int) -> np.ndarray:
    """A page's bytes on the host: a read-only view of a host page, a copy of a device page."""
    size = c.table.mv_size[slot]
    if c.table.on_device(slot):
        v = c.dev.read(slot, size)
        v.flags.writeable = False  # as a host page's view: a recompute must not write its parents
        return v
    v = c.arena.view(c.table.mv_offset[slot], size)  # holds its chunk: user code may keep it
    v.flags.writeable = False
    return v


def recompute(prop: Any, state: Any, c: Any, log: Any, slot: int) -> None:
    """Recompute page ``slot`` (the kernel stopped at it) and commit the result."""
    b = prop.bindings[slot]
    size = c.table.mv_size[slot]
    if b.fn is None and c.table.on_device(slot):
        _builtin_on_device(prop, c, log, slot, b, size)
        return
    parents = [host_bytes(c, p) for p in b.parents]
    if b.fn is None:
        data = _builtin_on_host(b, parents, size)
    elif b.op == OP_NJIT:
        data = _njit_on_host(state, c, b, parents, slot, size)
    else:
        data = python_result(state, b, parents, slot, size)
    if not c.table.on_device(slot):
        prop.commit_host(c, log, slot, data)
        return
    if prop.ctl[C_UNDO]:
        c.dev.save(slot, size)
    bits = c.dev.update(slot, data)
    if bits.any():
        _commit_known(prop, c, log, slot, data, np.unpackbits(bits, count=size, bitorder="little"))


def _builtin_on_host(b: Any, parents: list[np.ndarray], size: int) -> np.ndarray:
    from ..kernels.ops import recompute as host_recompute

    src = np.concatenate(parents) if len(parents) > 1 else np.ascontiguousarray(parents[0])
    offsets = np.arange(len(parents), dtype=np.uint64) * np.uint64(size)
    out = np.empty(size, _U8)
    host_recompute(b.op, b.dtype, out, src, offsets, np.array(b.weights, np.float64), size)
    return out


def _njit_on_host(state: Any, c: Any, b: Any, parents: list[np.ndarray], slot: int, size: int) -> np.ndarray:
    src = np.concatenate(parents)
    bounds = np.zeros(len(parents) + 1, np.int64)
    np.cumsum([p.size for p in parents], out=bounds[1:])
    out = np.array(host_bytes(c, slot))  # the function starts from the page's current bytes
    try:
        b.fn(src, bounds, out)
    except Exception as exc:
        pid = state._id_of(slot)
        raise RecomputeError(f"recompute of page {pid} raised {exc!r}", pid) from exc
    return out


def _builtin_on_device(prop: Any, c: Any, log: Any, slot: int, b: Any, size: int) -> None:
    """Run a built-in op for a device page and diff the result into it: one launch."""
    from ..kernels.apply import cast_weights

    dev = c.dev
    kcount = len(b.parents)
    dtype = np.dtype(DTYPE_NAMES[b.dtype])
    typed = b.op in k.OPS_TYPED
    item = dtype.itemsize if typed else 1
    weights = np.empty(kcount, dtype)
    cast_weights(np.array(b.weights, np.float64), weights)
    sel = np.zeros(kcount, _U8)
    offs = np.zeros(kcount, np.int64)
    # the staging layout: sel, offs, weights, bits, then the host parents' bytes (all 8-aligned)
    bits = np.zeros((size + 7) >> 3, _U8)
    at = sum((a.nbytes + 7) & ~7 for a in (sel, offs, weights, bits))
    host = []
    for j, p in enumerate(b.parents):
        if c.table.on_device(p):
            offs[j] = dev.offsets[p] // item
        else:
            sel[j] = 1
            offs[j] = at // item
            host.append(host_bytes(c, p))
            at += (size + 7) & ~7
    if prop.ctl[C_UNDO]:
        dev.save(slot, size)
    sel_d, offs_d, w_d, bits_d, *_ = dev.stage(sel, offs, weights, bits, *host)
    out = dev._scratch(size)[:size]
    off = int(dev.offsets[slot])
    if typed:
        dev._launch(k.recompute_typed, k.grid(bits.size), dev.data.view(dtype), dev.stage_d.view(dtype), sel_d,
                    offs_d, w_d, out.view(dtype), 8 // item, b.op, dev.data, out, off, bits_d, size)
    else:
        dev._launch(k.recompute_bytes, k.grid(bits.size), dev.data, dev.stage_d, sel_d, offs_d, out, b.op, off,
                    bits_d, size)
    dev.dirty = True
    bits = dev.fetch(bits_d)
    if bits.any():
        data, flags = dev.changed_bytes(out, bits)
        _commit_known(prop, c, log, slot, data, flags)


def _commit_known(prop: Any, c: Any, log: Any, slot: int, data: np.ndarray, flags: np.ndarray) -> None:
    """Log and account a device page's recompute: ``flags`` (one per byte) mark the bytes that
    changed, and ``data`` holds their new values (elsewhere it may hold anything)."""
    size = data.size
    before = data ^ flags
    buf = log.reserve(64 + 2 * size + 8 * len(prop.bindings[slot].parents))
    if prop.ctl[C_UNDO]:
        prop.undo_room(size, 1)
    t, a, nodes, edges, binds, pool, work, ctl, _, undo, index = prop._arrays(c)
    end = commit_derived_known(t, a, nodes, edges, binds, pool, work, ctl, undo, index, slot, before, data, buf,
                               log.used, c.lsn + 1)
    if end != log.used:
        prop._committed(c, log, end, c.lsn + 1)


__all__ = ["host_bytes", "recompute"]
