"""Retention: a log that keeps a bounded window of its newest records (``retain=n``) or what
came after its last checkpoint (``retain="checkpoint"``, ``checkpoint(truncate=True)``).

The independent references: a twin state fed the same calls with no retention (every delta
the state ever made, so a trimmed log must be exactly a suffix of the twin's), and the state
hash the live state showed after each call, by LSN (what a replay must give back).
"""

import gc
import os

import hypothesis.strategies as hs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import mmsb
from test_log import Recorder, check_replays, random_history


def key(d):
    """Everything a delta says, as plain values."""
    a, b = (d.indices, d.values) if d.kind == "sparse" else (d.mask, d.payload)
    return d.lsn, d.page_id, d.epoch, d.kind, d.causes, a.tobytes(), b.tobytes()


@pytest.fixture(autouse=True)
def small_buffers():
    """A 1 KiB first log buffer, so that a few dozen writes make a log trim or grow."""
    mmsb.config.set(LOG_INITIAL_BYTES=1 << 10, POOL_KEEP_LOG_BYTES=1 << 10)
    yield
    mmsb.config.reset()


class Twins:
    """The same calls on a state with retention and on one without."""

    def __init__(self, **kw):
        # both of tag 0: the tests name pages 0, 1, 2, ... as in the first state of a process
        self.kept, self.full = mmsb.State(**kw, tag=0), mmsb.State(tag=0)

    def __call__(self, name, *args, **kw):
        out = []
        for st in (self.kept, self.full):
            try:
                getattr(st, name)(*args, **kw)
                out.append(None)
            except mmsb.MMSBError as exc:
                out.append(type(exc))
        assert out[0] == out[1]

    def check_log(self, keep):
        log, every = self.kept.log, [key(d) for d in self.full.log]
        held = [key(d) for d in log]
        assert len(log) == len(held)
        assert len(held) >= min(keep, len(every))
        assert held == every[len(every) - len(held):]  # a suffix: whole, in order, nothing made up
        assert all(k[0] < log.first_lsn for k in every[: len(every) - len(held)])
        assert all(k[0] >= log.first_lsn for k in held)
        # by position and by LSN, without a walk over the log
        for i in {0, len(held) // 2, len(held) - 1} if held else ():
            assert key(log[i]) == held[i] and key(log[i - len(held)]) == held[i]
            assert key(log.lsn[held[i][0]]) == held[i]
        assert [key(d) for d in log[1:-1]] == held[1:-1]
        if held:
            lo, hi = held[0][0], held[-1][0]
            assert [key(d) for d in log.lsn[lo + 1: hi]] == [k for k in held if lo < k[0] < hi]
        if log.first_lsn > 1:
            with pytest.raises(mmsb.LogTrimmedError, match=f"oldest LSN it still holds is {log.first_lsn}"):
                log.lsn[log.first_lsn - 1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), keep=hs.integers(0, 40))
def test_a_window_keeps_the_newest_deltas_and_drops_only_whole_older_commits(data, keep):
    t = Twins(retain=keep)
    pages = 4
    for _ in range(pages):
        t("create_page", 64)
    for _ in range(data.draw(hs.integers(1, 120), label="steps")):
        kind = data.draw(hs.sampled_from(["update", "delta", "batch", "txn", "bad"]))
        pid = data.draw(hs.integers(0, pages - 1))
        if kind == "update":
            t("update_page", pid, bytes([data.draw(hs.integers(0, 255))]) * 64)
        elif kind == "delta":
            t("apply_delta", mmsb.Delta.sparse(pid, [data.draw(hs.integers(0, 63))], [data.draw(hs.integers(0, 255))]))
        elif kind == "batch":
            n = data.draw(hs.integers(1, 30))
            t("apply_batch", mmsb.DeltaBatch.from_sparse(np.arange(n) % pages, np.arange(n + 1), np.arange(n) % 64,
                                                         np.arange(n) + data.draw(hs.integers(0, 200))))
        elif kind == "txn":
            for st in (t.kept, t.full):
                with st.transaction():
                    st.update_page(pid, bytes(range(64)))
                    st.update_page((pid + 1) % pages, bytes(64))
        else:
            t("update_page", pid, b"short")  # refused by both, nothing logged
    assert t.kept.state_hash() == t.full.state_hash()
    t.check_log(keep)
    # what is held is bounded by what is kept, not by what was written
    per_delta = max((d.nbytes for d in t.full.log), default=1)
    assert t.kept.log.nbytes <= 8 * (keep + 64) * (per_delta + 200) + 2048


def test_memory_stays_bounded_over_many_writes():
    st = mmsb.State(retain=100)
    pg = st.create_page(1024)
    caps = []
    for i in range(30_000):
        st.update_page(pg, np.full(1024, i % 251, np.uint8))
        if i % 5_000 == 4_999:
            caps.append(st._c.logbuf.phys.size)
    assert len(st.log) >= 100 and st.log.dropped == 29_999 - len(st.log)  # the first write (zeros) changed nothing
    assert caps[-1] == caps[0]  # reached a size and stayed there
    assert caps[-1] <= 1 << 20  # a few hundred records of ~1.2 KiB, not 36 MB
    assert st.log[-1].payload.tobytes() == bytes([29_999 % 251]) * 1024
    assert st.stats()["log_bytes"] == st.log.nbytes


def test_deltas_handed_out_before_a_trim_still_read_their_own_records():
    st = mmsb.State(retain=3)
    pg = st.create_page(256)
    handed = [st.update_page(pg, np.full(256, i % 256, np.uint8)) for i in range(1, 400)]
    for i, d in enumerate(handed, start=1):
        assert d.lsn == i and d.payload.tobytes() == bytes([i % 256]) * 256


def test_a_pooled_state_after_a_trimmed_one_starts_with_a_whole_log():
    st = mmsb.start(retain=2)
    pg = st.create_page(128)
    held = [st.update_page(pg, np.full(128, i, np.uint8)) for i in range(1, 200)]
    i, value = 0, 199
    while st.log.first_pos == 0:  # a pooled buffer may be large: the window trims once it is full
        i += 1
        value = 1 + i % 200
        st.update_page(pg, np.full(128, value, np.uint8))
    last = st.log[-1]
    mmsb.stop(st)
    again = mmsb.start()
    assert again.log.first_pos == 0 and again.log.first_lsn == 1 and len(again.log) == 0
    p = again.create_page(128)
    d = again.update_page(p, np.full(128, 7, np.uint8))
    assert again.log[0] == d and again.log.lsn[1] == d and list(again.log) == [d]
    assert last.payload.tobytes() == bytes([value]) * 128 and held[0].payload.tobytes() == bytes([1]) * 128
    again.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), file_log=hs.booleans())
def test_a_truncating_checkpoint_keeps_every_replay_from_it_on(tmp_path_factory, data, file_log):
    d = tmp_path_factory.mktemp("trunc")
    st = mmsb.State(retain="checkpoint", log=str(d / "state.log") if file_log else None)
    rec = Recorder(st)
    random_history(data, rec, data.draw(hs.integers(0, 15), label="before"))
    st.checkpoint(d / "a.ckpt")  # retain="checkpoint": truncates
    at = st.lsn
    assert len(st.log) == 0 and st.log.first_lsn == at + 1
    random_history(data, rec, data.draw(hs.integers(0, 15), label="after"))
    assert st.replay().state_hash() == st.state_hash()
    check_replays(_since(rec, at), lambda lsn: st.replay(to_lsn=lsn))  # a file log truncates on disk too
    if at:
        with pytest.raises(mmsb.LogTrimmedError, match="before checkpoint") as err:
            st.replay(to_lsn=at - 1)
        assert err.value.first_lsn == at
    st.close()


def _since(rec, lsn):
    """A recorder's samples from ``lsn`` on."""
    out = Recorder.__new__(Recorder)
    out.st, out.at = rec.st, {k: v for k, v in rec.at.items() if k >= lsn}
    return out


def test_replay_after_a_window_trim_names_the_oldest_lsn_left():
    st = mmsb.State(retain=5)
    pg = st.create_page(512)
    for i in range(300):
        st.update_page(pg, np.full(512, i % 256, np.uint8))
    first = st.log.first_lsn
    assert first > 1
    with pytest.raises(mmsb.LogTrimmedError) as err:
        st.replay()
    assert err.value.first_lsn == first and f"LSN {first}" in str(err.value)
    h = st.history(pg, last=1000)
    assert h.truncated and [d.lsn for d in h.deltas] == [d.lsn for d in st.log]


def test_a_window_over_a_file_log_trims_memory_and_the_file_keeps_everything(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path, retain=10)
    pg = st.create_page(256)
    for i in range(2000):
        st.update_page(pg, np.full(256, i % 256, np.uint8))
    assert st.log.first_pos > 0 and st._c.logbuf.phys.size <= 1 << 16
    assert st.replay().state_hash() == st.state_hash()  # the trimmed records, read back from the file
    assert st.replay(to_lsn=5).query_page(pg.id).tobytes() == bytes([5]) * 256  # LSN i: the write of i
    final = st.state_hash()
    st.close()
    assert mmsb.replay(path).state_hash() == final
    again = mmsb.State(log=path, retain=10)  # recovery reads the whole file, then trims as it goes
    assert again.state_hash() == final
    again.close()


def test_a_restored_state_holds_its_checkpoint_in_the_file_only(tmp_path):
    st = mmsb.State()
    pg = st.create_page(1 << 20)
    st.update_page(pg, np.full(1 << 20, 9, np.uint8))
    st.checkpoint(tmp_path / "c")
    r = mmsb.restore(tmp_path / "c")
    assert not hasattr(r._base[0], "data")  # no second copy of the pages
    r.update_page(pg.id, np.full(1 << 20, 1, np.uint8))
    assert r.replay(to_lsn=st.lsn).query_page(pg.id).tobytes() == bytes([9]) * (1 << 20)
    os.replace(tmp_path / "c", tmp_path / "moved")
    with pytest.raises(mmsb.LogTrimmedError, match="removed or replaced"):
        r.replay()


def test_bad_retention_and_lookups_are_refused_and_change_nothing():
    for bad in (-1, 1.5, "all", True, [3]):
        with pytest.raises(mmsb.InvalidArgumentError, match="retain="):
            mmsb.start(retain=bad)
        with pytest.raises(mmsb.InvalidArgumentError, match="retain="):
            mmsb.State(retain=bad)
    st = mmsb.State(retain=4)
    pg = st.create_page(8)
    d = st.update_page(pg, b"12345678")
    before = st.state_hash()
    with pytest.raises(mmsb.InvalidArgumentError, match="truncate="):
        st.checkpoint("unused", truncate="yes")
    with pytest.raises(mmsb.InvalidArgumentError, match="indexed by position"):
        st.log["0"]
    with pytest.raises(IndexError, match="holds 1 deltas"):
        st.log[1]
    with pytest.raises(KeyError, match="no delta has LSN 2"):
        st.log.lsn[2]  # not given out yet
    with pytest.raises(mmsb.InvalidArgumentError, match="an LSN is an integer"):
        st.log.lsn[2.0]
    with pytest.raises(mmsb.InvalidArgumentError, match="no step"):
        st.log.lsn[1:5:2]
    assert st.log[0] == d and st.log.lsn[1] == d and st.state_hash() == before
    assert not os.path.exists("unused")
    st.close()
    gc.collect()


# -- truncating a file log: the file starts anew at the checkpoint -------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), sync=hs.sampled_from(["commit", "group", "none"]))
def test_a_file_log_truncated_at_checkpoints_recovers_and_replays_alone(tmp_path_factory, data, sync):
    d = tmp_path_factory.mktemp("restart")
    path = str(d / "state.log")
    st = mmsb.State(log=path, sync=sync, retain="checkpoint")
    rec = Recorder(st)
    last_ck = 0
    for r in range(data.draw(hs.integers(1, 3), label="rounds")):
        random_history(data, rec, data.draw(hs.integers(0, 10), label="steps"))
        st.checkpoint(d / "user.ckpt")
        last_ck = st.lsn
        assert os.path.getsize(path) == 72  # a header: the records are in the checkpoint now
    random_history(data, rec, data.draw(hs.integers(0, 10), label="after"))
    final = st.state_hash()
    check_replays(_since(rec, last_ck), lambda lsn: st.replay(to_lsn=lsn))
    st.close()
    kept = [f for f in os.listdir(d) if f.startswith("state.log.base-")]
    assert len(kept) == 1  # the base of the last restart only
    for route in (lambda: mmsb.replay(path), lambda: mmsb.State(log=path, sync=sync),
                  lambda: mmsb.restore(d / "user.ckpt", log=path)):
        r = route()
        assert r.state_hash() == final
        r.close()
    check_replays(_since(rec, last_ck), lambda lsn: mmsb.replay(path, to_lsn=lsn))


def test_disk_stays_bounded_by_truncating_checkpoints(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path, sync="group", retain="checkpoint")
    pg = st.create_page(1024)
    sizes = []
    for r in range(20):
        for i in range(500):
            st.update_page(pg, np.full(1024, (r + i) % 255 + 1, np.uint8))
        st.flush()
        sizes.append(os.path.getsize(path))
        st.checkpoint(tmp_path / "c")
    assert max(sizes) < 1.2 * min(sizes) and max(sizes) < 1 << 20  # 500 records, not 10 000
    assert st.log.nbytes < 1 << 20  # memory holds what came after the last checkpoint
    st.close()


KILL_AT = {
    # before the checkpoint is kept beside the log
    "link": "os.link",
    # the base is beside the log, the old file still has the path
    "rename": "os.replace",
    # the new file has the path; the old base is still beside it
    "unlink old base": "mmsb.log.file._unlink",
}


@pytest.mark.parametrize("where", list(KILL_AT))
def test_a_kill_at_each_step_of_a_restart_leaves_a_log_that_recovers(tmp_path, where):
    """A child writes, checkpoints and truncates twice; the second restart is killed (SIGKILL)
    at one of its steps. The log alone must recover the state as of the checkpoint."""
    script = f"""
import os, signal, sys
import numpy as np
import mmsb, mmsb.log.file
path, ck = sys.argv[1], sys.argv[2]
st = mmsb.State(log=path, retain="checkpoint")
pg = st.create_page(64)
for r in range(2):
    for i in range(50):
        st.update_page(pg, np.full(64, 50 * r + i + 1, np.uint8))
    if r == 1:
        print(st.lsn, st.state_hash(), flush=True)
        target = {KILL_AT[where]!r}
        mod, _, name = target.rpartition(".")
        owner = sys.modules[mod] if mod in sys.modules else __import__(mod)
        real = getattr(owner, name)
        def killed(*args, **kw):
            if name != "replace" or args[1] == path:  # the log's rename, not the checkpoint's
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kw)
        setattr(owner, name, killed)
    st.checkpoint(ck)
print("not killed", flush=True)
"""
    import subprocess
    import sys

    path, ck = str(tmp_path / "l"), str(tmp_path / "c")
    out = subprocess.run([sys.executable, "-c", script, path, ck], capture_output=True, text=True, timeout=300)
    assert out.returncode == -9, out.stderr
    lsn, live = out.stdout.split()
    for route in (lambda: mmsb.replay(path), lambda: mmsb.State(log=path)):
        r = route()
        assert r.lsn == int(lsn) and r.state_hash() == live
        r.close()
    assert len([f for f in os.listdir(tmp_path) if f.startswith("l.base-")]) == 1  # opening cleaned up


def test_a_restart_that_fails_leaves_the_old_file_in_use(tmp_path, monkeypatch):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path, retain="checkpoint")
    pg = st.create_page(64)
    for i in range(20):
        st.update_page(pg, np.full(64, i + 1, np.uint8))
    before = os.path.getsize(path)

    real = os.replace

    def refuse(src, dst):
        if dst == path:  # the log's rename (the checkpoint's own goes through)
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(mmsb.LogIOError, match="anew at its checkpoint"):
        st.checkpoint(tmp_path / "c")
    monkeypatch.undo()
    assert os.path.getsize(path) == before
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    st.update_page(pg, np.full(64, 99, np.uint8))  # writing goes on, to the old file
    final = st.state_hash()
    assert st.replay().state_hash() == final
    st.close()
    assert mmsb.replay(path).state_hash() == final


def test_a_window_over_a_file_log_bounds_the_disk_by_checkpoints_beside_it(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path, sync="group", retain=200)
    pages = [st.create_page(256) for _ in range(3)]
    sizes = []
    for i in range(60_000):
        st.update_page(pages[i % 3], np.full(256, i % 251 + 1, np.uint8))
        if i % 10_000 == 9_999:
            sizes.append(os.path.getsize(path))
    live = st.state_hash()
    # the file holds what came after the last checkpoint mmsb wrote beside it: bounded, not 18 MB
    assert max(sizes) < 4 << 20 and len([f for f in os.listdir(tmp_path) if ".base-" in f]) == 1
    assert st.replay().state_hash() == live
    first = st.log.first_lsn
    assert key(st.replay(to_lsn=first + 10).log[-1]) == key(st.log.lsn[first + 10])
    st.close()
    for route in (lambda: mmsb.replay(path), lambda: mmsb.State(log=path)):
        r = route()
        assert r.state_hash() == live
        r.close()
    assert sorted(os.listdir(tmp_path)) == ["l", [f for f in os.listdir(tmp_path) if ".base-" in f][0]]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hs.data(), keep=hs.integers(20, 300))
def test_lookups_reach_records_only_the_file_holds_as_memory_trims_under_them(tmp_path_factory, data, keep):
    """A file log under a window, looked up between writes, so its index lives through trims
    (entries move from memory to the file) and file restarts: every lookup agrees with a twin
    that keeps everything in memory."""
    d = tmp_path_factory.mktemp("disk")
    t = Twins(log=str(d / "l"), sync="group", retain=keep)
    for _ in range(3):
        t("create_page", 128)
    t("register_passthrough", 2, 0)
    for _ in range(data.draw(hs.integers(1, 12), label="rounds")):
        for _ in range(data.draw(hs.integers(1, 300), label="writes")):
            t("update_page", data.draw(hs.integers(0, 1)), bytes([data.draw(hs.integers(1, 255))]) * 128)
        log, every = t.kept.log, [key(x) for x in t.full.log]
        n = len(log)
        assert n >= min(keep, len(every)) and [key(x) for x in log] == every[len(every) - n:]
        assert all(k[0] >= log.first_lsn for k in every[len(every) - n:])
        for i in data.draw(hs.lists(hs.integers(0, max(0, n - 1)), max_size=4), label="positions") if n else ():
            assert key(log[i]) == every[len(every) - n + i] == key(log.lsn[every[len(every) - n + i][0]])
        h, hf = t.kept.history(2), t.full.history(2)
        assert [x.lsn for x in h.deltas] == [x.lsn for x in hf.deltas if x.lsn >= log.first_lsn]
        assert [key(x) for x in h.upstream] == [key(x) for x in hf.upstream if x.lsn >= log.first_lsn]
    t.kept.close()


def test_a_missing_or_damaged_base_is_named_and_nothing_is_made(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.State(log=path, retain="checkpoint")
    pg = st.create_page(64)
    st.update_page(pg, np.full(64, 7, np.uint8))
    st.checkpoint(tmp_path / "c")
    st.update_page(pg, np.full(64, 8, np.uint8))
    st.close()
    (base,) = [tmp_path / f for f in os.listdir(tmp_path) if ".base-" in f]
    raw = bytearray(base.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "damaged").write_bytes(bytes(raw))
    os.replace(tmp_path / "damaged", base)  # a new file: the user's checkpoint (the link's other name) stays whole
    for route in (lambda: mmsb.replay(path), lambda: mmsb.State(log=path)):
        with pytest.raises(mmsb.LogCorruptError):
            route()
    base.unlink()
    for route in (lambda: mmsb.replay(path), lambda: mmsb.start(log=path)):
        with pytest.raises(mmsb.InvalidArgumentError, match="mmsb.restore"):
            route()
    r = mmsb.restore(tmp_path / "c", log=path)  # the way the error names
    assert bytes(r.query_page(pg.id)[:1]) == b"\x08"
    r.close()
