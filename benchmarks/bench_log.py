"""The durable log: append in memory, append to a file per sync policy, commit
latency, replay, checkpoint and restore, each beside the NumPy/Python peer of the same workload.

Budgets (docs/PERFORMANCE.md): log append in memory ≥ 2 GB/s of log bytes; durable append with
group sync ≥ 1 M small deltas/s; commit latency (sync="commit", one small update_page) ≤ 1.5 × a
raw 4 KiB os.write + os.fdatasync measured in the same run; replay ≥ 20 M small deltas/s (the
original's Rust core: about 1 M/s). Checkpoint and restore of 100 k × 1 KiB pages have no
budget line: read them against np.save + fsync / np.load of the same bytes.

Files go to a tempfile.mkdtemp() directory made in setup and removed in teardown (the replay log
and the peer's arrays live in setup_cache's directory, which asv removes). This asv_runner re-runs
`setup` before every timed call, so rates are track_ benchmarks that take their own samples.
"""

import os
import shutil
import struct
import tempfile
import time

import numpy as np

import mmsb

from .common import (
    BATCH_PAGES,
    BATCH_WIDTH,
    PAGE_SIZE,
    median_rate,
    pretouch,
    sparse_batch,
    touch_batch,
    unit,
    update_buffers,
)

REC_HEADER = 48                   # bytes of a log record's header (mmsb._layout.REC_HEADER)
APPEND_WORKLOADS = {              # name -> (deltas per batch, bytes per delta)
    "4096 x 8 B": (BATCH_PAGES, BATCH_WIDTH),
    "1024 x 1 KiB": (1024, PAGE_SIZE),
}
SYNCS = ["commit", "group", "none"]
FILE_UPDATES = 100                # update_page calls per timed call to a file log
STREAM_BATCHES = 64               # 64 × 4096 = 262 144 small deltas per sustained-append call
REPLAY_BATCHES = 256              # 256 × 4096 = 1 048 576 small (8 B) deltas in the replay log
REPLAY_DELTAS = REPLAY_BATCHES * BATCH_PAGES
CKPT_PAGES = 100_000
SAMPLES = 7                       # samples behind a track_ of a slow (≥ 10 ms) operation


def _append_batches(n, width):
    """Two DeltaBatch arrays for n pages, `width` distinct bytes per page, differing at every byte."""
    if width == PAGE_SIZE:
        g = np.random.default_rng(0)
        starts = np.arange(n + 1, dtype=np.int64) * width
        indices = np.tile(np.arange(width, dtype=np.int64), n)
        values_a = g.integers(1, 256, indices.size, dtype=np.uint8)
        values_b = values_a ^ g.integers(1, 256, indices.size, dtype=np.uint8)
        return starts, indices, values_a, values_b
    return sparse_batch(n, width)


def _records(starts, indices, values, pages, lsn0):
    """The peer's log records, built with NumPy: one 48-byte header (length, LSN, page, epoch,
    count, size) + uint32 offsets + uint8 values per delta, padded to 8 bytes. Fixed width only."""
    n, width = pages.size, int(starts[1] - starts[0])
    body = REC_HEADER + 5 * width
    length = body + 7 & ~7
    recs = np.zeros((n, length), np.uint8)
    head = recs[:, :REC_HEADER].view(np.uint64)
    head[:, 0] = length | 1 << 32
    head[:, 1] = np.arange(lsn0, lsn0 + n, dtype=np.uint64)
    head[:, 2] = pages
    head[:, 4] = width
    head[:, 5] = PAGE_SIZE
    recs[:, REC_HEADER:REC_HEADER + 4 * width].view(np.uint32)[:] = indices.reshape(n, width)
    recs[:, REC_HEADER + 4 * width:body] = values.reshape(n, width)
    return recs


# -- append in memory --------------------------------------------------------------------


class MemoryAppend:
    """apply_batch of small (8 B) or whole-page (1 KiB, sparse) deltas, log in memory or off.

    Each timed call gets a state fresh from the pool, whose log buffer is already grown (the pool
    keeps buffers up to 16 MiB), so growing the buffer is not timed. track_log_bytes_per_second:
    log bytes written / median time of the whole apply_batch with the log in memory (budget
    ≥ 2e9); the append's own share is time_apply_batch with log "memory" minus with "off".
    """

    params = [list(APPEND_WORKLOADS), ["memory", "off"]]
    param_names = ["workload", "log"]
    timeout = 120

    def setup(self, workload, log):
        n, width = APPEND_WORKLOADS[workload]
        starts, indices, values_a, values_b = _append_batches(n, width)
        self.arrays = (starts, indices, values_a, values_b)
        self.log = None if log == "memory" else False
        st = mmsb.start(log=self.log)
        ids = st.create_pages(n, PAGE_SIZE)
        st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_b))
        st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_a))  # grows the buffer
        mmsb.stop(st)
        self.st, self.batch = self._fresh()

    def _fresh(self):
        starts, indices, values_a, values_b = self.arrays
        st = mmsb.start(log=self.log)
        ids = st.create_pages(starts.size - 1, PAGE_SIZE)
        st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_b))
        return st, mmsb.DeltaBatch.from_sparse(ids, starts, indices, values_a)

    def teardown(self, workload, log):
        mmsb.stop(self.st)

    def time_apply_batch(self, workload, log):
        self.st.apply_batch(self.batch)

    def _sample(self):
        """(seconds of one apply_batch on a fresh pooled state, log bytes it wrote)."""
        st, batch = self._fresh()
        log = st.log                  # None with log=False
        before = log.nbytes if log is not None else 0
        t0 = time.perf_counter()
        st.apply_batch(batch)
        dt = time.perf_counter() - t0
        nbytes = log.nbytes - before if log is not None else 0
        mmsb.stop(st)
        return dt, nbytes

    def _median(self, log):
        saved, self.log = self.log, log
        try:
            samples = [self._sample() for _ in range(21)]
        finally:
            self.log = saved
        return float(np.median([s[0] for s in samples])), samples[0][1]

    @unit("bytes/s")
    def track_log_bytes_per_second(self, workload, log):
        if log == "off":
            return float("nan")
        seconds, nbytes = self._median(None)
        return nbytes / seconds


class NumpyMemoryAppend:
    """Peer of MemoryAppend: the same deltas applied by fancy assignment into one 2-D arena and
    the same records (48-byte header, uint32 offsets, values, padded to 8) appended to a
    preallocated log buffer. time_apply_and_log builds the records with vectorized NumPy;
    time_apply_and_log_struct_loop with struct.pack_into and slice copies per delta (the 1 KiB
    workload: 1024 iterations of 1 KiB each). track_log_bytes_per_second is the
    vectorized version's; track_memcpy_bytes_per_second a plain copy of the same bytes into the
    log buffer (the ceiling for any append)."""

    params = [list(APPEND_WORKLOADS), ["memory", "off"]]
    param_names = ["workload", "log"]

    def setup(self, workload, log):
        n, width = APPEND_WORKLOADS[workload]
        starts, indices, values, _ = _append_batches(n, width)
        self.n, self.width, self.starts, self.indices, self.values = n, width, starts, indices, values
        self.pages = np.arange(n, dtype=np.uint64)
        self.arena = pretouch(np.zeros((n, PAGE_SIZE), np.uint8))[0]
        self.flat = np.repeat(np.arange(n, dtype=np.int64) * PAGE_SIZE, width) + indices
        self.keep = log == "memory"
        self.recs = _records(starts, indices, values, self.pages, 1)
        self.logbuf = pretouch(np.zeros(self.recs.nbytes, np.uint8))[0]

    def _apply_and_log(self):
        self.arena.reshape(-1)[self.flat] = self.values
        if self.keep:
            recs = _records(self.starts, self.indices, self.values, self.pages, 1)
            self.logbuf[:recs.nbytes] = recs.reshape(-1)

    def time_apply_and_log(self, workload, log):
        self._apply_and_log()

    def time_apply_and_log_struct_loop(self, workload, log):
        arena, buf, keep = self.arena, self.logbuf, self.keep
        mv = memoryview(buf)
        pack, width, starts, indices, values = struct.Struct("<QQQQQQ").pack_into, self.width, \
            self.starts, self.indices, self.values
        length = REC_HEADER + 5 * width + 7 & ~7
        pos = 0
        for i in range(self.n):
            lo, hi = starts[i], starts[i + 1]
            idx, vals = indices[lo:hi], values[lo:hi]
            arena[i, idx] = vals
            if keep:
                pack(mv, pos, length | 1 << 32, i + 1, i, 0, width, PAGE_SIZE)
                buf[pos + REC_HEADER:pos + REC_HEADER + 4 * width].view(np.uint32)[:] = idx
                buf[pos + REC_HEADER + 4 * width:pos + REC_HEADER + 5 * width] = vals
                pos += length

    @unit("bytes/s")
    def track_log_bytes_per_second(self, workload, log):
        if not self.keep:
            return float("nan")
        return median_rate(self._apply_and_log, self.recs.nbytes)

    @unit("bytes/s")
    def track_memcpy_bytes_per_second(self, workload, log):
        if not self.keep:
            return float("nan")
        src, dst = self.recs.reshape(-1), self.logbuf
        return median_rate(lambda: dst.__setitem__(slice(0, src.size), src), src.size)


# -- append to a file, per sync policy --------------------------------------------------------


class _TmpDir:
    def _mkdir(self):
        self.dir = tempfile.mkdtemp(prefix="mmsb-bench-log-")

    def _open_raw(self):
        """An O_APPEND file for the raw peers' os.write + os.fdatasync."""
        return os.open(os.path.join(self.dir, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def teardown(self, *params):
        st = getattr(self, "st", None)
        if st is not None:
            mmsb.stop(st)
            self.st = None
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)
            self.fd = None
        shutil.rmtree(self.dir, ignore_errors=True)


class _FileWorkloads(_TmpDir):
    """The timed bodies FileAppend and its peer share; each defines _batch_flush,
    _updates_flush and _stream_flush."""

    params = [SYNCS]
    param_names = ["sync"]

    def time_apply_batch_flush(self, sync):
        self._batch_flush()

    def time_100_updates_flush(self, sync):
        self._updates_flush()

    def time_stream_flush(self, sync):
        self._stream_flush()

    @unit("deltas/s")
    def track_deltas_per_second(self, sync):
        return median_rate(self._batch_flush, BATCH_PAGES, 11)

    @unit("updates/s")
    def track_updates_per_second(self, sync):
        return median_rate(self._updates_flush, FILE_UPDATES, 11)

    @unit("deltas/s")
    def track_stream_deltas_per_second(self, sync):
        return median_rate(self._stream_flush, STREAM_BATCHES * BATCH_PAGES, 5)


class FileAppend(_FileWorkloads):
    """A file log per sync policy. time_apply_batch_flush: apply_batch of 4096 small (8 B)
    deltas, then st.flush() (every delta durable when it returns); time_100_updates_flush: 100
    update_page calls of a 10-byte change, then st.flush() (sync="commit": 100 fdatasyncs);
    time_stream_flush: STREAM_BATCHES such batches back to back (the writer thread writes and,
    for "group", syncs on its own), then one st.flush(). Budget with group sync ≥ 1 M deltas/s:
    track_stream_deltas_per_second ≥ 1e6 (sustained); track_deltas_per_second (one batch, then
    flush) is bound by one fdatasync per 4096 deltas, a few ms on this VM's disk."""

    timeout = 180

    def setup(self, sync):
        self._mkdir()
        starts, indices, values_a, values_b = sparse_batch()
        self.st = mmsb.start(log=os.path.join(self.dir, "bench.log"), sync=sync)
        ids = self.st.create_pages(BATCH_PAGES, PAGE_SIZE)
        self.batches = [mmsb.DeltaBatch.from_sparse(ids, starts, indices, v) for v in (values_a, values_b)]
        self.turn = 0
        self.st.apply_batch(self.batches[1])
        self.pg = self.st.create_page(PAGE_SIZE)
        self.a, self.b = update_buffers("10 bytes changed")
        self.st.update_page(self.pg, self.b)
        self.st.flush()

    def _batch_flush(self):
        self.turn ^= 1
        self.st.apply_batch(self.batches[self.turn ^ 1])
        self.st.flush()

    def _updates_flush(self):
        update, pg, a, b = self.st.update_page, self.pg, self.a, self.b
        for _ in range(FILE_UPDATES // 2):
            update(pg, a)
            update(pg, b)
        self.st.flush()

    def _stream_flush(self):
        apply, batches = self.st.apply_batch, self.batches
        for k in range(STREAM_BATCHES):
            apply(batches[k % 2])
        self.st.flush()



class RawFileAppend(_FileWorkloads):
    """Peer of FileAppend: the same records (as the NumPy peer builds them) written with os.write
    and made durable with os.fdatasync. time_apply_batch_flush: the 4096 records of a batch
    (applied by fancy assignment) in one write + one fdatasync; time_100_updates_flush: a 10-byte
    diff-apply-record per update, each written, and for "commit" synced, then one fdatasync;
    time_stream_flush: STREAM_BATCHES batches written back to back, then one fdatasync. The
    batch workloads sync the same way whatever the policy (as st.flush() does)."""

    def setup(self, sync):
        self._mkdir()
        self.sync, self.fd = sync, self._open_raw()
        starts, indices, values, _ = sparse_batch()
        self.arena = pretouch(np.zeros((BATCH_PAGES, PAGE_SIZE), np.uint8))[0]
        self.flat = np.repeat(np.arange(BATCH_PAGES, dtype=np.int64) * PAGE_SIZE, BATCH_WIDTH) + indices
        self.values = values
        self.recs = _records(starts, indices, values, np.arange(BATCH_PAGES, dtype=np.uint64), 1)
        self.a, self.b = update_buffers("10 bytes changed")
        self.page = self.b.copy()
        self.head = struct.Struct("<QQQQQQ")

    def _batch_flush(self):
        self.arena.reshape(-1)[self.flat] = self.values
        os.write(self.fd, self.recs)
        os.fdatasync(self.fd)

    def _updates_flush(self):
        page, fd, head, each = self.page, self.fd, self.head, self.sync == "commit"
        for k in range(FILE_UPDATES):
            data = self.a if k % 2 == 0 else self.b
            changed = np.flatnonzero(page != data)
            vals = data[changed]
            page[changed] = vals
            os.write(fd, head.pack(REC_HEADER + 5 * changed.size, k, 0, k, changed.size, PAGE_SIZE)
                     + changed.astype(np.uint32).tobytes() + vals.tobytes())
            if each:
                os.fdatasync(fd)
        os.fdatasync(fd)

    def _stream_flush(self):
        arena, flat, values, fd, recs = self.arena.reshape(-1), self.flat, self.values, self.fd, self.recs
        for _ in range(STREAM_BATCHES):
            arena[flat] = values
            os.write(fd, recs)
        os.fdatasync(fd)



class CommitLatency(_TmpDir):
    """sync="commit": one update_page of a 10-byte change returns only once it is on disk.
    Budget: ≤ 1.5 × a raw 4 KiB os.write + os.fdatasync (RawCommitLatency, and
    track_ratio_to_raw_4k_write_fdatasync, which interleaves the two in one loop so both see the
    same disk weather; median of the mmsb samples / median of the raw ones, ≤ 1.5)."""

    timeout = 120

    def setup(self):
        self._mkdir()
        self.st = mmsb.start(log=os.path.join(self.dir, "commit.log"), sync="commit")
        self.pg = self.st.create_page(PAGE_SIZE)
        self.a, self.b = update_buffers("10 bytes changed")
        self.st.update_page(self.pg, self.b)
        self.turn = 0
        self.fd = self._open_raw()
        self.block = np.ones(4096, np.uint8).tobytes()

    def _update(self):
        self.turn ^= 1
        self.st.update_page(self.pg, self.a if self.turn else self.b)

    def time_commit_update(self):
        self._update()

    @unit("ratio")
    def track_ratio_to_raw_4k_write_fdatasync(self):
        ours, raw = [], []
        for _ in range(101):
            t0 = time.perf_counter()
            self._update()
            t1 = time.perf_counter()
            os.write(self.fd, self.block)
            os.fdatasync(self.fd)
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            raw.append(t2 - t1)
        return float(np.median(ours) / np.median(raw))


class RawCommitLatency(_TmpDir):
    """Peer of CommitLatency: a 4 KiB os.write to an O_APPEND file + os.fdatasync."""

    def setup(self):
        self._mkdir()
        self.fd = self._open_raw()
        self.block = np.ones(4096, np.uint8).tobytes()

    def time_commit_update(self):
        os.write(self.fd, self.block)
        os.fdatasync(self.fd)


# -- group commit under load ----------------------------------------------------------------


LOAD_WORK_US = 200                # Python work (holding the GIL) before each write
LOAD_SECONDS = 1.0


def _busy(us):
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def _seal_to_sync_ms(write, synced_upto):
    """Percentiles (50, 99, 100) of the time from a write's return to the moment its bytes are
    reported synced, seen after each write of a loop that does LOAD_WORK_US of Python work per
    write for LOAD_SECONDS (so a latency is seen to within one loop turn, ~0.2 ms)."""
    pending, lat = [], []
    end = time.perf_counter() + LOAD_SECONDS
    while time.perf_counter() < end:
        _busy(LOAD_WORK_US)
        pos = write()
        now = time.perf_counter()
        pending.append((pos, now))
        upto = synced_upto()
        k = 0
        while k < len(pending) and pending[k][0] <= upto:
            lat.append(now - pending[k][1])
            k += 1
        del pending[:k]
    return np.percentile(np.array(lat) * 1e3, [50, 99, 100]) if lat else np.full(3, np.inf)


class _SyncLatency(_TmpDir):
    """track_p99_ms and track_max_ms of a class's _write and _synced (see _seal_to_sync_ms)."""

    @unit("ms")
    def track_p99_ms(self):
        return float(_seal_to_sync_ms(self._write, self._synced)[1])

    @unit("ms")
    def track_max_ms(self):
        return float(_seal_to_sync_ms(self._write, self._synced)[2])


class GroupSyncUnderLoad(_SyncLatency):
    """sync="group" while the writing thread is busy with Python (200 µs of work per
    update_page): the time from a write's return to its sync, in ms. The writer works without
    the GIL, so its interval (config.LOG_GROUP_INTERVAL_US, 2 ms) holds. Peer: a Python thread
    that writes and syncs what is pending every 2 ms (GroupSyncUnderLoadPython)."""

    timeout = 120

    def setup(self):
        self._mkdir()
        self.st = mmsb.start(log=os.path.join(self.dir, "group.log"), sync="group")
        self.pg = self.st.create_page(PAGE_SIZE)
        self.st.flush()
        self.buf = np.zeros(PAGE_SIZE, np.uint8)
        self.k = 0

    def _write(self):
        self.k += 1
        self.buf[self.k % PAGE_SIZE] ^= 0xFF
        self.st.update_page(self.pg, self.buf)
        return self.st._log.sealed

    def _synced(self):
        return self.st._log._synced[0]


class GroupSyncUnderLoadPython(_SyncLatency):
    """Peer of GroupSyncUnderLoad: each write appends a 100-byte record to a list; a Python
    thread writes the pending records with os.write and os.fdatasync every 2 ms."""

    timeout = 120

    def setup(self):
        import threading

        self._mkdir()
        self.fd = self._open_raw()
        self.pending, self.written, self.synced = [], 0, 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

        def writer():
            while not self.stop.wait(0.002):
                with self.lock:
                    batch, self.pending = self.pending, []
                if batch:
                    os.write(self.fd, b"".join(batch))
                    os.fdatasync(self.fd)
                    self.synced += len(batch)

        self.thread = threading.Thread(target=writer, daemon=True)
        self.thread.start()
        self.record = bytes(100)

    def teardown(self):
        self.stop.set()
        self.thread.join()
        super().teardown()

    def _write(self):
        with self.lock:
            self.pending.append(self.record)
            self.written += 1
        return self.written

    def _synced(self):
        return self.synced


# -- replay ---------------------------------------------------------------------------------


def _replay_writes():
    """The replay workload: 256 batches over 4096 × 1 KiB pages, one 8-byte delta per page,
    alternating two value sets so every delta changes bytes (1 048 576 deltas)."""
    starts, indices, values_a, values_b = sparse_batch()
    return starts, indices, (values_a, values_b)


class Replay:
    """mmsb.replay of a log file of 1 048 576 small (8 B) deltas (≈ 92 MB, built once in
    setup_cache with sync="none"), and st.replay() of the same log held in memory.
    Budget ≥ 20 M deltas/s: track_deltas_per_second ≥ 2e7 (the Rust core: ≈ 1e6)."""

    timeout = 300

    def setup_cache(self):
        path = os.path.abspath("replay.log")
        starts, indices, values = _replay_writes()
        st = mmsb.start(log=path, sync="none")
        ids = st.create_pages(BATCH_PAGES, PAGE_SIZE)
        batches = [mmsb.DeltaBatch.from_sparse(ids, starts, indices, v) for v in values]
        for k in range(REPLAY_BATCHES):
            st.apply_batch(batches[k % 2])
        assert len(st.log) == REPLAY_DELTAS, len(st.log)
        mmsb.stop(st)
        return path

    def setup(self, path):
        self.path = path
        self.st = self.out = None

    def teardown(self, path):
        for st in (self.st, self.out):
            if st is not None:
                mmsb.stop(st)

    def _replay_file(self):
        mmsb.stop(mmsb.replay(self.path))

    def time_replay_file(self, path):
        self.out = mmsb.replay(path)

    def peakmem_replay_file(self, path):
        mmsb.replay(path)

    @unit("deltas/s")
    def track_deltas_per_second(self, path):
        self._replay_file()          # the file in the page cache, kernels loaded
        return median_rate(self._replay_file, REPLAY_DELTAS, SAMPLES)

    @unit("deltas/s")
    def track_in_memory_deltas_per_second(self, path):
        self.st = mmsb.replay(path)
        st = self.st
        return median_rate(lambda: mmsb.stop(st.replay()), REPLAY_DELTAS, SAMPLES)

    @unit("bytes/delta")
    def track_file_bytes_per_delta(self, path):
        return os.path.getsize(path) / REPLAY_DELTAS


class NumpyReplay:
    """Peer of Replay: the same 1 048 576 (page, offsets, values) deltas kept as two .npy files
    (flat arena positions int64, values uint8; ≈ 75 MB, no checksums), loaded with np.load and
    applied in log order by one fancy assignment into a (4096, 1024) arena (repeated positions:
    the last write wins, as in a replay). track_python_loop_deltas_per_second: a Python loop
    applying each delta's 8 bytes (the first 65 536 deltas, from memory)."""

    timeout = 300

    def setup_cache(self):
        _, indices, values = _replay_writes()
        flat = np.repeat(np.arange(BATCH_PAGES, dtype=np.int64) * PAGE_SIZE, BATCH_WIDTH) + indices
        paths = (os.path.abspath("replay-pos.npy"), os.path.abspath("replay-val.npy"))
        np.save(paths[0], np.tile(flat, REPLAY_BATCHES))
        np.save(paths[1], np.concatenate([values[k % 2] for k in range(REPLAY_BATCHES)]))
        return paths

    def _replay_file(self, paths):
        arena = np.zeros((BATCH_PAGES, PAGE_SIZE), np.uint8)
        arena.reshape(-1)[np.load(paths[0])] = np.load(paths[1])
        return arena

    def time_replay_file(self, paths):
        self._replay_file(paths)

    def peakmem_replay_file(self, paths):
        self._replay_file(paths)

    @unit("deltas/s")
    def track_deltas_per_second(self, paths):
        self._replay_file(paths)
        return median_rate(lambda: self._replay_file(paths), REPLAY_DELTAS, SAMPLES)

    @unit("deltas/s")
    def track_in_memory_deltas_per_second(self, paths):
        pos, val = np.load(paths[0]), np.load(paths[1])

        def replay():
            arena = np.zeros((BATCH_PAGES, PAGE_SIZE), np.uint8)
            arena.reshape(-1)[pos] = val
        return median_rate(replay, REPLAY_DELTAS, SAMPLES)

    @unit("deltas/s")
    def track_python_loop_deltas_per_second(self, paths):
        n = 65_536
        pos, val = np.load(paths[0])[:n * BATCH_WIDTH], np.load(paths[1])[:n * BATCH_WIDTH]
        deltas = [(i % BATCH_PAGES, pos[i * BATCH_WIDTH:(i + 1) * BATCH_WIDTH] % PAGE_SIZE,
                   val[i * BATCH_WIDTH:(i + 1) * BATCH_WIDTH]) for i in range(n)]

        def replay():
            pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(BATCH_PAGES)}
            for pid, idx, vals in deltas:
                pages[pid][idx] = vals
        return median_rate(replay, n, 3)


# -- checkpoint and restore -----------------------------------------------------------------


class Checkpoint(_TmpDir):
    """st.checkpoint of 100 000 × 1 KiB pages (≈ 98 MiB: temp file, fsync, rename, directory
    fsync) and mmsb.restore of it (read, check every section's CRC32C, load). The state is
    log=False (a checkpoint holds pages, table, graph and counters, not the log)."""

    timeout = 180

    def setup(self):
        self._mkdir()
        self.path = os.path.join(self.dir, "state.ckpt")
        self.st = mmsb.start(log=False)
        ids = self.st.create_pages(CKPT_PAGES, PAGE_SIZE)
        self.st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, *touch_batch(CKPT_PAGES)))
        self.st.checkpoint(self.path)

    def time_checkpoint(self):
        self.st.checkpoint(self.path)

    def time_restore(self):
        mmsb.stop(mmsb.restore(self.path))

    def peakmem_restore(self):
        mmsb.restore(self.path)

    @unit("bytes/page")
    def track_file_bytes_per_page(self):
        return os.path.getsize(self.path) / CKPT_PAGES


class NumpyCheckpoint(_TmpDir):
    """Peer of Checkpoint: np.save of the (100 000, 1024) uint8 arena into an open file, flush,
    fsync (and the same temp-file + rename + directory fsync, for atomicity), np.load of it."""

    timeout = 180

    def setup(self):
        self._mkdir()
        self.path = os.path.join(self.dir, "state.npy")
        self.arena = pretouch(np.zeros((CKPT_PAGES, PAGE_SIZE), np.uint8))[0]
        self.arena[:, 0] = 1
        self.time_checkpoint()

    def time_checkpoint(self):
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            np.save(f, self.arena)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def time_restore(self):
        np.load(self.path)

    def peakmem_restore(self):
        np.load(self.path)
