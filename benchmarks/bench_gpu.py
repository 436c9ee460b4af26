"""The device layer: pages on an NVIDIA GPU, each beside the same workload on a CPU
page and the plain NumPy peer a user would write without mmsb.

Without a usable device (``mmsb.gpu.available()`` False, or no ``mmsb.gpu``) and under
``NUMBA_ENABLE_CUDASIM`` (simulated timings mean nothing) every ``location="gpu"`` benchmark's
setup raises NotImplementedError, asv's skip (shown as n/a), and so does GpuCounters; the
``cpu`` params and the NumPy peers run everywhere, as the baseline.

States are ``mmsb.start(log=False)`` (``gpu=True`` for device pages), as in
``benchmarks/gpu_bench.py``: the log costs the same on both sides and would hide the device's
share. Dense deltas write ~half the bytes of a page in random 64-byte runs, two payloads
alternating so every apply changes every masked byte.

Budgets (docs/PERFORMANCE.md): the fixed cost of one flush (stage, launch, sync) ≤ 15 µs; a
device-resident apply beats one CPU core from ≤ 256 KiB per flush (compare
GpuDenseApply's gpu and cpu params); ≥ 5× one core at 256 MiB (gpu_bench.py measures that
size; this suite stops at 16 MiB to keep setup cheap).

This asv_runner re-runs setup before every timed call (see bench_core), so each timed call
gets a fresh state with its Delta already built; GpuFlush runs INNER (= 1000) flushes per
timed call, so a reported 1.00 ms reads as 1.00 µs per flush.
"""

import functools
import os

import numpy as np

import mmsb

from .common import INNER, PAGE_SIZE, numpy_update, pretouch, sparse_batch, unit

KIB, MIB = 1 << 10, 1 << 20
DENSE_SIZES = [64 * KIB, 1 * MIB, 16 * MIB]
LOCATIONS = ["cpu", "gpu"]
MASK_RUN = 64                 # dense deltas: each 64-byte run of the page masked or not
BATCH_DELTAS = 256            # GpuApplyBatch: 256 sparse 8-byte deltas, one per 1 KiB page
BATCH_WIDTH = 8
HOP_SIZE = 1 * MIB            # GpuHop: 1 MiB parent, passthrough child on the same side
FLUSH_AT = PAGE_SIZE // 2     # the byte a 1-byte flush writes


def _why_no_device():
    """Why device benchmarks skip here, or None when a real device is usable."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0"):
        return "NUMBA_ENABLE_CUDASIM is set: simulated timings mean nothing"
    try:
        from mmsb import gpu
    except ImportError:
        return "this mmsb has no mmsb.gpu"
    try:
        ok = gpu.available()
    except Exception:  # noqa: BLE001 - available() never raises by contract; be safe anyway
        ok = False
    return None if ok else "no CUDA device (mmsb.gpu.available() is False)"


def _need_device(location="gpu"):
    if location == "gpu":
        why = _why_no_device()
        if why:
            raise NotImplementedError(why)


def _stop(bench):
    # asv runs teardown after a setup that raised NotImplementedError (a skip) too
    st = bench.__dict__.pop("st", None)
    if st is not None:
        mmsb.stop(st)


def _start(location):
    return mmsb.start(log=False, gpu=True) if location == "gpu" else mmsb.start(log=False)


@functools.cache
def _dense_data(size):
    """(mask, payload_a, payload_b) for a `size`-byte page: ~half the bytes masked in random
    64-byte runs; payload_b differs from payload_a at every byte. Cached per process."""
    g = np.random.default_rng(0)
    n = -(-size // MASK_RUN)
    runs = np.unpackbits(np.frombuffer(g.bytes((n + 7) // 8), np.uint8), count=n).view(np.bool_)
    mask = np.ascontiguousarray(np.repeat(runs, MASK_RUN)[:size])
    a = np.frombuffer(g.bytes(size), np.uint8).copy()
    return mask, a, ~a


# -- flush: the fixed cost of one commit ---------------------------------------------------

class GpuFlush:
    """1000 × apply_delta of a 1-byte sparse delta to one 1 KiB page (ms per call = µs per
    flush), two values alternating. On a gpu page each is a whole flush: stage, copy in, launch,
    sync. Budget ≤ 15 µs per gpu flush, so ≤ 15 ms per timed call.
    """

    params = [LOCATIONS]
    param_names = ["location"]

    def setup(self, location):
        _need_device(location)
        self.st = _start(location)
        self.pg = self.st.create_page(PAGE_SIZE, location=location)
        at = np.array([FLUSH_AT], np.int64)
        ones = [np.array([v], np.uint8) for v in (0x5A, 0xA5)]
        for v in ones:                       # warm: kernels loaded, the page holds 0xA5
            self.st.apply_delta(mmsb.Delta.sparse(self.pg, at, v))
        self.deltas = [mmsb.Delta.sparse(self.pg, at, ones[k & 1]) for k in range(INNER)]

    def teardown(self, location):
        _stop(self)

    def time_1000_flushes(self, location):
        apply = self.st.apply_delta
        for d in self.deltas:
            apply(d)


class NumpyGpuFlush:
    """Peer of GpuFlush: 1000 × `page[indices] = values` of one byte into a 1 KiB array."""

    def setup(self):
        self.page = np.zeros(PAGE_SIZE, np.uint8)
        self.at = np.array([FLUSH_AT], np.int64)
        self.ones = [np.array([v], np.uint8) for v in (0x5A, 0xA5)]

    def time_1000_flushes(self):
        page, at, a, b = self.page, self.at, self.ones[0], self.ones[1]
        for _ in range(INNER // 2):
            page[at] = a
            page[at] = b


# -- dense apply -----------------------------------------------------------------------------

class GpuDenseApply:
    """One apply_delta of a dense delta (~half the page's bytes, in 64-byte runs) per timed
    call, on a page on `location`. time_apply_and_query adds query_page (the host copy): for a
    gpu page that is the round trip. Budget: gpu beats cpu from ≤ 256 KiB (so at every size here).
    """

    params = [DENSE_SIZES, LOCATIONS]
    param_names = ["size", "location"]
    timeout = 120

    def setup(self, size, location):
        _need_device(location)
        mask, a, b = _dense_data(size)
        self.st = _start(location)
        self.pg = self.st.create_page(size, location=location)
        self.st.apply_delta(mmsb.Delta.dense(self.pg, mask, b))   # warm; the page holds b
        self.delta = mmsb.Delta.dense(self.pg, mask, a)           # changes every masked byte

    def teardown(self, size, location):
        _stop(self)

    def time_apply_delta(self, size, location):
        self.st.apply_delta(self.delta)

    def time_apply_and_query(self, size, location):
        self.st.apply_delta(self.delta)
        self.st.query_page(self.pg)


class NumpyGpuDenseApply:
    """Peer of GpuDenseApply: np.copyto(page, payload, where=mask) on a host array (and a
    .copy() of it for time_apply_and_query)."""

    params = [DENSE_SIZES]
    param_names = ["size"]

    def setup(self, size):
        self.mask, self.a, b = _dense_data(size)
        self.page = pretouch(np.zeros(size, np.uint8))[0]
        np.copyto(self.page, b, where=self.mask)

    def time_apply_delta(self, size):
        np.copyto(self.page, self.a, where=self.mask)

    def time_apply_and_query(self, size):
        np.copyto(self.page, self.a, where=self.mask)
        self.page.copy()


# -- a batch of small sparse deltas ------------------------------------------------------------

class GpuApplyBatch:
    """One apply_batch of 256 sparse 8-byte deltas, one per page, over 256 × 1 KiB pages on
    `location` (one flush for the gpu pages). No budget line of its own: read gpu against cpu
    and GpuFlush's fixed cost.
    """

    params = [LOCATIONS]
    param_names = ["location"]

    def setup(self, location):
        _need_device(location)
        starts, indices, values_a, values_b = sparse_batch(BATCH_DELTAS, BATCH_WIDTH)
        self.st = _start(location)
        ids = self.st.create_pages(BATCH_DELTAS, PAGE_SIZE, location=location)
        self.st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_b))   # warm
        self.batch = mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_a)

    def teardown(self, location):
        _stop(self)

    def time_apply_batch(self, location):
        self.st.apply_batch(self.batch)


class NumpyGpuApplyBatch:
    """Peer of GpuApplyBatch: one fancy-index assignment into a (256, 1024) host array."""

    def setup(self):
        _, indices, values_a, values_b = sparse_batch(BATCH_DELTAS, BATCH_WIDTH)
        self.arena = pretouch(np.zeros(BATCH_DELTAS * PAGE_SIZE, np.uint8))[0]
        rows = np.repeat(np.arange(BATCH_DELTAS, dtype=np.int64) * PAGE_SIZE, BATCH_WIDTH)
        self.flat_index, self.values_a = rows + indices, values_a
        self.arena[self.flat_index] = values_b

    def time_apply_batch(self):
        self.arena[self.flat_index] = self.values_a


# -- one hop on the device ---------------------------------------------------------------------

class GpuHop:
    """update_page of a 1 MiB parent whose passthrough child is on the same side (gpu: a
    gpu -> gpu hop: the new bytes staged and diffed on the device, the child copied there), two
    random buffers alternating, one update per timed call. No budget line: read gpu against cpu.
    """

    params = [LOCATIONS]
    param_names = ["location"]

    def setup(self, location):
        _need_device(location)
        _, self.a, self.b = _dense_data(HOP_SIZE)
        self.st = _start(location)
        self.parent = self.st.create_page(HOP_SIZE, location=location)
        self.child = self.st.create_page(HOP_SIZE, location=location)
        self.st.register_passthrough(self.child, self.parent)
        self.st.update_page(self.parent, self.b)                  # warm; both hold b
        if not np.array_equal(self.st.query_page(self.child), self.b):
            raise AssertionError("the passthrough child did not follow its parent")

    def teardown(self, location):
        _stop(self)

    def time_update_parent(self, location):
        self.st.update_page(self.parent, self.a)


class NumpyGpuHop:
    """Peer of GpuHop: numpy_update (compare, write, epoch) of a 1 MiB page, then the child
    copied from it."""

    def setup(self):
        _, self.a, b = _dense_data(HOP_SIZE)
        self.pages, self.epochs = {0: pretouch(np.zeros(HOP_SIZE, np.uint8))[0]}, {0: 0}
        self.child = pretouch(np.zeros(HOP_SIZE, np.uint8))[0]
        numpy_update(self.pages, self.epochs, None, 0, b)
        np.copyto(self.child, self.pages[0])

    def time_update_parent(self):
        if numpy_update(self.pages, self.epochs, None, 0, self.a):
            np.copyto(self.child, self.pages[0])


# -- counters ------------------------------------------------------------------------------------

class GpuCounters:
    """Device launches and bytes across the bus per commit, on gpu pages (deterministic).
    stats()'s device_launches / device_bytes_in / device_bytes_out
    moved by one call after a warm-up.
    """

    params = [["flush", "dense_1MiB", "batch_256", "hop_1MiB"]]
    param_names = ["commit"]

    def setup(self, commit):
        _need_device()
        self.st = mmsb.start(log=False, gpu=True)
        st = self.st
        if commit == "flush":
            pg = st.create_page(PAGE_SIZE, location="gpu")
            at = np.array([FLUSH_AT], np.int64)
            vals = [np.array([v], np.uint8) for v in (0x5A, 0xA5)]
            self.commit = lambda k: st.apply_delta(mmsb.Delta.sparse(pg, at, vals[k]))
        elif commit == "dense_1MiB":
            mask, a, b = _dense_data(MIB)
            pg = st.create_page(MIB, location="gpu")
            self.commit = lambda k: st.apply_delta(mmsb.Delta.dense(pg, mask, (a, b)[k]))
        elif commit == "batch_256":
            starts, indices, values_a, values_b = sparse_batch(BATCH_DELTAS, BATCH_WIDTH)
            ids = st.create_pages(BATCH_DELTAS, PAGE_SIZE, location="gpu")
            batches = [mmsb.DeltaBatch.from_sparse(ids, starts, indices, v) for v in (values_a, values_b)]
            self.commit = lambda k: st.apply_batch(batches[k])
        else:
            _, a, b = _dense_data(HOP_SIZE)
            parent = st.create_page(HOP_SIZE, location="gpu")
            child = st.create_page(HOP_SIZE, location="gpu")
            st.register_passthrough(child, parent)
            self.commit = lambda k: st.update_page(parent, (a, b)[k])
        self.commit(1)      # warm: kernels loaded; the pages hold the second value

    def teardown(self, commit):
        _stop(self)

    def _moved(self, key):
        before = self.st.stats()[key]
        self.commit(0)
        return self.st.stats()[key] - before

    @unit("launches/commit")
    def track_device_launches(self, commit):
        return self._moved("device_launches")

    @unit("bytes/commit")
    def track_device_bytes_in(self, commit):
        return self._moved("device_bytes_in")

    @unit("bytes/commit")
    def track_device_bytes_out(self, commit):
        return self._moved("device_bytes_out")
