"""Provenance lookup, st.history, beside the peer a user writes without it.

Workload: a log of about 1 M deltas: LOG_BATCHES apply_batch calls of one 1-byte delta on each
of SPARSE_PAGES unrelated pages, with a CHAIN-page passthrough chain (CHAIN - 1 = 32 hops) whose
head is updated HEAD_WRITES times spread through the log. The lookup is the history of the
chain's tail at the default depth (32): its HEAD_WRITES own deltas and every delta up the
chain, 4 × 33 deltas in all. Budget (docs/PERFORMANCE.md): under 1 ms.

`History` times mmsb; `PythonHistory` the peer: the log as a list of (page, lsn, causes) tuples,
the page's deltas found by a linear scan, causes followed through a list indexed by LSN.

Why track_ and not time_: this asv_runner re-runs `setup` before every timed call, and building
the log takes seconds, so each benchmark times its own samples (common.median_rate).
"""

import os
import shutil
import tempfile

import numpy as np

import mmsb

from .common import PAGE_SIZE, median_rate, rng, unit

SPARSE_PAGES = 65_536
SPARSE_SIZE = 64
LOG_BATCHES = 16             # 16 × 65 536 = 1 048 576 sparse deltas
CHAIN = 33                   # pages: 32 hops from head to tail
HEAD_WRITES = 4
DEPTH = 32
LOOKUP_REPEATS = 201
BUILD_REPEATS = 5
WINDOW = 65_536              # deltas a HistoryOnDisk state keeps in memory (at least)


def _head_rows():
    g = rng()
    return [g.integers(0, 256, PAGE_SIZE, dtype=np.uint8) for _ in range(HEAD_WRITES + 1)]


def _batch(ids, k):
    n = ids.size
    return mmsb.DeltaBatch.from_sparse(ids, np.arange(n + 1), np.full(n, k % SPARSE_SIZE, np.int64),
                                       np.full(n, 1 + k % 255, np.uint8))


class History:
    """st.history(tail) on the 1 M-delta log: track_lookup_us with the index built (the
    steady state; a History decodes its Delta objects on first use), track_lookup_and_decode_us
    the same plus iterating every Delta and its causes, track_head_write_then_lookup_us with one more head update first (the index
    catches up on its 33 new records; last=4 keeps the result at 4 × 33 deltas, so this minus
    the lookup is the write plus the catch-up), track_index_build_ms from nothing (first lookup)."""

    timeout = 300

    def setup(self):
        st = self.st = self._start()
        sparse = st.create_pages(SPARSE_PAGES, SPARSE_SIZE)
        chain = st.create_pages(CHAIN, PAGE_SIZE)
        for k in range(1, CHAIN):
            st.register_passthrough(chain[k], chain[k - 1])
        rows = _head_rows()
        every = LOG_BATCHES // HEAD_WRITES
        for k in range(LOG_BATCHES):
            st.apply_batch(_batch(sparse, k))
            if k % every == every - 1:
                st.update_page(chain[0], rows[k // every])
        self.head, self.tail, self.rows, self.turn = chain[0], int(chain[-1]), rows, 0
        h = st.history(self.tail, depth=DEPTH)
        assert len(st.log) >= 1_000_000, len(st.log)
        assert (len(h.deltas), len(h.upstream), h.truncated) == (HEAD_WRITES, HEAD_WRITES * DEPTH, False)

    def _start(self):
        return mmsb.start()

    def teardown(self):
        mmsb.stop(self.st)

    def _lookup(self):
        self.st.history(self.tail, depth=DEPTH)

    def _lookup_and_decode(self):
        for d in self.st.history(self.tail, depth=DEPTH):
            d.causes

    def _write_and_lookup(self):
        self.turn ^= 1  # alternate two rows, so every update changes the head
        self.st.update_page(self.head, self.rows[HEAD_WRITES - self.turn])
        self.st.history(self.tail, depth=DEPTH, last=HEAD_WRITES)  # the same 4 × 33 deltas

    def _build(self):
        self.st.log._history = None  # what a state's first history() finds
        self.st.history(self.tail, depth=DEPTH)

    @unit("µs")
    def track_lookup_us(self):
        return 1e6 / median_rate(self._lookup, 1, LOOKUP_REPEATS)

    @unit("µs")
    def track_lookup_and_decode_us(self):
        return 1e6 / median_rate(self._lookup_and_decode, 1, LOOKUP_REPEATS)

    @unit("µs")
    def track_head_write_then_lookup_us(self):
        return 1e6 / median_rate(self._write_and_lookup, 1, LOOKUP_REPEATS)

    @unit("ms")
    def track_index_build_ms(self):
        return 1e3 / median_rate(self._build, 1, BUILD_REPEATS)


class HistoryOnDisk(History):
    """History's lookups where most of the log is in its file only: a file log (sync="group")
    under a window of WINDOW deltas, so memory keeps the newest ~2-8 windows and three of the four
    head writes (with their chains) are read from the file, mapped read-only. Budget
    (docs/PERFORMANCE.md): a history of depth 32 on records on disk under 5 ms."""

    def _start(self):
        self.dir = tempfile.mkdtemp()
        return mmsb.start(log=os.path.join(self.dir, "state.log"), sync="group", retain=WINDOW)

    def setup(self):
        super().setup()
        self.st.flush()
        log = self.st.log
        assert log.first_pos > 0 and log.file_base == 0, "memory kept the whole log: nothing is read from disk"

    def teardown(self):
        super().teardown()
        shutil.rmtree(self.dir, ignore_errors=True)


class PythonHistory:
    """Peer of History: the same log as a list of (page, lsn, causes) tuples (LSN k at index
    k - 1); the page's deltas by a linear scan, then breadth first up the causes, as in mmsb."""

    timeout = 300

    def setup(self):
        log, lsn = [], 0
        sparse = range(SPARSE_PAGES)
        chain = range(SPARSE_PAGES, SPARSE_PAGES + CHAIN)
        every = LOG_BATCHES // HEAD_WRITES
        for k in range(LOG_BATCHES):
            log.extend((p, lsn + 1 + i, ()) for i, p in enumerate(sparse))
            lsn += SPARSE_PAGES
            if k % every == every - 1:
                for i, p in enumerate(chain):
                    log.append((p, lsn + 1 + i, (lsn + i,) if i else ()))
                lsn += CHAIN
        self.log, self.tail = log, chain[-1]
        own, hops = self._history(self.tail, DEPTH)
        assert (len(own), len(hops)) == (HEAD_WRITES, HEAD_WRITES * (DEPTH + 1))

    def _history(self, page, depth):
        log = self.log
        own = [t for t in log if t[0] == page]
        hops = {t[1]: 0 for t in own}
        frontier = own
        for h in range(1, depth + 1):
            nxt = []
            for t in frontier:
                for c in t[2]:
                    if c not in hops:
                        hops[c] = h
                        nxt.append(log[c - 1])
            frontier = nxt
        return own, hops

    @unit("µs")
    def track_lookup_us(self):
        return 1e6 / median_rate(lambda: self._history(self.tail, DEPTH), 1, 5)
