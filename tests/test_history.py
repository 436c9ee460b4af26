"""st.history (provenance) against a model that walks list(st.log) in plain Python."""
import numpy as np
import pytest
import hypothesis.strategies as hs
from hypothesis import HealthCheck, given, settings

import mmsb

SIZE = 8


class Boom(Exception):
    pass


def model_history(st, pid, depth=32, last=None):
    """(own LSNs, {LSN: hops}, truncated) by a breadth-first walk over every logged delta."""
    pid = getattr(pid, "id", pid)
    ds = list(st.log)
    by_lsn = {d.lsn: d for d in ds}
    own = [d for d in ds if d.page_id == pid]
    kept = own if last is None else own[len(own) - min(last, len(own)):]
    hops = {d.lsn: 0 for d in kept}
    frontier = kept
    for h in range(1, depth + 1):
        nxt = []
        for d in frontier:
            for c in d.causes:
                if c not in hops:
                    hops[c] = h
                    nxt.append(by_lsn[c])
        frontier = nxt
    cut = len(kept) < len(own) or any(c not in hops for d in frontier for c in d.causes)
    return [d.lsn for d in kept], hops, cut


def check(st, pid, depth=32, last=None):
    h = st.history(pid, depth=depth, last=last)
    own, hops, cut = model_history(st, pid, depth, last)
    assert [d.lsn for d in h.deltas] == own
    assert h.hops == hops
    assert h.truncated == cut
    assert [d.lsn for d in h] == sorted(hops)
    assert [d.lsn for d in h.upstream] == sorted(k for k, v in hops.items() if v)
    pid = getattr(pid, "id", pid)
    assert all(d.page_id == pid for d in h.deltas) and all(d.page_id != pid for d in h.upstream)
    logged = {d.lsn: d for d in st.log}
    for d in h:
        assert d == logged[d.lsn] and d.causes == logged[d.lsn].causes
    return h


def fail_on_0xee(parent):
    if parent[0] == 0xEE:
        raise Boom("refuses 0xEE")
    return parent.copy()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data())
def test_random_histories_match_the_model(data):
    from mmsb.log import history as hist
    merge_min = hist.MERGE_MIN
    # small thresholds put most entries in the by-slot CSR, large ones leave them in the tail
    hist.MERGE_MIN = data.draw(hs.sampled_from([0, 3, merge_min]), label="MERGE_MIN")
    try:
        run_random_history(data)
    finally:
        hist.MERGE_MIN = merge_min


def run_random_history(data):
    st = mmsb.State()
    n = data.draw(hs.integers(2, 8), label="pages")
    ids = [st.create_page(SIZE).id for _ in range(n)]
    live = list(ids)
    byte = hs.sampled_from([0, 1, 2, 0xEE, 0xFF])

    def page():
        return data.draw(hs.sampled_from(live))

    def row():
        return bytes(data.draw(hs.lists(byte, min_size=SIZE, max_size=SIZE)))

    def write():
        kind = data.draw(hs.sampled_from(["update", "delta", "batch"]))
        if kind == "update":
            st.update_page(page(), row())
        elif kind == "delta":
            k = data.draw(hs.integers(1, 3))
            st.apply_delta(mmsb.Delta.sparse(page(), data.draw(hs.lists(hs.integers(0, SIZE - 1), min_size=k, max_size=k)),
                                             data.draw(hs.lists(byte, min_size=k, max_size=k))))
        else:
            pages = data.draw(hs.lists(hs.sampled_from(live), min_size=1, max_size=4))
            idx = np.array([data.draw(hs.integers(0, SIZE - 1)) for _ in pages], np.int64)
            vals = np.array([data.draw(byte) for _ in pages], np.uint8)
            st.apply_batch(mmsb.DeltaBatch.from_sparse(pages, np.arange(len(pages) + 1), idx, vals))

    def query():
        pid = page()
        depth = data.draw(hs.sampled_from([0, 1, 2, 32]))
        last = data.draw(hs.sampled_from([None, 0, 1, 3]))
        check(st, pid, depth, last)

    for _ in range(data.draw(hs.integers(1, 25), label="steps")):
        op = data.draw(hs.sampled_from(["bind", "write", "write", "txn", "bad txn", "delete", "create", "query"]))
        try:
            if op == "bind" and len(live) >= 2:
                k = data.draw(hs.integers(1, len(live) - 1))
                child = live[k]
                parents = data.draw(hs.lists(hs.sampled_from(live[:k]), min_size=1, max_size=3, unique=True))
                how = data.draw(hs.sampled_from(["sum", "passthrough", "python"]))
                if how == "sum":
                    st.register_recompute(child, parents, "sum")
                elif how == "passthrough":
                    st.register_passthrough(child, parents[0])
                else:
                    st.register_recompute(child, parents[:1], fail_on_0xee)
            elif op == "write":
                write()
            elif op in ("txn", "bad txn"):
                with st.transaction():
                    for _ in range(data.draw(hs.integers(1, 3))):
                        write()
                    if data.draw(hs.booleans()):
                        query()  # indexes records that the failing transaction then rolls back
                    if op == "bad txn":
                        raise Boom()
            elif op == "delete" and len(live) > 1:
                victim = page()
                st.delete_page(victim)
                live.remove(victim)
                with pytest.raises(mmsb.PageNotFoundError):
                    st.history(victim)
            elif op == "create":
                live.append(st.create_page(SIZE).id)  # takes the slot of the last page deleted
            query()
        except (Boom, mmsb.RecomputeError, mmsb.InvalidArgumentError, mmsb.GraphCycleError):
            pass  # a refused binding or a rolled-back commit: the log is as before
    for pid in live:
        check(st, pid)
    st.close()


def test_a_failed_transaction_is_forgotten_by_the_index():
    st = mmsb.State()
    a, b = st.create_page(SIZE), st.create_page(SIZE)
    st.register_passthrough(b, a, writable=True)  # written directly below
    st.update_page(a, bytes([1] * SIZE))
    assert [d.lsn for d in st.history(b)] == [1, 2]
    with pytest.raises(Boom):
        with st.transaction():
            st.update_page(a, bytes([2] * SIZE))
            st.update_page(a, bytes([3] * SIZE))
            assert [d.lsn for d in st.history(a).deltas] == [1, 3, 4]  # indexed mid-transaction
            raise Boom()
    # the rolled-back LSNs 3 and 4 are reused, by a commit that the index must see afresh
    st.update_page(b, bytes([9] * SIZE))
    st.update_page(a, bytes([4] * SIZE))
    h = check(st, b)
    assert [(d.lsn, d.page_id, h.hops[d.lsn]) for d in h] == [(1, a.id, 1), (2, b.id, 0), (3, b.id, 0),
                                                              (4, a.id, 1), (5, b.id, 0)]
    assert [d.causes for d in h.deltas] == [(1,), (), (4,)]
    st.close()


def test_a_recompute_that_raises_rolls_back_the_index_too():
    st = mmsb.State()
    a, b = st.create_page(SIZE), st.create_page(SIZE)
    st.register_recompute(b, [a], fail_on_0xee)
    st.update_page(a, bytes([1] * SIZE))
    check(st, b)
    with pytest.raises(mmsb.RecomputeError):
        st.update_page(a, bytes([0xEE] * SIZE))
    st.update_page(a, bytes([5] * SIZE))
    h = check(st, b)
    assert [d.lsn for d in h] == [1, 2, 3, 4]


def test_history_of_a_chain_follows_every_hop_and_stops_at_depth():
    st = mmsb.State()
    ids = st.create_pages(40, SIZE)
    for k in range(1, 40):
        st.register_passthrough(ids[k], ids[k - 1])
    for v in (1, 2, 3):
        st.update_page(ids[0], bytes([v] * SIZE))
    h = check(st, ids[-1])
    assert len(h.deltas) == 3 and len(h.upstream) == 3 * 32 and h.truncated  # 39 hops, depth 32
    assert max(h.hops.values()) == 32
    full = check(st, ids[-1], depth=39)
    assert len(full) == 3 * 40 and not full.truncated
    assert {d.page_id for d in full} == set(ids.tolist())
    assert repr(full) == f"<mmsb.History page={ids[-1]} deltas=3 upstream=117 depth=39>"
    assert "<table>" in full._repr_html_()
    top = full.upstream[0]
    assert top in full and top.lsn in full and full.delta(top.lsn) is top and 10**9 not in full
    with pytest.raises(KeyError):
        full.delta(10**9)
    last = check(st, ids[-1], depth=39, last=1)
    assert [d.lsn for d in last.deltas] == [full.deltas[-1].lsn] and len(last) == 40 and last.truncated
    st.close()


def test_a_chain_10000_deep_has_no_recursion_limit():
    st = mmsb.State()
    n = 10_000
    ids = st.create_pages(n, SIZE)
    for k in range(1, n):
        st.register_passthrough(ids[k], ids[k - 1])
    st.update_page(ids[0], bytes([7] * SIZE))
    h = st.history(ids[-1], depth=n)
    assert len(h) == n and not h.truncated
    assert [d.page_id for d in h] == ids.tolist()
    assert [h.hops[d.lsn] for d in h] == list(range(n - 1, -1, -1))
    assert st.history(ids[-1], depth=100).truncated
    st.close()


def test_the_index_catches_up_incrementally_and_across_rebuilds(monkeypatch):
    from mmsb.log import history as hist
    monkeypatch.setattr(hist, "MERGE_MIN", 4)
    st = mmsb.State()
    ids = st.create_pages(64, SIZE)
    for k in range(1, 8):
        st.register_recompute(ids[k], [ids[k - 1], ids[k + 31]], "sum", writable=True)  # batches write them too
    g = np.random.default_rng(1)
    for step in range(40):
        pages = g.choice(ids, 16)
        st.apply_batch(mmsb.DeltaBatch.from_sparse(pages, np.arange(17), g.integers(0, SIZE, 16),
                                                   g.integers(0, 256, 16).astype(np.uint8)))
        for pid in (ids[7], pages[0]):
            check(st, int(pid), depth=step % 5)
        if step % 10 == 9:  # a new page in the slot of a deleted one: one CSR run, two ids
            old = int(ids[40 + step // 10])
            st.delete_page(old)
            new = st.create_page(SIZE)
            assert new.id & 0xFFFFFFFF == old & 0xFFFFFFFF and new.id != old
            st.update_page(new, bytes([step] * SIZE))
            ids[40 + step // 10] = new.id
            assert [d.page_id for d in check(st, new)] == [new.id]
    index = st.log._history
    assert index.nsorted > 0 and index.n == len(st.log)
    st.close()


def test_a_pooled_state_starts_with_a_fresh_index():
    st = mmsb.start()
    a, b = st.create_page(SIZE), st.create_page(SIZE)
    st.register_passthrough(b, a)
    for v in range(1, 6):
        st.update_page(a, bytes([v] * SIZE))
    assert len(st.history(b)) == 10
    mmsb.stop(st)
    st2 = mmsb.start()
    a2, b2 = st2.create_page(SIZE), st2.create_page(SIZE)
    assert (a2.id, b2.id) == (a.id, b.id)
    st2.update_page(b2, bytes([1] * SIZE))
    h = check(st2, b2)
    assert [(d.lsn, d.page_id) for d in h] == [(1, b2.id)]
    mmsb.stop(st2)
    with pytest.raises(mmsb.StateClosedError):
        st.history(b)


def test_bad_arguments_raise_typed_errors_and_change_nothing():
    st = mmsb.State()
    a = st.create_page(SIZE)
    st.update_page(a, bytes([1] * SIZE))
    before = (st.state_hash(), st.log.nbytes)
    for kw in ({"depth": -1}, {"depth": 1.5}, {"depth": True}, {"depth": "3"}, {"last": -2}, {"last": 2.0}):
        with pytest.raises(mmsb.InvalidArgumentError):
            st.history(a, **kw)
    for bad in (10**6, -1, "0", None, 1.0):
        with pytest.raises(mmsb.PageNotFoundError):
            st.history(bad)
    other = mmsb.State()
    with pytest.raises(mmsb.PageNotFoundError):
        st.history(other.create_page(SIZE))
    st.delete_page(a)
    with pytest.raises(mmsb.PageNotFoundError):
        st.history(a)
    assert st.state_hash() != before[0]  # the delete, not the refused calls
    nolog = mmsb.State(log=False)
    p = nolog.create_page(SIZE)
    nolog.update_page(p, bytes([1] * SIZE))
    with pytest.raises(mmsb.InvalidArgumentError, match="log=False"):
        nolog.history(p)
    for s in (st, other, nolog):
        s.close()


def test_history_of_an_unwritten_page_is_empty():
    st = mmsb.State()
    a = st.create_page(SIZE)
    h = st.history(a)
    assert len(h) == 0 and not h.truncated and list(h) == [] and h.hops == {}
    st.close()


def test_a_history_keeps_its_records_when_the_log_rolls_back_under_it():
    st = mmsb.State()
    a = st.create_page(SIZE)
    with pytest.raises(Boom):
        with st.transaction():
            st.update_page(a, bytes([7] * SIZE))
            h = st.history(a)
            raise Boom()
    st.update_page(a, bytes([9] * SIZE))  # rewrites the same log bytes with another delta
    (d,) = h.deltas
    assert (d.lsn, d.values.tolist()) == (1, [7] * SIZE)
    assert [x.values.tolist() for x in st.history(a)] == [[9] * SIZE]
    st.close()


def test_a_file_log_and_its_replay_give_the_same_history(tmp_path):
    st = mmsb.start(log=str(tmp_path / "h.log"))
    a, b, c = (st.create_page(SIZE) for _ in range(3))
    st.register_recompute(c, [a, b], "sum")
    with st.transaction():
        st.update_page(a, bytes([1] * SIZE))
        st.update_page(b, bytes([2] * SIZE))
    st.update_page(b, bytes([3] * SIZE))
    live = check(st, c)
    assert [(d.lsn, live.hops[d.lsn]) for d in live] == [(1, 1), (2, 1), (3, 0), (4, 1), (5, 0)]
    again = st.replay()
    assert [(d.lsn, d.causes) for d in check(again, c.id)] == [(d.lsn, d.causes) for d in live]
    mmsb.stop(again)
    mmsb.stop(st)
