"""A slow, obviously-correct model of mmsb's propagation layer.

Written from the contract (the State docstrings and the README), not from mmsb's code:
pages are bytearrays, the graph a dict of edges, and every commit walks the WHOLE page set in a
topological order found here by Kahn's algorithm, recomputing from scratch each bound page one
of whose parents changed in the commit.  A page none of whose parents changed keeps its bytes,
so a direct write to a derived page stands until a parent next changes (the contract says so).

The contract fixes "a topological order", not which one, and the order decides the LSNs of a
cascade's deltas.  So `commit` takes `prefer`: page id -> rank; among the pages ready at one
Kahn step the lowest rank goes first (unranked pages first of all).  The tests pass the order
mmsb logged; when that order is a valid topological order the model reproduces it, and when it
is not, Kahn cannot, and the LSNs disagree.
"""

import heapq

import numpy as np

BITWISE = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}


def run_op(op, dtype, weights, parents):
    """The child's bytes from its parents' bytes (a list of bytes objects)."""
    if callable(op):
        views = []
        for p in parents:
            v = np.frombuffer(bytes(p), np.uint8)  # frombuffer on bytes is read-only already
            views.append(v)
        out = np.ascontiguousarray(op(*views))
        return bytes(out.reshape(-1).view(np.uint8))
    if op == "passthrough":
        return bytes(parents[0])
    if op in BITWISE:  # raw bytes, whatever the dtype
        acc = np.frombuffer(parents[0], np.uint8).copy()
        for p in parents[1:]:
            acc = BITWISE[op](acc, np.frombuffer(p, np.uint8))
        return acc.tobytes()
    dt = np.dtype(dtype)
    xs = [np.frombuffer(p, dt) for p in parents]
    ws = [dt.type(w) for w in weights]
    with np.errstate(all="ignore"):
        if op == "minplus":
            acc = xs[0] + ws[0]
            for x, w in zip(xs[1:], ws[1:]):
                v = x + w
                acc = np.where(v < acc, v, acc)  # a NaN candidate never wins, as "<" says
        elif op == "orand":
            hit = [(x != 0) & (w != 0) for x, w in zip(xs, ws)]
            acc = np.logical_or.reduce(hit).astype(dt)
        else:
            acc = xs[0].copy()
            for x in xs[1:]:
                if op == "sum":
                    acc = acc + x
                elif op == "min":
                    acc = np.where(x < acc, x, acc)
                elif op == "max":
                    acc = np.where(x > acc, x, acc)
                else:
                    raise ValueError(op)
    return acc.astype(dt).tobytes()


class Binding:
    def __init__(self, op, dtype, parents, weights, mirror=False, writable=False):
        self.op, self.dtype, self.parents, self.weights = op, dtype, list(parents), list(weights)
        self.mirror = mirror  # made by a sync edge: the child copies its one parent
        self.writable = writable  # direct writes allowed (else refused: the binding owns the page)


class Commit:
    """What one commit did: LSN range, pages written and derived, pages reported per event."""

    def __init__(self):
        self.first = self.last = None
        self.written = []   # distinct pages the call wrote and changed
        self.derived = []   # pages the cascade changed, in LSN order
        self.stale = {}     # event name -> set of page ids
        self.batch_lsns = []

    def events(self):
        """(name, args...) of each event due after the commit; ids as sets where order is free."""
        if self.first is None:
            return []
        out = [("page_changed", frozenset(self.written), tuple(self.derived)),
               ("delta_applied", self.first, self.last),
               ("cascade_done", len(self.written), len(self.derived), self.last)]
        return out + [(name, frozenset(ids)) for name, ids in self.stale.items()]


class NaivePropagation:
    def __init__(self):
        self.pages = {}     # id -> bytearray
        self.epochs = {}
        self.lsn = 0
        self.log = []       # (lsn, page id, epoch, indices, values, causes)
        self.images = []    # (before, after) per log record
        self.edges = {}     # (parent, child) -> kind name
        self.bindings = {}  # child -> Binding

    def add_page(self, pid, size):
        self.pages[pid] = bytearray(size)
        self.epochs[pid] = 0

    # ---- graph ---------------------------------------------------------------------------
    def children(self, pid):
        return [c for (p, c) in self.edges if p == pid]

    def path(self, a, b):
        """A list of ids along edges from a to b, or None (depth-first, no recursion)."""
        todo, came = [a], {a: None}
        while todo:
            v = todo.pop()
            if v == b:
                out = [v]
                while came[out[-1]] is not None:
                    out.append(came[out[-1]])
                return out[::-1]
            for w in self.children(v):
                if w not in came:
                    came[w] = v
                    todo.append(w)
        return None

    def topo(self, prefer):
        """All pages, parents before children, through data and sync edges (Kahn)."""
        indeg = {pid: 0 for pid in self.pages}
        for (p, c), kind in self.edges.items():
            if kind in ("data", "sync"):
                indeg[c] += 1
        ready = [(prefer.get(v, -1), v) for v, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, v = heapq.heappop(ready)
            order.append(v)
            for (p, c), kind in self.edges.items():
                if p == v and kind in ("data", "sync"):
                    indeg[c] -= 1
                    if indeg[c] == 0:
                        heapq.heappush(ready, (prefer.get(c, -1), c))
        assert len(order) == len(self.pages), "the model's graph has a cycle"
        return order

    # ---- commits -------------------------------------------------------------------------
    def _delta(self, pid, after, indices, values, causes, changed, com):
        before = bytes(self.pages[pid])
        if after == before:
            return None
        self.images.append((before, after))
        self.pages[pid][:] = after
        self.epochs[pid] += 1
        self.lsn += 1
        self.log.append((self.lsn, pid, self.epochs[pid], tuple(indices), tuple(values), tuple(causes)))
        changed[pid] = self.lsn
        com.first = com.first or self.lsn
        com.last = self.lsn
        return self.lsn

    def commit(self, writes=(), dirty=None, prefer=None):
        """Apply sparse writes [(pid, indices, values)] in order, then the whole cascade."""
        com, changed = Commit(), {}
        for pid, idx, vals in writes:
            after = bytearray(self.pages[pid])
            for i, v in zip(idx, vals):
                after[int(i)] = int(v)
            lsn = self._delta(pid, bytes(after), [int(i) for i in idx], [int(v) for v in vals], (), changed, com)
            com.batch_lsns.append(lsn or 0)
            if lsn and pid not in com.written:
                com.written.append(pid)
        for v in self.topo(prefer or {}):
            b = self.bindings.get(v)
            if b is None or not (v == dirty or any(p in changed for p in b.parents)):
                continue
            new = run_op(b.op, b.dtype, b.weights, [bytes(self.pages[p]) for p in b.parents])
            assert len(new) == len(self.pages[v])
            old = self.pages[v]
            idx = [i for i in range(len(new)) if new[i] != old[i]]
            causes = [changed[p] for p in b.parents if p in changed]
            if self._delta(v, new, idx, [new[i] for i in idx], causes, changed, com):
                com.derived.append(v)
        for pid in changed:
            for c in self.children(pid):
                kind = self.edges[(pid, c)]
                if kind != "data":
                    name = "page_stale" if kind in ("control", "sync") else kind
                    com.stale.setdefault(name, set()).add(c)
        return com

    def update_page(self, pid, data, prefer=None):
        old = self.pages[pid]
        idx = [i for i in range(len(old)) if old[i] != data[i]]
        return self.commit([(pid, idx, [data[i] for i in idx])], prefer=prefer)

    # ---- bindings and edges ----------------------------------------------------------------
    def guarded(self, pid):
        """Whether a direct write to ``pid`` is refused: it is bound, and not writable."""
        b = self.bindings.get(pid)
        return b is not None and not b.writable

    def register(self, child, parents, op, dtype="uint8", weights=None, prefer=None, writable=False):
        old = self.bindings.get(child)
        if old is not None:  # a binding replaced: the parents it no longer names lose their edges
            for p in old.parents:
                if p not in parents:
                    del self.edges[(p, child)]
        for p in parents:
            self.edges.setdefault((p, child), "data")
        self.bindings[child] = Binding(op, dtype, parents, weights or [0] * len(parents), writable=writable)
        return self.commit(dirty=child, prefer=prefer)

    def refuses(self, parent, child, kind):
        """Whether add_dependency must refuse the edge (InvalidArgumentError): a sync edge makes
        its child a mirror, which needs the parent's size and no other binding or data parent."""
        b = self.bindings.get(child)
        if b is not None and b.mirror and kind in ("data", "sync"):
            return True
        if kind == "sync":
            data_parents = [p for (p, c), k in self.edges.items() if c == child and k == "data"]
            return len(self.pages[parent]) != len(self.pages[child]) or b is not None or bool(data_parents)
        return False

    def add_dependency(self, parent, child, kind, prefer=None):
        """The cycle's path [child, ..., parent, child] when refused, else the Commit (or None)."""
        back = self.path(child, parent)
        if back is not None:
            return back + [child]
        self.edges[(parent, child)] = kind
        b = self.bindings.get(child)
        if kind == "sync":
            self.bindings[child] = Binding("passthrough", "uint8", [parent], [0], mirror=True)
            return self.commit(dirty=child, prefer=prefer)
        if kind == "data" and b is not None:
            b.parents.append(parent)
            b.weights.append(0)
            return self.commit(dirty=child, prefer=prefer)
        return None

    def _drop_parent(self, child, parent):
        b = self.bindings.get(child)
        if b is None or parent not in b.parents:
            return False
        i = b.parents.index(parent)
        del b.parents[i], b.weights[i]
        if not b.parents:
            del self.bindings[child]
            return False
        return True

    def remove_dependency(self, parent, child, prefer=None):
        del self.edges[(parent, child)]
        if self._drop_parent(child, parent):
            return self.commit(dirty=child, prefer=prefer)
        return None

    def dependents(self, pid):
        return [c for (p, c) in self.edges if p == pid]

    def delete_page(self, pid, dependents="refuse"):
        """The page goes, and with it, as asked, the bindings that read it (their edges too; bytes
        stay) or every page below it ("refuse" with dependents is refused: the caller checks)."""
        kids = self.dependents(pid)
        assert not (kids and dependents == "refuse")
        if dependents == "delete":
            for c in kids:
                if c in self.pages:
                    self.delete_page(c, "delete")
        for c in kids:
            b = self.bindings.get(c)
            if c in self.pages and b is not None and pid in b.parents:
                for p in b.parents:
                    self.edges.pop((p, c), None)
                del self.bindings[c]
        del self.pages[pid], self.epochs[pid]
        self.bindings.pop(pid, None)
        for (p, c) in list(self.edges):
            if pid in (p, c):
                del self.edges[(p, c)]

    def unbind(self, child):
        for p in self.bindings.pop(child).parents:
            del self.edges[(p, child)]
