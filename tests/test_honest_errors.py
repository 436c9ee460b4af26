"""Findings of a hostile review, one test each: typed errors instead of stray ones, no silent
truncation, no misleading refusal, bounded log frames, transactions of other threads waited for."""

from __future__ import annotations

import textwrap
import os
import threading
import warnings

import numpy as np
import pytest

import mmsb
from mmsb._layout import MAX_PAGE_SIZE, MAX_SPARSE_ENTRIES, REC_HEADER
from mmsb.log import file as logfile


@pytest.fixture
def st():
    s = mmsb.start()
    yield s
    s.close()


def test_a_python_recompute_that_returns_none_raises_recompute_error_and_changes_nothing(st):
    a, b = st.create_page(8), st.create_page(8)
    st.register_recompute(b, [a], lambda p: None if p[0] == 2 else p)
    before = st.state_hash()
    with pytest.raises(mmsb.RecomputeError, match="returned NoneType"):
        st.update_page(a, np.full(8, 2, np.uint8))
    assert st.state_hash() == before


def test_huge_depths_and_lsns_mean_everything(st):
    a = st.create_page(8)
    st.update_page(a, np.ones(8, np.uint8))
    assert len(st.history(a, depth=10**20)) == len(st.history(a, depth=32))
    again = st.replay(to_lsn=2**70)
    assert again.state_hash() == st.state_hash()
    again.close()


def test_weights_that_are_not_numbers_are_an_argument_error(st):
    a, b = st.create_page(8), st.create_page(8)
    with pytest.raises(mmsb.InvalidArgumentError, match="weights must be numbers"):
        st.register_recompute(b, [a], "sum", weights=["x"])
    assert st.lsn == 0 and len(st.log) == 0


@pytest.mark.parametrize("indices, values", [([0.7], [1]), ([0, 1], [1.5, 255.9]), ([True], [1]), ([0], [True])])
def test_sparse_deltas_refuse_what_they_would_have_to_cut(indices, values):
    with pytest.raises(mmsb.InvalidDeltaError):
        mmsb.Delta.sparse(0, indices, values)


def test_lists_of_plain_integers_still_make_deltas(st):
    a = st.create_page(8)
    st.apply_delta(mmsb.Delta.sparse(a, [1, 3], [7, 255]))
    assert st.query_page(a).tolist() == [0, 7, 0, 255, 0, 0, 0, 0]


@pytest.mark.parametrize("kind", ["data", "sync"])
def test_adding_an_edge_that_exists_is_a_no_op_whatever_binds_the_child(st, kind):
    a, b = st.create_page(8), st.create_page(8)
    if kind == "data":
        st.register_passthrough(b, a)
    else:
        st.add_dependency(a, b, "sync")
    lsn, records = st.lsn, st.log.nbytes
    st.add_dependency(a, b, kind)
    assert (st.lsn, st.log.nbytes) == (lsn, records)


def test_page_and_sparse_delta_sizes_fit_a_log_record():
    # a record's length has 32 bits: the largest dense record and the largest sparse one fit
    assert REC_HEADER + 8 + MAX_PAGE_SIZE + (MAX_PAGE_SIZE + 7) // 8 < 1 << 32
    assert REC_HEADER + 8 + 5 * MAX_SPARSE_ENTRIES < 1 << 32
    s = mmsb.start()
    with pytest.raises(mmsb.InvalidPageError, match="3 GiB"):
        s.create_page(MAX_PAGE_SIZE + 1)
    assert s.page_ids().size == 0
    s.close()


def test_a_batch_delta_longer_than_a_record_holds_is_refused(monkeypatch):
    from mmsb import delta

    monkeypatch.setattr(delta, "MAX_SPARSE_ENTRIES", 3)  # the same check, at a size a test can build
    with pytest.raises(mmsb.InvalidDeltaError, match="more than 3 entries"):
        mmsb.DeltaBatch([0], [0, 4], [0, 1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(mmsb.InvalidDeltaError, match="at most 3 entries"):
        mmsb.Delta.sparse(0, [0, 1, 2, 3], [1, 2, 3, 4])


def test_a_batch_owns_its_arrays(st):
    a = st.create_page(8)
    ids, starts = np.array([a.id]), np.array([0, 1])
    idx, vals = np.array([2]), np.array([9], np.uint8)
    batch = mmsb.DeltaBatch(ids, starts, idx, vals)
    starts[1], idx[0] = 10**9, 10**9  # refilled after the checks: the batch does not see it
    with pytest.raises(ValueError):
        batch.indices[0] = 5
    with pytest.raises(ValueError):
        batch.indices.flags.writeable = True
    with pytest.raises(AttributeError):
        batch.indices = np.array([10**9])
    st.apply_batch(batch)
    assert st.query_page(a)[2] == 9


@pytest.mark.parametrize("sync", ["group", "none"])
def test_a_torn_tail_costs_one_bounded_frame_not_every_commit_since_the_last_write(tmp_path, monkeypatch, sync):
    monkeypatch.setattr(mmsb.config, "LOG_GROUP_INTERVAL_US", 60_000_000)  # all written at close
    path = str(tmp_path / "l")
    s = mmsb.start(log=path, sync=sync)
    pg = s.create_page(1024)
    rng = np.random.default_rng(0)
    for _ in range(600):
        s.update_page(pg, rng.integers(0, 256, 1024, dtype=np.uint8))
    lsn = s.lsn
    s.close()
    contents = logfile.read_log(path)
    assert contents.frames > 1
    sizes = np.diff(np.append(contents.frame_starts, contents.payload.size))
    assert sizes.max() <= logfile.FRAME_BYTES
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mmsb.LogTruncatedWarning)
        back = mmsb.replay(path)
    assert back.lsn >= lsn - logfile.FRAME_BYTES // 1024  # at most one frame of ~1 KiB commits lost
    back.close()


@pytest.mark.parametrize("call", ["create_page", "create_pages", "delete_page", "add_dependency", "checkpoint"])
def test_another_threads_transaction_is_waited_for_not_an_error(tmp_path, call):
    s = mmsb.start()
    a, b = s.create_page(8), s.create_page(8)
    inside, release = threading.Event(), threading.Event()

    def writer():
        with s.transaction():
            s.update_page(a, np.ones(8, np.uint8))
            inside.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert inside.wait(10)
    result = []
    calls = {
        "create_page": lambda: s.create_page(8),
        "create_pages": lambda: s.create_pages(2, 8),
        "delete_page": lambda: s.delete_page(b),
        "add_dependency": lambda: s.add_dependency(a, b),
        "checkpoint": lambda: s.checkpoint(str(tmp_path / "c")),
    }
    other = threading.Thread(target=lambda: result.append(calls[call]()))
    other.start()
    other.join(0.2)
    assert other.is_alive()  # waiting for the transaction, not refused
    release.set()
    t.join(10)
    other.join(10)
    assert len(result) == 1
    s.close()


def test_this_threads_transaction_still_refuses_structural_changes(st):
    with st.transaction():
        with pytest.raises(mmsb.InvalidArgumentError, match="inside a transaction"):
            st.create_page(8)


# -- hostile checkpoints: valid checksums, contents built to break the reader ----------------------

def _sections(raw: bytes) -> list[tuple[int, bytes]]:
    from mmsb.log import checkpoint as ck

    out, pos = [], ck.HEADER_SIZE
    while pos < len(raw):
        tag, _, n = ck._SECTION.unpack_from(raw, pos)
        out.append((tag, raw[pos + 16:pos + 16 + n]))
        pos += 16 + n + (-n % 8)
    return out


def _rebuilt(raw: bytes, replace: dict[int, bytes]) -> bytes:
    """The checkpoint ``raw`` with some sections' payloads replaced, every CRC made to agree."""
    from mmsb.kernels.checksum import crc32c
    from mmsb.log import checkpoint as ck

    out = bytearray(raw[: ck.HEADER_SIZE])
    for tag, payload in _sections(raw):
        payload = replace.get(tag, payload)
        arr = np.frombuffer(payload, np.uint8)
        out += ck._SECTION.pack(tag, int(crc32c(arr, 0, arr.size, 0)), len(payload))
        out += payload + bytes(-len(payload) % 8)
    return bytes(out)


@pytest.fixture
def saved(tmp_path):
    import json

    from mmsb.log import checkpoint as ck

    s = mmsb.start()
    a, b, c = s.create_page(8), s.create_page(8), s.create_page(8)
    s.update_page(a, np.ones(8, np.uint8))
    s.register_recompute(b, [a], "sum")
    s.delete_page(c)
    path = str(tmp_path / "c")
    s.checkpoint(path)
    s.close()
    raw = open(path, "rb").read()
    meta = json.loads(dict(_sections(raw))[ck.META])
    return path, raw, meta


def _doc(meta, **changes):
    import json

    return json.dumps({**meta, **changes}).encode()


@pytest.mark.parametrize("name", ["nested", "kinds-list", "bindings-str", "binding-floats", "parents-huge",
                                  "weights-str", "deltas-str", "deltas-huge", "log-list", "dtype-unknown"])
def test_a_hostile_checkpoint_is_damage_not_a_crash(saved, name):
    from mmsb.log import checkpoint as ck

    path, raw, meta = saved
    bound = meta["bindings"][0]
    docs = {
        "nested": _doc(meta, kinds="@").replace(b'"@"', b"[" * 100_000 + b"]" * 100_000),
        "kinds-list": _doc(meta, kinds=[1, 2]),
        "bindings-str": _doc(meta, bindings=["x"]),
        "binding-floats": _doc(meta, bindings=[{**bound, "child": 1.5}]),
        "parents-huge": _doc(meta, bindings=[{**bound, "parents": [2**80]}]),
        "weights-str": _doc(meta, bindings=[{**bound, "weights": ["x"]}]),
        "deltas-str": _doc(meta, deltas="many"),
        "deltas-huge": _doc(meta, deltas=2**70),
        "log-list": _doc(meta, log=[1]),
        "dtype-unknown": _doc(meta, bindings=[{**bound, "dtype": "complex512"}]),
    }
    open(path, "wb").write(_rebuilt(raw, {ck.META: docs[name]}))
    with pytest.raises(mmsb.LogCorruptError):
        mmsb.restore(path)


def test_a_free_slot_that_carries_an_epoch_is_damage(saved):
    from mmsb.log import checkpoint as ck

    path, raw, meta = saved
    table = np.frombuffer(dict(_sections(raw))[ck.SLOTS], np.uint64).reshape(-1, 3).copy()
    live = (table[:, 1] != 0)
    assert not live.all()  # the deleted page's slot is free
    table[~live, 2] = 5
    open(path, "wb").write(_rebuilt(raw, {ck.SLOTS: table.tobytes()}))
    with pytest.raises(mmsb.LogCorruptError, match="epoch"):
        mmsb.restore(path)


def test_two_checkpoints_to_one_path_at_once_both_write_whole(tmp_path):
    path = str(tmp_path / "c")
    states = [mmsb.start() for _ in range(2)]
    for i, s in enumerate(states):
        s.update_page(s.create_page(1 << 20), np.full(1 << 20, i + 1, np.uint8))
    errors = []

    def save(s):
        try:
            for _ in range(5):
                s.checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    back = mmsb.restore(path)
    assert back.state_hash() in {s.state_hash() for s in states}
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    back.close()
    for s in states:
        s.close()


# -- hostile logs: tiny files that ask for huge states ------------------------------------------------

def _forged_create(path: str, count: int, size: int) -> None:
    """A log whose one commit creates ``count`` pages of ``size`` bytes (valid frame and CRC)."""
    s = mmsb.start(log=path)
    s._log.append_create(0, count, size, 0, 0)  # written and synced as the commit's frame
    s._log.close()
    s._c = None


def test_a_tiny_log_of_huge_unwritten_pages_replays_and_hashes_without_reading_them(tmp_path):
    import resource

    path = str(tmp_path / "l")
    _forged_create(path, 60, MAX_PAGE_SIZE)  # 180 GiB of pages, in a file of 200 bytes
    assert os.path.getsize(path) < 512
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    back = mmsb.replay(path)
    fresh = mmsb.start()
    fresh.create_pages(60, MAX_PAGE_SIZE)
    assert back.state_hash() == fresh.state_hash()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20  # KiB: under 1 GiB
    back.close()
    fresh.close()


def test_a_log_asking_for_more_pages_than_the_replay_budget_is_damage(tmp_path):
    path = str(tmp_path / "l")
    _forged_create(path, mmsb.config.REPLAY_MAX_PAGES + 1, 8)
    with pytest.raises(mmsb.LogCorruptError, match="REPLAY_MAX_PAGES"):
        mmsb.replay(path)


@pytest.mark.parametrize("sync", ["group", "none"])
def test_an_idle_writer_thread_sleeps_until_a_commit_wakes_it(tmp_path, sync):
    from faults import until

    from mmsb._layout import F_IDLE

    path = str(tmp_path / "l")
    s = mmsb.start(log=path, sync=sync)
    pg = s.create_page(8)
    log = s._log
    assert until(lambda: log.fc[F_IDLE])  # nothing to write: asleep on its pipe, no timer polling
    for i in range(1, 4):
        s.update_page(pg, np.full(8, i, np.uint8))
        assert until(lambda: log._flushed == log.sealed)  # woken by the seal, and written
        assert until(lambda: log.fc[F_IDLE])
    back = mmsb.replay(path)
    assert back.state_hash() == s.state_hash()
    back.close()
    s.close()


def test_a_group_log_dropped_without_close_ends_its_writer_thread(tmp_path):
    import gc

    s = mmsb.start(log=str(tmp_path / "l"), sync="group")
    thread = s._log._thread
    s._c = None  # dropped by a program that never closes it
    del s
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_rollback_kernels_are_ready_before_a_transaction_or_a_fallible_binding_begins():
    """A first compile inside a critical section is a long stretch of Python that an interrupt
    or an error could split: the rollback kernels are compiled (or loaded) before it."""
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import numpy as np
        import mmsb
        from mmsb.kernels import cascade

        st = mmsb.start()
        a, b = st.create_page(8), st.create_page(8)
        assert not cascade.restore_images.signatures  # nothing has needed a rollback yet
        with st.transaction():
            ready = bool(cascade.restore_images.signatures and cascade.save_images.signatures)
            st.update_page(a, np.ones(8, np.uint8))
        assert ready, "the transaction began before its rollback kernels were ready"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
