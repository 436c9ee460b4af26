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

    def one_mib_device(self, n):  # the driver's out-of-memory, above 1 MiB
        if n > 1 << 20:
            raise CapacityError(f"the device cannot hold a {n} B arena (test)")
        return real(self, n)

    monkeypatch.setattr(device_arena.DeviceArena, "_zeros", one_mib_device)
    st = mmsb.State()
    st.create_page(64, location="gpu")

    def snapshot():  # (state_hash copies device pages out: that counter is left aside)
        stats = {k: v for k, v in st.stats().items() if k != "device_bytes_out"}
        return st.page_ids().tolist(), stats, st.state_hash()

    before = snapshot()
    for make in (lambda: st.create_page(4 << 20, location="gpu"), lambda: st.create_pages(3, 1 << 20, location="gpu")):
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
