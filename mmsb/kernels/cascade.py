"""The cascade of one commit: every affected page recomputed at most once, in
topological order, in one kernel call (resumed around Python recomputes).

The kernel walks the graph's own arrays (``mmsb.kernels.graph``: per-slot
topological rank and edge lists) and the bindings' arrays, both kept current
by every change, so nothing is rebuilt between a change and a cascade and
binding N pages costs O(N). Pages wait in a binary heap keyed by topological
rank: a page is pushed only when a parent changed in this commit, and popped
after every page that can reach it, so each is recomputed once and no
recursion is needed however deep the graph.

Cut-offs: a page whose parents' epochs sum to its recorded signature is
skipped (epochs only grow, so for a fixed parent set an equal sum means no
parent moved); a recompute that reproduces the page's bytes makes no delta
and does not push its children.
"""

import numpy as np

from .._layout import (
    OP_AND, OP_DEVICE, OP_NJIT, OP_OR, OP_PASSTHROUGH, OP_PYTHON, OP_XOR, REC_HEADER, T_EPOCH, T_OFFSET, T_SIZE,
)
from .diff import commit_bytes, commit_page
from .graph import E_CHILD, E_KIND, E_NEXT_OUT, N_ORD, N_OUT
from .ops import BITWISE, ENTRIES
from .records import U
from ._jit import call_entry, float_bits, inline, kernel, memcpy


# bindings: one row per slot, and a pool of (parent slot, weight bits) rows
B_OP, B_DTYPE, B_START, B_COUNT, B_SIG = range(5)
B_COLS = 5

# work columns (int64, two rows per slot) and control words
W_HEAP = 0  # heap storage (slots)
W_MARK = 1  # why a page is in the heap (M_* bits), 0 when not
W_LSN = 2  # LSN of the page's delta in this commit, 0 when none
W_OUT = 3  # pages changed by the cascade, in order
W_STALE = 4  # pages reached through a non-data edge (once per page)
W_KIND = 5  # the kind of edge that reached them first
W_TOUCH = 6  # pages whose W_LSN is set
W_CAUSE = 7  # scratch: the causes of one delta
W_COLS = 8
C_HEAP, C_OUT, C_STALE, C_TOUCH, C_STATUS, C_SLOT = 0, 1, 2, 3, 4, 5
# undo: while C_UNDO is set, a page's bytes and epoch are saved before a commit
# first changes it, so a failed commit or transaction can be rolled back
C_UNDO, C_UNDO_N, C_UNDO_POS, C_UNDO_NEED = 6, 7, 8, 9
# running counts for State.stats(), kept here because the kernel is the only
# place that knows them and an increment in it costs nothing measurable
C_RECOMPUTED, C_SKIPPED, C_CASCADES = 10, 11, 12
# where the kernel's log and LSN stood before it called a user @njit function, so a raise
# leaves Python what was committed before it
C_END, C_LSN = 13, 14
# the addresses of the built-in ops' entries (mmsb.kernels.ops.entry_address), one per
# ops.ENTRIES, set when a page is first bound to an op that needs one
C_OPS = 15
C_WORDS = C_OPS + ENTRIES
U_SLOT, U_START, U_SIZE, U_EPOCH = 0, 1, 2, 3
# ST_NJIT: the next page is bound to an @njit function and this run was given none (the
# commit kernels carry no function list): Python runs it again with the list
ST_DONE, ST_PYTHON, ST_SPACE, ST_NJIT = 0, 1, 2, 3
M_HEAP, M_DATA, M_OTHER = 1, 2, 4
KIND_SYNC = 2  # mmsb.graph.KIND_SYNC


@inline
def _heap_push(work, ctl, nodes, s):
    i = ctl[C_HEAP]
    ctl[C_HEAP] = i + 1
    r = nodes[s, N_ORD]
    while i > 0:
        parent = (i - 1) >> 1
        q = work[parent, W_HEAP]
        if nodes[q, N_ORD] <= r:
            break
        work[i, W_HEAP] = q
        i = parent
    work[i, W_HEAP] = s


@inline
def _heap_pop(work, ctl, nodes):
    top = work[0, W_HEAP]
    n = ctl[C_HEAP] - 1
    ctl[C_HEAP] = n
    if n > 0:
        last = work[n, W_HEAP]
        r = nodes[last, N_ORD]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and nodes[work[c + 1, W_HEAP], N_ORD] < nodes[work[c, W_HEAP], N_ORD]:
                c += 1
            if nodes[work[c, W_HEAP], N_ORD] >= r:
                break
            work[i, W_HEAP] = work[c, W_HEAP]
            i = c
        work[i, W_HEAP] = last
    return top


@inline
def _push_children(nodes, edges, work, ctl, s):
    e = nodes[s, N_OUT]
    while e >= 0:
        c = edges[e, E_CHILD]
        k = edges[e, E_KIND]
        m = work[c, W_MARK]
        if m == 0:
            _heap_push(work, ctl, nodes, c)
            m = M_HEAP
        if k == 0:
            m |= M_DATA
        else:
            if k == KIND_SYNC:
                m |= M_DATA  # a mirror is recomputed (a copy of its parent) and reported stale
            # every (page, kind) reached; repeats are merged when events are made
            m |= M_OTHER
            i = ctl[C_STALE]
            if i < work.shape[0]:
                work[i, W_STALE] = c
                work[i, W_KIND] = k
            ctl[C_STALE] = i + 1
        work[c, W_MARK] = m
        e = edges[e, E_NEXT_OUT]


@inline
def _record_change(work, ctl, s, lsn):
    work[s, W_LSN] = lsn
    i = ctl[C_TOUCH]
    work[i, W_TOUCH] = s
    ctl[C_TOUCH] = i + 1


@inline
def _save_image(table, arena, ctl, undo, index, s):
    i = ctl[C_UNDO_N]
    at = ctl[C_UNDO_POS]
    off = table[T_OFFSET, s]
    n = np.int64(table[T_SIZE, s])
    memcpy(undo.ctypes.data + at, arena.ctypes.data + np.int64(off), n)
    index[i, U_SLOT] = s
    index[i, U_START] = at
    index[i, U_SIZE] = n
    index[i, U_EPOCH] = np.int64(table[T_EPOCH, s])
    ctl[C_UNDO_N] = i + 1
    ctl[C_UNDO_POS] = at + n


@kernel
def save_images(table, arena, ctl, undo, index, slots):
    """Save the bytes and epochs of ``slots`` (room was made by the caller)."""
    for i in range(slots.size):
        _save_image(table, arena, ctl, undo, index, slots[i])


@kernel
def restore_images(table, arena, ctl, undo, index):
    """Put every saved page back, newest save first, and forget the saves."""
    for k in range(ctl[C_UNDO_N] - 1, -1, -1):
        s = index[k, U_SLOT]
        off = table[T_OFFSET, s]
        at = index[k, U_START]
        n = index[k, U_SIZE]
        memcpy(arena.ctypes.data + np.int64(off), undo.ctypes.data + at, n)
        table[T_EPOCH, s] = U(index[k, U_EPOCH])
    ctl[C_UNDO_N] = 0
    ctl[C_UNDO_POS] = 0


@inline
def _seed(nodes, edges, work, ctl, seeds, lsns):
    for i in range(seeds.size):
        s = seeds[i]
        _record_change(work, ctl, s, lsns[i])
        if s < nodes.shape[0]:
            _push_children(nodes, edges, work, ctl, s)


@inline
def _mark_dirty(nodes, work, ctl, s):
    if work[s, W_MARK] == 0:
        _heap_push(work, ctl, nodes, s)
    work[s, W_MARK] |= M_HEAP | M_DATA


@inline
def _commit_derived(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, data, buf, pos, lsn,
                    before):
    if ctl[C_UNDO]:
        _save_image(table, arena, ctl, undo, index, s)
    nc = np.int64(0)
    start = binds[s, B_START]
    for j in range(start, start + binds[s, B_COUNT]):
        cause = work[pool[j, 0], W_LSN]
        if cause != 0:
            work[nc, W_CAUSE] = cause
            nc += 1
    causes = np.int64(work.ctypes.data) + 8 * W_CAUSE  # work[k, W_CAUSE], k < nc
    step = 8 * work.shape[1]
    if before is None:
        end = commit_bytes(table, arena, s, data, buf, pos, lsn, causes, step, nc)
    else:
        end = commit_page(table, before, s, data, buf, pos, lsn, causes, step, nc)
    if end != pos:
        _record_change(work, ctl, s, lsn)
        i = ctl[C_OUT]
        work[i, W_OUT] = s
        ctl[C_OUT] = i + 1
        _push_children(nodes, edges, work, ctl, s)
    return end


@kernel
def commit_derived(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, data, buf, pos, lsn):
    """Commit recomputed bytes ``data`` of page ``s`` (from Python); returns the log end.

    With undo on, the caller made room for one more saved image of ``s``.
    """
    return _commit_derived(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, data, buf, pos,
                           lsn, None)


@kernel
def commit_derived_known(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, before, data, buf,
                         pos, lsn):
    """:func:`commit_derived` of a page whose bytes are elsewhere (on the device): ``before``
    differs from ``data`` exactly where the page changed (see ``diff.update_known``)."""
    return _commit_derived(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, data, buf, pos,
                           lsn, before)


@inline
def _call_user(funcs, f, table, arena, pool, scratch, bounds, lo, k, s, n):
    """Recompute ``s`` with its @njit function; the result is ``scratch[at:at + n]``, returned as ``at``.

    The parents' bytes are copied side by side (so the function cannot write
    to them), and the output starts as the page's current bytes.
    """
    # copies by address, not slice assignments (numba would compile their shape-mismatch message,
    # 0.4-2 s of the first binding's compile); the binding sized scratch for the parents and the page
    need = np.int64(n)
    for j in range(k):
        need += np.int64(table[T_SIZE, pool[lo + j, 0]])
    if need > scratch.size:
        raise ValueError("the recompute scratch cannot hold the parents and the page")
    pages = np.int64(arena.ctypes.data)
    room = np.int64(scratch.ctypes.data)
    at = np.int64(0)
    for j in range(k):
        p = pool[lo + j, 0]
        size = np.int64(table[T_SIZE, p])
        bounds[j] = at
        memcpy(room + at, pages + np.int64(table[T_OFFSET, p]), size)
        at += size
    bounds[k] = at
    memcpy(room + at, pages + np.int64(table[T_OFFSET, s]), n)
    funcs[f](scratch[:at], bounds[:k + 1], scratch[at:at + n])
    return at


@kernel
def run(table, arena, nodes, edges, binds, pool, work, ctl, scratch, undo, index, buf, pos, lsn, funcs):
    """Run the queued cascade; returns (log end, last LSN).

    ``funcs`` is None, or the typed list of the @njit recompute functions
    (a page bound to one holds its index in ``B_DTYPE``); if one raises, the
    exception leaves the kernel with ``ctl[C_SLOT]`` naming the page.

    Stops early with ``ctl[C_STATUS]`` = ST_PYTHON (page ``ctl[C_SLOT]`` is
    bound to a Python callable: Python recomputes it and calls
    :func:`commit_derived`, then ``run`` again) or ST_SPACE (the log buffer
    needs ``ctl[C_SLOT]`` more bytes, or the undo space ``ctl[C_UNDO_NEED]``
    more bytes and one more entry; the page stays queued).
    """
    end = pos
    ctl[C_STATUS] = ST_DONE
    while ctl[C_HEAP] > 0:
        s = work[0, W_HEAP]
        m = work[s, W_MARK]
        op = binds[s, B_OP] if m & M_DATA else 0
        lo = binds[s, B_START]
        hi = lo + binds[s, B_COUNT]
        sg = np.int64(0)
        if op != 0:
            for j in range(lo, hi):
                sg += np.int64(table[T_EPOCH, pool[j, 0]])
            if sg == binds[s, B_SIG]:
                op = 0  # cut-off 1: no parent moved since the last recompute
                ctl[C_SKIPPED] += 1
        if op == OP_NJIT and funcs is None:
            ctl[C_STATUS] = ST_NJIT
            ctl[C_SLOT] = s
            return end, lsn
        n = np.int64(table[T_SIZE, s])
        if op != 0 and op != OP_PYTHON and op != OP_DEVICE:
            need = REC_HEADER + 16 + n + ((n + 7) >> 3) + 8 * (hi - lo)
            short_undo = ctl[C_UNDO] != 0 and (
                ctl[C_UNDO_POS] + n > undo.size or ctl[C_UNDO_N] >= index.shape[0]
            )
            if end + need > buf.size or short_undo:
                ctl[C_STATUS] = ST_SPACE
                ctl[C_SLOT] = need
                ctl[C_UNDO_NEED] = n
                return end, lsn
        _heap_pop(work, ctl, nodes)
        work[s, W_MARK] = 0
        if op == 0:
            continue
        ctl[C_RECOMPUTED] += 1
        binds[s, B_SIG] = sg
        if op == OP_PYTHON or op == OP_DEVICE:
            ctl[C_STATUS] = ST_PYTHON
            ctl[C_SLOT] = s
            return end, lsn
        if op == OP_PASSTHROUGH:
            # the parent's bytes are the result: diff them straight into the child
            src = table[T_OFFSET, pool[lo, 0]]
            data = arena[src:src + U(n)]
        elif op == OP_NJIT:
            if funcs is None:
                return end, lsn  # unreachable (ST_NJIT above); lets numba drop the call when there is no list
            k = hi - lo
            bounds = np.empty(k + 1, np.int64)  # allocated per use: a passthrough needs none
            ctl[C_SLOT] = s  # names the page if the function raises
            ctl[C_END] = end
            ctl[C_LSN] = lsn
            at = _call_user(funcs, binds[s, B_DTYPE], table, arena, pool, scratch, bounds, lo, k, s, n)
            data = scratch[at:at + n]
        else:
            k = hi - lo
            offsets = np.empty(k, np.uint64)
            weights = np.empty(k, np.float64)
            for j in range(k):
                offsets[j] = table[T_OFFSET, pool[lo + j, 0]]
                weights[j] = float_bits(pool[lo + j, 1])
            bitwise = op == OP_AND or op == OP_OR or op == OP_XOR
            entry = BITWISE if bitwise else binds[s, B_DTYPE]
            call_entry(ctl[C_OPS + entry], op, scratch, arena, offsets, weights, n)
            data = scratch[:n]
        new_end = _commit_derived(table, arena, nodes, edges, binds, pool, work, ctl, undo, index, s, data, buf,
                                  end, lsn + 1, None)
        if new_end != end:
            lsn += 1
            end = new_end
    return end, lsn


@inline
def _finish(work, ctl):
    for i in range(ctl[C_TOUCH]):
        work[work[i, W_TOUCH], W_LSN] = 0
    ctl[C_TOUCH] = 0


@kernel
def finish(work, ctl):
    """Forget this commit's LSN marks (cost: pages the commit changed).

    The lists of changed and stale pages stay readable until the next cascade.
    """
    _finish(work, ctl)


@kernel
def cascade(table, arena, nodes, edges, binds, pool, work, ctl, scratch, undo, index, buf, pos, lsn, seeds, lsns,
            dirty, funcs):
    """Seed, run and finish the cascade of a commit in one call; see :func:`run`.

    ``dirty`` (>= 0) also queues that page for a recompute whatever its
    signature (a new binding). When :func:`run` stops early
    (``ctl[C_STATUS]``), the caller goes on with ``run`` and calls
    :func:`finish` itself.
    """
    ctl[C_OUT] = ctl[C_STALE] = 0
    ctl[C_CASCADES] += 1
    _seed(nodes, edges, work, ctl, seeds, lsns)
    if dirty >= 0:
        binds[dirty, B_SIG] = -1
        _mark_dirty(nodes, work, ctl, dirty)
    end, lsn = run(table, arena, nodes, edges, binds, pool, work, ctl, scratch, undo, index, buf, pos, lsn, funcs)
    if ctl[C_STATUS] == ST_DONE:
        _finish(work, ctl)
    return end, lsn
