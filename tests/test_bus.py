"""A state shared across processes: ``mmsb.start(shared=...)`` and ``mmsb.attach``.

What attached processes read is checked against independent models: a dict of
page bytes kept by the test (in-process sequences), and, for real processes,
the rule the writers follow (every call leaves all pages filled with one value,
so any torn read shows) and the owner's log replayed to the LSN each reader saw.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmsb
from mmsb.bus.segment import directory

import bus_worker

WORKER = Path(bus_worker.__file__)


def fresh_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def files_of(name: str) -> list[str]:
    return sorted(f for f in os.listdir(directory()) if f == f"mmsb.{name}" or f.startswith(f"mmsb.{name}."))


class Worker:
    """A bus_worker.py process, read line by line."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines: list[str] = []

    def expect(self, prefix: str, timeout: float = 120) -> str:
        """The next line starting with ``prefix`` (lines before it are kept in ``lines``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line.endswith("\n"):  # EOF; a line cut short by a kill is not a line
                raise AssertionError(f"worker ended (rc {self.proc.wait()}) before {prefix!r}; saw {self.lines[-5:]}")
            line = line.strip()
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} from the worker in {timeout} s")

    def finish(self, timeout: float = 120) -> int:
        # read through the text stream: lines expect() buffered are there and not on the pipe,
        # where communicate() would look. A worker killed while its pipe was full may have written
        # part of a line; only whole lines (newline included) count.
        reader = threading.Thread(
            target=lambda: self.lines.extend(x.strip() for x in self.proc.stdout if x.endswith("\n")))
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.proc.kill()
            reader.join()
            raise AssertionError(f"worker still running after {timeout} s; saw {self.lines[-5:]}")
        return self.proc.wait()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.finish()


@pytest.fixture
def name():
    n = fresh_name()
    yield n
    for f in files_of(n):  # a failed test must not leave files for the next
        os.unlink(os.path.join(directory(), f))


def fill(st, ids, value):
    sizes = [st.page(p).size for p in ids]
    return st.apply_batch(bus_worker.fill_batch(ids, sizes, value))


# -- in one process, against a model -----------------------------------------------------

class SharedModel(RuleBasedStateMachine):
    """Random creates, writes, batches, resizes and deletes by the owner; after each, what an
    attached handle reads equals a dict of bytes kept here."""

    def __init__(self) -> None:
        super().__init__()
        self.name = fresh_name()
        self.st = mmsb.start(shared=self.name)
        self.att = mmsb.attach(self.name)
        self.model: dict[int, bytearray] = {}
        self.rng = np.random.default_rng(0)

    @rule(size=hs.integers(1, 3000))
    def create(self, size):
        p = self.st.create_page(size)
        self.model[p.id] = bytearray(size)

    @precondition(lambda self: self.model)
    @rule(data=hs.data())
    def update(self, data):
        pid = data.draw(hs.sampled_from(sorted(self.model)))
        new = self.rng.integers(0, 4, len(self.model[pid]), dtype=np.uint8)
        self.st.update_page(pid, new)
        self.model[pid] = bytearray(new.tobytes())

    @precondition(lambda self: self.model)
    @rule(data=hs.data(), count=hs.integers(1, 20))
    def batch(self, data, count):
        ids = [data.draw(hs.sampled_from(sorted(self.model))) for _ in range(count)]
        offs = [int(self.rng.integers(0, len(self.model[p]))) for p in ids]
        vals = self.rng.integers(0, 256, count, dtype=np.uint8)
        self.st.apply_batch(mmsb.DeltaBatch(ids, np.arange(count + 1), offs, vals))
        for p, o, v in zip(ids, offs, vals):
            self.model[p][o] = int(v)

    @precondition(lambda self: self.model)
    @rule(data=hs.data(), size=hs.integers(1, 3000))
    def resize(self, data, size):
        pid = data.draw(hs.sampled_from(sorted(self.model)))
        self.st.resize_page(pid, size)
        old = self.model[pid]
        self.model[pid] = old[:size] + bytearray(max(0, size - len(old)))

    @precondition(lambda self: self.model)
    @rule(data=hs.data())
    def delete(self, data):
        pid = data.draw(hs.sampled_from(sorted(self.model)))
        self.st.delete_page(pid)
        del self.model[pid]

    @invariant()
    def reads_match(self):
        att = self.att
        assert sorted(int(p) for p in att.page_ids()) == sorted(self.model)
        snap = att.snapshot()
        assert set(snap) == set(self.model)
        for pid, data in self.model.items():
            assert snap[pid].tobytes() == bytes(data)
            assert att.query_page(pid).tobytes() == bytes(data)
            assert att.view(pid).tobytes() == bytes(data)
        assert att.lsn == self.st.lsn == snap.lsn
        if self.model:
            ids = sorted(self.model)
            assert list(att.epochs(ids)) == [self.st.page(p).epoch for p in ids]

    def teardown(self):
        self.att.close()
        mmsb.stop(self.st)
        assert files_of(self.name) == []


TestSharedModel = SharedModel.TestCase
TestSharedModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_growth_of_table_and_arena_reaches_attached_readers(name):
    mmsb.config.set(ARENA_CHUNK_BYTES=1 << 16, TABLE_INITIAL_ROWS=4)
    try:
        st = mmsb.start(shared=name)
    finally:
        mmsb.config.reset()
    with st, mmsb.attach(name) as att:
        model = {}
        for i in range(150):  # the table doubles five times, the arena takes several chunks
            size = 1 + (i * 997) % 20000
            p = st.create_page(size)
            data = np.full(size, i % 256, np.uint8)
            st.update_page(p, data)
            model[p.id] = data
            if i % 37 == 0:
                assert att.query_page(p.id).tobytes() == data.tobytes()
        snap = att.snapshot()
        assert {k: v.tobytes() for k, v in snap.items()} == {k: v.tobytes() for k, v in model.items()}
        assert att.stats()["arena_chunks"] > 1 and att.stats()["table_rows"] >= 150


def test_snapshot_of_chosen_pages_and_the_handle_api(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        a, b = st.create_page(16), st.create_page(8)
        st.update_page(a, np.arange(16, dtype=np.uint8))
        snap = att.snapshot([b.id, a.id])
        assert list(snap.ids) == [b.id, a.id] and len(snap) == 2 and a.id in snap
        assert snap[a.id].tobytes() == bytes(range(16)) and snap[b.id].tobytes() == bytes(8)
        assert not snap[a.id].flags.writeable
        with pytest.raises(mmsb.PageNotFoundError):
            snap[12345]
        out = np.empty(16, np.uint8)
        assert att.query_page(a.id, out=out) is out and out.tobytes() == bytes(range(16))
        with pytest.raises(mmsb.InvalidArgumentError):
            att.query_page(a.id, out=np.empty(3, np.uint8))
        with pytest.raises(mmsb.InvalidArgumentError):
            att.query_page(2.5)
        with pytest.raises(mmsb.PageNotFoundError):
            att.query_page("a")  # a name the owner does not know
        with pytest.raises(mmsb.PageNotFoundError):
            att.query_page(a.id + (1 << 32))  # a later generation of its slot
        v = att.view(a.id)
        assert not v.flags.writeable
        st.update_page(a, np.full(16, 5, np.uint8))
        assert v.tobytes() == bytes([5] * 16)  # live
        st.delete_page(b)
        with pytest.raises(mmsb.PageNotFoundError):
            att.query_page(b.id)
        with pytest.raises(mmsb.PageNotFoundError):
            att.snapshot([b.id])
        assert "lsn" in repr(att) and att.tag == st.tag


def test_history_from_another_process_is_the_owners_log(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        a = st.create_page(dtype=np.float64, shape=(4,))
        b = st.create_page(dtype=np.float64, shape=(4,))
        st.register_passthrough(b, a)
        written, lsns = [], []
        for k in range(5):
            x = np.full(4, k + 0.5)
            written.append(x)
            lsns.append(st.update_page(a, x).lsn)
        h = att.history(b.id)
        assert [d.lsn for d in h.upstream] == lsns and set(h.hops[x] for x in lsns) == {1}
        assert len(h.deltas) == 5 and all(d.page_id == b.id for d in h.deltas)
        np.testing.assert_array_equal(h.values(), np.array(written))  # the page's dtype came along
        assert not h.truncated
        assert [d.lsn for d in att.history(a.id, last=2).deltas] == lsns[-2:]
        assert att.history(b.id, depth=0).upstream == ()
        with pytest.raises(mmsb.InvalidArgumentError):
            att.history(a.id, depth=-1)  # refused here, the owner never asked
        with pytest.raises(mmsb.PageNotFoundError):
            att.history(a.id + (1 << 32))


def test_pages_by_id_or_name_carry_the_owners_dtype_shape_and_metadata(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        grid = st.create_page(dtype=np.float32, shape=(3, 4), name="grid", meta={"unit": "K"})
        raw = st.create_page(6)
        values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
        st.update_page(grid, values)
        for key in ("grid", grid.id):
            pg = att.page(key)
            assert (pg.id, pg.size, pg.dtype, pg.shape, pg.name, pg.meta) == (
                grid.id, 48, np.dtype(np.float32), (3, 4), "grid", {"unit": "K"})
            np.testing.assert_array_equal(pg.read(), values)
        assert pg.epoch == grid.epoch == 1 and "grid" in repr(pg)
        live = pg.view()
        st.update_page(grid, values + 1)
        np.testing.assert_array_equal(live, values + 1)  # the owner's memory itself
        assert [d.lsn for d in pg.history().deltas] == [d.lsn for d in st.history(grid).deltas]
        b = att.page(raw.id)
        assert (b.dtype, b.shape, b.name, b.meta) == (np.dtype(np.uint8), (6,), None, {})
        # a name works wherever an id does
        assert att.update_page("grid", (values * 0).view(np.uint8).reshape(-1)) > 0
        assert att.query_page("grid").tobytes() == bytes(48) and att.query_page(pg).tobytes() == bytes(48)
        assert len(att.history("grid").deltas) == 3
        with pytest.raises(mmsb.PageNotFoundError):
            att.page("no such page")
        st.delete_page(raw)
        with pytest.raises(mmsb.PageNotFoundError):
            att.page(raw.id)
        with pytest.raises(mmsb.InvalidArgumentError):
            att.page(2.5)


def test_a_write_from_another_process_converts_values_as_a_local_one(name):
    """Each input goes to a shared state through an attached handle and to a local twin through
    State.update_page, for a typed page and a byte page: same bytes after, or the same error class."""
    inputs = [np.arange(12, dtype=np.int16).reshape(3, 4), np.full((3, 4), 0.25), [[1.5] * 4] * 3,
              np.ones((3, 4), bool), np.arange(12, dtype=np.float32), np.full((3, 4), 1 + 2j), np.zeros((4, 3)),
              np.arange(48, dtype=np.uint8), bytes(range(48)), np.array(7.0), "words", [[1, 2], [3]],
              np.full((3, 4), 2 ** 40, np.int64)]
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        twin = mmsb.start()
        try:
            typed = [s.create_page(dtype=np.float32, shape=(3, 4)) for s in (st, twin)]
            raw = [s.create_page(48) for s in (st, twin)]
            for pages, data in [(pages, data) for pages in (typed, raw) for data in inputs]:
                outcome = []
                for write in (lambda: att.update_page(pages[0].id, data), lambda: twin.update_page(pages[1], data)):
                    try:
                        write()
                        outcome.append(None)
                    except mmsb.MMSBError as exc:
                        outcome.append(type(exc))
                assert outcome[0] == outcome[1], (data, outcome)
                assert st.query_page(pages[0]).tobytes() == twin.query_page(pages[1]).tobytes(), data
        finally:
            mmsb.stop(twin)


def test_a_history_larger_than_the_mailbox_is_asked_again(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        p = st.create_page(1 << 16)
        rng = np.random.default_rng(3)
        pages = [rng.integers(0, 256, 1 << 16, dtype=np.uint8) for _ in range(24)]  # > 1 MiB of records
        for x in pages:
            st.update_page(p, x)
        h = att.history(p.id)
        np.testing.assert_array_equal(h.values(), np.array(pages))
        assert len(h) == 24 and not h.truncated


def test_history_errors_come_from_the_owners_log(name):
    with mmsb.start(shared=name, log=False) as st, mmsb.attach(name) as att:
        p = st.create_page(8)
        with pytest.raises(mmsb.InvalidArgumentError, match="log=False"):
            att.history(p.id)


def test_a_packed_history_cut_short_or_damaged_is_refused():
    from mmsb.log.history import pack, unpack

    st = mmsb.start()
    try:
        p = st.create_page(dtype=np.int32, shape=(2,))
        for k in range(3):
            st.update_page(p, np.array([k, -k], np.int32))
        raw = pack(st.history(p))
        again = unpack(raw + b"spare room")
        assert [d.lsn for d in again] == [d.lsn for d in st.history(p)]
        np.testing.assert_array_equal(again.values(), st.history(p).values())
        for cut in range(len(raw)):
            with pytest.raises(ValueError):
                unpack(raw[:cut])
        for at in range(len(raw)):  # any byte damaged: refused as ValueError, or read (never another error)
            damaged = bytearray(raw)
            damaged[at] ^= 0xFF
            try:
                unpack(damaged)
            except ValueError:
                pass
        bad_info = pack(st.history(p)).replace(b'"<i4"', b'[1]  ')  # JSON of the wrong shape
        with pytest.raises(ValueError):
            unpack(bad_info)
    finally:
        mmsb.stop(st)


def test_errors_of_names_and_options(name):
    with pytest.raises(mmsb.BusNotFoundError):
        mmsb.attach(name)
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.start(shared="a/b")
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.attach("")
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.start(shared=name, gpu=True)
    assert files_of(name) == []
    st = mmsb.start(shared=name)
    try:
        with pytest.raises(mmsb.BusExistsError):
            mmsb.start(shared=name)
        assert st.create_page(4).id >= 0  # the first owner is unaffected
    finally:
        mmsb.stop(st)
    assert files_of(name) == []
    mmsb.stop(mmsb.start(shared=name))  # the name is free again


def test_submitted_writes_apply_as_local_ones_and_errors_come_back(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        p = st.create_page(64)
        data = np.arange(64, dtype=np.uint8)
        lsn = att.update_page(p.id, data)
        assert lsn == st.lsn and st.query_page(p).tobytes() == data.tobytes()
        assert att.update_page(p.id, data) == 0  # no byte changed: no LSN, as update_page's None
        lsns = att.apply_batch(mmsb.DeltaBatch([p.id, p.id], [0, 1, 3], [0, 1, 2], [9, 8, 7]))
        assert list(lsns) == [lsn + 1, lsn + 2] and list(st.query_page(p)[:3]) == [9, 8, 7]
        assert [h.lsn for h in st.history(p)][-2:] == [lsn + 1, lsn + 2]  # logged like local writes
        before = (st.state_hash(), st.lsn)
        with pytest.raises(mmsb.InvalidDeltaError, match="out of range"):
            att.apply_batch(mmsb.DeltaBatch([p.id, p.id], [0, 1, 2], [0, 64], [1, 1]))
        with pytest.raises(mmsb.PageNotFoundError):
            att.update_page(p.id + 1, data)
        with pytest.raises(mmsb.InvalidDeltaError):
            att.update_page(p.id, data[:10])
        with pytest.raises(mmsb.InvalidDeltaError):
            att.apply_batch("not a batch")
        assert (st.state_hash(), st.lsn) == before  # nothing half applied
        big = np.full(64, 3, np.uint8)
        lsns = att.apply_batch(mmsb.DeltaBatch([p.id] * 5000, np.arange(0, 5001), np.arange(5000) % 64,
                                               np.tile(big, 79)[:5000]))  # grows the mailbox
        assert lsns.size == 5000 and st.query_page(p).tobytes() == big.tobytes()
        assert att.stats()["mailboxes"] == 1
    assert files_of(name) == []


@pytest.mark.parametrize("futex", [True, False], ids=["futex", "polling"])
def test_wait_wakes_on_commits_and_times_out(name, futex, monkeypatch):
    if not futex:  # as on a system without futexes (macOS): readers poll, the owner wakes nobody
        monkeypatch.setattr("mmsb.bus.attached.SYS_FUTEX", 0)
        monkeypatch.setattr("mmsb.bus.owner.SYS_FUTEX", 0)
        monkeypatch.setattr("mmsb.bus.segment.HAVE_FUTEX", False)
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        p = st.create_page(8)
        assert att.wait(timeout=0.05) is None
        lsn = att.lsn
        got = []
        t = threading.Thread(target=lambda: got.append(att.wait(lsn + 2, timeout=30)))
        t.start()
        st.update_page(p, np.ones(8, np.uint8))
        st.update_page(p, np.full(8, 2, np.uint8))
        t.join()
        assert got == [lsn + 2]
        assert att.wait(lsn, timeout=0) == lsn + 2  # reached already


def test_changes_and_subscriptions_name_the_pages_that_moved(name):
    with mmsb.start(shared=name) as st, mmsb.attach(name) as att:
        a, b = st.create_page(8), st.create_page(8)
        seen, arrived = [], threading.Event()

        def on_change(lsn, ids):
            seen.append((lsn, list(ids)))
            arrived.set()

        with att.subscribe([a.id], on_change) as sub:
            st.update_page(b, np.ones(8, np.uint8))  # not watched
            st.update_page(a, np.ones(8, np.uint8))
            assert arrived.wait(30)
        assert sub.error is None and seen == [(st.lsn, [a.id])]
        it = att.changes([a.id, b.id], timeout=30)
        st.update_page(b, np.full(8, 2, np.uint8))
        assert next(it) == (st.lsn, [b.id]) or False
        with pytest.raises(mmsb.InvalidArgumentError):
            att.subscribe([a.id], "not callable")


def test_closing_the_owner_fails_readers_and_removes_every_file(name):
    st = mmsb.start(shared=name)
    p = st.create_page(8)
    att = mmsb.attach(name)
    att.update_page(p.id, np.ones(8, np.uint8))  # a mailbox too
    woke = []

    def sleeper():
        try:
            woke.append(att.wait(None, 30))
        except mmsb.StateClosedError as exc:
            woke.append(exc)

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.05)
    mmsb.stop(st)
    t.join()
    assert isinstance(woke[0], mmsb.StateClosedError)
    assert files_of(name) == []
    for call in (lambda: att.query_page(p.id), lambda: att.lsn, att.snapshot, att.page_ids,
                 lambda: att.update_page(p.id, b"\0" * 8)):
        with pytest.raises(mmsb.StateClosedError):
            call()
    att.close()
    with pytest.raises(mmsb.BusNotFoundError):
        mmsb.attach(name)


def test_an_owner_closing_over_a_live_submitter_leaves_its_tracker_quiet(name):
    # the owner removes the submitter's mailbox file, which only the submitter's resource
    # tracker knows: telling the owner's own tracker to forget it would print a traceback
    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, mmsb\n"
        f"st = mmsb.start(shared={name!r}); st.create_page(8)\n"
        "print('READY', flush=True); sys.stdin.readline(); mmsb.stop(st)\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "READY"
        with mmsb.attach(name) as att:
            assert att.update_page(att.page_ids()[0], b"abcdefgh") > 0  # this process's mailbox exists
            _, err = owner.communicate("stop\n", timeout=60)
            assert owner.returncode == 0
        assert "Traceback" not in err, err
        assert files_of(name) == []
    finally:
        owner.kill()


def test_a_dropped_owner_state_removes_its_files(name):
    st = mmsb.start(shared=name)
    st.create_page(8)
    del st
    import gc

    gc.collect()
    assert files_of(name) == []


# -- real processes -------------------------------------------------------------------------

def test_no_torn_reads_under_heavy_writes_and_readers_saw_the_log(name, tmp_path):
    log = tmp_path / "bus.log"
    st = mmsb.start(log=str(log), sync="none", shared=name)
    pages = [st.create_page(65536) for _ in range(6)] + [st.create_page(1 << 20)]
    ids = [p.id for p in pages]
    batches = [bus_worker.fill_batch(ids, [p.size for p in pages], v) for v in range(1, 252)]
    readers = [Worker("reader", name, 4) for _ in range(2)]
    for r in readers:
        r.expect("READY")
    end = time.monotonic() + 4.5
    i = 0
    while time.monotonic() < end:  # as fast as it goes: readers keep meeting calls
        st.apply_batch(batches[i % 251])
        i += 1
    for r in readers:
        assert r.finish() == 0, r.lines[-3:]
        assert not [x for x in r.lines if x.startswith("TORN")]
    mmsb.stop(st)
    saw = [tuple(map(int, x.split()[1:])) for r in readers for x in r.lines if x.startswith("SAW")]
    assert len(saw) > 20 and i > 50
    # what each reader saw is what the log says the state was at that LSN
    for lsn, value in random.Random(0).sample(saw, 8):
        rebuilt = mmsb.replay(str(log), to_lsn=lsn)
        try:
            assert {int(rebuilt.query_page(p)[0]) for p in ids} == {value}
        finally:
            mmsb.stop(rebuilt)


def test_writes_from_several_processes_apply_whole_in_one_order(name, tmp_path):
    log = tmp_path / "bus.log"
    st = mmsb.start(log=str(log), sync="none", shared=name)
    ids = [st.create_page(512).id for _ in range(4)]
    workers = [Worker("submitter", name, seed, 30) for seed in range(3)]
    for w in workers:
        w.expect("READY")
    for w in workers:
        assert w.finish() == 0
    acks = [tuple(map(int, x.split()[1:])) for w in workers for x in w.lines if x.startswith("ACK")]
    assert len(acks) == 90
    spans = sorted((a, b) for a, b, _ in acks)
    assert all(b - a == 3 for a, b in spans)  # one LSN per delta, contiguous: nothing interleaved
    assert all(spans[k][1] < spans[k + 1][0] for k in range(len(spans) - 1))  # each applied once
    last = max(acks, key=lambda t: t[1])
    assert {int(st.query_page(p)[0]) for p in ids} == {last[2]}
    mmsb.stop(st)
    for first, lsn, value in random.Random(1).sample(acks, 5):
        rebuilt = mmsb.replay(str(log), to_lsn=lsn)
        try:
            assert {int(rebuilt.query_page(p)[0]) for p in ids} == {value}
        finally:
            mmsb.stop(rebuilt)


def test_a_killed_submitter_leaves_nothing_half_applied_and_its_mailbox_goes(name):
    with mmsb.start(shared=name) as st:
        ids = [st.create_page(2048).id for _ in range(4)]
        rng = random.Random(2)
        for _ in range(3):
            w = Worker("submitter", name, rng.randrange(100), 10 ** 6)
            w.expect("READY")
            w.expect("ACK")
            time.sleep(rng.uniform(0.0, 0.3))
            w.kill()
            values = {int(v) for p in ids for v in np.unique(st.query_page(p))}
            assert len(values) == 1  # every batch applied whole or not at all
            acked = [x.split() for x in w.lines if x.startswith("ACK")]
            assert all(len(a) == 4 for a in acked), w.lines[-5:]
            assert st.lsn >= int(acked[-1][2])  # acknowledged means applied
        with mmsb.attach(name) as att:
            deadline = time.monotonic() + 30
            while att.stats()["mailboxes"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert att.stats()["mailboxes"] == 0
        assert [f for f in files_of(name) if ".m" in f] == []


def test_a_reader_that_holds_the_owner_and_dies_does_not_stop_it(name):
    with mmsb.start(shared=name) as st:
        p = st.create_page(8)
        w = Worker("hold", name)
        w.expect("HOLDING")
        for v in range(1, 4):  # each waits at most BUS_HOLD_US; the first ends the hold
            st.update_page(p, np.full(8, v, np.uint8))
        with mmsb.attach(name) as att:
            assert att.stats()["holds_broken"] == 1
            w.kill()
            st.update_page(p, np.full(8, 9, np.uint8))
            assert att.query_page(p.id).tobytes() == bytes([9] * 8)


def test_waiters_in_other_processes_wake_on_a_commit(name):
    with mmsb.start(shared=name) as st:
        p = st.create_page(8)
        w = Worker("waiter", name, 60)
        idle = Worker("waiter", name, 0.2)
        w.expect("READY")
        idle.expect("READY")
        assert idle.expect("TIMEOUT")
        st.update_page(p, np.ones(8, np.uint8))
        assert w.expect("WOKE") == f"WOKE {st.lsn}"
        assert w.finish() == 0 and idle.finish() == 0


def test_hundreds_of_attach_detach_cycles_leave_nothing(name):
    with mmsb.start(shared=name) as st:
        p = st.create_page(64)
        w = Worker("cycles", name, 300)
        w.expect("DONE")
        assert w.finish() == 0
        assert st.lsn == 300 and st.query_page(p).tobytes() == bytes([299 % 255 + 1]) * 64  # every cycle's write landed
        with mmsb.attach(name) as att:
            assert att.stats()["mailboxes"] == 0  # each cycle gave its own back
    assert files_of(name) == []


def test_the_owners_crash_is_a_typed_error_and_its_log_recovers(name, tmp_path):
    log = tmp_path / "owner.log"
    w = Worker("owner", name, log, 0)
    ready = w.expect("READY")
    ids = [int(x) for x in ready.split()[1:]]
    att = mmsb.attach(name, timeout=30)
    w.expect("ACK")
    att.query_page(ids[0])
    w.kill()
    acked = [tuple(map(int, x.split()[1:])) for x in w.lines if x.startswith("ACK")]
    for call in (lambda: att.query_page(ids[0]), lambda: att.lsn, lambda: att.wait(timeout=1), att.snapshot):
        with pytest.raises(mmsb.OwnerGoneError):
            call()
    att.close()
    with pytest.raises((mmsb.OwnerGoneError, mmsb.BusNotFoundError)):
        mmsb.attach(name)
    assert files_of(name) == []
    mmsb.stop(mmsb.start(shared=name))  # the name is free
    st = mmsb.start(log=str(log))  # acknowledged (sync="commit") writes survived
    try:
        lsn, value = acked[-1]
        assert st.lsn >= lsn
        values = {int(v) for p in ids for v in np.unique(st.query_page(p))}
        assert len(values) == 1
    finally:
        mmsb.stop(st)


def test_a_mailbox_given_back_while_the_owner_scans_for_dead_ones_is_counted_once(name):
    """The owner's reaper scans the mailbox rows, then looks at each: a row its submitter gave
    back in between reads token 0 there, and must be left alone, not freed a second time."""
    from mmsb._layout import H_MAILBOXES, H_MB, H_MB_COUNT, H_MB_WORDS, MB_TOKEN

    class ScannedHeld:
        """The rows as a scan saw them (every row held), then as they are (all free)."""

        def __init__(self, real):
            self.real = real

        def __getitem__(self, key):
            if key == (slice(None), MB_TOKEN):
                return np.ones(len(self.real), np.int64)
            return self.real[key]

    with mmsb.start(shared=name) as st:
        p = st.create_page(8)
        with mmsb.attach(name) as att:
            att.update_page(p.id, np.full(8, 1, np.uint8))  # claims a mailbox, then gives it back
        bus = st._c.bus
        assert bus.h[H_MAILBOXES] == 0
        bus.server._reap(ScannedHeld(bus.h[H_MB:H_MB + H_MB_COUNT * H_MB_WORDS].reshape(H_MB_COUNT, H_MB_WORDS)))
        assert bus.h[H_MAILBOXES] == 0
