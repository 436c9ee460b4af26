"""mmsb's propagation workloads, each beside the peer a user writes without it.

`X` times mmsb, `NumpyX` the peer: a dict of np.uint8 pages, a list log, and per derived page
a callback over its parents' arrays (mmsb.profile.PeerGraph, shared with `python -m mmsb
profile`). Its update is numpy_update (diff, write, epoch, log), then each child's callback,
depth-first; a callback that reproduces the child's bytes
stops there. A peer batch writes its deltas, then runs the callbacks once per page it changed.
Budgets: docs/PERFORMANCE.md.

INNER loops (see bench_core): Hops and HopBesideNjit run INNER (= 1000) updates per timed call,
so a reported 1.00 ms reads as 1.00 µs per update. ChainBatch times one apply_batch per call.

The 100k-page graphs report track_ ns per page (median of several commits). mmsb binds them
one register_recompute call at a time; setup_cache probes that once, and should binding ever
fail to finish within BUILD_DEADLINE_S, setup says so on stderr and skips (asv shows n/a)
rather than run for hours.
"""

import graphlib
import sys
import time

import numpy as np

import mmsb

from mmsb.profile import PeerGraph as _PeerGraph, head_values as _head_values
from mmsb.profile import mmsb_chain as _mmsb_chain, peer_chain as _peer_chain
from mmsb.profile import mmsb_hop_with_njit_binding as _mmsb_hop_with_njit_binding
from mmsb.profile import peer_hop_with_binding as _peer_hop_with_binding

from .common import INNER, PAGE_SIZE, median_rate, rng, unit, update_buffers

DAG_PAGES = 100_000
DAG_SIZES = [2_000, DAG_PAGES]
BUILD_DEADLINE_S = 60.0
BATCH_CHAINS = {32: 4, 128: 2}     # chain length -> full-page deltas on the head per batch
PEER_REPEATS = 5                   # samples behind a peer's 100k-page track_ figure


# -- graphs (index space: page k is ids[k]; parents always have lower indices) -------------

def _cutoff_dag(n):
    """Roots 0..n/5-1 (even: 'switch' roots, odd: anchors), then derived pages of 1 + Poisson(4)
    distinct earlier parents (4 n edges: mean out-degree 4), the first never a switch root.
    Roots and so every page hold 0xFF; a max binding keeps a derived page 0xFF whatever the
    switch roots hold, so a write to them reaches their children and is cut off there."""
    g, r = rng(), n // 5
    i = np.arange(r, n)
    j = (g.random(i.size) * (r // 2 + i - r)).astype(np.int64)
    first = np.where(j < r // 2, 2 * j + 1, r + j - r // 2)
    extra = g.poisson(4, i.size)
    more = (g.random(extra.sum()) * np.repeat(i, extra)).astype(np.int64)
    parents = [np.unique(np.append(m, f)) for f, m in zip(first, np.split(more, np.cumsum(extra)[:-1]))]
    switch = np.arange(0, r, 2)
    cat = np.concatenate(parents)
    hit = (cat < r) & (cat % 2 == 0)
    reached = np.unique(np.repeat(i, [p.size for p in parents])[hit]).size
    return r, parents, switch, reached


def _byte0_batch(ids, value):
    m = ids.size
    return mmsb.DeltaBatch.from_sparse(ids, np.arange(m + 1), np.zeros(m, np.int64),
                                       np.full(m, value, np.uint8))


def _byte0_deltas(pages, value):
    return [(int(p), np.zeros(1, np.int64), np.full(1, value, np.uint8)) for p in pages]


def _bind_all(st, ids, r, parents, op, deadline):
    """Bind pages r.. in order; returns how many were bound before the deadline."""
    t0 = time.perf_counter()
    for k, ps in enumerate(parents):
        if op == "passthrough":
            st.register_passthrough(ids[r + k], ids[ps[0]])
        else:
            st.register_recompute(ids[r + k], ids[ps], op)
        if k % 128 == 127 and time.perf_counter() - t0 > deadline:
            return k + 1
    return len(parents)


# -- single hop and chains -----------------------------------------------------------------

class _Hops:
    params = [[2, 10]]
    param_names = ["pages"]

    def time_1000_updates(self, n):
        update, head, a, b = self.update, self.head, self.a, self.b
        for _ in range(INNER // 2):
            update(head, a)
            update(head, b)


class Hops(_Hops):
    """1000 × update the head of a chain of `pages` × 1 KiB passthroughs (2: the single hop),
    alternating two random buffers, log in memory (ms per call = µs per update).

    Budgets: single hop ≤ 2 µs and ≥ 8× NumPyHops (the original: 169.5 µs); chain of 10 ≤ 4 µs
    and ≥ 20× NumPyHops (the original: 1.37 ms). So ≤ 2 ms / ≤ 4 ms per timed call.
    """

    def setup(self, n):
        self.a, self.b = update_buffers("random")
        self.st, ids = _mmsb_chain(n)
        self.update, self.head = self.st.update_page, ids[0]
        self.update(self.head, self.b)
        assert np.array_equal(self.st.query_page(ids[-1]), self.b), "the tail did not follow"

    def teardown(self, n):
        mmsb.stop(self.st)


class NumpyHops(_Hops):
    """Peer of Hops."""

    def setup(self, n):
        self.a, self.b = update_buffers("random")
        peer = _peer_chain(n)
        self.update, self.head = peer.update, 0
        self.update(0, self.b)


class _HopBesideNjit:
    params = [["plain", "unrelated @njit binding"]]
    param_names = ["state"]

    def time_1000_updates(self, state):
        update, head, a, b = self.update, self.head, self.a, self.b
        for _ in range(INNER // 2):
            update(head, a)
            update(head, b)


class HopBesideNjit(_HopBesideNjit):
    """1000 × the single hop (update a 1 KiB parent whose child is a passthrough, log in memory,
    two random buffers alternating) on a state that holds only that pair ("plain", the single hop
    of Hops) or also an unrelated pair of 1 KiB pages, the second bound to the first by an @njit
    recompute (mmsb.profile.mmsb_hop_with_njit_binding); the updates never reach that pair.
    ms per call = µs per update.

    Budget: the hop beside the @njit binding within 10 % of the plain hop (≤ 1.10×);
    track_ratio_to_plain takes both in one loop, so both see the same machine weather.
    """

    def setup(self, state):
        self.a, self.b = update_buffers("random")
        self.st, ids = _mmsb_chain(2) if state == "plain" else _mmsb_hop_with_njit_binding()
        self.update, self.head = self.st.update_page, int(ids[0])
        self.update(self.head, self.b)
        assert np.array_equal(self.st.query_page(ids[1]), self.b), "the child did not follow"

    def teardown(self, state):
        mmsb.stop(self.st)

    @unit("ratio")
    def track_ratio_to_plain(self, state):
        """Median time of 1000 hops on this state over the same on a plain one, interleaved
        (for "plain": two plain states, the noise floor of the ratio)."""
        st, ids = _mmsb_chain(2)
        plain, head = st.update_page, int(ids[0])
        plain(head, self.b)
        try:
            ratios = []
            for _ in range(15):
                t = []
                for update, at in ((self.update, self.head), (plain, head)):
                    t0 = time.perf_counter()
                    for _ in range(INNER // 2):
                        update(at, self.a)
                        update(at, self.b)
                    t.append(time.perf_counter() - t0)
                ratios.append(t[0] / t[1])
            return float(np.median(ratios))
        finally:
            mmsb.stop(st)


class NumpyHopBesideNjit(_HopBesideNjit):
    """Peer of HopBesideNjit: peer_chain(2), or the same PeerGraph with the unrelated pair bound by
    a copy callback (mmsb.profile.peer_hop_with_binding)."""

    def setup(self, state):
        self.a, self.b = update_buffers("random")
        peer = _peer_chain(2) if state == "plain" else _peer_hop_with_binding()
        self.update, self.head = peer.update, 0
        self.update(0, self.b)


class _ChainBatch:
    params = [list(BATCH_CHAINS)]
    param_names = ["pages"]

    def time_apply_batch(self, n):
        self.apply(self.batch_a)


class ChainBatch(_ChainBatch):
    """One apply_batch of BATCH_CHAINS[pages] full-page deltas (each 1024 sparse offsets) on
    the head of a `pages` × 1 KiB passthrough chain: one cascade. One batch per timed call.

    Budgets: 32 pages, 4 deltas ≤ 20 µs (the original: 4.02 ms); 128 pages, 2 deltas ≤ 40 µs
    (the original: 19.4 ms).
    """

    def setup(self, n):
        d = BATCH_CHAINS[n]
        self.st, ids = _mmsb_chain(n)
        head, starts = np.full(d, ids[0]), np.arange(d + 1) * PAGE_SIZE
        self.batch_a, batch_b = (
            mmsb.DeltaBatch.from_sparse(head, starts, np.tile(np.arange(PAGE_SIZE), d),
                                        np.concatenate(_head_values(d, s))) for s in (0, 1))
        self.apply = self.st.apply_batch
        self.apply(batch_b)
        assert np.array_equal(self.st.query_page(ids[-1]), _head_values(d, 1)[-1]), "tail not followed"

    def teardown(self, n):
        mmsb.stop(self.st)


class NumpyChainBatch(_ChainBatch):
    """Peer of ChainBatch: the deltas written in order, then the callbacks once."""

    def setup(self, n):
        d, offs = BATCH_CHAINS[n], np.arange(PAGE_SIZE)
        self.apply = _peer_chain(n).apply
        self.batch_a, batch_b = ([(0, offs, v) for v in _head_values(d, s)] for s in (0, 1))
        self.apply(batch_b)


# -- 100k-page graphs (mmsb builds once in setup_cache to probe, again in setup) -------------

class _Graph:
    """A graph workload: pages ``r..n-1`` bound by ``op`` to ``parents[k]``; a commit writes
    byte 0 of each ``seeds`` page, alternating ``values``; ``per`` pages share its time."""

    params = [DAG_SIZES]
    param_names = ["pages"]
    timeout = 300

    def _commit(self):
        self.turn ^= 1
        self.apply(self.batches[self.turn])


class _MmsbGraph(_Graph):
    def _probe(self):
        built = {}
        for n in DAG_SIZES:       # probe once per run, so each benchmark skips without waiting
            st, took = self._build(n, BUILD_DEADLINE_S)
            built[n] = (self.bound, len(self.parents), took)
            mmsb.stop(st)
        return built

    def _build(self, n, deadline):
        self._make(n)
        st = mmsb.start()
        self.ids = st.create_pages(n, PAGE_SIZE)
        for k in range(self.r if self.fill is not None else 0):   # before any edge: no cascade
            st.update_page(self.ids[k], self.fill)
        t0 = time.perf_counter()
        self.bound = _bind_all(st, self.ids, self.r, self.parents, self.op, deadline)
        return st, time.perf_counter() - t0

    def setup(self, built, n):
        bound, total, took = built[n]
        if bound < total:
            msg = f"mmsb bound {bound} of {total} pages of the {n}-page graph in {took:.0f} s: skipped"
            print(msg, file=sys.stderr)
            raise NotImplementedError(msg)
        self.st, _ = self._build(n, float("inf"))
        self.apply, self.turn = self.st.apply_batch, 1
        self.batches = [_byte0_batch(self.ids[self.seeds], v) for v in self.values]
        self.apply(self.batches[1])
        probe = rng().integers(self.r, n, 64)
        assert all(self.st.query_page(self.ids[k])[0] == self.values[1] for k in probe), "wrong bytes"

    def teardown(self, built, n):
        if hasattr(self, "st"):     # not when setup skipped
            mmsb.stop(self.st)

    @unit("ns/page")
    def track_ns_per_page(self, built, n):
        return 1e9 / median_rate(self._commit, self.per, 21)

    @unit("deltas/commit")
    def track_cascade_deltas_per_commit(self, built, n):
        """Deltas the cascade adds to a commit (cut-off: 0; forest: every non-root page)."""
        before = self.st.stats()["deltas"]
        self._commit()
        return self.st.stats()["deltas"] - before - self.seeds.size


class _PeerGraphBench(_Graph):
    def setup(self, n):
        self._make(n)
        self.peer, self.turn = _PeerGraph(n), 1
        for k in range(self.r if self.fill is not None else 0):
            self.peer.pages[k][:] = self.fill
        ufunc = {"max": np.maximum, "passthrough": None}[self.op]
        for k, ps in enumerate(self.parents):
            self.peer.bind(self.r + k, ps.tolist(), ufunc)
        self.apply = self.peer.apply
        self.batches = [_byte0_deltas(self.seeds, v) for v in self.values]

    @unit("ns/page")
    def track_ns_per_page(self, n):
        return 1e9 / median_rate(self._commit, self.per, PEER_REPEATS)


class _CutoffDag:
    op, values, fill = "max", (0x00, 0xFF), np.full(PAGE_SIZE, 0xFF, np.uint8)

    def _make(self, n):
        self.r, self.parents, self.seeds, self.per = _cutoff_dag(n)


class CutoffDag(_CutoffDag, _MmsbGraph):
    """Random DAG, mean out-degree 4, max bindings: one batch of 1-byte writes to the n/10
    switch roots; the cascade reaches their children, whose recompute reproduces their bytes
    (cut-off 2), and stops there. track_ns_per_page: ns per page reached.

    The ≤ 20 ns budget (docs/PERFORMANCE.md) is per page skipped by the *epoch* check (cut-off
    1). This cascade queues a page only when a parent changed, so that check never skips here;
    each reached page costs a max over ~5 × 1 KiB and a 1 KiB compare. No budget for this figure.
    """

    def setup_cache(self):      # one per class: asv keys the cache by where it is defined
        return self._probe()


class NumpyCutoffDag(_CutoffDag, _PeerGraphBench):
    """Peer of CutoffDag: callbacks per changed switch root (a child with two switch parents
    is recomputed twice); the same denominator, distinct pages reached."""


class _Forest:
    op, values, fill = "passthrough", (1, 2), None

    def _make(self, n):
        self.r = n // 100      # every other page a copy of a uniformly drawn earlier page
        parent = (rng().random(n - self.r) * np.arange(self.r, n)).astype(np.int64)
        self.parents, self.seeds, self.per = parent.reshape(-1, 1), np.arange(self.r), parent.size


class PassthroughForest(_Forest, _MmsbGraph):
    """Passthrough forest (n/100 roots, each other page a copy of a random earlier page): one
    batch of 1-byte writes to every root changes every page. ns per page recomputed. No budget
    for this figure."""

    def setup_cache(self):
        return self._probe()


class NumpyPassthroughForest(_Forest, _PeerGraphBench):
    """Peer of PassthroughForest."""


def _random_edges(n, m):
    """m distinct edges of a random DAG over n pages whose topological order is a random
    permutation of creation order (so about half the edges run against it)."""
    g = rng()
    child = g.integers(1, n, 2 * m)
    parent = (g.random(2 * m) * child).astype(np.int64)
    _, first = np.unique(parent * n + child, return_index=True)
    keep = np.sort(first)[:m]
    perm = g.permutation(n)
    return perm[parent[keep]], perm[child[keep]]


class BuildGraph:
    """add_dependency(parent, child, "control") for 100k random DAG edges over 100k pages, one
    fresh state per call (control: no recompute). Budget: about a second at most."""

    timeout = 180
    warmup_time = 0

    def setup(self):
        self.st = mmsb.start()
        ids = self.st.create_pages(DAG_PAGES, PAGE_SIZE)
        p, c = _random_edges(DAG_PAGES, DAG_PAGES)
        self.edges = list(zip(ids[p].tolist(), ids[c].tolist()))

    def teardown(self):
        mmsb.stop(self.st)

    def time_add_100k_edges(self):
        add = self.st.add_dependency
        for p, c in self.edges:
            add(p, c, "control")


class NumpyBuildGraph:
    """Peer of BuildGraph: children and parent lists, then graphlib's topological order (which
    is also the peer's cycle check: CycleError)."""

    warmup_time = 0

    def setup(self):
        p, c = _random_edges(DAG_PAGES, DAG_PAGES)
        self.edges = list(zip(p.tolist(), c.tolist()))

    def time_add_100k_edges(self):
        children, preds = {}, {}
        for p, c in self.edges:
            children.setdefault(p, []).append(c)
            preds.setdefault(c, []).append(p)
        self.order = list(graphlib.TopologicalSorter(preds).static_order())


class PropagationCounters:
    """Deterministic counters: they move only when mmsb's behaviour does."""

    def setup(self):
        self.a, self.b = update_buffers("random")

    def _updated(self, n, key):
        st, ids = _mmsb_chain(n)
        st.update_page(ids[0], self.a)
        before = st.stats()[key]
        st.update_page(ids[0], self.b)
        moved = st.stats()[key] - before
        mmsb.stop(st)
        return moved

    @unit("pages/cascade")
    def track_pages_recomputed_chain10(self):
        """Pages the cascade of one head update changes in a chain of 10 (9)."""
        return self._updated(10, "deltas") - 1

    @unit("LSNs/hop")
    def track_lsns_per_single_hop(self):
        """LSNs one update of a parent with one passthrough child consumes (2)."""
        return self._updated(2, "lsn")
