"""Edges of the device layer found in review: each once a defect (simulator; see conftest)."""

import numpy as np
import pytest

import mmsb
import mmsb.gpu.arena as device_arena
from mmsb.errors import CapacityError


def test_bytes_written_only_through_device_write_do_not_outlive_their_page():
    st = mmsb.start()
    pg = st.create_page(16, location="gpu")
    with st.device_write(pg) as arr:
        arr[:4] = np.array([1, 2, 3, 4], np.uint8)
    assert pg.epoch == 1
    st.delete_page(pg)
    again = st.create_page(16, location="gpu")  # the same device slot
    assert bytes(st.query_page(again)) == bytes(16) and again.epoch == 0
    with st.device_write(again) as arr:
        arr[:2] = np.array([9, 9], np.uint8)
    mmsb.stop(st)
    reused, fresh = mmsb.start(), mmsb.State()
    try:
        a = reused.create_page(16, location="gpu")
        fresh.create_page(16, location="gpu")
        assert bytes(reused.query_page(a)) == bytes(16)
        assert reused.state_hash() == fresh.state_hash()
    finally:
        mmsb.stop(reused)
        fresh.close()


def test_a_device_that_cannot_hold_a_page_refuses_it_and_changes_nothing(monkeypatch):
    real = device_arena.DeviceArena._zeros
    # the device's memory ends past the arena's first size (64 MiB on a device, 64 KiB simulated)
    limit = max(1 << 20, device_arena.DeviceArena._first_size())

    def small_device(self, n):  # the driver's out-of-memory, above the limit
        if n > limit:
            raise CapacityError(f"the device cannot hold a {n} B arena (test)")
        return real(self, n)

    monkeypatch.setattr(device_arena.DeviceArena, "_zeros", small_device)
    st = mmsb.State()
    st.create_page(64, location="gpu")

    def snapshot():  # (state_hash copies device pages out: that counter is left aside)
        stats = {k: v for k, v in st.stats().items() if k != "device_bytes_out"}
        return st.page_ids().tolist(), stats, st.state_hash()

    before = snapshot()
    for make in (lambda: st.create_page(4 * limit, location="gpu"), lambda: st.create_pages(3, limit, location="gpu")):
        with pytest.raises(CapacityError):
            make()
        assert snapshot() == before
    assert st.create_page(64, location="gpu").location == "gpu"  # smaller pages still fit
    assert st.create_pages(2, 64, location="gpu").size == 2
    st.close()


def test_a_python_recompute_gets_read_only_parents_on_either_side():
    for where in ("cpu", "gpu"):
        st = mmsb.State()
        parent, child = st.create_page(8, location=where), st.create_page(8)
        st.update_page(parent, bytes([5] * 8))

        def scribble(p):
            p[0] = 1  # must fail: parents are read-only
            return p

        with pytest.raises(mmsb.RecomputeError):
            st.register_recompute(child, [parent], scribble)
        assert bytes(st.query_page(parent)) == bytes([5] * 8)
        st.close()


def test_device_write_is_timed_like_update_page_and_does_not_nest():
    sides = []
    for where in ("cpu", "gpu"):
        st = mmsb.State()
        pg = st.create_page(8, location=where)
        for k in range(1, 33):
            if where == "gpu":
                with st.device_write(pg) as arr:
                    arr[:1] = np.array([k], np.uint8)
            else:
                st.update_page(pg, bytes([k]) + bytes(7))
        sides.append((st.lsn, st.stats()["write_time_samples"]))
        if where == "gpu":
            with st.device_write(pg):
                with pytest.raises(mmsb.InvalidArgumentError):
                    with st.device_write(pg):
                        pass
        st.close()
    assert sides[0] == sides[1] and sides[0][1] > 0


def test_growth_takes_what_the_device_has_free_when_doubling_would_not_fit(monkeypatch):
    """Doubling stops at the device's free memory (less a spare for the driver): the arena grows to
    what is needed instead, and a page that does not fit even so is refused, changing nothing."""
    spare = device_arena._DEVICE_SPARE
    free = [None]
    monkeypatch.setattr(device_arena.DeviceArena, "_free_bytes", lambda self: free[0])
    st = mmsb.State()
    try:
        st.create_page(64, location="gpu")
        first = st.stats()["device_arena_bytes"]
        assert first == device_arena.DeviceArena._first_size()
        # room for a page of 1.5x the arena's size: doubling would take 4x, the device has 3x free
        free[0] = spare + 3 * first
        st.create_page(3 * first // 2, location="gpu")
        grown = st.stats()["device_arena_bytes"]
        assert first < grown <= 3 * first  # what the page needs, within what is free (not 4x)
        before = (st.page_ids().tolist(), st.stats()["device_arena_bytes"], st.state_hash())
        free[0] = 2 * first  # the device fills up: no room for a page of 4x the first size
        with pytest.raises(CapacityError, match="free"):
            st.create_page(4 * first, location="gpu")
        assert (st.page_ids().tolist(), st.stats()["device_arena_bytes"], st.state_hash()) == before
    finally:
        st.close()


def test_a_pooled_state_gives_back_device_memory_past_its_first_size():
    """A stopped state in the pool keeps the device arena it started with, not what its pages
    grew it to; the next state from the pool starts there and grows again as it needs."""
    first = device_arena.DeviceArena._first_size()
    st = mmsb.start()
    st.create_page(64, location="gpu")
    st.update_page(st.create_page(8 * first, location="gpu"), np.full(8 * first, 7, np.uint8))
    assert st.stats()["device_arena_bytes"] > 8 * first
    core = st._c
    mmsb.stop(st)
    assert core.dev.data.size == first  # the memory went back as the state stopped
    again = mmsb.start()
    try:
        pg = again.create_page(8 * first, location="gpu")
        assert bytes(again.query_page(pg)) == bytes(8 * first)  # zeros, not the last state's 7s
        assert again.stats()["device_pages"] == 1
    finally:
        mmsb.stop(again)
