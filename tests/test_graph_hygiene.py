"""Deleting pages others depend on, unbinding, rebinding and guarded derived pages."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb


def ones(n=8, v=1):
    return np.full(n, v, np.uint8)


def snapshot(st):
    return st.state_hash(), st.lsn, len(st.log), sorted(st.log.records())


def assert_replays(st):
    r = st.replay()
    assert r.state_hash() == st.state_hash()
    r.close()


@pytest.fixture
def st():
    s = mmsb.start()
    yield s
    s.close()


def chain(st, n=4):
    """a -> b -> c -> ... (passthroughs), plus a control edge a -> x."""
    pages = [st.create_page(8) for _ in range(n)]
    for p, c in zip(pages, pages[1:]):
        st.register_passthrough(c, p)
    x = st.create_page(8)
    st.add_dependency(pages[0], x, "control")
    return pages, x


def test_deleting_a_page_with_dependents_is_refused_and_changes_nothing(st):
    pages, x = chain(st)
    st.update_page(pages[0], ones())
    before = snapshot(st)
    with pytest.raises(mmsb.InvalidArgumentError, match="dependents"):
        st.delete_page(pages[0])
    with pytest.raises(mmsb.InvalidArgumentError, match="dependents="):
        st.delete_page(pages[0], dependents="orphan")
    assert snapshot(st) == before
    st.delete_page(pages[-1])  # a leaf goes as before
    st.delete_page(x)


def test_delete_with_unbind_keeps_the_dependents_bytes(st):
    (a, b, c, d), x = chain(st)
    st.update_page(a, ones(v=5))
    lsn = st.lsn
    st.delete_page(a, dependents="unbind")
    assert st.lsn == lsn  # nothing recomputed: the dependents keep what they hold
    assert st.view(b).tolist() == [5] * 8 and st.page(x).epoch == 0
    st.update_page(b, ones(v=7))  # unbound now: a plain page, its own chain below still bound
    assert st.view(d).tolist() == [7] * 8
    r = st.replay()
    assert r.state_hash() == st.state_hash()
    r.update_page(b.id, ones(v=9))
    assert r.view(d.id).tolist() == [9] * 8
    r.close()


def test_delete_with_delete_takes_everything_below(st):
    (a, b, c, d), x = chain(st)
    other = st.create_page(8)
    st.register_recompute(other, [st.create_page(8), c], "xor")  # two parents, one of them below a
    log_before = len(list(st.log.records()))
    st.delete_page(b, dependents="delete")
    live = set(st.page_ids().tolist())
    assert {b.id, c.id, d.id, other.id}.isdisjoint(live) and {a.id, x.id} <= live
    # the deletes are logged below-first, so each page is deleted once nothing depends on it
    words = st.log._live().array
    order = [int(words[pos + 16:pos + 24].view(np.int64)[0])
             for t, pos, _ in list(st.log.records())[log_before:] if t == 3]
    assert sorted(order) == sorted([b.id, c.id, d.id, other.id]) and order[-2:] == [c.id, b.id]
    assert_replays(st)


def test_unbind(st):
    a, b, c = st.create_page(8), st.create_page(8), st.create_page(8)
    st.register_recompute(c, [a, b], "or")
    st.update_page(a, ones(v=1))
    st.unbind(c)
    assert st.view(c).tolist() == [1] * 8
    st.update_page(b, ones(v=2))
    assert st.view(c).tolist() == [1] * 8  # no longer follows its parents
    st.update_page(c, ones(v=3))  # and takes direct writes
    with pytest.raises(mmsb.InvalidArgumentError, match="not bound"):
        st.unbind(c)
    st.delete_page(a)  # no dependents left
    assert_replays(st)


def test_rebinding_replaces_the_binding_in_one_commit(st):
    a, b, c = st.create_page(8), st.create_page(8), st.create_page(8)
    st.update_page(a, ones(v=1))
    st.update_page(b, ones(v=6))
    st.register_recompute(c, [a, b], "sum")
    commits = sum(1 for t, *_ in st.log.records() if t == 4)
    st.register_recompute(c, [b], "passthrough")
    assert sum(1 for t, *_ in st.log.records() if t == 4) == commits + 1
    assert st.view(c).tolist() == [6] * 8
    st.update_page(a, ones(v=2))  # no longer a parent
    assert st.view(c).tolist() == [6] * 8
    st.delete_page(a)
    assert_replays(st)


def test_a_rebinding_that_raises_leaves_the_old_binding(st):
    a, b, c = st.create_page(8), st.create_page(8), st.create_page(8)
    st.register_recompute(c, [a, b], "sum")
    before = snapshot(st)

    def broken(x):
        raise ValueError("no")

    with pytest.raises(mmsb.RecomputeError):
        st.register_recompute(c, [a], broken)
    assert snapshot(st) == before
    st.update_page(b, ones(v=4))
    assert st.view(c).tolist() == [4] * 8  # still the sum of both


@pytest.mark.parametrize("how", ["update", "at", "sparse", "dense", "batch", "transaction"])
def test_a_derived_page_refuses_direct_writes(st, how):
    a, b = st.create_page(8), st.create_page(8)
    m = st.create_page(8)
    st.register_passthrough(b, a)
    st.add_dependency(a, m, "sync")  # a mirror is derived too
    st.update_page(a, ones(v=2))
    before = snapshot(st)
    for target in (b, m):
        write = {
            "update": lambda: st.update_page(target, ones()),
            "at": lambda: st.update_page(target, 9, at=3),
            "sparse": lambda: st.apply_delta(mmsb.Delta.sparse(target, [1], [1])),
            "dense": lambda: st.apply_delta(mmsb.Delta.dense(target, ones(v=1).astype(bool), ones())),
            "batch": lambda: st.apply_batch(mmsb.DeltaBatch([a, target], [0, 1, 2], [0, 0], [7, 7])),
            "transaction": lambda: _in_transaction(st, a, target),
        }[how]
        with pytest.raises(mmsb.InvalidArgumentError, match="writable=True|sync edge"):
            write()
        assert snapshot(st) == before


def _in_transaction(st, a, target):
    with st.transaction():
        st.update_page(a, ones(v=3))
        st.update_page(target, ones(v=4))


def test_a_writable_binding_takes_direct_writes_until_a_parent_changes(tmp_path, st):
    a, b = st.create_page(8), st.create_page(8)
    st.register_passthrough(b, a, writable=True)
    st.update_page(b, ones(v=9))
    assert st.view(b).tolist() == [9] * 8
    st.update_page(a, ones(v=1))
    assert st.view(b).tolist() == [1] * 8
    st.checkpoint(str(tmp_path / "c"))
    for other in (st.replay(), mmsb.restore(str(tmp_path / "c"))):
        other.update_page(b.id, ones(v=5))  # still writable
        other.close()
    st.register_passthrough(b, a)  # rebound without it: guarded again
    with pytest.raises(mmsb.InvalidArgumentError):
        st.update_page(b, ones(v=9))
