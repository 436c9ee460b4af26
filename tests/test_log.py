"""File logs, checkpoints, replay and restore, against what the live state showed.

The independent reference is the live state itself, sampled after every call:
``state_hash()`` (pages, epochs, LSN) and the page bytes. Replay must reproduce
the sample taken after the last call that ended at the asked LSN, whatever
route it takes (memory log, file, checkpoint + log, pooled or fresh state).
"""

import os
import tempfile
import warnings

import hypothesis.strategies as hs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from numba import njit

import mmsb
from naive import retag


@njit(cache=True)
def doubled(parents, bounds, out):
    for i in range(out.size):
        out[i] = parents[i % bounds[1]] * 2


def reverse(*parents):
    return parents[-1][::-1].copy()


mmsb.register_function(doubled, name="tests.doubled")
mmsb.register_function(reverse, name="tests.reverse")
OPS = ["passthrough", "sum", "xor", "max", doubled, reverse]


class Recorder:
    """A state and the hash it showed after each call, by LSN (the last call at that LSN wins)."""

    def __init__(self, st):
        self.st, self.at = st, {0: st.state_hash()}

    def __call__(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        finally:
            self.at[self.st.lsn] = self.st.state_hash()


def random_history(data, rec, steps):
    """Random calls; those a state refuses (a direct write to a derived page that is not writable,
    a deletion of a page others depend on) change nothing, and the history goes on."""
    st = rec.st
    pages = [rec(st.create_page, 8) for _ in range(data.draw(hs.integers(2, 6), label="pages"))]
    for _ in range(steps):
        try:
            _random_step(data, rec, st)
        except mmsb.InvalidArgumentError as exc:
            if "direct write" not in str(exc) and "dependents" not in str(exc):
                raise
    return pages


def _random_step(data, rec, st):
    kind = data.draw(hs.sampled_from(["update", "delta", "batch", "txn", "bad txn", "bind", "edge", "create",
                                      "delete", "unlink"]))
    ids = st.page_ids().tolist()
    if not ids:  # a deletion with dependents="delete" took the last ones
        rec(st.create_page, 8)
        return
    pid = data.draw(hs.sampled_from(ids))
    if kind == "update":
        rec(st.update_page, pid, bytes(data.draw(hs.lists(hs.integers(0, 3), min_size=8, max_size=8))))
    elif kind == "delta":
        rec(st.apply_delta, mmsb.Delta.sparse(pid, [data.draw(hs.integers(0, 7))], [data.draw(hs.integers(0, 255))]))
    elif kind == "batch":
        n = data.draw(hs.integers(1, 4))
        targets = data.draw(hs.lists(hs.sampled_from(ids), min_size=n, max_size=n))
        rec(st.apply_batch, mmsb.DeltaBatch.from_sparse(targets, np.arange(n + 1), np.arange(n) % 8,
                                                         np.arange(n) + data.draw(hs.integers(0, 200))))
    elif kind in ("txn", "bad txn"):
        try:
            with st.transaction():
                st.update_page(pid, bytes([data.draw(hs.integers(0, 255))] * 8))
                if kind == "bad txn":
                    st.update_page(pid, b"short")
        except mmsb.InvalidDeltaError:
            pass
        rec.at[st.lsn] = st.state_hash()
    elif kind == "bind":
        parents = [p for p in data.draw(hs.lists(hs.sampled_from(ids), min_size=1, max_size=2, unique=True))
                   if p != pid]
        op = data.draw(hs.sampled_from(OPS))
        if parents and not (op == "passthrough" and len(parents) > 1):
            try:
                rec(st.register_recompute, pid, parents, op, writable=data.draw(hs.booleans()))
            except (mmsb.GraphCycleError, mmsb.InvalidArgumentError):
                pass
    elif kind == "edge":
        child = data.draw(hs.sampled_from(ids))
        try:
            rec(st.add_dependency, pid, child, data.draw(hs.sampled_from(["control", "mine", "data"])))
        except (mmsb.GraphCycleError, mmsb.InvalidArgumentError):
            pass
    elif kind == "unlink":
        g = st._c.prop.graph
        edges = list(g.edges())
        if edges:
            p, c, _ = data.draw(hs.sampled_from(edges))
            rec(st.remove_dependency, st._id_of(p), st._id_of(c))
    elif kind == "create":
        if data.draw(hs.booleans()):
            rec(st.create_pages, data.draw(hs.integers(1, 3)), 8)
        else:
            rec(st.create_page, 8)
    elif len(ids) > 2:
        try:  # refused while pages depend on it ("refuse"), as the other modes would say
            rec(st.delete_page, pid, dependents=data.draw(hs.sampled_from(["refuse", "unbind", "delete"])))
        except mmsb.InvalidArgumentError:
            pass


def check_replays(rec, replayed_by):
    for lsn, want in rec.at.items():
        r = replayed_by(lsn)
        assert r.state_hash() == want, lsn
        r.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), sync=hs.sampled_from(["commit", "group", "none"]), pooled=hs.booleans())
def test_every_replay_route_gives_the_state_the_live_one_showed(tmp_path_factory, data, sync, pooled):
    path = str(tmp_path_factory.mktemp("log") / "state.log")
    st = mmsb.start(log=path, sync=sync) if pooled else mmsb.State(log=path, sync=sync)
    rec = Recorder(st)
    random_history(data, rec, data.draw(hs.integers(1, 25), label="steps"))
    final = st.state_hash()
    check_replays(rec, lambda lsn: st.replay(to_lsn=lsn))
    assert st.replay().state_hash() == final
    st.close()
    check_replays(rec, lambda lsn: mmsb.replay(path, to_lsn=lsn))
    again = mmsb.start(log=path, sync=sync)  # recovery, then writing goes on
    assert again.state_hash() == final and again.lsn == max(rec.at)
    assert [d.lsn for d in again.log] == list(range(1, again.lsn + 1))
    again.update_page(again.create_page(8), bytes(range(8)))
    after = again.state_hash()
    again.close()
    assert mmsb.replay(path).state_hash() == after


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), with_log=hs.booleans())
def test_checkpoint_then_log_gives_the_live_state(tmp_path_factory, data, with_log):
    d = tmp_path_factory.mktemp("ckpt")
    log = str(d / "state.log") if with_log else None
    st = mmsb.State(log=log)
    rec = Recorder(st)
    random_history(data, rec, data.draw(hs.integers(0, 12), label="before"))
    st.checkpoint(d / "a.ckpt")
    at_checkpoint = st.state_hash()
    random_history(data, rec, data.draw(hs.integers(0, 12), label="after"))
    final = st.state_hash()
    st.close()
    plain = mmsb.restore(d / "a.ckpt")
    assert plain.state_hash() == at_checkpoint
    # the restored state hands out the ids, LSNs and epochs the live one would have
    plain.close()
    if with_log:
        r = mmsb.restore(d / "a.ckpt", log=log)
        assert r.state_hash() == final
        check_replays(rec, lambda lsn: r.replay(to_lsn=lsn))
        r.close()


def test_a_restored_state_goes_on_like_the_original():
    st = mmsb.State()
    a, b = st.create_page(8), st.create_page(8)
    st.register_recompute(b, [a], "passthrough")
    st.delete_page(st.create_page(16))
    with tempfile.TemporaryDirectory() as d:
        st.checkpoint(os.path.join(d, "c"))
        r = mmsb.restore(os.path.join(d, "c"))
    for s in (st, r):
        s.update_page(a.id, b"12345678")
        assert s.tag == st.tag  # a restore takes the tag of the history it goes on with
        assert s.create_page(16).id == retag(2 | 1 << 32, st.tag)  # the freed slot, next generation
        s.add_dependency(a.id, s.create_page(8), "control")
    assert r.state_hash() == st.state_hash()
    assert [(d.lsn, d.page_id, d.causes) for d in r.log] == [(d.lsn, d.page_id, d.causes) for d in st.log][-2:]


def test_a_binding_to_an_unregistered_function_is_reported_and_fails_loudly(tmp_path):
    st = mmsb.State(log=str(tmp_path / "l"))
    a, b = st.create_page(4), st.create_page(4)
    st.register_recompute(b, [a], lambda x: x + 1)  # a lambda: nobody can register it again
    st.update_page(a, b"\x01\x01\x01\x01")
    st.close()
    with pytest.warns(mmsb.MissingFunctionWarning, match="<lambda>"):
        r = mmsb.replay(str(tmp_path / "l"))
    assert bytes(r.query_page(b.id)) == b"\x02\x02\x02\x02"  # replay needs no function
    assert r.missing_functions == ["test_log.test_a_binding_to_an_unregistered_function_is_reported_and_fails_loudly"
                                   ".<locals>.<lambda>"]
    before = r.state_hash()
    with pytest.raises(mmsb.RecomputeError, match="not registered"):
        r.update_page(a.id, b"\x05\x05\x05\x05")
    assert r.state_hash() == before


def test_a_registered_function_is_bound_again_on_replay(tmp_path):
    st = mmsb.State(log=str(tmp_path / "l"))
    a, b = st.create_page(4), st.create_page(4)
    st.register_recompute(b, [a], doubled)
    st.close()
    r = mmsb.replay(str(tmp_path / "l"))
    assert r.missing_functions == []
    r.update_page(a.id, b"\x01\x02\x03\x04")
    assert bytes(r.query_page(b.id)) == b"\x02\x04\x06\x08"


def test_a_log_is_written_by_one_live_state_at_a_time(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.start(log=path)
    pg = st.create_page(8)
    with pytest.raises(mmsb.LogInUseError):
        mmsb.start(log=path)
    assert mmsb.replay(path).page_ids().tolist() == [pg.id]  # reading is fine
    mmsb.stop(st)
    mmsb.stop(mmsb.start(log=path))


def test_group_sync_is_durable_after_flush_and_counts_its_syncs(tmp_path, monkeypatch):
    # the writer thread waits a minute: every commit here is made durable by the one flush
    monkeypatch.setattr(mmsb.config, "LOG_GROUP_INTERVAL_US", 60_000_000)
    path = str(tmp_path / "l")
    st = mmsb.start(log=path, sync="group")
    pg = st.create_page(8)
    for i in range(50):
        st.update_page(pg, bytes([i + 1] * 8))
    assert st._log.syncs == 0 and os.path.getsize(path) == logfile_header_size()  # nothing written yet
    st.flush()
    assert st._log.syncs == 1  # 51 commits, one sync
    assert mmsb.replay(path).state_hash() == st.state_hash()
    mmsb.stop(st)


def logfile_header_size():
    from mmsb.log.file import FILE_HEADER_SIZE

    return FILE_HEADER_SIZE


def test_a_torn_tail_is_cut_with_a_warning_and_writing_goes_on(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path)
    pg = st.create_page(8)
    st.update_page(pg, b"abcdefgh")
    good, size = st.state_hash(), os.path.getsize(path)
    st.update_page(pg, b"ABCDEFGH")
    st.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)  # the last frame, cut short by a crash
    with pytest.warns(mmsb.LogTruncatedWarning, match=f"offset {size}"):
        again = mmsb.State(log=path)
    assert again.state_hash() == good and os.path.getsize(path) == size
    again.update_page(pg.id, b"xxxxxxxx")
    want = again.state_hash()
    again.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mmsb.replay(path).state_hash() == want


def test_damage_before_the_tail_names_its_offset(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path)
    pg = st.create_page(8)
    st.update_page(pg, b"abcdefgh")
    second = os.path.getsize(path)
    st.update_page(pg, b"ABCDEFGH")
    st.update_page(pg, b"12345678")
    st.close()
    raw = bytearray(open(path, "rb").read())
    raw[second + 40] ^= 1  # inside the second frame, with a whole third frame after it
    open(path, "wb").write(bytes(raw))
    with pytest.raises(mmsb.LogCorruptError) as err:
        mmsb.replay(path)
    assert err.value.offset == second


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_replay_refuses_a_bad_lsn(bad):
    st = mmsb.State()
    with pytest.raises(mmsb.InvalidArgumentError):
        st.replay(to_lsn=bad)


def test_options_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.State(log=False).replay()
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.replay(str(tmp_path / "missing"))
    with pytest.raises(mmsb.InvalidArgumentError):
        mmsb.restore(str(tmp_path / "missing"))
    other = tmp_path / "other.log"
    st = mmsb.State(log=str(other))
    st.create_page(8)
    st.checkpoint(tmp_path / "c")
    st.close()
    unrelated = mmsb.State(log=str(tmp_path / "unrelated.log"))
    unrelated.create_page(8)
    unrelated.close()
    with pytest.raises(mmsb.InvalidArgumentError, match="not the log"):
        mmsb.restore(tmp_path / "c", log=str(tmp_path / "unrelated.log"))


def test_a_record_that_proves_bad_midway_leaves_no_bytes_in_the_pool():
    st = mmsb.State()
    pg = st.create_page(64)
    st.apply_delta(mmsb.Delta.sparse(pg, [1, 2, 3], [7, 7, 7]))
    buf = st._log._live().array
    # the delta's third offset, made out of range; its first two are fine and get written
    at = next(pos for t, pos, _ in st._log.records() if t == 1) + 48 + 8
    buf[at:at + 4] = np.array([999], np.uint32).view(np.uint8)
    with pytest.raises(mmsb.LogCorruptError, match="does not fit"):
        st.replay()
    for _ in range(mmsb.config.POOL_SIZE):  # whichever pooled resources the replay used
        fresh = mmsb.start()
        assert not fresh.query_page(fresh.create_page(64)).any()
        fresh.close()


def test_a_process_that_exits_without_closing_still_writes_out_group_commits(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "l")
    script = f"""
import mmsb
mmsb.config.set(LOG_GROUP_INTERVAL_US=60_000_000)  # the writer thread would wait a minute
st = mmsb.start(log={path!r}, sync="group")
pg = st.create_page(8)
for i in range(20):
    st.update_page(pg, bytes([i + 1] * 8))
print(st.state_hash())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert mmsb.replay(path).state_hash() == done.stdout.strip()
