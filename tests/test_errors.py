"""Every rejected call raises the right MMSBError, says what was wrong, and changes nothing."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import mmsb
from naive import retag

U8, I64 = np.uint8, np.int64
PUBLIC_ERRORS = ["PageNotFoundError", "InvalidDeltaError", "InvalidPageError",
                 "InvalidArgumentError", "StateClosedError", "DeviceUnavailableError",
                 "GraphCycleError", "LogCorruptError", "CapacityError"]


class Env:
    """A state with written pages, a deleted page, and a page of another state."""

    def __init__(self):
        # gpu=False: location="gpu" must be refused whether or not this machine has a device
        # (the session runs numba's CUDA simulator); tests/test_gpu_nodevice.py covers no device at all
        self.st = mmsb.State(gpu=False)
        self.a = self.st.create_page(8)      # id 0
        self.b = self.st.create_page(13)     # id 1, not a multiple of 8
        self.dead = self.st.create_page(5)   # id 2, deleted below
        self.c = self.st.create_page(1)      # id 3
        self.st.update_page(self.a, bytes(range(1, 9)))
        self.st.apply_delta(mmsb.Delta.sparse(self.b, np.array([0, 12], I64), np.array([7, 9], U8)))
        self.st.delete_page(self.dead)
        self.other = mmsb.State()
        self.other.create_page(8)
        self.foreign = self.other.create_page(13)  # id 1 there too: same id as self.b

    def close(self):
        self.st.close()
        self.other.close()


def snapshot(st):
    ids = st.page_ids().tolist()
    return {
        "ids": ids,
        "bytes": {p: bytes(st.query_page(p)) for p in ids},
        "epochs": {p: st.page(p).epoch for p in ids},
        "lsn": st.lsn,
        "log_len": len(st.log),
        "log": [(d.lsn, d.page_id, d.epoch, np.asarray(d.indices).tolist(),
                 np.asarray(d.values).tolist()) for d in st.log],
        "hash": st.state_hash(),
        "stats": st.stats(),
    }


def sparse(page, idx, vals, idt=I64, vdt=U8):
    return mmsb.Delta.sparse(page, np.asarray(idx, idt), np.asarray(vals, vdt))


def dense(page, mask, payload):
    return mmsb.Delta.dense(page, mask, payload)


def batch(pages, starts, idx, vals):
    return mmsb.DeltaBatch.from_sparse(np.asarray(pages, I64), np.asarray(starts, I64),
                                       np.asarray(idx, I64), np.asarray(vals, U8))


DEAD_ID = 2
UNKNOWN_ID = 12345
SIZE_WORDS = ("size", "length", "len", "bytes")
INDEX_WORDS = ("range", "bound", "index", "indices")
NOT_FOUND = (str(UNKNOWN_ID), "not found", "no page", "unknown")
GONE = (str(DEAD_ID), "deleted", "not found", "no page")
# (name, call, error, words of which the message must contain at least one)
CASES = [
    ("update-too-long", lambda e: e.st.update_page(e.a, np.ones(9, U8)), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("update-too-short", lambda e: e.st.update_page(e.b, np.ones(12, U8)), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("update-bytes-len", lambda e: e.st.update_page(e.c, b"\x01\x02"), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("update-float64", lambda e: e.st.update_page(e.a, np.ones(8, np.float64)), mmsb.InvalidDeltaError, ("dtype", "uint8")),
    # int16 with the page's length in elements: a cast would silently write 8 bytes
    ("update-int16", lambda e: e.st.update_page(e.a, np.ones(8, np.int16)), mmsb.InvalidDeltaError, ("dtype", "uint8")),
    # int16 with the page's length in bytes: a byte reinterpretation would pass a size check
    ("update-int16-bytes", lambda e: e.st.update_page(e.a, np.ones(4, np.int16)), mmsb.InvalidDeltaError, ("dtype", "uint8")),
    ("update-2d", lambda e: e.st.update_page(e.a, np.ones((1, 8), U8)), mmsb.InvalidDeltaError, ("1-d", "dimension", "shape", "ndim", "flat")),
    ("update-2d-2x4", lambda e: e.st.update_page(e.a, np.ones((2, 4), U8)), mmsb.InvalidDeltaError, ("1-d", "dimension", "shape", "ndim", "flat")),
    ("unknown-query", lambda e: e.st.query_page(UNKNOWN_ID), mmsb.PageNotFoundError, NOT_FOUND),
    ("unknown-view", lambda e: e.st.view(UNKNOWN_ID), mmsb.PageNotFoundError, NOT_FOUND),
    ("unknown-page", lambda e: e.st.page(UNKNOWN_ID), mmsb.PageNotFoundError, NOT_FOUND),
    ("unknown-update", lambda e: e.st.update_page(UNKNOWN_ID, bytes(8)), mmsb.PageNotFoundError, NOT_FOUND),
    ("unknown-delta", lambda e: e.st.apply_delta(sparse(UNKNOWN_ID, [0], [1])), mmsb.PageNotFoundError, NOT_FOUND),
    ("unknown-delete", lambda e: e.st.delete_page(UNKNOWN_ID), mmsb.PageNotFoundError, NOT_FOUND),
    # a reused slot's old id must stay dead, so the same slot's next generation is checked too
    ("gen-1-of-live-slot", lambda e: e.st.query_page(0 | (1 << 32)), mmsb.PageNotFoundError, (str(1 << 32), "not found", "no page", "unknown")),
    ("deleted-id-query", lambda e: e.st.query_page(DEAD_ID), mmsb.PageNotFoundError, GONE),
    ("deleted-id-update", lambda e: e.st.update_page(DEAD_ID, bytes(5)), mmsb.PageNotFoundError, GONE),
    ("deleted-id-delete", lambda e: e.st.delete_page(DEAD_ID), mmsb.PageNotFoundError, GONE),
    ("deleted-handle-query", lambda e: e.st.query_page(e.dead), mmsb.PageNotFoundError, GONE),
    ("deleted-handle-delta", lambda e: e.st.apply_delta(sparse(e.dead, [0], [1])), mmsb.PageNotFoundError, GONE),
    ("deleted-handle-epoch", lambda e: e.dead.epoch, mmsb.PageNotFoundError, GONE),
    ("foreign-handle-query", lambda e: e.st.query_page(e.foreign), (mmsb.PageNotFoundError, mmsb.InvalidArgumentError), ("state", "foreign", "belong", "another", "other")),
    ("foreign-handle-update", lambda e: e.st.update_page(e.foreign, bytes(13)), (mmsb.PageNotFoundError, mmsb.InvalidArgumentError), ("state", "foreign", "belong", "another", "other")),
    ("foreign-handle-delta", lambda e: e.st.apply_delta(sparse(e.foreign, [0], [1])), (mmsb.PageNotFoundError, mmsb.InvalidArgumentError), ("state", "foreign", "belong", "another", "other")),
    ("foreign-handle-delete", lambda e: e.st.delete_page(e.foreign), (mmsb.PageNotFoundError, mmsb.InvalidArgumentError), ("state", "foreign", "belong", "another", "other")),
    ("sparse-index-eq-size", lambda e: e.st.apply_delta(sparse(e.b, [0, 13], [5, 5])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("sparse-index-eq-size-by-id", lambda e: e.st.apply_delta(sparse(1, [0, 13], [5, 5])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("sparse-index-negative", lambda e: e.st.apply_delta(sparse(e.b, [3, -1], [5, 5])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("sparse-index-2**32", lambda e: e.st.apply_delta(sparse(e.c, [2**32], [5])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("sparse-len-mismatch", lambda e: e.st.apply_delta(sparse(e.b, [0, 1], [5])), mmsb.InvalidDeltaError, ("length", "match", "same", "len")),
    ("sparse-float-indices", lambda e: e.st.apply_delta(sparse(e.b, [0.0, 1.0], [5, 5], idt=np.float64)), mmsb.InvalidDeltaError, ("integer", "dtype", "int")),
    ("sparse-value-300", lambda e: e.st.apply_delta(sparse(e.b, [0], [300], vdt=I64)), mmsb.InvalidDeltaError, ("uint8", "dtype", "byte", "range", "255")),
    ("dense-payload-short", lambda e: e.st.apply_delta(dense(e.a, np.ones(8, bool), np.ones(7, U8))), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("dense-mask-short", lambda e: e.st.apply_delta(dense(e.a, np.ones(7, bool), np.ones(8, U8))), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("dense-both-long", lambda e: e.st.apply_delta(dense(e.b, np.ones(14, bool), np.ones(14, U8))), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("dense-both-long-by-id", lambda e: e.st.apply_delta(dense(1, np.ones(14, bool), np.ones(14, U8))), mmsb.InvalidDeltaError, SIZE_WORDS),
    ("dense-mask-uint8", lambda e: e.st.apply_delta(dense(e.a, np.ones(8, U8), np.full(8, 99, U8))), mmsb.InvalidDeltaError, ("bool",)),
    ("dense-mask-int64", lambda e: e.st.apply_delta(dense(e.a, np.ones(8, I64), np.full(8, 99, U8))), mmsb.InvalidDeltaError, ("bool",)),
    # The first delta would change page a: it must not have been applied when the batch fails.
    ("batch-unknown-page-middle", lambda e: e.st.apply_batch(batch([0, UNKNOWN_ID, 1], [0, 1, 2, 3], [0, 0, 0], [99, 99, 99])), mmsb.PageNotFoundError, NOT_FOUND),
    ("batch-deleted-page-middle", lambda e: e.st.apply_batch(batch([0, DEAD_ID, 1], [0, 1, 2, 3], [0, 0, 0], [99, 99, 99])), mmsb.PageNotFoundError, GONE),
    ("batch-bad-index-middle", lambda e: e.st.apply_batch(batch([0, 3, 1], [0, 1, 2, 3], [0, 1, 0], [99, 99, 99])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("batch-bad-index-last", lambda e: e.st.apply_batch(batch([0, 1, 1], [0, 1, 2, 3], [0, 0, 13], [99, 99, 99])), mmsb.InvalidDeltaError, INDEX_WORDS),
    ("batch-starts-not-zero", lambda e: e.st.apply_batch(batch([0, 1], [1, 2, 3], [0, 0, 0], [9, 9, 9])), mmsb.InvalidDeltaError, ("starts", "offset")),
    ("batch-starts-decreasing", lambda e: e.st.apply_batch(batch([0, 1], [0, 2, 1], [0, 0], [9, 9])), mmsb.InvalidDeltaError, ("starts", "offset", "decreas", "monoton")),
    ("batch-starts-end", lambda e: e.st.apply_batch(batch([0, 1], [0, 1, 3], [0, 0], [9, 9])), mmsb.InvalidDeltaError, ("starts", "offset", "length")),
    ("batch-starts-count", lambda e: e.st.apply_batch(batch([0, 1], [0, 2], [0, 0], [9, 9])), mmsb.InvalidDeltaError, ("starts", "pages", "length")),
    ("batch-values-short", lambda e: e.st.apply_batch(batch([0, 1], [0, 1, 2], [0, 0], [9])), mmsb.InvalidDeltaError, ("values", "length", "match")),
    ("create-size-0", lambda e: e.st.create_page(0), mmsb.InvalidPageError, ("size",)),
    ("create-size-neg", lambda e: e.st.create_page(-1), mmsb.InvalidPageError, ("size",)),
    ("create-size-2**32+1", lambda e: e.st.create_page(2**32 + 1), mmsb.InvalidPageError, ("size",)),
    ("create-size-float", lambda e: e.st.create_page(1.5), mmsb.InvalidPageError, ("size", "int")),
    ("create-size-str", lambda e: e.st.create_page("8"), mmsb.InvalidPageError, ("size", "int")),
    ("create-pages-count-0", lambda e: e.st.create_pages(0, 8), mmsb.InvalidPageError, ("count",)),
    ("create-pages-count-neg", lambda e: e.st.create_pages(-3, 8), mmsb.InvalidPageError, ("count",)),
    ("create-pages-size-0", lambda e: e.st.create_pages(3, 0), mmsb.InvalidPageError, ("size",)),
    ("create-location-tpu", lambda e: e.st.create_page(8, location="tpu"), mmsb.InvalidPageError, ("location", "tpu")),
    ("create-pages-location-tpu", lambda e: e.st.create_pages(2, 8, location="tpu"), mmsb.InvalidPageError, ("location", "tpu")),
    ("create-location-gpu", lambda e: e.st.create_page(8, location="gpu"), mmsb.DeviceUnavailableError, ("gpu", "device", "cuda")),
    ("create-pages-location-gpu", lambda e: e.st.create_pages(2, 8, location="gpu"), mmsb.DeviceUnavailableError, ("gpu", "device", "cuda")),
]


@pytest.mark.parametrize("call,error,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_call_changes_nothing(call, error, words):
    env = Env()
    try:
        view = env.st.view(env.a)
        before, view_before = snapshot(env.st), bytes(view)
        other_before = snapshot(env.other)
        with pytest.raises(error) as info:
            call(env)
        assert isinstance(info.value, mmsb.MMSBError)
        msg = str(info.value).lower()
        assert any(w in msg for w in words), f"message {msg!r} names none of {words}"
        assert snapshot(env.st) == before
        assert bytes(view) == view_before
        assert snapshot(env.other) == other_before
        # Still usable afterwards: the failure left no lock held, no half-made page.
        assert env.st.create_page(4).id == DEAD_ID | (1 << 32)
    finally:
        env.close()


@pytest.mark.parametrize("kwargs,error,word", [
    ({"sync": "sometimes"}, mmsb.InvalidArgumentError, "sync"),
    ({"log": 42}, mmsb.InvalidArgumentError, "log"),
    ({"gpu": "maybe"}, mmsb.InvalidArgumentError, "gpu"),
    ({"gpu": "yes"}, mmsb.InvalidArgumentError, "gpu"),
])
def test_start_rejects_bad_options(kwargs, error, word):
    with pytest.raises(error) as info:
        mmsb.start(**kwargs)
    assert word in str(info.value).lower()


@pytest.mark.parametrize("close", ["stop", "close"])
def test_use_after_stop_or_close(close):
    st = mmsb.start() if close == "stop" else mmsb.State()
    pg = st.create_page(8)
    mmsb.stop(st) if close == "stop" else st.close()
    for call in (lambda: st.query_page(pg), lambda: st.update_page(0, bytes(8)),
                 lambda: st.create_page(8), lambda: st.state_hash(), lambda: pg.epoch):
        with pytest.raises(mmsb.StateClosedError) as info:
            call()
        assert any(w in str(info.value).lower() for w in ("closed", "stopped"))


@pytest.mark.parametrize("name", PUBLIC_ERRORS)
def test_public_errors_share_one_base(name):
    err = getattr(mmsb, name)
    assert isinstance(err, type) and issubclass(err, mmsb.MMSBError) and err is not mmsb.MMSBError
    assert issubclass(mmsb.MMSBError, Exception)


@pytest.mark.parametrize("call", [lambda st: st.create_page(3 << 20),
                                  lambda st: st.create_pages(5, 1 << 20)], ids=["one", "many"])
def test_full_arena_refuses_and_changes_nothing(call):
    mmsb.config.set(ARENA_RESERVE_BYTES=4 << 20)
    try:
        st = mmsb.State()
    finally:
        mmsb.config.reset()
    try:
        st.update_page(st.create_page(1 << 20), np.full(1 << 20, 3, U8))
        before = snapshot(st)
        with pytest.raises(mmsb.CapacityError) as info:
            call(st)
        assert any(w in str(info.value).lower() for w in ("arena", "full", "capacity", "reserve"))
        assert snapshot(st) == before
        assert st.create_page(8).id == retag(1, st.tag)  # no slot was used up by the refused call
    finally:
        del st  # not closed: a closed state's small arena would go back to the pool


@settings(max_examples=60, deadline=None)
@given(sizes=hs.lists(hs.integers(1, 64), min_size=1, max_size=6),
       deltas=hs.lists(hs.tuples(hs.integers(0, 5), hs.lists(hs.integers(0, 80), max_size=5)), min_size=1,
                       max_size=8))
def test_one_batch_is_checked_against_the_pages_each_time_it_is_applied(sizes, deltas):
    """A batch keeps what its first apply learned of its offsets; every apply still checks them
    against the pages as they are: the batch fits them, then they shrink and it no longer does."""
    st = mmsb.start()
    try:
        ids = [int(st.create_page(100).id) for _ in sizes]
        pages = [ids[k % len(sizes)] for k, _ in deltas]
        starts = np.cumsum([0] + [len(offs) for _, offs in deltas])
        indices = np.array([o for _, offs in deltas for o in offs], np.int64)
        batch = mmsb.DeltaBatch(pages, starts, indices, np.full(indices.size, 7, np.uint8))
        st.apply_batch(batch)  # every offset < 100 fits
        for pid, n in zip(ids, sizes):
            st.resize_page(pid, n)
        first_bad = next((i for i, (k, offs) in enumerate(deltas) if offs and max(offs) >= sizes[k % len(sizes)]),
                         None)
        for _ in range(2):  # the apply after the resize and the one after it
            before = st.state_hash()
            if first_bad is None:
                st.apply_batch(batch)
            else:
                with pytest.raises(mmsb.InvalidDeltaError, match=f"delta {first_bad} "):
                    st.apply_batch(batch)
                assert st.state_hash() == before
    finally:
        mmsb.stop(st)
