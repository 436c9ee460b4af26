"""Page ids across states: states alive at once refuse each other's ids; states of one history
(a replay, a restore, a twin asked for with ``tag=``) share them; ids of states that never overlap
are the same for the same calls (docs/FORMAT.md, "Page ids").

The reference is the layout written down in docs/FORMAT.md (naive.retag) and a plain model of
which tags are held, not mmsb's own bookkeeping.
"""
import gc

import hypothesis.strategies as hs
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmsb
from naive import TAG_SHIFT, retag

# Every call that takes a page id, given an id of another state (``own`` is a page of the state called).
CALLS = {
    "page": lambda st, pid, own: st.page(pid),
    "query_page": lambda st, pid, own: st.query_page(pid),
    "view": lambda st, pid, own: st.view(pid),
    "update_page": lambda st, pid, own: st.update_page(pid, bytes(range(1, 9))),
    "update_page at": lambda st, pid, own: st.update_page(pid, 5, at=3),
    "apply_delta": lambda st, pid, own: st.apply_delta(mmsb.Delta.sparse(pid, [0], [1])),
    "apply_batch": lambda st, pid, own: st.apply_batch(mmsb.DeltaBatch.from_sparse([own, pid], [0, 1, 2], [0, 0],
                                                                                   [7, 7])),
    "update_pages": lambda st, pid, own: st.update_pages([own, pid], np.ones((2, 8), np.uint8)),
    "delete_page": lambda st, pid, own: st.delete_page(pid),
    "add_dependency": lambda st, pid, own: st.add_dependency(pid, own, "control"),
    "register_recompute": lambda st, pid, own: st.register_recompute(own, [pid], "passthrough"),
    "history": lambda st, pid, own: st.history(pid),
    "watch": lambda st, pid, own: st.watch(pid, print),
    "resize_page": lambda st, pid, own: st.resize_page(pid, 16),
}


def held_by(st):
    return st.state_hash(), st.lsn, len(st.log), st.page_ids().tolist()


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_an_id_of_another_live_state_is_refused_and_changes_nothing(call):
    a, b = mmsb.start(), mmsb.start()
    try:
        assert a.tag != b.tag
        ids_a = a.create_pages(3, 8)
        ids_b = b.create_pages(3, 8)
        # the same slots and reuse counts: only the tag tells them apart
        assert [retag(int(i), b.tag) for i in ids_a] == ids_b.tolist()
        before = held_by(b)
        with pytest.raises(mmsb.PageNotFoundError, match=f"another state.*tag {a.tag}.*tag {b.tag}"):
            call(b, int(ids_a[1]), int(ids_b[0]))
        assert held_by(b) == before
        call(b, int(ids_b[1]), int(ids_b[0]))  # the same call with b's own id goes through
    finally:
        mmsb.stop(a)
        mmsb.stop(b)


def test_a_replay_a_restore_and_a_twin_accept_the_ids_of_their_history(tmp_path):
    st = mmsb.start(log=str(tmp_path / "l"))
    other = mmsb.start()  # so st's tag is not the only one held
    try:
        a, b = st.create_page(8), st.create_page(8)
        st.delete_page(a)
        c = st.create_page(8)  # a's slot, reused
        st.update_page(c, bytes(range(8)))
        st.checkpoint(tmp_path / "c")
        rebuilt = [st.replay(), mmsb.replay(str(tmp_path / "l")), mmsb.restore(tmp_path / "c"),
                   mmsb.State(tag=st.tag)]
        for r in rebuilt[:3]:
            assert r.tag == st.tag and r.page_ids().tolist() == st.page_ids().tolist()
            assert bytes(r.query_page(c.id)) == bytes(range(8)) and r.page(b.id).epoch == 0
            # and they go on as the original would: the same next ids
            assert r.create_page(8).id == retag(2, st.tag)
            with pytest.raises(mmsb.PageNotFoundError, match="another state"):
                r.query_page(retag(b.id, other.tag))
        twin = rebuilt[3]
        assert [twin.create_page(8).id for _ in range(3)] == [retag(i, st.tag) for i in range(3)]
        for r in rebuilt:
            r.close()
    finally:
        mmsb.stop(st)
        mmsb.stop(other)


def test_the_tag_ids_carry_is_the_documented_bit_field():
    st = mmsb.start()
    try:
        pg = st.create_page(8)
        assert pg.id >> TAG_SHIFT == st.tag and pg.id & ((1 << TAG_SHIFT) - 1) == 0
        st.delete_page(pg)
        again = st.create_page(8)
        assert again.id == retag(1 << 32, st.tag)  # slot 0, reused once
    finally:
        mmsb.stop(st)


@pytest.mark.parametrize("bad", [-1, 4096, 1 << 40, True, 1.0, "1"])
def test_a_tag_out_of_range_is_refused(bad):
    with pytest.raises(mmsb.InvalidArgumentError, match="tag="):
        mmsb.State(tag=bad)
    with pytest.raises(mmsb.InvalidArgumentError, match="tag="):
        mmsb.start(tag=bad)


def test_a_slot_reused_as_often_as_its_count_holds_is_retired_not_wrapped():
    st = mmsb.State()
    try:
        pg = st.create_page(8)
        # skip ahead to the last reuse the 19-bit count holds (2**19 creates would take a minute)
        table = st._c.table
        table.mv_meta[0] = (table.mv_meta[0] & ~0xFFFFFFFF) | (st.tag << 19 | (1 << 19) - 2)
        last = st.page(retag(0 | ((1 << 19) - 2) << 32, st.tag))
        st.delete_page(last)
        final = st.create_page(8)
        assert final.id == retag(0 | ((1 << 19) - 1) << 32, st.tag)  # the slot's last id
        st.delete_page(final)
        fresh = st.create_page(8)
        assert fresh.id == retag(1, st.tag)  # slot 0 is retired: its count would carry into the tag
        with pytest.raises(mmsb.PageNotFoundError):
            st.page(retag(0, st.tag + 1 if st.tag < 4095 else 0))
        assert pg.id != fresh.id
    finally:
        st.close()


class TagMachine(RuleBasedStateMachine):
    """States started, stopped, dropped and replayed in any order. Model: the tags this test's
    states hold (others, from elsewhere in the process, may hold more; the rules allow for them)."""

    def __init__(self):
        super().__init__()
        self.live = []      # (state, its history: a number per state started, shared by its replays)
        self.histories = 0
        self.freed = set()  # tags this machine let go of that none of its live states holds

    def held(self):
        return {st.tag for st, _ in self.live}

    def _started(self, st):
        # the lowest tag no live state holds: never one of ours, never above one we freed
        assert st.tag not in self.held()
        assert not self.freed or st.tag <= min(self.freed)
        self.freed.discard(st.tag)
        self.histories += 1
        self.live.append((st, self.histories))

    @rule(pooled=hs.booleans())
    def start(self, pooled):
        self._started(mmsb.start() if pooled else mmsb.State())

    @precondition(lambda self: self.live)
    @rule(i=hs.integers(0, 99), how=hs.sampled_from(["stop", "close", "drop"]))
    def end(self, i, how):
        st = self.live.pop(i % len(self.live))[0]
        tag = st.tag
        if how == "stop":
            mmsb.stop(st)
        elif how == "close":
            st.close()
        else:
            del st
            gc.collect()  # a state dropped without close gives its tag back when collected
        if tag not in self.held():
            self.freed.add(tag)

    @precondition(lambda self: self.live)
    @rule(i=hs.integers(0, 99))
    def replay(self, i):
        st, history = self.live[i % len(self.live)]
        if not st.page_ids().size:
            st.create_page(8)  # a history takes its tag from its first page
        r = st.replay()
        assert r.tag == st.tag and r.page_ids().tolist() == st.page_ids().tolist()
        self.live.append((r, history))

    @precondition(lambda self: self.live)
    @rule(i=hs.integers(0, 99))
    def write(self, i):
        st, _ = self.live[i % len(self.live)]
        pg = st.create_page(8)
        st.update_page(pg, bytes(range(8)))

    @invariant()
    def different_histories_hold_different_tags(self):
        by_tag = {}
        for st, history in self.live:
            assert by_tag.setdefault(st.tag, history) == history
        for st, _ in self.live:  # and refuse each other's ids
            for other, _ in self.live:
                if other.tag != st.tag and st.page_ids().size:
                    with pytest.raises(mmsb.PageNotFoundError):
                        other.query_page(int(st.page_ids()[0]))

    def teardown(self):
        for st, _ in self.live:
            st.close()


TagMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestTags = TagMachine.TestCase


def test_threads_starting_replaying_and_stopping_states_leak_no_tag_and_share_none():
    import threading

    def tags_of_eight():
        states = [mmsb.start() for _ in range(8)]
        tags = [st.tag for st in states]
        for st in states:
            mmsb.stop(st)
        return tags

    before = tags_of_eight()
    assert len(set(before)) == 8
    errors = []

    def storm(seed):
        try:
            for k in range(150):
                st = mmsb.start()
                st.create_page(8)
                if (k + seed) % 5 == 0:  # shares st's tag for a while
                    r = st.replay()
                    assert r.tag == st.tag
                    if k % 2:
                        mmsb.stop(st)  # the replay outlives the state it replays
                        st = r
                    else:
                        r.close()
                mmsb.stop(st)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=storm, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert tags_of_eight() == before  # every tag given back once: none leaked, none twice in the free heap
