"""The commit path's own promises: the Deltas a write returns are read from the log when first
used, and must read the same after the log's memory moves on (a rollback, a stop and a reused
state, growth); the registers follow every array that grows; a page past the update kernel's
size limit takes the general path with the same result."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb._layout import FAST_MAX


def _expect(d, lsn, page, indices, values):
    assert (d.lsn, d.page_id) == (lsn, page)
    assert d.indices.tolist() == list(indices) and d.values.tolist() == list(values)


def test_a_returned_delta_reads_the_same_after_its_state_is_stopped_and_the_buffer_reused():
    st = mmsb.start()
    pg = st.create_page(64)
    d = st.update_page(pg, np.arange(64, dtype=np.uint8) % 3)  # 0 1 2 0 1 2 ...: changes 42 bytes
    mmsb.stop(st)
    for _ in range(3):  # the pooled core and its log buffer go to new states that write over it
        other = mmsb.start()
        q = other.create_page(64)
        for v in range(1, 20):
            other.update_page(q, np.full(64, v, np.uint8))
        mmsb.stop(other)
    want = [i for i in range(64) if i % 3]
    _expect(d, 1, pg.id, want, [i % 3 for i in want])
    assert d.epoch == 1 and d.kind in ("sparse", "dense")


def test_a_delta_from_a_rolled_back_transaction_keeps_its_bytes_and_later_commits_keep_theirs():
    st = mmsb.start()
    pg = st.create_page(16)
    first = st.update_page(pg, np.full(16, 1, np.uint8))
    inside = []
    with pytest.raises(RuntimeError):
        with st.transaction():
            inside.append(st.update_page(pg, np.full(16, 2, np.uint8)))
            raise RuntimeError("undo")
    after = st.update_page(pg, np.full(16, 3, np.uint8))
    _expect(first, 1, pg.id, range(16), [1] * 16)
    _expect(inside[0], 2, pg.id, range(16), [2] * 16)
    _expect(after, 2, pg.id, range(16), [3] * 16)  # the rolled-back LSN is given again
    assert [d.lsn for d in st.log] == [1, 2] and st.query_page(pg).tolist() == [3] * 16
    mmsb.stop(st)


def test_registers_follow_every_growth_between_writes():
    st = mmsb.start()
    head = st.create_page(32)
    deltas = []
    prev = head
    for k in range(1, 300):  # the table, the graph, bindings and work rows all grow past their first size
        pg = st.create_page(32)
        st.register_passthrough(pg, prev)
        prev = pg
        if k % 50 == 0:
            deltas.append(st.update_page(head, np.full(32, k % 251, np.uint8)))
    data = np.full(32, 7, np.uint8)
    st.update_page(head, data)
    assert np.array_equal(st.query_page(prev), data)  # the end of a 300-page chain followed
    assert [d.values[0] for d in deltas] == [k % 251 for k in range(50, 300, 50)]
    mmsb.stop(st)


def test_a_page_past_the_update_kernels_limit_commits_the_same_way():
    st = mmsb.start()
    big, small = st.create_page(FAST_MAX + 8), st.create_page(FAST_MAX)
    for pg in (big, small):
        data = np.zeros(pg.size, np.uint8)
        data[[0, 5, pg.size - 1]] = [1, 2, 3]
        d = st.update_page(pg, data)
        assert d.indices.tolist() == [0, 5, pg.size - 1] and d.values.tolist() == [1, 2, 3]
        assert np.array_equal(st.query_page(pg), data) and pg.epoch == 1
    assert [d.page_id for d in st.log] == [big.id, small.id]
    mmsb.stop(st)


def test_update_page_takes_any_array_layout_the_same_way_as_bytes():
    # the fast branch calls the kernel without numba's type checks: every layout it lets
    # through must write exactly the bytes a copy would, and the rest must go the checked way
    base = np.random.default_rng(3).integers(0, 256, 256, dtype=np.uint8)
    cases = {
        "strided": base[::2],
        "reversed": base[:128][::-1],
        "readonly": np.frombuffer(base[:128].tobytes(), np.uint8),
        "offset": base[1:129],
        "column": base.reshape(128, 2)[:, 0],
    }
    for name, data in cases.items():
        with mmsb.start() as st:
            pg = st.create_page(128)
            d = st.update_page(pg, data)
            assert st.query_page(pg).tobytes() == data.tobytes(), name
            assert d is not None and d.lsn == 1, name
    with mmsb.start() as st:
        pg = st.create_page(128)
        for bad in (base[:128].reshape(2, 64), base[:128].view(np.int8), base[:128].astype(np.uint16),
                    np.zeros((), np.uint8)):
            with pytest.raises(mmsb.InvalidDeltaError):
                st.update_page(pg, bad)
        assert st.lsn == 0 and not st.query_page(pg).any()
        with pytest.raises(mmsb.PageNotFoundError):
            st.update_page(1 << 70, base[:128])


def _same_delta(got, want):
    assert got is not None and want is not None
    assert (got.lsn, got.page_id, got.epoch) == (want.lsn, want.page_id, want.epoch)
    assert got.indices.tolist() == want.indices.tolist() and got.values.tolist() == want.values.tolist()


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 2**32 - 1)), min_size=1, max_size=60))
def test_a_state_without_a_log_returns_the_deltas_a_logged_twin_does_and_each_keeps_its_bytes(ops):
    """log=False writes its records to scratch space that starts over when full: every Delta
    returned, held across the writes after it, must still read what a twin with a log gave."""
    mmsb.config.set(LOG_INITIAL_BYTES=1 << 10)  # scratch space that fills every write or two
    nolog = mmsb.State(log=False)
    twin = mmsb.State(tag=nolog.tag)  # the same ids for the same calls
    try:
        sizes = (24, 2048)
        for s in (nolog, twin):
            s.create_page(sizes[0])  # page 0: small
            big, derived = s.create_page(sizes[1]), s.create_page(sizes[1])  # pages 1 and 2
            s.register_passthrough(derived, big)
        held = []
        for kind, which, seed in ops:
            pid, n = (1, sizes[1]) if which else (0, sizes[0])
            rng = np.random.default_rng(seed)
            data = rng.integers(0, 4, n, dtype=np.uint8)  # few values: some bytes stay, some change
            idx = np.unique(rng.integers(0, n, 5))
            got = []
            for s in (nolog, twin):
                if kind == 0:
                    got.append(s.update_page(pid, data))
                elif kind == 1:
                    got.append(s.apply_delta(mmsb.Delta.sparse(pid, idx, data[idx])))
                elif kind == 2:
                    with pytest.raises(RuntimeError):
                        with s.transaction():
                            s.update_page(pid, data)
                            raise RuntimeError("rolled back")
                    got.append(s.update_page(pid, data[::-1].copy()))
                else:
                    s.apply_batch(mmsb.DeltaBatch.from_sparse([pid], [0, idx.size], idx, data[idx]))
                    got.append(None)
            assert (got[0] is None) == (got[1] is None)
            if got[0] is not None:
                held.append(got)
        for got, want in held:
            _same_delta(got, want)
        for pid in range(3):
            assert nolog.query_page(pid).tobytes() == twin.query_page(pid).tobytes()
        assert nolog.lsn == twin.lsn and nolog.log is None
    finally:
        nolog.close()
        twin.close()
        mmsb.config.reset()


def test_a_state_without_a_log_keeps_one_scratch_buffer_when_no_delta_is_held():
    st = mmsb.State(log=False)
    pg = st.create_page(4096)
    start = st._c.logbuf.array.size
    rng = np.random.default_rng(7)
    for _ in range(200):  # 200 whole-page records: far past the scratch space's size
        st.update_page(pg, rng.integers(0, 256, 4096, dtype=np.uint8))
    assert st._c.logbuf.array.size <= max(start, 2 * 4096 + 1024) and st.lsn == 200
    st.close()
