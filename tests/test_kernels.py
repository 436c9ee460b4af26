"""Kernels against the byte-level references in naive_kernels.py."""

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from naive_kernels import apply_dense, apply_sparse, as_array, diff_encoding

SIZES = st.integers(min_value=1, max_value=200)


@st.composite
def page_and_change(draw):
    size = draw(SIZES)
    old = draw(st.binary(min_size=size, max_size=size))
    # few, many or no changed bytes, anywhere, including the ragged tail
    positions = draw(st.sets(st.integers(0, size - 1), max_size=size))
    new = bytearray(old)
    for j in positions:
        new[j] = (new[j] + draw(st.integers(1, 255))) % 256
    return size, old, bytes(new)


@settings(max_examples=200, deadline=None)
@given(page_and_change())
def test_update_page_logs_exactly_the_changed_bytes_in_the_smaller_encoding(case):
    size, old, new = case
    s = mmsb.State()
    pg = s.create_page(size)
    if any(old):
        s.update_page(pg, old)
    lsn_before, epoch_before = s.lsn, pg.epoch
    delta = s.update_page(pg, as_array(new))
    expected = diff_encoding(old, new)
    assert bytes(s.query_page(pg)) == new
    if expected is None:
        assert delta is None
        assert (s.lsn, pg.epoch) == (lsn_before, epoch_before)
    else:
        kind, offsets, values = expected
        assert delta.kind == kind
        assert delta.indices.tolist() == offsets
        assert delta.values.tolist() == values
        assert (delta.lsn, delta.epoch) == (lsn_before + 1, epoch_before + 1)
        logged = list(s.log)[-1]
        assert logged.indices.tolist() == offsets and logged.values.tolist() == values
        assert np.array_equal(logged.mask, np.isin(np.arange(size), offsets))
    s.close()


@settings(max_examples=200, deadline=None)
@given(
    SIZES.flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.binary(min_size=n, max_size=n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), max_size=40),
        )
    )
)
def test_sparse_apply_matches_reference_including_repeats(case):
    size, start, writes = case
    s = mmsb.State()
    pg = s.create_page(size)
    if any(start):
        s.update_page(pg, start)
    ref = bytearray(s.query_page(pg).tobytes())
    idx = [w[0] for w in writes]
    vals = [w[1] for w in writes]
    changed = apply_sparse(ref, idx, vals)
    before = (s.lsn, pg.epoch)
    d = s.apply_delta(mmsb.Delta.sparse(pg, np.array(idx, dtype=np.int64), np.array(vals, dtype=np.uint8)))
    assert bytes(s.query_page(pg)) == bytes(ref)
    if changed:
        assert (d.lsn, d.epoch) == (before[0] + 1, before[1] + 1)
        assert d.indices.tolist() == idx and d.values.tolist() == vals
    else:
        assert d is None and (s.lsn, pg.epoch) == before
    s.close()


@settings(max_examples=150, deadline=None)
@given(SIZES.flatmap(lambda n: st.tuples(st.lists(st.booleans(), min_size=n, max_size=n),
                                          st.binary(min_size=n, max_size=n))))
def test_dense_apply_matches_reference(case):
    mask, payload = case
    size = len(mask)
    s = mmsb.State()
    pg = s.create_page(size)
    ref = bytearray(size)
    changed = apply_dense(ref, mask, payload)
    d = s.apply_delta(mmsb.Delta.dense(pg, np.array(mask), as_array(payload)))
    assert bytes(s.query_page(pg)) == bytes(ref)
    assert (d is not None) == changed
    if changed:
        logged = list(s.log)[-1]
        assert logged.kind == "dense"
        assert np.array_equal(logged.mask, np.array(mask))
        assert np.array_equal(logged.payload[np.array(mask)], as_array(payload)[np.array(mask)])
    s.close()


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_batch_matches_reference_in_order(data):
    npages = data.draw(st.integers(1, 6))
    sizes = data.draw(st.lists(SIZES, min_size=npages, max_size=npages))
    s = mmsb.State()
    ids = [s.create_page(n).id for n in sizes]
    ref = {pid: bytearray(n) for pid, n in zip(ids, sizes)}
    deltas = data.draw(st.lists(st.integers(0, npages - 1), max_size=20))
    pages, starts, indices, values = [], [0], [], []
    for p in deltas:
        writes = data.draw(st.lists(st.tuples(st.integers(0, sizes[p] - 1), st.integers(0, 255)), max_size=10))
        pages.append(ids[p])
        indices += [w[0] for w in writes]
        values += [w[1] for w in writes]
        starts.append(len(indices))
    expected, lsn = [], 0
    for i, pid in enumerate(pages):
        lo, hi = starts[i], starts[i + 1]
        if apply_sparse(ref[pid], indices[lo:hi], values[lo:hi]):
            lsn += 1
            expected.append(lsn)
        else:
            expected.append(0)
    batch = mmsb.DeltaBatch.from_sparse(np.array(pages, dtype=np.int64), starts,
                                        np.array(indices, dtype=np.int64), np.array(values, dtype=np.uint8))
    assert s.apply_batch(batch).tolist() == expected
    for pid in ids:
        assert bytes(s.query_page(pid)) == bytes(ref[pid])
        assert s.page(pid).epoch == sum(1 for i, q in enumerate(pages) if q == pid and expected[i])
    s.close()


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_parallel_batch_path_matches_the_serial_one(data):
    """Big batches spread their writes over threads; bytes, epochs, LSNs and log must not change."""
    npages = data.draw(st.integers(1, 8))
    size = data.draw(SIZES)
    n = data.draw(st.integers(1, 60))
    pages = data.draw(st.lists(st.integers(0, npages - 1), min_size=n, max_size=n))
    lengths = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    idx = data.draw(st.lists(st.integers(0, size - 1), min_size=int(starts[-1]), max_size=int(starts[-1])))
    vals = data.draw(st.lists(st.integers(0, 255), min_size=int(starts[-1]), max_size=int(starts[-1])))
    seen = []
    for threshold in (1 << 30, 1):
        mmsb.config.set(PARALLEL_BATCH_DELTAS=threshold)
        try:
            s = mmsb.State()
            ids = s.create_pages(npages, size)
            batch = mmsb.DeltaBatch.from_sparse(ids[pages], starts, np.array(idx, np.int64),
                                                np.array(vals, np.uint8))
            lsns = s.apply_batch(batch).tolist()
            log = [(d.lsn, d.page_id, d.epoch, d.indices.tolist(), d.values.tolist()) for d in s.log]
            seen.append((lsns, log, s.state_hash()))
            s.close()
        finally:
            mmsb.config.reset()
    assert seen[0] == seen[1]


def sparse_record(lsn, page_id, epoch, size, offsets, values):
    """A sparse delta record as docs/FORMAT.md lays it out: six u64 header words (length, type 1
    and encoding 0 in the first), the offsets as u32, the values, zeros to 8 bytes."""
    body = struct.pack(f"<{len(offsets)}I", *offsets) + bytes(values)
    length = (48 + len(body) + 7) & ~7
    head = struct.pack("<6Q", length | 1 << 32, lsn, page_id, epoch, len(offsets), size)
    return head + body + bytes(length - 48 - len(body))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_batch_logs_each_delta_byte_for_byte_as_the_format_says(data):
    """The batch path streams its records past the cache in whole words; what lands in the log
    is still exactly the documented record, whatever the count of entries (odd, even, none)."""
    s = mmsb.State()
    try:
        sizes = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=6), label="sizes")
        ids = [s.create_page(n).id for n in sizes]
        before = s._log.used
        deltas = data.draw(st.lists(st.tuples(st.integers(0, len(ids) - 1), st.data()), min_size=1, max_size=8),
                           label="deltas")
        pages, offsets, values = [], [], []
        for k, d in deltas:
            offs = d.draw(st.lists(st.integers(0, sizes[k] - 1), unique=True, max_size=sizes[k]), label="offsets")
            pages.append(ids[k])
            offsets.append(offs)
            values.append(d.draw(st.lists(st.integers(1, 255), min_size=len(offs), max_size=len(offs)),
                                 label="values"))
        starts = np.cumsum([0] + [len(o) for o in offsets])
        batch = mmsb.DeltaBatch.from_sparse(np.array(pages, np.int64), starts,
                                            np.array([i for o in offsets for i in o], np.int64),
                                            np.array([v for vs in values for v in vs], np.uint8))
        lsns = s.apply_batch(batch)
        want, epochs = b"", {}
        for pid, offs, vals, lsn in zip(pages, offsets, values, lsns.tolist()):
            if lsn:  # values are nonzero on zero pages unless a later delta wrote the same byte again
                epochs[pid] = epochs.get(pid, 0) + 1
                want += sparse_record(lsn, pid, epochs[pid], sizes[ids.index(pid)], offs, vals)
        got = bytes(s._log._live().array[before:before + len(want)])
        assert got == want
    finally:
        s.close()
