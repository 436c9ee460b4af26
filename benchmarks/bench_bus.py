"""A state shared across processes (``mmsb.start(shared=...)``, ``mmsb.attach``), beside the
peers a user would pick without it.

Every workload crosses a process boundary: the owner (or the peer's writer) is a forked child
and this process reads, waits or counts; for submissions the children submit and this process
owns the state. Budgets (docs/PERFORMANCE.md): a consistent read within 2x a raw shared-memory
read under a lock, a median wake-up within 50 us of the commit, and at least 1 M small deltas/s
submitted from one process.

- ``BusRead`` / ``SharedMemoryRead`` / ``QueueRead``: INNER reads of one page (1 KiB, 1 MiB)
  into a preallocated buffer: ``Attached.query_page(out=)``; ``multiprocessing.shared_memory``
  copied under a ``multiprocessing.Lock`` the writer also takes; a request / reply pair of
  ``multiprocessing.Queue`` carrying the pickled array.
- ``WakeLatency``: the owner stamps ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for all
  processes) into a page and commits it, every 2 ms; this process sleeps in ``Attached.wait``
  and, woken, takes the difference. The peer puts the stamp on a ``multiprocessing.Queue`` this
  process sleeps on. The floor: the same stamp under a bare futex on an anonymous shared
  mapping (two ctypes system calls, no mmsb), what any wake-up on this machine costs.
  Median over WAKE_SAMPLES.
- ``Submit``: 1, 2 or 4 processes each submit SUBMIT_BATCHES batches of BATCH_DELTAS 8-byte
  deltas on distinct pages (``Attached.apply_batch``); deltas / (last acknowledgement - start).
  The peer: the same arrays pickled through one ``multiprocessing.Queue`` to this process, which
  scatters them into a 2-d page array with NumPy (no log, no epochs, no LSNs).

Why track_ for most: the helpers are processes that setup starts once, and a sample is a
median over many round trips, so each benchmark times its own samples.
"""

import mmap
import multiprocessing as mp
import time
import uuid
from multiprocessing import resource_tracker, shared_memory

import numpy as np

import mmsb
from mmsb._registers import address
from mmsb.bus.segment import futex_wait, futex_wake

from .common import INNER, unit

SIZES = [1 << 10, 1 << 20]
QUEUE_INNER = 100              # a pickled round trip costs ~100x a shared read
WAKE_SAMPLES = 201
WAKE_PERIOD_S = 0.002          # between the owner's commits: the reader is asleep again by then
N_PAGES = 4096
PAGE = 1024
BATCH_DELTAS = 1024
WIDTH = 8
SUBMIT_BATCHES = 100
PROCESSES = [1, 2, 4]

_fork = mp.get_context("fork")  # the helpers start before this process holds any thread


def _name():
    return "bench" + uuid.uuid4().hex[:10]


def _page_bytes(size, value=7):
    return np.full(size, value, np.uint8)


# -- helper processes ---------------------------------------------------------------------------

def _owner(name, size, ready, stop):
    with mmsb.start(shared=name) as st:
        st.update_page(st.create_page(size), _page_bytes(size))
        ready.set()
        stop.wait()


def _shm_writer(name, size, lock, ready, stop):
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    try:
        with lock:
            np.ndarray(size, np.uint8, shm.buf)[:] = _page_bytes(size)
        ready.set()
        stop.wait()
    finally:
        shm.close()
        shm.unlink()


def _queue_server(size, requests, replies):
    page = _page_bytes(size)
    while requests.get() is not None:
        replies.put(page)


def _stamping_owner(name, ready, stop):
    with mmsb.start(shared=name) as st:
        p = st.create_page(8)
        ready.set()
        while not stop.is_set():
            time.sleep(WAKE_PERIOD_S)
            st.update_page(p, np.array([time.perf_counter()]).view(np.uint8))


def _stamping_queue(q, ready, stop):
    ready.set()
    while not stop.is_set():
        time.sleep(WAKE_PERIOD_S)
        q.put(time.perf_counter())


def _stamping_futex(word, ready, stop):
    ready.set()
    while not stop.is_set():
        time.sleep(WAKE_PERIOD_S)
        word[1] = time.perf_counter()
        word.view(np.int64)[0] += 1
        futex_wake(address(word))


def _batch_arrays(seed):
    g = np.random.default_rng(seed)
    pages = g.permutation(N_PAGES)[:BATCH_DELTAS].astype(np.int64)
    offsets = (g.integers(0, PAGE // WIDTH, BATCH_DELTAS) * WIDTH)[:, None] + np.arange(WIDTH)
    values = g.integers(1, 256, (BATCH_DELTAS, WIDTH), dtype=np.uint8)
    return pages, offsets.reshape(-1).astype(np.int64), values.reshape(-1)


def _submitter(name, seed, ready, go, done):
    att = mmsb.attach(name, timeout=60)  # the owner starts after the fork
    while (ids := att.page_ids()).size < N_PAGES:  # attached before the owner made them
        time.sleep(0.01)
    pages, offsets, values = _batch_arrays(seed)
    starts = np.arange(BATCH_DELTAS + 1, dtype=np.int64) * WIDTH
    batches = [mmsb.DeltaBatch(ids[pages], starts, offsets, values ^ np.uint8(k % 255 + 1))
               for k in range(2)]
    att.apply_batch(batches[1])  # the mailbox exists before the clock starts
    ready.put(seed)
    go.wait()
    for k in range(SUBMIT_BATCHES):
        att.apply_batch(batches[k % 2])
    done.put(time.perf_counter())
    att.close()


def _queue_submitter(seed, go, q, done):
    pages, offsets, values = _batch_arrays(seed)
    go.wait()
    for k in range(SUBMIT_BATCHES):
        q.put((pages, offsets, values ^ np.uint8(k % 255 + 1)))
    done.put(time.perf_counter())


def _started(target, *args):
    ready, stop = _fork.Event(), _fork.Event()
    proc = _fork.Process(target=target, args=(*args, ready, stop), daemon=True)
    proc.start()
    if not ready.wait(120):
        proc.kill()
        raise RuntimeError(f"{target.__name__} did not start")
    return proc, stop


def _stopped(proc, stop):
    stop.set()
    proc.join(30)
    if proc.is_alive():
        proc.kill()


# -- reads --------------------------------------------------------------------------------------

class BusRead:
    """INNER ``Attached.query_page(page, out=)`` of a page the owner process holds."""

    params = SIZES
    param_names = ["page_bytes"]

    def setup(self, size):
        name = _name()
        self.proc, self.stop = _started(_owner, name, size)
        self.att = mmsb.attach(name)
        self.page = int(self.att.page_ids()[0])
        self.out = np.empty(size, np.uint8)
        self.att.query_page(self.page, out=self.out)  # compiles or loads the read kernel

    def teardown(self, size):
        self.att.close()
        _stopped(self.proc, self.stop)

    def time_reads(self, size):
        read, page, out = self.att.query_page, self.page, self.out
        for _ in range(INNER):
            read(page, out=out)


class SharedMemoryRead:
    """Peer: INNER copies of a ``multiprocessing.shared_memory`` block under the writer's lock."""

    params = SIZES
    param_names = ["page_bytes"]

    def setup(self, size):
        name = _name()
        self.lock = _fork.Lock()
        # one resource tracker for both processes (its record of names is a set): the writer's
        # create and this attach register the name once, the writer's unlink forgets it
        resource_tracker.ensure_running()
        self.proc, self.stop = _started(_shm_writer, name, size, self.lock)
        self.shm = shared_memory.SharedMemory(name=name)
        self.src = np.ndarray(size, np.uint8, self.shm.buf)
        self.out = np.empty(size, np.uint8)

    def teardown(self, size):
        del self.src
        self.shm.close()
        _stopped(self.proc, self.stop)

    def time_reads(self, size):
        lock, src, out = self.lock, self.src, self.out
        for _ in range(INNER):
            with lock:
                np.copyto(out, src)


class QueueRead:
    """Peer: QUEUE_INNER request / reply round trips through ``multiprocessing.Queue``
    (time_reads is per QUEUE_INNER reads, not INNER)."""

    params = SIZES
    param_names = ["page_bytes"]

    def setup(self, size):
        self.requests, self.replies = _fork.Queue(), _fork.Queue()
        self.proc = _fork.Process(target=_queue_server, args=(size, self.requests, self.replies), daemon=True)
        self.proc.start()
        self.requests.put(1)
        self.replies.get(timeout=120)

    def teardown(self, size):
        self.requests.put(None)
        self.proc.join(30)

    def time_reads(self, size):
        requests, replies = self.requests, self.replies
        for _ in range(QUEUE_INNER):
            requests.put(1)
            replies.get()


# -- wake-ups -----------------------------------------------------------------------------------

class WakeLatency:
    """Median microseconds from the owner's commit (stamp taken just before it) to this
    process returning from ``Attached.wait``, and the same through a Queue."""

    timeout = 120

    def setup(self):
        name = _name()
        self.proc, self.stop = _started(_stamping_owner, name)
        self.att = mmsb.attach(name)
        self.page = int(self.att.page_ids()[0])
        self.stamp = np.empty(8, np.uint8)
        self.queue = _fork.Queue()
        self.qproc, self.qstop = _started(_stamping_queue, self.queue)
        self.word = np.frombuffer(mmap.mmap(-1, 4096), np.float64)  # [wake count, stamp], shared
        self.fproc, self.fstop = _started(_stamping_futex, self.word)

    def teardown(self):
        self.att.close()
        _stopped(self.proc, self.stop)
        _stopped(self.qproc, self.qstop)
        _stopped(self.fproc, self.fstop)

    @unit("us")
    def track_wait_wake_us(self):
        att, page, stamp = self.att, self.page, self.stamp
        lsn = att.wait(None, 10)  # in step with the owner
        samples = []
        for _ in range(WAKE_SAMPLES):
            lsn = att.wait(lsn + 1, 10)
            woke = time.perf_counter()
            att.query_page(page, out=stamp)
            samples.append(woke - stamp.view(np.float64)[0])
        return float(np.median(samples)) * 1e6

    @unit("us")
    def track_queue_get_us(self):
        q = self.queue
        while not q.empty():
            q.get()
        samples = []
        for _ in range(WAKE_SAMPLES):
            sent = q.get(timeout=10)
            samples.append(time.perf_counter() - sent)
        return float(np.median(samples)) * 1e6

    @unit("us")
    def track_bare_futex_us(self):
        word = self.word
        count, at = word.view(np.int64), address(word)
        seen = count[0]
        samples = []
        while len(samples) < WAKE_SAMPLES:
            futex_wait(at, int(seen), 1.0)
            now = time.perf_counter()
            if count[0] != seen:
                seen = count[0]
                samples.append(now - word[1])
        return float(np.median(samples)) * 1e6


# -- submissions --------------------------------------------------------------------------------

class Submit:
    """Small deltas submitted from ``processes`` processes to an owner here: deltas/s for
    ``Attached.apply_batch`` and for the Queue + NumPy scatter peer."""

    params = PROCESSES
    param_names = ["processes"]
    timeout = 300

    @unit("deltas/s")
    def track_apply_batch_deltas_per_second(self, processes):
        ready, go, done = _fork.Queue(), _fork.Event(), _fork.Queue()
        name = _name()
        # forked before this process runs the owner's server thread
        procs = [_fork.Process(target=_submitter, args=(name, seed, ready, go, done), daemon=True)
                 for seed in range(processes)]
        for p in procs:
            p.start()
        with mmsb.start(shared=name) as st:
            st.create_pages(N_PAGES, PAGE)
            for _ in procs:
                ready.get(timeout=120)
            t0 = time.perf_counter()
            go.set()
            ends = [done.get(timeout=240) for _ in procs]
            for p in procs:
                p.join(30)
        return processes * SUBMIT_BATCHES * BATCH_DELTAS / (max(ends) - t0)

    @unit("deltas/s")
    def track_queue_scatter_deltas_per_second(self, processes):
        go, done, q = _fork.Event(), _fork.Queue(), _fork.Queue()
        pages = np.zeros((N_PAGES, PAGE), np.uint8)
        procs = [_fork.Process(target=_queue_submitter, args=(seed, go, q, done), daemon=True)
                 for seed in range(processes)]
        for p in procs:
            p.start()
        time.sleep(0.2)  # the forked children are running (their setup is a few arrays)
        t0 = time.perf_counter()
        go.set()
        for _ in range(processes * SUBMIT_BATCHES):
            rows, offsets, values = q.get(timeout=240)
            pages[np.repeat(rows, WIDTH), offsets] = values
        t1 = time.perf_counter()
        for _ in procs:
            done.get(timeout=60)
        for p in procs:
            p.join(30)
        return processes * SUBMIT_BATCHES * BATCH_DELTAS / (t1 - t0)
