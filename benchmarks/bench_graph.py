"""Building and reading mmsb's dependency graph, each beside the plain Python a user would write.

The workload: a random DAG over 100k node slots, edges consistent with a
hidden random order of the slots (so the slot numbers say nothing about the order), distinct,
added in random order; 100k edges (mean out-degree 1) and 400k (mean out-degree 4). Budget for
100k edges through add_edge: about 1 s on a 2-core machine.

`GraphBuild` calls Graph.add_edge once per edge (the incremental cycle check keeps a topological
order, so only the region between the two endpoints is searched). `GraphBulkBuild` passes all
edges to Graph.add_edges, one kernel call. `PythonGraphBuild` is the peer: a dict of sets and an
iterative depth-first search from the child per edge (refuse the edge if it reaches the parent),
on the same edges. The peer runs the same sizes: on this random workload the reachable sets stay
small, so it finishes in about 0.2 s (100k edges) and 6 s (400k) here.

`CsrRebuild` times what a cascade pays after the graph changed: one edge removed and added back,
then csr() (one kernel builds forward and reverse CSR). `NumpyCsrRebuild` is the peer: edge
arrays, one endpoint changed and back, and both CSRs rebuilt with np.lexsort and np.bincount.
"""

import numpy as np

from mmsb.graph import Graph

from .common import rng

NODES = 100_000
EDGE_COUNTS = [100_000, 400_000]


def random_dag(n, m):
    """(parents, children) as Python lists: m distinct edges of a random DAG on n slots, shuffled."""
    g = rng()
    rank = g.permutation(n)
    u, v = g.integers(0, n, 3 * m), g.integers(0, n, 3 * m)
    u, v = u[u != v], v[u != v]
    forward = rank[u] < rank[v]
    a, b = np.where(forward, u, v), np.where(forward, v, u)
    _, first = np.unique(a * n + b, return_index=True)
    pick = g.permutation(first)[:m]
    return a[pick].tolist(), b[pick].tolist()


def _warm():
    # loads (or compiles) the kernels outside the timing
    g = Graph()
    g.add_edge(1, 0)
    g.add_edges(np.array([2]), np.array([1]))
    g.csr()


class GraphBuild:
    """m × Graph.add_edge on a fresh Graph (default capacities, so growth is included)."""

    params = [EDGE_COUNTS]
    param_names = ["edges"]
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 300

    def setup(self, edges):
        _warm()
        self.parents, self.children = random_dag(NODES, edges)

    def time_add_edge(self, edges):
        g = Graph()
        add = g.add_edge
        for p, c in zip(self.parents, self.children):
            add(p, c)
        self.g = g  # freeing it is not timed


class GraphBulkBuild:
    """Graph.add_edges with all m edges at once (one kernel call) on a fresh Graph."""

    params = [EDGE_COUNTS]
    param_names = ["edges"]
    timeout = 300

    def setup(self, edges):
        _warm()
        parents, children = random_dag(NODES, edges)
        self.parents, self.children = np.array(parents), np.array(children)

    def time_add_edges(self, edges):
        self.g = Graph()
        self.g.add_edges(self.parents, self.children)


def reaches(adj, src, dst):
    """Whether dst is reachable from src in adj (dict: node -> set of children)."""
    if src == dst:
        return True
    stack, seen = [src], {src}
    while stack:
        for w in adj.get(stack.pop(), ()):
            if w == dst:
                return True
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return False


class PythonGraphBuild:
    """Peer of GraphBuild: dict of sets, a DFS cycle check per edge, the same edges."""

    params = [EDGE_COUNTS]
    param_names = ["edges"]
    number = 1
    repeat = (1, 3, 30.0)
    timeout = 300

    def setup(self, edges):
        self.parents, self.children = random_dag(NODES, edges)

    def time_add_edge(self, edges):
        adj = {}
        for p, c in zip(self.parents, self.children):
            if reaches(adj, c, p):
                raise ValueError("cycle")
            adj.setdefault(p, set()).add(c)
        self.adj = adj


class CsrRebuild:
    """One edge removed and added back, then csr() and reverse_csr() rebuilt (one kernel call)."""

    params = [EDGE_COUNTS]
    param_names = ["edges"]
    timeout = 300

    def setup_cache(self):
        graphs = {}
        for m in EDGE_COUNTS:
            graphs[m] = g = Graph()
            g.add_edges(*map(np.array, random_dag(NODES, m)))
        return graphs

    def setup(self, graphs, edges):
        self.g = graphs[edges]
        self.p, self.c, _ = next(self.g.edges())
        self.time_csr_after_one_change(graphs, edges)  # loads every kernel it uses

    def time_csr_after_one_change(self, graphs, edges):
        g = self.g
        g.remove_edge(self.p, self.c)
        g.add_edge(self.p, self.c)
        g.csr()
        g.reverse_csr()


def numpy_csr(n, parents, children, kinds):
    """Forward and reverse CSR (rows sorted) as a NumPy user would build them."""
    out = []
    for rows, cols in ((parents, children), (children, parents)):
        order = np.lexsort((cols, rows))
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        out.append((indptr, cols[order], kinds[order]))
    return out


class NumpyCsrRebuild:
    """Peer of CsrRebuild: int64 edge arrays, one edge's child changed and back, both CSRs rebuilt."""

    params = [EDGE_COUNTS]
    param_names = ["edges"]

    def setup(self, edges):
        parents, children = random_dag(NODES, edges)
        self.parents, self.children = np.array(parents), np.array(children)
        self.kinds = np.zeros(edges, np.uint8)

    def time_csr_after_one_change(self, edges):
        old = self.children[0]
        self.children[0] = self.parents[0]  # the "change": an edge dropped...
        self.children[0] = old  # ...and put back, as the mmsb side does
        self.csrs = numpy_csr(NODES, self.parents, self.children, self.kinds)
