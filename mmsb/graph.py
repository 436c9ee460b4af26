"""The dependency graph: directed edges parent -> child with a kind, over node slots.

Nodes are slots, plain ints 0 .. 2**31 - 2 (a page id's slot, its low 32 bits;
the caller maps ids to slots and back). The graph is kept acyclic: an edge
that would close a cycle is refused with the cycle's path, and the check is
incremental (a maintained topological order, see ``mmsb.kernels.graph``), so
building a graph of E edges costs about E small kernel calls, not E searches
of the whole graph. Kernels read it as forward and reverse CSR arrays, built
lazily in one call after a change and cached until the next one.

Numba loads with the first Graph, not at ``import mmsb.graph``.
"""

from __future__ import annotations

import operator
from typing import Iterator

import numpy as np

from ._layout import R_EDGES, R_EDGES_ROWS, R_NODES, R_NODES_ROWS, R_NUM_EDGES
from ._registers import Published, PublishedInt
from .errors import GraphCycleError, InvalidArgumentError

__all__ = ["Graph", "KIND_DATA", "KIND_CONTROL", "KIND_SYNC", "FIRST_USER_KIND", "MAX_SLOT"]

KIND_DATA = 0  # the child is recomputed from its parents
KIND_CONTROL = 1  # the child is marked stale and an event fires
KIND_SYNC = 2  # the child's host and device copies are brought in line
FIRST_USER_KIND = 16  # codes 3..15 are kept for future built-in kinds
MAX_KIND = 255  # kinds travel as uint8 in the CSR arrays
MAX_SLOT = (1 << 31) - 2  # (parent, child) keys pack two slots into one int64
_BUILTIN = {"data": KIND_DATA, "control": KIND_CONTROL, "sync": KIND_SYNC}

_k = None  # mmsb.kernels.graph, once a Graph exists


def _kernels():
    global _k
    if _k is None:
        from .kernels import graph

        _k = graph
    return _k


def _slot(x) -> int:
    if type(x) is not int:
        try:
            x = operator.index(x)
        except TypeError:
            raise InvalidArgumentError(f"a node slot must be an int, got {x!r}") from None
    if not 0 <= x <= MAX_SLOT:
        raise InvalidArgumentError(f"node slot {x} is outside 0 .. {MAX_SLOT}")
    return x


class Graph:
    """Directed acyclic graph over node slots, with an edge kind per edge.

    ``capacity`` and ``edge_capacity`` are initial sizes only: both double as
    needed. Every method either does what it says or raises and changes
    nothing (:meth:`add_edges` says what it may leave moved). Arrays returned
    are the caller's own, except the CSR arrays, which are read-only and
    shared until the next change. One thread at a time: the kernels share
    scratch rows.
    """

    # the arrays a commit kernel walks, and the edge count that says whether to cascade
    _nodes = Published(R_NODES, R_NODES_ROWS)
    _edges = Published(R_EDGES, R_EDGES_ROWS)
    _ne = PublishedInt(R_NUM_EDGES)
    _regs = None  # the registers of the state core that owns this graph (mmsb._registers)

    def __init__(self, capacity: int = 64, edge_capacity: int = 64) -> None:
        k = _kernels()
        self._nodes = np.empty((0, k.N_COLS), np.int64)
        self._scratch = np.zeros((k.S_ROWS, 0), np.int64)
        self._cap = 0
        self._grow_nodes(max(k.M_SIZE, int(capacity)))
        self._scratch[k.S_META, k.M_FREE] = -1
        self._ecap = max(1, int(edge_capacity))
        self._edges = np.empty((self._ecap, k.E_COLS), np.int64)
        self._table = np.full((1 << (2 * self._ecap - 1).bit_length(), 2), -1, np.int64)
        self._n = 0  # slots below this may have been used; all others are untouched
        self._ne = 0
        self._csr = None
        self._reset_kinds()

    def __setstate__(self, state):  # an unpickled Graph never ran __init__
        _kernels()
        self.__dict__.update(state)

    def _reset_kinds(self) -> None:
        self._kinds = dict(_BUILTIN)
        self._names = {code: name for name, code in _BUILTIN.items()}

    def kind_code(self, name: str) -> int:
        """The code of kind ``name``: data 0, control 1, sync 2; a new name gets the next free
        code from 16 (in first-use order, per graph, forgotten by :meth:`clear`).

        Raises InvalidArgumentError for a name that is not a non-empty str, or when
        all codes up to 255 are taken.
        """
        code = self._kinds.get(name) if isinstance(name, str) else None
        if code is None:
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"an edge kind name must be a non-empty str, got {name!r}")
            code = FIRST_USER_KIND + len(self._kinds) - len(_BUILTIN)
            if code > MAX_KIND:
                raise InvalidArgumentError(f"no edge kind code left for {name!r}")
            self._kinds[name] = code
            self._names[code] = name
        return code

    def kind_name(self, code: int) -> str:
        """The name of kind ``code``; InvalidArgumentError if no kind has it."""
        try:
            return self._names[code]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"no edge kind has code {code!r}") from None

    def _kind(self, kind) -> int:
        if isinstance(kind, str):
            return self.kind_code(kind)
        try:
            code = operator.index(kind)
        except TypeError:
            raise InvalidArgumentError(f"an edge kind is a code or a name, got {kind!r}") from None
        if code not in self._names:
            raise InvalidArgumentError(f"no edge kind has code {code}")
        return code

    def _grow_nodes(self, need: int) -> None:
        old, cap, k = self._cap, max(self._cap, 1), _k
        while cap < need:
            cap *= 2
        nodes = np.empty((cap, k.N_COLS), np.int64)
        nodes[:old] = self._nodes
        scratch = np.zeros((k.S_ROWS, cap), np.int64)
        scratch[:, :old] = self._scratch
        # a slot no edge has touched sits at its own position, so the order
        # takes in new slots without renumbering
        fresh = np.arange(old, cap, dtype=np.int64)
        nodes[old:, k.N_ORD] = fresh
        scratch[k.S_AT, old:] = fresh
        nodes[old:, k.N_OUT] = -1
        nodes[old:, k.N_IN] = -1
        nodes[old:, k.N_MARK] = 0
        self._nodes, self._scratch, self._cap = nodes, scratch, cap

    def _grow_edges(self) -> None:
        edges = np.empty((2 * self._ecap, self._edges.shape[1]), np.int64)
        edges[: self._ecap] = self._edges
        self._edges, self._ecap = edges, 2 * self._ecap
        if 2 * self._ecap > self._table.shape[0]:  # the load factor stays <= 1/2
            self._table = np.full((2 * self._table.shape[0], 2), -1, np.int64)
            _k.rehash(self._scratch, self._edges, self._table)

    def reserve(self, num_nodes: int = 0, num_edges: int = 0) -> None:
        """Make room for slots below ``num_nodes`` and ``num_edges`` edges; changes nothing else."""
        if num_nodes > self._cap:
            self._grow_nodes(int(num_nodes))
        while num_edges > self._ecap:
            self._grow_edges()

    def add_edge(self, parent: int, child: int, kind: int | str = KIND_DATA) -> bool:
        """Add the edge ``parent -> child`` of ``kind`` (a code or a name); True when added.

        False, and nothing done, when that edge already exists with that kind.
        Raises InvalidArgumentError when it exists with another kind or an
        argument is invalid; GraphCycleError when the edge would close a cycle:
        ``.path`` is ``[child, ..., parent, child]``, each consecutive pair an
        edge (the last one the refused edge), ``[p, p]`` for a self-loop. On a
        raise the graph is as it was.
        """
        # the common case (plain ints, a known code) stays inline: each Python
        # call here costs about as much as the kernel's own work
        p = parent if type(parent) is int else _slot(parent)
        c = child if type(child) is int else _slot(child)
        if not (0 <= p <= MAX_SLOT and 0 <= c <= MAX_SLOT):
            _slot(p), _slot(c)
        if type(kind) is not int or kind not in self._names:
            kind = self._kind(kind)
        if p >= self._cap or c >= self._cap:
            self._grow_nodes(max(p, c) + 1)
        if self._ne == self._ecap:
            self._grow_edges()
        r = _k.add_edge(self._nodes, self._scratch, self._edges, self._table, p, c, kind)
        if r == 1:
            self._ne += 1
            self._csr = None
            if p >= self._n or c >= self._n:
                self._n = max(p, c) + 1
            return True
        if r == 0:
            return False
        self._refuse(p, c, r)

    def _refuse(self, p: int, c: int, code: int):
        if code == _k.KIND_CLASH:
            old = self.kind_name(self.edge_kind(p, c))
            raise InvalidArgumentError(f"edge {p} -> {c} exists with kind {old!r}")
        path = self._scratch[_k.S_STACK, : self._scratch[_k.S_META, _k.M_PATH]].tolist() + [c]
        shown = " -> ".join(map(str, path if len(path) <= 12 else path[:6] + ["..."] + path[-5:]))
        raise GraphCycleError(f"edge {p} -> {c} would close a cycle of {len(path) - 1}: {shown}", path)

    def add_edges(self, parents, children, kind: int | str = KIND_DATA) -> int:
        """Add the edges ``parents[i] -> children[i]`` of ``kind``, in order, in one kernel
        call; how many were new (an edge already there with that kind is skipped).

        All or nothing: at the first edge :meth:`add_edge` would refuse, the
        edges this call added are removed again and the same error is raised
        (a cycle's path may run through edges given earlier in the call).
        Afterwards the order may differ and ``num_nodes`` may cover the slots
        given before the refused edge; the edges are as they were.
        """
        p, c = np.asarray(parents), np.asarray(children)
        ints = p.dtype.kind in "iu" and c.dtype.kind in "iu"
        if p.ndim != 1 or p.shape != c.shape or (p.size and not ints):
            raise InvalidArgumentError("parents and children must be 1-d integer arrays of one length")
        kind = self._kind(kind)
        if p.size == 0:
            return 0
        p, c = p.astype(np.int64), c.astype(np.int64)
        hi = int(max(p.max(), c.max()))
        if min(p.min(), c.min()) < 0 or hi > MAX_SLOT:
            raise InvalidArgumentError(f"node slots must lie in 0 .. {MAX_SLOT}")
        self.reserve(hi + 1, self._ne + p.size)
        args = self._nodes, self._scratch, self._edges, self._table
        added, bad, code = _k.add_edges(*args, p, c, kind)
        if bad < 0:
            self._ne += added
            self._csr = None if added else self._csr
            self._n = max(self._n, hi + 1)
            return int(added)
        if bad:  # reorders may have moved these slots: num_nodes must cover them
            self._n = max(self._n, int(p[:bad].max()) + 1, int(c[:bad].max()) + 1)
            self._csr = None
        self._refuse(int(p[bad]), int(c[bad]), code)

    def remove_edge(self, parent: int, child: int) -> None:
        """Remove the edge ``parent -> child``; InvalidArgumentError if there is none."""
        p, c = _slot(parent), _slot(child)
        if p >= self._n or c >= self._n or not _k.remove_edge(
            self._nodes, self._scratch, self._edges, self._table, p, c
        ):
            raise InvalidArgumentError(f"no edge {p} -> {c}")
        self._ne -= 1
        self._csr = None

    def remove_node(self, slot: int) -> int:
        """Remove every edge into or out of ``slot``; how many. The slot stays usable."""
        s = _slot(slot)
        if s >= self._n:
            return 0
        n = _k.remove_node(self._nodes, self._scratch, self._edges, self._table, s)
        if n:
            self._ne -= n
            self._csr = None
        return n

    def has_edge(self, parent: int, child: int) -> bool:
        """Whether the edge ``parent -> child`` exists (of any kind)."""
        return self.edge_kind(parent, child) is not None

    def edge_kind(self, parent: int, child: int) -> int | None:
        """The kind code of ``parent -> child``, or None when there is no such edge."""
        p, c = _slot(parent), _slot(child)
        if p >= self._n or c >= self._n:
            return None
        e = _k.find_edge(self._table, p, c)
        return None if e < 0 else int(self._edges[e, _k.E_KIND])

    def _neighbours(self, slot, outward, kind) -> np.ndarray:
        s = _slot(slot)
        code = -1 if kind is None else self._kind(kind)
        if s >= self._n:
            return np.empty(0, np.int64)
        return _k.neighbours(self._nodes, self._scratch, self._edges, s, outward, code)

    def children(self, slot: int, kind: int | str | None = None) -> np.ndarray:
        """The children of ``slot`` (only through edges of ``kind`` if given), ascending int64."""
        return self._neighbours(slot, True, kind)

    def parents(self, slot: int, kind: int | str | None = None) -> np.ndarray:
        """The parents of ``slot`` (only through edges of ``kind`` if given), ascending int64."""
        return self._neighbours(slot, False, kind)

    @property
    def num_edges(self) -> int:
        return self._ne

    @property
    def num_nodes(self) -> int:
        """One past the highest slot any edge has touched since creation or :meth:`clear`."""
        return self._n

    def edges(self) -> Iterator[tuple[int, int, int]]:
        """Every edge as ``(parent, child, kind code)``, ordered by parent then child."""
        indptr, indices, kinds = self.csr()
        parents = np.repeat(np.arange(self._n, dtype=np.int64), np.diff(indptr))
        return zip(parents.tolist(), indices.tolist(), kinds.tolist())

    def _build(self):
        if self._csr is None:
            arrays = _k.build_csr(self._scratch, self._edges, self._n)
            for a in arrays:
                a.setflags(write=False)
            self._csr = (arrays[:3], arrays[3:])
        return self._csr

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward CSR over slots [0, num_nodes): ``(indptr int64[n+1], indices int64, kinds uint8)``.

        Row p, ``indices[indptr[p]:indptr[p+1]]``, holds p's children ascending,
        with their edges' kinds beside them. Built in one kernel call (with the
        reverse) on the first call after a change; read-only.
        """
        return self._build()[0]

    def reverse_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reverse CSR: row c holds c's parents ascending; otherwise as :meth:`csr`."""
        return self._build()[1]

    def topo_order(self) -> np.ndarray:
        """Slots [0, num_nodes) in a topological order: every edge's parent before its child.

        The maintained order, copied (O(num_nodes)); slots without edges are in it too.
        """
        return self._scratch[_k.S_AT, : self._n].copy()

    def levels(self) -> np.ndarray:
        """Per slot in [0, num_nodes), the length of the longest edge path ending at it."""
        return _k.levels(self._nodes, self._scratch, self._edges, self._n)

    def clear(self) -> None:
        """Drop every edge and named kind: afterwards the graph answers every call as a new one.

        Costs O(slots and edges used since the last clear); capacities are kept.
        """
        _k.clear(self._nodes, self._scratch, self._edges, self._table, self._n)
        self._n = 0
        self._ne = 0
        self._csr = None
        self._reset_kinds()

    def __repr__(self) -> str:
        return f"<mmsb.Graph {self._n} nodes, {self._ne} edges>"
