"""Arenas, size classes, slot reuse, generation tags, view validity, reset."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb.arena import Arena, slot_class
from naive import retag


@pytest.mark.parametrize("size, cls", [(1, 3), (8, 3), (9, 4), (1024, 10), (1025, 11), (2**32, 32)])
def test_size_classes_are_the_next_power_of_two_at_least_8(size, cls):
    assert slot_class(size) == cls
    assert 2 ** slot_class(size) >= max(size, 8)


def test_slots_are_aligned_and_never_overlap():
    a = Arena(1 << 30)
    spans = []
    for size in [1, 7, 8, 9, 100, 1024, 5000, 3, 70000, 12]:
        off = a.allocate(size)
        assert off % min(2 ** slot_class(size), 4096) == 0
        spans.append((off, off + 2 ** slot_class(size)))
    spans.sort()
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))


def test_deleted_slot_is_reused_lifo_with_a_new_id_and_zeroed_bytes():
    s = mmsb.State()
    a, b, c = (s.create_page(16) for _ in range(3))
    s.update_page(b, bytes(range(16)))
    s.delete_page(b)
    s.delete_page(a)
    first, second = s.create_page(16), s.create_page(16)
    assert (first.id, second.id) == (0 + (1 << 32), 1 + (1 << 32))
    assert not s.query_page(second).any() and second.epoch == 0
    for stale in (a, b, a.id, b.id):
        with pytest.raises(mmsb.PageNotFoundError):
            s.query_page(stale)
    assert s.page_ids().tolist() == [2, first.id, second.id]


def test_create_pages_gives_the_ids_of_repeated_create_page():
    one, bulk = mmsb.State(), mmsb.State()
    for s in (one, bulk):
        ids = s.create_pages(5, 100)
        s.delete_page(int(ids[1]))
        s.delete_page(int(ids[3]))
    singles = [one.create_page(100).id for _ in range(4)]
    assert [retag(i, one.tag) for i in bulk.create_pages(4, 100).tolist()] == singles  # but for the tag
    assert one.state_hash() == bulk.state_hash()


def test_views_stay_valid_while_the_table_grows():
    s = mmsb.State()
    pg = s.create_page(64)
    v = s.view(pg)
    s.create_pages(50_000, 64)  # the table doubles many times; the arena never moves
    s.update_page(pg, np.full(64, 5, np.uint8))
    assert (v == 5).all()
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0] = 1


def test_reset_releases_large_spans_and_zeroes_small_ones():
    mmsb.config.set(RESET_RELEASE_BYTES=1 << 16)
    try:
        for count in (4, 200):  # 4 KiB used: zeroed page by page; 200 KiB: handed back to the OS
            st = mmsb.start()
            ids = st.create_pages(count, 1024)
            batch = mmsb.DeltaBatch.from_sparse(ids, np.arange(count + 1), np.full(count, 5), np.full(count, 9))
            st.apply_batch(batch)
            mmsb.stop(st)
            again = mmsb.start()
            ids2 = again.create_pages(count, 1024)
            assert ids2.tolist() == ids.tolist()
            assert all(not again.query_page(int(i)).any() for i in ids2)
            mmsb.stop(again)
    finally:
        mmsb.config.reset()


def test_a_full_arena_raises_capacity_error_and_changes_nothing():
    mmsb.config.set(ARENA_RESERVE_BYTES=1 << 26)
    try:
        s = mmsb.State()
        s.create_page(1 << 25)
        before = (s.page_ids().tolist(), s.stats())
        with pytest.raises(mmsb.CapacityError, match="ARENA_RESERVE_BYTES"):
            s.create_page(1 << 26)
        with pytest.raises(mmsb.CapacityError):
            s.create_pages(3, 1 << 24)
        assert (s.page_ids().tolist(), s.stats()) == before
        assert s.create_page(1 << 20).id == retag(1, s.tag)
    finally:
        mmsb.config.reset()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_pages_of_mixed_sizes_keep_their_own_bytes(sizes):
    s = mmsb.State()
    pages = [s.create_page(n) for n in sizes]
    for i, pg in enumerate(pages):
        s.update_page(pg, np.full(pg.size, i % 251 + 1, np.uint8))
    for i, pg in enumerate(pages):
        assert (s.view(pg) == i % 251 + 1).all()
    assert s.stats()["page_bytes"] == sum(sizes)
    s.close()


def test_config_rejects_unknown_names_and_bad_values():
    with pytest.raises(mmsb.InvalidArgumentError, match="NOPE"):
        mmsb.config.set(NOPE=1)
    with pytest.raises(mmsb.InvalidArgumentError, match="POOL_SIZE"):
        mmsb.config.set(POOL_SIZE=-1)
    assert mmsb.config.POOL_SIZE == 8


def test_an_arena_grows_in_chunks_and_no_page_moves():
    mmsb.config.set(ARENA_CHUNK_BYTES=1 << 16)
    try:
        s = mmsb.State()
        first = s.create_page(4096)
        v = s.view(first)
        reserved = [s.stats()["arena_reserved_bytes"]]
        ids = [s.create_page(4096).id for _ in range(200)]  # ~800 KiB: several chunks
        reserved.append(s.stats()["arena_reserved_bytes"])
        big = s.create_page(1 << 20)  # larger than any chunk so far
        reserved.append(s.stats()["arena_reserved_bytes"])
        assert reserved[0] == 1 << 16 and reserved[0] < reserved[1] < reserved[2] <= 8 * (1 << 20)
        model = {}
        for i, pid in enumerate([first.id, *ids, big.id]):
            size = s.page(pid).size
            data = np.full(size, i % 251 + 1, np.uint8)
            s.update_page(pid, data)
            model[pid] = data
        batch = mmsb.DeltaBatch.from_sparse(ids, np.arange(len(ids) + 1), np.arange(len(ids)) % 4096,
                                            np.full(len(ids), 255))
        s.apply_batch(batch)
        for j, pid in enumerate(ids):
            model[pid][j % 4096] = 255
        for pid, data in model.items():
            assert (s.query_page(pid) == data).all() and (s.view(pid) == data).all()
        assert (v == 1).all()  # the first view still shows its page
        with tempfile.TemporaryDirectory() as d:
            s.checkpoint(os.path.join(d, "c"))
            r = mmsb.restore(os.path.join(d, "c"))
        assert r.state_hash() == s.state_hash()
        s.close()
        r.close()
    finally:
        mmsb.config.reset()


def test_a_pooled_state_lets_its_later_chunks_go_and_old_views_stay_readable():
    mmsb.config.set(ARENA_CHUNK_BYTES=1 << 16)
    try:
        st = mmsb.start()
        pages = [st.create_page(1 << 15) for _ in range(8)]  # past the first chunk
        for i, pg in enumerate(pages):
            st.update_page(pg, np.full(1 << 15, i + 1, np.uint8))
        views = [st.view(pg) for pg in pages]
        grown = st.stats()["arena_reserved_bytes"]
        mmsb.stop(st)
        again = mmsb.start()
        assert again.stats()["arena_reserved_bytes"] < grown
        fresh = [again.create_page(1 << 15) for _ in range(8)]
        assert all(not again.query_page(pg).any() for pg in fresh)
        assert [int(v[0]) for v in views[2:]] == list(range(3, 9))  # let go, still mapped while viewed
        mmsb.stop(again)
    finally:
        mmsb.config.reset()


def test_thousands_of_states_live_side_by_side():
    states = []
    for i in range(2_000):  # a 256 GiB reservation each stopped this at about 500
        st = mmsb.start()
        pg = st.create_page(64)
        st.update_page(pg, np.full(64, i % 255 + 1, np.uint8))
        states.append((st, pg))
    assert all(int(st.query_page(pg)[0]) == i % 255 + 1 for i, (st, pg) in enumerate(states))
    for st, _ in states:
        mmsb.stop(st)


def _records_without_times(st):
    """The log's records as (type, words), commit records without their wall-clock time."""
    out = []
    for rtype, pos, length in st._log.records():
        words = st._log._live().array[pos:pos + length].view(np.uint64).tolist()
        out.append((rtype, words[:2] if rtype == 4 else words))
    return out


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("create"), st.sampled_from([1, 8, 9, 1000, 1024, 5000, 70000])),
                              st.tuples(st.just("delete"), st.integers(0, 50)),
                              st.tuples(st.just("bulk"), st.integers(1, 4))), max_size=40),
       log=st.sampled_from([None, False]))
def test_create_pages_one_kernel_call_matches_the_python_path(ops, log):
    """``create_page`` makes a page in one kernel call when no freed slot waits; the Python path it
    replaced (kept for every other case) is the reference: the same ids, table rows, arena slots
    and log records, whatever came before."""
    import mmsb.state as state_module

    fast, slow = mmsb.State(log=log), None
    kernel = state_module._create
    try:
        state_module._create = lambda *args: -1  # every create refused: the Python path
        try:
            slow = mmsb.State(log=log, tag=fast.tag)
            slow_ids = _run_creates(slow, ops)
        finally:
            state_module._create = kernel
        fast_ids = _run_creates(fast, ops)
        assert fast_ids == slow_ids
        used = fast._c.table.used
        assert used == slow._c.table.used
        rows = []
        for s in (fast, slow):  # offsets are addresses: compared from the start of each state's arena
            first, table = s._c.arena.first, s._c.table.array[:, :used].astype(np.int64)
            table[0] = np.where(table[0] != 0, table[0] - first, 0)
            rows.append((s._c.arena.bump - first, table.tolist()))
        assert rows[0] == rows[1]
        if log is None:
            assert _records_without_times(fast) == _records_without_times(slow)
    finally:
        fast.close()
        if slow is not None:
            slow.close()


def _run_creates(st, ops):
    ids = []
    for op, arg in ops:
        if op == "create":
            ids.append(st.create_page(arg).id)
        elif op == "bulk":
            ids.extend(st.create_pages(arg, 64).tolist())
        elif ids:
            pid = ids[arg % len(ids)]
            if pid in st.page_ids().tolist():
                st.delete_page(pid)
    return ids
