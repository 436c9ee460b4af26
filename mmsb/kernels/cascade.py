"""The cascade of one commit: every affected page recomputed at most once, in
topological order, in one kernel call (resumed around Python recomputes).

The graph and the recompute bindings reach the kernel as one int64 *plan*
array (layout ``P_*``), rebuilt by Python after a change, so a cascade call
takes few arguments. Pages wait in a binary heap keyed by their topological
rank: a page is pushed only when a parent changed in this commit, and popped
after every page that can reach it, so each is recomputed once and no
recursion is needed however deep the graph.

Cut-offs: a page whose parents' epochs sum to its recorded signature is
skipped (epochs only grow, so for a fixed parent set an equal sum means no
parent moved); a recompute that reproduces the page's bytes makes no delta
and does not push its children.
"""

import numpy as np
from numba import njit

from .._layout import OP_PASSTHROUGH, OP_PYTHON, REC_HEADER, T_EPOCH, T_OFFSET, T_SIZE
from .diff import commit_bytes
from .ops import recompute
from .records import U

_JIT = dict(cache=True, nogil=True)

# plan header: where each array starts in the plan (a P_* slot holds an offset)
P_N = 0  # number of node slots n
P_FPTR = 1  # forward CSR indptr (n + 1)
P_FIDX = 2  # children
P_FKIND = 3  # edge kinds
P_RANK = 4  # topological rank per slot (n)
P_OP = 5  # recompute op per slot (0: not bound)
P_DT = 6  # dtype code per slot
P_BPTR = 7  # binding parents indptr (n + 1)
P_BPAR = 8  # binding parents, in the order given
P_BW = 9  # per binding parent, its weight (float64 bits)
P_HEADER = 10


# work columns (int64, one row per slot) and control words
W_HEAP = 0  # heap storage (slots)
W_MARK = 1  # why a page is in the heap (M_* bits), 0 when not
W_LSN = 2  # LSN of the page's delta in this commit, 0 when none
W_OUT = 3  # pages changed by the cascade, in order
W_STALE = 4  # pages reached through a non-data edge (once per page)
W_KIND = 5  # the kind of edge that reached them first
W_TOUCH = 6  # pages whose W_LSN is set
W_COLS = 7
C_HEAP, C_OUT, C_STALE, C_TOUCH, C_STATUS, C_SLOT = 0, 1, 2, 3, 4, 5
# undo: while C_UNDO is set, a page's bytes and epoch are saved before a commit
# first changes it, so a failed commit or transaction can be rolled back
C_UNDO, C_UNDO_N, C_UNDO_POS, C_UNDO_NEED = 6, 7, 8, 9
C_WORDS = 12
U_SLOT, U_START, U_SIZE, U_EPOCH = 0, 1, 2, 3
ST_DONE, ST_PYTHON, ST_SPACE = 0, 1, 2
M_HEAP, M_DATA, M_OTHER = 1, 2, 4


@njit(inline="always", **_JIT)
def _heap_push(work, ctl, rank, s):
    i = ctl[C_HEAP]
    ctl[C_HEAP] = i + 1
    r = rank[s]
    while i > 0:
        parent = (i - 1) >> 1
        q = work[parent, W_HEAP]
        if rank[q] <= r:
            break
        work[i, W_HEAP] = q
        i = parent
    work[i, W_HEAP] = s


@njit(inline="always", **_JIT)
def _heap_pop(work, ctl, rank):
    top = work[0, W_HEAP]
    n = ctl[C_HEAP] - 1
    ctl[C_HEAP] = n
    if n > 0:
        last = work[n, W_HEAP]
        r = rank[last]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and rank[work[c + 1, W_HEAP]] < rank[work[c, W_HEAP]]:
                c += 1
            if rank[work[c, W_HEAP]] >= r:
                break
            work[i, W_HEAP] = work[c, W_HEAP]
            i = c
        work[i, W_HEAP] = last
    return top


@njit(inline="always", **_JIT)
def _parts(plan):
    """The plan's arrays, sliced once per kernel call: every slice costs a
    reference-count round trip, too much to pay per page."""
    return (
        plan[plan[P_FPTR]:], plan[plan[P_FIDX]:], plan[plan[P_FKIND]:], plan[plan[P_RANK]:],
        plan[plan[P_OP]:], plan[plan[P_DT]:], plan[plan[P_BPTR]:], plan[plan[P_BPAR]:],
        plan[plan[P_BW]:].view(np.float64),
    )


@njit(inline="always", **_JIT)
def _push_children(fptr, fidx, fkind, rank, work, ctl, s):
    for e in range(fptr[s], fptr[s + 1]):
        c = fidx[e]
        k = fkind[e]
        m = work[c, W_MARK]
        if m == 0:
            _heap_push(work, ctl, rank, c)
            m = M_HEAP
        if k == 0:
            m |= M_DATA
        elif m & M_OTHER == 0:
            m |= M_OTHER
            i = ctl[C_STALE]
            work[i, W_STALE] = c
            work[i, W_KIND] = k
            ctl[C_STALE] = i + 1
        work[c, W_MARK] = m


@njit(inline="always", **_JIT)
def _record_change(work, ctl, s, lsn):
    work[s, W_LSN] = lsn
    i = ctl[C_TOUCH]
    work[i, W_TOUCH] = s
    ctl[C_TOUCH] = i + 1


@njit(inline="always", **_JIT)
def _save_image(table, arena, ctl, undo, index, s):
    i = ctl[C_UNDO_N]
    at = ctl[C_UNDO_POS]
    off = table[T_OFFSET, s]
    n = np.int64(table[T_SIZE, s])
    undo[at:at + n] = arena[off:off + n]
    index[i, U_SLOT] = s
    index[i, U_START] = at
    index[i, U_SIZE] = n
    index[i, U_EPOCH] = np.int64(table[T_EPOCH, s])
    ctl[C_UNDO_N] = i + 1
    ctl[C_UNDO_POS] = at + n


@njit(**_JIT)
def save_images(table, arena, ctl, undo, index, slots):
    """Save the bytes and epochs of ``slots`` (room was made by the caller)."""
    for i in range(slots.size):
        _save_image(table, arena, ctl, undo, index, slots[i])


@njit(**_JIT)
def restore_images(table, arena, ctl, undo, index):
    """Put every saved page back, newest save first, and forget the saves."""
    for k in range(ctl[C_UNDO_N] - 1, -1, -1):
        s = index[k, U_SLOT]
        off = table[T_OFFSET, s]
        at = index[k, U_START]
        n = index[k, U_SIZE]
        arena[off:off + n] = undo[at:at + n]
        table[T_EPOCH, s] = U(index[k, U_EPOCH])
    ctl[C_UNDO_N] = 0
    ctl[C_UNDO_POS] = 0


@njit(**_JIT)
def seed(plan, work, ctl, seeds, lsns):
    """Start a cascade from pages written by the commit (with their LSNs)."""
    fptr, fidx, fkind, rank, _, _, _, _, _ = _parts(plan)
    for i in range(seeds.size):
        s = seeds[i]
        _record_change(work, ctl, s, lsns[i])
        if s < plan[P_N]:
            _push_children(fptr, fidx, fkind, rank, work, ctl, s)


@njit(**_JIT)
def mark_dirty(plan, work, ctl, s):
    """Queue page ``s`` for a recompute whatever its signature (a new binding)."""
    if work[s, W_MARK] == 0:
        _heap_push(work, ctl, plan[plan[P_RANK]:], s)
    work[s, W_MARK] |= M_HEAP | M_DATA


@njit(inline="always", **_JIT)
def _causes(bptr, bpar, work, s, causes):
    nc = 0
    for j in range(bptr[s], bptr[s + 1]):
        lsn = work[bpar[j], W_LSN]
        if lsn != 0:
            causes[nc] = lsn
            nc += 1
    return nc


@njit(inline="always", **_JIT)
def _commit_derived(table, arena, parts, work, ctl, causes, undo, index, s, data, buf, pos, lsn):
    fptr, fidx, fkind, rank, _, _, bptr, bpar, _ = parts
    if ctl[C_UNDO]:
        _save_image(table, arena, ctl, undo, index, s)
    nc = _causes(bptr, bpar, work, s, causes)
    end = commit_bytes(table, arena, s, data, buf, pos, lsn, causes, nc)
    if end != pos:
        _record_change(work, ctl, s, lsn)
        i = ctl[C_OUT]
        work[i, W_OUT] = s
        ctl[C_OUT] = i + 1
        _push_children(fptr, fidx, fkind, rank, work, ctl, s)
    return end


@njit(**_JIT)
def commit_derived(table, arena, plan, work, ctl, causes, undo, index, s, data, buf, pos, lsn):
    """Commit recomputed bytes ``data`` of page ``s`` (from Python); returns the log end.

    With undo on, the caller made room for one more saved image of ``s``.
    """
    return _commit_derived(table, arena, _parts(plan), work, ctl, causes, undo, index, s, data, buf, pos, lsn)


@njit(inline="always", **_JIT)
def _signature(table, bpar, lo, hi):
    total = U(0)
    for j in range(lo, hi):
        total += table[T_EPOCH, bpar[j]]
    return total


@njit(**_JIT)
def run(table, arena, plan, sig, work, ctl, scratch, causes, undo, index, buf, pos, lsn):
    """Run the queued cascade; returns (log end, last LSN).

    Stops early with ``ctl[C_STATUS]`` = ST_PYTHON (page ``ctl[C_SLOT]`` is
    bound to a Python callable: Python recomputes it and calls
    :func:`commit_derived`, then ``run`` again) or ST_SPACE (the log buffer
    needs ``ctl[C_SLOT]`` more bytes, or the undo space ``ctl[C_UNDO_NEED]``
    more bytes and one more entry; the page stays queued).
    """
    parts = _parts(plan)
    _, _, _, rank, ops, dts, bptr, bpar, weights = parts
    offsets = np.empty(bpar.size, np.uint64)
    end = pos
    ctl[C_STATUS] = ST_DONE
    while ctl[C_HEAP] > 0:
        s = work[0, W_HEAP]
        m = work[s, W_MARK]
        op = ops[s] if m & M_DATA else 0
        lo = hi = 0
        sg = U(0)
        if op != 0:
            lo, hi = bptr[s], bptr[s + 1]
            sg = _signature(table, bpar, lo, hi)
            if sg == sig[s]:
                op = 0  # cut-off 1: no parent moved since the last recompute
        n = np.int64(table[T_SIZE, s])
        if op != 0 and op != OP_PYTHON:
            need = REC_HEADER + 16 + n + ((n + 7) >> 3) + 8 * (hi - lo)
            short_undo = ctl[C_UNDO] != 0 and (
                ctl[C_UNDO_POS] + n > undo.size or ctl[C_UNDO_N] >= index.shape[0]
            )
            if end + need > buf.size or short_undo:
                ctl[C_STATUS] = ST_SPACE
                ctl[C_SLOT] = need
                ctl[C_UNDO_NEED] = n
                return end, lsn
        _heap_pop(work, ctl, rank)
        work[s, W_MARK] = 0
        if op == 0:
            continue
        sig[s] = sg
        if op == OP_PYTHON:
            ctl[C_STATUS] = ST_PYTHON
            ctl[C_SLOT] = s
            return end, lsn
        if op == OP_PASSTHROUGH:
            # the parent's bytes are the result: diff them straight into the child
            src = table[T_OFFSET, bpar[lo]]
            data = arena[src:src + U(n)]
        else:
            for j in range(lo, hi):
                offsets[j - lo] = table[T_OFFSET, bpar[j]]
            recompute(op, dts[s], scratch, arena, offsets[: hi - lo], weights[lo:hi], n)
            data = scratch[:n]
        new_end = _commit_derived(table, arena, parts, work, ctl, causes, undo, index, s, data, buf, end, lsn + 1)
        if new_end != end:
            lsn += 1
            end = new_end
    return end, lsn


@njit(inline="always", **_JIT)
def _finish(work, ctl):
    for i in range(ctl[C_TOUCH]):
        work[work[i, W_TOUCH], W_LSN] = 0
    ctl[C_TOUCH] = 0


@njit(**_JIT)
def finish(work, ctl):
    """Forget this commit's LSN marks (cost: pages the commit changed).

    The lists of changed and stale pages stay readable until the next cascade.
    """
    _finish(work, ctl)


@njit(**_JIT)
def cascade(table, arena, plan, sig, work, ctl, scratch, causes, undo, index, buf, pos, lsn, seeds, lsns, dirty):
    """Seed, run and finish the cascade of a commit in one call; see :func:`run`.

    When :func:`run` stops early (``ctl[C_STATUS]``), the caller goes on with
    ``run`` and calls :func:`finish` itself.
    """
    ctl[C_OUT] = ctl[C_STALE] = 0
    seed(plan, work, ctl, seeds, lsns)
    if dirty >= 0:
        mark_dirty(plan, work, ctl, dirty)
    end, lsn = run(table, arena, plan, sig, work, ctl, scratch, causes, undo, index, buf, pos, lsn)
    if ctl[C_STATUS] == ST_DONE:
        _finish(work, ctl)
    return end, lsn
