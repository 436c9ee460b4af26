"""mmsb.graph.Graph against the reference in naive_graph.py."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb.graph import KIND_CONTROL, KIND_DATA, KIND_SYNC, Graph
from naive_graph import NaiveGraph

KIND_NAMES = ["data", "control", "sync", "user_a", "user_b"]


def check_path(ref, path, p, c):
    """The refused edge p -> c closes a cycle along `path` in ref's graph."""
    assert path[0] == c and path[-2] == p and path[-1] == c
    for a, b in zip(path[:-2], path[1:-1]):
        assert b in ref.out.get(a, {}), (a, b, path)
    assert len(set(path[:-1])) == len(path) - 1  # a simple cycle


def check_same(g, ref):
    """Edges, neighbours, CSR arrays and the order agree with the reference."""
    edges = ref.edges()
    assert list(g.edges()) == edges and g.num_edges == len(edges)
    n = g.num_nodes
    assert all(p < n and c < n for p, c, _ in edges)
    indptr, indices, kinds = g.csr()
    rindptr, rindices, rkinds = g.reverse_csr()
    for s in range(n):
        kids = [(c, k) for p, c, k in edges if p == s]
        row = slice(indptr[s], indptr[s + 1])
        assert list(zip(indices[row].tolist(), kinds[row].tolist())) == kids
        pars = sorted((p, k) for p, c, k in edges if c == s)
        row = slice(rindptr[s], rindptr[s + 1])
        assert list(zip(rindices[row].tolist(), rkinds[row].tolist())) == pars
        assert g.children(s).tolist() == ref.children(s)
        assert g.parents(s, kind=KIND_CONTROL).tolist() == ref.parents(s, KIND_CONTROL)
    assert indptr.dtype == rindptr.dtype == indices.dtype == np.int64 and kinds.dtype == np.uint8
    check_order(g, edges)
    assert g.levels().tolist() == ref.levels(n)


def check_order(g, edges):
    order = g.topo_order()
    assert sorted(order.tolist()) == list(range(g.num_nodes))
    rank = np.empty(g.num_nodes, np.int64)
    rank[order] = np.arange(g.num_nodes)
    assert all(rank[p] < rank[c] for p, c, _ in edges)


def run(g, ops, ref=None):
    """Apply ops to g (and ref); the transcript of what each op returned or raised."""
    out = []
    for op in ops:
        if op[0] == "add":
            _, p, c, name = op
            before = (list(g.edges()), g.topo_order().tolist(), g.num_nodes)
            try:
                r = g.add_edge(p, c, name)
            except mmsb.GraphCycleError as e:
                r = ("cycle", e.path)
            except mmsb.InvalidArgumentError:
                r = "clash"
            if ref is not None:
                expect = ref.add(p, c, g.kind_code(name))
                got = "added" if r is True else "exists" if r is False else r if r == "clash" else "cycle"
                assert got == expect
                if expect == "cycle":
                    check_path(ref, r[1], p, c)
            if not r is True:  # noqa: E714 - refused or a no-op: nothing moved, the order included
                assert (list(g.edges()), g.topo_order().tolist(), g.num_nodes) == before
        elif op[0] == "remove":
            try:
                g.remove_edge(op[1], op[2])
                r = True
            except mmsb.InvalidArgumentError:
                r = False
            if ref is not None:
                assert ref.remove(op[1], op[2]) == r
        else:
            r = g.remove_node(op[1])
            if ref is not None:
                assert ref.remove_node(op[1]) == r
        out.append(r)
        out.append(g.topo_order().tolist())
        if ref is not None:
            check_order(g, ref.edges())
    return out


@st.composite
def op_lists(draw):
    n = draw(st.integers(1, 12))
    slot = st.integers(0, n - 1)
    op = st.one_of(
        st.tuples(st.just("add"), slot, slot, st.sampled_from(KIND_NAMES)),
        st.tuples(st.just("add"), slot, slot, st.just("data")),
        st.tuples(st.just("remove"), slot, slot),
        st.tuples(st.just("remove_node"), slot),
    )
    return draw(st.lists(op, max_size=60))


@settings(max_examples=150, deadline=None)
@given(op_lists())
def test_random_operations_match_the_reference_and_replay_after_clear(ops):
    ref = NaiveGraph()
    g = Graph(capacity=1, edge_capacity=1)  # grows on the way
    transcript = run(g, ops, ref)
    check_same(g, ref)
    final = (list(g.edges()), g.topo_order().tolist())
    g.clear()
    assert g.num_edges == 0 and g.num_nodes == 0 and list(g.edges()) == []
    assert run(g, ops) == transcript == run(Graph(), ops)
    assert (list(g.edges()), g.topo_order().tolist()) == final


def random_dag(n, m, seed):
    """m distinct edges consistent with a hidden random order of n slots, in random order."""
    r = np.random.default_rng(seed)
    rank = r.permutation(n)
    u, v = r.integers(0, n, 3 * m), r.integers(0, n, 3 * m)
    u, v = u[u != v], v[u != v]
    a, b = np.where(rank[u] < rank[v], u, v), np.where(rank[u] < rank[v], v, u)
    _, first = np.unique(a * n + b, return_index=True)
    pick = r.permutation(first)[:m]
    return a[pick].tolist(), b[pick].tolist()


@pytest.mark.parametrize("seed", range(3))
def test_random_dag_then_closing_edges_are_refused_with_a_real_cycle(seed):
    n, m = 300, 900
    ref, g = NaiveGraph(), Graph(capacity=4)
    for p, c in zip(*random_dag(n, m, seed)):
        kind = [KIND_DATA, KIND_CONTROL, KIND_SYNC][(p + c) % 3]
        assert g.add_edge(p, c, kind) is True and ref.add(p, c, kind) == "added"
    check_same(g, ref)
    r = np.random.default_rng(seed)
    refused = 0
    for p, c in zip(r.integers(0, n, 300).tolist(), r.integers(0, n, 300).tolist()):
        closes = p == c or ref.reaches(c, p)
        try:
            added = g.add_edge(p, c)
        except mmsb.GraphCycleError as e:
            assert closes
            assert e.path == [p, p] if p == c else check_path(ref, e.path, p, c) is None
            refused += 1
            continue
        except mmsb.InvalidArgumentError:  # present with another kind
            assert ref.out[p][c] != KIND_DATA
            continue
        assert not closes and ref.add(p, c, KIND_DATA) == ("added" if added else "exists")
    assert refused > 20
    check_same(g, ref)


def test_deep_chain_cycle_path_and_deep_reorder():
    n = 10_000
    g = Graph()
    for i in range(n - 1):
        g.add_edge(i, i + 1)
    with pytest.raises(mmsb.GraphCycleError) as e:
        g.add_edge(n - 1, 0)
    assert e.value.path == list(range(n)) + [0]
    assert g.levels()[-1] == n - 1
    # a new head for the chain: the backward search walks the whole chain
    g.remove_edge(0, 1)
    g.add_edge(n - 1, 0)
    check_order(g, list(g.edges()))
    with pytest.raises(mmsb.GraphCycleError) as e:
        g.add_edge(0, 1)
    assert e.value.path == list(range(1, n)) + [0, 1]


def test_chain_added_against_the_slot_order_is_reordered():
    n = 2_000
    g = Graph()
    for i in range(n - 1, 0, -1):
        g.add_edge(i, i - 1)  # every edge but the first contradicts the order so far
    assert g.topo_order().tolist() == list(range(n - 1, -1, -1))
    with pytest.raises(mmsb.GraphCycleError) as e:
        g.add_edge(0, n - 1)
    assert e.value.path == list(range(n - 1, -1, -1)) + [n - 1]


def test_duplicates_kinds_and_bad_arguments():
    g = Graph()
    assert g.add_edge(0, 1, "data") is True and g.add_edge(0, 1) is False
    with pytest.raises(mmsb.InvalidArgumentError):
        g.add_edge(0, 1, KIND_CONTROL)
    with pytest.raises(mmsb.GraphCycleError) as e:
        g.add_edge(7, 7)
    assert e.value.path == [7, 7] and g.num_nodes == 2  # a refused edge reserves no slot
    assert g.edge_kind(0, 1) == KIND_DATA and g.edge_kind(1, 0) is None
    assert g.has_edge(np.int64(0), np.int32(1)) and not g.has_edge(5, 9)
    for bad in [(-1, 2), (0, 1 << 31), (0.5, 1), ("0", 1)]:
        with pytest.raises(mmsb.InvalidArgumentError):
            g.add_edge(*bad)
    for bad_kind in [3, 15, 16, -1, 256, None, ""]:
        with pytest.raises(mmsb.InvalidArgumentError):
            g.add_edge(2, 3, bad_kind)
    with pytest.raises(mmsb.InvalidArgumentError):
        g.remove_edge(1, 0)
    with pytest.raises(mmsb.InvalidArgumentError):
        g.remove_edge(50, 60)
    assert list(g.edges()) == [(0, 1, KIND_DATA)] and g.num_nodes == 2
    # user kinds: codes from 16, per graph, forgotten by clear
    assert g.kind_code("resize") == 16 and g.kind_code("evict") == 17 and g.kind_code("resize") == 16
    assert g.kind_name(17) == "evict" and Graph().kind_code("other") == 16
    g.add_edge(1, 2, "evict")
    assert g.children(1, kind="evict").tolist() == [2] and g.children(1, kind="resize").size == 0
    g.clear()
    assert g.kind_code("evict") == 16
    with pytest.raises(mmsb.InvalidArgumentError):
        [g.kind_code(f"k{i}") for i in range(300)]


def test_remove_node_and_csr_cache():
    g = Graph()
    for p, c in [(0, 1), (0, 2), (1, 2), (2, 3), (4, 2)]:
        g.add_edge(p, c)
    f = g.csr()
    assert g.csr() is f and not f[0].flags.writeable
    assert g.remove_node(2) == 4 and g.remove_node(2) == 0 and g.remove_node(99) == 0
    assert list(g.edges()) == [(0, 1, 0)] and g.csr() is not f
    assert g.csr()[0].tolist() == [0, 1, 1, 1, 1, 1] and g.reverse_csr()[0].tolist() == [0, 0, 1, 1, 1, 1]
    g.add_edge(3, 2)
    g.add_edge(2, 0)  # slot 2 is usable again, on either side
    assert g.parents(0).tolist() == [2]


def test_pickle_round_trip_keeps_working():
    g = Graph()
    for p, c in zip(*random_dag(50, 100, 7)):
        g.add_edge(p, c)
    h = pickle.loads(pickle.dumps(g))
    assert list(h.edges()) == list(g.edges())
    ops = [("add", 3, 49, "data"), ("remove_node", 7), ("add", 49, 3, "data")]
    assert run(h, ops) == run(g, ops)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 10).flatmap(lambda n: st.lists(st.lists(
    st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from([0, 1])), max_size=8), max_size=8)))
def test_add_edges_is_add_edge_in_turn_all_or_nothing(batches):
    g, ref = Graph(capacity=1, edge_capacity=1), NaiveGraph()
    for batch in batches:
        for kind in (0, 1):
            p = np.array([b[0] for b in batch if b[2] == kind], np.int64)
            c = np.array([b[1] for b in batch if b[2] == kind], np.int64)
            trial = NaiveGraph()
            trial.out = {k: dict(v) for k, v in ref.out.items()}
            expect = [trial.add(a, b, kind) for a, b in zip(p.tolist(), c.tolist())]
            refused = next((i for i, r in enumerate(expect) if r in ("cycle", "clash")), None)
            try:
                added = g.add_edges(p, c, kind)
            except mmsb.GraphCycleError as e:
                assert expect[refused] == "cycle"
                prefix = NaiveGraph()
                prefix.out = {k: dict(v) for k, v in ref.out.items()}
                for a, b in zip(p[:refused].tolist(), c[:refused].tolist()):
                    prefix.add(a, b, kind)
                check_path(prefix, e.path, int(p[refused]), int(c[refused]))
            except mmsb.InvalidArgumentError:
                assert expect[refused] == "clash"
            else:
                assert refused is None and added == expect.count("added")
                ref = trial
            assert list(g.edges()) == ref.edges()
            check_order(g, ref.edges())
    with pytest.raises(mmsb.InvalidArgumentError):
        g.add_edges([0.5], [1])
    with pytest.raises(mmsb.InvalidArgumentError):
        g.add_edges([0, 1], [1])
    assert g.add_edges([], []) == 0
