"""Dependency-graph kernels: edge storage, the incremental cycle check, CSR builds.

A graph is four int64 arrays, so a call passes four arguments, not one per field:

- ``nodes[capacity, N_COLS]``: per slot, its position in the maintained
  topological order, the heads of its out- and in-edge lists (-1 ends one) and
  a visit stamp. Slot-major: searches reach slots in random order and read all
  four fields, so one cache line each, not four.
- ``scratch[S_ROWS, capacity]``: the slot at each position (the order's
  inverse), the searches' stacks and found sets, and a row of counters (M_*).
- ``edges[edge_capacity, E_COLS]``: per edge id, parent, child, kind and the
  links of two doubly linked lists (its parent's out-edges, its child's
  in-edges; removal is O(1)). A free id has parent -1 and is chained through
  E_NEXT_OUT; ids below ``meta[M_HIGH]`` have been used.
- ``table[power of two, 2]``: linear probing from key ``parent << 32 | child``
  to the edge id; key -1 is empty. Deletion shifts entries back rather than
  leaving tombstones, so add/remove churn never clogs it.

Slots stay below 2**31 so that keys fit in int64. The order is Pearce and
Kelly's dynamic topological sort: an edge whose parent already comes first
costs O(1); otherwise only the slots positioned between child and parent are
searched and reordered. Nothing recurses: searches keep their path on an
explicit stack, so chains of any depth work.
"""

import numpy as np

from ._jit import inline, kernel


N_ORD, N_OUT, N_IN, N_MARK = range(4)
N_COLS = 4
S_AT, S_STACK, S_ITER, S_FWD, S_BWD, S_META = range(6)
S_ROWS = 6
E_PARENT, E_CHILD, E_KIND, E_NEXT_OUT, E_PREV_OUT, E_NEXT_IN, E_PREV_IN = range(7)
E_COLS = 8  # one unused: 64 bytes per edge
M_STAMP, M_FREE, M_HIGH, M_COUNT, M_PATH = range(5)
M_SIZE = 5  # the node capacity is at least this, so meta fits its row

ADDED, EXISTS, KIND_CLASH, CYCLE = 1, 0, -1, -2


@inline
def _home(key, mask):
    # Both halves times odd constants below 2**31 cannot overflow int64 (so
    # the kernels run unchanged as Python under NUMBA_DISABLE_JIT); the shifts
    # fold high bits down, as keys of one parent differ only in low bits.
    h = (key >> 32) * 0x5BD1E995 + (key & 0xFFFFFFFF) * 0x2C1B3C6D
    h ^= h >> 33
    h ^= h >> 15
    return h & mask


@inline
def _probe(table, key):
    """Table index holding ``key``, or ``-(index of the empty slot that ends the probe) - 1``."""
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = table[i, 0]
        if k == key:
            return i
        if k == -1:
            return -i - 1
        i = (i + 1) & mask


@kernel
def _table_delete(table, i):
    # Backward-shift deletion: pull later entries of the same run into the
    # hole unless their home lies cyclically within (hole, entry].
    mask = table.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[j, 0]
        if k == -1:
            break
        h = _home(k, mask)
        stays = (i < h <= j) if i <= j else (h > i or h <= j)
        if not stays:
            table[i, 0] = k
            table[i, 1] = table[j, 1]
            i = j
    table[i, 0] = -1


@kernel
def find_edge(table, p, c):
    """Edge id of ``p -> c``, or -1 when there is none."""
    i = _probe(table, (p << 32) | c)
    return table[i, 1] if i >= 0 else -1


@kernel
def _search(nodes, scratch, edges, start, bound, stamp, forward):
    """Depth-first search from ``start`` through children to slots positioned before
    ``bound`` (forward; found slots in S_FWD), or through parents to slots after it.

    Returns the count found, or, when the forward search meets the slot AT
    ``bound``, ``-(path length)`` with the path start .. that slot in S_STACK.
    """
    if forward:
        head, nxt, end, found, sign = N_OUT, E_NEXT_OUT, E_CHILD, scratch[S_FWD], 1
    else:
        head, nxt, end, found, sign = N_IN, E_NEXT_IN, E_PARENT, scratch[S_BWD], -1
    stack, it = scratch[S_STACK], scratch[S_ITER]
    limit = sign * bound
    nodes[start, N_MARK] = stamp
    found[0] = start
    n = 1
    stack[0] = start
    it[0] = nodes[start, head]
    top = 0
    while top >= 0:
        e = it[top]
        if e < 0:
            top -= 1
            continue
        it[top] = edges[e, nxt]
        w = edges[e, end]
        o = sign * nodes[w, N_ORD]
        if o == limit:  # forward only: w is the new edge's parent, so a cycle
            stack[top + 1] = w
            return -(top + 2)
        if o < limit and nodes[w, N_MARK] != stamp:
            nodes[w, N_MARK] = stamp
            found[n] = w
            n += 1
            top += 1
            stack[top] = w
            it[top] = nodes[w, head]
    return n


@kernel
def _reorder(nodes, scratch, edges, p, c, lb, ub):
    """Make room for ``p -> c`` when ``order[c] = lb < ub = order[p]``; False on a cycle."""
    meta = scratch[S_META]
    meta[M_STAMP] += 1  # a fresh stamp unmarks every slot without touching them
    stamp = meta[M_STAMP]
    nf = _search(nodes, scratch, edges, c, ub, stamp, True)
    if nf < 0:
        meta[M_PATH] = -nf
        return False
    nb = _search(nodes, scratch, edges, p, lb, stamp, False)
    fw, bw = scratch[S_FWD, :nf], scratch[S_BWD, :nb]
    # The two sets' positions, pooled, are handed out again: the ancestors of
    # p first, then the descendants of c, each set in its old relative order.
    _sort_by_order(nodes, bw)
    _sort_by_order(nodes, fw)
    pool = np.empty(nf + nb, np.int64)
    i = j = 0
    for k in range(nf + nb):  # the two sorted sets' positions, merged
        if j >= nf or (i < nb and nodes[bw[i], N_ORD] < nodes[fw[j], N_ORD]):
            pool[k] = nodes[bw[i], N_ORD]
            i += 1
        else:
            pool[k] = nodes[fw[j], N_ORD]
            j += 1
    for k in range(nf + nb):
        s = bw[k] if k < nb else fw[k - nb]
        nodes[s, N_ORD] = pool[k]
        scratch[S_AT, pool[k]] = s
    return True


@inline
def _sort_by_order(nodes, a):
    """Sort the slots ``a`` by their positions in the order (distinct, so any sort is stable).

    A heapsort: numba compiles it in a fraction of a second, where ``np.sort`` and
    ``np.argsort`` took 3-4 s of the first edge's compile.
    """
    n = a.size
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(nodes, a, root, n)
    for end in range(n - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(nodes, a, 0, end)


@inline
def _sift_down(nodes, a, root, end):
    x = a[root]
    key = nodes[x, N_ORD]
    while True:
        child = 2 * root + 1
        if child >= end:
            break
        if child + 1 < end and nodes[a[child + 1], N_ORD] > nodes[a[child], N_ORD]:
            child += 1
        if nodes[a[child], N_ORD] <= key:
            break
        a[root] = a[child]
        root = child
    a[root] = x


@kernel
def add_edge(nodes, scratch, edges, table, p, c, kind):
    """Add ``p -> c`` of ``kind``; both slots below the node capacity, room for one more edge.

    Returns ADDED; EXISTS (same edge and kind: nothing done); KIND_CLASH (the
    edge exists with another kind: nothing done); or CYCLE: nothing done but
    scratch, and S_STACK[:meta[M_PATH]] holds c .. p, a path of edges that the
    new edge would close into a cycle.
    """
    meta = scratch[S_META]
    key = (p << 32) | c
    slot = _probe(table, key)
    if slot >= 0:
        return EXISTS if edges[table[slot, 1], E_KIND] == kind else KIND_CLASH
    if p == c:
        scratch[S_STACK, 0] = p
        meta[M_PATH] = 1
        return CYCLE
    lb, ub = nodes[c, N_ORD], nodes[p, N_ORD]
    if lb < ub and not _reorder(nodes, scratch, edges, p, c, lb, ub):
        return CYCLE
    e = meta[M_FREE]
    if e >= 0:
        meta[M_FREE] = edges[e, E_NEXT_OUT]
    else:
        e = meta[M_HIGH]
        meta[M_HIGH] = e + 1
    h, t = nodes[p, N_OUT], nodes[c, N_IN]
    edges[e, E_PARENT], edges[e, E_CHILD], edges[e, E_KIND] = p, c, kind
    edges[e, E_NEXT_OUT], edges[e, E_PREV_OUT], edges[e, E_NEXT_IN], edges[e, E_PREV_IN] = h, -1, t, -1
    if h >= 0:
        edges[h, E_PREV_OUT] = e
    if t >= 0:
        edges[t, E_PREV_IN] = e
    nodes[p, N_OUT] = e
    nodes[c, N_IN] = e
    table[-slot - 1, 0], table[-slot - 1, 1] = key, e
    meta[M_COUNT] += 1
    return ADDED


@kernel
def add_edges(nodes, scratch, edges, table, parents, children, kind):
    """:func:`add_edge` for each pair in turn; room for all of them is already made.

    Returns ``(edges added, -1, ADDED)``, or at the first pair refused
    ``(0, its index, its code)`` after removing again, newest first, the edges
    this call added (the order keeps their moves; it stays valid).
    """
    added = np.zeros(parents.size, np.bool_)
    for i in range(parents.size):
        r = add_edge(nodes, scratch, edges, table, parents[i], children[i], kind)
        if r == ADDED:
            added[i] = True
        elif r != EXISTS:
            for j in range(i - 1, -1, -1):
                if added[j]:
                    _unlink(nodes, scratch, edges, table, find_edge(table, parents[j], children[j]))
            return 0, i, r
    return added.sum(), -1, ADDED


@kernel
def _unlink(nodes, scratch, edges, table, e):
    p, c = edges[e, E_PARENT], edges[e, E_CHILD]
    for nxt, prv, head, s in ((E_NEXT_OUT, E_PREV_OUT, N_OUT, p), (E_NEXT_IN, E_PREV_IN, N_IN, c)):
        nx, pv = edges[e, nxt], edges[e, prv]
        if nx >= 0:
            edges[nx, prv] = pv
        if pv >= 0:
            edges[pv, nxt] = nx
        else:
            nodes[s, head] = nx
    _table_delete(table, _probe(table, (p << 32) | c))
    meta = scratch[S_META]
    edges[e, E_PARENT] = -1
    edges[e, E_NEXT_OUT] = meta[M_FREE]
    meta[M_FREE] = e
    meta[M_COUNT] -= 1


@kernel
def remove_edge(nodes, scratch, edges, table, p, c):
    """Remove ``p -> c``; False (nothing done) when there is no such edge.

    The order is left as it is: removing an edge never makes it invalid.
    """
    e = find_edge(table, p, c)
    if e < 0:
        return False
    _unlink(nodes, scratch, edges, table, e)
    return True


@kernel
def remove_node(nodes, scratch, edges, table, s):
    """Remove every edge into or out of slot ``s``; the number removed."""
    n = 0
    for head in (N_OUT, N_IN):
        while nodes[s, head] >= 0:
            _unlink(nodes, scratch, edges, table, nodes[s, head])
            n += 1
    return n


@kernel
def neighbours(nodes, scratch, edges, s, outward, kind):
    """Children (``outward``) or parents of slot ``s``, ascending; only ``kind`` unless it is -1."""
    head, nxt, end = (N_OUT, E_NEXT_OUT, E_CHILD) if outward else (N_IN, E_NEXT_IN, E_PARENT)
    buf = scratch[S_FWD]  # distinct slots, so it has room
    n = 0
    e = nodes[s, head]
    while e >= 0:
        if kind < 0 or edges[e, E_KIND] == kind:
            buf[n] = edges[e, end]
            n += 1
        e = edges[e, nxt]
    return np.sort(buf[:n])


@kernel
def _transpose(ptr, ind, kinds, tptr):
    # Rows are scanned in order, so each transposed row comes out ascending.
    pos = tptr[:-1].copy()
    tind = np.empty_like(ind)
    tkinds = np.empty_like(kinds)
    for r in range(ptr.size - 1):
        for j in range(ptr[r], ptr[r + 1]):
            k = pos[ind[j]]
            tind[k], tkinds[k] = r, kinds[j]
            pos[ind[j]] = k + 1
    return tind, tkinds


@kernel
def build_csr(scratch, edges, n):
    """Forward and reverse CSR of the edges over slots [0, n).

    Returns ``(indptr, indices, kinds, rindptr, rindices, rkinds)``: row ``p``
    of the forward CSR lists p's children ascending, row ``c`` of the reverse
    lists c's parents ascending; kinds are uint8, pointers int64 of n + 1.
    O(edges + n), no comparison sort: a scatter by child, then two transposes,
    each of which leaves its rows sorted.
    """
    meta = scratch[S_META]
    fptr = np.zeros(n + 1, np.int64)
    rptr = np.zeros(n + 1, np.int64)
    for e in range(meta[M_HIGH]):
        if edges[e, E_PARENT] >= 0:
            fptr[edges[e, E_PARENT] + 1] += 1
            rptr[edges[e, E_CHILD] + 1] += 1
    fptr, rptr = np.cumsum(fptr), np.cumsum(rptr)
    pos = rptr[:-1].copy()
    ind = np.empty(meta[M_COUNT], np.int64)
    kinds = np.empty(meta[M_COUNT], np.uint8)
    for e in range(meta[M_HIGH]):
        c = edges[e, E_CHILD]
        if edges[e, E_PARENT] >= 0:
            ind[pos[c]], kinds[pos[c]] = edges[e, E_PARENT], edges[e, E_KIND]
            pos[c] += 1
    find, fkinds = _transpose(rptr, ind, kinds, fptr)
    rind, rkinds = _transpose(fptr, find, fkinds, rptr)
    return fptr, find, fkinds, rptr, rind, rkinds


@kernel
def levels(nodes, scratch, edges, n):
    """Per slot in [0, n): the longest edge path reaching it (0 for a slot without parents)."""
    lev = np.zeros(n, np.int64)
    at = scratch[S_AT]
    for i in range(n):
        v = at[i]
        e = nodes[v, N_OUT]
        while e >= 0:
            c = edges[e, E_CHILD]
            if lev[c] <= lev[v]:
                lev[c] = lev[v] + 1
            e = edges[e, E_NEXT_OUT]
    return lev


@kernel
def rehash(scratch, edges, table):
    """Insert every edge into ``table``, which is empty and large enough."""
    for e in range(scratch[S_META, M_HIGH]):
        if edges[e, E_PARENT] >= 0:
            key = (edges[e, E_PARENT] << 32) | edges[e, E_CHILD]
            i = -_probe(table, key) - 1
            table[i, 0], table[i, 1] = key, e


@kernel
def clear(nodes, scratch, edges, table, n):
    """Back to no edges and the identity order over slots [0, n), the ones ever used.

    Costs O(n + edge ids used): the table is emptied run by run from each
    edge's home slot, not swept whole, so a table once grown large stays cheap.
    """
    meta = scratch[S_META]
    mask = table.shape[0] - 1
    for e in range(meta[M_HIGH]):
        if edges[e, E_PARENT] >= 0:
            i = _home((edges[e, E_PARENT] << 32) | edges[e, E_CHILD], mask)
            while table[i, 0] != -1:
                table[i, 0] = -1
                i = (i + 1) & mask
    for s in range(n):
        nodes[s, N_ORD] = s
        scratch[S_AT, s] = s
        nodes[s, N_OUT] = -1
        nodes[s, N_IN] = -1
    meta[M_FREE], meta[M_HIGH], meta[M_COUNT], meta[M_PATH] = -1, 0, 0, 0
