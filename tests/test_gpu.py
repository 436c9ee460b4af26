"""GPU pages on numba.cuda's simulator, against an all-CPU twin.

Each test makes the same calls on a state whose pages live on the device and on a state started
with gpu=False, then compares what a user can see: bytes, epochs, LSNs, returned deltas, the log,
history, events, state_hash and replay. The CPU side is itself checked against naive models
(test_model.py, test_propagation.py), so agreement here means device pages keep the same contract.
The simulator runs every CUDA thread as Python: pages stay small and examples few.
"""
import numpy as np
import pytest
import hypothesis.strategies as hs
from hypothesis import HealthCheck, event, given, settings
from numba import cuda, njit

import mmsb
import mmsb.gpu
from gpu_twin import (DTYPES, OPS, SAFE_BYTE, Twin, apply, check_mirrors, draw_write, expected, make_mix,
                      njit_mix, picky, same_values, snapshot, typed_bytes)

# replays rebuild bindings by name; these tests never need them to run again there
pytestmark = pytest.mark.filterwarnings("ignore::mmsb.MissingFunctionWarning")
FEW = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FEW
@given(data=hs.data())
def test_random_writes_match_the_cpu_twin(data):
    t = Twin()
    try:
        sizes = data.draw(hs.lists(hs.sampled_from([1, 7, 8, 9, 63, 64, 65, 200]), min_size=1, max_size=4))
        pids = [t.page(s, data.draw(hs.sampled_from(["gpu", "gpu", "cpu"]))) for s in sizes]
        trap = t.page(8, data.draw(hs.sampled_from(["gpu", "cpu"])))
        guard = t.page(8, data.draw(hs.sampled_from(["gpu", "cpu"])))  # its recompute fails on 0xEE
        t.write(lambda st: st.register_recompute(guard, [trap], picky))
        for _ in range(data.draw(hs.integers(1, 8), label="steps")):
            how = data.draw(hs.sampled_from(["write"] * 4 + ["commit", "rollback"]))
            event(how)
            if how == "write":
                w = draw_write(data, t, pids)
                t.write(lambda st: apply(st, w))
                continue
            ws = [draw_write(data, t, pids) for _ in range(data.draw(hs.integers(1, 3)))]
            ws = [w for w in ws if w[0] != "bad"]  # a refused call would end the transaction early
            tail = bytes([0xEE if how == "rollback" else 3] * 8)

            def txn(st):
                with st.transaction():
                    out = [apply(st, w) for w in ws]
                    st.update_page(trap, tail)
                return out
            before = snapshot(t.g)
            got, _ = t.both(txn) if how == "rollback" else (t.write(txn), None)
            if how == "rollback":  # device bytes put back too: the state is as before
                assert isinstance(got, mmsb.RecomputeError) and got.page_id == guard
                assert snapshot(t.g) == before
                t.check()
        t.check_replay()
        t.check_replay(data.draw(hs.integers(0, t.c.lsn), label="to_lsn"))
    finally:
        t.close()


@FEW
@given(data=hs.data())
def test_random_cascades_on_mixed_sides_match_the_cpu_twin(data):
    t, mirrors = Twin(), {}
    try:
        palette = data.draw(hs.lists(hs.sampled_from([8, 16, 64]), min_size=1, max_size=2, unique=True))
        ids = [t.page(data.draw(hs.sampled_from(palette)), data.draw(hs.sampled_from(["gpu", "cpu"])))
               for _ in range(data.draw(hs.integers(3, 7)))]
        for pid in ids:  # ids are in topological order: edges only go forward
            if data.draw(hs.booleans(), label="fill"):
                fill = bytes(data.draw(hs.lists(SAFE_BYTE, min_size=t.size[pid], max_size=t.size[pid])))
                t.write(lambda st: st.update_page(pid, fill))
        for i, child in enumerate(ids[1:], 1):
            op = data.draw(hs.sampled_from(OPS + ["python", "njit", "sync", None]), label="op")
            cands = [p for p in ids[:i] if op in ("python", "njit") or t.size[p] == t.size[child]]
            if op is None or not cands:
                continue
            if op == "sync":
                mirrors[child] = data.draw(hs.sampled_from(cands))
                t.write(lambda st: st.add_dependency(mirrors[child], child, kind="sync"))
                continue
            k = 1 if op == "passthrough" else 3
            parents = data.draw(hs.lists(hs.sampled_from(cands), min_size=1, max_size=k, unique=True))
            weights = None
            if op in ("minplus", "orand"):
                weights = data.draw(hs.lists(hs.integers(0, 3), min_size=len(parents), max_size=len(parents)))
            fn = {"python": make_mix(t.size[child], data.draw(hs.integers(0, 255))), "njit": njit_mix}.get(op, op)
            dtype = data.draw(hs.sampled_from(DTYPES), label="dtype")
            t.write(lambda st: st.register_recompute(child, parents, fn, dtype=dtype, weights=weights))
        for _ in range(data.draw(hs.integers(1, 8), label="steps")):
            if len(ids) > 2 and data.draw(hs.integers(0, 5), label="delete") == 5:
                gone = data.draw(hs.sampled_from(ids))  # its slot comes back with the next page
                t.delete(gone)
                mirrors = {c: p for c, p in mirrors.items() if gone not in (c, p)}
                ids = [p for p in ids if p != gone]
                ids.append(t.page(data.draw(hs.sampled_from(palette)), data.draw(hs.sampled_from(["gpu", "cpu"]))))
                event("delete")
                continue
            lsn, w = t.c.lsn, draw_write(data, t, ids, SAFE_BYTE)
            event(w[0])
            t.write(lambda st: apply(st, w))
            check_mirrors(t, mirrors, lsn)
        t.check_replay()
    finally:
        t.close()


@pytest.mark.parametrize("op", OPS)
def test_each_builtin_op_over_each_dtype_on_mixed_sides(op):
    rng = np.random.default_rng(OPS.index(op))
    for dtype in DTYPES:
        for child_loc, locs in [("gpu", ["gpu", "cpu", "gpu"]), ("cpu", ["gpu", "gpu", "cpu"])]:
            t = Twin()
            try:
                size, n = 64, 1 if op == "passthrough" else 3
                parents = [t.page(size, loc) for loc in locs[:n]]
                child = t.page(size, child_loc)
                down = t.page(size, "cpu" if child_loc == "gpu" else "gpu")  # the next hop crosses back
                weights = [1, 0, 3][:n] if op in ("minplus", "orand") else None
                t.write(lambda st: st.register_recompute(child, parents, op, dtype=dtype, weights=weights))
                t.write(lambda st: st.register_passthrough(down, child))
                item = np.dtype(dtype).itemsize
                for step in range(4):
                    p = parents[step % n]
                    new = typed_bytes(rng, dtype, size)
                    if step < 3:
                        t.write(lambda st: st.update_page(p, new))
                    else:  # one whole element through a sparse delta
                        idx = list(range(item, 2 * item))
                        t.write(lambda st: st.apply_delta(mmsb.Delta.sparse(p, idx, new[idx])))
                ws = [(q, list(range(item)), typed_bytes(rng, dtype, item).tolist()) for q in parents]
                t.write(lambda st: apply(st, ("batch", None, ws)))
                want = expected(op, dtype, [t.c.query_page(q) for q in parents], weights)
                for st in (t.g, t.c):  # both sides against numpy, not only against each other
                    assert same_values(st.query_page(child), want, op, dtype), (dtype, child_loc)
                    assert bytes(st.query_page(down)) == bytes(st.query_page(child))
                t.check_replay()
            finally:
                t.close()


@njit(cache=True)
def weighted(parents, bounds, out):
    acc = out.view(np.float64)
    acc[:] = 0.0
    for k in range(bounds.size - 1):
        acc += (k + 1) * parents[bounds[k]:bounds[k + 1]].view(np.float64)


@pytest.mark.parametrize("fn", [weighted, lambda x, y: (x.view(np.float64) + 2 * y.view(np.float64)).view(np.uint8)],
                         ids=["njit", "python"])
def test_user_recomputes_on_a_device_child(fn):
    t = Twin()
    try:
        x, y, z = t.page(32, "gpu"), t.page(32, "cpu"), t.page(32, "gpu")
        t.write(lambda st: st.register_recompute(z, [x, y], fn))
        for pid, value in [(y, 0.5), (x, 1.0), (y, 1.0)]:
            t.write(lambda st: st.update_page(pid, np.full(4, value).view(np.uint8)))
        assert t.g.query_page(z).view(np.float64).tolist() == [3.0] * 4  # x = 1.0, y = 1.0
        t.check_replay()
    finally:
        t.close()


@njit(cache=True)
def picky_njit(parents, bounds, out):
    """picky, for the in-kernel signature."""
    if parents[0] == 0xEE:
        raise ValueError("0xEE")
    out[:] = parents[bounds[0]:bounds[1]] ^ 0x5A


@pytest.mark.parametrize("fn", [picky, picky_njit], ids=["python", "njit"])
def test_a_failing_recompute_rolls_back_device_bytes_in_a_transaction(fn):
    t = Twin()
    try:
        a, b = t.page(16, "gpu"), t.page(8, "gpu")
        guard = t.page(8, "gpu")
        t.write(lambda st: st.register_recompute(guard, [b], fn))
        t.write(lambda st: st.update_page(a, bytes(range(16))))
        before = snapshot(t.g)

        def doomed(st):
            with st.transaction():
                st.update_page(a, bytes([9] * 16))
                st.apply_delta(mmsb.Delta.sparse(a, [0, 0, 3], [1, 2, 3]))
                st.update_page(b, bytes([0xEE] * 8))
        err, _ = t.both(doomed)
        assert isinstance(err, mmsb.RecomputeError) and err.page_id == guard
        assert snapshot(t.g) == before and bytes(t.g.query_page(a)) == bytes(range(16))
        t.check()
        t.write(lambda st: st.update_page(b, bytes([1] * 8)))  # nothing was left queued
    finally:
        t.close()


@pytest.mark.parametrize("sides", [("cpu", "gpu"), ("gpu", "cpu"), ("gpu", "gpu")])
def test_sync_edges_mirror_across_the_bus(sides):
    t = Twin()
    try:
        p, ch, other = t.page(64, sides[0]), t.page(64, sides[1]), t.page(64, "gpu")
        t.write(lambda st: st.add_dependency(p, ch, kind="sync"))
        for w in [("update", p, bytes(range(64)), "bytes"), ("sparse", p, [5, 5, 9], [1, 2, 3]),
                  ("update", ch, bytes([4] * 64), "unaligned"),  # stands until the parent changes
                  ("dense", p, [True] * 8 + [False] * 56, [200] * 64)]:
            lsn = t.c.lsn
            t.write(lambda st: apply(st, w))
            check_mirrors(t, {ch: p}, lsn)
        assert bytes(t.g.query_page(ch)) == bytes(t.g.query_page(p))
        last = list(t.g.log)[-2:]  # the mirror's delta, caused by the parent's
        assert [d.page_id for d in last] == [p, ch] and last[1].causes == (last[0].lsn,)
        odd, bound = t.page(32, "gpu"), t.page(64, "gpu")
        t.write(lambda st: st.register_passthrough(bound, other))
        for refused in (lambda st: st.add_dependency(p, odd, kind="sync"),     # sizes differ
                        lambda st: st.add_dependency(other, ch, kind="sync"),  # a second parent
                        lambda st: st.add_dependency(p, bound, kind="sync"),   # child has a binding
                        lambda st: st.register_passthrough(ch, other)):        # mirror gets a binding
            before = snapshot(t.g)
            got, _ = t.both(refused)
            assert isinstance(got, mmsb.InvalidArgumentError) and snapshot(t.g) == before
    finally:
        t.close()


@cuda.jit
def bump_odd(arr):
    i = cuda.grid(1)
    if i < arr.size and i % 2 == 1:
        arr[i] = arr[i] + 1


def test_device_view_and_device_write():
    t = Twin()
    try:
        p, cpu_page, child = t.page(64, "gpu"), t.page(64, "cpu"), t.page(64, "cpu")
        t.write(lambda st: st.register_passthrough(child, p))
        t.write(lambda st: st.update_page(p, bytes(range(64))))
        dv = t.g.device_view(p)
        assert dv.dtype == np.uint8 and dv.shape == (64,) and bytes(dv.copy_to_host()) == bytes(range(64))
        t.write(lambda st: st.apply_delta(mmsb.Delta.sparse(p, [0], [99])))
        assert dv.copy_to_host()[0] == 99  # zero copy: it follows later writes
        for bad in (lambda: t.g.device_view(cpu_page), lambda: t.g.view(p)):
            with pytest.raises(mmsb.InvalidArgumentError):
                bad()
        # a kernel, then a slice copy, each committed as update_page with the new bytes would be
        def bump_on_host(b):
            b[1::2] += 1

        def copy_on_host(b):
            b[3:6] = [7, 8, 9]
        for body, change in [(lambda arr: bump_odd[1, 64](arr), bump_on_host),
                             (lambda arr: arr[3:6].copy_to_device(np.array([7, 8, 9], np.uint8)), copy_on_host)]:
            new = t.c.query_page(p)
            change(new)

            def on_device(st, body=body, new=new):
                if st is t.c:
                    return st.update_page(p, new) and None
                with st.device_write(p) as arr:
                    assert arr.dtype == np.uint8 and arr.shape == (64,)
                    body(arr)
            t.write(on_device)
        lsn = t.g.lsn
        with t.g.device_write(p) as arr:  # the same bytes written back: no delta
            arr[3:6].copy_to_device(np.array([7, 8, 9], np.uint8))
        assert t.g.lsn == lsn
        before, epoch = snapshot(t.g), t.g.page(p).epoch
        with pytest.raises(ValueError, match="body failed"):  # the body's own error comes out
            with t.g.device_write(p) as arr:
                bump_odd[1, 64](arr)
                raise ValueError("body failed")
        assert snapshot(t.g) == before and t.g.page(p).epoch == epoch
        guard = t.page(64, "gpu")
        t.write(lambda st: st.register_recompute(guard, [p], picky))

        def doomed(st):  # the cascade fails: RecomputeError and nothing changed, as for update_page
            if st is t.c:
                return st.update_page(p, bytes([0xEE]) + bytes(st.query_page(p))[1:])
            with st.device_write(p) as arr:
                arr[0:1].copy_to_device(np.array([0xEE], np.uint8))
        before = snapshot(t.g)
        got, _ = t.both(doomed)
        assert isinstance(got, mmsb.RecomputeError) and snapshot(t.g) == before
        t.check()
        t.check_replay()
    finally:
        t.close()


def test_deleted_and_pooled_device_pages_leave_no_trace():
    st = mmsb.start()
    a, b = st.create_page(64, location="gpu").id, st.create_page(64, location="gpu").id
    st.register_passthrough(b, a)
    st.update_page(a, bytes([0xAB] * 64))
    st.delete_page(a, dependents="unbind")
    fresh = st.create_page(64, location="gpu")
    assert bytes(st.query_page(fresh)) == bytes(64) and fresh.epoch == 0
    assert st.stats()["device_pages"] == 2
    mmsb.stop(st)
    assert mmsb.pool.pool_size() >= 1
    reused = mmsb.start()
    new = mmsb.State(tag=reused.tag)  # the pooled state against a state never used
    try:
        for s in (reused, new):
            assert s.stats()["device_pages"] == 0
            ids = [s.create_page(64, location="gpu").id for _ in range(3)]
            assert all(bytes(s.query_page(i)) == bytes(64) for i in ids)
            s.apply_delta(mmsb.Delta.sparse(ids[1], [0], [1]))
        assert reused.page_ids().tolist() == new.page_ids().tolist()
        assert reused.state_hash() == new.state_hash()
        assert {k: v for k, v in reused.stats().items() if k.startswith("device")} == \
               {k: v for k, v in new.stats().items() if k.startswith("device")}
    finally:
        mmsb.stop(reused)
        new.close()


def test_checkpoint_and_restore_bring_device_pages_back(tmp_path):
    t = Twin()
    try:
        a, b, s, m = t.page(32, "gpu"), t.page(32, "cpu"), t.page(32, "gpu"), t.page(32, "cpu")
        t.write(lambda st: st.register_recompute(s, [a, b], "sum", dtype="int16"))
        t.write(lambda st: st.add_dependency(s, m, kind="sync"))
        t.write(lambda st: st.update_page(a, bytes(range(32))))
        t.g.checkpoint(tmp_path / "g.ckpt")
        t.c.checkpoint(tmp_path / "c.ckpt")
        back = mmsb.restore(tmp_path / "g.ckpt")
        try:
            assert back.state_hash() == t.c.state_hash()
            assert {p: back.page(p).location for p in t.loc} == t.loc
            for st in (back, t.g, t.c):  # and the restored graph goes on working on the device
                st.update_page(b, bytes([5] * 32))
            assert back.state_hash() == t.c.state_hash() and bytes(back.query_page(m)) == bytes(t.c.query_page(s))
        finally:
            back.close()
        t.check()
    finally:
        t.close()


def moved(st, before):
    s = st.stats()
    return s["device_bytes_in"] - before["device_bytes_in"], s["device_bytes_out"] - before["device_bytes_out"]


def test_device_counters():
    st = mmsb.State()
    try:
        n = 2048
        src, dst = st.create_page(n, location="cpu"), st.create_page(n, location="gpu")
        st.register_passthrough(dst, src)
        s0 = st.stats()
        st.update_page(src, (np.arange(n) % 255 + 1).astype(np.uint8))  # every byte changes
        assert moved(st, s0)[0] >= n  # the child's new bytes had to cross to the device
        assert bytes(st.query_page(dst)) == bytes(st.query_page(src))
        # gpu -> gpu: a sparse write of k entries moves O(k + n/8), never the pages themselves
        a, b = st.create_page(n, location="gpu"), st.create_page(n, location="gpu")
        st.register_passthrough(b, a)
        k, s0 = 4, st.stats()
        st.apply_delta(mmsb.Delta.sparse(a, [0, 100, 1000, 2047], [1, 2, 3, 4]))
        # room for 32 B per entry, two n/8 bitmaps and 256 B fixed: far below one page (n) crossing
        assert sum(moved(st, s0)) <= 32 * k + n // 4 + 256
        assert st.query_page(b)[[0, 100, 1000, 2047]].tolist() == [1, 2, 3, 4]
        assert st.stats()["device_pages"] == 3
        st.delete_page(a, dependents="unbind")
        assert st.stats()["device_pages"] == 2
    finally:
        st.close()


def test_one_device_launch_per_commit():
    st = mmsb.State()  # no edges anywhere: a commit is its own writes
    try:
        lone, other = st.create_page(64, location="gpu"), st.create_page(64, location="gpu")
        st.update_page(lone, bytes([1] * 64))  # first calls may compile; compiling is no launch
        batch = mmsb.DeltaBatch.from_sparse([lone, other, lone], [0, 1, 3, 4], [0, 1, 2, 3], [9, 9, 9, 9])
        st.apply_batch(batch)
        # the update puts 2s where the batch wrote 9s, so the batch changes bytes again
        for call in (lambda: st.update_page(lone, bytes([2] * 64)), lambda: st.apply_batch(batch)):
            before = st.stats()["device_launches"]
            call()
            assert st.stats()["device_launches"] == before + 1  # one launch per commit
        s0 = st.stats()
        st.update_page(lone, bytes([7] * 8) + bytes(st.query_page(lone))[8:])
        assert moved(st, s0)[0] >= 8  # the changed bytes at least had to reach the device
    finally:
        st.close()


def test_auto_location_follows_the_threshold():
    assert mmsb.gpu.available() and mmsb.config.GPU_THRESHOLD_BYTES == 0
    mmsb.config.set(GPU_THRESHOLD_BYTES=64)
    try:
        assert mmsb.gpu.threshold() == 64
        st, off = mmsb.State(), mmsb.State(gpu=False)
        assert st.create_page(64, location="auto").location == "gpu"
        assert st.create_page(63, location="auto").location == "cpu"
        assert [st.page(i).location for i in st.create_pages(2, 64, location="auto")] == ["gpu"] * 2
        assert [st.page(i).location for i in st.create_pages(2, 8, location="gpu")] == ["gpu"] * 2
        assert st.stats()["device_pages"] == 5
        assert off.create_page(4096, location="auto").location == "cpu"
        with pytest.raises(mmsb.DeviceUnavailableError):
            off.create_page(64, location="gpu")
        assert off.page_ids().size == 1 and off.lsn == 0
        st.close()
        off.close()
        mmsb.stop(mmsb.start(gpu=True))  # a device is there: gpu=True is fine
    finally:
        mmsb.config.reset()
