"""The dependency graph: directed edges parent -> child with a kind, over node slots.

Nodes are slots, plain ints 0 .. 2**31 - 2 (a page id's slot, DESIGN.md §1;
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
    nothing. Arrays returned are the caller's own, except the CSR arrays,
    which are read-only and shared until the next change.
    """

    def __init__(self, capacity: int = 1024, edge_capacity: int = 1024) -> None:
        k = _kernels()
        cap = max(1, int(capacity))
        self._nodes = np.empty((k.N_ROWS, 0), np.int64)
        self._grow_nodes(cap)
        self._edges = np.empty((k.E_ROWS, max(1, int(edge_capacity))), np.int64)
        self._table = np.full((2, 1 << max(3, (2 * self._edges.shape[1] - 1).bit_length())), -1, np.int64)
        self._meta = np.zeros(k.M_SIZE, np.int64)
        self._meta[k.M_FREE] = -1
        self._n = 0  # slots below this may have been used; all others are untouched
        self._ne = 0
        self._csr = None
        self._reset_kinds()

    def __setstate__(self, state):  # an unpickled Graph never ran __init__
        _kernels()
        self.__dict__.update(state)

    # -- kinds -----------------------------------------------------------------

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

    # -- growth ----------------------------------------------------------------

    def _grow_nodes(self, need: int) -> None:
        old = self._nodes
        cap = max(old.shape[1], 1)
        while cap < need:
            cap *= 2
        k = _k
        nodes = np.zeros((k.N_ROWS, cap), np.int64)
        nodes[:, : old.shape[1]] = old
        fresh = np.arange(old.shape[1], cap, dtype=np.int64)
        # untouched slots sit at their own position, so the order needs no
        # renumbering when slots are added
        nodes[k.N_ORD, old.shape[1]:] = fresh
        nodes[k.N_AT, old.shape[1]:] = fresh
        nodes[k.N_OUT, old.shape[1]:] = -1
        nodes[k.N_IN, old.shape[1]:] = -1
        self._nodes = nodes

    def _grow_edges(self) -> None:
        old = self._edges
        self._edges = np.empty((old.shape[0], 2 * old.shape[1]), np.int64)
        self._edges[:, : old.shape[1]] = old
        if 2 * self._edges.shape[1] > self._table.shape[1]:  # load factor stays <= 1/2
            self._table = np.full((2, 2 * self._table.shape[1]), -1, np.int64)
            _k.rehash(self._edges, self._meta, self._table)

    def reserve(self, num_nodes: int = 0, num_edges: int = 0) -> None:
        """Make room for slots below ``num_nodes`` and ``num_edges`` edges; changes nothing else."""
        if num_nodes > self._nodes.shape[1]:
            self._grow_nodes(int(num_nodes))
        while num_edges > self._edges.shape[1]:
            self._grow_edges()

    # -- edges -----------------------------------------------------------------

    def add_edge(self, parent: int, child: int, kind: int | str = KIND_DATA) -> bool:
        """Add the edge ``parent -> child`` of ``kind`` (a code or a name); True when added.

        False, and nothing done, when that edge already exists with that kind.
        Raises InvalidArgumentError when it exists with another kind or an
        argument is invalid; GraphCycleError when the edge would close a cycle:
        ``.path`` is ``[child, ..., parent, child]``, each consecutive pair an
        edge (the last one the refused edge), ``[p, p]`` for a self-loop. On a
        raise the graph is as it was.
        """
        p, c = _slot(parent), _slot(child)
        if type(kind) is not int or kind not in self._names:
            kind = self._kind(kind)
        if p >= self._n or c >= self._n:
            if max(p, c) >= self._nodes.shape[1]:
                self._grow_nodes(max(p, c) + 1)
        if self._ne == self._edges.shape[1]:
            self._grow_edges()
        r = _k.add_edge(self._nodes, self._edges, self._table, self._meta, p, c, kind)
        if r == 1:
            self._ne += 1
            self._csr = None
            if p >= self._n or c >= self._n:
                self._n = max(p, c) + 1
            return True
        if r == 0:
            return False
        if r == -1:
            raise InvalidArgumentError(
                f"edge {p} -> {c} exists with kind {self.kind_name(self.edge_kind(p, c))!r}"
            )
        path = self._nodes[_k.N_STACK, : self._meta[_k.M_PATH]].tolist() + [c]
        raise GraphCycleError(f"edge {p} -> {c} would close the cycle {path}", path)

    def remove_edge(self, parent: int, child: int) -> None:
        """Remove the edge ``parent -> child``; InvalidArgumentError if there is none."""
        p, c = _slot(parent), _slot(child)
        if p >= self._n or c >= self._n or not _k.remove_edge(
            self._nodes, self._edges, self._table, self._meta, p, c
        ):
            raise InvalidArgumentError(f"no edge {p} -> {c}")
        self._ne -= 1
        self._csr = None

    def remove_node(self, slot: int) -> int:
        """Remove every edge into or out of ``slot``; how many. The slot stays usable."""
        s = _slot(slot)
        if s >= self._n:
            return 0
        n = _k.remove_node(self._nodes, self._edges, self._table, self._meta, s)
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
        return None if e < 0 else int(self._edges[_k.E_KIND, e])

    def _neighbours(self, slot, outward, kind) -> np.ndarray:
        s = _slot(slot)
        code = -1 if kind is None else self._kind(kind)
        if s >= self._n:
            return np.empty(0, np.int64)
        return _k.neighbours(self._nodes, self._edges, s, outward, code)

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

    # -- arrays for kernels ------------------------------------------------------

    def _build(self):
        if self._csr is None:
            arrays = _k.build_csr(self._edges, self._meta, self._n)
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
        return self._nodes[_k.N_AT, : self._n].copy()

    def topo_rank(self) -> np.ndarray:
        """Per slot in [0, num_nodes), its position in :meth:`topo_order` (to sort any subset)."""
        return self._nodes[_k.N_ORD, : self._n].copy()

    def levels(self) -> np.ndarray:
        """Per slot in [0, num_nodes), the length of the longest edge path ending at it."""
        return _k.levels(self._nodes, self._edges, self._n)

    # -- reuse -----------------------------------------------------------------

    def clear(self) -> None:
        """Drop every edge and named kind: afterwards the graph answers every call as a new one.

        Costs O(slots and edges used since the last clear); capacities are kept.
        """
        _k.clear(self._nodes, self._edges, self._table, self._meta, self._n)
        self._n = 0
        self._ne = 0
        self._csr = None
        self._reset_kinds()

    def __repr__(self) -> str:
        return f"<mmsb.Graph {self._n} nodes, {self._ne} edges>"
