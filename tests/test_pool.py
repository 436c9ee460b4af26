"""Pooled states must not leak: the reference system's worst failure.

A state handed out by mmsb.start() after another was stopped must be indistinguishable from a
fresh mmsb.State(): same ids, epochs, LSNs, bytes, hash and log for the same operations.
"""
import threading

import numpy as np
import hypothesis.strategies as hs
from hypothesis import HealthCheck, given, settings

import mmsb
from naive import NaiveState

SIZES = hs.one_of(hs.just(1), hs.integers(1, 200), hs.sampled_from([7, 9, 65, 257]))
def I64(x):
    return np.asarray(x, np.int64)


def U8(x):
    return np.asarray(x, np.uint8)


K = hs.integers(0, 1000)  # which live page, modulo how many there are
PAIRS = hs.lists(hs.tuples(hs.integers(0, 10**6), hs.integers(0, 255)), max_size=8)
OP = hs.one_of(
    hs.tuples(hs.just("create"), SIZES),
    hs.tuples(hs.just("create_many"), hs.integers(1, 4), SIZES),
    hs.tuples(hs.just("delete"), K),
    hs.tuples(hs.just("update"), K, hs.integers(0, 2**32 - 1)),
    hs.tuples(hs.just("same"), K),
    hs.tuples(hs.just("sparse"), K, PAIRS),
    hs.tuples(hs.just("dense"), K, hs.integers(0, 2**32 - 1)),
    hs.tuples(hs.just("batch"), hs.lists(hs.tuples(K, PAIRS), min_size=1, max_size=4)),
)
# Junk also grows the arena, and makes calls that are refused.
JUNK = hs.one_of(OP, hs.tuples(hs.just("big"), hs.sampled_from([4096, 65536, 1 << 20])),
                 hs.tuples(hs.just("bad"), K))


def _rec(d):
    if d is None:
        return None
    return (d.lsn, d.page_id, d.epoch, tuple(np.asarray(d.indices).tolist()),
            tuple(np.asarray(d.values).tolist()))


def run_ops(st, ops, model=None):
    """Interpret ops on st (and on the naive model when given); returns what each call returned."""
    trace = []
    for op in ops:
        live = st.page_ids().tolist()
        name = op[0]
        if name in ("create", "big"):
            trace.append(st.create_page(op[1]).id)
            if model:
                assert trace[-1] == model.create_page(op[1])
            if name == "big":
                st.update_page(trace[-1], np.full(op[1], 0xFF, np.uint8))
            continue
        if name == "create_many":
            trace.append(tuple(st.create_pages(op[1], op[2]).tolist()))
            if model:
                assert list(trace[-1]) == model.create_pages(op[1], op[2])
            continue
        if not live:
            trace.append("skip")
            continue
        pid = live[op[1] % len(live)] if name != "batch" else None
        size = st.page(pid).size if pid is not None else 0
        if name == "delete":
            st.delete_page(pid)
            trace.append(pid)
            if model:
                model.delete_page(pid)
        elif name in ("update", "same"):
            data = (np.random.default_rng(op[2]).integers(0, 256, size, dtype=np.uint8)
                    if name == "update" else st.query_page(pid))
            trace.append(_rec(st.update_page(pid, data)))
            if model:
                assert (trace[-1] is None) == (model.update_page(pid, bytes(data)) is None)
        elif name == "sparse":
            idx = [i % size for i, _ in op[2]]
            vals = [v for _, v in op[2]]
            trace.append(_rec(st.apply_delta(mmsb.Delta.sparse(
                pid, np.asarray(idx, np.int64), np.asarray(vals, np.uint8)))))
            if model:
                assert (trace[-1] is None) == (model.apply_sparse(pid, idx, vals) is None)
        elif name == "dense":
            rng = np.random.default_rng(op[2])
            mask, payload = rng.random(size) < 0.3, rng.integers(0, 256, size, dtype=np.uint8)
            trace.append(_rec(st.apply_delta(mmsb.Delta.dense(pid, mask, payload))))
            if model:
                assert (trace[-1] is None) == (model.apply_dense(pid, mask, payload) is None)
        elif name == "batch":
            deltas = []
            for k, pairs in op[1]:
                p = live[k % len(live)]
                n = st.page(p).size
                deltas.append((p, [i % n for i, _ in pairs], [v for _, v in pairs]))
            starts = np.cumsum([0] + [len(d[1]) for d in deltas]).astype(np.int64)
            batch = mmsb.DeltaBatch.from_sparse(
                np.asarray([d[0] for d in deltas], np.int64), starts,
                np.asarray([i for d in deltas for i in d[1]], np.int64),
                np.asarray([v for d in deltas for v in d[2]], np.uint8))
            trace.append(tuple(st.apply_batch(batch).tolist()))
            if model:
                assert list(trace[-1]) == model.apply_batch(deltas)
        elif name == "bad":
            for call in (lambda: st.update_page(pid, np.zeros(size + 1, np.uint8)),
                         lambda: st.apply_delta(mmsb.Delta.sparse(pid, I64([size]), U8([1]))),
                         lambda: st.query_page(max(live) + 1 + op[1])):
                try:
                    call()
                except mmsb.MMSBError:
                    pass
            trace.append("bad")
    return trace


def snapshot(st):
    ids = st.page_ids().tolist()
    stats = {k: v for k, v in st.stats().items()
             if not any(w in k for w in ("arena", "capacity", "pool", "time"))}
    return {
        "ids": ids,
        "bytes": {p: bytes(st.query_page(p)) for p in ids},
        "views": {p: bytes(st.view(p)) for p in ids},
        "epochs": {p: st.page(p).epoch for p in ids},
        "lsn": st.lsn,
        "hash": st.state_hash(),
        "log": [_rec(d) for d in st.log],
        "log_len": len(st.log),
        "log_nbytes": st.log.nbytes,
        "stats": stats,
    }


def dirty_everything(st):
    for p in st.page_ids().tolist():
        st.update_page(p, np.full(st.page(p).size, 0xAB, np.uint8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=hs.lists(OP, max_size=25), b=hs.lists(JUNK, max_size=25), n_junk=hs.integers(1, 3))
def test_pooled_state_is_indistinguishable_from_fresh(a, b, n_junk):
    model = NaiveState()
    fresh = mmsb.State()
    want_trace = run_ops(fresh, a, model)
    want = snapshot(fresh)
    fresh.close()
    # The fresh run must itself be right, or two equal wrong runs would pass.
    assert want["ids"] == model.page_ids() and want["lsn"] == model.lsn
    assert want["bytes"] == {p: bytes(v) for p, v in model.pages.items()}
    assert want["epochs"] == model.epochs

    junk = [mmsb.start() for _ in range(n_junk)]
    for st in junk:
        run_ops(st, b)
        dirty_everything(st)  # so a page that is not re-zeroed shows up as 0xAB
    for st in reversed(junk):
        mmsb.stop(st)

    st = mmsb.start()
    try:
        assert st.page_ids().tolist() == [] and st.lsn == 0 and len(st.log) == 0
        assert run_ops(st, a) == want_trace
        assert snapshot(st) == want
    finally:
        mmsb.stop(st)


CLOSED_CALLS = {
    "create_page": lambda st, pg: st.create_page(8),
    "create_pages": lambda st, pg: st.create_pages(2, 8),
    "page": lambda st, pg: st.page(0),
    "delete_page": lambda st, pg: st.delete_page(0),
    "query_page": lambda st, pg: st.query_page(0),
    "view": lambda st, pg: st.view(0),
    "update_page": lambda st, pg: st.update_page(0, bytes(8)),
    "apply_delta": lambda st, pg: st.apply_delta(mmsb.Delta.sparse(0, I64([1]), U8([1]))),
    "apply_batch": lambda st, pg: st.apply_batch(
        mmsb.DeltaBatch.from_sparse(I64([0]), I64([0, 1]), I64([1]), U8([1]))),
    "state_hash": lambda st, pg: st.state_hash(),
    "stats": lambda st, pg: st.stats(),
    "page_ids": lambda st, pg: st.page_ids(),
    "handle.epoch": lambda st, pg: pg.epoch,
}


def test_use_after_stop_raises_state_closed():
    st = mmsb.start()
    pg = st.create_page(8)
    st.update_page(pg, b"\x01" * 8)
    mmsb.stop(st)
    # The next start() likely gets the same resources: a stale handle must not reach them.
    st2 = mmsb.start()
    try:
        st2.create_page(8)
        st2.update_page(0, b"\x02" * 8)
        for name, call in CLOSED_CALLS.items():
            try:
                call(st, pg)
            except mmsb.StateClosedError:
                continue
            raise AssertionError(f"{name} on a stopped state did not raise StateClosedError")
        before = st2.state_hash()
        for call in (lambda: st2.query_page(pg), lambda: st2.update_page(pg, bytes(8)),
                     lambda: st2.delete_page(pg)):
            try:
                call()
            except mmsb.MMSBError:
                continue
            raise AssertionError("a handle of a stopped state was accepted by the next state")
        assert st2.state_hash() == before and bytes(st2.query_page(0)) == b"\x02" * 8
    finally:
        mmsb.stop(st2)


def test_stopping_many_states_never_blocks_and_pool_hands_out_clean_states():
    states = [mmsb.start() for _ in range(100)]
    for i, st in enumerate(states):
        st.update_page(st.create_page(64 + i), np.full(64 + i, 0xCD, np.uint8))
    done = threading.Event()

    def stop_all():
        for st in states:
            mmsb.stop(st)  # a full pool must drop the state, not wait for room
        done.set()

    t = threading.Thread(target=stop_all, daemon=True)
    t.start()
    assert done.wait(60), "mmsb.stop blocked with 100 states returned to the pool"
    again = [mmsb.start() for _ in range(100)]
    try:
        for st in again:
            assert st.page_ids().tolist() == [] and st.lsn == 0
            pg = st.create_page(64)
            assert pg.id == 0 and bytes(st.query_page(pg)) == bytes(64)
    finally:
        for st in again:
            mmsb.stop(st)
