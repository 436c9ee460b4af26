"""Bounded memory: a log with a retention window, lookups in a long log, many live states and
the write path with retention on, each beside the NumPy/Python peer of the same workload.

Sub-µs lookups and the hop run INNER (= 1000) operations per timed call (see bench_core): read
1.00 ms as 1.00 µs per operation.

Budgets (docs/PERFORMANCE.md, "Memory"): 10 M small updates with a retention window grow RSS
by under 50 MB after warm-up (memory log, and file log under sync="group"); ``st.log[-1]`` and
``st.log.lsn[x]`` cost the same at any log length; 10 000 live states with one page each under
2 GB of RSS; the single hop with retention within 10 % of the hop without.

The peers: a dict of pages whose log is a ``list`` (keeps everything) or a
``collections.deque(maxlen=n)`` (keeps a window), written by ``mmsb.profile.numpy_update``.
RSS is read from /proc/self/status (Linux; elsewhere these track_ benchmarks report nothing).
"""

import collections
import os
import shutil
import tempfile

import numpy as np

import mmsb
from mmsb.profile import numpy_update

from .common import INNER, PAGE_SIZE

UPDATES = 10_000_000       # small updates per RSS measurement
WARMUP = 1_000_000         # updates before the first RSS reading (buffers reach their size)
WINDOW = 100_000           # deltas a retention window keeps
LOG_DELTAS = 1 << 20       # deltas in the log the lookups run on
STATES = 10_000            # live states, one 1 KiB page each


def rss_mb():
    """Resident memory of this process, MB (None where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _one_byte_updates(write, n, pages=4):
    """``n`` calls of ``write(page index, buffer)``, each changing one byte of one of ``pages`` pages."""
    bufs = [np.zeros(PAGE_SIZE, np.uint8) for _ in range(pages)]
    for i in range(n):
        b = bufs[i & 3]
        b[(i >> 2) & (PAGE_SIZE - 1)] ^= 1
        write(i & 3, b)


def _rss_growth(write):
    """MB of RSS that UPDATES one-byte updates add after WARMUP of them."""
    _one_byte_updates(write, WARMUP)
    before = rss_mb()
    _one_byte_updates(write, UPDATES)
    after = rss_mb()
    return None if before is None else after - before


class RetainedWrites:
    """RSS growth over 10 M one-byte updates on four 1 KiB pages, after 1 M of warm-up."""

    params = (["memory", "file (group sync)"], [None, WINDOW])
    param_names = ["log", "retain"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, log, retain):
        self.dir = tempfile.mkdtemp()
        path = os.path.join(self.dir, "state.log") if log != "memory" else None
        self.st = mmsb.start(log=path, sync="group", retain=retain)
        ids = [self.st.create_page(PAGE_SIZE).id for _ in range(4)]
        self.write = lambda i, b, up=self.st.update_page: up(ids[i], b)

    def teardown(self, log, retain):
        mmsb.stop(self.st)
        shutil.rmtree(self.dir, ignore_errors=True)

    def track_rss_growth_mb(self, log, retain):
        return _rss_growth(self.write)

    track_rss_growth_mb.unit = "MB"


class RetainedWritesPeer:
    """The same updates on a dict of pages whose log is a list, or a deque holding the window."""

    params = [None, WINDOW]
    param_names = ["retain"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, retain):
        self.pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(4)}
        self.epochs = dict.fromkeys(range(4), 0)
        self.log = [] if retain is None else collections.deque(maxlen=retain)
        self.write = lambda i, b: numpy_update(self.pages, self.epochs, self.log, i, b)

    def track_rss_growth_mb(self, retain):
        return _rss_growth(self.write)

    track_rss_growth_mb.unit = "MB"


class LogLookups:
    """``st.log[-1]``, ``st.log[i]`` and ``st.log.lsn[x]`` on a log of 1 M deltas (the index is
    built on the first lookup and kept up to date from there), beside a Python list's."""

    def setup(self):
        self.st = mmsb.start()
        ids = self.st.create_pages(1024, 8)
        n = LOG_DELTAS // 1024
        for r in range(n):
            self.st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, np.arange(1025), np.full(1024, r % 8),
                                                            np.full(1024, r % 255 + 1)))
        self.log = self.st.log
        self.log[-1]  # the first lookup indexes the log
        self.mid = self.st.lsn // 2
        self.bufs = [np.full(8, 1, np.uint8), np.full(8, 2, np.uint8)]
        self.peer = [(lsn, lsn % 1024, r) for lsn, r in enumerate(range(LOG_DELTAS), start=1)]

    def teardown(self):
        mmsb.stop(self.st)

    def time_log_last(self):
        log = self.log
        for _ in range(INNER):
            log[-1]

    def time_log_by_position(self):
        log, i = self.log, LOG_DELTAS // 3
        for _ in range(INNER):
            log[i]

    def time_log_by_lsn(self):
        by_lsn, lsn = self.log.lsn, self.mid
        for _ in range(INNER):
            by_lsn[lsn]

    def time_write_then_log_last(self):
        log, up, bufs = self.log, self.st.update_page, self.bufs
        for i in range(INNER):
            up(0, bufs[i & 1])
            log[-1]

    def time_write_alone(self):
        up, bufs = self.st.update_page, self.bufs
        for i in range(INNER):
            up(0, bufs[i & 1])

    def time_list_last(self):
        peer = self.peer
        for _ in range(INNER):
            peer[-1]

    def time_list_by_position(self):
        peer, i = self.peer, LOG_DELTAS // 3
        for _ in range(INNER):
            peer[i]


class LiveStates:
    """RSS of 10 000 live states, one 1 KiB page written once each, beside 10 000 dicts holding
    one page and a one-entry log each."""

    timeout = 600
    number = 1
    repeat = 1

    def track_rss_mb(self):
        before = rss_mb()
        states = []
        for i in range(STATES):
            st = mmsb.start()
            st.update_page(st.create_page(PAGE_SIZE), np.full(PAGE_SIZE, i % 255 + 1, np.uint8))
            states.append(st)
        after = rss_mb()
        for st in states:
            mmsb.stop(st)
        return None if before is None else after - before

    track_rss_mb.unit = "MB"

    def track_rss_mb_peer(self):
        before = rss_mb()
        peers = []
        for i in range(STATES):
            pages, epochs, log = {0: np.zeros(PAGE_SIZE, np.uint8)}, {0: 0}, []
            numpy_update(pages, epochs, log, 0, np.full(PAGE_SIZE, i % 255 + 1, np.uint8))
            peers.append((pages, epochs, log))
        after = rss_mb()
        return None if before is None else after - before

    track_rss_mb_peer.unit = "MB"


class HopWithRetention:
    """The single hop (update a 1 KiB parent, a passthrough child follows), with and without a
    retention window; the window's trims happen inside the timed calls."""

    params = [None, 1000]
    param_names = ["retain"]

    def setup(self, retain):
        self.st = mmsb.start(retain=retain)
        self.parent = self.st.create_page(PAGE_SIZE)
        child = self.st.create_page(PAGE_SIZE)
        self.st.register_recompute(child, [self.parent], "passthrough")
        g = np.random.default_rng(0)
        self.bufs = [g.integers(1, 256, PAGE_SIZE, dtype=np.uint8) for _ in range(2)]
        for _ in range(5):  # past the first trims: the buffer has its size
            self.time_hop(retain)

    def teardown(self, retain):
        mmsb.stop(self.st)

    def time_hop(self, retain):
        up, parent, bufs = self.st.update_page, self.parent, self.bufs
        for i in range(INNER):
            up(parent, bufs[i & 1])


class GroupSyncedWrites:
    """One-byte updates of a 1 KiB page on a file log under sync="group", with and without a
    retention window (its trims, syncs before them and checkpoints beside the log included)."""

    params = [None, 1000]
    param_names = ["retain"]

    def setup(self, retain):
        self.dir = tempfile.mkdtemp()
        self.st = mmsb.start(log=os.path.join(self.dir, "state.log"), sync="group", retain=retain)
        self.page = self.st.create_page(PAGE_SIZE).id
        self.buf = np.zeros(PAGE_SIZE, np.uint8)
        self.i = 0
        for _ in range(20):  # past the first trims and checkpoints: the buffers have their size
            self.time_updates(retain)

    def teardown(self, retain):
        mmsb.stop(self.st)
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_updates(self, retain):
        up, page, buf, i = self.st.update_page, self.page, self.buf, self.i
        for k in range(i, i + INNER):
            buf[k & (PAGE_SIZE - 1)] ^= 1
            up(page, buf)
        self.i = i + INNER
