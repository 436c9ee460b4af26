"""Deterministic counters: they move only when mmsb's behaviour does, never with noise.

Log bytes per delta for sparse and dense updates across page sizes, pages recomputed per cascade
on chains and diamonds, kernel calls per commit, and the peak memory of a bound chain, each
beside its plain NumPy/Python peer where one has a meaning. The single-page and 8-byte batch
counters are in bench_core.Counters and bench_propagation.PropagationCounters.
"""

import sys
import types
from contextlib import contextmanager

import numpy as np

import mmsb
from mmsb.profile import PeerGraph, mmsb_chain, numpy_update, peer_chain, update_buffers

from .common import unit

SIZES = [64, 1024, 16384]
CONTENTS = ["10 bytes changed", "random"]   # random: every byte differs, so the record is dense


def _buffers(content, size):
    return update_buffers(content, size)


class LogBytesPerUpdate:
    """Log bytes one update_page adds (the delta record and its commit's marker), by page size.

    10 bytes changed: a sparse record (5 bytes per changed byte); random: a dense one (a bit per
    page byte plus the changed bytes).
    """

    params = [CONTENTS, SIZES]
    param_names = ["content", "size"]

    def setup(self, content, size):
        self.a, self.b = _buffers(content, size)
        self.st = mmsb.start()
        self.pg = self.st.create_page(size)
        self.st.update_page(self.pg, self.a)

    def teardown(self, content, size):
        mmsb.stop(self.st)

    @unit("bytes/delta")
    def track_log_bytes(self, content, size):
        before = self.st.log.nbytes
        self.st.update_page(self.pg, self.b)
        return self.st.log.nbytes - before

    @unit("bytes/delta")
    def track_bytes_written(self, content, size):
        """Byte writes the delta carries (stats()["bytes_written"]): the bytes that changed."""
        before = self.st.stats()["bytes_written"]
        self.st.update_page(self.pg, self.b)
        return self.st.stats()["bytes_written"] - before


class NumpyLogBytesPerUpdate:
    """Peer: Python memory of the (id, changed offsets, values) record numpy_update appends."""

    params = [CONTENTS, SIZES]
    param_names = ["content", "size"]

    @unit("bytes/delta")
    def track_log_bytes(self, content, size):
        a, b = _buffers(content, size)
        pages, epochs, log = {0: a.copy()}, {0: 0}, []
        numpy_update(pages, epochs, log, 0, b)
        return sum(sys.getsizeof(x) for x in (log[0], *log[0]))


def _diamond(st, width):
    """A head, `width` passthrough copies of it, and a sink that sums them (uint8, wrapping)."""
    ids = st.create_pages(width + 2, 1024)
    for k in range(1, width + 1):
        st.register_passthrough(ids[k], ids[0])
    st.register_recompute(ids[-1], ids[1:-1], "sum")
    return ids


def _peer_diamond(width):
    peer = PeerGraph(width + 2)
    for k in range(1, width + 1):
        peer.bind(k, [0])
    peer.bind(width + 1, list(range(1, width + 1)), np.add)
    return peer


class CascadeCounters:
    """One update of the head: pages recomputed, skipped by the epoch check, and deltas, per commit.

    chain of n: n - 1 recomputed; diamond of width n: n copies and the sink, each once (a
    recursive depth-first cascade, as the original's, recomputes the sink n times).
    """

    params = [["chain", "diamond"], [10, 100]]
    param_names = ["shape", "n"]

    def setup(self, shape, n):
        self.a, self.b = update_buffers("random")
        if shape == "chain":
            self.st, ids = mmsb_chain(n)
        else:
            self.st = mmsb.start()
            ids = _diamond(self.st, n)
        self.head = ids[0]
        self.st.update_page(self.head, self.a)

    def teardown(self, shape, n):
        mmsb.stop(self.st)

    def _moved(self, key):
        before = self.st.stats()[key]
        self.st.update_page(self.head, self.b)
        return self.st.stats()[key] - before

    @unit("pages/cascade")
    def track_pages_recomputed(self, shape, n):
        return self._moved("pages_recomputed")

    @unit("pages/cascade")
    def track_pages_skipped(self, shape, n):
        return self._moved("pages_skipped")

    @unit("deltas/commit")
    def track_deltas_per_commit(self, shape, n):
        return self._moved("deltas")


class NumpyCascadeCounters:
    """Peer: callbacks a depth-first peer runs for one update of the head (it has no epochs, so a
    diamond's sink runs once per changed copy)."""

    params = [["chain", "diamond"], [10, 100]]
    param_names = ["shape", "n"]

    @unit("pages/cascade")
    def track_pages_recomputed(self, shape, n):
        a, b = update_buffers("random")
        peer = peer_chain(n) if shape == "chain" else _peer_diamond(n)
        peer.update(0, a)
        calls = [0]
        for child, fn in list(peer.compute.items()):
            def counted(fn=fn):
                calls[0] += 1
                return fn()
            peer.compute[child] = counted
        peer.update(0, b)
        return calls[0]


@contextmanager
def count_kernel_calls():
    """Count calls of @njit dispatchers made from mmsb's Python modules, while the block runs.

    Module-level names that are dispatchers, or kernel modules (the ``_k`` pattern), in every
    loaded ``mmsb`` module outside ``mmsb.kernels`` are swapped for counting stand-ins and put
    back after. Kernels calling kernels inside compiled code are not counted (one launch each),
    nor would a dispatcher imported inside a function be.
    """
    from numba.core.dispatcher import Dispatcher

    counts = {"calls": 0}

    def wrap(fn):
        def counted(*args, **kwargs):
            counts["calls"] += 1
            return fn(*args, **kwargs)
        return counted

    def proxy(mod):
        ns = types.SimpleNamespace()
        for name, value in vars(mod).items():
            setattr(ns, name, wrap(value) if isinstance(value, Dispatcher) else value)
        return ns

    swapped = []
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("mmsb") or modname.startswith("mmsb.kernels") or mod is None:
            continue
        for name, value in list(vars(mod).items()):
            if isinstance(value, Dispatcher):
                swapped.append((mod, name, value))
                setattr(mod, name, wrap(value))
            elif isinstance(value, types.ModuleType) and value.__name__.startswith("mmsb.kernels"):
                swapped.append((mod, name, value))
                setattr(mod, name, proxy(value))
    try:
        yield counts
    finally:
        for mod, name, value in reversed(swapped):
            setattr(mod, name, value)


class KernelCalls:
    """Kernel calls (njit dispatches from Python) per commit, log in memory: a bare update_page is
    one; a commit with a cascade adds the cascade's one; an apply_batch is one plus its cascade's."""

    params = [["update_page", "single_hop", "chain_10", "batch_32x4"]]
    param_names = ["commit"]

    def setup(self, commit):
        a, b = update_buffers("random")
        n = {"update_page": 1, "single_hop": 2, "chain_10": 10, "batch_32x4": 32}[commit]
        self.st, ids = mmsb_chain(n)
        if commit == "batch_32x4":
            head, starts = np.full(4, ids[0]), np.arange(5) * 1024
            offs = np.tile(np.arange(1024), 4)
            batches = [mmsb.DeltaBatch.from_sparse(head, starts, offs, np.concatenate([v] * 4)) for v in (a, b)]
            self.commit = lambda k: self.st.apply_batch(batches[k])
        else:
            self.commit = lambda k: self.st.update_page(ids[0], (a, b)[k])
        self.commit(0)   # warm: kernels loaded, pages hold a

    def teardown(self, commit):
        mmsb.stop(self.st)

    @unit("calls/commit")
    def track_kernel_calls(self, commit):
        with count_kernel_calls() as counts:
            self.commit(1)
        return counts["calls"]


class BoundChainMemory:
    """Peak memory of a 10k-page passthrough chain of 1 KiB pages, bound and updated once
    (pages, graph, bindings, log), beside the peer's dict of pages and callbacks."""

    timeout = 300

    def setup(self):
        mmsb.stop(mmsb_chain(2)[0])   # numba and the kernels load outside the measurement

    def peakmem_chain_10k(self):
        st, ids = mmsb_chain(10_000)
        st.update_page(ids[0], update_buffers("random")[0])
        mmsb.stop(st)


class NumpyBoundChainMemory:
    """Peer of BoundChainMemory (its depth-first cascade recurses 10k deep: the limit is raised)."""

    timeout = 300

    def peakmem_chain_10k(self):
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 30_000))
        try:
            peer = peer_chain(10_000)
            peer.update(0, update_buffers("random")[0])
        finally:
            sys.setrecursionlimit(limit)
