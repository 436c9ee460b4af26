"""The commit path's own promises: the Deltas a write returns are read from the log when first
used, and must read the same after the log's memory moves on (a rollback, a stop and a reused
state, growth); the registers follow every array that grows; a page past the update kernel's
size limit takes the general path with the same result."""

import numpy as np
import pytest

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
