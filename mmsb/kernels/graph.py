"""Dependency-graph kernels: edge storage, the incremental cycle check, CSR builds.

The graph is four plain int64 arrays, so each kernel call costs a handful of
array arguments (DESIGN.md §5: ~45 ns each), not one per field:

- ``nodes[N_ROWS, node_capacity]``: per slot, its position in the maintained
  topological order and the inverse, the heads of its out- and in-edge lists
  (doubly linked through the edge rows, -1 ends a list), its degrees, a visit
  stamp, and scratch rows for the searches.
- ``edges[E_ROWS, edge_capacity]``: per edge id, parent, child, kind and the
  list links. A free edge has parent -1 and sits on a free list chained
  through ``E_NEXT_OUT``; ids below ``meta[M_HIGH]`` have been used.
- ``table[2, power of two]``: open addressing with linear probing from the
  key ``parent << 32 | child`` to the edge id; -1 marks an empty slot.
  Deletion shifts entries back instead of leaving tombstones, so a table
  never fills up with dead entries, whatever the add/remove churn.
- ``meta``: counters (M_*).

Slots must be below 2**31 so that keys fit in int64. The order is kept by the
Pearce-Kelly algorithm: an edge whose parent already comes first costs O(1);
otherwise only the slots between the two positions are searched and
reordered. Nothing recurses: searches keep their path on an explicit stack.
"""

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)

N_ORD, N_AT, N_OUT, N_IN, N_OUTDEG, N_INDEG, N_MARK, N_STACK, N_ITER, N_FWD, N_BWD = range(11)
N_ROWS = 11
E_PARENT, E_CHILD, E_KIND, E_NEXT_OUT, E_PREV_OUT, E_NEXT_IN, E_PREV_IN = range(7)
E_ROWS = 7
M_STAMP, M_FREE, M_HIGH, M_COUNT, M_PATH = range(5)
M_SIZE = 5

ADDED, EXISTS, KIND_CLASH, CYCLE = 1, 0, -1, -2


@njit(inline="always", **_JIT)
def _home(key, mask):
    # splitmix64's finalizer: keys of one parent differ only in low bits
    h = np.uint64(key)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(mask))


@njit(inline="always", **_JIT)
def _probe(table, key):
    """Table index holding ``key``, or ``-(index of the empty slot that ends the probe) - 1``."""
    mask = table.shape[1] - 1
    i = _home(key, mask)
    while True:
        k = table[0, i]
        if k == key:
            return i
        if k == -1:
            return -i - 1
        i = (i + 1) & mask


@njit(**_JIT)
def _table_delete(table, i):
    # Backward-shift deletion: pull later entries of the same run into the
    # hole unless their home lies cyclically within (hole, entry].
    mask = table.shape[1] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[0, j]
        if k == -1:
            break
        h = _home(k, mask)
        stays = (i < h <= j) if i <= j else (h > i or h <= j)
        if not stays:
            table[0, i] = k
            table[1, i] = table[1, j]
            i = j
    table[0, i] = -1


@njit(**_JIT)
def find_edge(table, p, c):
    """Edge id of ``p -> c``, or -1 when there is none."""
    i = _probe(table, (p << 32) | c)
    return table[1, i] if i >= 0 else -1


@njit(**_JIT)
def _search(nodes, edges, start, bound, stamp, forward):
    """Depth-first search from ``start`` over slots strictly between it and ``bound`` in order.

    Forward: children with position < bound, collected in N_FWD; backward:
    parents with position > bound, in N_BWD. Returns the count found, or, when
    the forward search meets the slot AT ``bound``, ``-(path length)`` with the
    path start .. that slot in N_STACK (each step an edge).
    """
    if forward:
        head, nxt, end, found, sign = nodes[N_OUT], edges[E_NEXT_OUT], edges[E_CHILD], nodes[N_FWD], 1
    else:
        head, nxt, end, found, sign = nodes[N_IN], edges[E_NEXT_IN], edges[E_PARENT], nodes[N_BWD], -1
    order, mark, stack, it = nodes[N_ORD], nodes[N_MARK], nodes[N_STACK], nodes[N_ITER]
    limit = sign * bound
    mark[start] = stamp
    found[0] = start
    n = 1
    stack[0] = start
    it[0] = head[start]
    top = 0
    while top >= 0:
        e = it[top]
        if e < 0:
            top -= 1
            continue
        it[top] = nxt[e]
        w = end[e]
        o = sign * order[w]
        if o == limit:  # only forward: w is the new edge's parent, so a cycle
            stack[top + 1] = w
            return -(top + 2)
        if o < limit and mark[w] != stamp:
            mark[w] = stamp
            found[n] = w
            n += 1
            top += 1
            stack[top] = w
            it[top] = head[w]
    return n


@njit(**_JIT)
def _reorder(nodes, edges, meta, p, c, lb, ub):
    """Make room for ``p -> c`` when ``order[c] = lb < ub = order[p]``; False on a cycle."""
    meta[M_STAMP] += 1  # a fresh stamp unmarks every slot without touching them
    stamp = meta[M_STAMP]
    nf = _search(nodes, edges, c, ub, stamp, True)
    if nf < 0:
        meta[M_PATH] = -nf
        return False
    nb = _search(nodes, edges, p, lb, stamp, False)
    order, at = nodes[N_ORD], nodes[N_AT]
    fw, bw = nodes[N_FWD, :nf], nodes[N_BWD, :nb]
    kf = np.empty(nf, np.int64)
    kb = np.empty(nb, np.int64)
    for i in range(nf):
        kf[i] = order[fw[i]]
    for i in range(nb):
        kb[i] = order[bw[i]]
    sf = np.argsort(kf)
    sb = np.argsort(kb)
    # The two sets' positions, merged, are handed out again: the ancestors of
    # p first, then the descendants of c, each set in its old relative order.
    pool = np.empty(nf + nb, np.int64)
    i = j = 0
    for k in range(nf + nb):
        if j >= nb or (i < nf and kf[sf[i]] < kb[sb[j]]):
            pool[k] = kf[sf[i]]
            i += 1
        else:
            pool[k] = kb[sb[j]]
            j += 1
    for k in range(nb):
        w = bw[sb[k]]
        order[w] = pool[k]
        at[pool[k]] = w
    for k in range(nf):
        w = fw[sf[k]]
        order[w] = pool[nb + k]
        at[pool[nb + k]] = w
    return True


@njit(**_JIT)
def add_edge(nodes, edges, table, meta, p, c, kind):
    """Add ``p -> c`` of ``kind``; slots below the node capacity, room for one more edge.

    Returns ADDED; EXISTS (same edge and kind, nothing done); KIND_CLASH (the
    edge exists with another kind, nothing done); or CYCLE: nothing done but
    the order's scratch, and N_STACK[:meta[M_PATH]] holds c .. p, a path of
    edges that the new edge would close.
    """
    key = (p << 32) | c
    slot = _probe(table, key)
    if slot >= 0:
        return EXISTS if edges[E_KIND, table[1, slot]] == kind else KIND_CLASH
    if p == c:
        nodes[N_STACK, 0] = p
        meta[M_PATH] = 1
        return CYCLE
    lb, ub = nodes[N_ORD, c], nodes[N_ORD, p]
    if lb < ub and not _reorder(nodes, edges, meta, p, c, lb, ub):
        return CYCLE
    e = meta[M_FREE]
    if e >= 0:
        meta[M_FREE] = edges[E_NEXT_OUT, e]
    else:
        e = meta[M_HIGH]
        meta[M_HIGH] = e + 1
    edges[E_PARENT, e], edges[E_CHILD, e], edges[E_KIND, e] = p, c, kind
    h = nodes[N_OUT, p]
    edges[E_NEXT_OUT, e], edges[E_PREV_OUT, e] = h, -1
    if h >= 0:
        edges[E_PREV_OUT, h] = e
    nodes[N_OUT, p] = e
    h = nodes[N_IN, c]
    edges[E_NEXT_IN, e], edges[E_PREV_IN, e] = h, -1
    if h >= 0:
        edges[E_PREV_IN, h] = e
    nodes[N_IN, c] = e
    nodes[N_OUTDEG, p] += 1
    nodes[N_INDEG, c] += 1
    table[0, -slot - 1], table[1, -slot - 1] = key, e
    meta[M_COUNT] += 1
    return ADDED


@njit(**_JIT)
def _unlink(nodes, edges, table, meta, e):
    p, c = edges[E_PARENT, e], edges[E_CHILD, e]
    nx, pv = edges[E_NEXT_OUT, e], edges[E_PREV_OUT, e]
    if nx >= 0:
        edges[E_PREV_OUT, nx] = pv
    if pv >= 0:
        edges[E_NEXT_OUT, pv] = nx
    else:
        nodes[N_OUT, p] = nx
    nx, pv = edges[E_NEXT_IN, e], edges[E_PREV_IN, e]
    if nx >= 0:
        edges[E_PREV_IN, nx] = pv
    if pv >= 0:
        edges[E_NEXT_IN, pv] = nx
    else:
        nodes[N_IN, c] = nx
    nodes[N_OUTDEG, p] -= 1
    nodes[N_INDEG, c] -= 1
    _table_delete(table, _probe(table, (p << 32) | c))
    edges[E_PARENT, e] = -1
    edges[E_NEXT_OUT, e] = meta[M_FREE]
    meta[M_FREE] = e
    meta[M_COUNT] -= 1


@njit(**_JIT)
def remove_edge(nodes, edges, table, meta, p, c):
    """Remove ``p -> c``; False (nothing done) when there is no such edge.

    The order stays valid: removing an edge never breaks it.
    """
    e = find_edge(table, p, c)
    if e < 0:
        return False
    _unlink(nodes, edges, table, meta, e)
    return True


@njit(**_JIT)
def remove_node(nodes, edges, table, meta, s):
    """Remove every edge into or out of slot ``s``; the number removed."""
    n = 0
    while nodes[N_OUT, s] >= 0:
        _unlink(nodes, edges, table, meta, nodes[N_OUT, s])
        n += 1
    while nodes[N_IN, s] >= 0:
        _unlink(nodes, edges, table, meta, nodes[N_IN, s])
        n += 1
    return n


@njit(**_JIT)
def neighbours(nodes, edges, s, outward, kind):
    """Children (``outward``) or parents of slot ``s``, ascending; only ``kind`` unless it is -1."""
    if outward:
        e, nxt, end, deg = nodes[N_OUT, s], edges[E_NEXT_OUT], edges[E_CHILD], nodes[N_OUTDEG, s]
    else:
        e, nxt, end, deg = nodes[N_IN, s], edges[E_NEXT_IN], edges[E_PARENT], nodes[N_INDEG, s]
    out = np.empty(deg, np.int64)
    n = 0
    while e >= 0:
        if kind < 0 or edges[E_KIND, e] == kind:
            out[n] = end[e]
            n += 1
        e = nxt[e]
    return np.sort(out[:n])


@njit(**_JIT)
def _counting_sort(ids, key, ptr):
    # stable: ids with equal keys keep their input order
    pos = ptr[:-1].copy()
    out = np.empty_like(ids)
    for e in ids:
        k = key[e]
        out[pos[k]] = e
        pos[k] += 1
    return out


@njit(**_JIT)
def build_csr(edges, meta, n):
    """Forward and reverse CSR of the live edges over slots [0, n).

    Returns ``(indptr, indices, kinds, rindptr, rindices, rkinds)``: row ``p``
    of the forward CSR lists p's children ascending, row ``c`` of the reverse
    lists c's parents ascending; kinds are uint8, pointers int64 of n + 1.
    O(edges + n): three stable counting sorts, no comparison sort.
    """
    par, chi, kin = edges[E_PARENT], edges[E_CHILD], edges[E_KIND]
    fptr = np.zeros(n + 1, np.int64)
    rptr = np.zeros(n + 1, np.int64)
    live = np.empty(meta[M_COUNT], np.int64)
    m = 0
    for e in range(meta[M_HIGH]):
        if par[e] >= 0:
            fptr[par[e] + 1] += 1
            rptr[chi[e] + 1] += 1
            live[m] = e
            m += 1
    for s in range(n):
        fptr[s + 1] += fptr[s]
        rptr[s + 1] += rptr[s]
    by_child = _counting_sort(_counting_sort(live, par, fptr), chi, rptr)
    by_parent = _counting_sort(by_child, par, fptr)
    find, rind = np.empty(m, np.int64), np.empty(m, np.int64)
    fkind, rkind = np.empty(m, np.uint8), np.empty(m, np.uint8)
    for j in range(m):
        e = by_parent[j]
        find[j], fkind[j] = chi[e], kin[e]
        e = by_child[j]
        rind[j], rkind[j] = par[e], kin[e]
    return fptr, find, fkind, rptr, rind, rkind


@njit(**_JIT)
def levels(nodes, edges, n):
    """Per slot in [0, n): the longest edge path reaching it (0 for a slot without parents)."""
    lev = np.zeros(n, np.int64)
    at, head, nxt, chi = nodes[N_AT], nodes[N_OUT], edges[E_NEXT_OUT], edges[E_CHILD]
    for i in range(n):
        v = at[i]
        e = head[v]
        while e >= 0:
            c = chi[e]
            if lev[c] <= lev[v]:
                lev[c] = lev[v] + 1
            e = nxt[e]
    return lev


@njit(**_JIT)
def rehash(edges, meta, table):
    """Insert every live edge into ``table``, which is empty and large enough."""
    for e in range(meta[M_HIGH]):
        if edges[E_PARENT, e] >= 0:
            key = (edges[E_PARENT, e] << 32) | edges[E_CHILD, e]
            i = -_probe(table, key) - 1
            table[0, i], table[1, i] = key, e


@njit(**_JIT)
def clear(nodes, edges, table, meta, n):
    """Back to no edges and the identity order over slots [0, n), the ones ever used.

    Costs O(n + edge ids used): the table is emptied run by run from each live
    edge's home slot, not swept whole, so a table once grown large stays cheap.
    """
    mask = table.shape[1] - 1
    for e in range(meta[M_HIGH]):
        if edges[E_PARENT, e] >= 0:
            i = _home((edges[E_PARENT, e] << 32) | edges[E_CHILD, e], mask)
            while table[0, i] != -1:
                table[0, i] = -1
                i = (i + 1) & mask
    for s in range(n):
        nodes[N_ORD, s] = nodes[N_AT, s] = s
        nodes[N_OUT, s] = nodes[N_IN, s] = -1
        nodes[N_OUTDEG, s] = nodes[N_INDEG, s] = 0
    meta[M_FREE], meta[M_HIGH], meta[M_COUNT], meta[M_PATH] = -1, 0, 0, 0
