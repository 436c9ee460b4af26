"""mmsb's core workloads, each beside the plain NumPy/Python peer a user would write without it.

Class `X` times mmsb; `NumpyX` times the peer (a dict of np.uint8 pages keyed by int id, a diff
with np.flatnonzero / np.array_equal, a list of (id, indices, values) as the log) with the same
params, so one run shows both. Budgets (docs/PERFORMANCE.md) are for a 2-core machine.

Why some bodies loop: this asv_runner re-runs `setup` before every timed call and times calls one
at a time whenever a benchmark has a `setup`, which is too coarse for sub-µs operations. Those
benchmarks run INNER (= 1000) operations per timed call; read a reported 1.00 ms as 1.00 µs/op.
"""

import itertools
import subprocess
import sys

import numpy as np

import mmsb

from mmsb.profile import page_order, scatter_offsets

from .common import (
    BATCH_PAGES, BATCH_WIDTH, BIG_PAGES, CREATE_COUNTS, INNER, PAGE_SIZE, WRITE_CHUNK,
    median_rate, numpy_update, pretouch, resident_bytes, sparse_batch, touch_batch, unit,
    update_buffers,
)

LOGS = {"memory": None, "off": False}      # param name -> mmsb.start(log=...)
CONTENTS = ["random", "10 bytes changed"]


class AllocationCycle:
    """1000 × (start a state, create one 1 KiB page, stop) (ms per call = µs per cycle).

    Budget ≤ 1 µs per cycle, so ≤ 1 ms per timed call (the original: 6.09 µs), and ≥ 2× the
    NumPy script doing the same bookkeeping (mmsb.profile.ScriptState; `python -m mmsb profile`
    judges that ratio).
    """

    def setup(self):
        # the first state loads numba and the kernels (~1 s); that belongs to FirstUpdate
        mmsb.stop(mmsb.start())

    def time_1000_cycles(self):
        start, stop = mmsb.start, mmsb.stop
        for _ in range(INNER):
            st = start()
            st.create_page(PAGE_SIZE)
            stop(st)


class NumpyAllocationCycle:
    """Floor of a peer: a new dict of pages and list log, one np.zeros 1 KiB page, dropped. It does
    none of the bookkeeping (ids, epochs, a log record); the peer the ≥ 2× budget is judged
    against is mmsb.profile.ScriptState, in `python -m mmsb profile`."""

    def time_1000_cycles(self):
        for _ in range(INNER):
            pages, log = {}, []
            pages[0] = np.zeros(PAGE_SIZE, np.uint8)


class AllocationCycleFloor:
    """1000 × the allocation cycle's bare shape: three Python calls, a new state object holding a
    pooled core, a new page handle, the core back in the pool; no bookkeeping at all (no table
    row, arena slot, log record or reset). What any Python API of this shape costs: beside the
    NumPy script, it shows how much "≥ 2× NumPy" leaves for the work (docs/PERFORMANCE.md)."""

    def setup(self):
        class Core:
            __slots__ = ()

        class State:
            __slots__ = ("core",)

        class Page:
            __slots__ = ("state", "id", "slot", "size")

        pool, new = [Core()], object.__new__

        def start():
            st = new(State)
            st.core = pool.pop()
            return st

        def create_page(st, size):
            page = new(Page)
            page.state, page.id, page.slot, page.size = st, 0, 0, size
            return page

        def stop(st):
            core, st.core = st.core, None
            pool.append(core)

        self.calls = start, create_page, stop

    def time_1000_cycles(self):
        start, create_page, stop = self.calls
        for _ in range(INNER):
            st = start()
            create_page(st, PAGE_SIZE)
            stop(st)


class CreatePage:
    """1000 create_page(1024) on a fresh state per timed call (ms per call = µs per page).

    No budget of its own; the allocation cycle (≤ 1 µs with start and stop) bounds one
    create_page, so ≤ 1 ms per timed call.
    """

    def setup(self):
        self.st = mmsb.start()
        self.st.create_page(PAGE_SIZE)     # any lazy first-call work stays out of the timing

    def teardown(self):
        mmsb.stop(self.st)

    def time_1000_create_page(self):
        create = self.st.create_page
        for _ in range(INNER):
            create(PAGE_SIZE)


class NumpyCreatePage:
    """Peer of CreatePage: 1000 np.zeros(1024) pages added to a dict."""

    def setup(self):
        self.pages = {}

    def time_1000_create_page(self):
        pages = self.pages
        n = len(pages)
        for i in range(n, n + INNER):
            pages[i] = np.zeros(PAGE_SIZE, np.uint8)


class CreatePages:
    """create_pages(count, 1024) on a fresh state. No budget of its own; it must beat count × 1 µs."""

    params = [CREATE_COUNTS]
    param_names = ["count"]

    def setup(self, count):
        self.st = mmsb.start()
        self.st.create_pages(1, PAGE_SIZE)

    def teardown(self, count):
        mmsb.stop(self.st)

    def time_create_pages(self, count):
        # kept on self so freeing the result is not timed (the peer does the same)
        self.ids = self.st.create_pages(count, PAGE_SIZE)


class NumpyCreatePages:
    """Peer of CreatePages: a dict comprehension of `count` np.zeros(1024) pages."""

    params = [CREATE_COUNTS]
    param_names = ["count"]

    def time_create_pages(self, count):
        self.pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(count)}


class UpdatePage:
    """1000 update_page calls on one 1 KiB page, alternating two buffers so every call changes
    bytes (ms per call = µs per update).

    No bare-update budget; a single hop (the same update plus a passthrough child, log in
    memory) must take ≤ 2 µs, so a bare update ≤ 2 ms per timed call.
    """

    params = [CONTENTS, list(LOGS)]
    param_names = ["content", "log"]

    def setup(self, content, log):
        self.a, self.b = update_buffers(content)
        self.st = mmsb.start(log=LOGS[log])
        self.pg = self.st.create_page(PAGE_SIZE)
        # warms the kernels and leaves b on the page, so the first timed write (a) is a change
        self.st.update_page(self.pg, self.b)

    def teardown(self, content, log):
        mmsb.stop(self.st)

    def time_1000_updates(self, content, log):
        update, pg, a, b = self.st.update_page, self.pg, self.a, self.b
        for _ in range(INNER // 2):
            update(pg, a)
            update(pg, b)


class NumpyUpdatePage:
    """Peer of UpdatePage (same params, same buffers)."""

    params = [CONTENTS, list(LOGS)]
    param_names = ["content", "log"]

    def setup(self, content, log):
        self.a, self.b = update_buffers(content)
        self.pages, self.epochs = {0: np.zeros(PAGE_SIZE, np.uint8)}, {0: 0}
        self.log = [] if log == "memory" else None
        numpy_update(self.pages, self.epochs, self.log, 0, self.b)

    def time_1000_updates(self, content, log):
        pages, epochs, lg, a, b = self.pages, self.epochs, self.log, self.a, self.b
        for _ in range(INNER // 2):
            numpy_update(pages, epochs, lg, 0, a)
            numpy_update(pages, epochs, lg, 0, b)


class ApplyBatch:
    """One apply_batch of 4096 sparse 8-byte deltas, one per 1 KiB page, over 4096 pages, in
    page creation order.

    The budget (≥ 25 M deltas/s with the log in memory, and ≥ 0.5× a raw NumPy scatter of the
    same bytes) is for pages in random order: SmallDeltas and NumpyScatterSmallDeltas below.
    """

    params = [list(LOGS)]
    param_names = ["log"]
    timeout = 120

    def setup(self, log):
        starts, indices, values_a, values_b = sparse_batch()
        self.st = mmsb.start(log=LOGS[log])
        ids = self.st.create_pages(BATCH_PAGES, PAGE_SIZE)
        self.batch_a = mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_a)
        self.batch_b = mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_b)
        # b first: faults the arena in, warms the kernels, and makes every delta of a a change
        self.st.apply_batch(self.batch_b)

    def teardown(self, log):
        mmsb.stop(self.st)

    def time_apply_batch(self, log):
        self.st.apply_batch(self.batch_a)

    @unit("deltas/s")
    def track_deltas_per_second(self, log):
        apply, turn = self.st.apply_batch, itertools.cycle([self.batch_a, self.batch_b])
        return median_rate(lambda: apply(next(turn)), BATCH_PAGES)


class NumpyApplyBatch:
    """Peer of ApplyBatch: a Python loop over pages doing fancy-index assignment (+ list log).

    The deltas are pre-split per page in setup, the peer's best case. time_apply_batch_vectorized
    is the ceiling a NumPy user reaches by giving up per-page arrays for one 2-D arena.
    """

    params = [list(LOGS)]
    param_names = ["log"]

    def setup(self, log):
        starts, indices, values_a, values_b = sparse_batch()
        spans = [(i, slice(starts[i], starts[i + 1])) for i in range(BATCH_PAGES)]
        self.deltas_a = [(i, indices[s], values_a[s]) for i, s in spans]
        self.deltas_b = [(i, indices[s], values_b[s]) for i, s in spans]
        self.pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(BATCH_PAGES)}
        self.log = [] if log == "memory" else None
        self._apply(self.deltas_b)
        self.flat_arena = pretouch(np.zeros(BATCH_PAGES * PAGE_SIZE, np.uint8))[0]
        rows = np.repeat(np.arange(BATCH_PAGES, dtype=np.int64) * PAGE_SIZE, BATCH_WIDTH)
        self.flat_index, self.values_a = rows + indices, values_a

    def _apply(self, deltas):
        pages, log = self.pages, self.log
        if log is None:
            for pid, idx, vals in deltas:
                pages[pid][idx] = vals
        else:
            for pid, idx, vals in deltas:
                pages[pid][idx] = vals
                log.append((pid, idx, vals))

    def time_apply_batch(self, log):
        self._apply(self.deltas_a)

    def time_apply_batch_vectorized(self, log):
        self.flat_arena[self.flat_index] = self.values_a
        if self.log is not None:
            self.log.append((self.flat_index, self.values_a))

    @unit("deltas/s")
    def track_deltas_per_second(self, log):
        turn = itertools.cycle([self.deltas_a, self.deltas_b])
        return median_rate(lambda: self._apply(next(turn)), BATCH_PAGES)


PAGE_ORDERS = ["sequential", "random"]


def _pages_in(order):
    """Which page delta i of a small-delta batch writes: i, or a seeded random permutation."""
    return np.arange(BATCH_PAGES, dtype=np.int64) if order == "sequential" else page_order(BATCH_PAGES)


class SmallDeltas:
    """One apply_batch of 4096 sparse 8-byte deltas over 4096 × 1 KiB pages, each page once, log in
    memory; `order`: pages in creation order or in a seeded random order (mmsb.profile.page_order,
    as `python -m mmsb profile` runs it).

    Budget, random order: ≥ 25 M deltas/s (time_ ≤ 164 µs, track_deltas_per_second ≥ 2.5e7) and
    ≥ 0.5× the rate of NumpyScatterSmallDeltas, the same bytes written by one NumPy scatter.
    """

    params = [PAGE_ORDERS]
    param_names = ["order"]
    timeout = 120

    def setup(self, order):
        starts, indices, values_a, values_b = sparse_batch()
        self.st = mmsb.start()
        ids = self.st.create_pages(BATCH_PAGES, PAGE_SIZE)[_pages_in(order)]
        self.batch_a = mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_a)
        self.batch_b = mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_b)
        # b first: faults the arena in, warms the kernels, and makes every delta of a a change
        self.st.apply_batch(self.batch_b)

    def teardown(self, order):
        mmsb.stop(self.st)

    def time_apply_batch(self, order):
        self.st.apply_batch(self.batch_a)

    @unit("deltas/s")
    def track_deltas_per_second(self, order):
        apply, turn = self.st.apply_batch, itertools.cycle([self.batch_a, self.batch_b])
        return median_rate(lambda: apply(next(turn)), BATCH_PAGES)


class NumpyScatterSmallDeltas:
    """Peer of SmallDeltas: the same bytes by one fancy-index assignment `flat[offsets] = values`
    into one flat uint8 array holding all 4096 pages, the flat offsets (page * 1024 + index)
    precomputed in setup; no log, no epochs, no diff: the bytes alone, the ceiling of NumPy."""

    params = [PAGE_ORDERS]
    param_names = ["order"]

    def setup(self, order):
        starts, indices, values_a, values_b = sparse_batch()
        self.flat = pretouch(np.zeros(BATCH_PAGES * PAGE_SIZE, np.uint8))[0]
        self.offsets = scatter_offsets(_pages_in(order), starts, indices)
        self.values_a, self.values_b = values_a, values_b
        self.flat[self.offsets] = values_b

    def time_apply_batch(self, order):
        self.flat[self.offsets] = self.values_a

    @unit("deltas/s")
    def track_deltas_per_second(self, order):
        flat, offsets, turn = self.flat, self.offsets, itertools.cycle([self.values_a, self.values_b])
        return median_rate(lambda: flat.__setitem__(offsets, next(turn)), BATCH_PAGES)


def _write_every_page(st, ids):
    # chunks, not one 1 M-delta batch: the batch's own arrays (25 MB) would pad the peak
    for lo in range(0, ids.size, WRITE_CHUNK):
        chunk = ids[lo:lo + WRITE_CHUNK]
        st.apply_batch(mmsb.DeltaBatch.from_sparse(chunk, *touch_batch(chunk.size)))


def _big_written_state():
    st = mmsb.start(log=False)           # the budget is for pages; log memory is in Counters
    _write_every_page(st, st.create_pages(BIG_PAGES, PAGE_SIZE))
    return st


class PageMemory:
    """1 M × 1 KiB pages, each written once (a 1-byte delta makes its whole page resident).

    Budget ≤ 1.05 GiB resident. peakmem_ is the whole process's peak: interpreter and numpy as
    in the peer, plus numba and the kernels (~60 MiB), which only mmsb pays.
    track_resident_bytes_per_page is RSS growth / 1 M
    (≤ 1127 bytes/page); track_arena_bytes_per_page is the arena bytes stats() reports / 1 M.
    """

    timeout = 300

    def setup(self):
        # the first state imports numba and loads the kernels (~60 MiB): not page memory
        st = mmsb.start(log=False)
        _write_every_page(st, st.create_pages(1, PAGE_SIZE))
        mmsb.stop(st)

    def peakmem_1m_pages_written(self):
        mmsb.stop(_big_written_state())

    @unit("bytes/page")
    def track_resident_bytes_per_page(self):
        before = resident_bytes()
        st = _big_written_state()
        grown = resident_bytes() - before
        mmsb.stop(st)
        return grown / BIG_PAGES

    @unit("bytes/page")
    def track_arena_bytes_per_page(self):
        st = _big_written_state()
        stats = st.stats()
        mmsb.stop(st)
        # the arena's bytes as stats() names them: "arena_used_bytes" ("arena_bytes" accepted too)
        return stats.get("arena_bytes", stats.get("arena_used_bytes")) / BIG_PAGES


class NumpyPageMemory:
    """Peer of PageMemory: one preallocated (1 M, 1024) uint8 array, byte 0 of each row written
    (the fair peer), and, for the dict-of-pages habit, its resident bytes per page."""

    timeout = 300

    def peakmem_1m_pages_written(self):
        arena = np.zeros((BIG_PAGES, PAGE_SIZE), np.uint8)
        arena[:, 0] = 1

    @unit("bytes/page")
    def track_resident_bytes_per_page(self):
        before = resident_bytes()
        arena = np.zeros((BIG_PAGES, PAGE_SIZE), np.uint8)
        arena[:, 0] = 1
        return (resident_bytes() - before) / BIG_PAGES

    @unit("bytes/page")
    def track_dict_resident_bytes_per_page(self):
        before = resident_bytes()
        pages = {}
        for i in range(BIG_PAGES):
            page = pages[i] = np.zeros(PAGE_SIZE, np.uint8)
            page[0] = 1
        return (resident_bytes() - before) / BIG_PAGES


class Counters:
    """Deterministic counters: they change only when mmsb's behaviour does, never with noise."""

    def setup(self):
        self.st = mmsb.start()
        self.a, self.b = update_buffers("10 bytes changed")
        self.pg = self.st.create_page(PAGE_SIZE)
        self.st.update_page(self.pg, self.a)

    def teardown(self):
        mmsb.stop(self.st)

    @unit("bytes/delta")
    def track_log_bytes_per_10_byte_update(self):
        before = self.st.log.nbytes
        self.st.update_page(self.pg, self.b)
        return self.st.log.nbytes - before

    def _sparse_batch(self):
        # pages are made here, before the caller's "before": their create record is not a delta's
        starts, indices, values, _ = sparse_batch()
        ids = self.st.create_pages(BATCH_PAGES, PAGE_SIZE)
        return mmsb.DeltaBatch.from_sparse(ids, starts, indices, values)

    @unit("LSNs/batch")
    def track_lsns_per_batch(self):
        """LSNs a 4096-delta batch consumes (one per delta that changed bytes: 4096)."""
        batch = self._sparse_batch()
        before = self.st.lsn
        self.st.apply_batch(batch)
        return self.st.lsn - before

    @unit("bytes/delta")
    def track_log_bytes_per_8_byte_delta(self):
        batch = self._sparse_batch()
        before = self.st.log.nbytes
        self.st.apply_batch(batch)
        return (self.st.log.nbytes - before) / BATCH_PAGES


class NumpyCounters:
    """Peer of Counters: Python memory of one (id, indices, values) log record."""

    @unit("bytes/delta")
    def track_log_bytes_per_10_byte_update(self):
        a, b = update_buffers("10 bytes changed")
        pages, epochs, log = {0: a.copy()}, {0: 0}, []
        numpy_update(pages, epochs, log, 0, b)
        return sum(sys.getsizeof(x) for x in (log[0], *log[0]))


_FIRST_UPDATE_SETUP = """
import numpy as np
import mmsb
st = mmsb.start()
pg = st.create_page(1024)
data = np.full(1024, 7, np.uint8)
"""


class Import:
    """Cold `import mmsb` in a fresh interpreter. Budget ≤ 0.3 s."""

    def timeraw_import(self):
        return "import mmsb"


class NumpyImport:
    """Peer floors: numpy (all the peer needs) and numba (what mmsb's kernels are built on)."""

    def timeraw_import(self):
        return "import numpy"

    def timeraw_import_numba(self):
        return "import numba"


class FirstUpdate:
    """First update_page in a fresh interpreter, JIT cache warm. Budget ≤ 1 s.

    timeraw_first_update times the call alone (import, start and create_page are setup);
    timeraw_import_to_first_update times the whole script a user waits for.
    """

    timeout = 180

    def setup(self):
        # the same script once, so numba's on-disk cache is filled and the timed run loads it
        subprocess.run([sys.executable, "-c", _FIRST_UPDATE_SETUP + "st.update_page(pg, data)"],
                       check=True)

    def timeraw_first_update(self):
        return "st.update_page(pg, data)", _FIRST_UPDATE_SETUP

    def timeraw_import_to_first_update(self):
        return _FIRST_UPDATE_SETUP + "st.update_page(pg, data)"


class NumpyFirstUpdate:
    """Peer of FirstUpdate: the first diff-write-log of a dict page in a fresh interpreter."""

    _SETUP = ("import numpy as np\npages, log = {0: np.zeros(1024, np.uint8)}, []\n"
              "data = np.full(1024, 7, np.uint8)\n")
    _STMT = ("changed = np.flatnonzero(pages[0] != data)\npages[0][changed] = data[changed]\n"
             "log.append((0, changed, data[changed]))\n")

    def timeraw_first_update(self):
        return self._STMT, self._SETUP

    def timeraw_import_to_first_update(self):
        return self._SETUP + self._STMT
