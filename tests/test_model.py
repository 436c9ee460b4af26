"""mmsb against the naive model: random operation sequences, checked after every step."""
import numpy as np
import hypothesis.strategies as hs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmsb
from naive import NaiveState, check_delta_matches, retag

# Sizes around the 8-byte word boundary matter: kernels that work a word at a time have a tail.
SIZES = hs.one_of(hs.just(1), hs.integers(1, 300),
                  hs.sampled_from([7, 8, 9, 63, 64, 65, 255, 257, 4097, 20001]))
SMALL = 300  # above this, bytes come from a seeded generator: hypothesis buffers are small


def draw_bytes(data, n, label):
    if n <= SMALL:
        return data.draw(hs.binary(min_size=n, max_size=n), label=label)
    seed = data.draw(hs.integers(0, 2**32 - 1), label=label + " seed")
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def unaligned(b):
    """The same bytes in an ndarray that does not start on an 8-byte boundary."""
    raw = np.zeros(len(b) + 1, np.uint8)
    raw[1:] = np.frombuffer(b, np.uint8)
    return raw[1:]


INDEX_DTYPES = [np.int64, np.int32, np.intp, np.uint16]


def check_returned(delta, rec, images, page_size):
    """Compare a Delta returned by a call with the model's record (or None) for it."""
    if rec is None:
        assert delta is None, f"no byte changed, yet mmsb returned {delta!r}"
        return
    assert delta is not None, f"model applied lsn {rec[0]} but mmsb returned None"
    assert (delta.lsn, delta.page_id, delta.epoch) == rec[:3]
    before, after = images
    msg = check_delta_matches(rec, before, after, delta.indices, delta.values)
    assert msg is None, msg
    # The dense view must say the same thing as the sparse one.
    mask, payload = np.asarray(delta.mask), np.asarray(delta.payload)
    assert mask.dtype == np.bool_ and mask.shape == (page_size,)
    assert payload.shape == (page_size,)
    effect = {int(i): int(v) for i, v in zip(delta.indices, delta.values)}
    assert np.flatnonzero(mask).tolist() == sorted(effect)
    assert [int(payload[i]) for i in sorted(effect)] == [effect[i] for i in sorted(effect)]


def replay_into_fresh(model, log):
    """Rebuild a state from the model's structural history and mmsb's logged deltas alone.

    Creates and deletes are replayed at the LSN where they happened, so ids come out the same but
    for the tag: the original is alive, so the fresh state holds another (and refuses its ids).
    """
    fresh = mmsb.State()
    assert fresh.tag != model.tag
    events = [(op[0], 0, i, op) for i, op in enumerate(model.ops)]
    events += [(d.lsn - 1, 1, i, d) for i, d in enumerate(log)]
    for _, kind, _, ev in sorted(events, key=lambda e: e[:3]):
        if kind == 0:
            if ev[1] == "create":
                fresh.create_page(ev[2])
            else:
                fresh.delete_page(retag(ev[2], fresh.tag))
        else:
            idx = np.asarray(ev.indices, dtype=np.int64)
            got = fresh.apply_delta(mmsb.Delta.sparse(retag(ev.page_id, fresh.tag), idx,
                                                      np.asarray(ev.values, np.uint8)))
            assert got is not None and got.lsn == ev.lsn, f"replayed lsn {ev.lsn} did not re-apply"
    return fresh


class ModelMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = mmsb.State()
        self.m = NaiveState(tag=self.s.tag)
        self.verified = []  # log records already checked in full; later only compared

    def teardown(self):
        self.s.close()

    def _pick(self, data):
        pid = data.draw(hs.sampled_from(sorted(self.m.pages)), label="page")
        # Every call takes a handle or an id; exercise both.
        return pid, (self.s.page(pid) if data.draw(hs.booleans(), label="handle") else pid)

    def _expect(self, delta, rec, pid):
        check_returned(delta, rec, self.m.images[-1] if rec else None, len(self.m.pages[pid]))

    # "gpu": a device page (numba's CUDA simulator in the test session) must behave exactly as
    # the model says a page behaves; "auto" stays on the CPU below the 1 MiB default threshold
    @rule(size=SIZES, location=hs.sampled_from(["cpu", "auto", "gpu"]))
    def create_page(self, size, location):
        pg = self.s.create_page(size, location=location)
        pid = self.m.create_page(size)
        where = "gpu" if location == "gpu" else "cpu"
        assert (pg.id, pg.size, pg.epoch, pg.location) == (pid, size, 0, where)

    @rule(count=hs.integers(1, 5), size=SIZES, location=hs.sampled_from(["cpu", "gpu"]))
    def create_pages(self, count, size, location):
        ids = self.s.create_pages(count, size, location=location)
        assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
        assert ids.tolist() == self.m.create_pages(count, size)
        assert {self.s.page(int(i)).location for i in ids} == {location}

    @precondition(lambda self: self.m.pages)
    @rule(data=hs.data())
    def delete_page(self, data):
        pid, ref = self._pick(data)
        self.s.delete_page(ref)
        self.m.delete_page(pid)

    @precondition(lambda self: self.m.pages)
    @rule(data=hs.data(), mode=hs.sampled_from(["random", "same", "few"]),
          kind=hs.sampled_from(["ndarray", "bytes", "bytearray", "memoryview", "unaligned"]))
    def update_page(self, data, mode, kind):
        pid, ref = self._pick(data)
        cur = bytes(self.m.pages[pid])
        if mode == "random":
            new = draw_bytes(data, len(cur), "bytes")
        elif mode == "same":
            new = cur
        else:
            new = bytearray(cur)
            for i in data.draw(hs.lists(hs.integers(0, len(cur) - 1), min_size=1, max_size=3)):
                new[i] = data.draw(hs.integers(0, 255))
            new = bytes(new)
        arg = {"ndarray": lambda b: np.frombuffer(b, np.uint8).copy(), "bytes": bytes,
               "bytearray": bytearray, "memoryview": lambda b: memoryview(bytes(b)),
               "unaligned": unaligned}[kind](new)
        got = self.s.update_page(ref, arg)
        self._expect(got, self.m.update_page(pid, new), pid)

    @precondition(lambda self: self.m.pages)
    @rule(data=hs.data(), dtype=hs.sampled_from(INDEX_DTYPES))
    def apply_sparse(self, data, dtype):
        pid, ref = self._pick(data)
        size = len(self.m.pages[pid])
        # A small pool of offsets makes duplicate indices common.
        pool = data.draw(hs.lists(hs.integers(0, size - 1), min_size=1, max_size=4), label="pool")
        idx = data.draw(hs.lists(hs.sampled_from(pool), min_size=0, max_size=12), label="idx")
        cur = self.m.pages[pid]
        vals = [data.draw(hs.one_of(hs.integers(0, 255), hs.just(cur[i]))) for i in idx]
        got = self.s.apply_delta(mmsb.Delta.sparse(ref, np.asarray(idx, dtype=dtype),
                                                   np.asarray(vals, dtype=np.uint8)))
        self._expect(got, self.m.apply_sparse(pid, idx, vals), pid)

    @precondition(lambda self: self.m.pages)
    @rule(data=hs.data(), keep=hs.booleans())
    def apply_dense(self, data, keep):
        pid, ref = self._pick(data)
        size = len(self.m.pages[pid])
        mask = [b & 1 for b in draw_bytes(data, size, "mask")]
        payload = bytearray(draw_bytes(data, size, "payload"))
        if keep:  # the masked bytes already hold these values: must be a no-op
            payload = bytearray(self.m.pages[pid])
        got = self.s.apply_delta(mmsb.Delta.dense(ref, np.asarray(mask, dtype=bool),
                                                  np.frombuffer(bytes(payload), np.uint8).copy()))
        self._expect(got, self.m.apply_dense(pid, mask, payload), pid)

    @precondition(lambda self: self.m.pages)
    @rule(data=hs.data(), handles=hs.booleans())
    def apply_batch(self, data, handles):
        live = sorted(self.m.pages)
        pids = data.draw(hs.lists(hs.sampled_from(live), min_size=1, max_size=6), label="pids")
        deltas = []
        for pid in pids:
            size = len(self.m.pages[pid])
            idx = data.draw(hs.lists(hs.integers(0, min(size - 1, 7)), max_size=5), label="idx")
            vals = data.draw(hs.lists(hs.integers(0, 3), min_size=len(idx), max_size=len(idx)))
            deltas.append((pid, idx, vals))
        if len(deltas) > 1 and data.draw(hs.booleans(), label="repeat"):
            deltas.append(deltas[0])  # the same delta again: a no-op when it comes to apply
        pages = ([self.s.page(p) for p, _, _ in deltas] if handles
                 else np.asarray([p for p, _, _ in deltas], dtype=np.int64))
        starts = np.cumsum([0] + [len(i) for _, i, _ in deltas]).astype(np.int64)
        idx = np.asarray([i for _, ix, _ in deltas for i in ix], dtype=np.int64)
        vals = np.asarray([v for _, _, vs in deltas for v in vs], dtype=np.uint8)
        n_log = len(self.m.log)
        lsns = self.s.apply_batch(mmsb.DeltaBatch.from_sparse(pages, starts, idx, vals))
        expected = self.m.apply_batch(deltas)
        assert isinstance(lsns, np.ndarray) and lsns.dtype == np.int64
        assert lsns.tolist() == expected
        assert len(self.m.log) - n_log == sum(1 for x in expected if x)

    # ---- invariants ------------------------------------------------------------------------
    @invariant()
    def pages_match(self):
        ids = self.s.page_ids()
        assert ids.dtype == np.int64 and ids.tolist() == self.m.page_ids()
        for pid, want in self.m.pages.items():
            q = self.s.query_page(pid)
            assert q.dtype == np.uint8 and bytes(q) == bytes(want), f"query_page({pid})"
            pg = self.s.page(pid)
            if pg.location == "cpu":
                v = self.s.view(pid)
                assert v.dtype == np.uint8 and bytes(v) == bytes(want), f"view({pid})"
                assert not v.flags.writeable
            else:  # no zero-copy host view of device bytes; the device array holds them
                with pytest.raises(mmsb.InvalidArgumentError):
                    self.s.view(pid)
                assert bytes(self.s.device_view(pid).copy_to_host()) == bytes(want), f"device_view({pid})"
            assert (pg.id, pg.size, pg.epoch) == (pid, len(want), self.m.epochs[pid])
        assert self.s.lsn == self.m.lsn
        stats = self.s.stats()
        assert stats["pages"] == len(self.m.pages) and stats["lsn"] == self.m.lsn

    @invariant()
    def log_matches(self):
        log = list(iter(self.s.log))
        assert len(self.s.log) == len(self.m.log) == len(log)
        for k, (d, rec, (before, after)) in enumerate(zip(log, self.m.log, self.m.images)):
            assert (d.lsn, d.page_id, d.epoch) == rec[:3]
            got = (np.asarray(d.indices).tolist(), np.asarray(d.values).tolist())
            if k < len(self.verified):
                # records must not change once written (buffer growth, later writes)
                assert got == self.verified[k], f"log record lsn {rec[0]} changed"
                continue
            msg = check_delta_matches(rec, before, after, d.indices, d.values)
            assert msg is None, f"log record lsn {rec[0]}: {msg}"
            self.verified.append(got)

    @invariant()
    def replay_reproduces(self):
        fresh = replay_into_fresh(self.m, list(iter(self.s.log)))
        try:
            assert fresh.page_ids().tolist() == [retag(p, fresh.tag) for p in self.m.page_ids()]
            for pid, want in self.m.pages.items():
                assert bytes(fresh.query_page(retag(pid, fresh.tag))) == bytes(want)
                assert fresh.page(retag(pid, fresh.tag)).epoch == self.m.epochs[pid]
                with pytest.raises(mmsb.PageNotFoundError, match="another state"):
                    fresh.query_page(pid)  # the original's ids name nothing in it
            assert fresh.lsn == self.m.lsn
            assert fresh.state_hash() == self.s.state_hash()
        finally:
            fresh.close()


ModelMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestModel = ModelMachine.TestCase


def test_model_self_check():
    """The model itself, on a hand-worked case, so a wrong model cannot hide a wrong mmsb."""
    m = NaiveState()
    a, b, c = m.create_pages(3, 4)
    assert (a, b, c) == (0, 1, 2)
    m.delete_page(b)
    m.delete_page(a)
    assert m.create_page(4) == 0 | (1 << 32)      # last freed slot first, first reuse
    assert m.create_page(4) == 1 | (1 << 32)
    m.delete_page(0 | (1 << 32))
    assert m.create_page(2) == 0 | (2 << 32)
    assert m.apply_sparse(c, [1, 1], [5, 0]) is None  # duplicates: last wins, nothing changed
    assert m.apply_batch([(c, [0], [9]), (c, [0], [9]), (c, [3], [1])]) == [1, 0, 2]
    assert bytes(m.pages[c]) == b"\x09\x00\x00\x01" and m.epochs[c] == 2
    assert m.update_page(c, b"\x09\x00\x07\x01")[2:] == (3, (2,), (7,))


def test_page_accepts_a_handle():
    """Every call takes a page handle or a page id, st.page included."""
    st = mmsb.State()
    try:
        pg = st.create_page(8)
        again = st.page(pg)
        assert (again.id, again.size) == (pg.id, 8)
    finally:
        st.close()
